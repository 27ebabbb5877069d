//! [`AvroSchema`]: a parsed, self-contained, compiled Avro schema.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use apache_avro::Schema;

use crate::error::SchemaError;
use crate::graph::{Graph, Node};

/// The largest decimal precision (number of digits) a schema may declare: decimals are encoded and decoded
/// as 128-bit integers, which hold any 38-digit number. A schema declaring more is refused when parsed.
pub const MAX_DECIMAL_PRECISION: usize = 38;

struct Inner {
    apache: Schema,
    json: String,
    name: Option<String>,
    fingerprint: u64,
    pcf: String,
    graph: Graph,
}

/// A parsed Avro schema, self-contained (types it refers to are inlined), compiled for the codec.
///
/// Cheap to clone. Two schemas are equal when their normalized JSON is equal.
#[derive(Clone)]
pub struct AvroSchema(Arc<Inner>);

/// One top-level field of a record schema.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldInfo {
    /// Field name.
    pub name: String,
    /// The field's type as a schema JSON value (a primitive name such as `"long"`, or an object).
    pub schema: serde_json::Value,
    /// The default, if the schema gives one.
    pub default: Option<serde_json::Value>,
}

impl AvroSchema {
    /// Parses a self-contained schema from JSON.
    pub fn parse(json: &str) -> Result<AvroSchema, SchemaError> {
        Self::parse_with_refs(json, &[])
    }

    /// Parses a schema whose named types may be defined in `refs` (other schema JSON texts, any order).
    pub fn parse_with_refs(json: &str, refs: &[&str]) -> Result<AvroSchema, SchemaError> {
        let inline_path = || PathBuf::from("<inline>");
        let parse = |text: &str| {
            serde_json::from_str::<serde_json::Value>(text).map_err(|e| SchemaError::Json {
                path: inline_path(),
                message: e.to_string(),
            })
        };
        let main = parse(json)?;
        let mut defs = Vec::new();
        for r in refs {
            crate::inline::collect(&parse(r)?, None, &mut defs, &mut Vec::new());
        }
        let defs = defs.into_iter().collect();
        let full = crate::inline::inline(&main, &defs).map_err(|r| SchemaError::Invalid {
            path: inline_path(),
            message: format!("unknown type `{}`; pass its schema in `refs`", r.display()),
        })?;
        Self::from_json_value(&full, inline_path())
    }

    /// Parses a self-contained schema given as a JSON value.
    pub(crate) fn from_json_value(json: &serde_json::Value, path: PathBuf) -> Result<AvroSchema, SchemaError> {
        check_names(json)
            .and_then(|()| check_attributes(json))
            .map_err(|message| SchemaError::Invalid {
                path: path.clone(),
                message,
            })?;
        let text = json.to_string();
        let s = Schema::parse_str(&text).map_err(|e| SchemaError::Invalid {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Self::from_apache(s, path)
    }

    /// Builds from an apache-avro schema, inlining references from `deps`.
    pub(crate) fn from_apache(schema: Schema, path: PathBuf) -> Result<AvroSchema, SchemaError> {
        let invalid = |message: String| SchemaError::Invalid {
            path: path.clone(),
            message,
        };
        let json = serde_json::to_string(&schema).map_err(|e| invalid(e.to_string()))?;
        let graph = Graph::compile(&schema).map_err(invalid)?;
        // apache-avro 0.22 can panic while canonicalizing attribute values it accepted when parsing;
        // a schema from a registry or a file must give an error instead.
        let (pcf, fingerprint) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let fp = schema.fingerprint::<apache_avro::rabin::Rabin>();
            let mut b = [0u8; 8];
            for (d, s) in b.iter_mut().zip(fp.bytes.iter()) {
                *d = *s;
            }
            (schema.canonical_form(), u64::from_le_bytes(b))
        }))
        .map_err(|_| invalid("the schema has attribute values Avro cannot canonicalize".into()))?;
        let name = schema.name().map(|n| n.fullname(None));
        Ok(AvroSchema(Arc::new(Inner {
            apache: schema,
            json,
            name,
            fingerprint,
            pcf,
            graph,
        })))
    }

    /// Full name of a named schema (`com.acme.Widget`), `None` for a primitive or a union.
    pub fn name(&self) -> Option<&str> {
        self.0.name.as_deref()
    }

    /// Namespace of a named schema.
    pub fn namespace(&self) -> Option<&str> {
        let n = self.0.name.as_deref()?;
        n.rfind('.').map(|i| &n[..i])
    }

    /// Simple name of a named schema (`Widget`).
    pub fn simple_name(&self) -> Option<&str> {
        let n = self.0.name.as_deref()?;
        Some(n.rfind('.').map_or(n, |i| &n[i + 1..]))
    }

    /// The normalized, self-contained JSON text of the schema: what is registered with a schema registry.
    pub fn canonical_json(&self) -> &str {
        &self.0.json
    }

    /// The schema's [Parsing Canonical Form](https://avro.apache.org/docs/1.11.1/specification/#parsing-canonical-form-for-schemas).
    pub fn parsing_canonical_form(&self) -> &str {
        &self.0.pcf
    }

    /// CRC-64-AVRO (Rabin) fingerprint of the Parsing Canonical Form.
    pub fn fingerprint(&self) -> u64 {
        self.0.fingerprint
    }

    /// The apache-avro view of this schema, for interoperating with that crate.
    pub fn as_apache(&self) -> &Schema {
        &self.0.apache
    }

    /// The top-level fields of a record schema (empty for other schemas).
    pub fn fields(&self) -> Vec<FieldInfo> {
        let json: serde_json::Value = serde_json::from_str(&self.0.json).unwrap_or_default();
        json.get("fields")
            .and_then(|f| f.as_array())
            .map(|fields| {
                fields
                    .iter()
                    .map(|f| FieldInfo {
                        name: f.get("name").and_then(|n| n.as_str()).unwrap_or_default().to_string(),
                        schema: f.get("type").cloned().unwrap_or_default(),
                        default: f.get("default").cloned(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One top-level field of a record schema.
    pub fn field(&self, name: &str) -> Option<FieldInfo> {
        self.fields().into_iter().find(|f| f.name == name)
    }

    /// Whether this is a record schema with a top-level field of that name.
    pub fn has_field(&self, name: &str) -> bool {
        match self.0.graph.nodes.first() {
            Some(Node::Record(r)) => r.lookup.contains_key(name),
            _ => false,
        }
    }

    pub(crate) fn graph(&self) -> &Graph {
        &self.0.graph
    }
}

/// Attribute values apache-avro does not check when parsing but relies on later.
/// Refuses names the Avro spec forbids (`[A-Za-z_][A-Za-z0-9_]*`, namespaces of such parts) with what is wrong
/// and what to do. Schema folders written for the Ruby gem sometimes hold names like `com.my-namespace`,
/// `MySchema-key` or a field `int-field`: the gem loaded them, but Confluent's registry refuses them too.
pub(crate) fn check_names(v: &serde_json::Value) -> Result<(), String> {
    match v {
        serde_json::Value::Object(o) => {
            let kind = o.get("type").and_then(|t| t.as_str());
            if matches!(kind, Some("record" | "error" | "enum" | "fixed")) {
                if let Some(name) = o.get("name").and_then(|n| n.as_str()) {
                    // A full name in `name` carries its namespace.
                    let (namespace, simple) = name.rsplit_once('.').map_or((None, name), |(ns, n)| (Some(ns), n));
                    check_name("type name", simple, name)?;
                    if let Some(ns) = namespace {
                        check_namespace(ns, name)?;
                    }
                }
                if let Some(ns) = o.get("namespace").and_then(|n| n.as_str()) {
                    check_namespace(ns, ns)?;
                }
                if let Some(fields) = o.get("fields").and_then(|f| f.as_array()) {
                    for field in fields {
                        if let Some(name) = field.get("name").and_then(|n| n.as_str()) {
                            check_name("field name", name, name)?;
                        }
                    }
                }
            }
            o.values().try_for_each(check_names)
        }
        serde_json::Value::Array(a) => a.iter().try_for_each(check_names),
        _ => Ok(()),
    }
}

fn check_namespace(namespace: &str, shown: &str) -> Result<(), String> {
    if namespace.is_empty() {
        return Ok(());
    }
    namespace
        .split('.')
        .try_for_each(|part| check_name("namespace", part, shown))
}

fn check_name(what: &str, name: &str, shown: &str) -> Result<(), String> {
    let why = if name.is_empty() {
        "it is empty"
    } else if name.contains('-') {
        "it holds a hyphen (`-`)"
    } else if name.starts_with(|c: char| c.is_ascii_digit()) {
        "it starts with a digit"
    } else if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        "it holds a character other than a letter, digit or `_`"
    } else {
        return Ok(());
    };
    let suggestion: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    Err(format!(
        "the {what} `{shown}` is not a valid Avro name: {why}. Avro names hold only letters, digits and `_` and do \
         not start with a digit; the Ruby gem loaded such names, but the Avro spec and Confluent's schema registry \
         refuse them: rename it (for example `{suggestion}`)"
    ))
}

fn check_attributes(v: &serde_json::Value) -> Result<(), String> {
    match v {
        serde_json::Value::Object(o) => {
            let typed = o.contains_key("logicalType") || o.get("type").and_then(|t| t.as_str()) == Some("fixed");
            for key in ["precision", "scale", "size"].into_iter().filter(|_| typed) {
                if let Some(x) = o.get(key)
                    && !x.is_u64()
                {
                    return Err(format!("`{key}` must be a non-negative integer, got {x}"));
                }
            }
            o.values().try_for_each(check_attributes)
        }
        serde_json::Value::Array(a) => a.iter().try_for_each(check_attributes),
        _ => Ok(()),
    }
}

impl PartialEq for AvroSchema {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.json == other.0.json
    }
}

impl Eq for AvroSchema {}

impl fmt::Debug for AvroSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AvroSchema").field(&self.0.json).finish()
    }
}

impl fmt::Display for AvroSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.json)
    }
}

impl std::str::FromStr for AvroSchema {
    type Err = SchemaError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AvroSchema::parse(s)
    }
}
