#![doc = include_str!("../README.md")]

pub mod catalogue;
pub mod events;

pub use catalogue::{MetricDef, MetricKind, describe_all};
