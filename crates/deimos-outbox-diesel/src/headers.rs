//! The `headers` column: a message's Kafka headers as JSON, `[["name","value"], …]`.
//!
//! A value that is valid UTF-8 is a JSON string (trace context and most headers are text, and stay readable
//! in the table); any other value is an object `{"base64": "…"}`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value as Json, json};

/// Encodes headers for the column; `None` when there are none.
pub fn encode(headers: &[(String, Vec<u8>)]) -> Option<Vec<u8>> {
    if headers.is_empty() {
        return None;
    }
    let pairs: Vec<Json> = headers
        .iter()
        .map(|(k, v)| match std::str::from_utf8(v) {
            Ok(text) => json!([k, text]),
            Err(_) => json!([k, { "base64": STANDARD.encode(v) }]),
        })
        .collect();
    serde_json::to_vec(&pairs).ok()
}

/// Decodes the column. A value that is not what [`encode`] writes is an error naming what was wrong.
pub fn decode(column: Option<&[u8]>) -> Result<Vec<(String, Vec<u8>)>, String> {
    let Some(bytes) = column else { return Ok(Vec::new()) };
    let pairs: Vec<(String, Json)> = serde_json::from_slice(bytes)
        .map_err(|e| format!("the headers column is not a JSON array of [name, value] pairs: {e}"))?;
    pairs
        .into_iter()
        .map(|(k, v)| match v {
            Json::String(s) => Ok((k, s.into_bytes())),
            Json::Object(o) => match o.get("base64").and_then(Json::as_str) {
                Some(b) => STANDARD
                    .decode(b)
                    .map(|v| (k.clone(), v))
                    .map_err(|e| format!("header `{k}`: bad base64: {e}")),
                None => Err(format!("header `{k}`: an object value must be {{\"base64\": \"…\"}}")),
            },
            other => Err(format!(
                "header `{k}`: expected a string or {{\"base64\": …}}, got {other}"
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_binary_values_round_trip() {
        let headers = vec![
            ("traceparent".to_string(), b"00-abc-def-01".to_vec()),
            ("raw".to_string(), vec![0xff, 0x00, 0x10]),
        ];
        let column = encode(&headers);
        let text = String::from_utf8(column.clone().unwrap_or_default()).unwrap_or_default();
        assert!(text.contains(r#"["traceparent","00-abc-def-01"]"#), "{text}");
        assert_eq!(decode(column.as_deref()), Ok(headers));
        assert_eq!(encode(&[]), None);
        assert_eq!(decode(None), Ok(vec![]));
        assert!(decode(Some(b"{}")).is_err());
    }
}
