//! Error type of deimos-keys.

use deimos_avro::{DecodeError, EncodeError, SchemaError};
use deimos_registry::RegistryError;

/// A key could not be configured, extracted, encoded or decoded.
///
/// The two errors a Deimos user knows, [`KeyError::NoKeyGiven`] and [`KeyError::NoKeyConfig`], start with
/// Deimos's own message word for word; the sentence after it names the deimos-rs setting to use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A message has no key but the key config requires one (`Plain`, `Schema`, `Field`, or no key config).
    #[error(
        "No key given but a key is required! Use `key_config none: true` to avoid using keys. In deimos-rs: give a key (`payload_key` or the key field), or use `KeyConfig::None`."
    )]
    NoKeyGiven,

    /// A producer was given a key but has no key config at all.
    #[error(
        "No key config given - if you are not encoding keys, please use `key_config plain: true`. In deimos-rs: use `KeyConfig::Plain` to send keys as they are, or `KeyConfig::Field` / `KeyConfig::Schema` to encode them."
    )]
    NoKeyConfig,

    /// A consumer received a key but has no key config at all.
    #[error(
        "No key config given - if you are not decoding keys, please use `key_config plain: true`. In deimos-rs: use `KeyConfig::Plain` to read keys as they are, or `KeyConfig::Field` / `KeyConfig::Schema` to decode them."
    )]
    NoKeyConfigForDecoding,

    /// `KeyConfig::Field` names a field the value schema does not have.
    #[error(
        "key field `{field}` is not a field of {schema} (its fields: {}); fix the name in `KeyConfig::Field`, or use `KeyConfig::Schema` with a key schema of your own",
        .available.join(", ")
    )]
    FieldNotFound {
        /// The configured key field.
        field: String,
        /// Full name of the value schema.
        schema: String,
        /// The value schema's top-level fields.
        available: Vec<String>,
    },

    /// `KeyConfig::Field` names a field whose type cannot be a generated key schema's field.
    #[error(
        "key field `{field}` of {schema} has type {type_json} ({kind}); a key field must have a primitive, non-nullable type (boolean, int, long, float, double, bytes or string). {hint}"
    )]
    UnsupportedFieldType {
        /// The configured key field.
        field: String,
        /// Full name of the value schema.
        schema: String,
        /// The field's type as schema JSON.
        type_json: String,
        /// What kind of type it is (`a union`, `a record`, `a logical type`, ...).
        kind: String,
        /// What to do instead.
        hint: String,
    },

    /// `KeyConfig::Field` was used with a value schema that is not a record.
    #[error(
        "`KeyConfig::Field(\"{field}\")` needs a record value schema, but {schema} is not a record; use `KeyConfig::Plain` or `KeyConfig::Schema`"
    )]
    ValueNotRecord {
        /// The configured key field.
        field: String,
        /// Name (or type) of the value schema.
        schema: String,
    },

    /// The key schema of `KeyConfig::Schema` (or the generated one) could not be loaded or added to the store.
    #[error("key schema `{name}` could not be loaded: {source}")]
    Schema {
        /// The full name that was looked up.
        name: String,
        /// What the schema store said.
        #[source]
        source: SchemaError,
    },

    /// The key schema of `KeyConfig::Schema` is not a record.
    #[error(
        "key schema `{name}` is {kind}, not a record; a key schema must be a record (keys are objects such as {{\"id\": 1}}), or use `KeyConfig::Field` / `KeyConfig::Plain`"
    )]
    KeySchemaNotRecord {
        /// Full name of the key schema.
        name: String,
        /// What it is instead (`an enum`, `a fixed`).
        kind: String,
    },

    /// A `KeyConfig::Schema` key is not a JSON object.
    #[error("the key for key schema {schema} must be an object with the key schema's fields, got {got}")]
    KeyNotObject {
        /// Full name of the key schema.
        schema: String,
        /// A short description of the key given.
        got: String,
    },

    /// A `KeyConfig::Schema` key has a top-level field its key schema does not have.
    #[error(
        "the key has field `{field}`, which key schema {schema} does not have (its fields: {}); remove it from the key or add it to the key schema",
        .available.join(", ")
    )]
    UnknownKeyField {
        /// Full name of the key schema.
        schema: String,
        /// The extra field.
        field: String,
        /// The key schema's fields.
        available: Vec<String>,
    },

    /// A `KeyConfig::Plain` (or `None`) key is an object or an array, which has no raw byte form.
    #[error(
        "a {config} key is sent as raw bytes, so it must be a string, number or boolean; got {got}. Use `KeyConfig::Schema` to send structured keys"
    )]
    RawKeyNotScalar {
        /// `plain` or `none`.
        config: &'static str,
        /// A short description of the key given.
        got: String,
    },

    /// The key does not fit the key schema.
    #[error("the key does not fit key schema {schema}: {source}")]
    Encode {
        /// Full name of the key schema.
        schema: String,
        /// The encoder's error, with the field path.
        #[source]
        source: EncodeError,
    },

    /// The key field could not be read from a typed (serde) value.
    #[error("cannot read key field `{field}` from the value: {message}")]
    TypedKey {
        /// The configured key field.
        field: String,
        /// What went wrong.
        message: String,
    },

    /// [`KeyEncoder::encode`](crate::KeyEncoder::encode) was called before the key schema was registered.
    #[error(
        "the key encoder for subject `{subject}` is not prepared: its key schema {schema} has no registry id yet; call `KeyEncoder::prepare(&registry).await` once before encoding"
    )]
    NotPrepared {
        /// The key subject.
        subject: String,
        /// Full name of the key schema.
        schema: String,
    },

    /// Registering the key schema failed.
    #[error("registering key schema {schema} under subject `{subject}` failed: {source}")]
    Register {
        /// The key subject.
        subject: String,
        /// Full name of the key schema.
        schema: String,
        /// What the registry said.
        #[source]
        source: Box<RegistryError>,
    },

    /// Fetching the writer schema of a key by its id failed.
    #[error("fetching the writer schema (id {id}) of a key failed: {source}")]
    FetchSchema {
        /// The schema id from the key's frame.
        id: u32,
        /// What the registry said.
        #[source]
        source: Box<RegistryError>,
    },

    /// A key could not be decoded.
    #[error(
        "the key could not be decoded with key schema {schema}: {source}; check that the topic's keys are Avro-encoded with a schema registry (if they are plain strings, use `KeyConfig::Plain`)"
    )]
    Decode {
        /// Full name of the (reader) key schema.
        schema: String,
        /// The decoder's error.
        #[source]
        source: DecodeError,
    },
}
