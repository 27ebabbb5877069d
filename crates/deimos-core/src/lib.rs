#![doc = include_str!("../README.md")]

pub mod redact;
#[cfg(feature = "shutdown")]
pub mod shutdown;
