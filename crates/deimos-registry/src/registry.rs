//! The [`SchemaRegistry`] trait and the values it works with.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use deimos_avro::{AvroSchema, CompatibilityLevel};

use crate::RegistryError;

/// A schema registered under a subject, with its global id and its version in the subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredSchema {
    /// The subject.
    pub subject: String,
    /// The global schema id (the same schema has the same id in every subject).
    pub id: u32,
    /// The version within the subject, from 1.
    pub version: u32,
    /// The schema.
    pub schema: AvroSchema,
}

/// A version of a subject: the latest one or a version number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum VersionRef {
    /// The latest (highest, not deleted) version.
    #[default]
    Latest,
    /// A version number, from 1.
    Number(u32),
}

impl fmt::Display for VersionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionRef::Latest => f.write_str("latest"),
            VersionRef::Number(n) => write!(f, "{n}"),
        }
    }
}

impl From<u32> for VersionRef {
    fn from(v: u32) -> Self {
        VersionRef::Number(v)
    }
}

impl FromStr for VersionRef {
    type Err = RegistryError;
    /// Parses `latest`, `-1` (the registry's alias for latest) or a positive number.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("latest") || t == "-1" {
            return Ok(VersionRef::Latest);
        }
        match t.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(VersionRef::Number(n)),
            _ => Err(RegistryError::InvalidVersion { version: s.to_string() }),
        }
    }
}

/// The answer of a compatibility test.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CompatibilityCheck {
    /// Whether the schema is compatible.
    pub is_compatible: bool,
    /// Why not (empty when compatible).
    pub messages: Vec<String>,
}

/// A Confluent-compatible schema registry.
///
/// Object safe: use `Arc<dyn SchemaRegistry>` to share one. Implemented by [`MemoryRegistry`](crate::MemoryRegistry)
/// (in-process), [`HttpRegistry`](crate::HttpRegistry) (Confluent REST API) and the
/// [`CachedRegistry`](crate::CachedRegistry) decorator, and for `&R`, `Arc<R>` and `Box<R>`.
#[async_trait::async_trait]
pub trait SchemaRegistry: Send + Sync {
    /// Registers a schema under a subject and returns its global id.
    ///
    /// Idempotent: the same schema under the same subject returns the existing id. A new schema must be
    /// compatible with the subject's earlier versions under its compatibility level, or the call fails with
    /// [`RegistryError::Incompatible`].
    async fn register(&self, subject: &str, schema: &AvroSchema) -> Result<u32, RegistryError>;

    /// Looks up a schema already registered under a subject (`POST /subjects/{subject}`).
    async fn lookup(&self, subject: &str, schema: &AvroSchema) -> Result<RegisteredSchema, RegistryError>;

    /// The schema with a global id (`GET /schemas/ids/{id}`).
    async fn schema_by_id(&self, id: u32) -> Result<AvroSchema, RegistryError>;

    /// The latest version of a subject.
    async fn latest(&self, subject: &str) -> Result<RegisteredSchema, RegistryError>;

    /// A version of a subject.
    async fn version(&self, subject: &str, version: u32) -> Result<RegisteredSchema, RegistryError>;

    /// All subjects with at least one live version, sorted.
    async fn subjects(&self) -> Result<Vec<String>, RegistryError>;

    /// The live versions of a subject, ascending.
    async fn versions(&self, subject: &str) -> Result<Vec<u32>, RegistryError>;

    /// Tests whether a schema is compatible with one version of a subject under the subject's level
    /// (`POST /compatibility/subjects/{subject}/versions/{version}`).
    ///
    /// Against [`VersionRef::Latest`] of a subject without versions the schema is compatible.
    async fn test_compatibility(
        &self,
        subject: &str,
        schema: &AvroSchema,
        against: VersionRef,
    ) -> Result<CompatibilityCheck, RegistryError>;

    /// The compatibility level of a subject if set, else the global one (`subject` `None` = global).
    async fn compatibility_level(&self, subject: Option<&str>) -> Result<CompatibilityLevel, RegistryError>;

    /// Sets the compatibility level of a subject, or the global one (`subject` `None`).
    async fn set_compatibility_level(
        &self,
        subject: Option<&str>,
        level: CompatibilityLevel,
    ) -> Result<(), RegistryError>;
}

macro_rules! forward_impl {
    ($($ty:ty),*) => {$(
        #[async_trait::async_trait]
        impl<R: SchemaRegistry + ?Sized> SchemaRegistry for $ty {
            async fn register(&self, subject: &str, schema: &AvroSchema) -> Result<u32, RegistryError> {
                (**self).register(subject, schema).await
            }
            async fn lookup(&self, subject: &str, schema: &AvroSchema) -> Result<RegisteredSchema, RegistryError> {
                (**self).lookup(subject, schema).await
            }
            async fn schema_by_id(&self, id: u32) -> Result<AvroSchema, RegistryError> {
                (**self).schema_by_id(id).await
            }
            async fn latest(&self, subject: &str) -> Result<RegisteredSchema, RegistryError> {
                (**self).latest(subject).await
            }
            async fn version(&self, subject: &str, version: u32) -> Result<RegisteredSchema, RegistryError> {
                (**self).version(subject, version).await
            }
            async fn subjects(&self) -> Result<Vec<String>, RegistryError> {
                (**self).subjects().await
            }
            async fn versions(&self, subject: &str) -> Result<Vec<u32>, RegistryError> {
                (**self).versions(subject).await
            }
            async fn test_compatibility(
                &self,
                subject: &str,
                schema: &AvroSchema,
                against: VersionRef,
            ) -> Result<CompatibilityCheck, RegistryError> {
                (**self).test_compatibility(subject, schema, against).await
            }
            async fn compatibility_level(&self, subject: Option<&str>) -> Result<CompatibilityLevel, RegistryError> {
                (**self).compatibility_level(subject).await
            }
            async fn set_compatibility_level(
                &self,
                subject: Option<&str>,
                level: CompatibilityLevel,
            ) -> Result<(), RegistryError> {
                (**self).set_compatibility_level(subject, level).await
            }
        }
    )*};
}

forward_impl!(&R, Arc<R>, Box<R>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_ref_parses() {
        assert_eq!("latest".parse::<VersionRef>().ok(), Some(VersionRef::Latest));
        assert_eq!("-1".parse::<VersionRef>().ok(), Some(VersionRef::Latest));
        assert_eq!("3".parse::<VersionRef>().ok(), Some(VersionRef::Number(3)));
        assert!("0".parse::<VersionRef>().is_err());
        assert!("x".parse::<VersionRef>().is_err());
        assert_eq!(VersionRef::Number(4).to_string(), "4");
    }

    fn _object_safe(r: Arc<dyn SchemaRegistry>) -> impl SchemaRegistry {
        r
    }
}
