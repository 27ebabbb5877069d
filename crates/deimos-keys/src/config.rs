//! [`KeyConfig`]: how a producer or consumer treats Kafka message keys (Deimos's `key_config`).

use std::fmt;

/// How message keys are produced and consumed: Deimos's `key_config`.
///
/// | variant | Deimos | key source | on the wire |
/// |---|---|---|---|
/// | [`NotSet`](Self::NotSet) | no `key_config` call | — | producing: error if a key is given ([`KeyError::NoKeyConfig`](crate::KeyError::NoKeyConfig)) or not ([`KeyError::NoKeyGiven`](crate::KeyError::NoKeyGiven)) |
/// | [`None`](Self::None) | `key_config none: true` | `payload_key` if given, else no key | a given key raw, else no key |
/// | [`Plain`](Self::Plain) | `key_config plain: true` | `payload_key` (required) | raw bytes |
/// | [`Schema`](Self::Schema) | `key_config schema: 'Name'` | `payload_key` (required, an object) | Avro with the named key schema, framed |
/// | [`Field`](Self::Field) | `key_config field: 'f'` | `payload_key` if given, else the payload's field `f` | `{f: key}` in Avro with a generated key schema, framed |
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum KeyConfig {
    /// No key config at all (Deimos's default for producers: `encode_key = true`, `no_keys = nil`).
    ///
    /// Producing fails whether or not a key is given; consuming fails on any message that has a key.
    #[default]
    NotSet,
    /// Keys are not used (`key_config none: true`). A key given anyway is sent raw, as Deimos's Kafka and
    /// test backends do.
    None,
    /// Keys are sent as they are (`key_config plain: true`): a string as its UTF-8 bytes, a number or
    /// boolean as its text.
    Plain,
    /// Keys are records of the named Avro schema (`key_config schema: 'MyKeySchema'`). A bare name is
    /// looked up in the value schema's namespace, a dotted name as it is.
    Schema(String),
    /// The key is a top-level field of the value (`key_config field: 'id'`), encoded with a generated
    /// key schema `<Value>_key` holding only that field.
    Field(String),
}

impl KeyConfig {
    /// `KeyConfig::Schema(name)`.
    pub fn schema(name: impl Into<String>) -> KeyConfig {
        KeyConfig::Schema(name.into())
    }

    /// `KeyConfig::Field(name)`.
    pub fn field(name: impl Into<String>) -> KeyConfig {
        KeyConfig::Field(name.into())
    }

    /// Whether keys are Avro-encoded (`Schema` or `Field`), so a schema registry is involved.
    pub fn encodes_keys(&self) -> bool {
        matches!(self, KeyConfig::Schema(_) | KeyConfig::Field(_))
    }

    /// Whether a message may go without a key (only [`KeyConfig::None`], Deimos's `no_keys`).
    pub fn allows_no_key(&self) -> bool {
        matches!(self, KeyConfig::None)
    }

    /// The Deimos spelling of this config (`key_config field: 'id'`), for messages and logs.
    pub fn deimos_syntax(&self) -> String {
        match self {
            KeyConfig::NotSet => "(no key_config)".to_string(),
            KeyConfig::None => "key_config none: true".to_string(),
            KeyConfig::Plain => "key_config plain: true".to_string(),
            KeyConfig::Schema(s) => format!("key_config schema: '{s}'"),
            KeyConfig::Field(f) => format!("key_config field: '{f}'"),
        }
    }
}

impl fmt::Display for KeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyConfig::NotSet => f.write_str("KeyConfig::NotSet"),
            KeyConfig::None => f.write_str("KeyConfig::None"),
            KeyConfig::Plain => f.write_str("KeyConfig::Plain"),
            KeyConfig::Schema(s) => write!(f, "KeyConfig::Schema({s:?})"),
            KeyConfig::Field(n) => write!(f, "KeyConfig::Field({n:?})"),
        }
    }
}
