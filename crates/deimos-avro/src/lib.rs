#![doc = include_str!("../README.md")]

mod auto;
pub mod compat;
mod de;
mod encode;
mod error;
pub mod generated;
mod graph;
mod inline;
mod resolve;
mod schema;
mod ser;
mod store;
pub mod wire;

pub use compat::CompatibilityLevel;
pub use de::MAX_DECODED_VALUES;
pub use error::{DecodeError, EncodeError, ResolveError, SchemaError};
pub use inline::full_name;
pub use resolve::{PlanCache, ResolvedPlan};
pub use schema::{AvroSchema, FieldInfo, MAX_DECIMAL_PRECISION};
pub use store::SchemaStore;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;

impl AvroSchema {
    /// Coerces a loose payload (a JSON-like map) to this schema and appends its Avro binary encoding,
    /// in one pass.
    ///
    /// Fields not in the schema are dropped; a missing field takes its default or is an error naming its
    /// path and expected type. See `docs/AVRO.md` for every coercion rule.
    pub fn encode_value_into(&self, payload: &Json, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        encode::encode_loose(self.graph(), payload, out)
    }

    /// [`encode_value_into`](Self::encode_value_into) into a new buffer.
    pub fn encode_value(&self, payload: &Json) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(64);
        self.encode_value_into(payload, &mut out)?;
        Ok(out)
    }

    /// Appends the Avro binary encoding of a serde value (the typed path: no intermediate value tree).
    /// Struct fields are matched to record fields by name; missing ones take their defaults.
    pub fn encode_into<T: Serialize + ?Sized>(&self, value: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        value
            .serialize(ser::Ser {
                g: self.graph(),
                node: 0,
                out,
                depth: 0,
            })
            .map_err(|e| encode::root_path(*e.0))
    }

    /// [`encode_into`](Self::encode_into) into a new buffer.
    pub fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(64);
        self.encode_into(value, &mut out)?;
        Ok(out)
    }

    /// The payload as it will be sent: coerced to the schema, unknown fields dropped, defaults filled in.
    pub fn coerce(&self, payload: &Json) -> Result<Json, EncodeError> {
        let bytes = self.encode_value(payload)?;
        ResolvedPlan::identity(self)
            .decode_value(&bytes)
            .map_err(|e| EncodeError::Unsupported {
                path: "<root>".into(),
                message: format!("coerced payload did not read back: {e}"),
            })
    }

    /// Decodes data written with this same schema into a Rust type. For data written with another schema,
    /// or on a hot path, use a [`ResolvedPlan`] (or a [`PlanCache`]).
    pub fn decode<T: DeserializeOwned>(&self, avro: &[u8]) -> Result<T, DecodeError> {
        ResolvedPlan::identity(self).decode(avro)
    }

    /// Decodes data written with this same schema into a JSON value.
    pub fn decode_value(&self, avro: &[u8]) -> Result<Json, DecodeError> {
        ResolvedPlan::identity(self).decode_value(avro)
    }
}

impl ResolvedPlan {
    /// Decodes Avro binary written with the writer schema into `T`, resolving to the reader schema.
    pub fn decode<T: DeserializeOwned>(&self, avro: &[u8]) -> Result<T, DecodeError> {
        de::decode(&self.0, avro)
    }

    /// Decodes into a JSON value: records and maps become objects, bytes and fixed become strings with
    /// one char per byte (Avro's JSON encoding), logical types their underlying number (decimals a string).
    pub fn decode_value(&self, avro: &[u8]) -> Result<Json, DecodeError> {
        de::decode(&self.0, avro)
    }

    /// Decodes through a [`serde::de::DeserializeSeed`], for targets that need state to deserialize (such as
    /// picking one field out of a record without building the others). Owned data only: the seed may not
    /// borrow from `avro`
    /// (strings and bytes are handed to it as short-lived `&str` / `&[u8]`, never `visit_borrowed_*`).
    pub fn decode_seed<'de, S: serde::de::DeserializeSeed<'de>>(
        &self,
        avro: &[u8],
        seed: S,
    ) -> Result<S::Value, DecodeError> {
        de::decode_seed(&self.0, avro, seed)
    }
}
