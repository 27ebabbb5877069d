//! [`KeySpec`]: a [`KeyConfig`] checked against the value schema, with its key schema loaded or generated.

use deimos_avro::{AvroSchema, SchemaStore};
use serde::Serialize;
use serde_json::{Map, Value as Json};

use crate::config::KeyConfig;
use crate::error::KeyError;

/// The payload entry that carries an explicit key (Deimos's `payload_key`).
pub const PAYLOAD_KEY: &str = "payload_key";

/// The primitive Avro types a key field may have.
const PRIMITIVES: [&str; 7] = ["boolean", "int", "long", "float", "double", "bytes", "string"];

/// A [`KeyConfig`] checked against a value schema: the key field exists and is primitive, the key schema
/// is loaded (or generated and added to the store). Building one is the configuration-time preflight:
/// every error it can find shows here, not on the first message.
///
/// Cheap to clone (schemas are shared).
#[derive(Debug, Clone, PartialEq)]
pub struct KeySpec {
    config: KeyConfig,
    key_schema: Option<AvroSchema>,
    /// Top-level field names of the key schema (for the extra-field check on `Schema` keys).
    key_fields: Vec<String>,
}

/// What [`KeySpec::take_key`] found in a payload.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ExtractedKey {
    /// The key: a truthy `payload_key`, else (with `KeyConfig::Field`) the key field's value, else `None`.
    pub key: Option<Json>,
    /// Whether the payload was empty once `payload_key` was taken out: the message is a tombstone
    /// (a delete) and has no value.
    pub tombstone: bool,
}

impl KeySpec {
    /// Checks `config` against the value schema and loads or generates the key schema.
    ///
    /// - [`KeyConfig::Field`]: the field must be a top-level field of `value_schema` with a primitive,
    ///   non-nullable type; the generated key schema (see [`generated_key_schema_json`]) is added to `store`
    ///   under `<value namespace>.<Value>_key`, replacing any schema of that name, as Deimos does.
    /// - [`KeyConfig::Schema`]: the schema is loaded from `store`; a bare name is looked up in the value
    ///   schema's namespace. It must be a record.
    /// - Other configs need no schema.
    pub fn build(config: KeyConfig, value_schema: &AvroSchema, store: &SchemaStore) -> Result<KeySpec, KeyError> {
        let key_schema = match &config {
            KeyConfig::NotSet | KeyConfig::None | KeyConfig::Plain => None,
            KeyConfig::Schema(name) => {
                let full = deimos_avro::full_name(name, value_schema.namespace());
                let schema = store.get(&full).map_err(|source| KeyError::Schema {
                    name: full.clone(),
                    source,
                })?;
                let kind = type_of(&schema);
                if kind != "record" {
                    return Err(KeyError::KeySchemaNotRecord {
                        name: full,
                        kind: with_article(&kind),
                    });
                }
                Some(schema)
            }
            KeyConfig::Field(field) => {
                let json = generated_key_schema_json(value_schema, field)?;
                let name = generated_key_schema_name(value_schema);
                Some(
                    store
                        .add_json(&json)
                        .map_err(|source| KeyError::Schema { name, source })?,
                )
            }
        };
        let key_fields = key_schema
            .as_ref()
            .map(|s| s.fields().into_iter().map(|f| f.name).collect())
            .unwrap_or_default();
        Ok(KeySpec {
            config,
            key_schema,
            key_fields,
        })
    }

    /// A spec for the configs that need no schema ([`KeyConfig::NotSet`], [`KeyConfig::None`],
    /// [`KeyConfig::Plain`]), e.g. for a consumer that has no value schema at hand. Returns `None` for
    /// `Schema` and `Field`, which need [`build`](Self::build).
    pub fn schemaless(config: KeyConfig) -> Option<KeySpec> {
        (!config.encodes_keys()).then_some(KeySpec {
            config,
            key_schema: None,
            key_fields: Vec::new(),
        })
    }

    /// The key config.
    pub fn config(&self) -> &KeyConfig {
        &self.config
    }

    /// The key schema: the named one for `Schema`, the generated one for `Field`, else `None`.
    pub fn key_schema(&self) -> Option<&AvroSchema> {
        self.key_schema.as_ref()
    }

    /// The key field of a `Field` config.
    pub fn key_field(&self) -> Option<&str> {
        match &self.config {
            KeyConfig::Field(f) => Some(f),
            _ => None,
        }
    }

    /// Takes the key out of a loose payload, as Deimos's `_retrieve_key` does, and says whether what is
    /// left is a tombstone.
    ///
    /// 1. `payload_key` is removed from the payload. If it is truthy (anything but `null` or `false`), it
    ///    is the key.
    /// 2. Otherwise, with `KeyConfig::Field(f)`, the key is `payload[f]` as it is now, before any coercion;
    ///    the field stays in the payload. A missing or `null` field gives no key.
    /// 3. Otherwise there is no key.
    ///
    /// If the payload is empty afterwards (it was only `{"payload_key": k}`), it is a tombstone.
    ///
    /// Run partition-key logic *before* this: in Deimos the partition key is computed from the payload
    /// while `payload_key` is still in it.
    pub fn take_key(&self, payload: &mut Map<String, Json>) -> ExtractedKey {
        let given = payload.remove(PAYLOAD_KEY);
        let key = match (given, &self.config) {
            (Some(k), _) if truthy(&k) => Some(k),
            (_, KeyConfig::Field(f)) => payload.get(f).filter(|v| !v.is_null()).cloned(),
            _ => None,
        };
        ExtractedKey {
            key,
            tombstone: payload.is_empty(),
        }
    }

    /// The key of a typed (serde) value: `given` if it is truthy; otherwise, with `KeyConfig::Field(f)`,
    /// the value's field `f` (only that field is serialized); otherwise `None`.
    ///
    /// The value must serialize as a struct or a map for a `Field` config.
    pub fn typed_key<T: Serialize + ?Sized>(&self, value: &T, given: Option<Json>) -> Result<Option<Json>, KeyError> {
        if let Some(k) = given.filter(truthy) {
            return Ok(Some(k));
        }
        match &self.config {
            KeyConfig::Field(f) => Ok(crate::typed::serialized_field(value, f)?.filter(|v| !v.is_null())),
            _ => Ok(None),
        }
    }

    /// Appends the Avro binary encoding of a key (no frame). Only for `Schema` and `Field` configs.
    pub(crate) fn encode_avro_into(&self, schema: &AvroSchema, key: &Json, out: &mut Vec<u8>) -> Result<(), KeyError> {
        let name = || schema.name().unwrap_or_default().to_string();
        let res = match &self.config {
            KeyConfig::Field(f) => {
                let mut record = Map::with_capacity(1);
                record.insert(f.clone(), key.clone());
                schema.encode_value_into(&Json::Object(record), out)
            }
            _ => {
                let Json::Object(obj) = key else {
                    return Err(KeyError::KeyNotObject {
                        schema: name(),
                        got: describe(key),
                    });
                };
                if let Some(extra) = obj.keys().find(|k| !self.key_fields.iter().any(|f| f == *k)) {
                    return Err(KeyError::UnknownKeyField {
                        schema: name(),
                        field: extra.clone(),
                        available: self.key_fields.clone(),
                    });
                }
                schema.encode_value_into(key, out)
            }
        };
        res.map_err(|source| KeyError::Encode { schema: name(), source })
    }
}

/// Ruby truthiness: everything but `nil` and `false`.
fn truthy(v: &Json) -> bool {
    !matches!(v, Json::Null | Json::Bool(false))
}

/// Full name of the generated key schema: `<value namespace>.<Value>_key`.
fn generated_key_schema_name(value_schema: &AvroSchema) -> String {
    let simple = value_schema.simple_name().unwrap_or_default();
    match value_schema.namespace() {
        Some(ns) if !ns.is_empty() => format!("{ns}.{simple}_key"),
        _ => format!("{simple}_key"),
    }
}

/// The JSON text of the key schema Deimos generates for `key_config field: '<field>'`:
///
/// ```json
/// {"type":"record","name":"<Value>_key","namespace":"<value namespace>",
///  "doc":"Key for <value namespace>.<Value> - autogenerated by Deimos",
///  "fields":[{"name":"<field>","type":"<primitive>"}]}
/// ```
///
/// The field keeps only its primitive type name. The field must be a top-level field of the (record) value
/// schema with a primitive, non-nullable type: `boolean`, `int`, `long`, `float`, `double`, `bytes` or
/// `string`. Anything else is an error here, where Deimos would crash or generate an invalid schema.
/// A value schema without a namespace gives a key schema without one (and the doc `Key for <Value> - …`).
pub fn generated_key_schema_json(value_schema: &AvroSchema, field: &str) -> Result<String, KeyError> {
    let schema_name = value_schema
        .name()
        .map_or_else(|| type_of(value_schema), str::to_string);
    if type_of(value_schema) != "record" {
        return Err(KeyError::ValueNotRecord {
            field: field.to_string(),
            schema: schema_name,
        });
    }
    let fields = value_schema.fields();
    let Some(info) = fields.iter().find(|f| f.name == field) else {
        return Err(KeyError::FieldNotFound {
            field: field.to_string(),
            schema: schema_name,
            available: fields.into_iter().map(|f| f.name).collect(),
        });
    };
    let primitive = primitive_of(&info.schema).map_err(|(kind, hint)| KeyError::UnsupportedFieldType {
        field: field.to_string(),
        schema: schema_name.clone(),
        type_json: info.schema.to_string(),
        kind,
        hint,
    })?;
    let simple = value_schema.simple_name().unwrap_or_default();
    let q = |s: &str| Json::String(s.to_string()).to_string();
    let (namespace, doc) = match value_schema.namespace() {
        Some(ns) if !ns.is_empty() => (
            format!(",\"namespace\":{}", q(ns)),
            format!("Key for {ns}.{simple} - autogenerated by Deimos"),
        ),
        _ => (String::new(), format!("Key for {simple} - autogenerated by Deimos")),
    };
    Ok(format!(
        "{{\"type\":\"record\",\"name\":{name}{namespace},\"doc\":{doc},\"fields\":[{{\"name\":{field},\"type\":{ty}}}]}}",
        name = q(&format!("{simple}_key")),
        doc = q(&doc),
        field = q(field),
        ty = q(primitive),
    ))
}

/// The primitive type name of a field type, or (kind, what to do) when it is not primitive.
fn primitive_of(ty: &Json) -> Result<&'static str, (String, String)> {
    const OTHER: &str = "Pick a primitive field, or use `KeyConfig::Schema` with a key schema of your own.";
    match ty {
        Json::String(s) => {
            if let Some(p) = PRIMITIVES.iter().find(|p| *p == s) {
                Ok(p)
            } else if s == "null" {
                Err((
                    "the null type".into(),
                    "A key cannot be null. Pick another field.".into(),
                ))
            } else {
                Err((format!("the named type `{s}`"), OTHER.into()))
            }
        }
        Json::Array(branches) => {
            let nullable = branches.iter().any(|b| b == "null");
            let hint = if nullable && branches.len() == 2 {
                "Make the field non-nullable (remove \"null\" from the union), pick another field, or use `KeyConfig::Schema` with a key schema of your own."
            } else {
                OTHER
            };
            Err((
                if nullable { "a nullable union" } else { "a union" }.into(),
                hint.into(),
            ))
        }
        Json::Object(o) => {
            let t = o.get("type").and_then(Json::as_str).unwrap_or("?");
            if let Some(lt) = o.get("logicalType").and_then(Json::as_str) {
                return Err((
                    format!("the logical type {lt} over {t}"),
                    format!(
                        "Deimos would drop the logical type and key on the bare {t}. Pick another field, or use `KeyConfig::Schema` with a key schema that has this field."
                    ),
                ));
            }
            match t {
                "record" | "enum" | "fixed" | "array" | "map" => Err((with_article(t), OTHER.into())),
                _ => match o.get("type") {
                    Some(inner @ Json::String(_)) => primitive_of(inner),
                    _ => Err((format!("an unsupported type `{t}`"), OTHER.into())),
                },
            }
        }
        _ => Err(("an unsupported type".into(), OTHER.into())),
    }
}

/// The kind of a schema from its JSON: `record`, `enum`, `fixed`, `array`, `map`, `union` or a primitive.
fn type_of(schema: &AvroSchema) -> String {
    match serde_json::from_str::<Json>(schema.canonical_json()) {
        Ok(Json::String(s)) => s,
        Ok(Json::Array(_)) => "union".into(),
        Ok(Json::Object(o)) => o.get("type").and_then(Json::as_str).unwrap_or("unknown").to_string(),
        _ => "unknown".into(),
    }
}

fn with_article(kind: &str) -> String {
    match kind.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {kind}"),
        _ => format!("a {kind}"),
    }
}

/// A short description of a JSON value for error messages.
pub(crate) fn describe(v: &Json) -> String {
    match v {
        Json::Null => "null".into(),
        Json::Bool(b) => format!("boolean {b}"),
        Json::Number(n) => format!("number {n}"),
        Json::String(s) if s.chars().count() > 40 => format!("string {:?}…", s.chars().take(40).collect::<String>()),
        Json::String(s) => format!("string {s:?}"),
        Json::Array(a) => format!("an array of {} items", a.len()),
        Json::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_and_wrapped_primitives_pass() {
        for p in PRIMITIVES {
            assert_eq!(primitive_of(&Json::String(p.into())), Ok(p));
            assert_eq!(primitive_of(&serde_json::json!({ "type": p })), Ok(p));
        }
    }

    #[test]
    fn others_are_rejected_with_their_kind() {
        let kind = |v: Json| primitive_of(&v).err().map(|(k, _)| k).unwrap_or_default();
        assert_eq!(kind(serde_json::json!("null")), "the null type");
        assert_eq!(kind(serde_json::json!(["null", "long"])), "a nullable union");
        assert_eq!(kind(serde_json::json!(["int", "long"])), "a union");
        assert_eq!(
            kind(serde_json::json!({"type": "enum", "name": "E", "symbols": ["A"]})),
            "an enum"
        );
        assert_eq!(kind(serde_json::json!({"type": "array", "items": "int"})), "an array");
        assert_eq!(
            kind(serde_json::json!({"type": "long", "logicalType": "timestamp-millis"})),
            "the logical type timestamp-millis over long"
        );
    }

    #[test]
    fn truthiness_is_ruby_s() {
        assert!(!truthy(&Json::Null));
        assert!(!truthy(&Json::Bool(false)));
        assert!(truthy(&serde_json::json!(0)));
        assert!(truthy(&serde_json::json!("")));
    }
}
