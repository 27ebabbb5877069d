//! `deimos tail TOPIC`: the last messages of a topic as JSON lines.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use base64::Engine as _;
use deimos_config::Config;
use deimos_consumer::InlineMessage;
use deimos_registry::SchemaCodec;
use serde_json::{Map, Value as Json, json};

pub(crate) async fn run(config: &Config, topic: &str, count: usize, timeout: Duration) -> Result<ExitCode> {
    let brokers = config.brokers()?;
    // Without a registry, Avro messages are shown raw with a note; everything else still decodes.
    let codec = match config.registry() {
        Ok(registry) => Some(SchemaCodec::from_arc(Arc::clone(&registry))),
        Err(_) => None,
    };
    let messages =
        deimos_consumer::tail::last_messages(brokers, &config.consumer_settings(), topic, count, timeout).await?;
    for m in &messages {
        println!("{}", render(codec.as_ref(), topic, m).await);
    }
    eprintln!("{} messages of {topic}", messages.len());
    Ok(ExitCode::SUCCESS)
}

/// One message as a JSON object: where it is, its key and value decoded, its headers.
pub(crate) async fn render(codec: Option<&SchemaCodec>, topic: &str, m: &InlineMessage) -> Json {
    let mut out = Map::new();
    out.insert("topic".into(), json!(topic));
    out.insert("partition".into(), json!(m.partition));
    out.insert("offset".into(), json!(m.offset));
    out.insert("timestamp".into(), json!(m.timestamp));
    for (name, bytes) in [("key", &m.key), ("value", &m.value)] {
        let decoded = match bytes {
            None => Json::Null,
            Some(bytes) => match decode(codec, bytes).await {
                Ok(value) => value,
                Err(problem) => {
                    out.insert(format!("{name}_error"), json!(problem));
                    json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) })
                }
            },
        };
        out.insert(name.into(), decoded);
    }
    let headers: Map<String, Json> = m
        .headers
        .iter()
        .map(|(k, v)| {
            let v = match v {
                None => Json::Null,
                Some(b) => match std::str::from_utf8(b) {
                    Ok(text) => json!(text),
                    Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
                },
            };
            (k.to_string(), v)
        })
        .collect();
    out.insert("headers".into(), Json::Object(headers));
    Json::Object(out)
}

/// Confluent-framed Avro (magic byte 0, 4-byte schema id) is decoded with its writer schema; UTF-8 text is
/// shown as a string; anything else is an error with the reason.
async fn decode(codec: Option<&SchemaCodec>, bytes: &[u8]) -> Result<Json, String> {
    if bytes.len() >= 5 && bytes[0] == 0 {
        return match codec {
            Some(codec) => codec.decode_value(bytes, None).await.map_err(|e| e.to_string()),
            None => Err("Avro in the Confluent frame, but no schema registry is configured: pass --registry".into()),
        };
    }
    std::str::from_utf8(bytes)
        .map(|text| json!(text))
        .map_err(|_| "neither Confluent-framed Avro nor UTF-8 text".to_string())
}
