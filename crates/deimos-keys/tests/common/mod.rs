//! Shared fixtures: the schema store over `schemas/`, and a registry that counts calls.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use deimos_avro::{AvroSchema, CompatibilityLevel, SchemaStore};
use deimos_keys::{KeyConfig, KeyEncoder, KeyError, KeySpec};
use deimos_registry::{
    CompatibilityCheck, MemoryRegistry, RegisteredSchema, RegistryError, SchemaRegistry, VersionRef,
};
use serde_json::{Map, Value as Json};

pub fn schemas() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

pub fn store() -> SchemaStore {
    SchemaStore::new(schemas())
}

pub fn obj(v: Json) -> Map<String, Json> {
    match v {
        Json::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

/// The Confluent frame of schema id `id` followed by `avro`.
pub fn framed(id: u32, avro: &[u8]) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(avro);
    v
}

/// Builds the spec for `config` against `value` (a full name in `schemas/`), prepares an encoder for topic
/// `widgets` on a fresh registry, takes the key out of `payload` and encodes it, as a producer does.
pub async fn produce_key(config: KeyConfig, value: &str, payload: Json) -> Result<Option<Vec<u8>>, KeyError> {
    let store = store();
    let value_schema = store.get(value).expect("value schema");
    let spec = KeySpec::build(config, &value_schema, &store)?;
    let registry = MemoryRegistry::new();
    let encoder = KeyEncoder::for_topic(spec.clone(), "", "widgets");
    encoder.prepare(&registry).await?;
    let mut payload = obj(payload);
    let extracted = spec.take_key(&mut payload);
    encoder.encode(extracted.key.as_ref())
}

/// A registry that counts `register` and `schema_by_id` calls on an inner [`MemoryRegistry`].
#[derive(Default)]
pub struct Counting {
    pub inner: MemoryRegistry,
    pub registers: AtomicUsize,
    pub by_id: AtomicUsize,
}

impl Counting {
    pub fn registers(&self) -> usize {
        self.registers.load(Ordering::SeqCst)
    }
    pub fn by_id(&self) -> usize {
        self.by_id.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl SchemaRegistry for Counting {
    async fn register(&self, subject: &str, schema: &AvroSchema) -> Result<u32, RegistryError> {
        self.registers.fetch_add(1, Ordering::SeqCst);
        self.inner.register(subject, schema).await
    }
    async fn lookup(&self, subject: &str, schema: &AvroSchema) -> Result<RegisteredSchema, RegistryError> {
        self.inner.lookup(subject, schema).await
    }
    async fn schema_by_id(&self, id: u32) -> Result<AvroSchema, RegistryError> {
        self.by_id.fetch_add(1, Ordering::SeqCst);
        self.inner.schema_by_id(id).await
    }
    async fn latest(&self, subject: &str) -> Result<RegisteredSchema, RegistryError> {
        self.inner.latest(subject).await
    }
    async fn version(&self, subject: &str, version: u32) -> Result<RegisteredSchema, RegistryError> {
        self.inner.version(subject, version).await
    }
    async fn subjects(&self) -> Result<Vec<String>, RegistryError> {
        self.inner.subjects().await
    }
    async fn versions(&self, subject: &str) -> Result<Vec<u32>, RegistryError> {
        self.inner.versions(subject).await
    }
    async fn test_compatibility(
        &self,
        subject: &str,
        schema: &AvroSchema,
        against: VersionRef,
    ) -> Result<CompatibilityCheck, RegistryError> {
        self.inner.test_compatibility(subject, schema, against).await
    }
    async fn compatibility_level(&self, subject: Option<&str>) -> Result<CompatibilityLevel, RegistryError> {
        self.inner.compatibility_level(subject).await
    }
    async fn set_compatibility_level(
        &self,
        subject: Option<&str>,
        level: CompatibilityLevel,
    ) -> Result<(), RegistryError> {
        self.inner.set_compatibility_level(subject, level).await
    }
}
