#![doc = include_str!("../README.md")]

pub mod catalogue;
pub mod events;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trace;

pub use catalogue::{MetricDef, MetricKind, describe_all};

/// How much of a message's content debug logs show (Deimos's `payload_log`). Payloads are never logged at
/// info level or above; at debug level, `Full` (the default, as Deimos) logs payloads and keys, `Keys` only keys,
/// `Count` only how many messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum PayloadLog {
    /// Payloads and keys.
    #[default]
    Full,
    /// Keys only.
    Keys,
    /// The number of messages only.
    Count,
}
