//! Resolution plans: how to read data written with one schema (the writer's) as another (the reader's),
//! compiled once per (writer, reader) pair. Covers the Avro spec's rules: defaults for fields the writer
//! lacks, skipping fields the reader lacks, numeric and string/bytes promotions, enum symbol mapping with
//! the reader's default, and union branches on either side.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Why a writer node cannot be read as a reader node although their encodings match, when a decimal is
/// involved: the Avro specification resolves two decimals only when their precision and scale are equal (reading
/// the unscaled integer at another scale would give another number), and a string is never a decimal's bytes.
fn decimal_mismatch(w: &Node, r: &Node) -> Option<&'static str> {
    match (w, r) {
        (
            Node::Decimal {
                precision: wp,
                scale: ws,
                ..
            },
            Node::Decimal {
                precision: rp,
                scale: rs,
                ..
            },
        ) if (wp, ws) != (rp, rs) => Some(
            "decimals resolve only when precision and scale are equal (Avro specification); read the data with the writer's decimal type, or write a new field and convert in code",
        ),
        (Node::String, Node::Decimal { .. }) | (Node::Decimal { .. }, Node::String) => {
            Some("a decimal's bytes are a binary integer, not text")
        }
        _ => None,
    }
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
            _ if decimal_mismatch(wn, rn).is_some() => false,
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
                if let Some(why) = decimal_mismatch(&wn, &rn) {
                    return Err(format!("{}: {why}", incompatible()));
                }
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
///
/// The cache holds at most [`max_plans`](Self::max_plans) plans ([`PlanCache::DEFAULT_MAX_PLANS`] unless
/// built with [`with_max_plans`](Self::with_max_plans)): writer ids come from the messages, so a cache without
/// a bound would grow with every schema id a topic ever carried. When full, adding a plan evicts one of the
/// least recently used (recency is counted in insertions, so a lookup stays a shared read).
pub struct PlanCache {
    plans: RwLock<Plans>,
    max_plans: usize,
    /// Advanced on every insertion; a lookup stamps the plan it finds with it.
    clock: AtomicU64,
}

#[derive(Default)]
struct Plans {
    map: PlanMap,
    len: usize,
}

/// A cached plan and when it was last used.
struct Cached {
    plan: ResolvedPlan,
    used: AtomicU64,
}

/// Plans by (writer id, reader fingerprint).
type PlanMap = HashMap<(u32, u64), Vec<Cached>, BuildHasherDefault<KeyHasher>>;

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
        f.debug_struct("PlanCache")
            .field("plans", &self.len())
            .field("max_plans", &self.max_plans)
            .finish()
    }
}

impl Default for PlanCache {
    fn default() -> Self {
        PlanCache::with_max_plans(PlanCache::DEFAULT_MAX_PLANS)
    }
}

impl PlanCache {
    /// How many plans a cache keeps unless told otherwise: one per (writer schema id, reader schema) pair.
    pub const DEFAULT_MAX_PLANS: usize = 10_000;

    /// An empty cache keeping at most [`DEFAULT_MAX_PLANS`](Self::DEFAULT_MAX_PLANS) plans.
    pub fn new() -> PlanCache {
        PlanCache::default()
    }

    /// An empty cache keeping at most `max_plans` plans (at least 1).
    pub fn with_max_plans(max_plans: usize) -> PlanCache {
        PlanCache {
            plans: RwLock::default(),
            max_plans: max_plans.max(1),
            clock: AtomicU64::new(0),
        }
    }

    /// The most plans this cache keeps.
    pub fn max_plans(&self) -> usize {
        self.max_plans
    }

    /// The cached plan for data written with schema `writer_id` read as `reader`.
    pub fn get(&self, writer_id: u32, reader: &AvroSchema) -> Option<ResolvedPlan> {
        self.with_plan(writer_id, reader, ResolvedPlan::clone)
    }

    /// `use_plan` applied to the cached plan for data written with schema `writer_id` read as `reader`, without
    /// cloning it (a message decoded on several threads at once then touches no shared reference count).
    pub fn with_plan<R>(
        &self,
        writer_id: u32,
        reader: &AvroSchema,
        use_plan: impl FnOnce(&ResolvedPlan) -> R,
    ) -> Option<R> {
        let plans = self.plans.read().ok()?;
        let found = plans
            .map
            .get(&(writer_id, reader.fingerprint()))?
            .iter()
            .find(|c| c.plan.reader() == reader)?;
        let now = self.clock.load(Ordering::Relaxed);
        if found.used.load(Ordering::Relaxed) != now {
            found.used.store(now, Ordering::Relaxed);
        }
        Some(use_plan(&found.plan))
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
            let key = (writer_id, reader.fingerprint());
            let known = plans
                .map
                .get(&key)
                .is_some_and(|same| same.iter().any(|c| c.plan.reader() == reader));
            if !known {
                if plans.len >= self.max_plans {
                    plans.evict_least_recently_used();
                }
                let now = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
                plans.map.entry(key).or_default().push(Cached {
                    plan: plan.clone(),
                    used: AtomicU64::new(now),
                });
                plans.len += 1;
            }
        }
        Ok(plan)
    }

    /// Number of cached plans.
    pub fn len(&self) -> usize {
        self.plans.read().map(|p| p.len).unwrap_or_default()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Plans {
    /// Removes one of the plans used longest ago.
    fn evict_least_recently_used(&mut self) {
        let oldest = self
            .map
            .iter()
            .flat_map(|(key, same)| {
                same.iter()
                    .enumerate()
                    .map(move |(i, c)| (c.used.load(Ordering::Relaxed), *key, i))
            })
            .min_by_key(|(used, ..)| *used);
        if let Some((_, key, i)) = oldest
            && let Some(same) = self.map.get_mut(&key)
        {
            same.swap_remove(i);
            if same.is_empty() {
                self.map.remove(&key);
            }
            self.len -= 1;
        }
    }
}
