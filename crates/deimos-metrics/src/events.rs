//! Instrumentation events, Deimos's `Deimos.subscribe(event) { … }`.
//!
//! Producers and consumers [`emit`] events at the points Deimos instruments; [`subscribe`] registers a callback
//! for one event name, process-wide, until its [`Subscription`] is dropped (or [`Subscription::detach`]ed).
//! Callbacks run synchronously on the emitting thread (for `produce_error`, librdkafka's delivery thread), so
//! they should be quick; a callback that panics is logged and does not disturb the emitter.
//!
//! Building an event is skipped entirely while nobody subscribed to its name ([`emit_with`]).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value as Json;

/// Around encoding and handing a `publish_list` call's messages to the backend. Carries the producer, the
/// configured topic and the payloads as passed in; `error` is set when the call failed.
pub const ENCODE_MESSAGES: &str = "encode_messages";
/// Around handing encoded messages to a Kafka backend. Carries the producer, the configured topic and the
/// coerced payloads.
pub const PRODUCE: &str = "produce";
/// Messages the Kafka backend could not deliver. Carries the producer, the configured topic, the failed
/// payloads and the error.
pub const PRODUCE_ERROR: &str = "produce_error";

/// Around the outbox relay sending one batch of a topic partition (Deimos's `db_producer.produce`). Carries the
/// topic and one object per message: `id`, `key` and `partition_key` (text when UTF-8), `size`.
pub const DB_PRODUCER_PRODUCE: &str = "db_producer.produce";
/// Outbox rows the broker refused as too large and the relay moved to `kafka_messages_dead`. Carries the topic,
/// the rows (as for `db_producer.produce`) and the error.
pub const DB_PRODUCER_TOO_LARGE: &str = "db_producer.too_large";

/// What went wrong, for events about failures (Deimos's `exception`: class name and message).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventError {
    /// The kind of error, e.g. `MessageSizeTooLarge` or `EncodeError`.
    pub kind: String,
    /// The error message.
    pub message: String,
}

impl EventError {
    /// An error of `kind` with `message`.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> EventError {
        EventError {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

/// One instrumentation event.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Event {
    /// The event name, one of the constants of this module.
    pub name: &'static str,
    /// The producer's name, for producer events.
    pub producer: Option<String>,
    /// The configured topic (with its prefix).
    pub topic: String,
    /// The payloads concerned, as JSON (tombstones are `null`).
    pub payloads: Vec<Json>,
    /// How long the instrumented work took, for events around work.
    pub duration: Option<Duration>,
    /// The error, when the work failed.
    pub error: Option<EventError>,
}

impl Event {
    /// An event `name` about `topic`, with nothing else set.
    pub fn new(name: &'static str, topic: impl Into<String>) -> Event {
        Event {
            name,
            producer: None,
            topic: topic.into(),
            payloads: Vec::new(),
            duration: None,
            error: None,
        }
    }

    /// With the producer's name.
    pub fn producer(mut self, producer: impl Into<String>) -> Event {
        self.producer = Some(producer.into());
        self
    }

    /// With the payloads.
    pub fn payloads(mut self, payloads: Vec<Json>) -> Event {
        self.payloads = payloads;
        self
    }

    /// With the duration of the work.
    pub fn duration(mut self, duration: Duration) -> Event {
        self.duration = Some(duration);
        self
    }

    /// With an error.
    pub fn error(mut self, error: EventError) -> Event {
        self.error = Some(error);
        self
    }
}

type Callback = Arc<dyn Fn(&Event) + Send + Sync>;

struct Subscriber {
    id: u64,
    name: String,
    callback: Callback,
}

static SUBSCRIBERS: RwLock<Vec<Subscriber>> = RwLock::new(Vec::new());
static COUNT: AtomicUsize = AtomicUsize::new(0);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A registered callback; dropping it unsubscribes.
#[derive(Debug)]
#[must_use = "dropping a Subscription unsubscribes at once; call .detach() to keep it for the process's life"]
pub struct Subscription {
    id: u64,
}

impl Subscription {
    /// Unsubscribes (the same as dropping it).
    pub fn unsubscribe(self) {}

    /// Keeps the callback subscribed for the rest of the process.
    pub fn detach(self) {
        std::mem::forget(self);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut subs = SUBSCRIBERS.write().unwrap_or_else(|p| p.into_inner());
        let before = subs.len();
        subs.retain(|s| s.id != self.id);
        if subs.len() < before {
            COUNT.fetch_sub(1, Ordering::Release);
        }
    }
}

/// Calls `callback` with every event named `name` until the returned [`Subscription`] is dropped.
pub fn subscribe(name: impl Into<String>, callback: impl Fn(&Event) + Send + Sync + 'static) -> Subscription {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut subs = SUBSCRIBERS.write().unwrap_or_else(|p| p.into_inner());
    subs.push(Subscriber {
        id,
        name: name.into(),
        callback: Arc::new(callback),
    });
    COUNT.fetch_add(1, Ordering::Release);
    Subscription { id }
}

/// Whether anyone subscribed to `name`.
pub fn is_subscribed(name: &str) -> bool {
    if COUNT.load(Ordering::Acquire) == 0 {
        return false;
    }
    let subs = SUBSCRIBERS.read().unwrap_or_else(|p| p.into_inner());
    subs.iter().any(|s| s.name == name)
}

/// Delivers `event` to the subscribers of its name.
pub fn emit(event: &Event) {
    if COUNT.load(Ordering::Acquire) == 0 {
        return;
    }
    // Callbacks run outside the lock, so they may subscribe or unsubscribe themselves.
    let callbacks: Vec<Callback> = {
        let subs = SUBSCRIBERS.read().unwrap_or_else(|p| p.into_inner());
        subs.iter()
            .filter(|s| s.name == event.name)
            .map(|s| s.callback.clone())
            .collect()
    };
    for callback in callbacks {
        if catch_unwind(AssertUnwindSafe(|| callback(event))).is_err() {
            tracing::error!(
                event = event.name,
                "an instrumentation subscriber panicked; the event was still delivered to the others"
            );
        }
    }
}

/// Builds the event with `make` and [`emit`]s it, only if someone subscribed to `name`.
pub fn emit_with(name: &str, make: impl FnOnce() -> Event) {
    if is_subscribed(name) {
        emit(&make());
    }
}

#[cfg(test)]
#[allow(clippy::panic, clippy::unreachable)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn subscribers_see_only_their_event_until_dropped() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let sub = subscribe("test.a", move |e| {
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(e.topic.clone())
        });
        emit(&Event::new("test.b", "x"));
        emit(&Event::new("test.a", "y"));
        drop(sub);
        emit(&Event::new("test.a", "z"));
        assert_eq!(*got.lock().unwrap_or_else(|p| p.into_inner()), vec!["y".to_string()]);
    }

    #[test]
    fn a_panicking_subscriber_does_not_stop_the_others() {
        let got = Arc::new(AtomicUsize::new(0));
        let sink = got.clone();
        let _a = subscribe("test.panic", |_| std::panic::panic_any("boom"));
        let _b = subscribe("test.panic", move |_| {
            sink.fetch_add(1, Ordering::SeqCst);
        });
        emit(&Event::new("test.panic", "t"));
        assert_eq!(got.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn emit_with_builds_nothing_without_subscribers() {
        emit_with("test.nobody", || unreachable!("built an event nobody listens to"));
    }
}
