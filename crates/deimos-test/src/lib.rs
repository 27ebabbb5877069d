#![doc = include_str!("../README.md")]

mod compat;
mod consume;
mod error;
mod fixtures;
mod inline_consumer;
mod kit;
pub mod matchers;
mod sent;

pub use compat::{SchemaSource, schemas_compatible};
pub use consume::{ConsumeBatch, ConsumeMessage, Consumed};
pub use error::{BoxError, ConsumeError, TestError};
pub use fixtures::{MockKafka, TestCluster};
pub use inline_consumer::{DEFAULT_TIMEOUT, InlineConsumer, ReceivedMessage};
pub use kit::{TestKit, TestKitBuilder};
pub use sent::{Expectation, Mismatch, SentMessages};

/// Re-exported: what inline listeners take and give.
pub use deimos_consumer::{DeadLetterMessage, InlineListener, InlineMessage, InlineOutcome};
/// Disabling producers in a test: globally, for a closure or a future (scoped to its task), or for named
/// producers only (re-exported from `deimos-producer`).
pub use deimos_producer::disable;
/// Re-exported: what the kit records and hands out.
pub use deimos_producer::{MemoryBackend, SentMessage};
/// Re-exported: the embedded registry server, also part of [`TestCluster`].
pub use deimos_registry::{EmbeddedRegistry, MemoryRegistry};
