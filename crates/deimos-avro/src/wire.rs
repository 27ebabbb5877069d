//! The Confluent wire format: byte 0 is the magic byte `0x00`, bytes 1–4 the schema id (big-endian), then
//! the Avro binary encoding of the value.

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

#[cfg(test)]
mod tests {
    use super::*;

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
