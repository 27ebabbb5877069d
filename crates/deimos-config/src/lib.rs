#![doc = include_str!("../README.md")]

mod assemble;
mod debug;
mod duration;
mod env;
mod error;
mod model;

pub use assemble::Handlers;
pub use duration::parse_duration;
pub use error::ConfigError;
pub use model::{
    Config, ConsumerConfig, ConsumerDelivery, ConsumersConfig, Delivery, KafkaConfig, KeyConfigSpec, OutboxConfig,
    ProducerConfig, ProducersConfig, SchemaConfig,
};

/// The prefix of the environment variables that override the file (`DEIMOS_KAFKA__BROKERS`).
pub const ENV_PREFIX: &str = "DEIMOS_";
