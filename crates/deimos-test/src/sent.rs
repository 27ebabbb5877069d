//! [`Expectation`]: what [`assert_sent!`](crate::assert_sent) and its variants look for among sent messages.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use deimos_producer::{MemoryBackend, SentMessage};
use serde_json::Value as Json;

use crate::matchers::{self, Diff, describe};

/// Anything that holds sent messages: a [`TestKit`](crate::TestKit), a [`MemoryBackend`], or a list of
/// [`SentMessage`]s. The assertions take any of them; so can helpers of your own.
///
/// ```
/// use deimos_test::{SentMessages, TestKit};
/// # use deimos_producer::Producer;
/// # use deimos_keys::KeyConfig;
/// # use serde_json::json;
///
/// fn count_to(sent: &impl SentMessages, topic: &str) -> usize {
///     sent.sent_messages().iter().filter(|m| m.topic == topic).count()
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
/// # let producer = kit.producer(Producer::builder("gadgets").topic("gadgets").schema("com.acme.keys.Gadget")
/// #     .key_config(KeyConfig::None)).await?;
/// producer.publish(json!({"id": 7, "region": "eu", "name": "red"})).await?;
/// assert_eq!(count_to(&kit, "gadgets"), 1);
/// assert_eq!(count_to(kit.backend(), "gadgets"), 1);
/// assert_eq!(count_to(&kit.sent_messages(), "gadgets"), 1);
/// # Ok(())
/// # }
/// ```
pub trait SentMessages {
    /// The messages sent so far, in order.
    fn sent_messages(&self) -> Vec<SentMessage>;
}

impl SentMessages for MemoryBackend {
    fn sent_messages(&self) -> Vec<SentMessage> {
        self.sent()
    }
}

impl SentMessages for [SentMessage] {
    fn sent_messages(&self) -> Vec<SentMessage> {
        self.to_vec()
    }
}

impl SentMessages for Vec<SentMessage> {
    fn sent_messages(&self) -> Vec<SentMessage> {
        self.clone()
    }
}

impl<T: SentMessages + ?Sized> SentMessages for &T {
    fn sent_messages(&self) -> Vec<SentMessage> {
        (**self).sent_messages()
    }
}

/// A message expected among the sent ones (Deimos's `have_sent` matcher).
///
/// Matching follows Deimos:
/// - the topic is equal;
/// - the payload matches **exactly**: every expected key present and equal, no other keys, nested objects
///   and arrays compared the same way, numbers by value (`1` matches `1.0`); [`including`](Self::including)
///   (Deimos's `have_sent_including`) lets other top-level keys through. `null` expects a tombstone;
///   [`matchers`](crate::matchers) such as `any()` may stand for any value, anywhere;
/// - the key (unencoded) and the partition key are compared only when given;
/// - headers, when given, must each be present with a matching value (UTF-8 text). Other headers are allowed
///   (Deimos compares the whole hash): producers add `traceparent` when a trace is active.
#[derive(Debug, Clone)]
#[must_use]
pub struct Expectation {
    topic: String,
    payload: Json,
    including: bool,
    key: Option<Json>,
    partition_key: Option<Json>,
    headers: Vec<(String, Json)>,
}

impl Expectation {
    /// A message to `topic` (with the producer's topic prefix, as sent) whose payload matches `payload`
    /// (`Json::Null`: a tombstone).
    ///
    /// ```
    /// # use deimos_test::{Expectation, TestKit};
    /// # use deimos_test::matchers::{any, any_integer, string_containing};
    /// # use deimos_producer::Producer;
    /// # use deimos_keys::KeyConfig;
    /// # use serde_json::{Value, json};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
    /// # let producer = kit.producer(Producer::builder("gadgets").topic("gadgets").schema("com.acme.keys.Gadget")
    /// #     .key_config(KeyConfig::field("id"))).await?;
    /// producer.publish(json!({"id": 7, "region": "eu", "name": "red"})).await?;
    /// let expected = Expectation::new("gadgets", json!({"id": 7, "region": "eu", "name": "red"}));
    /// expected.assert_in(&kit);
    /// Expectation::new("gadgets", Value::Null).assert_not_in(&kit); // no tombstone was sent
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(topic: impl Into<String>, payload: Json) -> Expectation {
        Expectation {
            topic: topic.into(),
            payload,
            including: false,
            key: None,
            partition_key: None,
            headers: Vec::new(),
        }
    }

    /// The payload includes the expected keys; others are allowed (Deimos's `have_sent_including`).
    ///
    /// ```
    /// # use deimos_test::{Expectation, TestKit};
    /// # use deimos_test::matchers::{any, any_integer, string_containing};
    /// # use deimos_producer::Producer;
    /// # use deimos_keys::KeyConfig;
    /// # use serde_json::{Value, json};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
    /// # let producer = kit.producer(Producer::builder("gadgets").topic("gadgets").schema("com.acme.keys.Gadget")
    /// #     .key_config(KeyConfig::field("id"))).await?;
    /// producer.publish(json!({"id": 7, "region": "eu", "name": "red"})).await?;
    /// Expectation::new("gadgets", json!({"name": "red"})).including().assert_in(&kit);
    /// // Exact: `id` and `region` were sent too.
    /// Expectation::new("gadgets", json!({"name": "red"})).assert_not_in(&kit);
    /// # Ok(())
    /// # }
    /// ```
    pub fn including(mut self) -> Self {
        self.including = true;
        self
    }

    /// The unencoded key matches `key` (a value or a matcher).
    ///
    /// ```
    /// # use deimos_test::{Expectation, TestKit};
    /// # use deimos_test::matchers::{any, any_integer, string_containing};
    /// # use deimos_producer::Producer;
    /// # use deimos_keys::KeyConfig;
    /// # use serde_json::{Value, json};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
    /// # let producer = kit.producer(Producer::builder("gadgets").topic("gadgets").schema("com.acme.keys.Gadget")
    /// #     .key_config(KeyConfig::field("id"))).await?;
    /// producer.publish(json!({"id": 7, "region": "eu", "name": "red"})).await?;
    /// Expectation::new("gadgets", any()).key(7).assert_in(&kit);
    /// Expectation::new("gadgets", any()).key(any_integer()).assert_in(&kit);
    /// Expectation::new("gadgets", any()).key(8).assert_not_in(&kit);
    /// // A blank key (null or "") checks nothing, as Deimos's `key.present?`.
    /// Expectation::new("gadgets", any()).key(serde_json::Value::Null).assert_in(&kit);
    /// # Ok(())
    /// # }
    /// ```
    pub fn key(mut self, key: impl Into<Json>) -> Self {
        let key = key.into();
        // Deimos compares the key only when it is present: nil and "" leave it unchecked.
        if !(key.is_null() || key.as_str() == Some("")) {
            self.key = Some(key);
        }
        self
    }

    /// The partition key (as text; the key when there was none) matches.
    ///
    /// ```
    /// # use deimos_test::{Expectation, TestKit};
    /// # use deimos_test::matchers::{any, any_integer, string_containing};
    /// # use deimos_producer::Producer;
    /// # use deimos_keys::KeyConfig;
    /// # use serde_json::{Value, json};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
    /// # let producer = kit.producer(Producer::builder("gadgets").topic("gadgets").schema("com.acme.keys.Gadget")
    /// #     .key_config(KeyConfig::field("id"))).await?;
    /// producer.publish(json!({"id": 7, "region": "eu", "name": "red"})).await?;
    /// Expectation::new("gadgets", any()).partition_key("7").assert_in(&kit); // the key `7`, as text
    /// Expectation::new("gadgets", any()).partition_key(string_containing("7")).assert_in(&kit);
    /// Expectation::new("gadgets", any()).partition_key("8").assert_not_in(&kit);
    /// // A blank partition key (null or "") checks nothing, as Deimos's `partition_key.present?`.
    /// Expectation::new("gadgets", any()).partition_key("").assert_in(&kit);
    /// # Ok(())
    /// # }
    /// ```
    pub fn partition_key(mut self, partition_key: impl Into<Json>) -> Self {
        let partition_key = partition_key.into();
        // As for the key: Deimos compares it only when `partition_key.present?`; nil and "" check nothing.
        if !(partition_key.is_null() || partition_key.as_str() == Some("")) {
            self.partition_key = Some(partition_key);
        }
        self
    }

    /// A header `name` is present with a value (as UTF-8 text) matching `value`.
    ///
    /// ```
    /// # use deimos_test::{Expectation, TestKit};
    /// # use deimos_test::matchers::{any, any_integer, string_containing};
    /// # use deimos_producer::Producer;
    /// # use deimos_keys::KeyConfig;
    /// # use serde_json::{Value, json};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
    /// # let producer = kit.producer(Producer::builder("gadgets").topic("gadgets").schema("com.acme.keys.Gadget")
    /// #     .key_config(KeyConfig::field("id"))).await?;
    /// let options = deimos_producer::PublishOptions::new().header("source", "billing").header("region", "eu");
    /// producer.publish_list_with(vec![json!({"id": 7, "region": "eu", "name": "red"})], &options).await?;
    /// Expectation::new("gadgets", any()).header("source", "billing").assert_in(&kit);
    /// Expectation::new("gadgets", any()).header("source", string_containing("bill")).assert_in(&kit);
    /// Expectation::new("gadgets", any()).header("source", "crm").assert_not_in(&kit);
    /// # Ok(())
    /// # }
    /// ```
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Json>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Every one of these headers is present with a matching value.
    ///
    /// ```
    /// # use deimos_test::{Expectation, TestKit};
    /// # use deimos_test::matchers::{any, any_integer, string_containing};
    /// # use deimos_producer::Producer;
    /// # use deimos_keys::KeyConfig;
    /// # use serde_json::{Value, json};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
    /// # let producer = kit.producer(Producer::builder("gadgets").topic("gadgets").schema("com.acme.keys.Gadget")
    /// #     .key_config(KeyConfig::field("id"))).await?;
    /// let options = deimos_producer::PublishOptions::new().header("source", "billing").header("region", "eu");
    /// producer.publish_list_with(vec![json!({"id": 7, "region": "eu", "name": "red"})], &options).await?;
    /// Expectation::new("gadgets", any()).headers([("source", "billing"), ("region", "eu")]).assert_in(&kit);
    /// // No `trace` header was sent.
    /// Expectation::new("gadgets", any()).headers([("source", any()), ("trace", any())]).assert_not_in(&kit);
    /// # Ok(())
    /// # }
    /// ```
    pub fn headers<K: Into<String>, V: Into<Json>>(mut self, headers: impl IntoIterator<Item = (K, V)>) -> Self {
        self.headers
            .extend(headers.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// The first matching message, or what was sent instead (the [`Mismatch`] displays as the assertion's
    /// failure message).
    ///
    /// ```
    /// # use deimos_test::{Expectation, TestKit};
    /// # use deimos_producer::Producer;
    /// # use deimos_keys::KeyConfig;
    /// # use serde_json::json;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
    /// let producer = kit.producer(Producer::builder("gadgets").topic("gadgets").schema("com.acme.keys.Gadget")
    ///     .key_config(KeyConfig::field("id"))).await?;
    /// producer.publish(json!({"id": 7, "region": "eu", "name": "red"})).await?;
    ///
    /// let sent = kit.sent_messages();
    /// let found = Expectation::new("gadgets", json!({"name": "red"})).including().key(7).find(&sent)?;
    /// assert_eq!(found.partition, 0);
    /// let missing = Expectation::new("gadgets", json!({"name": "blue"})).including().find(&sent).unwrap_err();
    /// assert!(missing.to_string().contains(r#"payload.name: expected "blue", got "red""#));
    /// # Ok(())
    /// # }
    /// ```
    pub fn find<'a>(&self, sent: &'a [SentMessage]) -> Result<&'a SentMessage, Mismatch> {
        let mut closest: Option<(usize, Vec<Diff>)> = None;
        for (i, m) in sent.iter().enumerate().filter(|(_, m)| m.topic == self.topic) {
            let diffs = self.diffs(m);
            if diffs.is_empty() {
                return Ok(m);
            }
            if closest.as_ref().is_none_or(|(_, best)| diffs.len() < best.len()) {
                closest = Some((i, diffs));
            }
        }
        Err(Mismatch::new(self, sent, closest))
    }

    /// Panics, listing what was sent to the topic and the closest message with its differences, unless a
    /// sent message matches. `sent` is anything that holds sent messages (see [`SentMessages`]).
    ///
    /// ```
    /// # use deimos_test::{Expectation, TestKit};
    /// # use deimos_test::matchers::{any, any_integer, string_containing};
    /// # use deimos_producer::Producer;
    /// # use deimos_keys::KeyConfig;
    /// # use serde_json::{Value, json};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
    /// # let producer = kit.producer(Producer::builder("gadgets").topic("gadgets").schema("com.acme.keys.Gadget")
    /// #     .key_config(KeyConfig::field("id"))).await?;
    /// producer.publish(json!({"id": 7, "region": "eu", "name": "red"})).await?;
    /// let expected = Expectation::new("gadgets", json!({"name": "red"})).including().key(7);
    /// expected.assert_in(&kit);
    /// expected.assert_in(kit.backend());
    /// expected.assert_in(&kit.sent_messages());
    /// # Ok(())
    /// # }
    /// ```
    #[track_caller]
    #[allow(clippy::panic)] // an assertion
    pub fn assert_in(&self, sent: &impl SentMessages) {
        let sent = sent.sent_messages();
        if let Err(mismatch) = self.find(&sent) {
            panic!("{mismatch}");
        }
    }

    /// Panics, showing the message, if a sent message matches.
    ///
    /// ```
    /// # use deimos_test::{Expectation, TestKit};
    /// # use deimos_test::matchers::{any, any_integer, string_containing};
    /// # use deimos_producer::Producer;
    /// # use deimos_keys::KeyConfig;
    /// # use serde_json::{Value, json};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
    /// # let producer = kit.producer(Producer::builder("gadgets").topic("gadgets").schema("com.acme.keys.Gadget")
    /// #     .key_config(KeyConfig::field("id"))).await?;
    /// producer.publish(json!({"id": 7, "region": "eu", "name": "red"})).await?;
    /// Expectation::new("gadgets", json!({"name": "blue"})).including().assert_not_in(&kit);
    /// Expectation::new("widgets", any()).assert_not_in(&kit); // nothing at all went to `widgets`
    /// # Ok(())
    /// # }
    /// ```
    #[track_caller]
    #[allow(clippy::panic)] // an assertion
    pub fn assert_not_in(&self, sent: &impl SentMessages) {
        let sent = sent.sent_messages();
        if let Ok(m) = self.find(&sent) {
            panic!(
                "expected no message matching {} on `{}`, but one was sent: {}",
                self.describe(),
                self.topic,
                show_message(m)
            );
        }
    }

    fn diffs(&self, m: &SentMessage) -> Vec<Diff> {
        let mut diffs = Vec::new();
        let payload = m.payload.clone().unwrap_or(Json::Null);
        let expected = if self.including {
            matchers::including(self.payload.clone())
        } else {
            self.payload.clone()
        };
        if self.including && self.payload.is_null() {
            matchers::compare(&Json::Null, Some(&payload), "payload", &mut diffs);
        } else {
            matchers::compare(&expected, Some(&payload), "payload", &mut diffs);
        }
        if let Some(key) = &self.key {
            matchers::compare(key, m.key.as_ref(), "key", &mut diffs);
        }
        if let Some(pk) = &self.partition_key {
            let actual = m.partition_key.clone().map(Json::String);
            matchers::compare(pk, actual.as_ref(), "partition_key", &mut diffs);
        }
        for (name, want) in &self.headers {
            let values: Vec<Json> = m
                .headers
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| Json::String(String::from_utf8_lossy(v).into_owned()))
                .collect();
            if !values.iter().any(|v| matchers::matches(want, v)) {
                diffs.push(Diff {
                    path: format!("headers.{name}"),
                    expected: describe(want),
                    actual: if values.is_empty() {
                        "no such header".into()
                    } else {
                        values.iter().map(describe).collect::<Vec<_>>().join(" and ")
                    },
                });
            }
        }
        diffs
    }

    fn describe(&self) -> String {
        let mut out = if self.payload.is_null() {
            "a tombstone".to_string()
        } else if self.including {
            format!("a payload including {}", describe(&self.payload))
        } else {
            format!("payload {}", describe(&self.payload))
        };
        if let Some(key) = &self.key {
            let _ = write!(out, ", key {}", describe(key));
        }
        if let Some(pk) = &self.partition_key {
            let _ = write!(out, ", partition key {}", describe(pk));
        }
        for (name, value) in &self.headers {
            let _ = write!(out, ", header {name} = {}", describe(value));
        }
        out
    }
}

/// Why no sent message matched an [`Expectation`]; its `Display` is the assertion's failure message.
#[derive(Debug, Clone)]
pub struct Mismatch {
    report: String,
}

/// At most this many messages are listed in a failure.
const LISTED: usize = 20;

fn show_message(m: &SentMessage) -> String {
    let payload = m.payload.as_ref().map_or_else(|| "tombstone".to_string(), describe);
    let key = m.key.as_ref().map_or_else(|| "none".to_string(), describe);
    format!("key {key}, payload {payload}")
}

impl Mismatch {
    fn new(expected: &Expectation, sent: &[SentMessage], closest: Option<(usize, Vec<Diff>)>) -> Mismatch {
        let mut out = format!(
            "no message sent to `{}` matched\n  expected: {}\n",
            expected.topic,
            expected.describe()
        );
        let to_topic: Vec<(usize, &SentMessage)> = sent
            .iter()
            .enumerate()
            .filter(|(_, m)| m.topic == expected.topic)
            .collect();
        if to_topic.is_empty() {
            let mut topics: BTreeMap<&str, usize> = BTreeMap::new();
            for m in sent {
                *topics.entry(m.topic.as_str()).or_default() += 1;
            }
            if topics.is_empty() {
                out.push_str("  no messages were sent at all (are producers disabled, or was the kit cleared?)\n");
            } else {
                let list: Vec<String> = topics.iter().map(|(t, n)| format!("`{t}` ({n})")).collect();
                let _ = writeln!(
                    out,
                    "  nothing was sent to `{}`; messages were sent to {}",
                    expected.topic,
                    list.join(", ")
                );
            }
            return Mismatch { report: out };
        }
        let _ = writeln!(out, "  messages sent to `{}` ({}):", expected.topic, to_topic.len());
        for (i, m) in to_topic.iter().take(LISTED) {
            let _ = writeln!(out, "    #{i}: {}", show_message(m));
        }
        if to_topic.len() > LISTED {
            let _ = writeln!(out, "    … and {} more", to_topic.len() - LISTED);
        }
        if let Some((i, diffs)) = closest {
            let _ = writeln!(
                out,
                "  closest: #{i}, {} difference{}:",
                diffs.len(),
                if diffs.len() == 1 { "" } else { "s" }
            );
            for d in diffs {
                let _ = writeln!(out, "    {}: expected {}, got {}", d.path, d.expected, d.actual);
            }
        }
        Mismatch { report: out }
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.report.trim_end())
    }
}

impl std::error::Error for Mismatch {}

/// Asserts that a message matching the payload **exactly** was sent to the topic (Deimos's
/// `expect(topic).to have_sent(payload, key, partition_key, headers)`).
///
/// `assert_sent!(sent, topic, payload)`, optionally followed by `key = …`, `partition_key = …`,
/// or `headers = [(name, value), …]`. `sent` is a [`TestKit`](crate::TestKit), a
/// [`MemoryBackend`] or a list of [`SentMessage`]s. See [`Expectation`] for the rules; on failure it
/// lists the messages sent to the topic and the closest one with its differences.
///
/// ```
/// # use deimos_test::{TestKit, assert_sent, matchers::any};
/// # use deimos_producer::Producer;
/// # use deimos_keys::KeyConfig;
/// # use serde_json::json;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
/// let producer = kit.producer(Producer::builder("gadgets").topic("gadgets").schema("com.acme.keys.Gadget")
///     .key_config(KeyConfig::field("id"))).await?;
/// producer.publish(json!({"id": 7, "region": "eu", "name": "red"})).await?;
///
/// assert_sent!(kit, "gadgets", json!({"id": 7, "region": "eu", "name": "red"}), key = 7);
/// assert_sent!(kit, "gadgets", json!({"id": any(), "region": "eu", "name": "red"}), partition_key = "7");
/// # Ok(())
/// # }
/// ```
///
/// Headers, each `(name, value)` with a value or a matcher; other headers may be there too:
///
/// ```
/// # use deimos_test::{TestKit, assert_sent, matchers::{any, string_containing}};
/// # use deimos_producer::{Producer, PublishOptions};
/// # use deimos_keys::KeyConfig;
/// # use serde_json::json;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
/// let producer = kit.producer(Producer::builder("gadgets").topic("gadgets").schema("com.acme.keys.Gadget")
///     .key_config(KeyConfig::field("id"))).await?;
/// let options = PublishOptions::new().header("source", "billing").header("request-id", "req-42");
/// producer.publish_list_with(vec![json!({"id": 7, "region": "eu", "name": "red"})], &options).await?;
///
/// assert_sent!(kit, "gadgets", any(), headers = [("source", "billing")]);
/// assert_sent!(kit, "gadgets", any(), key = 7, headers = [("source", any()), ("request-id", string_containing("42"))]);
/// # Ok(())
/// # }
/// ```
#[macro_export]
macro_rules! assert_sent {
    ($sent:expr, $topic:expr, $payload:expr $(, $opt:ident = $value:expr)* $(,)?) => {
        $crate::Expectation::new($topic, $payload)$(.$opt($value))*.assert_in(&$sent)
    };
}

/// Asserts that a message whose payload **includes** these keys was sent to the topic (Deimos's
/// `have_sent_including`). Options as [`assert_sent!`].
///
/// ```
/// # use deimos_test::{TestKit, assert_sent_including};
/// # use deimos_producer::Producer;
/// # use serde_json::json;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
/// let producer = kit.producer(Producer::builder("gadgets").topic("gadgets").schema("com.acme.keys.Gadget")
///     .key_config(deimos_keys::KeyConfig::None)).await?;
/// producer.publish(json!({"id": 7, "region": "eu", "name": "red"})).await?;
/// assert_sent_including!(kit, "gadgets", json!({"name": "red"}));
/// # Ok(())
/// # }
/// ```
#[macro_export]
macro_rules! assert_sent_including {
    ($sent:expr, $topic:expr, $payload:expr $(, $opt:ident = $value:expr)* $(,)?) => {
        $crate::Expectation::new($topic, $payload)
            .including()$(.$opt($value))*.assert_in(&$sent)
    };
}

/// Asserts that **no** message matching the payload exactly was sent to the topic. Options as
/// [`assert_sent!`].
///
/// ```
/// # use deimos_keys::KeyConfig;
/// # use deimos_test::{TestKit, assert_not_sent, matchers::any};
/// # use deimos_producer::Producer;
/// # use serde_json::json;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let kit = TestKit::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))?;
/// let producer = kit.producer(Producer::builder("gadgets").topic("gadgets").schema("com.acme.keys.Gadget").key_config(KeyConfig::None)).await?;
/// deimos_test::disable::without_producers_in(producer.publish(json!({"id": 7, "region": "eu", "name": "red"}))).await?;
/// assert_not_sent!(kit, "gadgets", any());
/// # Ok(())
/// # }
/// ```
#[macro_export]
macro_rules! assert_not_sent {
    ($sent:expr, $topic:expr, $payload:expr $(, $opt:ident = $value:expr)* $(,)?) => {
        $crate::Expectation::new($topic, $payload)$(.$opt($value))*.assert_not_in(&$sent)
    };
}
