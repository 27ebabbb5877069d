#![doc = include_str!("../README.md")]

mod context;
mod dead_letter;
mod delay;
mod error;
mod handler;
mod inline;
mod listener;
mod runner;
pub mod tail;
mod worker;

pub use dead_letter::{
    DeadLetterMessage, HEADER_ATTEMPTS, HEADER_ERROR_MESSAGE, HEADER_ERROR_TYPE, HEADER_GROUP_ID,
    HEADER_ORIGINAL_OFFSET, HEADER_ORIGINAL_PARTITION, HEADER_ORIGINAL_TIMESTAMP, HEADER_ORIGINAL_TOPIC,
};
pub use error::{ConsumerError, HandlerError, MessageDecodeError};
pub use handler::{Batch, BatchHandler, BatchMetadata, ErrorContext, ErrorStage, Handler, Headers, Message, Metadata};
pub use inline::{InlineListener, InlineListenerBuilder, InlineMessage, InlineOutcome};
pub use listener::{
    DEFAULT_BACKOFF, DEFAULT_COMMIT_INTERVAL, DEFAULT_LAG_INTERVAL, DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_WAIT,
    ErrorPolicy, Listener, ListenerBuilder,
};
pub use runner::{ConsumerRunner, ConsumerRunnerBuilder, DEFAULT_SHUTDOWN_TIMEOUT, ShutdownHandle};

/// Re-exported so handlers can name it without another dependency.
pub use async_trait::async_trait;
/// Re-exported: how keys are configured and what decoded keys look like.
pub use deimos_keys::{DecodedKey, KeyConfig};
