#![doc = include_str!("../README.md")]

mod attempt;
mod context;
mod control;
mod dead_letter;
mod delay;
mod error;
mod handler;
mod inline;
mod kafka_headers;
mod lanes;
mod listen;
mod listener;
mod process;
mod progress;
mod runner;
pub mod tail;

pub use control::{Health, LIVENESS_WINDOW, ListenerControl, ListenerHealth, RunnerControl, SeekTo};
pub use dead_letter::{
    DeadLetterMessage, HEADER_ATTEMPTS, HEADER_ERROR_MESSAGE, HEADER_ERROR_TYPE, HEADER_GROUP_ID,
    HEADER_ORIGINAL_OFFSET, HEADER_ORIGINAL_PARTITION, HEADER_ORIGINAL_TIMESTAMP, HEADER_ORIGINAL_TOPIC,
    HEADER_VALUE_DROPPED, MAX_ERROR_MESSAGE_BYTES,
};
pub use error::{
    ConsumerError, HandlerError, HandlerPanicked, MessageDecodeError, PartiallyHandled, Transient, is_transient,
};
pub use handler::{Batch, BatchHandler, BatchMetadata, ErrorContext, ErrorStage, Handler, Headers, Message, Metadata};
pub use inline::{InlineListener, InlineListenerBuilder, InlineMessage, InlineOutcome};
pub use kafka_headers::{read_headers, write_headers};
pub use listener::{
    DEFAULT_BACKOFF, DEFAULT_COMMIT_INTERVAL, DEFAULT_LAG_INTERVAL, DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_BUFFERED_BYTES,
    DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_WAIT, ErrorPolicy, Listener, ListenerBuilder, ProcessingOrder,
};
pub use runner::{ConsumerRunner, ConsumerRunnerBuilder, DEFAULT_SHUTDOWN_TIMEOUT, ShutdownHandle};

/// Re-exported so handlers can name it without another dependency.
pub use async_trait::async_trait;
/// Re-exported: the type of raw keys in [`Metadata`] and [`BatchMetadata`] (shared, not copied per message).
pub use bytes::Bytes;
/// Re-exported: how keys are configured and what decoded keys look like.
pub use deimos_keys::{DecodedKey, KeyConfig};
