//! The dynamic path: a loose JSON-like payload is coerced to its schema and written as Avro binary in one
//! pass, with no intermediate value tree. The coercion rules are those of Deimos (see docs/AVRO.md), with
//! the documented fixes.

use std::borrow::Cow;

use serde_json::Value as Json;

use crate::error::EncodeError;
use crate::graph::{Graph, Node, NodeId, UuidRepr, describe};
use crate::schema::MAX_DECIMAL_PRECISION;

// ---------------------------------------------------------------------------------------------------
// Primitive writers, shared with the serde serializer.

#[inline]
pub(crate) fn write_long(out: &mut Vec<u8>, v: i64) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

#[inline]
pub(crate) fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

#[inline]
pub(crate) fn write_float(out: &mut Vec<u8>, v: f32) {
    out.extend_from_slice(&v.to_le_bytes());
}

#[inline]
pub(crate) fn write_double(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_le_bytes());
}

// ---------------------------------------------------------------------------------------------------
// Errors with paths built while unwinding, so the happy path allocates nothing for them.

pub(crate) fn prefix(e: EncodeError, seg: &str) -> EncodeError {
    let join = |p: String| {
        if p.is_empty() {
            seg.to_string()
        } else if p.starts_with('[') {
            format!("{seg}{p}")
        } else {
            format!("{seg}.{p}")
        }
    };
    match e {
        EncodeError::MissingField { path, expected } => EncodeError::MissingField {
            path: join(path),
            expected,
        },
        EncodeError::Mismatch { path, expected, got } => EncodeError::Mismatch {
            path: join(path),
            expected,
            got,
        },
        EncodeError::Unsupported { path, message } => EncodeError::Unsupported {
            path: join(path),
            message,
        },
    }
}

pub(crate) fn root_path(e: EncodeError) -> EncodeError {
    match e {
        EncodeError::Mismatch { path, expected, got } if path.is_empty() => EncodeError::Mismatch {
            path: "<root>".into(),
            expected,
            got,
        },
        EncodeError::Unsupported { path, message } if path.is_empty() => EncodeError::Unsupported {
            path: "<root>".into(),
            message,
        },
        e => e,
    }
}

fn got(v: &Json) -> String {
    let s = match v {
        Json::Null => return "null".into(),
        Json::Bool(b) => format!("boolean {b}"),
        Json::Number(n) => format!("number {n}"),
        Json::String(s) => format!("string {s:?}"),
        Json::Array(a) => format!("array of {} elements", a.len()),
        Json::Object(o) => format!(
            "object with keys [{}]",
            o.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
        ),
    };
    if s.len() > 120 {
        format!("{}…", &s[..s.char_indices().nth(117).map_or(s.len(), |(i, _)| i)])
    } else {
        s
    }
}

/// Values nested deeper than the decoder accepts are refused when written, so that whatever is written
/// can be read.
pub(crate) fn too_deep() -> EncodeError {
    EncodeError::Unsupported {
        path: String::new(),
        message: format!(
            "values nested deeper than {} levels cannot be read back; flatten the payload",
            crate::de::MAX_DEPTH
        ),
    }
}

pub(crate) fn mismatch(graph: &Graph, node: NodeId, v: &Json) -> EncodeError {
    EncodeError::Mismatch {
        path: String::new(),
        expected: describe(graph, node),
        got: got(v),
    }
}

pub(crate) fn mismatch_msg(graph: &Graph, node: NodeId, got: impl Into<String>) -> EncodeError {
    EncodeError::Mismatch {
        path: String::new(),
        expected: describe(graph, node),
        got: got.into(),
    }
}

// ---------------------------------------------------------------------------------------------------
// Scalar coercions.

/// Ruby `Integer()` on a string: surrounding whitespace, a sign, `0x`/`0b`/`0o` prefixes and `_` between
/// digits. Unlike Ruby, a leading zero does not mean octal.
pub(crate) fn parse_int_str(s: &str) -> Option<i64> {
    let t = s.trim();
    let (neg, body) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let clean: String = digits.chars().filter(|c| *c != '_').collect();
    let mag = u64::from_str_radix(&clean, radix).ok()?;
    if neg {
        if mag == 1u64 << 63 {
            Some(i64::MIN)
        } else {
            i64::try_from(mag).ok().map(|m| -m)
        }
    } else {
        i64::try_from(mag).ok()
    }
}

pub(crate) fn int_of(v: &Json) -> Option<i64> {
    match v {
        Json::Number(n) => n.as_i64(),
        Json::String(s) => parse_int_str(s),
        _ => None,
    }
}

/// Ruby `Float()` on a string: decimal or exponent notation with `_` between digits; not NaN or infinity.
pub(crate) fn parse_float_str(s: &str) -> Option<f64> {
    let t = s.trim();
    let b = t.as_bytes();
    // `_` only between two digits, as Ruby's `Float()` wants.
    let underscores_ok = b.iter().enumerate().all(|(i, c)| {
        *c != b'_' || (i > 0 && i + 1 < b.len() && b[i - 1].is_ascii_digit() && b[i + 1].is_ascii_digit())
    });
    if t.is_empty() || !underscores_ok {
        return None;
    }
    let clean: String = t.chars().filter(|c| *c != '_').collect();
    if !clean
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    clean.parse::<f64>().ok().filter(|f| f.is_finite())
}

fn float_of(v: &Json) -> Option<f64> {
    match v {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => parse_float_str(s),
        _ => None,
    }
}

fn bool_of(v: &Json) -> Option<bool> {
    match v {
        Json::Bool(b) => Some(*b),
        Json::String(s) if s == "true" => Some(true),
        Json::String(s) if s == "false" => Some(false),
        _ => None,
    }
}

fn string_of(v: &Json) -> Option<Cow<'_, str>> {
    match v {
        Json::String(s) => Some(Cow::Borrowed(s)),
        Json::Number(n) => Some(Cow::Owned(n.to_string())),
        Json::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Json::Null => None,
        other => Some(Cow::Owned(other.to_string())),
    }
}

/// Bytes as Avro's JSON encoding writes them (each char is one byte, U+0000..U+00FF) or an array of
/// byte values.
pub(crate) fn bytes_of(v: &Json) -> Option<Cow<'_, [u8]>> {
    match v {
        Json::String(s) => {
            if s.is_ascii() {
                return Some(Cow::Borrowed(s.as_bytes()));
            }
            s.chars()
                .map(|c| u8::try_from(u32::from(c)).ok())
                .collect::<Option<Vec<u8>>>()
                .map(Cow::Owned)
        }
        Json::Array(a) => a
            .iter()
            .map(|x| x.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect::<Option<Vec<u8>>>()
            .map(Cow::Owned),
        _ => None,
    }
}

pub(crate) fn date_of(v: &Json) -> Option<i64> {
    if let Some(i) = int_of(v) {
        return Some(i);
    }
    let s = v.as_str()?.trim();
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
    Some((d - epoch).num_days())
}

pub(crate) fn time_of(v: &Json, per_sec: i64) -> Option<i64> {
    if let Some(i) = int_of(v) {
        return Some(i);
    }
    parse_time_str(v.as_str()?, per_sec)
}

pub(crate) fn parse_time_str(s: &str, per_sec: i64) -> Option<i64> {
    use chrono::Timelike;
    let t = chrono::NaiveTime::parse_from_str(s.trim(), "%H:%M:%S%.f").ok()?;
    let secs = i64::from(t.num_seconds_from_midnight());
    let nanos = i64::from(t.nanosecond() % 1_000_000_000);
    Some(secs * per_sec + nanos / (1_000_000_000 / per_sec))
}

/// Parses an RFC 3339 timestamp (or, for local timestamps, also a date-time without offset) into units
/// of `1/per_sec` seconds since the epoch.
pub(crate) fn parse_timestamp_str(s: &str, per_sec: i64, local: bool) -> Option<i64> {
    let s = s.trim();
    let dt = match chrono::DateTime::parse_from_rfc3339(s) {
        Ok(dt) => dt.naive_utc(),
        Err(_) if local => chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
            .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
            .ok()?,
        Err(_) => return None,
    };
    let utc = dt.and_utc();
    let secs = utc.timestamp();
    let nanos = i64::from(utc.timestamp_subsec_nanos());
    secs.checked_mul(per_sec)?
        .checked_add(nanos / (1_000_000_000 / per_sec))
}

fn timestamp_of(v: &Json, per_sec: i64, local: bool) -> Option<i64> {
    if let Some(i) = int_of(v) {
        return Some(i);
    }
    parse_timestamp_str(v.as_str()?, per_sec, local)
}

/// A decimal string or number as its unscaled value at `scale`; `None` when it has more fractional
/// digits than the scale allows or more digits than the precision.
pub(crate) fn parse_decimal(s: &str, precision: usize, scale: usize) -> Option<i128> {
    let s = s.trim();
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (int_part, frac_part) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let frac_trim = frac_part.trim_end_matches('0');
    if frac_trim.len() > scale {
        return None;
    }
    let int_trim = int_part.trim_start_matches('0');
    if int_trim.len() + scale > precision.min(MAX_DECIMAL_PRECISION) {
        return None;
    }
    let mut digits = String::with_capacity(int_trim.len() + scale);
    digits.push_str(int_trim);
    digits.push_str(frac_trim);
    for _ in frac_trim.len()..scale {
        digits.push('0');
    }
    let mag: i128 = if digits.is_empty() { 0 } else { digits.parse().ok()? };
    Some(if neg { -mag } else { mag })
}

/// Big-endian two's complement: minimal for bytes, sign-extended to `size` for fixed.
pub(crate) fn decimal_bytes(unscaled: i128, fixed: Option<usize>) -> Option<Vec<u8>> {
    let full = unscaled.to_be_bytes();
    let pad = if unscaled < 0 { 0xff } else { 0x00 };
    let mut start = 0;
    while start < 15 && full[start] == pad && (full[start + 1] & 0x80) == (pad & 0x80) {
        start += 1;
    }
    let min = &full[start..];
    match fixed {
        None => Some(min.to_vec()),
        Some(size) if size >= min.len() => {
            let mut v = vec![pad; size - min.len()];
            v.extend_from_slice(min);
            Some(v)
        }
        Some(_) => None,
    }
}

fn decimal_of(v: &Json, precision: usize, scale: usize) -> Option<i128> {
    match v {
        Json::Number(n) => parse_decimal(&n.to_string(), precision, scale),
        Json::String(s) => parse_decimal(s, precision, scale),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------------
// Union branch choice: the first branch of the value's own JSON type (an integer to an int or long, text to a
// string, a boolean to a boolean, as Confluent's serializers pick), else the first branch the value coerces to
// (Deimos 2.x `find_schema_type`, which would send the integer 1 as the string "1" to ["null","string","long"]).

/// Whether `v` is already of the node's type, not only coercible to it.
fn is_exactly(graph: &Graph, node: NodeId, v: &Json) -> bool {
    let kind = match &graph.nodes[node] {
        Node::Boolean => v.is_boolean(),
        Node::Int | Node::Long | Node::Date | Node::TimeMillis | Node::TimeMicros | Node::Timestamp { .. } => {
            v.is_i64() || v.is_u64()
        }
        Node::Float | Node::Double => v.is_number(),
        Node::String | Node::Enum(_) | Node::Uuid(_) => v.is_string(),
        Node::Array(_) => v.is_array(),
        Node::Map(_) | Node::Record(_) => v.is_object(),
        _ => false,
    };
    kind && fits(graph, node, v)
}

fn fits(graph: &Graph, node: NodeId, v: &Json) -> bool {
    match &graph.nodes[node] {
        Node::Null => v.is_null(),
        Node::Boolean => bool_of(v).is_some(),
        Node::Int => int_of(v).is_some_and(|i| i32::try_from(i).is_ok()),
        Node::Long => int_of(v).is_some(),
        Node::Float => float_of(v).is_some_and(|f| (f as f32).is_finite()),
        Node::Double => float_of(v).is_some(),
        Node::String => matches!(v, Json::String(_) | Json::Number(_) | Json::Bool(_)),
        // In a union an array is an array: only a string picks a bytes-like branch.
        Node::Bytes => v.is_string() && bytes_of(v).is_some(),
        Node::Fixed { size, .. } => v.is_string() && bytes_of(v).is_some_and(|b| b.len() == *size),
        Node::Duration => v.is_string() && bytes_of(v).is_some_and(|b| b.len() == 12),
        Node::Enum(e) => v.as_str().is_some_and(|s| e.index(s).is_some()),
        Node::Array(_) => v.is_array(),
        Node::Map(_) => v.is_object(),
        Node::Record(r) => v
            .as_object()
            .is_some_and(|o| o.keys().all(|k| r.lookup.contains_key(k))),
        Node::Union(_) => false,
        Node::Date => date_of(v).is_some_and(|d| i32::try_from(d).is_ok()),
        Node::TimeMillis => time_of(v, 1_000).is_some_and(|t| i32::try_from(t).is_ok()),
        Node::TimeMicros => time_of(v, 1_000_000).is_some(),
        Node::Timestamp { unit, local } => timestamp_of(v, *unit, *local).is_some(),
        Node::Uuid(_) => v.as_str().is_some_and(|s| uuid::Uuid::parse_str(s).is_ok()),
        Node::Decimal { precision, scale, .. } => decimal_of(v, *precision, *scale).is_some(),
    }
}

// ---------------------------------------------------------------------------------------------------
// The walker.

/// Coerces `v` to the schema node and writes it. Union defaults take the first branch (`defaults`).
fn write(
    graph: &Graph,
    node: NodeId,
    v: &Json,
    out: &mut Vec<u8>,
    defaults: bool,
    depth: usize,
) -> Result<(), EncodeError> {
    if depth > crate::de::MAX_DEPTH {
        return Err(too_deep());
    }
    match &graph.nodes[node] {
        Node::Null => {
            if !v.is_null() {
                return Err(mismatch(graph, node, v));
            }
        }
        Node::Boolean => out.push(u8::from(bool_of(v).ok_or_else(|| mismatch(graph, node, v))?)),
        Node::Int => write_int(graph, node, out, int_of(v).ok_or_else(|| mismatch(graph, node, v))?)?,
        Node::Long => write_long(out, int_of(v).ok_or_else(|| mismatch(graph, node, v))?),
        Node::Float => {
            let f = float_of(v).ok_or_else(|| mismatch(graph, node, v))?;
            if f.is_finite() && !(f as f32).is_finite() {
                return Err(mismatch_msg(
                    graph,
                    node,
                    format!("{f}, which is out of the float range"),
                ));
            }
            write_float(out, f as f32)
        }
        Node::Double => write_double(out, float_of(v).ok_or_else(|| mismatch(graph, node, v))?),
        Node::String => write_bytes(out, string_of(v).ok_or_else(|| mismatch(graph, node, v))?.as_bytes()),
        Node::Bytes => write_bytes(out, &bytes_of(v).ok_or_else(|| mismatch(graph, node, v))?),
        Node::Fixed { size, .. } => {
            let b = bytes_of(v).ok_or_else(|| mismatch(graph, node, v))?;
            if b.len() != *size {
                return Err(mismatch_msg(graph, node, format!("{} bytes", b.len())));
            }
            out.extend_from_slice(&b);
        }
        Node::Duration => {
            let b = bytes_of(v).ok_or_else(|| mismatch(graph, node, v))?;
            if b.len() != 12 {
                return Err(mismatch_msg(
                    graph,
                    node,
                    format!("{} bytes (a duration is 12)", b.len()),
                ));
            }
            out.extend_from_slice(&b);
        }
        Node::Enum(e) => {
            let s = v.as_str().ok_or_else(|| mismatch(graph, node, v))?;
            let i = e.index(s).ok_or_else(|| mismatch(graph, node, v))?;
            write_long(out, i as i64);
        }
        Node::Array(items) => {
            let a = v.as_array().ok_or_else(|| mismatch(graph, node, v))?;
            if !a.is_empty() {
                write_long(out, a.len() as i64);
                for (i, x) in a.iter().enumerate() {
                    write(graph, *items, x, out, defaults, depth + 1).map_err(|e| prefix(e, &format!("[{i}]")))?;
                }
            }
            out.push(0);
        }
        Node::Map(values) => {
            let m = v.as_object().ok_or_else(|| mismatch(graph, node, v))?;
            if !m.is_empty() {
                write_long(out, m.len() as i64);
                for (k, x) in m {
                    write_bytes(out, k.as_bytes());
                    write(graph, *values, x, out, defaults, depth + 1).map_err(|e| prefix(e, k))?;
                }
            }
            out.push(0);
        }
        Node::Record(r) => {
            let m = v.as_object().ok_or_else(|| mismatch(graph, node, v))?;
            for f in &r.fields {
                match m.get(&f.name) {
                    Some(x) => write(graph, f.node, x, out, defaults, depth + 1).map_err(|e| prefix(e, &f.name))?,
                    None => match &f.default_bytes {
                        Some(b) => out.extend_from_slice(b),
                        None => {
                            return Err(EncodeError::MissingField {
                                path: f.name.clone(),
                                expected: describe(graph, f.node),
                            });
                        }
                    },
                }
            }
        }
        Node::Union(branches) => {
            let pick = if defaults {
                Some(0)
            } else if v.is_null() {
                branches.iter().position(|b| matches!(graph.nodes[*b], Node::Null))
            } else {
                let not_null = |b: &&NodeId| !matches!(graph.nodes[**b], Node::Null);
                branches
                    .iter()
                    .filter(not_null)
                    .position(|b| is_exactly(graph, *b, v))
                    .or_else(|| branches.iter().filter(not_null).position(|b| fits(graph, *b, v)))
                    .and_then(|i| {
                        let chosen = branches.iter().filter(not_null).nth(i)?;
                        branches.iter().position(|b| b == chosen)
                    })
            };
            let i = pick.ok_or_else(|| mismatch(graph, node, v))?;
            write_long(out, i as i64);
            write(graph, branches[i], v, out, defaults, depth + 1)?;
        }
        Node::Date => write_int(graph, node, out, date_of(v).ok_or_else(|| mismatch(graph, node, v))?)?,
        Node::TimeMillis => write_int(
            graph,
            node,
            out,
            time_of(v, 1_000).ok_or_else(|| mismatch(graph, node, v))?,
        )?,
        Node::TimeMicros => write_long(out, time_of(v, 1_000_000).ok_or_else(|| mismatch(graph, node, v))?),
        Node::Timestamp { unit, local } => write_long(
            out,
            timestamp_of(v, *unit, *local).ok_or_else(|| mismatch(graph, node, v))?,
        ),
        Node::Uuid(repr) => {
            let s = v.as_str().ok_or_else(|| mismatch(graph, node, v))?;
            let u = uuid::Uuid::parse_str(s).map_err(|_| mismatch(graph, node, v))?;
            match repr {
                UuidRepr::String => write_bytes(out, s.as_bytes()),
                UuidRepr::Fixed => out.extend_from_slice(u.as_bytes()),
            }
        }
        Node::Decimal {
            precision,
            scale,
            fixed,
        } => {
            let unscaled = decimal_of(v, *precision, *scale)
                .ok_or_else(|| mismatch_msg(graph, node, format!("{} (not a decimal that fits)", got(v))))?;
            let b = decimal_bytes(unscaled, *fixed)
                .ok_or_else(|| mismatch_msg(graph, node, format!("{} (too large for the fixed size)", got(v))))?;
            match fixed {
                None => write_bytes(out, &b),
                Some(_) => out.extend_from_slice(&b),
            }
        }
    }
    Ok(())
}

/// Writes a value of an int-based type, refusing values outside 32 bits.
fn write_int(graph: &Graph, node: NodeId, out: &mut Vec<u8>, i: i64) -> Result<(), EncodeError> {
    if i32::try_from(i).is_err() {
        return Err(mismatch_msg(graph, node, format!("{i}, which is out of the int range")));
    }
    write_long(out, i);
    Ok(())
}

/// Writes a field default (Avro's JSON default rules: a union default is for its first branch).
pub(crate) fn encode_default(graph: &Graph, node: NodeId, v: &Json, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    write(graph, node, v, out, true, 0)
}

/// Coerces and writes a loose payload.
pub(crate) fn encode_loose(graph: &Graph, v: &Json, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    write(graph, 0, v, out, false, 0).map_err(root_path)
}
