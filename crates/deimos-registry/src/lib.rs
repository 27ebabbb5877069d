#![doc = include_str!("../README.md")]

mod cached;
pub mod codec;
#[cfg(feature = "embedded")]
mod embedded;
mod error;
mod http;
mod lru;
mod memory;
mod registry;
mod subject;

pub use cached::{
    CachedRegistry, CachedRegistryBuilder, DEFAULT_LATEST_TTL, DEFAULT_MAX_CACHED_IDS, DEFAULT_NOT_FOUND_TTL,
};
pub use codec::{CodecError, SchemaCodec, SchemaWriter};
#[cfg(feature = "embedded")]
pub use embedded::{EmbeddedRegistry, EmbeddedRegistryBuilder};
pub use error::{BoxError, RegistryError};
pub use http::{DEFAULT_MAX_RESPONSE_BYTES, HttpRegistry, HttpRegistryBuilder, MEDIA_TYPE};
pub use memory::MemoryRegistry;
pub use registry::{CompatibilityCheck, RegisteredSchema, SchemaRegistry, VersionRef};
pub use subject::SubjectNameStrategy;

/// Re-exported for convenience: the schema type and compatibility levels the registry works with.
pub use deimos_avro::{AvroSchema, CompatibilityLevel};
