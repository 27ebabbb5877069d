//! Per-call options and what a publish call reports.

use crate::backend::{Delivered, DeliveryError};

/// Whether a publish call waits for the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DeliveryMode {
    /// Return once every message is acknowledged (or failed): Deimos's `:kafka` backend, `sync: true`.
    #[default]
    Sync,
    /// Return once every message is queued: Deimos's `:kafka_async`. Failures still count `publish_error` and
    /// emit `produce_error`.
    Async,
}

/// Options of one publish call.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PublishOptions {
    /// Send to this topic instead of the configured one (used as given: the prefix is not added). The registry
    /// subjects still come from the configured topic, as in Deimos.
    pub topic: Option<String>,
    /// Headers for every message of the call.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Overrides the setup's delivery mode for this call.
    pub mode: Option<DeliveryMode>,
}

impl PublishOptions {
    /// No options: the configured topic, no headers, the setup's mode.
    pub fn new() -> PublishOptions {
        PublishOptions::default()
    }

    /// Sends to `topic` instead of the configured topic.
    pub fn topic(mut self, topic: impl Into<String>) -> PublishOptions {
        self.topic = Some(topic.into());
        self
    }

    /// Adds a header to every message of the call.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> PublishOptions {
        self.headers.push((key.into(), value.into()));
        self
    }

    /// Waits for delivery ([`DeliveryMode::Sync`]) or not ([`DeliveryMode::Async`]) in this call.
    pub fn mode(mut self, mode: DeliveryMode) -> PublishOptions {
        self.mode = Some(mode);
        self
    }
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageOutcome {
    /// Acknowledged.
    Delivered(Delivered),
    /// Queued; the call did not wait ([`DeliveryMode::Async`]).
    Queued,
    /// Not delivered.
    Failed(DeliveryError),
}

/// The result of a publish call: one outcome per message, in call order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishReport {
    /// The topic the messages went to.
    pub topic: String,
    /// One outcome per message.
    pub outcomes: Vec<MessageOutcome>,
    /// The producer was disabled: nothing was sent.
    pub disabled: bool,
}

impl PublishReport {
    pub(crate) fn new(topic: &str, outcomes: Vec<MessageOutcome>) -> PublishReport {
        PublishReport {
            topic: topic.to_string(),
            outcomes,
            disabled: false,
        }
    }

    pub(crate) fn disabled(topic: &str, _messages: usize) -> PublishReport {
        PublishReport {
            topic: topic.to_string(),
            outcomes: Vec::new(),
            disabled: true,
        }
    }

    /// The delivered messages: (position in the call, where it went).
    pub fn delivered(&self) -> impl Iterator<Item = (usize, &Delivered)> {
        self.outcomes.iter().enumerate().filter_map(|(i, o)| match o {
            MessageOutcome::Delivered(d) => Some((i, d)),
            _ => None,
        })
    }

    /// The failed messages: (position in the call, why).
    pub fn failures(&self) -> impl Iterator<Item = (usize, &DeliveryError)> {
        self.outcomes.iter().enumerate().filter_map(|(i, o)| match o {
            MessageOutcome::Failed(e) => Some((i, e)),
            _ => None,
        })
    }
}
