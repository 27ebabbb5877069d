//! Deimos's `time_delayed`: seconds between a payload's `timestamp` field and now.

use chrono::{DateTime, NaiveDateTime, Utc};
use deimos_avro::AvroSchema;
use serde_json::Value as Json;

/// How the reader schema's `timestamp` field is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimestampField {
    /// A string (or anything else): parsed as a date and time.
    Text,
    /// A long with logical type `timestamp-millis`.
    Millis,
    /// A long with logical type `timestamp-micros`.
    Micros,
}

impl TimestampField {
    /// The kind of the schema's top-level `timestamp` field, if it has one.
    pub(crate) fn of(schema: &AvroSchema) -> Option<TimestampField> {
        if !schema.has_field("timestamp") {
            return None;
        }
        let field = schema.field("timestamp")?;
        let logical = |t: &Json| t.get("logicalType").and_then(Json::as_str).map(str::to_string);
        let logical = match &field.schema {
            Json::Array(branches) => branches.iter().find_map(logical),
            other => logical(other),
        };
        Some(match logical.as_deref() {
            Some("timestamp-millis") | Some("local-timestamp-millis") => TimestampField::Millis,
            Some("timestamp-micros") | Some("local-timestamp-micros") => TimestampField::Micros,
            _ => TimestampField::Text,
        })
    }

    /// Seconds from the field's value to `now`; `None` when it is blank or cannot be parsed (Deimos skips
    /// those).
    pub(crate) fn delay_seconds(self, value: &Json, now: DateTime<Utc>) -> Option<f64> {
        let at = match (self, value) {
            (TimestampField::Millis, Json::Number(n)) => DateTime::from_timestamp_millis(n.as_i64()?)?,
            (TimestampField::Micros, Json::Number(n)) => DateTime::from_timestamp_micros(n.as_i64()?)?,
            (_, Json::String(s)) => parse_time(s)?,
            _ => return None,
        };
        let micros = (now - at).num_microseconds()?;
        // Microseconds of a delay fit f64 exactly for any realistic delay.
        #[allow(clippy::cast_precision_loss)]
        Some(micros as f64 / 1e6)
    }
}

/// Parses the formats Deimos payloads carry: RFC 3339 (`2019-01-01T10:30:00-05:00`), Ruby's `Time#to_s`
/// (`2019-01-01 10:30:00 -0500`), and either without a zone (read as UTC, as Ruby's `to_datetime`).
pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f %z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_deimos_formats_and_skips_nonsense() {
        let expected = DateTime::parse_from_rfc3339("2019-01-01T15:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_time("2019-01-01 10:30:00 -0500"), Some(expected));
        assert_eq!(parse_time("2019-01-01T10:30:00-05:00"), Some(expected));
        assert_eq!(parse_time("2019-01-01 15:30:00"), Some(expected));
        assert_eq!(parse_time("2019-01-01T15:30:00.000Z"), Some(expected));
        for bad in ["dffdf", "yesterday morning", "1234567890", ""] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn delays_from_text_and_millis() {
        let now = DateTime::parse_from_rfc3339("2019-01-01T15:30:10Z")
            .unwrap()
            .with_timezone(&Utc);
        let text = TimestampField::Text.delay_seconds(&json!("2019-01-01 10:30:00 -0500"), now);
        assert_eq!(text, Some(10.0));
        let millis = TimestampField::Millis.delay_seconds(&json!(now.timestamp_millis() - 2500), now);
        assert_eq!(millis, Some(2.5));
        assert_eq!(TimestampField::Text.delay_seconds(&json!(12), now), None);
        assert_eq!(TimestampField::Text.delay_seconds(&Json::Null, now), None);
    }

    #[test]
    fn finds_the_timestamp_field() {
        let s = AvroSchema::parse(
            r#"{"type":"record","name":"T","fields":[{"name":"timestamp","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#,
        )
        .unwrap();
        assert_eq!(TimestampField::of(&s), Some(TimestampField::Millis));
        let s = AvroSchema::parse(r#"{"type":"record","name":"T","fields":[{"name":"timestamp","type":"string"}]}"#)
            .unwrap();
        assert_eq!(TimestampField::of(&s), Some(TimestampField::Text));
        let s = AvroSchema::parse(r#"{"type":"record","name":"T","fields":[{"name":"ts","type":"string"}]}"#).unwrap();
        assert_eq!(TimestampField::of(&s), None);
    }
}
