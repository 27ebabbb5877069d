#![doc = include_str!("../README.md")]

pub mod catalogue;
pub mod events;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trace;

pub use catalogue::{MetricDef, MetricKind, describe_all};
