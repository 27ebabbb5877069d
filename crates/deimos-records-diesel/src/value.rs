//! Converting values between messages and columns (Deimos's `SchemaModelConverter`, deimos-features.md §4.3),
//! and between rows read back from the database and record attributes.

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde_json::Value as Json;

use crate::table::{ColumnDef, ColumnType};

/// A value bound to a statement, typed for its column.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SqlValue {
    /// NULL, typed as the column it goes to.
    Null(ColumnType),
    /// A boolean.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A timestamp, UTC.
    Timestamp(NaiveDateTime),
    /// A date.
    Date(NaiveDate),
}

/// What a whole number means in a time column: Deimos reads epoch seconds; Avro's logical types say
/// milliseconds, microseconds or (for `date`) days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeUnit {
    Seconds,
    Millis,
    Micros,
    Days,
}

/// The non-null branch of a field's Avro type (the first one of a union, as Deimos's coercer).
fn non_null(schema: &Json) -> &Json {
    match schema {
        Json::Array(branches) => branches.iter().find(|b| b.as_str() != Some("null")).unwrap_or(schema),
        other => other,
    }
}

/// The Avro primitive type and logical type of a field's schema.
fn avro_type(schema: &Json) -> (Option<&str>, Option<&str>) {
    match non_null(schema) {
        Json::String(t) => (Some(t.as_str()), None),
        Json::Object(o) => (
            o.get("type").and_then(Json::as_str),
            o.get("logicalType").and_then(Json::as_str),
        ),
        _ => (None, None),
    }
}

/// What a whole number in this field means when it goes to a time column.
pub(crate) fn time_unit(schema: &Json) -> TimeUnit {
    match avro_type(schema).1 {
        Some("timestamp-millis" | "local-timestamp-millis") => TimeUnit::Millis,
        Some("timestamp-micros" | "local-timestamp-micros") => TimeUnit::Micros,
        Some("date") => TimeUnit::Days,
        _ => TimeUnit::Seconds,
    }
}

/// Parses a timestamp: RFC 3339 (converted to UTC), `YYYY-MM-DD[T ]HH:MM:SS[.f]` (taken as UTC, optionally
/// followed by ` UTC` as Ruby prints times), or a bare date (midnight).
pub(crate) fn parse_datetime(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.naive_utc());
    }
    let s = s.strip_suffix(" UTC").unwrap_or(s);
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Some(t);
        }
    }
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f %z") {
        return Some(t.naive_utc());
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
}

/// A timestamp as record attributes show it (chrono's serde form, as a diesel model serializes it).
pub(crate) fn format_datetime(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.f").to_string()
}

fn from_epoch(n: i64, unit: TimeUnit) -> Option<NaiveDateTime> {
    let t = match unit {
        TimeUnit::Seconds => DateTime::from_timestamp(n, 0),
        TimeUnit::Millis => DateTime::from_timestamp_millis(n),
        TimeUnit::Micros => DateTime::from_timestamp_micros(n),
        TimeUnit::Days => n.checked_mul(86_400).and_then(|s| DateTime::from_timestamp(s, 0)),
    };
    t.map(|t| t.naive_utc())
}

fn epoch_of(t: NaiveDateTime, unit: TimeUnit) -> i64 {
    let utc = t.and_utc();
    match unit {
        TimeUnit::Seconds => utc.timestamp(),
        TimeUnit::Millis => utc.timestamp_millis(),
        TimeUnit::Micros => utc.timestamp_micros(),
        TimeUnit::Days => utc.timestamp().div_euclid(86_400),
    }
}

/// A whole number from JSON: an integer, a float (truncated, as an integer column casts it) or a string that
/// holds one.
fn integer(value: &Json) -> Option<i64> {
    match value {
        Json::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && f.abs() < 9.2e18)
                .map(|f| f.trunc() as i64)
        }),
        Json::String(s) => {
            let t = s.trim().replace('_', "");
            t.parse::<i64>().ok()
        }
        Json::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

fn describe(value: &Json) -> String {
    let mut s = value.to_string();
    if s.len() > 80 {
        let mut cut = 77;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// Converts a message value for `column`. `unit` says what a whole number means for a time column.
pub(crate) fn to_sql(column: &ColumnDef, value: &Json, unit: TimeUnit) -> Result<SqlValue, String> {
    if value.is_null() {
        return Ok(SqlValue::Null(column.ty));
    }
    let wrong = |what: &str| {
        format!(
            "{} is not {what}, which column `{}` ({:?}) needs",
            describe(value),
            column.name,
            column.ty
        )
    };
    Ok(match column.ty {
        ColumnType::Bool => match value {
            Json::Bool(b) => SqlValue::Bool(*b),
            Json::Number(_) => SqlValue::Bool(integer(value) != Some(0)),
            Json::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "t" | "1" | "yes" => SqlValue::Bool(true),
                "false" | "f" | "0" | "no" => SqlValue::Bool(false),
                _ => return Err(wrong("a boolean")),
            },
            _ => return Err(wrong("a boolean")),
        },
        ColumnType::SmallInt | ColumnType::Integer | ColumnType::BigInt => {
            SqlValue::Int(integer(value).ok_or_else(|| wrong("a whole number"))?)
        }
        ColumnType::Float | ColumnType::Double => match value {
            Json::Number(n) => SqlValue::Float(n.as_f64().ok_or_else(|| wrong("a number"))?),
            Json::String(s) => SqlValue::Float(s.trim().parse().map_err(|_| wrong("a number"))?),
            _ => return Err(wrong("a number")),
        },
        ColumnType::Text => match value {
            Json::String(s) => SqlValue::Text(s.clone()),
            Json::Number(n) => SqlValue::Text(n.to_string()),
            Json::Bool(b) => SqlValue::Text(b.to_string()),
            other => SqlValue::Text(other.to_string()),
        },
        ColumnType::Binary => match value {
            // Avro `bytes` decode to one char per byte (U+0000–U+00FF); other text is taken as UTF-8.
            Json::String(s) => SqlValue::Bytes(
                s.chars()
                    .map(|c| u8::try_from(u32::from(c)).ok())
                    .collect::<Option<Vec<u8>>>()
                    .unwrap_or_else(|| s.as_bytes().to_vec()),
            ),
            Json::Array(items) => SqlValue::Bytes(
                items
                    .iter()
                    .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                    .collect::<Option<Vec<u8>>>()
                    .ok_or_else(|| wrong("bytes"))?,
            ),
            _ => return Err(wrong("bytes")),
        },
        ColumnType::Timestamp => {
            let t = match value {
                Json::Number(n) if n.is_f64() => n
                    .as_f64()
                    .and_then(|f| DateTime::from_timestamp_micros((f * 1e6) as i64).map(|t| t.naive_utc())),
                Json::Number(_) => integer(value).and_then(|n| from_epoch(n, unit)),
                Json::String(s) => match integer(value) {
                    Some(n) => from_epoch(n, unit),
                    None => parse_datetime(s),
                },
                _ => None,
            };
            SqlValue::Timestamp(t.ok_or_else(|| {
                wrong("a time (epoch seconds, or the field's timestamp logical type, or an ISO 8601 timestamp)")
            })?)
        }
        ColumnType::Date => {
            let d = match value {
                Json::Number(_) => integer(value).and_then(|n| {
                    from_epoch(
                        n,
                        if unit == TimeUnit::Seconds {
                            TimeUnit::Days
                        } else {
                            unit
                        },
                    )
                }),
                Json::String(s) => parse_datetime(s),
                _ => None,
            };
            SqlValue::Date(
                d.map(|t| t.date())
                    .ok_or_else(|| wrong("a date (days since 1970-01-01 or YYYY-MM-DD)"))?,
            )
        }
    })
}

/// A value read back from the database (through its JSON functions) as a record attribute: booleans stored as
/// numbers become booleans, timestamps take one form whatever the database printed.
pub(crate) fn normalize(column: &ColumnDef, value: Json) -> Json {
    match (column.ty, value) {
        (ColumnType::Bool, Json::Number(n)) => Json::Bool(n.as_i64() != Some(0)),
        (ColumnType::Bool, Json::String(s)) => Json::Bool(matches!(s.as_str(), "t" | "true" | "1")),
        (ColumnType::Timestamp, Json::String(s)) => match parse_datetime(&s) {
            Some(t) => Json::String(format_datetime(t)),
            None => Json::String(s),
        },
        (ColumnType::Date, Json::String(s)) => Json::String(s.chars().take(10).collect()),
        (ColumnType::Float | ColumnType::Double, Json::Number(n)) => n.as_f64().map_or(Json::Number(n), Json::from),
        // Read as hex (see `Sql::json_row`); given back as Avro `bytes` are: one char per byte.
        (ColumnType::Binary, Json::String(hex)) => match decode_hex(&hex) {
            Some(bytes) => Json::String(bytes.into_iter().map(char::from).collect()),
            None => Json::String(hex),
        },
        (_, v) => v,
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| hex.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}

/// Record attributes for a payload field: a timestamp (as a diesel model serializes it) going to an `int` or
/// `long` field becomes a number (epoch milliseconds or microseconds per the field's logical type, epoch
/// seconds without one, as Deimos's `Time#to_i`; days for `date`). Everything else is left to the producer's
/// coercion.
pub(crate) fn for_field(schema: &Json, value: Json) -> Json {
    let Json::String(s) = &value else {
        return value;
    };
    match avro_type(schema).0 {
        Some("int" | "long") if s.trim().parse::<i64>().is_err() => match parse_datetime(s) {
            Some(t) => Json::from(epoch_of(t, time_unit(schema))),
            None => value,
        },
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn col(ty: ColumnType) -> ColumnDef {
        ColumnDef {
            name: "c".into(),
            ty,
            nullable: true,
        }
    }

    #[test]
    fn times_follow_deimos_and_logical_types() {
        let ts = col(ColumnType::Timestamp);
        let expect = NaiveDate::from_ymd_opt(2019, 5, 5)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        assert_eq!(
            to_sql(&ts, &json!(1_557_014_400), TimeUnit::Seconds),
            Ok(SqlValue::Timestamp(expect))
        );
        assert_eq!(
            to_sql(&ts, &json!("1557014400"), TimeUnit::Seconds),
            Ok(SqlValue::Timestamp(expect))
        );
        assert_eq!(
            to_sql(&ts, &json!(1_557_014_400_000_i64), TimeUnit::Millis),
            Ok(SqlValue::Timestamp(expect))
        );
        assert_eq!(
            to_sql(&ts, &json!("2019-05-05T00:00:00Z"), TimeUnit::Seconds),
            Ok(SqlValue::Timestamp(expect))
        );
        assert_eq!(
            to_sql(&ts, &json!("2019-05-05 00:00:00 UTC"), TimeUnit::Seconds),
            Ok(SqlValue::Timestamp(expect))
        );
        assert_eq!(
            to_sql(&ts, &Json::Null, TimeUnit::Seconds),
            Ok(SqlValue::Null(ColumnType::Timestamp))
        );
        let err = to_sql(&ts, &json!("some-other-val"), TimeUnit::Seconds).unwrap_err();
        assert!(err.contains("\"some-other-val\" is not a time"), "{err}");
    }

    #[test]
    fn numbers_text_and_booleans() {
        assert_eq!(
            to_sql(&col(ColumnType::Integer), &json!(4.5), TimeUnit::Seconds),
            Ok(SqlValue::Int(4))
        );
        assert_eq!(
            to_sql(&col(ColumnType::BigInt), &json!(" 12 "), TimeUnit::Seconds),
            Ok(SqlValue::Int(12))
        );
        assert!(to_sql(&col(ColumnType::BigInt), &json!("abc"), TimeUnit::Seconds).is_err());
        assert_eq!(
            to_sql(&col(ColumnType::Text), &json!(12), TimeUnit::Seconds),
            Ok(SqlValue::Text("12".into()))
        );
        assert_eq!(
            to_sql(&col(ColumnType::Bool), &json!(0), TimeUnit::Seconds),
            Ok(SqlValue::Bool(false))
        );
        assert_eq!(
            to_sql(&col(ColumnType::Double), &json!("1.5"), TimeUnit::Seconds),
            Ok(SqlValue::Float(1.5))
        );
    }

    #[test]
    fn rows_read_back_are_normalized() {
        let ts = col(ColumnType::Timestamp);
        assert_eq!(
            normalize(&ts, json!("2026-11-28 12:00:00.000000")),
            json!("2026-11-28T12:00:00")
        );
        assert_eq!(
            normalize(&ts, json!("2026-11-28T12:00:00.5")),
            json!("2026-11-28T12:00:00.500")
        );
        assert_eq!(normalize(&col(ColumnType::Bool), json!(1)), json!(true));
        assert_eq!(
            normalize(&col(ColumnType::Binary), json!("00ff41")),
            json!("\u{0}\u{ff}A")
        );
        assert_eq!(
            to_sql(&col(ColumnType::Binary), &json!("\u{0}\u{ff}A"), TimeUnit::Seconds),
            Ok(SqlValue::Bytes(vec![0, 255, 65]))
        );
    }

    #[test]
    fn timestamps_go_to_long_fields_as_numbers() {
        let millis = json!({"type": "long", "logicalType": "timestamp-millis"});
        assert_eq!(
            for_field(&millis, json!("2019-05-05T00:00:00")),
            json!(1_557_014_400_000_i64)
        );
        assert_eq!(
            for_field(&json!(["null", "long"]), json!("2019-05-05T00:00:00")),
            json!(1_557_014_400)
        );
        assert_eq!(
            for_field(&json!("string"), json!("2019-05-05T00:00:00")),
            json!("2019-05-05T00:00:00")
        );
        assert_eq!(for_field(&json!("long"), json!("12")), json!("12"));
    }
}
