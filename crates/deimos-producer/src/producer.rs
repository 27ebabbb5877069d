//! [`Producer`]: a declared producer, built once against a [`ProducerSetup`], publishing loose or typed payloads.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use deimos_avro::{AvroSchema, ResolvedPlan, SchemaStore, wire};
use deimos_keys::{KeyConfig, KeyEncoder, KeySpec};
use deimos_metrics::{PayloadLog, events, trace};
use deimos_registry::{SchemaCodec, SchemaRegistry, SchemaWriter, SubjectNameStrategy};
use serde::Serialize;
use serde_json::{Map, Value as Json};
use tracing::Instrument;

use crate::backend::{DeliveryResult, OutgoingBatch, OutgoingMessage, Pending, PublishBackend};
use crate::disable;
use crate::error::{BuildError, PublishError};
use crate::report::{DeliveryMode, MessageOutcome, PublishOptions, PublishReport};

/// Deimos's `MAX_BATCH_SIZE`: a call's messages go to the backend in groups of at most this many.
pub const DEFAULT_MAX_BATCH_SIZE: usize = 500;

/// Computes a message's partition key from its payload (which still holds `payload_key`, as in Deimos).
pub type PartitionKeyFn = Arc<dyn Fn(&Map<String, Json>) -> Option<String> + Send + Sync>;

/// What every producer of a service shares: schemas, registry, backend, topic prefix.
#[derive(Clone)]
pub struct ProducerSetup {
    store: Arc<SchemaStore>,
    codec: Arc<SchemaCodec>,
    backend: Arc<dyn PublishBackend>,
    topic_prefix: String,
    max_batch_size: usize,
    mode: DeliveryMode,
    payload_log: PayloadLog,
    disabled: bool,
}

impl fmt::Debug for ProducerSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerSetup")
            .field("schemas", &self.store.root())
            .field("backend", &self.backend)
            .field("topic_prefix", &self.topic_prefix)
            .field("max_batch_size", &self.max_batch_size)
            .field("mode", &self.mode)
            .field("payload_log", &self.payload_log)
            .field("disabled", &self.disabled)
            .finish()
    }
}

/// Builds a [`ProducerSetup`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ProducerSetupBuilder {
    setup: ProducerSetup,
}

impl ProducerSetup {
    /// A setup over a schema store, a registry and a backend, with no topic prefix, groups of 500 and
    /// synchronous delivery.
    pub fn builder(
        store: impl Into<Arc<SchemaStore>>,
        registry: Arc<dyn SchemaRegistry>,
        backend: impl PublishBackend,
    ) -> ProducerSetupBuilder {
        ProducerSetupBuilder {
            setup: ProducerSetup {
                store: store.into(),
                codec: Arc::new(SchemaCodec::from_arc(registry)),
                backend: Arc::new(backend),
                topic_prefix: String::new(),
                max_batch_size: DEFAULT_MAX_BATCH_SIZE,
                mode: DeliveryMode::Sync,
                payload_log: PayloadLog::default(),
                disabled: false,
            },
        }
    }

    /// The schema store.
    pub fn store(&self) -> &SchemaStore {
        &self.store
    }

    /// The codec (registry and plan caches).
    pub fn codec(&self) -> &Arc<SchemaCodec> {
        &self.codec
    }

    /// The topic prefix.
    pub fn topic_prefix(&self) -> &str {
        &self.topic_prefix
    }
}

impl ProducerSetupBuilder {
    /// Prepended to every producer's topic and to its registry subjects (Deimos's `producers.topic_prefix`).
    pub fn topic_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.setup.topic_prefix = prefix.into();
        self
    }

    /// Messages per backend call (default 500, Deimos's `MAX_BATCH_SIZE`); at least 1.
    pub fn max_batch_size(mut self, n: usize) -> Self {
        self.setup.max_batch_size = n.max(1);
        self
    }

    /// Whether publish calls wait for delivery reports (default [`DeliveryMode::Sync`]).
    pub fn delivery(mut self, mode: DeliveryMode) -> Self {
        self.setup.mode = mode;
        self
    }

    /// What the "Publishing messages" debug log shows (Deimos's `payload_log`; default: payloads, at debug
    /// level only).
    pub fn payload_log(mut self, level: PayloadLog) -> Self {
        self.setup.payload_log = level;
        self
    }

    /// Whether the producers built from this setup publish nothing (Deimos's `producers.disabled`; default
    /// `false`). Their publish calls succeed without sending, as with the [`disable`] scopes, but only these
    /// producers are affected: other setups in the process, and [`disable::all_disabled`], are not.
    pub fn disabled(mut self, yes: bool) -> Self {
        self.setup.disabled = yes;
        self
    }

    /// Use an existing codec (to share its caches with consumers or other setups).
    pub fn codec(mut self, codec: Arc<SchemaCodec>) -> Self {
        self.setup.codec = codec;
        self
    }

    /// The setup.
    pub fn build(self) -> ProducerSetup {
        self.setup
    }
}

/// Declares a producer: see [`Producer::builder`].
#[derive(Clone)]
#[must_use]
pub struct ProducerBuilder {
    name: String,
    topic: String,
    schema: Option<String>,
    namespace: Option<String>,
    key_config: KeyConfig,
    partition_key: Option<PartitionKeyFn>,
    subjects: SubjectNameStrategy,
}

impl fmt::Debug for ProducerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerBuilder")
            .field("name", &self.name)
            .field("topic", &self.topic)
            .field("schema", &self.schema)
            .field("namespace", &self.namespace)
            .field("key_config", &self.key_config)
            .field("partition_key", &self.partition_key.is_some())
            .finish()
    }
}

impl ProducerBuilder {
    /// The topic, without the prefix (Deimos's `topic`).
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self
    }

    /// The value schema: a full name (`com.acme.Widget`) or a name completed by [`namespace`](Self::namespace).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// The schema's namespace (Deimos's `namespace`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// How keys are found and encoded (Deimos's `key_config`). Required: without one ([`KeyConfig::NotSet`], the
    /// default) [`build`](Self::build) fails with Deimos's "No key config given" message
    /// ([`BuildError::Key`]); use [`KeyConfig::None`] for a topic without keys.
    pub fn key_config(mut self, config: KeyConfig) -> Self {
        self.key_config = config;
        self
    }

    /// Computes each message's partition key from its payload (Deimos's `partition_key(payload)`); without it
    /// messages are partitioned by their encoded key.
    pub fn partition_key(mut self, f: impl Fn(&Map<String, Json>) -> Option<String> + Send + Sync + 'static) -> Self {
        self.partition_key = Some(Arc::new(f));
        self
    }

    /// How registry subjects are named (default: Deimos's `<prefix><topic>-value` / `-key`).
    pub fn subject_strategy(mut self, strategy: SubjectNameStrategy) -> Self {
        self.subjects = strategy;
        self
    }

    /// The preflight: loads the value schema, builds (or generates) the key schema and registers or looks up
    /// both subjects. Every configuration error shows here, before the first message.
    pub async fn build(self, setup: &ProducerSetup) -> Result<Producer, BuildError> {
        let name = self.name;
        if self.topic.trim().is_empty() {
            return Err(BuildError::BlankTopic { producer: name });
        }
        let Some(schema) = self.schema else {
            return Err(BuildError::NoSchema { producer: name });
        };
        let schema_name = deimos_avro::full_name(&schema, self.namespace.as_deref());
        let schema = setup.store.get(&schema_name).map_err(|source| BuildError::Schema {
            producer: name.clone(),
            schema: schema_name.clone(),
            source,
        })?;
        let key_err = |source| BuildError::Key {
            producer: name.clone(),
            source,
        };
        if self.key_config == KeyConfig::NotSet {
            // Deimos's producer without a key config fails on every message; fail here instead, once.
            return Err(key_err(deimos_keys::KeyError::NoKeyConfig));
        }
        let spec = KeySpec::build(self.key_config, &schema, &setup.store).map_err(key_err)?;
        let topic = format!("{}{}", setup.topic_prefix, self.topic);
        let keys = KeyEncoder::new(
            spec.clone(),
            self.subjects
                .subject(&topic, spec.key_schema().unwrap_or(&schema), true),
        );
        keys.prepare(setup.codec.registry().as_ref()).await.map_err(key_err)?;
        let subject = self.subjects.subject(&topic, &schema, false);
        let writer = setup
            .codec
            .writer(&subject, &schema)
            .await
            .map_err(|source| BuildError::Register {
                producer: name.clone(),
                schema: schema_name.clone(),
                subject: subject.clone(),
                source,
            })?;
        let auto_fields: Vec<&'static str> = ["message_id", "timestamp"]
            .into_iter()
            .filter(|f| schema.has_field(f))
            .collect();
        Ok(Producer {
            inner: Arc::new(Inner {
                identity: ResolvedPlan::identity(&schema),
                name: name.into(),
                topic: topic.into(),
                schema_name,
                value_subject: subject,
                schema,
                spec,
                keys,
                writer,
                partition_key: self.partition_key,
                auto_fields,
                size_hint: std::sync::atomic::AtomicUsize::new(64),
                setup: setup.clone(),
            }),
        })
    }
}

/// A built producer. Cheap to clone; share it freely.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

struct Inner {
    name: Arc<str>,
    /// The configured topic with the prefix.
    topic: Arc<str>,
    schema_name: String,
    value_subject: String,
    schema: AvroSchema,
    identity: ResolvedPlan,
    spec: KeySpec,
    keys: KeyEncoder,
    writer: SchemaWriter,
    partition_key: Option<PartitionKeyFn>,
    /// The auto fields (`message_id`, `timestamp`) the schema has.
    auto_fields: Vec<&'static str>,
    size_hint: std::sync::atomic::AtomicUsize,
    setup: ProducerSetup,
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("name", &self.inner.name)
            .field("topic", &self.inner.topic)
            .field("schema", &self.inner.schema_name)
            .field("key_config", self.inner.spec.config())
            .finish()
    }
}

/// A typed message: a serde value (or a tombstone) with an optional explicit key.
#[derive(Debug, Clone)]
#[must_use]
pub struct Record<'a, T: ?Sized> {
    value: Option<&'a T>,
    key: Option<Json>,
    /// A tombstone keyed by `value` (which is not sent).
    delete: bool,
}

impl<'a, T: Serialize + ?Sized> Record<'a, T> {
    /// A message with this value; the key comes from the key field (`KeyConfig::Field`) unless given.
    pub fn new(value: &'a T) -> Record<'a, T> {
        Record {
            value: Some(value),
            key: None,
            delete: false,
        }
    }

    /// A tombstone (no value) for `key`.
    pub fn tombstone(key: impl Into<Json>) -> Record<'a, T> {
        Record {
            value: None,
            key: Some(key.into()),
            delete: false,
        }
    }

    /// A tombstone for a typed key: a generated key record (`key_config schema:`), or a plain value.
    ///
    /// Fails only when `key` does not serialize to JSON (a map with non-string keys).
    pub fn tombstone_for<K: Serialize + ?Sized>(key: &K) -> Result<Record<'a, T>, serde_json::Error> {
        Ok(Record::tombstone(serde_json::to_value(key)?))
    }

    /// The tombstone that deletes `value`: keyed as a message of `value` would be (its key field for
    /// `KeyConfig::Field`, or the explicit [`key`](Self::key)), with no value sent.
    pub fn deletion_of(value: &'a T) -> Record<'a, T> {
        Record {
            value: Some(value),
            key: None,
            delete: true,
        }
    }

    /// With an explicit key (Deimos's `payload_key`).
    pub fn key(mut self, key: impl Into<Json>) -> Record<'a, T> {
        self.key = Some(key.into());
        self
    }
}

/// One message, encoded, before it goes to the backend.
struct Encoded {
    message: OutgoingMessage,
}

impl Producer {
    /// Declares a producer named `name` (Deimos's producer class name: it names the producer in logs, events
    /// and [`disable`] scopes).
    pub fn builder(name: impl Into<String>) -> ProducerBuilder {
        ProducerBuilder {
            name: name.into(),
            topic: String::new(),
            schema: None,
            namespace: None,
            key_config: KeyConfig::NotSet,
            partition_key: None,
            subjects: SubjectNameStrategy::Topic,
        }
    }

    /// The producer's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The configured topic with the prefix (Deimos's `Producer.topic`).
    pub fn topic(&self) -> &str {
        &self.inner.topic
    }

    /// The value schema.
    pub fn schema(&self) -> &AvroSchema {
        &self.inner.schema
    }

    /// The registry subject of the value schema.
    pub fn value_subject(&self) -> &str {
        &self.inner.value_subject
    }

    /// The registry subject of the key schema.
    pub fn key_subject(&self) -> &str {
        self.inner.keys.subject()
    }

    /// The key spec (config and key schema).
    pub fn key_spec(&self) -> &KeySpec {
        &self.inner.spec
    }

    /// Publishes one loose payload (a JSON object). See [`publish_list_with`](Self::publish_list_with).
    pub async fn publish(&self, payload: Json) -> Result<PublishReport, PublishError> {
        self.publish_list_with(vec![payload], &PublishOptions::default()).await
    }

    /// Publishes loose payloads. See [`publish_list_with`](Self::publish_list_with).
    pub async fn publish_list(&self, payloads: Vec<Json>) -> Result<PublishReport, PublishError> {
        self.publish_list_with(payloads, &PublishOptions::default()).await
    }

    /// Publishes loose payloads, each processed in Deimos's order:
    ///
    /// 1. `message_id` and `timestamp` are filled when the schema has them and the payload does not;
    /// 2. the partition key is computed (the payload still holds `payload_key`);
    /// 3. the key is taken out: `payload_key` if truthy, else the key field's value (before coercion);
    /// 4. a payload that is now empty is a tombstone;
    /// 5. the payload is coerced to the schema (fields not in the schema dropped) while it is encoded;
    /// 6. the key is encoded per the key config, then the value.
    ///
    /// Messages go to the backend in groups of `max_batch_size` (500), each encoded and handed over in turn. A key
    /// or schema error names the message and the field path and fails its group: nothing of that group or
    /// after it is sent, so a call of up to 500 messages is all or nothing ([`PublishError::sent`] counts what
    /// earlier groups sent in a longer call). With [`DeliveryMode::Sync`] the call
    /// returns once every message is acknowledged; a message the backend refuses (e.g. too large) is reported
    /// in [`PublishError::Undelivered`] with its size and the limit, and the other messages are still sent.
    ///
    /// A disabled producer (see [`disable`]) returns at once, sending nothing.
    pub async fn publish_list_with(
        &self,
        payloads: Vec<Json>,
        options: &PublishOptions,
    ) -> Result<PublishReport, PublishError> {
        let started = Instant::now();
        let original = events::is_subscribed(events::ENCODE_MESSAGES).then(|| payloads.clone());
        let span = self.send_span(options, payloads.len());
        if tracing::enabled!(tracing::Level::DEBUG) {
            self.log_publishing(self.destination(options), &payloads);
        }
        let result = self.publish_loose(payloads, options).instrument(span.clone()).await;
        if let Err(e) = &result {
            trace::record_error(&span, e.kind());
        }
        self.instrument(started, result, move || original.unwrap_or_default())
    }

    async fn publish_loose(
        &self,
        payloads: Vec<Json>,
        options: &PublishOptions,
    ) -> Result<PublishReport, PublishError> {
        let Some(topic) = self.prepare_call(options)? else {
            return Ok(PublishReport::disabled(self.topic(), payloads.len()));
        };
        let keep = self.keep_payloads();
        let total = payloads.len();
        let messages = payloads
            .into_iter()
            .enumerate()
            .map(|(index, payload)| self.encode_loose(index, payload, keep));
        self.send(topic, total, messages, options).await
    }

    /// Publishes one typed payload. See [`publish_records`](Self::publish_records).
    pub async fn publish_typed<T: Serialize + ?Sized>(&self, value: &T) -> Result<PublishReport, PublishError> {
        self.publish_records(&[Record::new(value)], &PublishOptions::default())
            .await
    }

    /// Publishes typed payloads, keys taken from the key field. See [`publish_records`](Self::publish_records).
    pub async fn publish_typed_list<T: Serialize>(&self, values: &[T]) -> Result<PublishReport, PublishError> {
        let records: Vec<Record<'_, T>> = values.iter().map(Record::new).collect();
        self.publish_records(&records, &PublishOptions::default()).await
    }

    /// Publishes typed messages: serde values serialized straight to Avro (no intermediate JSON), with the same
    /// steps and errors as [`publish_list_with`](Self::publish_list_with). Struct fields are matched to
    /// schema fields by name; fields the struct lacks take their schema defaults.
    ///
    /// A value whose `message_id` or `timestamp` is missing or `None` (when the schema has them) goes through
    /// the loose path so they are filled, as are values when a partition-key function is set (it reads a map).
    pub async fn publish_records<T: Serialize + ?Sized>(
        &self,
        records: &[Record<'_, T>],
        options: &PublishOptions,
    ) -> Result<PublishReport, PublishError> {
        let started = Instant::now();
        let span = self.send_span(options, records.len());
        if tracing::enabled!(tracing::Level::DEBUG) {
            let payloads: Vec<Json> = records
                .iter()
                .map(|r| {
                    r.value
                        .filter(|_| !r.delete)
                        .and_then(|v| serde_json::to_value(v).ok())
                        .unwrap_or(Json::Null)
                })
                .collect();
            self.log_publishing(self.destination(options), &payloads);
        }
        let result = self
            .publish_typed_inner(records, options)
            .instrument(span.clone())
            .await;
        if let Err(e) = &result {
            trace::record_error(&span, e.kind());
        }
        self.instrument(started, result, || {
            records
                .iter()
                .map(|r| {
                    r.value
                        .filter(|_| !r.delete)
                        .and_then(|v| serde_json::to_value(v).ok())
                        .unwrap_or(Json::Null)
                })
                .collect()
        })
    }

    async fn publish_typed_inner<T: Serialize + ?Sized>(
        &self,
        records: &[Record<'_, T>],
        options: &PublishOptions,
    ) -> Result<PublishReport, PublishError> {
        let Some(topic) = self.prepare_call(options)? else {
            return Ok(PublishReport::disabled(self.topic(), records.len()));
        };
        let keep = self.keep_payloads();
        let messages = records
            .iter()
            .enumerate()
            .map(|(index, record)| self.encode_record(index, record, keep));
        self.send(topic, records.len(), messages, options).await
    }

    /// Encodes loose payloads exactly as [`publish_list_with`](Self::publish_list_with) would (same steps,
    /// same errors, same topic and headers) without sending them: for backends that need the caller's context,
    /// such as a database transaction (the outbox). `None` when the producer is disabled.
    pub fn encode_list_with(
        &self,
        payloads: Vec<Json>,
        options: &PublishOptions,
    ) -> Result<Option<OutgoingBatch>, PublishError> {
        let Some(topic) = self.prepare_call(options)? else {
            return Ok(None);
        };
        let keep = self.keep_payloads();
        let headers = call_headers(options);
        let _encoding = trace::encode_span(&topic, payloads.len()).entered();
        let messages = payloads
            .into_iter()
            .enumerate()
            .map(|(index, payload)| self.encode_loose(index, payload, keep).map(|e| e.message))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(self.batch(topic, headers, messages)))
    }

    /// Encodes typed records exactly as [`publish_records`](Self::publish_records) would, without sending
    /// them. See [`encode_list_with`](Self::encode_list_with).
    pub fn encode_records<T: Serialize + ?Sized>(
        &self,
        records: &[Record<'_, T>],
        options: &PublishOptions,
    ) -> Result<Option<OutgoingBatch>, PublishError> {
        let Some(topic) = self.prepare_call(options)? else {
            return Ok(None);
        };
        let keep = self.keep_payloads();
        let headers = call_headers(options);
        let _encoding = trace::encode_span(&topic, records.len()).entered();
        let messages = records
            .iter()
            .enumerate()
            .map(|(index, record)| self.encode_record(index, record, keep).map(|e| e.message))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(self.batch(topic, headers, messages)))
    }

    fn batch(
        &self,
        topic: Arc<str>,
        headers: Arc<[(String, Vec<u8>)]>,
        messages: Vec<OutgoingMessage>,
    ) -> OutgoingBatch {
        OutgoingBatch {
            producer: Arc::clone(&self.inner.name),
            configured_topic: Arc::clone(&self.inner.topic),
            topic,
            headers,
            messages,
            keyless: matches!(self.inner.spec.config(), KeyConfig::None),
        }
    }

    /// Deimos's "Publishing messages" debug log, showing what `payload_log` allows.
    fn log_publishing(&self, topic: &str, payloads: &[Json]) {
        let count = payloads.len();
        match self.inner.setup.payload_log {
            PayloadLog::Count => tracing::debug!(topic, message_count = count, "Publishing messages"),
            PayloadLog::Keys => {
                let keys: Vec<Json> = payloads
                    .iter()
                    .map(|p| {
                        p.get("payload_key")
                            .or_else(|| self.inner.spec.key_field().and_then(|f| p.get(f)))
                            .cloned()
                            .unwrap_or(Json::Null)
                    })
                    .collect();
                tracing::debug!(topic, message_count = count, keys = %Json::from(keys), "Publishing messages");
            }
            _ => tracing::debug!(
                topic,
                message_count = count,
                payloads = %Json::from(payloads.to_vec()),
                "Publishing messages"
            ),
        }
    }

    /// The call's `send` span: a child of the trace context the caller put in the call's headers, if any (else
    /// of the current span).
    fn send_span(&self, options: &PublishOptions, messages: usize) -> tracing::Span {
        let span = trace::send_span(self.destination(options), messages);
        if !options.headers.is_empty() {
            let _ = trace::set_parent(
                &span,
                options.headers.iter().map(|(k, v)| (k.as_str(), Some(v.as_slice()))),
            );
        }
        span
    }

    /// The topic a call goes to (for its span): the override, else the configured topic.
    fn destination<'a>(&'a self, options: &'a PublishOptions) -> &'a str {
        options.topic.as_deref().unwrap_or(&self.inner.topic)
    }

    /// Returns the destination topic, or `None` when the producer is disabled.
    fn prepare_call(&self, options: &PublishOptions) -> Result<Option<Arc<str>>, PublishError> {
        if self.inner.setup.disabled || disable::is_disabled(&self.inner.name) {
            return Ok(None);
        }
        match options.topic.as_deref() {
            None => Ok(Some(Arc::clone(&self.inner.topic))),
            Some(t) if t.trim().is_empty() => Err(PublishError::BlankTopic {
                producer: self.inner.name.to_string(),
            }),
            Some(t) => Ok(Some(Arc::from(t))),
        }
    }

    fn keep_payloads(&self) -> bool {
        self.inner.setup.backend.wants_payloads()
            || events::is_subscribed(events::PRODUCE)
            || events::is_subscribed(events::PRODUCE_ERROR)
    }

    fn encode_loose(&self, index: usize, payload: Json, keep: bool) -> Result<Encoded, PublishError> {
        let Json::Object(mut map) = payload else {
            return Err(PublishError::NotAnObject {
                producer: self.inner.name.to_string(),
                index,
                got: json_kind(&payload),
                sent: 0,
            });
        };
        let inner = &*self.inner;
        if !inner.auto_fields.is_empty() {
            inner.schema.add_auto_fields(&mut map);
        }
        let partition_key = inner.partition_key.as_ref().and_then(|f| f(&map));
        let extracted = inner.spec.take_key(&mut map);
        let key = self.encode_key(index, extracted.key.as_ref())?;
        let value = if extracted.tombstone {
            None
        } else {
            let payload = Json::Object(map);
            let mut out = Vec::with_capacity(self.size_hint());
            inner
                .writer
                .encode_value_into(&payload, &mut out)
                .map_err(|source| self.encode_error(index, source))?;
            Some(out)
        };
        Ok(self.outgoing(key, value, partition_key, extracted.key, keep))
    }

    fn encode_record<T: Serialize + ?Sized>(
        &self,
        index: usize,
        record: &Record<'_, T>,
        keep: bool,
    ) -> Result<Encoded, PublishError> {
        let inner = &*self.inner;
        let Some(value) = record.value else {
            let key = self.encode_key(index, record.key.as_ref())?;
            return Ok(self.outgoing(key, None, None, record.key.clone(), keep));
        };
        if record.delete {
            let key_json = inner
                .spec
                .typed_key(value, record.key.clone())
                .map_err(|source| self.key_error(index, source))?;
            // A tombstone without a key deletes nothing: refuse it rather than send it.
            if key_json.is_none() {
                return Err(self.key_error(index, deimos_keys::KeyError::NoKeyGiven));
            }
            // The tombstone goes where the value's messages went: the same partition key.
            let partition_key = match &inner.partition_key {
                Some(f) => match serde_json::to_value(value) {
                    Ok(Json::Object(map)) => f(&map),
                    _ => None,
                },
                None => None,
            };
            let key = self.encode_key(index, key_json.as_ref())?;
            return Ok(self.outgoing(key, None, partition_key, key_json, keep));
        }
        if inner.partition_key.is_some() || self.needs_auto_fields(value) {
            let mut json = serde_json::to_value(value).map_err(|e| {
                self.encode_error(
                    index,
                    deimos_avro::EncodeError::Unsupported {
                        path: "<root>".to_string(),
                        message: e.to_string(),
                    },
                )
            })?;
            if let (Some(k), Json::Object(map)) = (&record.key, &mut json) {
                map.insert(deimos_keys::PAYLOAD_KEY.to_string(), k.clone());
            }
            return self.encode_loose(index, json, keep);
        }
        let key_json = inner
            .spec
            .typed_key(value, record.key.clone())
            .map_err(|source| self.key_error(index, source))?;
        let key = self.encode_key(index, key_json.as_ref())?;
        let mut out = Vec::with_capacity(self.size_hint());
        inner
            .writer
            .encode_into(value, &mut out)
            .map_err(|source| self.encode_error(index, source))?;
        Ok(self.outgoing(key, Some(out), None, key_json, keep))
    }

    /// A buffer size that fits this producer's recent values without growing.
    fn size_hint(&self) -> usize {
        self.inner.size_hint.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn needs_auto_fields<T: Serialize + ?Sized>(&self, value: &T) -> bool {
        self.inner.auto_fields.iter().any(|f| {
            deimos_keys::serialized_field(value, f)
                .map(|v| v.is_none_or(|v| v.is_null()))
                .unwrap_or(false)
        })
    }

    fn encode_key(&self, index: usize, key: Option<&Json>) -> Result<Option<Vec<u8>>, PublishError> {
        self.inner
            .keys
            .encode(key)
            .map_err(|source| self.key_error(index, source))
    }

    fn key_error(&self, index: usize, source: deimos_keys::KeyError) -> PublishError {
        PublishError::Key {
            producer: self.inner.name.to_string(),
            index,
            source: Box::new(source),
            sent: 0,
        }
    }

    fn encode_error(&self, index: usize, source: deimos_avro::EncodeError) -> PublishError {
        PublishError::Encode {
            producer: self.inner.name.to_string(),
            index,
            schema: self.inner.schema_name.clone(),
            source: Box::new(source),
            sent: 0,
        }
    }

    fn outgoing(
        &self,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        partition_key: Option<String>,
        decoded_key: Option<Json>,
        keep: bool,
    ) -> Encoded {
        if let Some(v) = &value
            && v.len() > self.size_hint()
        {
            self.inner
                .size_hint
                .store((v.len() + 32).next_power_of_two(), std::sync::atomic::Ordering::Relaxed);
        }
        let partition_key = partition_key.map(String::into_bytes);
        let mut message = OutgoingMessage::new(key, value).partition_key(partition_key);
        if keep {
            message.payload = Some(match &message.value {
                Some(bytes) => self
                    .inner
                    .identity
                    .decode_value(&bytes[wire::HEADER_LEN.min(bytes.len())..])
                    .unwrap_or(Json::Null),
                None => Json::Null,
            });
            message.decoded_key = decoded_key;
        }
        Encoded { message }
    }

    /// Encodes the call's messages group by group (at most `max_batch_size` each) and hands each group to the
    /// backend as soon as it is encoded, so librdkafka sends one group while the next is encoded. A key or
    /// schema error fails its group: nothing of that group or after it is sent; earlier groups were handed
    /// over (the error says how many messages) and, in sync mode, have been waited for.
    async fn send(
        &self,
        topic: Arc<str>,
        total: usize,
        mut messages: impl Iterator<Item = Result<Encoded, PublishError>>,
        options: &PublishOptions,
    ) -> Result<PublishReport, PublishError> {
        let inner = &*self.inner;
        let headers = call_headers(options);
        let mode = options.mode.unwrap_or(inner.setup.mode);
        let size = inner.setup.max_batch_size;
        let mut pendings: Vec<Pending> = Vec::with_capacity(total.div_ceil(size));
        let mut handed_over = 0;
        let mut failed = None;
        while handed_over < total {
            let mut group = Vec::with_capacity(size.min(total - handed_over));
            let encoding = trace::encode_span(&topic, size.min(total - handed_over));
            let _encoding = encoding.enter();
            for message in messages.by_ref().take(size) {
                match message {
                    Ok(e) => group.push(e.message),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            drop(_encoding);
            if failed.is_some() || group.is_empty() {
                break;
            }
            handed_over += group.len();
            let batch = self.batch(Arc::clone(&topic), Arc::clone(&headers), group);
            pendings.push(inner.setup.backend.enqueue(batch).await);
        }
        let mut outcomes = Vec::with_capacity(handed_over);
        for pending in pendings {
            match mode {
                DeliveryMode::Sync => outcomes.extend(pending.wait().await.into_iter().map(outcome)),
                DeliveryMode::Async => outcomes.extend(pending.so_far().into_iter().map(|r| match r {
                    Some(r) => outcome(r),
                    None => MessageOutcome::Queued,
                })),
            }
        }
        if let Some(mut e) = failed {
            e.set_sent(handed_over);
            return Err(e);
        }
        let report = PublishReport::new(&topic, outcomes);
        let first = report.failures().next().map(|(i, e)| (i, e.clone()));
        match first {
            None => Ok(report),
            Some((first_index, first_error)) => Err(PublishError::Undelivered {
                producer: inner.name.to_string(),
                failed: report.failures().count(),
                total,
                first_index,
                first_error: Box::new(first_error),
                report: Box::new(report),
            }),
        }
    }

    fn instrument(
        &self,
        started: Instant,
        result: Result<PublishReport, PublishError>,
        payloads: impl FnOnce() -> Vec<Json>,
    ) -> Result<PublishReport, PublishError> {
        events::emit_with(events::ENCODE_MESSAGES, || {
            let mut event = events::Event::new(events::ENCODE_MESSAGES, &*self.inner.topic)
                .producer(&*self.inner.name)
                .payloads(payloads())
                .duration(started.elapsed());
            if let Err(e) = &result {
                event = event.error(events::EventError::new(error_kind(e), e.to_string()));
            }
            event
        });
        result
    }
}

fn outcome(r: DeliveryResult) -> MessageOutcome {
    match r {
        Ok(d) => MessageOutcome::Delivered(d),
        Err(e) => MessageOutcome::Failed(e),
    }
}

fn error_kind(e: &PublishError) -> &'static str {
    match e {
        PublishError::BlankTopic { .. } => "BlankTopic",
        PublishError::NotAnObject { .. } => "NotAnObject",
        PublishError::Key { .. } => "KeyError",
        PublishError::Encode { .. } => "EncodeError",
        PublishError::Undelivered { .. } => "Undelivered",
    }
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// The headers of every message of a call: the caller's, and the trace context of the current span (the
/// call's `send` span, or the outbox's `create` span) when OpenTelemetry records it.
fn call_headers(options: &PublishOptions) -> Arc<[(String, Vec<u8>)]> {
    let mut headers = options.headers.clone();
    trace::replace_headers(&tracing::Span::current(), &mut headers);
    headers.into()
}
