//! [`schemas_compatible`]: Deimos's `schemas_compatible?` test helper.

use std::path::{Path, PathBuf};

use deimos_avro::AvroSchema;
use serde_json::Value as Json;

use crate::error::TestError;

/// A schema given to [`schemas_compatible`]: a file path, JSON text, a JSON value or a parsed schema.
///
/// A `&str` or `String` starting with `{`, `[` or `"` (after whitespace) is JSON text, anything else a path,
/// as in Deimos.
///
/// ```
/// use deimos_test::{SchemaSource, schemas_compatible};
/// use serde_json::json;
///
/// let text = r#"{"type": "record", "name": "T", "fields": [{"name": "a", "type": "int"}]}"#;
/// assert!(matches!(SchemaSource::from(text), SchemaSource::Json(_)));
/// assert!(matches!(SchemaSource::from("schemas/com/acme/Widget.avsc"), SchemaSource::Path(_)));
/// let value = json!({"type": "record", "name": "T", "fields": [{"name": "a", "type": "int"}]});
/// assert!(matches!(SchemaSource::from(value.clone()), SchemaSource::Json(_)));
/// assert!(schemas_compatible(SchemaSource::from(text), value)?);
/// # Ok::<(), deimos_test::TestError>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SchemaSource {
    /// An `.avsc` file.
    Path(PathBuf),
    /// Schema JSON text.
    Json(String),
    /// A parsed schema.
    Parsed(AvroSchema),
}

impl From<&str> for SchemaSource {
    fn from(s: &str) -> SchemaSource {
        if s.trim_start().starts_with(['{', '[', '"']) {
            SchemaSource::Json(s.to_string())
        } else {
            SchemaSource::Path(PathBuf::from(s))
        }
    }
}

impl From<String> for SchemaSource {
    fn from(s: String) -> SchemaSource {
        SchemaSource::from(s.as_str())
    }
}

impl From<&Path> for SchemaSource {
    fn from(p: &Path) -> SchemaSource {
        SchemaSource::Path(p.to_path_buf())
    }
}

impl From<PathBuf> for SchemaSource {
    fn from(p: PathBuf) -> SchemaSource {
        SchemaSource::Path(p)
    }
}

impl From<Json> for SchemaSource {
    fn from(v: Json) -> SchemaSource {
        SchemaSource::Json(v.to_string())
    }
}

impl From<AvroSchema> for SchemaSource {
    fn from(s: AvroSchema) -> SchemaSource {
        SchemaSource::Parsed(s)
    }
}

impl From<&AvroSchema> for SchemaSource {
    fn from(s: &AvroSchema) -> SchemaSource {
        SchemaSource::Parsed(s.clone())
    }
}

impl SchemaSource {
    fn parse(self, which: &'static str) -> Result<AvroSchema, TestError> {
        let fail = |message: String| TestError::Schema { which, message };
        match self {
            SchemaSource::Parsed(s) => Ok(s),
            SchemaSource::Json(json) => AvroSchema::parse(&json).map_err(|e| fail(format!("invalid schema JSON: {e}"))),
            SchemaSource::Path(path) => {
                let json = std::fs::read_to_string(&path).map_err(|e| {
                    fail(format!(
                        "{}: {e} (a string not starting with `{{` is read as a path)",
                        path.display()
                    ))
                })?;
                AvroSchema::parse(&json).map_err(|e| {
                    fail(format!(
                        "{}: {e} (a file that names types of other files needs them: load it with a SchemaStore and pass the AvroSchema)",
                        path.display()
                    ))
                })
            }
        }
    }
}

/// Whether each schema can read data written with the other (full compatibility: Deimos's
/// `schemas_compatible?`, Avro's `mutual_read?`). Each argument is a path, JSON text or value, or a parsed
/// schema.
///
/// ```
/// use deimos_test::schemas_compatible;
/// use serde_json::json;
///
/// let v1 = r#"{"type": "record", "name": "T", "fields": [{"name": "a", "type": "int"}]}"#;
/// let v2 = json!({"type": "record", "name": "T", "fields": [
///     {"name": "a", "type": "int"}, {"name": "b", "type": "string", "default": ""}]});
/// let v3 = json!({"type": "record", "name": "T", "fields": [{"name": "b", "type": "string"}]});
/// assert!(schemas_compatible(v1, v2)?);
/// assert!(!schemas_compatible(v1, v3)?);
/// # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/com/acme/keys/Gadget.avsc");
/// assert!(schemas_compatible(path, path)?);
/// # Ok::<(), deimos_test::TestError>(())
/// ```
pub fn schemas_compatible(a: impl Into<SchemaSource>, b: impl Into<SchemaSource>) -> Result<bool, TestError> {
    let a = a.into().parse("a")?;
    let b = b.into().parse("b")?;
    Ok(deimos_avro::compat::mutual_read(&a, &b))
}
