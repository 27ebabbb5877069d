#![doc = include_str!("../README.md")]

pub mod redact;
pub mod report;
#[cfg(feature = "shutdown")]
pub mod shutdown;
