//! Auto fields: `message_id` and `timestamp` are filled when the schema has them and the payload does
//! not (Deimos `Message#add_fields`).

use serde_json::{Map, Value as Json};

use crate::graph::{Graph, Node, NodeId};
use crate::schema::AvroSchema;

/// Keys that carry message metadata inside a payload and are not fields.
const META_KEYS: [&str; 2] = ["payload_key", "partition_key"];

fn timestamp_value(g: &Graph, node: NodeId, now: chrono::DateTime<chrono::Utc>) -> Option<Json> {
    match &g.nodes[node] {
        // Deimos: `Time.now.in_time_zone.to_s`, e.g. "2019-01-01 10:30:00 +0000".
        Node::String => Some(Json::String(now.format("%Y-%m-%d %H:%M:%S %z").to_string())),
        Node::Timestamp { unit, .. } => {
            let v = match unit {
                1_000 => now.timestamp_millis(),
                1_000_000 => now.timestamp_micros(),
                _ => now.timestamp_nanos_opt()?,
            };
            Some(Json::from(v))
        }
        Node::Long | Node::Int => Some(Json::from(now.timestamp())),
        Node::Double | Node::Float => Some(Json::from(now.timestamp_millis() as f64 / 1000.0)),
        Node::Union(b) => b.iter().find_map(|n| {
            if matches!(g.nodes[*n], Node::Null) {
                None
            } else {
                timestamp_value(g, *n, now)
            }
        }),
        _ => None,
    }
}

fn id_value(g: &Graph, node: NodeId) -> Option<Json> {
    match &g.nodes[node] {
        Node::String | Node::Uuid(_) => Some(Json::String(uuid::Uuid::new_v4().to_string())),
        Node::Union(b) => b.iter().find_map(|n| id_value(g, *n)),
        _ => None,
    }
}

impl AvroSchema {
    /// Fills `message_id` (a v4 UUID) and `timestamp` (now) when the schema has those fields and the
    /// payload has no value for them (missing or null). A payload with nothing but `payload_key` /
    /// `partition_key` is left alone: it is a tombstone.
    pub fn add_auto_fields(&self, payload: &mut Map<String, Json>) {
        if payload.keys().all(|k| META_KEYS.contains(&k.as_str())) {
            return;
        }
        let g = self.graph();
        let Some(Node::Record(rec)) = g.nodes.first() else {
            return;
        };
        let now = chrono::Utc::now();
        for (name, make) in [("message_id", true), ("timestamp", false)] {
            let Some(&i) = rec.lookup.get(name) else { continue };
            if payload.get(name).is_some_and(|v| !v.is_null()) {
                continue;
            }
            let node = rec.fields[i].node;
            let v = if make {
                id_value(g, node)
            } else {
                timestamp_value(g, node, now)
            };
            if let Some(v) = v {
                payload.insert(name.to_string(), v);
            }
        }
    }
}
