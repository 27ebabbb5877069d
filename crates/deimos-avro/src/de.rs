//! Decoding: a serde `Deserializer` that reads Avro binary through a [`ResolvedPlan`], straight into a
//! Rust type (typed path) or into a `serde_json::Value` (dynamic path).

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use crate::error::DecodeError;
use crate::graph::{Graph, Node, NodeId};
use crate::resolve::{PlanInner, Present, Prim, RField, Step, StepId};

type Result<T> = std::result::Result<T, DeError>;

/// A [`DecodeError`] boxed, so that every result on the hot path stays two words wide; unboxed at the
/// public boundary ([`decode`]).
#[derive(Debug)]
pub(crate) struct DeError(Box<DecodeError>);

impl std::fmt::Display for DeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    #[cold]
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        DeError(Box::new(DecodeError::Type(msg.to_string())))
    }
}

impl From<DecodeError> for DeError {
    #[cold]
    fn from(e: DecodeError) -> Self {
        DeError(Box::new(e))
    }
}

/// How deep values may nest. Deeper data is refused rather than risking the stack (serde_json's limit is
/// 128; a debug build's 2 MiB test-thread stack holds about this many levels of visitors).
pub(crate) const MAX_DEPTH: usize = 64;

/// The most values one message may decode into (or skip): every record field, array item and map value
/// counts, including those that take no bytes (`null`, empty records) and those filled in from defaults.
pub const MAX_DECODED_VALUES: usize = 4_000_000;

#[cold]
fn too_deep() -> DeError {
    corrupt(format!("values nested deeper than {MAX_DEPTH} levels"))
}

#[cold]
fn too_many_values() -> DeError {
    DecodeError::TooManyValues {
        path: String::new(),
        limit: MAX_DECODED_VALUES,
    }
    .into()
}

#[cold]
fn corrupt(msg: impl Into<String>) -> DeError {
    DecodeError::Corrupt {
        path: String::new(),
        message: msg.into(),
    }
    .into()
}

#[cold]
fn at(mut e: DeError, seg: &str) -> DeError {
    if let DecodeError::Corrupt { path, .. } | DecodeError::TooManyValues { path, .. } = &mut *e.0 {
        *path = if path.is_empty() {
            seg.to_string()
        } else if path.starts_with('[') {
            format!("{seg}{path}")
        } else {
            format!("{seg}.{path}")
        };
    }
    e
}

/// A cursor over the input bytes.
pub(crate) struct Reader<'b> {
    buf: &'b [u8],
    pos: usize,
    /// Array and map items still allowed by the size of the input. Items may take no bytes (`null`, an empty
    /// record), so without a budget a small message could announce billions of them; the budget keeps the
    /// number of items linear in the input size.
    items: usize,
    /// Values (record fields, array items, map values) still allowed in the whole message, whatever their size:
    /// values from defaults and fields that take no bytes count too. Shared with the readers of defaults.
    values: usize,
}

impl<'b> Reader<'b> {
    pub(crate) fn new(buf: &'b [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            items: buf.len().saturating_mul(8).saturating_add(1024),
            values: MAX_DECODED_VALUES,
        }
    }

    /// A reader of a default's encoding, inside a message with `values` values left. A default comes from the
    /// schema, so its item count is not bounded by its size, only by the message's budget of values.
    fn for_default(buf: &'b [u8], values: usize) -> Self {
        Reader {
            buf,
            pos: 0,
            items: usize::MAX,
            values,
        }
    }

    /// Takes `n` values from the message's budget.
    #[inline]
    fn count(&mut self, n: usize) -> Result<()> {
        match self.values.checked_sub(n) {
            Some(left) => {
                self.values = left;
                Ok(())
            }
            None => Err(too_many_values()),
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    #[inline]
    fn byte(&mut self) -> Result<u8> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| DeError::from(DecodeError::Truncated("the data ended inside a value".into())))?;
        self.pos += 1;
        Ok(b)
    }

    #[inline]
    pub(crate) fn long(&mut self) -> Result<i64> {
        // Most values fit one byte.
        if let Some(&b) = self.buf.get(self.pos)
            && b < 0x80
        {
            self.pos += 1;
            return Ok(i64::from(b >> 1) ^ -i64::from(b & 1));
        }
        self.long_slow()
    }

    fn long_slow(&mut self) -> Result<i64> {
        let mut n: u64 = 0;
        let mut shift = 0;
        loop {
            let b = self.byte()?;
            if shift == 63 && b > 1 {
                return Err(corrupt("variable-length integer overflows 64 bits"));
            }
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err(corrupt("variable-length integer is longer than 10 bytes"));
            }
        }
        Ok(((n >> 1) as i64) ^ -((n & 1) as i64))
    }

    fn int(&mut self) -> Result<i32> {
        let v = self.long()?;
        i32::try_from(v).map_err(|_| corrupt(format!("int value {v} out of range")))
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'b [u8]> {
        if n > self.remaining() {
            return Err(DeError::from(DecodeError::Truncated(format!(
                "{n} bytes needed, {} left",
                self.remaining()
            ))));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    #[inline]
    fn len(&mut self) -> Result<usize> {
        let n = self.long()?;
        usize::try_from(n).map_err(|_| corrupt(format!("negative length {n}")))
    }

    #[inline]
    fn bytes(&mut self) -> Result<&'b [u8]> {
        let n = self.len()?;
        self.take(n)
    }

    #[inline]
    fn float(&mut self) -> Result<f32> {
        let b = self.take(4)?;
        Ok(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    #[inline]
    fn double(&mut self) -> Result<f64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_le_bytes(a))
    }

    /// The item count of the next array or map block (0 ends), bounded by the data left.
    fn block(&mut self) -> Result<usize> {
        let n = self.long()?;
        let n = if n < 0 {
            self.long()?; // block size in bytes, not needed
            n.unsigned_abs()
        } else {
            n as u64
        };
        let n = usize::try_from(n).map_err(|_| corrupt("block count too large"))?;
        if n > self.items {
            return Err(corrupt(format!(
                "a block of {n} items is more than a {}-byte message can hold",
                self.buf.len()
            )));
        }
        self.count(n)?;
        self.items -= n;
        Ok(n)
    }

    /// Skips a value of a writer node.
    pub(crate) fn skip(&mut self, g: &Graph, node: NodeId, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(too_deep());
        }
        match &g.nodes[node] {
            Node::Null => {}
            Node::Boolean => {
                self.byte()?;
            }
            Node::Int
            | Node::Long
            | Node::Enum(_)
            | Node::Date
            | Node::TimeMillis
            | Node::TimeMicros
            | Node::Timestamp { .. } => {
                self.long()?;
            }
            Node::Float => {
                self.take(4)?;
            }
            Node::Double => {
                self.take(8)?;
            }
            Node::Bytes
            | Node::String
            | Node::Uuid(crate::graph::UuidRepr::String)
            | Node::Decimal { fixed: None, .. } => {
                self.bytes()?;
            }
            Node::Fixed { size, .. } | Node::Decimal { fixed: Some(size), .. } => {
                self.take(*size)?;
            }
            Node::Uuid(_) => {
                self.take(16)?;
            }
            Node::Duration => {
                self.take(12)?;
            }
            Node::Record(r) => {
                self.count(r.fields.len())?;
                for f in &r.fields {
                    self.skip(g, f.node, depth + 1)?;
                }
            }
            Node::Array(items) => loop {
                let n = self.block()?;
                if n == 0 {
                    break;
                }
                for _ in 0..n {
                    self.skip(g, *items, depth + 1)?;
                }
            },
            Node::Map(values) => loop {
                let n = self.block()?;
                if n == 0 {
                    break;
                }
                for _ in 0..n {
                    self.bytes()?;
                    self.skip(g, *values, depth + 1)?;
                }
            },
            Node::Union(b) => {
                let i = self.long()?;
                let branch = usize::try_from(i)
                    .ok()
                    .and_then(|i| b.get(i))
                    .ok_or_else(|| corrupt(format!("union branch {i} out of range")))?;
                self.skip(g, *branch, depth + 1)?;
            }
        }
        Ok(())
    }
}

/// Deserializes one value of the plan step `step` from the reader.
pub(crate) struct De<'r, 'b, 'p> {
    pub(crate) r: &'r mut Reader<'b>,
    pub(crate) plan: &'p PlanInner,
    pub(crate) step: StepId,
    pub(crate) depth: usize,
    /// Set when `deserialize_option` has read the index of a union and this is its non-null branch (with the
    /// reader's branch name, if known): an `Option<Enum>` of a union with several non-null branches then
    /// reads the enum's variant from it.
    pub(crate) branch: Option<Option<&'p str>>,
}

fn latin1(b: &[u8]) -> String {
    b.iter().map(|c| char::from(*c)).collect()
}

#[inline]
fn utf8(b: &[u8]) -> Result<String> {
    String::from_utf8(b.to_vec()).map_err(|_| corrupt("string is not valid UTF-8"))
}

fn format_decimal(b: &[u8], scale: usize) -> Result<String> {
    let neg = b.first().is_some_and(|x| x & 0x80 != 0);
    // Wider than an i128: the leading bytes must be sign extension, then the last 16 hold the value.
    let b = if b.len() > 16 {
        let (ext, rest) = b.split_at(b.len() - 16);
        let pad = if neg { 0xff } else { 0x00 };
        if ext.iter().any(|x| *x != pad) || (rest[0] & 0x80 != 0) != neg {
            return Err(corrupt("decimal does not fit in 128 bits"));
        }
        rest
    } else {
        b
    };
    let mut v: i128 = if neg { -1 } else { 0 };
    for x in b.iter().take(16) {
        v = (v << 8) | i128::from(*x);
    }
    let digits = v.unsigned_abs().to_string();
    let s = if scale == 0 {
        digits
    } else if digits.len() > scale {
        format!(
            "{}.{}",
            &digits[..digits.len() - scale],
            &digits[digits.len() - scale..]
        )
    } else {
        format!("0.{}{}", "0".repeat(scale - digits.len()), digits)
    };
    Ok(if neg { format!("-{s}") } else { s })
}

/// RFC 3339 in UTC (`…Z`), or without a zone for a local timestamp (what chrono's `NaiveDateTime` reads).
fn format_timestamp(v: i64, unit: i64, local: bool) -> String {
    let secs = v.div_euclid(unit);
    let sub = v.rem_euclid(unit);
    let nanos = u32::try_from(sub * (1_000_000_000 / unit)).unwrap_or_default();
    match chrono::DateTime::from_timestamp(secs, nanos) {
        Some(dt) if local => {
            let digits = match unit {
                1_000 => "%.3f",
                1_000_000 => "%.6f",
                _ => "%.9f",
            };
            dt.naive_utc().format(&format!("%Y-%m-%dT%H:%M:%S{digits}")).to_string()
        }
        Some(dt) => dt.to_rfc3339_opts(
            match unit {
                1_000 => chrono::SecondsFormat::Millis,
                1_000_000 => chrono::SecondsFormat::Micros,
                _ => chrono::SecondsFormat::Nanos,
            },
            true,
        ),
        None => v.to_string(),
    }
}

fn format_date(days: i64) -> String {
    chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|e| e.checked_add_signed(chrono::TimeDelta::days(days)))
        .map_or_else(|| days.to_string(), |d| d.format("%Y-%m-%d").to_string())
}

fn format_time(v: i64, per_sec: i64) -> String {
    let secs = v.div_euclid(per_sec);
    let sub = v.rem_euclid(per_sec) * (1_000_000_000 / per_sec);
    chrono::NaiveTime::from_num_seconds_from_midnight_opt(
        u32::try_from(secs).unwrap_or(u32::MAX),
        u32::try_from(sub).unwrap_or_default(),
    )
    .map_or_else(|| v.to_string(), |t| t.format("%H:%M:%S%.f").to_string())
}

fn uuid_string(b: &[u8]) -> Result<String> {
    uuid::Uuid::from_slice(b)
        .map(|u| u.hyphenated().to_string())
        .map_err(|e| corrupt(e.to_string()))
}

/// A scalar value read from the input, before presentation.
enum Scalar<'b> {
    Null,
    Bool(bool),
    Int(i32),
    Long(i64),
    Float(f32),
    Double(f64),
    Bytes(&'b [u8]),
    Str(&'b [u8]),
}

impl<'r, 'b, 'p> De<'r, 'b, 'p> {
    #[inline]
    fn child<'s>(&'s mut self, step: StepId) -> Result<De<'s, 'b, 'p>> {
        if self.depth > MAX_DEPTH {
            return Err(too_deep());
        }
        Ok(De {
            r: self.r,
            plan: self.plan,
            step,
            depth: self.depth + 1,
            branch: None,
        })
    }

    fn step(&self) -> &'p Step {
        &self.plan.steps[self.step]
    }

    fn read_scalar(&mut self, from: Prim, to: Prim) -> Result<Scalar<'b>> {
        let v = match from {
            Prim::Null => Scalar::Null,
            Prim::Boolean => match self.r.byte()? {
                0 => Scalar::Bool(false),
                1 => Scalar::Bool(true),
                b => return Err(corrupt(format!("boolean byte {b:#04x}"))),
            },
            Prim::Int => Scalar::Int(self.r.int()?),
            Prim::Long => Scalar::Long(self.r.long()?),
            Prim::Float => Scalar::Float(self.r.float()?),
            Prim::Double => Scalar::Double(self.r.double()?),
            Prim::Bytes => Scalar::Bytes(self.r.bytes()?),
            Prim::String => Scalar::Str(self.r.bytes()?),
        };
        Ok(match (v, to) {
            (Scalar::Int(i), Prim::Long) => Scalar::Long(i64::from(i)),
            (Scalar::Int(i), Prim::Float) => Scalar::Float(i as f32),
            (Scalar::Int(i), Prim::Double) => Scalar::Double(f64::from(i)),
            (Scalar::Long(i), Prim::Float) => Scalar::Float(i as f32),
            (Scalar::Long(i), Prim::Double) => Scalar::Double(i as f64),
            (Scalar::Float(f), Prim::Double) => Scalar::Double(f64::from(f)),
            (Scalar::Str(s), Prim::Bytes) => Scalar::Bytes(s),
            (Scalar::Bytes(s), Prim::String) => Scalar::Str(s),
            (v, _) => v,
        })
    }

    /// Reads the writer union index and returns the branch step (and the reader branch name).
    fn union_branch(
        &mut self,
        branches: &'p [std::result::Result<(StepId, Option<String>), String>],
    ) -> Result<(StepId, Option<&'p str>)> {
        let i = self.r.long()?;
        let b = usize::try_from(i)
            .ok()
            .and_then(|i| branches.get(i))
            .ok_or_else(|| corrupt(format!("union branch {i} out of range")))?;
        match b {
            Ok((s, name)) => Ok((*s, name.as_deref())),
            Err(e) => Err(DeError::from(DecodeError::Resolve(crate::ResolveError {
                writer: self.plan.writer.name().unwrap_or("union").to_string(),
                reader: self.plan.reader.name().unwrap_or("union").to_string(),
                message: format!("the data uses a union branch the reader cannot read: {e}"),
            }))),
        }
    }

    fn enum_symbol(&mut self) -> Result<&'p str> {
        let Step::Enum {
            symbols,
            map,
            writer_symbols,
            name,
        } = self.step()
        else {
            return Err(corrupt("not an enum"));
        };
        let i = self.r.long()?;
        let wi = usize::try_from(i)
            .ok()
            .filter(|i| *i < map.len())
            .ok_or_else(|| corrupt(format!("enum index {i} out of range")))?;
        match map[wi] {
            Some(ri) => Ok(symbols[ri].as_str()),
            None => Err(DeError::from(DecodeError::Resolve(crate::ResolveError {
                writer: name.clone(),
                reader: name.clone(),
                message: format!(
                    "symbol `{}` is unknown to the reader's enum, which has no default",
                    writer_symbols[wi]
                ),
            }))),
        }
    }

    fn visit_present<'de, V: Visitor<'de>>(
        &mut self,
        from: Prim,
        to: Prim,
        present: Present,
        v: V,
        hint: Hint,
    ) -> Result<V::Value> {
        let s = self.read_scalar(from, to)?;
        match (s, present) {
            (Scalar::Null, _) => v.visit_unit(),
            (Scalar::Bool(b), _) => v.visit_bool(b),
            (Scalar::Int(i), Present::Date) if hint == Hint::Str => v.visit_string(format_date(i64::from(i))),
            (Scalar::Int(i), Present::TimeMillis) if hint == Hint::Str => {
                v.visit_string(format_time(i64::from(i), 1_000))
            }
            (Scalar::Int(i), _) => v.visit_i32(i),
            (Scalar::Long(i), Present::Timestamp { unit, local }) if hint == Hint::Str => {
                v.visit_string(format_timestamp(i, unit, local))
            }
            (Scalar::Long(i), Present::TimeMicros) if hint == Hint::Str => v.visit_string(format_time(i, 1_000_000)),
            (Scalar::Long(i), _) => v.visit_i64(i),
            (Scalar::Float(f), _) => v.visit_f32(f),
            (Scalar::Double(f), _) => v.visit_f64(f),
            (Scalar::Bytes(b), Present::Decimal { scale }) => match hint {
                Hint::Bytes => v.visit_bytes(b),
                Hint::Float => v.visit_f64(format_decimal(b, scale)?.parse().unwrap_or(f64::NAN)),
                _ => v.visit_string(format_decimal(b, scale)?),
            },
            (Scalar::Bytes(b), _) => match hint {
                Hint::Bytes => v.visit_bytes(b),
                Hint::Seq => v.visit_seq(de::value::SeqDeserializer::new(b.iter().copied())),
                _ => v.visit_string(latin1(b)),
            },
            (Scalar::Str(b), _) => match hint {
                Hint::Bytes => v.visit_bytes(b),
                _ => v.visit_string(utf8(b)?),
            },
        }
    }

    fn visit_fixed<'de, V: Visitor<'de>>(
        &mut self,
        size: usize,
        present: Present,
        v: V,
        hint: Hint,
    ) -> Result<V::Value> {
        let b = self.r.take(size)?;
        match (present, hint) {
            (_, Hint::Bytes) => v.visit_bytes(b),
            (_, Hint::Seq) => v.visit_seq(de::value::SeqDeserializer::new(b.iter().copied())),
            (Present::Uuid, _) => v.visit_string(uuid_string(b)?),
            (Present::Decimal { scale }, Hint::Float) => {
                v.visit_f64(format_decimal(b, scale)?.parse().unwrap_or(f64::NAN))
            }
            (Present::Decimal { scale }, _) => v.visit_string(format_decimal(b, scale)?),
            _ => v.visit_string(latin1(b)),
        }
    }

    fn any<'de, V: Visitor<'de>>(mut self, v: V, hint: Hint) -> Result<V::Value> {
        match self.step() {
            Step::Scalar { from, to, present } => self.visit_present(*from, *to, *present, v, hint),
            Step::Fixed { size, present } => self.visit_fixed(*size, *present, v, hint),
            Step::Record { fields, defaults, .. } => {
                self.r.count(fields.len() + defaults.len())?;
                v.visit_map(RecordAccess {
                    de: self,
                    fields,
                    defaults,
                    i: 0,
                    key: None,
                })
            }
            Step::Enum { .. } => {
                let s = self.enum_symbol()?;
                v.visit_str(s)
            }
            Step::Array(items) => {
                let items = *items;
                v.visit_seq(ArrayAccess {
                    de: self,
                    items,
                    left: 0,
                    done: false,
                    i: 0,
                })
            }
            Step::Map(values) => {
                let values = *values;
                v.visit_map(MapAccess {
                    de: self,
                    values,
                    left: 0,
                    done: false,
                    key: String::new(),
                })
            }
            Step::Union(branches) => {
                let (s, _) = self.union_branch(branches)?;
                self.child(s)?.any(v, hint)
            }
            Step::Branch { step, .. } => {
                let s = *step;
                self.child(s)?.any(v, hint)
            }
            Step::Pending => Err(corrupt("incomplete resolution plan")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hint {
    Any,
    Str,
    Bytes,
    Seq,
    Float,
}

macro_rules! forward_any {
    ($($f:ident),*) => {$(
        fn $f<V: Visitor<'de>>(self, v: V) -> Result<V::Value> { self.deserialize_any(v) }
    )*};
}

impl<'de> de::Deserializer<'de> for De<'_, '_, '_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        self.any(v, Hint::Any)
    }
    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        self.deserialize_string(v)
    }
    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        // Fast path: a plain string read as a string.
        if let Step::Scalar {
            from: Prim::String,
            to: Prim::String,
            present: Present::Plain | Present::Uuid,
        } = self.plan.steps[self.step]
        {
            let b = self.r.bytes()?;
            return v.visit_string(utf8(b)?);
        }
        self.any(v, Hint::Str)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        // Fast path: a long, or an int promoted to a long (the same varint).
        if let Step::Scalar {
            from: Prim::Long | Prim::Int,
            to: Prim::Long,
            present: Present::Plain,
        } = self.plan.steps[self.step]
        {
            return v.visit_i64(self.r.long()?);
        }
        self.any(v, Hint::Any)
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        self.any(v, Hint::Bytes)
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        self.any(v, Hint::Bytes)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        self.any(v, Hint::Seq)
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value> {
        self.any(v, Hint::Seq)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(self, _n: &'static str, _len: usize, v: V) -> Result<V::Value> {
        self.any(v, Hint::Seq)
    }
    fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        self.any(v, Hint::Float)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        if let Step::Scalar {
            from: Prim::Double,
            to: Prim::Double,
            ..
        } = self.plan.steps[self.step]
        {
            return v.visit_f64(self.r.double()?);
        }
        self.any(v, Hint::Float)
    }
    fn deserialize_option<V: Visitor<'de>>(mut self, v: V) -> Result<V::Value> {
        let (mut target, mut branch) = match self.step() {
            Step::Union(branches) => {
                let (step, name) = self.union_branch(branches)?;
                (step, Some(name))
            }
            _ => (self.step, None),
        };
        while let Step::Branch { step, name } = &self.plan.steps[target] {
            target = *step;
            branch = Some(Some(name.as_str()));
        }
        if matches!(self.plan.steps[target], Step::Scalar { from: Prim::Null, .. }) {
            v.visit_none()
        } else {
            let mut child = self.child(target)?;
            child.branch = branch;
            v.visit_some(child)
        }
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _n: &'static str, v: V) -> Result<V::Value> {
        v.visit_newtype_struct(self)
    }
    fn deserialize_enum<V: Visitor<'de>>(
        mut self,
        _n: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value> {
        // The non-null branch of an optional union, read into an enum with a variant per branch.
        if let Some(name) = self.branch.take().filter(|_| !matches!(self.step(), Step::Enum { .. })) {
            let name = name.map_or_else(|| variant_name(&self.plan.steps[self.step]), title);
            if variants.contains(&name.as_str()) {
                return v.visit_enum(UnionAccess { de: self, name });
            }
        }
        match self.step() {
            Step::Union(branches) => {
                let (step, name) = self.union_branch(branches)?;
                let name = name.map_or_else(|| variant_name(&self.plan.steps[step]), title);
                v.visit_enum(UnionAccess {
                    de: self.child(step)?,
                    name,
                })
            }
            Step::Branch { step, name } => {
                let (step, name) = (*step, title(name));
                v.visit_enum(UnionAccess {
                    de: self.child(step)?,
                    name,
                })
            }
            Step::Enum { .. } => {
                let s = self.enum_symbol()?;
                v.visit_enum(s.into_deserializer())
            }
            _ => {
                let s: String = de::Deserialize::deserialize(self)?;
                v.visit_enum(s.into_deserializer())
            }
        }
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        self.any(v, Hint::Any)
    }
    forward_any!(
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_char,
        deserialize_unit,
        deserialize_map,
        deserialize_identifier
    );
    fn deserialize_unit_struct<V: Visitor<'de>>(self, _n: &'static str, v: V) -> Result<V::Value> {
        self.deserialize_any(v)
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _n: &'static str,
        _f: &'static [&'static str],
        v: V,
    ) -> Result<V::Value> {
        self.deserialize_any(v)
    }
}

/// The name a union branch has as a Rust enum variant: the simple name of a named type, else the Avro
/// type name with a capital (`Null`, `Long`, `String`, `Array`, `Map`).
fn title(name: &str) -> String {
    let simple = name.rsplit('.').next().unwrap_or(name);
    let mut c = simple.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn variant_name(step: &Step) -> String {
    match step {
        Step::Record { name, .. } | Step::Enum { name, .. } => title(name),
        Step::Scalar { to, .. } => title(&format!("{to:?}").to_lowercase()),
        Step::Array(_) => "Array".into(),
        Step::Map(_) => "Map".into(),
        _ => "Fixed".into(),
    }
}

struct RecordAccess<'r, 'b, 'p> {
    de: De<'r, 'b, 'p>,
    fields: &'p [RField],
    defaults: &'p [crate::resolve::DefaultField],
    i: usize,
    key: Option<&'p str>,
}

impl<'de> de::MapAccess<'de> for RecordAccess<'_, '_, '_> {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        while self.i < self.fields.len() {
            match &self.fields[self.i] {
                RField::Skip(node) => {
                    let g = self.de.plan.writer.graph();
                    self.de.r.skip(g, *node, self.de.depth)?;
                    self.i += 1;
                }
                RField::Read { name, .. } => {
                    self.key = Some(name);
                    return seed
                        .deserialize(de::value::StrDeserializer::<DeError>::new(name))
                        .map(Some);
                }
            }
        }
        match self.defaults.get(self.i - self.fields.len()) {
            Some(d) => {
                self.key = Some(&d.name);
                seed.deserialize(de::value::StrDeserializer::<DeError>::new(&d.name))
                    .map(Some)
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value> {
        let key = self.key.unwrap_or_default();
        let i = self.i;
        self.i += 1;
        if let Some(RField::Read { step, .. }) = self.fields.get(i) {
            let child = self.de.child(*step)?;
            return seed.deserialize(child).map_err(|e| at(e, key));
        }
        let d = self
            .defaults
            .get(i - self.fields.len())
            .ok_or_else(|| corrupt("no such field"))?;
        let mut r = Reader::for_default(&d.bytes, self.de.r.values);
        let child = De {
            r: &mut r,
            plan: self.de.plan,
            step: d.step,
            depth: self.de.depth + 1,
            branch: None,
        };
        let value = seed.deserialize(child).map_err(|e| at(e, key))?;
        self.de.r.values = r.values;
        Ok(value)
    }
}

struct ArrayAccess<'r, 'b, 'p> {
    de: De<'r, 'b, 'p>,
    items: StepId,
    left: usize,
    done: bool,
    i: usize,
}

impl<'de> de::SeqAccess<'de> for ArrayAccess<'_, '_, '_> {
    type Error = DeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if self.done {
            return Ok(None);
        }
        if self.left == 0 {
            self.left = self.de.r.block()?;
            if self.left == 0 {
                self.done = true;
                return Ok(None);
            }
        }
        self.left -= 1;
        let i = self.i;
        self.i += 1;
        let child = self.de.child(self.items)?;
        seed.deserialize(child).map(Some).map_err(|e| at(e, &format!("[{i}]")))
    }
}

struct MapAccess<'r, 'b, 'p> {
    de: De<'r, 'b, 'p>,
    values: StepId,
    left: usize,
    done: bool,
    key: String,
}

impl<'de> de::MapAccess<'de> for MapAccess<'_, '_, '_> {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.done {
            return Ok(None);
        }
        if self.left == 0 {
            self.left = self.de.r.block()?;
            if self.left == 0 {
                self.done = true;
                return Ok(None);
            }
        }
        self.left -= 1;
        self.key = utf8(self.de.r.bytes()?)?;
        seed.deserialize(de::value::StrDeserializer::<DeError>::new(&self.key))
            .map(Some)
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value> {
        let child = self.de.child(self.values)?;
        let key = std::mem::take(&mut self.key);
        seed.deserialize(child).map_err(|e| at(e, &key))
    }
}

/// A union read as a Rust enum: the variant is the branch's name.
struct UnionAccess<'r, 'b, 'p> {
    de: De<'r, 'b, 'p>,
    name: String,
}

impl<'de, 'r, 'b, 'p> de::EnumAccess<'de> for UnionAccess<'r, 'b, 'p> {
    type Error = DeError;
    type Variant = De<'r, 'b, 'p>;
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self::Variant)> {
        let v = seed.deserialize(de::value::StringDeserializer::<DeError>::new(self.name))?;
        Ok((v, self.de))
    }
}

impl<'de> de::VariantAccess<'de> for De<'_, '_, '_> {
    type Error = DeError;
    fn unit_variant(self) -> Result<()> {
        de::Deserialize::deserialize(self).map(|_: de::IgnoredAny| ())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value> {
        de::Deserializer::deserialize_seq(self, v)
    }
    fn struct_variant<V: Visitor<'de>>(self, _f: &'static [&'static str], v: V) -> Result<V::Value> {
        de::Deserializer::deserialize_any(self, v)
    }
}

/// Decodes one value with `plan`, requiring that the whole input is consumed.
pub(crate) fn decode<T: de::DeserializeOwned>(plan: &PlanInner, bytes: &[u8]) -> std::result::Result<T, DecodeError> {
    decode_seed(plan, bytes, std::marker::PhantomData::<T>)
}

pub(crate) fn decode_seed<'de, S: de::DeserializeSeed<'de>>(
    plan: &PlanInner,
    bytes: &[u8],
    seed: S,
) -> std::result::Result<S::Value, DecodeError> {
    let mut r = Reader::new(bytes);
    let v = seed
        .deserialize(De {
            r: &mut r,
            plan,
            step: plan.root,
            depth: 0,
            branch: None,
        })
        .map_err(|e| match *e.0 {
            DecodeError::TooManyValues { path, limit } if path.is_empty() => DecodeError::TooManyValues {
                path: "<root>".into(),
                limit,
            },
            e => e,
        })?;
    if r.remaining() > 0 {
        return Err(DecodeError::TrailingBytes(r.remaining()));
    }
    Ok(v)
}
