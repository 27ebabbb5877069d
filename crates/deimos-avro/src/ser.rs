//! The typed path: a serde `Serializer` that writes Avro binary straight from a Rust value, driven by the
//! compiled schema, with no intermediate value tree. It writes the same bytes as the dynamic path.

use serde::ser::{self, Serialize};

use crate::encode::{
    decimal_bytes, parse_decimal, parse_time_str, parse_timestamp_str, write_bytes, write_double, write_float,
    write_long,
};
use crate::error::EncodeError;
use crate::graph::{Graph, Node, NodeId, Record, UuidRepr, short};

type Result<T> = std::result::Result<T, SerError>;

/// An [`EncodeError`] boxed, so that every result on the hot path stays one word wide; unboxed at the
/// public boundary.
#[derive(Debug)]
pub(crate) struct SerError(pub(crate) Box<EncodeError>);

impl std::fmt::Display for SerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SerError {}

impl ser::Error for SerError {
    #[cold]
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        unsupported(msg.to_string())
    }
}

impl From<EncodeError> for SerError {
    #[cold]
    fn from(e: EncodeError) -> Self {
        SerError(Box::new(e))
    }
}

#[cold]
fn mismatch_msg(g: &Graph, node: NodeId, got: impl Into<String>) -> SerError {
    crate::encode::mismatch_msg(g, node, got).into()
}

#[cold]
fn prefix(e: SerError, seg: &str) -> SerError {
    crate::encode::prefix(*e.0, seg).into()
}

pub(crate) struct Ser<'a> {
    pub(crate) g: &'a Graph,
    pub(crate) node: NodeId,
    pub(crate) out: &'a mut Vec<u8>,
    /// Nesting level, counted as the decoder counts it (fields, items, values and union branches).
    pub(crate) depth: usize,
}

/// One level deeper, or an error past the limit the decoder enforces.
#[inline]
fn deeper(depth: usize) -> Result<usize> {
    if depth >= crate::de::MAX_DEPTH {
        Err(too_deep())
    } else {
        Ok(depth + 1)
    }
}

#[cold]
#[inline(never)]
fn too_deep() -> SerError {
    crate::encode::too_deep().into()
}

#[cold]
fn unsupported(msg: impl Into<String>) -> SerError {
    EncodeError::Unsupported {
        path: String::new(),
        message: msg.into(),
    }
    .into()
}

impl<'a> Ser<'a> {
    /// Picks the node that takes a value of this kind: the node itself, or the first fitting branch of a
    /// union (whose index is written).
    #[inline]
    fn pick(&mut self, what: impl FnOnce() -> String, ok: impl Fn(&Node) -> bool) -> Result<NodeId> {
        if let Node::Union(branches) = &self.g.nodes[self.node] {
            self.depth = deeper(self.depth)?;
            let i = branches
                .iter()
                .position(|b| ok(&self.g.nodes[*b]))
                .ok_or_else(|| mismatch_msg(self.g, self.node, what()))?;
            write_long(self.out, i as i64);
            return Ok(branches[i]);
        }
        if ok(&self.g.nodes[self.node]) {
            Ok(self.node)
        } else {
            Err(mismatch_msg(self.g, self.node, what()))
        }
    }

    fn write_i64(&mut self, v: i64) -> Result<()> {
        // Fast path: the plain type, no union.
        if let Node::Long = self.g.nodes[self.node] {
            write_long(self.out, v);
            return Ok(());
        }
        let node = self.pick(
            || format!("integer {v}"),
            |n| {
                matches!(
                    n,
                    Node::Int
                        | Node::Long
                        | Node::Float
                        | Node::Double
                        | Node::Date
                        | Node::TimeMillis
                        | Node::TimeMicros
                        | Node::Timestamp { .. }
                )
            },
        )?;
        match &self.g.nodes[node] {
            Node::Int | Node::Date | Node::TimeMillis => {
                if i32::try_from(v).is_err() {
                    return Err(mismatch_msg(
                        self.g,
                        node,
                        format!("{v}, which is out of the int range"),
                    ));
                }
                write_long(self.out, v);
            }
            Node::Float => write_float(self.out, v as f32),
            Node::Double => write_double(self.out, v as f64),
            _ => write_long(self.out, v),
        }
        Ok(())
    }

    fn write_f64(&mut self, v: f64) -> Result<()> {
        if let Node::Double = self.g.nodes[self.node] {
            write_double(self.out, v);
            return Ok(());
        }
        let node = self.pick(
            || format!("number {v}"),
            |n| matches!(n, Node::Float | Node::Double | Node::Decimal { .. }),
        )?;
        match &self.g.nodes[node] {
            Node::Float => write_float(self.out, v as f32),
            Node::Decimal {
                precision,
                scale,
                fixed,
            } => self.write_decimal(node, &v.to_string(), *precision, *scale, *fixed)?,
            _ => write_double(self.out, v),
        }
        Ok(())
    }

    fn write_decimal(
        &mut self,
        node: NodeId,
        s: &str,
        precision: usize,
        scale: usize,
        fixed: Option<usize>,
    ) -> Result<()> {
        let unscaled = parse_decimal(s, precision, scale)
            .ok_or_else(|| mismatch_msg(self.g, node, format!("{s:?} (not a decimal that fits)")))?;
        let b = decimal_bytes(unscaled, fixed)
            .ok_or_else(|| mismatch_msg(self.g, node, format!("{s:?} (too large for the fixed size)")))?;
        match fixed {
            None => write_bytes(self.out, &b),
            Some(_) => self.out.extend_from_slice(&b),
        }
        Ok(())
    }

    fn write_raw_bytes(&mut self, v: &[u8]) -> Result<()> {
        let len = v.len();
        let node = self.pick(
            || format!("{len} bytes"),
            |n| match n {
                Node::Bytes | Node::String => true,
                Node::Fixed { size, .. } => *size == len,
                Node::Duration => len == 12,
                Node::Uuid(UuidRepr::Fixed) => len == 16,
                Node::Decimal { fixed, .. } => fixed.is_none_or(|s| s == len),
                _ => false,
            },
        )?;
        match &self.g.nodes[node] {
            Node::Bytes | Node::String | Node::Decimal { fixed: None, .. } => write_bytes(self.out, v),
            _ => self.out.extend_from_slice(v),
        }
        Ok(())
    }

    fn with_node<'b>(&'b mut self, node: NodeId) -> Ser<'b> {
        Ser {
            depth: self.depth,
            g: self.g,
            node,
            out: self.out,
        }
    }

    fn union_variant(&mut self, variant: &str, index: u32) -> Result<NodeId> {
        let Node::Union(branches) = &self.g.nodes[self.node] else {
            return Ok(self.node);
        };
        self.depth = deeper(self.depth)?;
        let i = branches
            .iter()
            .position(|b| {
                let s = short(self.g, *b);
                let simple = s.rsplit('.').next().unwrap_or(&s);
                s == variant || simple == variant || simple.eq_ignore_ascii_case(variant)
            })
            .or_else(|| usize::try_from(index).ok().filter(|i| *i < branches.len()))
            .ok_or_else(|| unsupported(format!("variant `{variant}` matches no branch of the union")))?;
        write_long(self.out, i as i64);
        Ok(branches[i])
    }
}

impl<'a> ser::Serializer for Ser<'a> {
    type Ok = ();
    type Error = SerError;
    type SerializeSeq = SeqSer<'a>;
    type SerializeTuple = SeqSer<'a>;
    type SerializeTupleStruct = SeqSer<'a>;
    type SerializeTupleVariant = ser::Impossible<(), SerError>;
    type SerializeMap = MapSer<'a>;
    type SerializeStruct = StructSer<'a>;
    type SerializeStructVariant = StructSer<'a>;

    fn serialize_bool(mut self, v: bool) -> Result<()> {
        self.pick(|| format!("boolean {v}"), |n| matches!(n, Node::Boolean))?;
        self.out.push(u8::from(v));
        Ok(())
    }
    fn serialize_i8(mut self, v: i8) -> Result<()> {
        self.write_i64(i64::from(v))
    }
    fn serialize_i16(mut self, v: i16) -> Result<()> {
        self.write_i64(i64::from(v))
    }
    fn serialize_i32(mut self, v: i32) -> Result<()> {
        self.write_i64(i64::from(v))
    }
    fn serialize_i64(mut self, v: i64) -> Result<()> {
        self.write_i64(v)
    }
    fn serialize_u8(mut self, v: u8) -> Result<()> {
        self.write_i64(i64::from(v))
    }
    fn serialize_u16(mut self, v: u16) -> Result<()> {
        self.write_i64(i64::from(v))
    }
    fn serialize_u32(mut self, v: u32) -> Result<()> {
        self.write_i64(i64::from(v))
    }
    fn serialize_u64(mut self, v: u64) -> Result<()> {
        let v = i64::try_from(v).map_err(|_| unsupported(format!("{v} does not fit an Avro long")))?;
        self.write_i64(v)
    }
    fn serialize_f32(mut self, v: f32) -> Result<()> {
        self.write_f64(f64::from(v))
    }
    fn serialize_f64(mut self, v: f64) -> Result<()> {
        self.write_f64(v)
    }
    fn serialize_char(self, v: char) -> Result<()> {
        let mut b = [0u8; 4];
        self.serialize_str(v.encode_utf8(&mut b))
    }
    fn serialize_str(mut self, v: &str) -> Result<()> {
        if let Node::String = self.g.nodes[self.node] {
            write_bytes(self.out, v.as_bytes());
            return Ok(());
        }
        let node = self.pick(
            || format!("string {v:?}"),
            |n| match n {
                Node::String | Node::Bytes => true,
                Node::Uuid(_) => uuid::Uuid::parse_str(v).is_ok(),
                Node::Enum(e) => e.index(v).is_some(),
                Node::Timestamp { unit, local } => parse_timestamp_str(v, *unit, *local).is_some(),
                Node::Date => chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok(),
                Node::TimeMillis | Node::TimeMicros => parse_time_str(v, 1_000).is_some(),
                Node::Decimal { precision, scale, .. } => parse_decimal(v, *precision, *scale).is_some(),
                _ => false,
            },
        )?;
        match &self.g.nodes[node] {
            Node::String | Node::Bytes | Node::Uuid(UuidRepr::String) => write_bytes(self.out, v.as_bytes()),
            Node::Uuid(UuidRepr::Fixed) => {
                let u = uuid::Uuid::parse_str(v).map_err(|e| unsupported(e.to_string()))?;
                self.out.extend_from_slice(u.as_bytes());
            }
            Node::Enum(e) => {
                let i = e.index(v).unwrap_or_default();
                write_long(self.out, i as i64);
            }
            Node::Timestamp { unit, local } => {
                write_long(self.out, parse_timestamp_str(v, *unit, *local).unwrap_or_default())
            }
            Node::Date => {
                let d = crate::encode::date_of(&serde_json::Value::String(v.to_string())).unwrap_or_default();
                write_long(self.out, d);
            }
            Node::TimeMillis => write_long(self.out, parse_time_str(v, 1_000).unwrap_or_default()),
            Node::TimeMicros => write_long(self.out, parse_time_str(v, 1_000_000).unwrap_or_default()),
            Node::Decimal {
                precision,
                scale,
                fixed,
            } => {
                let (p, s, f) = (*precision, *scale, *fixed);
                self.write_decimal(node, v, p, s, f)?
            }
            _ => return Err(mismatch_msg(self.g, node, format!("string {v:?}"))),
        }
        Ok(())
    }
    fn serialize_bytes(mut self, v: &[u8]) -> Result<()> {
        self.write_raw_bytes(v)
    }
    fn serialize_none(mut self) -> Result<()> {
        self.pick(|| "null (None)".to_string(), |n| matches!(n, Node::Null))?;
        Ok(())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<()> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<()> {
        self.serialize_none()
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<()> {
        self.serialize_none()
    }
    fn serialize_unit_variant(mut self, _name: &'static str, index: u32, variant: &'static str) -> Result<()> {
        if let Node::Union(branches) = &self.g.nodes[self.node] {
            // A unit variant of a union enum is its null branch, or a symbol of an enum branch.
            let null = branches.iter().position(|b| matches!(self.g.nodes[*b], Node::Null));
            let by_name = self.union_variant(variant, index);
            return match (by_name, null) {
                (Ok(b), _) if matches!(self.g.nodes[b], Node::Null) => Ok(()),
                (Ok(b), _) => self.with_node(b).serialize_str(variant),
                (Err(_), Some(_)) => self.serialize_str(variant),
                (Err(e), None) => Err(e),
            };
        }
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _name: &'static str, value: &T) -> Result<()> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        mut self,
        _name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<()> {
        let node = self.union_variant(variant, index)?;
        value.serialize(self.with_node(node))
    }
    fn serialize_seq(mut self, len: Option<usize>) -> Result<SeqSer<'a>> {
        let node = self.pick(
            || "a sequence".to_string(),
            |n| {
                matches!(
                    n,
                    Node::Array(_) | Node::Bytes | Node::Fixed { .. } | Node::Duration | Node::Uuid(UuidRepr::Fixed)
                )
            },
        )?;
        match &self.g.nodes[node] {
            Node::Array(items) => {
                let items = *items;
                let direct = len.is_some();
                if let Some(n) = len
                    && n > 0
                {
                    write_long(self.out, n as i64);
                }
                Ok(SeqSer {
                    depth: self.depth,
                    g: self.g,
                    out: self.out,
                    node,
                    items,
                    buf: Vec::new(),
                    count: 0,
                    direct,
                    bytes: false,
                })
            }
            _ => Ok(SeqSer {
                depth: self.depth,
                g: self.g,
                out: self.out,
                node,
                items: node,
                buf: Vec::new(),
                count: 0,
                direct: false,
                bytes: true,
            }),
        }
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqSer<'a>> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<SeqSer<'a>> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        _i: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant> {
        Err(unsupported(format!(
            "tuple variant {name}::{variant} has no Avro form; use a struct variant"
        )))
    }
    fn serialize_map(mut self, len: Option<usize>) -> Result<MapSer<'a>> {
        let node = self.pick(|| "a map".to_string(), |n| matches!(n, Node::Map(_) | Node::Record(_)))?;
        match &self.g.nodes[node] {
            Node::Map(values) => {
                let values = *values;
                if let Some(n) = len
                    && n > 0
                {
                    write_long(self.out, n as i64);
                }
                Ok(MapSer::Map {
                    depth: self.depth,
                    g: self.g,
                    out: self.out,
                    values,
                    direct: len.is_some(),
                    buf: Vec::new(),
                    count: 0,
                    key: None,
                })
            }
            Node::Record(r) => Ok(MapSer::Record {
                inner: StructSer::new(self.g, r, self.out, true, self.depth),
                key: None,
            }),
            _ => Err(mismatch_msg(self.g, node, "a map")),
        }
    }
    fn serialize_struct(mut self, name: &'static str, len: usize) -> Result<StructSer<'a>> {
        let node = self.pick(
            || format!("struct {name}"),
            |n| match n {
                Node::Record(r) => crate::graph::name_matches(&r.name, name),
                _ => false,
            },
        );
        let node = match node {
            Ok(n) => n,
            // No record of that name: the first record branch (or the record itself).
            Err(_) => self.pick(
                || format!("struct {name}"),
                |n| matches!(n, Node::Record(_) | Node::Map(_)),
            )?,
        };
        match &self.g.nodes[node] {
            Node::Record(r) => Ok(StructSer::new(self.g, r, self.out, false, self.depth)),
            Node::Map(values) => {
                if len > 0 {
                    write_long(self.out, len as i64);
                }
                Ok(StructSer::as_map(self.g, *values, self.out, self.depth))
            }
            _ => Err(mismatch_msg(self.g, node, format!("struct {name}"))),
        }
    }
    fn serialize_struct_variant(
        mut self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<StructSer<'a>> {
        let node = self.union_variant(variant, index)?;
        let s = Ser {
            depth: self.depth,
            g: self.g,
            node,
            out: self.out,
        };
        ser::Serializer::serialize_struct(s, name, len)
    }
}

/// Arrays (block-encoded) and byte sequences (`Vec<u8>`, `[u8; N]`).
pub(crate) struct SeqSer<'a> {
    g: &'a Graph,
    depth: usize,
    out: &'a mut Vec<u8>,
    node: NodeId,
    items: NodeId,
    buf: Vec<u8>,
    count: usize,
    direct: bool,
    bytes: bool,
}

impl SeqSer<'_> {
    fn element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<()> {
        if self.bytes {
            let mut b = Vec::with_capacity(1);
            value.serialize(ByteSerializer(&mut b))?;
            self.buf.extend_from_slice(&b);
            return Ok(());
        }
        let i = self.count;
        self.count += 1;
        let out = if self.direct { &mut *self.out } else { &mut self.buf };
        value
            .serialize(Ser {
                depth: deeper(self.depth)?,
                g: self.g,
                node: self.items,
                out,
            })
            .map_err(|e| prefix(e, &format!("[{i}]")))
    }

    fn finish(self) -> Result<()> {
        if self.bytes {
            let mut s = Ser {
                depth: self.depth,
                g: self.g,
                node: self.node,
                out: self.out,
            };
            return s.write_raw_bytes(&self.buf);
        }
        if !self.direct && self.count > 0 {
            write_long(self.out, self.count as i64);
            self.out.extend_from_slice(&self.buf);
        }
        self.out.push(0);
        Ok(())
    }
}

impl ser::SerializeSeq for SeqSer<'_> {
    type Ok = ();
    type Error = SerError;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<()> {
        self.element(value)
    }
    fn end(self) -> Result<()> {
        self.finish()
    }
}
impl ser::SerializeTuple for SeqSer<'_> {
    type Ok = ();
    type Error = SerError;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<()> {
        self.element(value)
    }
    fn end(self) -> Result<()> {
        self.finish()
    }
}
impl ser::SerializeTupleStruct for SeqSer<'_> {
    type Ok = ();
    type Error = SerError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<()> {
        self.element(value)
    }
    fn end(self) -> Result<()> {
        self.finish()
    }
}

/// Maps to Avro maps, or (for `HashMap`s, `#[serde(flatten)]`) to records.
pub(crate) enum MapSer<'a> {
    Map {
        g: &'a Graph,
        depth: usize,
        out: &'a mut Vec<u8>,
        values: NodeId,
        direct: bool,
        buf: Vec<u8>,
        count: usize,
        key: Option<String>,
    },
    Record {
        inner: StructSer<'a>,
        key: Option<String>,
    },
}

impl ser::SerializeMap for MapSer<'_> {
    type Ok = ();
    type Error = SerError;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<()> {
        let k = key.serialize(KeySerializer)?;
        match self {
            MapSer::Map { key, .. } | MapSer::Record { key, .. } => *key = Some(k),
        }
        Ok(())
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<()> {
        match self {
            MapSer::Map {
                g,
                depth,
                out,
                values,
                direct,
                buf,
                count,
                key,
            } => {
                let k = key.take().unwrap_or_default();
                *count += 1;
                let out = if *direct { &mut **out } else { buf };
                write_bytes(out, k.as_bytes());
                value
                    .serialize(Ser {
                        g,
                        node: *values,
                        out,
                        depth: deeper(*depth)?,
                    })
                    .map_err(|e| prefix(e, &k))
            }
            MapSer::Record { inner, key } => {
                let k = key.take().unwrap_or_default();
                inner.field(&k, value)
            }
        }
    }
    fn end(self) -> Result<()> {
        match self {
            MapSer::Map {
                out,
                direct,
                buf,
                count,
                ..
            } => {
                if !direct && count > 0 {
                    write_long(out, count as i64);
                    out.extend_from_slice(&buf);
                }
                out.push(0);
                Ok(())
            }
            MapSer::Record { inner, .. } => inner.finish(),
        }
    }
}

/// Records. Fields that arrive in schema order are written straight out; once one arrives out of order,
/// the rest are buffered per field and written in schema order at the end. Missing fields take their
/// defaults; fields the schema does not have are dropped.
pub(crate) struct StructSer<'a> {
    depth: usize,
    g: &'a Graph,
    rec: Option<&'a Record>,
    out: &'a mut Vec<u8>,
    next: usize,
    slots: Option<Vec<Option<Vec<u8>>>>,
    /// For a struct written as an Avro map.
    map_values: NodeId,
}

impl<'a> StructSer<'a> {
    fn new(g: &'a Graph, rec: &'a Record, out: &'a mut Vec<u8>, slotted: bool, depth: usize) -> Self {
        let slots = slotted.then(|| vec![None; rec.fields.len()]);
        StructSer {
            g,
            depth,
            rec: Some(rec),
            out,
            next: 0,
            slots,
            map_values: 0,
        }
    }

    fn as_map(g: &'a Graph, values: NodeId, out: &'a mut Vec<u8>, depth: usize) -> Self {
        StructSer {
            g,
            depth,
            rec: None,
            out,
            next: 0,
            slots: None,
            map_values: values,
        }
    }

    fn field<T: ?Sized + Serialize>(&mut self, key: &str, value: &T) -> Result<()> {
        let Some(rec) = self.rec else {
            write_bytes(self.out, key.as_bytes());
            return child(self.g, self.depth, self.map_values, self.out, key, value);
        };
        if self.slots.is_none() {
            if let Some(f) = rec.fields.get(self.next)
                && f.name == key
            {
                self.next += 1;
                return child(self.g, self.depth, f.node, self.out, key, value);
            }
            self.slots = Some(vec![None; rec.fields.len()]);
        }
        let Some(&i) = rec.lookup.get(key) else { return Ok(()) };
        if i < self.next {
            return Err(EncodeError::Unsupported {
                path: key.into(),
                message: "field written twice".into(),
            }
            .into());
        }
        let mut buf = Vec::new();
        child(self.g, self.depth, rec.fields[i].node, &mut buf, key, value)?;
        if let Some(slots) = &mut self.slots {
            slots[i] = Some(buf);
        }
        Ok(())
    }

    fn skip(&mut self, key: &str) -> Result<()> {
        let Some(rec) = self.rec else { return Ok(()) };
        if self.slots.is_none()
            && let Some(f) = rec.fields.get(self.next)
            && f.name == key
        {
            let b = f
                .default_bytes
                .as_ref()
                .ok_or_else(|| missing(self.g, rec, self.next))?;
            self.out.extend_from_slice(b);
            self.next += 1;
        }
        Ok(())
    }

    fn finish(self) -> Result<()> {
        let Some(rec) = self.rec else {
            self.out.push(0);
            return Ok(());
        };
        let mut slots = self.slots;
        for i in self.next..rec.fields.len() {
            match slots.as_mut().and_then(|s| s[i].take()) {
                Some(b) => self.out.extend_from_slice(&b),
                None => {
                    let b = rec.fields[i]
                        .default_bytes
                        .as_ref()
                        .ok_or_else(|| missing(self.g, rec, i))?;
                    self.out.extend_from_slice(b);
                }
            }
        }
        Ok(())
    }
}

/// Writes a record field or a struct-as-map value one level down; errors name the field.
fn child<T: ?Sized + Serialize>(
    g: &Graph,
    depth: usize,
    node: NodeId,
    out: &mut Vec<u8>,
    key: &str,
    value: &T,
) -> Result<()> {
    value
        .serialize(Ser {
            depth: deeper(depth)?,
            g,
            node,
            out,
        })
        .map_err(|e| prefix(e, key))
}

#[cold]
fn missing(g: &Graph, rec: &Record, i: usize) -> SerError {
    SerError::from(EncodeError::MissingField {
        path: rec.fields[i].name.clone(),
        expected: crate::graph::describe(g, rec.fields[i].node),
    })
}

impl ser::SerializeStruct for StructSer<'_> {
    type Ok = ();
    type Error = SerError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> Result<()> {
        self.field(key, value)
    }
    fn skip_field(&mut self, key: &'static str) -> Result<()> {
        self.skip(key)
    }
    fn end(self) -> Result<()> {
        self.finish()
    }
}
impl ser::SerializeStructVariant for StructSer<'_> {
    type Ok = ();
    type Error = SerError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> Result<()> {
        self.field(key, value)
    }
    fn skip_field(&mut self, key: &'static str) -> Result<()> {
        self.skip(key)
    }
    fn end(self) -> Result<()> {
        self.finish()
    }
}

/// Map keys must be strings (or things that print as one).
struct KeySerializer;

macro_rules! key_display {
    ($($f:ident: $t:ty),*) => {$(
        fn $f(self, v: $t) -> Result<String> { Ok(v.to_string()) }
    )*};
}

impl ser::Serializer for KeySerializer {
    type Ok = String;
    type Error = SerError;
    type SerializeSeq = ser::Impossible<String, SerError>;
    type SerializeTuple = ser::Impossible<String, SerError>;
    type SerializeTupleStruct = ser::Impossible<String, SerError>;
    type SerializeTupleVariant = ser::Impossible<String, SerError>;
    type SerializeMap = ser::Impossible<String, SerError>;
    type SerializeStruct = ser::Impossible<String, SerError>;
    type SerializeStructVariant = ser::Impossible<String, SerError>;
    key_display!(serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64, serialize_f32: f32,
        serialize_f64: f64, serialize_char: char, serialize_str: &str);
    fn serialize_bytes(self, _v: &[u8]) -> Result<String> {
        Err(unsupported("map keys must be strings, got bytes"))
    }
    fn serialize_none(self) -> Result<String> {
        Err(unsupported("map keys must be strings, got None"))
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<String> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<String> {
        Err(unsupported("map keys must be strings, got ()"))
    }
    fn serialize_unit_struct(self, name: &'static str) -> Result<String> {
        Err(unsupported(format!("map keys must be strings, got {name}")))
    }
    fn serialize_unit_variant(self, _n: &'static str, _i: u32, variant: &'static str) -> Result<String> {
        Ok(variant.to_string())
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _n: &'static str, value: &T) -> Result<String> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _n: &'static str,
        _i: u32,
        _v: &'static str,
        _value: &T,
    ) -> Result<String> {
        Err(unsupported("map keys must be strings"))
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq> {
        Err(unsupported("map keys must be strings"))
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple> {
        Err(unsupported("map keys must be strings"))
    }
    fn serialize_tuple_struct(self, _n: &'static str, _len: usize) -> Result<Self::SerializeTupleStruct> {
        Err(unsupported("map keys must be strings"))
    }
    fn serialize_tuple_variant(
        self,
        _n: &'static str,
        _i: u32,
        _v: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant> {
        Err(unsupported("map keys must be strings"))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap> {
        Err(unsupported("map keys must be strings"))
    }
    fn serialize_struct(self, _n: &'static str, _len: usize) -> Result<Self::SerializeStruct> {
        Err(unsupported("map keys must be strings"))
    }
    fn serialize_struct_variant(
        self,
        _n: &'static str,
        _i: u32,
        _v: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant> {
        Err(unsupported("map keys must be strings"))
    }
}

/// Elements of a byte sequence: integers 0..=255.
struct ByteSerializer<'b>(&'b mut Vec<u8>);

impl ByteSerializer<'_> {
    fn int(self, v: i64) -> Result<()> {
        let b = u8::try_from(v).map_err(|_| unsupported(format!("{v} is not a byte value (0..=255)")))?;
        self.0.push(b);
        Ok(())
    }
}

macro_rules! byte_int {
    ($($f:ident: $t:ty),*) => {$(
        fn $f(self, v: $t) -> Result<()> { self.int(i64::try_from(v).unwrap_or(-1)) }
    )*};
}
macro_rules! byte_err {
    ($($f:ident: $t:ty),*) => {$(
        fn $f(self, _v: $t) -> Result<()> { Err(unsupported("a byte sequence holds only integers 0..=255")) }
    )*};
}

impl ser::Serializer for ByteSerializer<'_> {
    type Ok = ();
    type Error = SerError;
    type SerializeSeq = ser::Impossible<(), SerError>;
    type SerializeTuple = ser::Impossible<(), SerError>;
    type SerializeTupleStruct = ser::Impossible<(), SerError>;
    type SerializeTupleVariant = ser::Impossible<(), SerError>;
    type SerializeMap = ser::Impossible<(), SerError>;
    type SerializeStruct = ser::Impossible<(), SerError>;
    type SerializeStructVariant = ser::Impossible<(), SerError>;
    byte_int!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64);
    byte_err!(serialize_bool: bool, serialize_f32: f32, serialize_f64: f64, serialize_char: char, serialize_str: &str, serialize_bytes: &[u8]);
    fn serialize_none(self) -> Result<()> {
        Err(unsupported("a byte sequence holds only integers 0..=255"))
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<()> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<()> {
        Err(unsupported("a byte sequence holds only integers 0..=255"))
    }
    fn serialize_unit_struct(self, _n: &'static str) -> Result<()> {
        Err(unsupported("a byte sequence holds only integers 0..=255"))
    }
    fn serialize_unit_variant(self, _n: &'static str, _i: u32, _v: &'static str) -> Result<()> {
        Err(unsupported("a byte sequence holds only integers 0..=255"))
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _n: &'static str, value: &T) -> Result<()> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _n: &'static str,
        _i: u32,
        _v: &'static str,
        _value: &T,
    ) -> Result<()> {
        Err(unsupported("a byte sequence holds only integers 0..=255"))
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq> {
        Err(unsupported("a byte sequence holds only integers 0..=255"))
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple> {
        Err(unsupported("a byte sequence holds only integers 0..=255"))
    }
    fn serialize_tuple_struct(self, _n: &'static str, _len: usize) -> Result<Self::SerializeTupleStruct> {
        Err(unsupported("a byte sequence holds only integers 0..=255"))
    }
    fn serialize_tuple_variant(
        self,
        _n: &'static str,
        _i: u32,
        _v: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant> {
        Err(unsupported("a byte sequence holds only integers 0..=255"))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap> {
        Err(unsupported("a byte sequence holds only integers 0..=255"))
    }
    fn serialize_struct(self, _n: &'static str, _len: usize) -> Result<Self::SerializeStruct> {
        Err(unsupported("a byte sequence holds only integers 0..=255"))
    }
    fn serialize_struct_variant(
        self,
        _n: &'static str,
        _i: u32,
        _v: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant> {
        Err(unsupported("a byte sequence holds only integers 0..=255"))
    }
}
