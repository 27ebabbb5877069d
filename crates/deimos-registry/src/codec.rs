//! Confluent-framed values through a registry.
//!
//! A [`SchemaCodec`] registers (or looks up) a writer schema once per subject and hands back a
//! [`SchemaWriter`] that frames and encodes synchronously: the hot path never waits on the registry.
//! Decoding reads the writer id from the frame, fetches that schema once, and resolves it to the local
//! reader schema through a plan built once per (writer id, reader schema). Both caches are bounded (writer
//! ids come from the messages): [`DEFAULT_MAX_CACHED_IDS`] schemas by id and
//! [`PlanCache::DEFAULT_MAX_PLANS`] plans, the least recently used evicted first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use deimos_avro::{AvroSchema, DecodeError, EncodeError, PlanCache, ResolveError, ResolvedPlan, wire};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;

use crate::lru::LruMap;
use crate::{DEFAULT_MAX_CACHED_IDS, RegistryError, SchemaRegistry};

/// Encoding or decoding a framed message failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The registry could not register or return a schema.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The payload does not fit its schema.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The message could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The writer schema cannot be read as the reader schema.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
}

/// A writer schema bound to its registry id: encodes and frames without touching the registry.
#[derive(Debug, Clone)]
pub struct SchemaWriter {
    id: u32,
    schema: AvroSchema,
}

impl SchemaWriter {
    /// Binds a schema to an id obtained elsewhere.
    pub fn new(id: u32, schema: AvroSchema) -> SchemaWriter {
        SchemaWriter { id, schema }
    }

    /// The registry id written into every frame.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The writer schema.
    pub fn schema(&self) -> &AvroSchema {
        &self.schema
    }

    /// Appends a framed encoding of a serde value. On error `out` is left as it was.
    pub fn encode_into<T: Serialize + ?Sized>(&self, value: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        wire::write_header(self.id, out);
        self.schema
            .encode_into(value, out)
            .inspect_err(|_| out.truncate(start))?;
        wire::to_frame_body(&self.schema, out, start + wire::HEADER_LEN);
        Ok(())
    }

    /// A framed encoding of a serde value.
    pub fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(64);
        self.encode_into(value, &mut out)?;
        Ok(out)
    }

    /// Appends a framed encoding of a loose payload, coerced to the schema. On error `out` is left as it was.
    pub fn encode_value_into(&self, payload: &Json, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        wire::write_header(self.id, out);
        self.schema
            .encode_value_into(payload, out)
            .inspect_err(|_| out.truncate(start))?;
        wire::to_frame_body(&self.schema, out, start + wire::HEADER_LEN);
        Ok(())
    }

    /// A framed encoding of a loose payload, coerced to the schema.
    pub fn encode_value(&self, payload: &Json) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(64);
        self.encode_value_into(payload, &mut out)?;
        Ok(out)
    }
}

/// Encodes and decodes Confluent-framed Avro against a [`SchemaRegistry`]. Cheap to share behind an `Arc`.
///
/// Writer schemas by id are kept for the life of the codec, at most [`DEFAULT_MAX_CACHED_IDS`] of them (the
/// least recently used evicted first); resolution plans likewise ([`PlanCache::DEFAULT_MAX_PLANS`]). A schema
/// id the registry does not know is not remembered here: give the codec a
/// [`CachedRegistry`](crate::CachedRegistry), which remembers it for a while, so a stream of messages with a
/// bogus id does not turn into a stream of registry calls.
pub struct SchemaCodec {
    registry: Arc<dyn SchemaRegistry>,
    auto_register: bool,
    /// Per subject, the writer schemas registered through this codec and their ids.
    writers: RwLock<HashMap<String, Vec<(AvroSchema, u32)>>>,
    by_id: Mutex<LruMap<u32, AvroSchema>>,
    plans: PlanCache,
}

impl std::fmt::Debug for SchemaCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaCodec")
            .field("auto_register", &self.auto_register)
            .field("cached_ids", &self.by_id().len())
            .field("plans", &self.plans)
            .finish()
    }
}

impl SchemaCodec {
    /// A codec that registers writer schemas on first use (Confluent's `auto.register.schemas=true`,
    /// what Deimos does).
    pub fn new(registry: impl SchemaRegistry + 'static) -> SchemaCodec {
        Self::from_arc(Arc::new(registry))
    }

    /// A codec over a shared registry.
    pub fn from_arc(registry: Arc<dyn SchemaRegistry>) -> SchemaCodec {
        SchemaCodec {
            registry,
            auto_register: true,
            writers: RwLock::default(),
            by_id: Mutex::new(LruMap::new(DEFAULT_MAX_CACHED_IDS)),
            plans: PlanCache::new(),
        }
    }

    fn by_id(&self) -> MutexGuard<'_, LruMap<u32, AvroSchema>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// With `false`, writer schemas must already be registered: they are looked up, never registered
    /// (Confluent's `auto.register.schemas=false`, for registries that only CI may write to).
    pub fn auto_register(mut self, yes: bool) -> SchemaCodec {
        self.auto_register = yes;
        self
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<dyn SchemaRegistry> {
        &self.registry
    }

    /// Registers (or looks up) `schema` under `subject` once and returns a writer bound to its id.
    pub async fn writer(&self, subject: &str, schema: &AvroSchema) -> Result<SchemaWriter, CodecError> {
        // Found without allocating: by subject, then by schema (identity first, then content).
        let known = self.writers.read().ok().and_then(|w| {
            w.get(subject)
                .and_then(|list| list.iter().find(|(s, _)| s == schema).map(|(_, id)| *id))
        });
        if let Some(id) = known {
            return Ok(SchemaWriter::new(id, schema.clone()));
        }
        let id = if self.auto_register {
            self.registry.register(subject, schema).await?
        } else {
            self.registry.lookup(subject, schema).await?.id
        };
        if let Ok(mut w) = self.writers.write() {
            let list = w.entry(subject.to_string()).or_default();
            if !list.iter().any(|(s, _)| s == schema) {
                list.push((schema.clone(), id));
            }
        }
        self.by_id().insert_if_absent(id, schema.clone());
        Ok(SchemaWriter::new(id, schema.clone()))
    }

    /// Encodes and frames a serde value with `schema` registered under `subject`.
    pub async fn encode<T: Serialize + ?Sized>(
        &self,
        subject: &str,
        schema: &AvroSchema,
        value: &T,
    ) -> Result<Vec<u8>, CodecError> {
        Ok(self.writer(subject, schema).await?.encode(value)?)
    }

    /// Coerces, encodes and frames a loose payload with `schema` registered under `subject`.
    pub async fn encode_value(
        &self,
        subject: &str,
        schema: &AvroSchema,
        payload: &Json,
    ) -> Result<Vec<u8>, CodecError> {
        Ok(self.writer(subject, schema).await?.encode_value(payload)?)
    }

    /// The schema registered under `id`, fetched once (while among the most recently used ids).
    pub async fn writer_schema(&self, id: u32) -> Result<AvroSchema, CodecError> {
        let known = self.by_id().get(&id).cloned();
        if let Some(s) = known {
            return Ok(s);
        }
        let s = self.registry.schema_by_id(id).await?;
        self.by_id().insert(id, s.clone());
        Ok(s)
    }

    /// The plan that reads a message written with schema `id` as `reader`, built once.
    pub async fn plan(&self, id: u32, reader: &AvroSchema) -> Result<ResolvedPlan, CodecError> {
        if let Some(p) = self.plans.get(id, reader) {
            return Ok(p);
        }
        let writer = self.writer_schema(id).await?;
        Ok(self.plans.get_or_build(id, &writer, reader)?)
    }

    /// Decodes a framed message into `T`, resolving the writer's schema to `reader`.
    pub async fn decode<T: DeserializeOwned>(&self, message: &[u8], reader: &AvroSchema) -> Result<T, CodecError> {
        let (id, body) = wire::parse_header(message)?;
        let plan = self.plan(id, reader).await?;
        Ok(plan.decode(&wire::avro_body(plan.writer(), body))?)
    }

    /// Decodes a framed message into a JSON value, read as `reader`, or as the writer's own schema when
    /// `reader` is `None`.
    pub async fn decode_value(&self, message: &[u8], reader: Option<&AvroSchema>) -> Result<Json, CodecError> {
        let (id, body) = wire::parse_header(message)?;
        let reader = match reader {
            Some(r) => r.clone(),
            None => self.writer_schema(id).await?,
        };
        let plan = self.plan(id, &reader).await?;
        Ok(plan.decode_value(&wire::avro_body(plan.writer(), body))?)
    }

    /// Decodes without waiting when the plan for the message's writer id and `reader` is already cached;
    /// `None` when it is not (then use [`decode`](Self::decode)).
    pub fn decode_cached<T: DeserializeOwned>(
        &self,
        message: &[u8],
        reader: &AvroSchema,
    ) -> Option<Result<T, CodecError>> {
        let (id, body) = match wire::parse_header(message) {
            Ok(x) => x,
            Err(e) => return Some(Err(e.into())),
        };
        self.plans.with_plan(id, reader, |plan| {
            plan.decode(&wire::avro_body(plan.writer(), body))
                .map_err(CodecError::from)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::MemoryRegistry;

    #[tokio::test]
    async fn writer_schemas_by_id_are_bounded() {
        let registry = MemoryRegistry::new();
        let mut ids = Vec::new();
        for i in 0..5 {
            let schema = AvroSchema::parse(&format!(r#"{{"type":"record","name":"R{i}","fields":[]}}"#)).unwrap();
            ids.push(registry.register(&format!("s{i}"), &schema).await.unwrap());
        }
        let mut codec = SchemaCodec::new(registry);
        codec.by_id = Mutex::new(LruMap::new(2));
        for id in &ids {
            codec.writer_schema(*id).await.unwrap();
        }
        assert_eq!(codec.by_id().len(), 2);
        assert!(format!("{codec:?}").contains("cached_ids: 2"));
    }
}
