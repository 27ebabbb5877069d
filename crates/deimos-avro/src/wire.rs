//! The Confluent wire format: byte 0 is the magic byte `0x00`, bytes 1–4 the schema id (big-endian), then
//! the Avro binary encoding of the value — except for a top-level `"bytes"` schema, whose value Confluent's
//! serializers (Java and Python) write as it is, without Avro's length prefix ([`is_raw`]).

use std::borrow::Cow;

use crate::AvroSchema;
use crate::error::DecodeError;

/// The magic byte that starts every Confluent-framed message.
pub const MAGIC_BYTE: u8 = 0;

/// Length of the frame header (magic byte + schema id).
pub const HEADER_LEN: usize = 5;

/// Appends the frame header for `schema_id`.
pub fn write_header(schema_id: u32, out: &mut Vec<u8>) {
    out.push(MAGIC_BYTE);
    out.extend_from_slice(&schema_id.to_be_bytes());
}

/// Frames an already-encoded Avro payload.
pub fn frame(schema_id: u32, avro: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + avro.len());
    write_header(schema_id, &mut out);
    out.extend_from_slice(avro);
    out
}

/// Splits a framed message into its schema id and the Avro payload.
pub fn parse_header(message: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    match message {
        [] => Err(DecodeError::Truncated(
            "empty message: expected a Confluent frame (a tombstone has no value at all)".into(),
        )),
        [m, ..] if *m != MAGIC_BYTE => Err(DecodeError::BadMagic { found: *m }),
        [_, a, b, c, d, rest @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), rest)),
        _ => Err(DecodeError::Truncated(format!(
            "{} bytes is shorter than the 5-byte Confluent frame header",
            message.len()
        ))),
    }
}

/// Whether a framed value of this schema is written raw after the header: a plain top-level `"bytes"` schema
/// (no logical type), as Confluent's serializers write and read it.
pub fn is_raw(schema: &AvroSchema) -> bool {
    schema.canonical_json() == r#""bytes""#
}

/// The Avro encoding of a frame's body written with `writer`: the body itself, or, for a raw `"bytes"` value,
/// the body with Avro's length prefix, ready for a [`ResolvedPlan`](crate::ResolvedPlan).
pub fn avro_body<'a>(writer: &AvroSchema, body: &'a [u8]) -> Cow<'a, [u8]> {
    if !is_raw(writer) {
        return Cow::Borrowed(body);
    }
    let mut out = Vec::with_capacity(body.len() + 10);
    crate::encode::write_long(&mut out, i64::try_from(body.len()).unwrap_or(i64::MAX));
    out.extend_from_slice(body);
    Cow::Owned(out)
}

/// Turns the Avro encoding of a `schema` value at `out[start..]` into what a frame carries: for a raw `"bytes"`
/// value, the bytes without Avro's length prefix; anything else as it is.
pub fn to_frame_body(schema: &AvroSchema, out: &mut Vec<u8>, start: usize) {
    if !is_raw(schema) {
        return;
    }
    // Skip the zig-zag varint length.
    let mut len = 0;
    while let Some(b) = out.get(start + len) {
        len += 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    out.drain(start..start + len);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]
    use super::*;

    #[test]
    fn plain_bytes_are_framed_raw_as_confluent_does() {
        let bytes = AvroSchema::parse(r#""bytes""#).unwrap_or_else(|e| panic!("{e}"));
        let decimal = AvroSchema::parse(r#"{"type":"bytes","logicalType":"decimal","precision":4,"scale":2}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(is_raw(&bytes) && !is_raw(&decimal));
        let value = vec![7u8; 200];
        let mut out = vec![0, 0, 0, 0, 1];
        bytes
            .encode_into(&serde_bytes_like(&value), &mut out)
            .unwrap_or_else(|e| panic!("{e}"));
        to_frame_body(&bytes, &mut out, HEADER_LEN);
        assert_eq!(&out[HEADER_LEN..], &value[..], "no length prefix");
        let body = avro_body(&bytes, &out[HEADER_LEN..]);
        let back: serde_json::Value = bytes.decode_value(&body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.as_str().map(|s| s.chars().count()), Some(200));
    }

    fn serde_bytes_like(v: &[u8]) -> serde_json::Value {
        serde_json::Value::String(v.iter().map(|b| char::from(*b)).collect())
    }

    #[test]
    fn frames_round_trip() {
        let f = frame(258, &[7, 8]);
        assert_eq!(f, vec![0, 0, 0, 1, 2, 7, 8]);
        assert_eq!(parse_header(&f), Ok((258, &[7u8, 8][..])));
    }

    #[test]
    fn bad_frames_are_errors() {
        assert_eq!(parse_header(&[1, 0, 0, 0, 1]), Err(DecodeError::BadMagic { found: 1 }));
        assert!(matches!(parse_header(&[0, 0, 1]), Err(DecodeError::Truncated(_))));
        assert!(matches!(parse_header(&[]), Err(DecodeError::Truncated(_))));
    }
}
