//! [`KeyEncoder`] (producers) and [`KeyDecoder`] (consumers).

use std::sync::OnceLock;

use deimos_avro::{AvroSchema, PlanCache, ResolvedPlan, wire};
use deimos_registry::SchemaRegistry;
use serde_json::Value as Json;

use crate::config::KeyConfig;
use crate::error::KeyError;
use crate::spec::{KeySpec, describe};

/// The subject a topic's key schema is registered under: `<prefix><topic>-key`.
///
/// As in Deimos, this is built from the producer's *configured* topic (not a per-call topic override)
/// and always carries the topic prefix.
pub fn key_subject(topic_prefix: &str, topic: &str) -> String {
    format!("{topic_prefix}{topic}-key")
}

/// Turns keys into the bytes sent to Kafka, for one producer (one key subject).
///
/// For `Schema` and `Field` configs the key schema is registered once, in the async
/// [`prepare`](Self::prepare), and its id kept; [`encode`](Self::encode) is then synchronous.
#[derive(Debug)]
pub struct KeyEncoder {
    spec: KeySpec,
    subject: String,
    id: OnceLock<u32>,
}

impl KeyEncoder {
    /// An encoder registering its key schema (if any) under `subject`.
    pub fn new(spec: KeySpec, subject: impl Into<String>) -> KeyEncoder {
        KeyEncoder {
            spec,
            subject: subject.into(),
            id: OnceLock::new(),
        }
    }

    /// An encoder for a topic: the subject is [`key_subject`]`(topic_prefix, topic)`.
    pub fn for_topic(spec: KeySpec, topic_prefix: &str, topic: &str) -> KeyEncoder {
        KeyEncoder::new(spec, key_subject(topic_prefix, topic))
    }

    /// The key spec.
    pub fn spec(&self) -> &KeySpec {
        &self.spec
    }

    /// The subject the key schema is registered under.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The registry id of the key schema, once [`prepare`](Self::prepare)d.
    pub fn schema_id(&self) -> Option<u32> {
        self.id.get().copied()
    }

    /// Whether [`encode`](Self::encode) can run: always for configs without a key schema, else once the
    /// key schema is registered.
    pub fn is_prepared(&self) -> bool {
        self.spec.key_schema().is_none() || self.id.get().is_some()
    }

    /// Registers the key schema under the subject (once; later calls return at once). A no-op for
    /// configs without a key schema.
    pub async fn prepare<R: SchemaRegistry + ?Sized>(&self, registry: &R) -> Result<(), KeyError> {
        let Some(schema) = self.spec.key_schema() else {
            return Ok(());
        };
        if self.id.get().is_some() {
            return Ok(());
        }
        let id = registry
            .register(&self.subject, schema)
            .await
            .map_err(|source| KeyError::Register {
                subject: self.subject.clone(),
                schema: schema_name(schema),
                source: Box::new(source),
            })?;
        // A concurrent prepare may have set it first; the registry gives both the same id.
        let _ = self.id.set(id);
        Ok(())
    }

    /// The bytes to send as the message key, Deimos's `_encode_key`:
    ///
    /// - no key (`None` or JSON `null`): `Ok(None)` with `KeyConfig::None`, else [`KeyError::NoKeyGiven`];
    /// - `KeyConfig::NotSet` with a key: [`KeyError::NoKeyConfig`];
    /// - `None` / `Plain`: the key raw: a string as its UTF-8 bytes, a number as its decimal text, a boolean
    ///   as `true`/`false` (Ruby's `to_s`); objects and arrays are an error;
    /// - `Schema`: the key, an object matching the key schema, Avro-encoded and Confluent-framed;
    /// - `Field(f)`: `{f: key}` Avro-encoded with the generated key schema, framed.
    pub fn encode(&self, key: Option<&Json>) -> Result<Option<Vec<u8>>, KeyError> {
        let Some(key) = key.filter(|k| !k.is_null()) else {
            return if self.spec.config().allows_no_key() {
                Ok(None)
            } else {
                Err(KeyError::NoKeyGiven)
            };
        };
        match (self.spec.config(), self.spec.key_schema()) {
            (KeyConfig::NotSet, _) => Err(KeyError::NoKeyConfig),
            (_, Some(schema)) => {
                let id = self.id.get().ok_or_else(|| KeyError::NotPrepared {
                    subject: self.subject.clone(),
                    schema: schema_name(schema),
                })?;
                let mut out = Vec::with_capacity(wire::HEADER_LEN + 16);
                wire::write_header(*id, &mut out);
                self.spec.encode_avro_into(schema, key, &mut out)?;
                Ok(Some(out))
            }
            (KeyConfig::None, None) => raw_bytes(key, "none").map(Some),
            (_, None) => raw_bytes(key, "plain").map(Some),
        }
    }
}

/// A plain key's bytes: Ruby's `key.to_s`, as ruby-kafka sends it.
fn raw_bytes(key: &Json, config: &'static str) -> Result<Vec<u8>, KeyError> {
    match key {
        Json::String(s) => Ok(s.as_bytes().to_vec()),
        Json::Number(n) => Ok(n.to_string().into_bytes()),
        Json::Bool(b) => Ok(b.to_string().into_bytes()),
        other => Err(KeyError::RawKeyNotScalar {
            config,
            got: describe(other),
        }),
    }
}

fn schema_name(schema: &AvroSchema) -> String {
    schema.name().unwrap_or_default().to_string()
}

/// A decoded message key.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum DecodedKey {
    /// An Avro key: the key field's value (`Field`, Deimos's `decode_key` returns `payload[field]`) or the
    /// whole key record (`Schema`).
    Value(Json),
    /// A raw key (`Plain` or `None`) that is valid UTF-8.
    Text(String),
    /// A raw key that is not valid UTF-8.
    Bytes(Vec<u8>),
}

impl DecodedKey {
    fn from_raw(bytes: &[u8]) -> DecodedKey {
        match std::str::from_utf8(bytes) {
            Ok(s) => DecodedKey::Text(s.to_string()),
            Err(_) => DecodedKey::Bytes(bytes.to_vec()),
        }
    }

    /// The Avro-decoded value, for `Value`.
    pub fn as_value(&self) -> Option<&Json> {
        match self {
            DecodedKey::Value(v) => Some(v),
            _ => None,
        }
    }

    /// The key as text: a `Text` key, or a `Value` that is a JSON string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            DecodedKey::Text(s) => Some(s),
            DecodedKey::Value(Json::String(s)) => Some(s),
            _ => None,
        }
    }

    /// The key as JSON: `Value` as it is, `Text` as a string, `Bytes` as a string with one char per byte
    /// (Avro's JSON encoding of bytes).
    pub fn into_json(self) -> Json {
        match self {
            DecodedKey::Value(v) => v,
            DecodedKey::Text(s) => Json::String(s),
            DecodedKey::Bytes(b) => Json::String(b.iter().map(|&c| char::from(c)).collect()),
        }
    }
}

/// Turns message keys back into values, for consumers (Deimos's `decode_key`).
///
/// Avro keys are read with the local key schema as reader schema; the writer schema is fetched from the
/// registry by the id in the key's frame, once per id.
#[derive(Debug)]
pub struct KeyDecoder {
    spec: KeySpec,
    plans: PlanCache,
}

impl KeyDecoder {
    /// A decoder for a key spec.
    pub fn new(spec: KeySpec) -> KeyDecoder {
        KeyDecoder {
            spec,
            plans: PlanCache::new(),
        }
    }

    /// The key spec.
    pub fn spec(&self) -> &KeySpec {
        &self.spec
    }

    /// Decodes a message key:
    ///
    /// - no key: `Ok(None)`, whatever the config;
    /// - `KeyConfig::NotSet`: [`KeyError::NoKeyConfigForDecoding`];
    /// - `None` / `Plain`: the bytes as [`DecodedKey::Text`] (or [`DecodedKey::Bytes`] if not UTF-8);
    /// - `Field(f)`: the framed Avro key's field `f`, as [`DecodedKey::Value`];
    /// - `Schema`: the whole key record, as [`DecodedKey::Value`].
    pub async fn decode<R: SchemaRegistry + ?Sized>(
        &self,
        registry: &R,
        key: Option<&[u8]>,
    ) -> Result<Option<DecodedKey>, KeyError> {
        let Some(bytes) = key else { return Ok(None) };
        let reader = match (self.spec.config(), self.spec.key_schema()) {
            (KeyConfig::NotSet, _) => return Err(KeyError::NoKeyConfigForDecoding),
            (_, None) => return Ok(Some(DecodedKey::from_raw(bytes))),
            (_, Some(reader)) => reader,
        };
        let decode_err = |source| KeyError::Decode {
            schema: schema_name(reader),
            source,
        };
        let (id, avro) = wire::parse_header(bytes).map_err(decode_err)?;
        let decode = |plan: &ResolvedPlan| match self.spec.key_field() {
            Some(field) => plan.decode_seed(avro, FieldSeed(field)),
            None => plan.decode_value(avro),
        };
        let value = match self.plans.with_plan(id, reader, decode) {
            Some(value) => value,
            None => {
                let writer = registry
                    .schema_by_id(id)
                    .await
                    .map_err(|source| KeyError::FetchSchema {
                        id,
                        source: Box::new(source),
                    })?;
                let plan = self
                    .plans
                    .get_or_build(id, &writer, reader)
                    .map_err(|e| decode_err(e.into()))?;
                decode(&plan)
            }
        }
        .map_err(decode_err)?;
        Ok(Some(DecodedKey::Value(value)))
    }
}

/// Reads one field of a key record (the `field` key_config's key schema) as JSON, skipping the others, without
/// building the record's map: `Null` when the record has no such field.
struct FieldSeed<'a>(&'a str);

impl<'de> serde::de::DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = Json;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FieldSeed<'_> {
    type Value = Json;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a key record with a field `{}`", self.0)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut found = Json::Null;
        while let Some(wanted) = map.next_key_seed(IsField(self.0))? {
            if wanted {
                found = map.next_value()?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Whether a record's field name is the one wanted, without copying it.
struct IsField<'a>(&'a str);

impl<'de> serde::de::DeserializeSeed<'de> for IsField<'_> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for IsField<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<bool, E> {
        Ok(name == self.0)
    }
}
