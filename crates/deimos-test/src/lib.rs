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
///
/// **The closure forms cover synchronous code only.** [`without_producers`](disable::without_producers) and
/// [`without_producers_named`](disable::without_producers_named) disable producers while the closure runs, on
/// its thread; a publish checks whether its producer is disabled when its future runs, not when it is
/// created. So a publish future created inside the closure but awaited outside it
/// (`without_producers(|| producer.publish(p)).await`) is **not** disabled, and sends. For async code use the
/// future forms, [`without_producers_in`](disable::without_producers_in) and
/// [`without_producers_named_in`](disable::without_producers_named_in), which hold wherever the future is
/// polled:
///
/// ```
/// # use deimos_test::{TestKit, disable};
/// # use deimos_producer::Producer;
/// # use deimos_keys::KeyConfig;
/// # use serde_json::json;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
/// let producer = kit.producer(Producer::builder("gadgets").topic("gadgets").schema("com.acme.keys.Gadget")
///     .key_config(KeyConfig::None)).await?;
/// let gadget = json!({"id": 1, "region": "eu", "name": "g"});
///
/// // Wrong for async code: the future leaves the closure unrun, and runs with producers enabled.
/// disable::without_producers(|| producer.publish(gadget.clone())).await?;
/// assert_eq!(kit.sent_messages().len(), 1);
///
/// // Right: the scope holds for the future itself.
/// disable::without_producers_in(producer.publish(gadget.clone())).await?;
/// disable::without_producers_named_in(&["gadgets"], async { producer.publish(gadget.clone()).await }).await?;
/// assert_eq!(kit.sent_messages().len(), 1); // still the one from before
///
/// // The closure forms are for synchronous code, e.g. a check of the disabled state.
/// disable::without_producers_named(&["gadgets"], || assert!(disable::is_disabled("gadgets")));
/// # Ok(())
/// # }
/// ```
pub use deimos_producer::disable;
/// Re-exported: what the kit records and hands out.
pub use deimos_producer::{MemoryBackend, SentMessage};
/// Re-exported: the embedded registry server, also part of [`TestCluster`].
pub use deimos_registry::{EmbeddedRegistry, MemoryRegistry};
