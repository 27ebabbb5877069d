//! `com.acme.Widget` (schemas/com/acme/Widget.avsc) as a Rust type, shared by the codec tests, the fuzz
//! tests and the benchmark.

use serde::{Deserialize, Serialize};

/// `com.acme.Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::upper_case_acronyms, dead_code)]
pub enum Status {
    ACTIVE,
    RETIRED,
    UNKNOWN,
}

/// `com.acme.Widget`, as the producer has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Widget {
    pub id: i64,
    pub message_id: String,
    pub name: String,
    pub description: String,
    pub price: f64,
    pub quantity: i32,
    pub status: Status,
    pub tags: Vec<String>,
    pub updated_at: i64,
    pub parent_id: Option<i64>,
}

/// The consumer's newer `com.acme.Widget`: drops `description`, reads `quantity` as a long and adds `region`
/// with a default.
#[allow(dead_code)]
pub const WIDGET_V2_SCHEMA: &str = r#"{
  "type": "record",
  "name": "Widget",
  "namespace": "com.acme",
  "fields": [
    {"name": "id", "type": "long"},
    {"name": "message_id", "type": "string"},
    {"name": "name", "type": "string"},
    {"name": "price", "type": "double"},
    {"name": "quantity", "type": "long"},
    {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["ACTIVE", "RETIRED", "UNKNOWN"], "default": "UNKNOWN"}},
    {"name": "tags", "type": {"type": "array", "items": "string"}},
    {"name": "updated_at", "type": "long"},
    {"name": "parent_id", "type": ["null", "long"], "default": null},
    {"name": "region", "type": "string", "default": "eu-west-1"}
  ]
}"#;

/// What a consumer with [`WIDGET_V2_SCHEMA`] decodes into.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[allow(dead_code)]
pub struct WidgetV2 {
    pub id: i64,
    pub message_id: String,
    pub name: String,
    pub price: f64,
    pub quantity: i64,
    pub status: Status,
    pub tags: Vec<String>,
    pub updated_at: i64,
    pub parent_id: Option<i64>,
    pub region: String,
}
