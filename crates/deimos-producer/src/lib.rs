#![doc = include_str!("../README.md")]

mod backend;
pub mod disable;
mod error;
mod kafka;
mod memory;
mod partitioner;
mod producer;
mod report;

pub use backend::{
    Delivered, DeliveryError, DeliveryResult, DeliveryTracker, OutgoingBatch, OutgoingMessage, Pending, PublishBackend,
};
pub use error::{BackendError, BuildError, PublishError};
pub use kafka::{KafkaBackend, KafkaBackendBuilder};
pub use memory::{MemoryBackend, SentMessage};
pub use partitioner::Partitioner;
pub use producer::{
    DEFAULT_MAX_BATCH_SIZE, PartitionKeyFn, Producer, ProducerBuilder, ProducerSetup, ProducerSetupBuilder, Record,
};
pub use report::{DeliveryMode, MessageOutcome, PublishOptions, PublishReport};
