//! Resolution plans: how to read data written with one schema (the writer's) as another (the reader's),
//! compiled once per (writer, reader) pair. Covers the Avro spec's rules: defaults for fields the writer
//! lacks, skipping fields the reader lacks, numeric and string/bytes promotions, enum symbol mapping with
//! the reader's default, and union branches on either side.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::{Arc, RwLock};

use crate::error::ResolveError;
use crate::graph::{Graph, Node, NodeId, UuidRepr, describe, short};
use crate::schema::AvroSchema;

pub(crate) type StepId = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prim {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
}

/// How a scalar read from the writer's encoding is presented (the reader's logical type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Present {
    Plain,
    Date,
    TimeMillis,
    TimeMicros,
    /// `local`: a local timestamp, shown without a zone.
    Timestamp {
        unit: i64,
        local: bool,
    },
    Uuid,
    Decimal {
        scale: usize,
    },
    Latin1,
}

#[derive(Debug, Clone)]
pub(crate) enum RField {
    Read { name: String, step: StepId },
    Skip(NodeId),
}

#[derive(Debug, Clone)]
pub(crate) struct DefaultField {
    pub(crate) name: String,
    pub(crate) bytes: Vec<u8>,
    pub(crate) step: StepId,
}

#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// Read `from` and present it as `to` (identical or promoted).
    Scalar {
        from: Prim,
        to: Prim,
        present: Present,
    },
    /// A fixed-size value (fixed, duration, uuid as fixed, decimal as fixed).
    Fixed {
        size: usize,
        present: Present,
    },
    Record {
        name: String,
        fields: Vec<RField>,
        defaults: Vec<DefaultField>,
    },
    /// Writer symbol index → reader symbol (None: unknown to the reader, which has no default).
    Enum {
        name: String,
        symbols: Arc<[String]>,
        map: Vec<Option<usize>>,
        writer_symbols: Vec<String>,
    },
    Array(StepId),
    Map(StepId),
    /// A writer union: per writer branch, the step and the reader branch name, or why it can't be read.
    Union(Vec<Result<(StepId, Option<String>), String>>),
    /// A writer non-union read as a branch of a reader union.
    Branch {
        name: String,
        step: StepId,
    },
    /// Placeholder while a recursive record is built.
    Pending,
}

/// A compiled writer → reader resolution. Cheap to clone.
#[derive(Clone)]
pub struct ResolvedPlan(pub(crate) Arc<PlanInner>);

pub(crate) struct PlanInner {
    pub(crate) steps: Vec<Step>,
    pub(crate) root: StepId,
    pub(crate) writer: AvroSchema,
    pub(crate) reader: AvroSchema,
}

impl std::fmt::Debug for ResolvedPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedPlan")
            .field("writer", &self.0.writer.name())
            .field("reader", &self.0.reader.name())
            .field("steps", &self.0.steps.len())
            .finish()
    }
}

impl ResolvedPlan {
    /// Compiles the plan for reading `writer` data as `reader`.
    pub fn new(writer: &AvroSchema, reader: &AvroSchema) -> Result<ResolvedPlan, ResolveError> {
        let mut b = Builder {
            wg: writer.graph(),
            rg: reader.graph(),
            steps: Vec::new(),
            memo: HashMap::new(),
        };
        let root = b.build(false, 0, 0).map_err(|message| ResolveError {
            writer: writer.name().map_or_else(|| short(writer.graph(), 0), str::to_string),
            reader: reader.name().map_or_else(|| short(reader.graph(), 0), str::to_string),
            message,
        })?;
        Ok(ResolvedPlan(Arc::new(PlanInner {
            steps: b.steps,
            root,
            writer: writer.clone(),
            reader: reader.clone(),
        })))
    }

    /// The plan that reads data written with `schema` as itself.
    pub fn identity(schema: &AvroSchema) -> ResolvedPlan {
        // Reading a schema as itself cannot fail, but keep the error path total.
        Self::new(schema, schema).unwrap_or_else(|_| {
            ResolvedPlan(Arc::new(PlanInner {
                steps: vec![Step::Pending],
                root: 0,
                writer: schema.clone(),
                reader: schema.clone(),
            }))
        })
    }

    /// The writer schema.
    pub fn writer(&self) -> &AvroSchema {
        &self.0.writer
    }

    /// The reader schema.
    pub fn reader(&self) -> &AvroSchema {
        &self.0.reader
    }
}

struct Builder<'g> {
    wg: &'g Graph,
    rg: &'g Graph,
    steps: Vec<Step>,
    memo: HashMap<(bool, NodeId, NodeId), StepId>,
}

/// A node seen as (primitive encoding, presentation).
fn scalar(n: &Node) -> Option<(Prim, Present)> {
    Some(match n {
        Node::Null => (Prim::Null, Present::Plain),
        Node::Boolean => (Prim::Boolean, Present::Plain),
        Node::Int => (Prim::Int, Present::Plain),
        Node::Long => (Prim::Long, Present::Plain),
        Node::Float => (Prim::Float, Present::Plain),
        Node::Double => (Prim::Double, Present::Plain),
        Node::Bytes => (Prim::Bytes, Present::Latin1),
        Node::String => (Prim::String, Present::Plain),
        Node::Date => (Prim::Int, Present::Date),
        Node::TimeMillis => (Prim::Int, Present::TimeMillis),
        Node::TimeMicros => (Prim::Long, Present::TimeMicros),
        Node::Timestamp { unit, local } => (
            Prim::Long,
            Present::Timestamp {
                unit: *unit,
                local: *local,
            },
        ),
        Node::Uuid(UuidRepr::String) => (Prim::String, Present::Uuid),
        Node::Decimal { scale, fixed: None, .. } => (Prim::Bytes, Present::Decimal { scale: *scale }),
        _ => return None,
    })
}

fn promotes(from: Prim, to: Prim) -> bool {
    use Prim::*;
    from == to
        || matches!(
            (from, to),
            (Int, Long)
                | (Int, Float)
                | (Int, Double)
                | (Long, Float)
                | (Long, Double)
                | (Float, Double)
                | (String, Bytes)
                | (Bytes, String)
        )
}

fn fixed_like(n: &Node) -> Option<(usize, Present, Option<&str>)> {
    Some(match n {
        Node::Fixed { name, size } => (*size, Present::Latin1, Some(name.as_str())),
        Node::Duration => (12, Present::Latin1, None),
        Node::Uuid(UuidRepr::Fixed) => (16, Present::Uuid, None),
        Node::Decimal {
            scale,
            fixed: Some(size),
            ..
        } => (*size, Present::Decimal { scale: *scale }, None),
        _ => return None,
    })
}

fn same_name(a: &str, b: &str) -> bool {
    a == b || a.rsplit('.').next() == b.rsplit('.').next()
}

impl Builder<'_> {
    fn wnode(&self, identity: bool, w: NodeId) -> &Node {
        if identity { &self.rg.nodes[w] } else { &self.wg.nodes[w] }
    }

    fn wdesc(&self, identity: bool, w: NodeId) -> String {
        describe(if identity { self.rg } else { self.wg }, w)
    }

    fn push(&mut self, s: Step) -> StepId {
        self.steps.push(s);
        self.steps.len() - 1
    }

    /// Whether the writer node can be read as the reader node (for picking a reader union branch).
    fn matches(&self, identity: bool, w: NodeId, r: NodeId, exact: bool) -> bool {
        let (wn, rn) = (self.wnode(identity, w), &self.rg.nodes[r]);
        match (wn, rn) {
            (Node::Record(a), Node::Record(b)) => same_name(&a.name, &b.name),
            (Node::Enum(a), Node::Enum(b)) => same_name(&a.name, &b.name),
            (Node::Array(_), Node::Array(_)) | (Node::Map(_), Node::Map(_)) => true,
            _ => {
                if let (Some((wf, _, wname)), Some((rf, _, rname))) = (fixed_like(wn), fixed_like(rn)) {
                    return wf == rf && wname.zip(rname).is_none_or(|(a, b)| same_name(a, b));
                }
                match (scalar(wn), scalar(rn)) {
                    (Some((a, _)), Some((b, _))) => {
                        if exact {
                            a == b
                        } else {
                            promotes(a, b)
                        }
                    }
                    _ => false,
                }
            }
        }
    }

    fn build(&mut self, identity: bool, w: NodeId, r: NodeId) -> Result<StepId, String> {
        if let Some(s) = self.memo.get(&(identity, w, r)) {
            return Ok(*s);
        }
        let wn = self.wnode(identity, w).clone();
        let rn = self.rg.nodes[r].clone();
        if let Node::Union(wb) = &wn {
            let id = self.push(Step::Pending);
            self.memo.insert((identity, w, r), id);
            let mut branches = Vec::with_capacity(wb.len());
            for b in wb {
                // Union to union: straight to the reader's branch, with no extra level in between.
                let built = match &rn {
                    Node::Union(rb) => match self.pick_branch(identity, *b, rb) {
                        Some(i) => self
                            .build(identity, *b, rb[i])
                            .map(|s| (s, Some(short(self.rg, rb[i])))),
                        None => Err(format!(
                            "{} matches no branch of the reader's {}",
                            self.wdesc(identity, *b),
                            describe(self.rg, r)
                        )),
                    },
                    _ => self.build(identity, *b, r).map(|s| (s, None)),
                };
                branches.push(built);
            }
            self.steps[id] = Step::Union(branches);
            return Ok(id);
        }
        if let Node::Union(rb) = &rn {
            let i = self.pick_branch(identity, w, rb).ok_or_else(|| {
                format!(
                    "{} matches no branch of the reader's {}",
                    self.wdesc(identity, w),
                    describe(self.rg, r)
                )
            })?;
            let step = self.build(identity, w, rb[i])?;
            let id = self.push(Step::Branch {
                name: short(self.rg, rb[i]),
                step,
            });
            self.memo.insert((identity, w, r), id);
            return Ok(id);
        }
        let incompatible = || format!("{} cannot be read as {}", self.wdesc(identity, w), describe(self.rg, r));
        let step = match (&wn, &rn) {
            (Node::Record(wr), Node::Record(rr)) => {
                if !same_name(&wr.name, &rr.name) {
                    return Err(incompatible());
                }
                let id = self.push(Step::Pending);
                self.memo.insert((identity, w, r), id);
                let mut fields = Vec::with_capacity(wr.fields.len());
                for wf in &wr.fields {
                    match rr.lookup.get(&wf.name) {
                        Some(&ri) => {
                            let step = self
                                .build(identity, wf.node, rr.fields[ri].node)
                                .map_err(|e| format!("field `{}`: {e}", wf.name))?;
                            fields.push(RField::Read {
                                name: wf.name.clone(),
                                step,
                            });
                        }
                        None => fields.push(RField::Skip(wf.node)),
                    }
                }
                let mut defaults = Vec::new();
                for rf in &rr.fields {
                    if wr.lookup.contains_key(&rf.name) {
                        continue;
                    }
                    let bytes = rf.default_bytes.clone().ok_or_else(|| {
                        format!(
                            "reader field `{}` ({}) has no default and the writer's record {} does not have it",
                            rf.name,
                            describe(self.rg, rf.node),
                            wr.name
                        )
                    })?;
                    let step = self.build(true, rf.node, rf.node)?;
                    defaults.push(DefaultField {
                        name: rf.name.clone(),
                        bytes,
                        step,
                    });
                }
                self.steps[id] = Step::Record {
                    name: rr.name.clone(),
                    fields,
                    defaults,
                };
                return Ok(id);
            }
            (Node::Enum(we), Node::Enum(re)) => {
                if !same_name(&we.name, &re.name) {
                    return Err(incompatible());
                }
                let map = we
                    .symbols
                    .iter()
                    .map(|s| re.lookup.get(s).copied().or(re.default))
                    .collect();
                Step::Enum {
                    name: re.name.clone(),
                    symbols: re.symbols.clone().into(),
                    map,
                    writer_symbols: we.symbols.clone(),
                }
            }
            (Node::Array(wi), Node::Array(ri)) => {
                let id = self.push(Step::Pending);
                self.memo.insert((identity, w, r), id);
                let s = self
                    .build(identity, *wi, *ri)
                    .map_err(|e| format!("array items: {e}"))?;
                self.steps[id] = Step::Array(s);
                return Ok(id);
            }
            (Node::Map(wi), Node::Map(ri)) => {
                let id = self.push(Step::Pending);
                self.memo.insert((identity, w, r), id);
                let s = self.build(identity, *wi, *ri).map_err(|e| format!("map values: {e}"))?;
                self.steps[id] = Step::Map(s);
                return Ok(id);
            }
            _ => {
                if let (Some((ws, _, wname)), Some((rs, present, rname))) = (fixed_like(&wn), fixed_like(&rn)) {
                    if ws != rs || !wname.zip(rname).is_none_or(|(a, b)| same_name(a, b)) {
                        return Err(incompatible());
                    }
                    Step::Fixed { size: rs, present }
                } else {
                    match (scalar(&wn), scalar(&rn)) {
                        (Some((from, _)), Some((to, present))) if promotes(from, to) => {
                            let present = if to == Prim::String && present == Present::Latin1 {
                                Present::Plain
                            } else {
                                present
                            };
                            Step::Scalar { from, to, present }
                        }
                        _ => return Err(incompatible()),
                    }
                }
            }
        };
        let id = self.push(step);
        self.memo.insert((identity, w, r), id);
        Ok(id)
    }

    /// The reader union branch a writer node is read as: the first exact match, else the first promotion.
    fn pick_branch(&self, identity: bool, w: NodeId, rb: &[NodeId]) -> Option<usize> {
        rb.iter()
            .position(|b| self.matches(identity, w, *b, true))
            .or_else(|| rb.iter().position(|b| self.matches(identity, w, *b, false)))
    }
}

/// A cache of resolution plans keyed by writer schema id and reader schema, so each plan is built once.
///
/// Lookups hash nothing: the key is the writer id and the reader's precomputed fingerprint, and the reader
/// is then compared by identity (the usual case: one parsed reader schema per consumer) or by content.
#[derive(Default)]
pub struct PlanCache {
    plans: RwLock<PlanMap>,
}

/// Plans by (writer id, reader fingerprint).
type PlanMap = HashMap<(u32, u64), Vec<ResolvedPlan>, BuildHasherDefault<KeyHasher>>;

/// Hashes a plan key, a schema id and a fingerprint that is already a hash, by mixing the words it is given:
/// SipHash costs more than the rest of a lookup on a consumer's per-message path, and the keys are not chosen
/// by an attacker (ids come from the registry, fingerprints from the schemas).
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl std::fmt::Debug for PlanCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanCache").field("plans", &self.len()).finish()
    }
}

impl PlanCache {
    /// An empty cache.
    pub fn new() -> PlanCache {
        PlanCache::default()
    }

    /// The cached plan for data written with schema `writer_id` read as `reader`.
    pub fn get(&self, writer_id: u32, reader: &AvroSchema) -> Option<ResolvedPlan> {
        let plans = self.plans.read().ok()?;
        plans
            .get(&(writer_id, reader.fingerprint()))?
            .iter()
            .find(|p| p.reader() == reader)
            .cloned()
    }

    /// Builds (or returns the cached) plan for `writer` (registered as `writer_id`) read as `reader`.
    pub fn get_or_build(
        &self,
        writer_id: u32,
        writer: &AvroSchema,
        reader: &AvroSchema,
    ) -> Result<ResolvedPlan, ResolveError> {
        if let Some(p) = self.get(writer_id, reader) {
            return Ok(p);
        }
        let plan = ResolvedPlan::new(writer, reader)?;
        if let Ok(mut plans) = self.plans.write() {
            let same = plans.entry((writer_id, reader.fingerprint())).or_default();
            if !same.iter().any(|p| p.reader() == reader) {
                same.push(plan.clone());
            }
        }
        Ok(plan)
    }

    /// Number of cached plans.
    pub fn len(&self) -> usize {
        self.plans
            .read()
            .map(|p| p.values().map(Vec::len).sum())
            .unwrap_or_default()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
