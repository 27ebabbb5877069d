//! The compiled form of a schema: a flat arena of nodes with named references resolved to indices,
//! so that recursive types work and the codec never looks a name up while encoding or decoding.

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::{InnerDecimalSchema, UuidSchema};
use serde_json::Value as Json;

use crate::schema::MAX_DECIMAL_PRECISION;

pub(crate) type NodeId = usize;

#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub(crate) name: String,
    pub(crate) node: NodeId,
    pub(crate) default: Option<Json>,
    /// The default, encoded in this field's schema, filled after compilation.
    pub(crate) default_bytes: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) name: String,
    pub(crate) fields: Vec<Field>,
    pub(crate) lookup: HashMap<String, usize>,
}

#[derive(Debug, Clone)]
pub(crate) struct Enum {
    pub(crate) name: String,
    pub(crate) symbols: Vec<String>,
    pub(crate) lookup: HashMap<String, usize>,
    pub(crate) default: Option<usize>,
}

impl Enum {
    /// The index of a symbol: a scan for small enums (cheaper than hashing), the map for large ones.
    #[inline]
    pub(crate) fn index(&self, symbol: &str) -> Option<usize> {
        if self.symbols.len() <= 16 {
            self.symbols.iter().position(|s| s == symbol)
        } else {
            self.lookup.get(symbol).copied()
        }
    }
}

/// Whether a record's full name is `name` or ends with `.name`.
#[inline]
pub(crate) fn name_matches(full: &str, name: &str) -> bool {
    full.len() >= name.len()
        && full.ends_with(name)
        && (full.len() == name.len() || full.as_bytes()[full.len() - name.len() - 1] == b'.')
}

/// What a uuid is stored as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UuidRepr {
    String,
    Fixed,
}

#[derive(Debug, Clone)]
pub(crate) enum Node {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Record(Box<Record>),
    Enum(Box<Enum>),
    Fixed {
        name: String,
        size: usize,
    },
    Array(NodeId),
    Map(NodeId),
    Union(Vec<NodeId>),
    Date,
    TimeMillis,
    TimeMicros,
    /// Timestamps: `unit` is 1_000 (millis), 1_000_000 (micros) or 1_000_000_000 (nanos) per second.
    Timestamp {
        unit: i64,
        local: bool,
    },
    Uuid(UuidRepr),
    /// Decimal over bytes (`fixed: None`) or a fixed of the given size.
    Decimal {
        precision: usize,
        scale: usize,
        fixed: Option<usize>,
    },
    /// Duration: a fixed of 12 bytes.
    Duration,
}

/// The kind of value a node holds, as used in messages.
pub(crate) fn describe(graph: &Graph, id: NodeId) -> String {
    match &graph.nodes[id] {
        Node::Null => "null".into(),
        Node::Boolean => "boolean".into(),
        Node::Int => "int".into(),
        Node::Long => "long".into(),
        Node::Float => "float".into(),
        Node::Double => "double".into(),
        Node::Bytes => "bytes".into(),
        Node::String => "string".into(),
        Node::Record(r) => format!("record {}", r.name),
        Node::Enum(e) => format!("enum {} (one of {})", e.name, e.symbols.join(", ")),
        Node::Fixed { name, size } => format!("fixed {name} of {size} bytes"),
        Node::Array(i) => format!("array of {}", describe(graph, *i)),
        Node::Map(i) => format!("map of {}", describe(graph, *i)),
        Node::Union(b) => {
            let names: Vec<String> = b.iter().map(|i| short(graph, *i)).collect();
            format!("union [{}]", names.join(", "))
        }
        Node::Date => "date (days since epoch or YYYY-MM-DD)".into(),
        Node::TimeMillis => "time-millis".into(),
        Node::TimeMicros => "time-micros".into(),
        Node::Timestamp { unit, local } => {
            let u = match unit {
                1_000 => "millis",
                1_000_000 => "micros",
                _ => "nanos",
            };
            let l = if *local { "local-" } else { "" };
            format!("{l}timestamp-{u} (an integer or an RFC 3339 string)")
        }
        Node::Uuid(_) => "uuid".into(),
        Node::Decimal { precision, scale, .. } => format!("decimal({precision},{scale})"),
        Node::Duration => "duration".into(),
    }
}

/// A short type name, used in union descriptions and to pick union branches by name.
pub(crate) fn short(graph: &Graph, id: NodeId) -> String {
    match &graph.nodes[id] {
        Node::Record(r) => r.name.clone(),
        Node::Enum(e) => e.name.clone(),
        Node::Fixed { name, .. } => name.clone(),
        Node::Array(_) => "array".into(),
        Node::Map(_) => "map".into(),
        Node::Union(_) => "union".into(),
        _ => describe(graph, id).split(' ').next().unwrap_or_default().to_string(),
    }
}

/// A compiled schema. Node 0 is the root.
#[derive(Debug, Clone, Default)]
pub(crate) struct Graph {
    pub(crate) nodes: Vec<Node>,
}

impl Graph {
    /// Compiles a self-contained (denormalized) schema.
    pub(crate) fn compile(schema: &Schema) -> Result<Graph, String> {
        let mut c = Compiler {
            graph: Graph::default(),
            names: HashMap::new(),
        };
        c.node(schema)?;
        let mut graph = c.graph;
        graph.encode_defaults()?;
        Ok(graph)
    }

    /// Encodes every field default once. A record default may leave out a field of a nested record that has a
    /// default of its own, which then must be encoded first: defaults are encoded in rounds, each taking those
    /// whose nested defaults are ready, so the order the records are defined in does not matter.
    fn encode_defaults(&mut self) -> Result<(), String> {
        let mut pending: Vec<(NodeId, usize)> = Vec::new();
        for (id, node) in self.nodes.iter().enumerate() {
            if let Node::Record(rec) = node {
                pending.extend(
                    rec.fields
                        .iter()
                        .enumerate()
                        .filter(|(_, f)| f.default.is_some())
                        .map(|(i, _)| (id, i)),
                );
            }
        }
        loop {
            let mut done = Vec::new();
            let mut failed = Vec::new();
            for &(id, i) in &pending {
                let Node::Record(rec) = &self.nodes[id] else { continue };
                let f = &rec.fields[i];
                let Some(d) = &f.default else { continue };
                let mut out = Vec::new();
                match crate::encode::encode_default(self, f.node, d, &mut out) {
                    Ok(()) => done.push((id, i, out)),
                    Err(e) => failed.push(((id, i), format!("default of field `{}` in {}: {e}", f.name, rec.name))),
                }
            }
            if done.is_empty() {
                return match failed.into_iter().next() {
                    Some((_, message)) => Err(message),
                    None => Ok(()),
                };
            }
            for (id, i, bytes) in done {
                if let Node::Record(rec) = &mut self.nodes[id] {
                    rec.fields[i].default_bytes = Some(bytes);
                }
            }
            pending = failed.into_iter().map(|(at, _)| at).collect();
        }
    }
}

/// The largest `fixed` a decimal may be stored in. A decimal of [`MAX_DECIMAL_PRECISION`] digits needs 16 bytes;
/// a value is sign-extended to the whole fixed when encoded, so a huge size would be a huge allocation.
pub(crate) const MAX_DECIMAL_FIXED_SIZE: usize = 1024;

/// Refuses decimals the codec cannot hold: more digits than a 128-bit integer has, or a fixed far wider than
/// needed. (apache-avro already ignores a decimal whose scale is above its precision, as the spec says.)
fn check_decimal(precision: usize, scale: usize, fixed: Option<usize>) -> Result<(), String> {
    if precision > MAX_DECIMAL_PRECISION {
        return Err(format!(
            "decimal({precision},{scale}): precision {precision} is more than {MAX_DECIMAL_PRECISION}, the most digits a decimal may have (values are 128-bit integers); declare a precision of at most {MAX_DECIMAL_PRECISION}"
        ));
    }
    if let Some(size) = fixed
        && size > MAX_DECIMAL_FIXED_SIZE
    {
        return Err(format!(
            "decimal({precision},{scale}) on a fixed of {size} bytes: a decimal's fixed may have at most {MAX_DECIMAL_FIXED_SIZE} bytes ({MAX_DECIMAL_PRECISION} digits need 16); declare a smaller size"
        ));
    }
    Ok(())
}

struct Compiler {
    graph: Graph,
    names: HashMap<String, NodeId>,
}

impl Compiler {
    fn push(&mut self, n: Node) -> NodeId {
        self.graph.nodes.push(n);
        self.graph.nodes.len() - 1
    }

    fn fixed(&mut self, name: String, size: usize) -> NodeId {
        let id = self.push(Node::Fixed {
            name: name.clone(),
            size,
        });
        self.names.insert(name, id);
        id
    }

    fn node(&mut self, s: &Schema) -> Result<NodeId, String> {
        Ok(match s {
            Schema::Null => self.push(Node::Null),
            Schema::Boolean => self.push(Node::Boolean),
            Schema::Int => self.push(Node::Int),
            Schema::Long => self.push(Node::Long),
            Schema::Float => self.push(Node::Float),
            Schema::Double => self.push(Node::Double),
            Schema::Bytes => self.push(Node::Bytes),
            Schema::BigDecimal => {
                return Err(
                    "logical type `big-decimal` is not supported; use `decimal` with a precision and scale".into(),
                );
            }
            Schema::String => self.push(Node::String),
            Schema::Date => self.push(Node::Date),
            Schema::TimeMillis => self.push(Node::TimeMillis),
            Schema::TimeMicros => self.push(Node::TimeMicros),
            Schema::TimestampMillis => self.push(Node::Timestamp {
                unit: 1_000,
                local: false,
            }),
            Schema::TimestampMicros => self.push(Node::Timestamp {
                unit: 1_000_000,
                local: false,
            }),
            Schema::TimestampNanos => self.push(Node::Timestamp {
                unit: 1_000_000_000,
                local: false,
            }),
            Schema::LocalTimestampMillis => self.push(Node::Timestamp {
                unit: 1_000,
                local: true,
            }),
            Schema::LocalTimestampMicros => self.push(Node::Timestamp {
                unit: 1_000_000,
                local: true,
            }),
            Schema::LocalTimestampNanos => self.push(Node::Timestamp {
                unit: 1_000_000_000,
                local: true,
            }),
            Schema::Uuid(UuidSchema::String) => self.push(Node::Uuid(UuidRepr::String)),
            Schema::Uuid(UuidSchema::Fixed(f)) => {
                let id = self.push(Node::Uuid(UuidRepr::Fixed));
                self.names.insert(f.name.fullname(None), id);
                id
            }
            Schema::Uuid(UuidSchema::Bytes) => self.push(Node::Bytes),
            Schema::Decimal(d) => {
                let fixed = match &d.inner {
                    InnerDecimalSchema::Bytes => None,
                    InnerDecimalSchema::Fixed(f) => Some(f.size),
                };
                check_decimal(d.precision, d.scale, fixed)?;
                let id = self.push(Node::Decimal {
                    precision: d.precision,
                    scale: d.scale,
                    fixed,
                });
                if let InnerDecimalSchema::Fixed(f) = &d.inner {
                    self.names.insert(f.name.fullname(None), id);
                }
                id
            }
            Schema::Duration(f) => {
                let id = self.push(Node::Duration);
                self.names.insert(f.name.fullname(None), id);
                id
            }
            Schema::Fixed(f) => self.fixed(f.name.fullname(None), f.size),
            Schema::Array(a) => {
                let id = self.push(Node::Null);
                let items = self.node(&a.items)?;
                self.graph.nodes[id] = Node::Array(items);
                id
            }
            Schema::Map(m) => {
                let id = self.push(Node::Null);
                let values = self.node(&m.types)?;
                self.graph.nodes[id] = Node::Map(values);
                id
            }
            Schema::Union(u) => {
                let id = self.push(Node::Null);
                let mut branches = Vec::with_capacity(u.variants().len());
                for v in u.variants() {
                    branches.push(self.node(v)?);
                }
                self.graph.nodes[id] = Node::Union(branches);
                id
            }
            Schema::Enum(e) => {
                let name = e.name.fullname(None);
                let lookup = e
                    .symbols
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.clone(), i))
                    .collect::<HashMap<_, _>>();
                let default =
                    match &e.default {
                        Some(d) => Some(*lookup.get(d).ok_or_else(|| {
                            format!("enum {name} has default `{d}`, which is not one of its symbols")
                        })?),
                        None => None,
                    };
                let id = self.push(Node::Enum(Box::new(Enum {
                    name: name.clone(),
                    symbols: e.symbols.clone(),
                    lookup,
                    default,
                })));
                self.names.insert(name, id);
                id
            }
            Schema::Record(r) => {
                let name = r.name.fullname(None);
                let id = self.push(Node::Null);
                self.names.insert(name.clone(), id);
                let mut fields = Vec::with_capacity(r.fields.len());
                let mut lookup = HashMap::with_capacity(r.fields.len());
                for (i, f) in r.fields.iter().enumerate() {
                    let node = self.node(&f.schema)?;
                    lookup.insert(f.name.clone(), i);
                    fields.push(Field {
                        name: f.name.clone(),
                        node,
                        default: f.default.clone(),
                        default_bytes: None,
                    });
                }
                self.graph.nodes[id] = Node::Record(Box::new(Record { name, fields, lookup }));
                id
            }
            Schema::Ref { name } => {
                let full = name.fullname(None);
                *self
                    .names
                    .get(&full)
                    .ok_or_else(|| format!("unresolved reference to type `{full}`"))?
            }
        })
    }
}
