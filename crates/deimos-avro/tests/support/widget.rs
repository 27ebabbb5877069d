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
