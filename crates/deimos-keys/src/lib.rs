#![doc = include_str!("../README.md")]

mod codec;
mod config;
mod error;
mod spec;
mod typed;

pub use codec::{DecodedKey, KeyDecoder, KeyEncoder, key_subject};
pub use config::KeyConfig;
pub use error::KeyError;
pub use spec::{ExtractedKey, KeySpec, PAYLOAD_KEY, generated_key_schema_json};
pub use typed::serialized_field;
