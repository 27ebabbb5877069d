//! What Rust types generated from `.avsc` files (crate `deimos-codegen`) refer to, so that a crate using them
//! needs no dependency of its own on serde, chrono, uuid or bigdecimal: generated code names these paths
//! (`::deimos_avro::generated::serde`, or `::deimos::avro::generated::serde` through the facade).

pub use bigdecimal::BigDecimal;
pub use chrono;
pub use serde;
pub use uuid;

/// A Rust type generated from an Avro record schema.
///
/// ```
/// use deimos_avro::generated::AvroRecord;
///
/// struct Widget;
/// impl AvroRecord for Widget {
///     const FULL_NAME: &'static str = "com.acme.Widget";
///     const SCHEMA: &'static str = r#"{"type":"record","name":"Widget","namespace":"com.acme","fields":[]}"#;
/// }
/// let schema = Widget::schema()?;
/// assert_eq!(schema.name(), Some("com.acme.Widget"));
/// # Ok::<(), deimos_avro::SchemaError>(())
/// ```
pub trait AvroRecord {
    /// The record's full name (`com.acme.Widget`).
    const FULL_NAME: &'static str;
    /// The record's schema, self-contained (every type it refers to is inlined), as it was generated from.
    const SCHEMA: &'static str;

    /// [`SCHEMA`](Self::SCHEMA) parsed.
    fn schema() -> Result<crate::AvroSchema, crate::SchemaError> {
        crate::AvroSchema::parse(Self::SCHEMA)
    }
}
