//! [`ConsumeMessage`] and [`ConsumeBatch`]: Deimos's `test_consume_message` and `test_consume_batch`.

use std::future::{Future, IntoFuture};
use std::pin::Pin;

use deimos_avro::AvroSchema;
use deimos_consumer::{Headers, InlineListener, InlineMessage, InlineOutcome, KeyConfig, Listener};
use deimos_keys::KeyEncoder;
use serde_json::{Value as Json, json};

use crate::error::ConsumeError;
use crate::kit::TestKit;

/// The handler succeeded.
///
/// ```
/// use deimos_consumer::{ErrorPolicy, Handler, HandlerError, KeyConfig, Listener, Message, async_trait};
/// use deimos_test::TestKit;
/// use serde_json::{Value, json};
///
/// /// Fails the first attempt at each message, then succeeds.
/// struct Flaky;
///
/// #[async_trait]
/// impl Handler for Flaky {
///     type Payload = Value;
///     async fn consume(&self, message: Message<Value>) -> Result<(), HandlerError> {
///         if message.metadata.retry_count == 0 {
///             return Err("not yet".into());
///         }
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
/// let listener = Listener::builder("gadgets", "g").schema("com.acme.keys.Gadget").key_config(KeyConfig::None).handler(Flaky)
///     .error_policy(ErrorPolicy::Fatal).max_attempts(3).build()?;
/// let consumed = kit.consume_message(&listener, json!({"id": 1, "region": "eu", "name": "g"})).await?;
/// assert_eq!(consumed.attempts, 2); // retried once (at once: the backoff is not waited)
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Consumed {
    /// Attempts made: 1, or more when a fatal error was retried (up to `max_attempts`) and then succeeded.
    pub attempts: u32,
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One message to consume through a listener: see [`TestKit::consume_message`]. Does nothing until awaited.
#[must_use = "a ConsumeMessage does nothing until it is awaited"]
#[derive(Debug)]
pub struct ConsumeMessage<'a> {
    kit: &'a TestKit,
    listener: &'a Listener,
    payload: Json,
    key: Option<Json>,
    headers: Headers,
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
}

impl<'a> ConsumeMessage<'a> {
    pub(crate) fn new(kit: &'a TestKit, listener: &'a Listener, payload: Json) -> ConsumeMessage<'a> {
        ConsumeMessage {
            kit,
            listener,
            payload,
            key: None,
            headers: Headers::new(),
            partition: 1,
            offset: 1,
            timestamp: Some(now_millis()),
        }
    }

    /// The key, before encoding: the key field's value (`KeyConfig::Field`), a key record (`Schema`), or
    /// text (`Plain`, `None`). Without it the key is Deimos's default: `1` for a key field (whatever the
    /// payload holds) and for plain keys or no key config, every key-schema field `1` for a key schema, no
    /// key for `KeyConfig::None`.
    pub fn key(mut self, key: impl Into<Json>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    ///
    /// ```
    /// # use std::sync::{Arc, Mutex};
    /// # use deimos_consumer::{Handler, HandlerError, KeyConfig, Listener, Message, Metadata, async_trait};
    /// # use deimos_test::TestKit;
    /// # use serde_json::{Value, json};
    /// # #[derive(Clone, Default)]
    /// # struct Last(Arc<Mutex<Option<Metadata>>>);
    /// # #[async_trait]
    /// # impl Handler for Last {
    /// #     type Payload = Value;
    /// #     async fn consume(&self, m: Message<Value>) -> Result<(), HandlerError> {
    /// #         *self.0.lock().unwrap() = Some(m.metadata);
    /// #         Ok(())
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
    /// # let last = Last::default();
    /// # let listener = Listener::builder("gadgets", "g").schema("com.acme.keys.Gadget").key_config(KeyConfig::None).handler(last.clone()).build()?;
    /// # let seen = || last.0.lock().unwrap().clone().unwrap();
    /// let gadget = json!({"id": 1, "region": "eu", "name": "g"});
    /// kit.consume_message(&listener, gadget).header("source", "billing").header("trace", "t-1").await?;
    /// assert_eq!(seen().headers.get_str("source"), Some("billing")); // `seen()`: the handler's `message.metadata`
    /// assert_eq!(seen().headers.get_str("trace"), Some("t-1"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(name, Some(value.into()));
        self
    }

    /// The partition and offset the handler sees (default partition 1, offset 1, as Deimos).
    ///
    /// ```
    /// # use std::sync::{Arc, Mutex};
    /// # use deimos_consumer::{Handler, HandlerError, KeyConfig, Listener, Message, Metadata, async_trait};
    /// # use deimos_test::TestKit;
    /// # use serde_json::{Value, json};
    /// # #[derive(Clone, Default)]
    /// # struct Last(Arc<Mutex<Option<Metadata>>>);
    /// # #[async_trait]
    /// # impl Handler for Last {
    /// #     type Payload = Value;
    /// #     async fn consume(&self, m: Message<Value>) -> Result<(), HandlerError> {
    /// #         *self.0.lock().unwrap() = Some(m.metadata);
    /// #         Ok(())
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
    /// # let last = Last::default();
    /// # let listener = Listener::builder("gadgets", "g").schema("com.acme.keys.Gadget").key_config(KeyConfig::None).handler(last.clone()).build()?;
    /// # let seen = || last.0.lock().unwrap().clone().unwrap();
    /// let gadget = json!({"id": 1, "region": "eu", "name": "g"});
    /// kit.consume_message(&listener, gadget.clone()).await?;
    /// assert_eq!((seen().partition, seen().offset), (1, 1)); // `seen()`: the handler's `message.metadata`
    /// kit.consume_message(&listener, gadget).at(3, 42).await?;
    /// assert_eq!((seen().partition, seen().offset), (3, 42));
    /// # Ok(())
    /// # }
    /// ```
    pub fn at(mut self, partition: i32, offset: i64) -> Self {
        self.partition = partition;
        self.offset = offset;
        self
    }

    /// The Kafka timestamp in milliseconds since the epoch (default: now); `None` for none.
    ///
    /// ```
    /// # use std::sync::{Arc, Mutex};
    /// # use deimos_consumer::{Handler, HandlerError, KeyConfig, Listener, Message, Metadata, async_trait};
    /// # use deimos_test::TestKit;
    /// # use serde_json::{Value, json};
    /// # #[derive(Clone, Default)]
    /// # struct Last(Arc<Mutex<Option<Metadata>>>);
    /// # #[async_trait]
    /// # impl Handler for Last {
    /// #     type Payload = Value;
    /// #     async fn consume(&self, m: Message<Value>) -> Result<(), HandlerError> {
    /// #         *self.0.lock().unwrap() = Some(m.metadata);
    /// #         Ok(())
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
    /// # let last = Last::default();
    /// # let listener = Listener::builder("gadgets", "g").schema("com.acme.keys.Gadget").key_config(KeyConfig::None).handler(last.clone()).build()?;
    /// # let seen = || last.0.lock().unwrap().clone().unwrap();
    /// let gadget = json!({"id": 1, "region": "eu", "name": "g"});
    /// kit.consume_message(&listener, gadget.clone()).timestamp(Some(1_700_000_000_000)).await?;
    /// assert_eq!(seen().timestamp, Some(1_700_000_000_000)); // `seen()`: the handler's `message.metadata`
    /// kit.consume_message(&listener, gadget).timestamp(None).await?;
    /// assert_eq!(seen().timestamp, None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn timestamp(mut self, millis: Option<i64>) -> Self {
        self.timestamp = millis;
        self
    }

    async fn run(self) -> Result<Consumed, ConsumeError> {
        let inline = self.kit.inline_listener(self.listener)?;
        let message = encode(self.kit, self.listener, &inline, self.payload, self.key, None).await?;
        let mut message = message.at(self.partition, self.offset).headers(self.headers);
        message.timestamp = self.timestamp;
        let outcome = inline.process_message(message).await?;
        finish(&inline, outcome, false)
    }
}

impl<'a> IntoFuture for ConsumeMessage<'a> {
    type Output = Result<Consumed, ConsumeError>;
    type IntoFuture = BoxFuture<'a, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// A batch to consume through a batch listener: see [`TestKit::consume_batch`]. Does nothing until awaited.
#[must_use = "a ConsumeBatch does nothing until it is awaited"]
#[derive(Debug)]
pub struct ConsumeBatch<'a> {
    kit: &'a TestKit,
    listener: &'a Listener,
    payloads: Vec<Json>,
    keys: Vec<Option<Json>>,
    partition: i32,
}

impl<'a> ConsumeBatch<'a> {
    pub(crate) fn new(kit: &'a TestKit, listener: &'a Listener, payloads: Vec<Json>) -> ConsumeBatch<'a> {
        ConsumeBatch {
            kit,
            listener,
            payloads,
            keys: Vec::new(),
            partition: 1,
        }
    }

    /// The keys, in the payloads' order; a missing or `None` one takes Deimos's default (see
    /// [`ConsumeMessage::key`]).
    ///
    /// ```
    /// # use std::sync::{Arc, Mutex};
    /// # use deimos_consumer::{Batch, BatchHandler, BatchMetadata, HandlerError, KeyConfig, Listener, async_trait};
    /// # use deimos_test::TestKit;
    /// # use serde_json::{Value, json};
    /// # #[derive(Clone, Default)]
    /// # struct Last(Arc<Mutex<Option<BatchMetadata>>>);
    /// # #[async_trait]
    /// # impl BatchHandler for Last {
    /// #     type Payload = Value;
    /// #     async fn consume_batch(&self, batch: Batch<Value>) -> Result<(), HandlerError> {
    /// #         *self.0.lock().unwrap() = Some(batch.metadata);
    /// #         Ok(())
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
    /// # let last = Last::default();
    /// # let listener = Listener::builder("gadgets", "g").schema("com.acme.keys.Gadget")
    /// #     .key_config(KeyConfig::field("id")).batch_handler(last.clone()).build()?;
    /// # let seen = || last.0.lock().unwrap().clone().unwrap();
    /// let gadgets = vec![json!({"id": 7, "region": "eu", "name": "a"}), json!({"id": 8, "region": "eu", "name": "b"})];
    /// kit.consume_batch(&listener, gadgets).keys([Some(7), None]).await?;
    /// // `seen()`: the batch handler's `batch.metadata`; keys are decoded per the listener's key config.
    /// let keys: Vec<Option<Value>> = seen().keys.into_iter().map(|k| k.map(|k| k.into_json())).collect();
    /// assert_eq!(keys, [Some(json!(7)), Some(json!(1))]); // the `None` took Deimos's default
    /// # Ok(())
    /// # }
    /// ```
    pub fn keys<K: Into<Json>>(mut self, keys: impl IntoIterator<Item = Option<K>>) -> Self {
        self.keys = keys.into_iter().map(|k| k.map(Into::into)).collect();
        self
    }

    /// The batch's partition (default 1, as Deimos).
    ///
    /// ```
    /// # use std::sync::{Arc, Mutex};
    /// # use deimos_consumer::{Batch, BatchHandler, BatchMetadata, HandlerError, KeyConfig, Listener, async_trait};
    /// # use deimos_test::TestKit;
    /// # use serde_json::{Value, json};
    /// # #[derive(Clone, Default)]
    /// # struct Last(Arc<Mutex<Option<BatchMetadata>>>);
    /// # #[async_trait]
    /// # impl BatchHandler for Last {
    /// #     type Payload = Value;
    /// #     async fn consume_batch(&self, batch: Batch<Value>) -> Result<(), HandlerError> {
    /// #         *self.0.lock().unwrap() = Some(batch.metadata);
    /// #         Ok(())
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
    /// # let last = Last::default();
    /// # let listener = Listener::builder("gadgets", "g").schema("com.acme.keys.Gadget")
    /// #     .key_config(KeyConfig::field("id")).batch_handler(last.clone()).build()?;
    /// # let seen = || last.0.lock().unwrap().clone().unwrap();
    /// let gadgets = vec![json!({"id": 7, "region": "eu", "name": "a"}), json!({"id": 8, "region": "eu", "name": "b"})];
    /// kit.consume_batch(&listener, gadgets).partition(4).await?;
    /// assert_eq!(seen().partition, 4); // `seen()`: the batch handler's `batch.metadata`
    /// assert_eq!(seen().offsets, [1, 2]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = partition;
        self
    }

    async fn run(self) -> Result<Consumed, ConsumeError> {
        let inline = self.kit.inline_listener(self.listener)?;
        let now = now_millis();
        let mut messages = Vec::with_capacity(self.payloads.len());
        let mut keys = self.keys.into_iter();
        for (i, (payload, offset)) in self.payloads.into_iter().zip(1i64..).enumerate() {
            let key = keys.next().flatten();
            let message = encode(self.kit, self.listener, &inline, payload, key, Some(i)).await?;
            messages.push(message.at(self.partition, offset).timestamp(now));
        }
        let outcome = inline.process_batch(messages).await?;
        finish(&inline, outcome, true)
    }
}

impl<'a> IntoFuture for ConsumeBatch<'a> {
    type Output = Result<Consumed, ConsumeError>;
    type IntoFuture = BoxFuture<'a, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn finish(inline: &InlineListener, outcome: InlineOutcome, batch: bool) -> Result<Consumed, ConsumeError> {
    let topic = inline.topic().to_string();
    match outcome {
        InlineOutcome::Handled { attempts } => Ok(Consumed { attempts }),
        InlineOutcome::Skipped {
            stage,
            error,
            attempts,
            fatal,
            dead_letters,
        } => Err(ConsumeError::Skipped {
            topic,
            batch,
            stage,
            attempts,
            fatal,
            dead_letters,
            source: error,
        }),
        InlineOutcome::Raised { stage, error, attempts } => Err(ConsumeError::Raised {
            topic,
            stage,
            attempts,
            source: error,
        }),
        // A future outcome: report it as a fatal error rather than hide it.
        other => Err(ConsumeError::Raised {
            topic,
            stage: deimos_consumer::ErrorStage::Handler,
            attempts: 0,
            source: format!("unexpected outcome {other:?}").into(),
        }),
    }
}

/// Deimos's `_key_from_consumer`.
fn default_key(listener: &Listener, inline: &InlineListener) -> Option<Json> {
    match listener.key_config() {
        KeyConfig::None => None,
        KeyConfig::Schema(_) => {
            let fields = inline
                .key_spec()
                .key_schema()
                .map(AvroSchema::fields)
                .unwrap_or_default();
            Some(Json::Object(fields.into_iter().map(|f| (f.name, json!(1))).collect()))
        }
        _ => Some(json!(1)),
    }
}

/// Checks the payload, encodes key and value as a producer would, and registers the value schema.
async fn encode(
    kit: &TestKit,
    listener: &Listener,
    inline: &InlineListener,
    payload: Json,
    key: Option<Json>,
    index: Option<usize>,
) -> Result<InlineMessage, ConsumeError> {
    let topic = inline.topic();
    let reader = inline.schema();
    let value = if payload.is_null() {
        None
    } else {
        check(reader, &payload).map_err(|reason| ConsumeError::InvalidPayload {
            topic: topic.to_string(),
            schema: listener.schema(),
            index,
            reason,
        })?;
        let encoded = kit
            .setup()
            .codec()
            .encode_value(&format!("{topic}-value"), reader, &payload)
            .await
            .map_err(|e| ConsumeError::Registry {
                topic: topic.to_string(),
                source: Box::new(e),
            })?;
        Some(encoded)
    };
    let key = key.filter(|k| !k.is_null()).or_else(|| default_key(listener, inline));
    let invalid_key = |reason: String| ConsumeError::InvalidKey {
        topic: topic.to_string(),
        index,
        reason,
    };
    let encoder = KeyEncoder::for_topic(inline.key_spec().clone(), "", topic);
    encoder
        .prepare(kit.memory_registry().as_ref())
        .await
        .map_err(|e| invalid_key(e.to_string()))?;
    let key = encoder
        .encode(key.as_ref())
        .map_err(|e| invalid_key(format!("{e}; give one with `.key(…)`")))?;
    Ok(InlineMessage::new(key, value))
}

/// Whether the listener's value schema takes `payload` as it is (Deimos validates with
/// `fail_on_extra_fields`): it must encode, and read back the same, so no field is unknown and none only fits
/// once coerced (`"5"` for a `long`).
pub(crate) fn check(schema: &AvroSchema, payload: &Json) -> Result<(), String> {
    let bytes = schema.encode_value(payload).map_err(|e| e.to_string())?;
    let decoded = schema
        .decode_value(&bytes)
        .map_err(|e| format!("it encodes but does not read back: {e}"))?;
    let mut problems = Vec::new();
    strict(payload, &decoded, "", &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The listener's value schema, for [`TestKit::assert_invalid_payload`].
pub(crate) fn check_payload(
    kit: &TestKit,
    listener: &Listener,
    payload: &Json,
) -> Result<Result<(), String>, deimos_consumer::ConsumerError> {
    let inline = kit.inline_listener(listener)?;
    Ok(check(inline.schema(), payload))
}

fn same_number(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    if a == b {
        return true;
    }
    match (a.as_f64(), b.as_f64()) {
        // `float` fields hold 32 bits: 1.1 reads back as 1.100000023841858.
        #[allow(clippy::cast_possible_truncation)]
        (Some(x), Some(y)) => x == y || (x as f32) == (y as f32),
        _ => false,
    }
}

fn strict(given: &Json, decoded: &Json, path: &str, problems: &mut Vec<String>) {
    let at = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (given, decoded) {
        (Json::Object(g), Json::Object(d)) => {
            for (key, value) in g {
                match d.get(key) {
                    Some(dv) => strict(value, dv, &at(key), problems),
                    None => problems.push(format!(
                        "`{}` is not a field of the schema (consumers reject unknown fields, as Deimos's validation does)",
                        at(key)
                    )),
                }
            }
        }
        (Json::Array(g), Json::Array(d)) if g.len() == d.len() => {
            for (i, (gv, dv)) in g.iter().zip(d).enumerate() {
                strict(gv, dv, &format!("{path}[{i}]"), problems);
            }
        }
        (Json::Number(a), Json::Number(b)) if same_number(a, b) => {}
        (a, b) if a == b => {}
        (a, b) => problems.push(format!(
            "`{}` is {a}, which the schema only takes coerced to {b}; a producer sends {b}, so give that",
            if path.is_empty() { "the payload" } else { path }
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn widget() -> AvroSchema {
        let store = deimos_avro::SchemaStore::load_all(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))
            .unwrap_or_else(|e| unreachable!("{e}"));
        store.get("com.acme.Widget").unwrap_or_else(|e| unreachable!("{e}"))
    }

    fn payload() -> Json {
        json!({"id": 1, "message_id": "m", "name": "n", "description": "d", "price": 1, "quantity": 2,
               "status": "ACTIVE", "tags": ["a"], "updated_at": 5})
    }

    #[test]
    fn valid_payloads_pass_with_defaults_and_integral_doubles() {
        assert_eq!(check(&widget(), &payload()), Ok(()));
    }

    #[test]
    fn unknown_fields_and_coerced_values_are_invalid() {
        let mut p = payload();
        p["colour"] = json!("red");
        p["quantity"] = json!("2");
        let why = check(&widget(), &p).unwrap_err();
        assert!(why.contains("`colour` is not a field of the schema"), "{why}");
        assert!(why.contains("`quantity` is \"2\""), "{why}");
        let mut p = payload();
        p.as_object_mut().map(|o| o.remove("name"));
        let why = check(&widget(), &p).unwrap_err();
        assert!(why.contains("name"), "{why}");
    }
}
