#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]
//! Property-based fuzzing of the codec: untrusted bytes and payloads must give errors, never panics, and
//! whatever is accepted must read back.
//!
//! Run (every target's name contains `fuzz`):
//!
//! ```text
//! cargo nextest run -p deimos-avro fuzz                       # a few seconds in debug
//! PROPTEST_CASES=100000 cargo nextest run -p deimos-avro fuzz # a long run (use --release to go faster)
//! PROPTEST_RNG_SEED=$RANDOM cargo nextest run -p deimos-avro fuzz # new inputs (the default seed is fixed)
//! ```
//!
//! `PROPTEST_CASES` replaces every target's own case count. Failing inputs are shrunk and printed, not
//! persisted (no `proptest-regressions/` files); turn a failure into a plain test next to its cause.
//!
//! Targets:
//! - decoding arbitrary and mutated bytes against `com.acme.Widget`, `com.acme.Everything`, a recursive
//!   schema with nested arrays, maps and unions, and a writer → reader resolution plan for each, into JSON
//!   values, into Rust types and into a probe that asks the `Deserializer` for fuzzed type hints (so the
//!   string renderings of logical types, options, enums and unions as Rust enums all run);
//! - the same bytes decoded by apache-avro, which must agree with us on `com.acme.Widget` (as written and
//!   through the evolved reader) and read no `com.acme.Everything` encoding we refuse;
//! - recursion deeper than the decoder's limit: an error, not a stack overflow;
//! - arbitrary and mutated JSON payloads through `encode_value`, `coerce`, `add_auto_fields` and the typed
//!   serializer (`encode(&serde_json::Value)`): no panics, and accepted payloads decode again, are read by
//!   apache-avro, and re-encode to the same bytes;
//! - generated schemas (every type, logical types, named and recursive types, defaults), paired with an
//!   evolution of themselves or another generated schema: parsing, compiling and resolving never panic,
//!   payloads made for the writer pass the checks above and read through the plan;
//! - round trips of arbitrary valid widgets: typed encode → decode gives the widget back, the dynamic path
//!   and apache-avro write the same bytes, and the evolved reader reads them.
//!
//! Below the targets, plain tests keep the bugs these targets found fixed.

use std::path::Path;
use std::sync::LazyLock;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use deimos_avro::{AvroSchema, ResolvedPlan, SchemaStore, wire};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde::Deserialize;
use serde_json::{Value as Json, json};

// ---------------------------------------------------------------------------------------------------
// Schemas.

/// A newer `com.acme.Everything`: promotions of every kind, a dropped field, a field added (also inside the
/// nested record), an enum with a new symbol, a union branch promoted.
const EVERYTHING_V2: &str = r#"{
  "type": "record", "name": "Everything", "namespace": "com.acme",
  "fields": [
    {"name": "b", "type": "boolean"},
    {"name": "i", "type": "long"},
    {"name": "l", "type": "double"},
    {"name": "f", "type": "double"},
    {"name": "s", "type": "bytes"},
    {"name": "raw", "type": "string"},
    {"name": "fx", "type": {"type": "fixed", "name": "Four", "size": 4}},
    {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN", "BLUE"], "default": "BLUE"}},
    {"name": "nums", "type": {"type": "array", "items": "double"}},
    {"name": "attrs", "type": {"type": "map", "values": "long"}},
    {"name": "inner", "type": {"type": "record", "name": "Inner", "fields": [{"name": "x", "type": "long"}, {"name": "y", "type": "int", "default": 3}]}},
    {"name": "opt", "type": ["null", "string", "double"], "default": null},
    {"name": "ts_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "ts_us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    {"name": "day", "type": {"type": "int", "logicalType": "date"}},
    {"name": "tod", "type": {"type": "int", "logicalType": "time-millis"}},
    {"name": "uid", "type": {"type": "string", "logicalType": "uuid"}},
    {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
    {"name": "extra", "type": {"type": "array", "items": "string"}, "default": []}
  ]
}"#;

/// A recursive record with nested arrays, maps and unions and the logical types `Everything` lacks.
const TREE: &str = r#"{
  "type": "record", "name": "Tree", "namespace": "fuzz",
  "fields": [
    {"name": "label", "type": "string"},
    {"name": "children", "type": {"type": "array", "items": "Tree"}},
    {"name": "next", "type": ["null", "Tree"], "default": null},
    {"name": "matrix", "type": {"type": "array", "items": {"type": "array", "items": ["null", "int", "string"]}}},
    {"name": "index", "type": {"type": "map", "values": {"type": "array", "items": {"type": "map", "values": ["null", "double", "Tree"]}}}},
    {"name": "u", "type": ["null", "boolean", "int", "long", "float", "double", "bytes", "string",
      {"type": "fixed", "name": "F2", "size": 2},
      {"type": "enum", "name": "E", "symbols": ["A", "B"], "default": "A"},
      {"type": "array", "items": "long"},
      {"type": "map", "values": "string"}]},
    {"name": "ufix", "type": {"type": "fixed", "name": "U16", "size": 16, "logicalType": "uuid"}},
    {"name": "dfix", "type": {"type": "fixed", "name": "D8", "size": 8, "logicalType": "decimal", "precision": 18, "scale": 4}},
    {"name": "dur", "type": {"type": "fixed", "name": "Dur", "size": 12, "logicalType": "duration"}},
    {"name": "lts", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
    {"name": "tns", "type": {"type": "long", "logicalType": "timestamp-nanos"}},
    {"name": "tmu", "type": {"type": "long", "logicalType": "time-micros"}},
    {"name": "nulls", "type": {"type": "array", "items": "null"}}
  ]
}"#;

/// A newer `fuzz.Tree`: keeps the recursion, skips the nested containers (so skipping recurses), adds a field.
const TREE_V2: &str = r#"{
  "type": "record", "name": "Tree", "namespace": "fuzz",
  "fields": [
    {"name": "label", "type": "bytes"},
    {"name": "children", "type": {"type": "array", "items": "Tree"}},
    {"name": "next", "type": ["null", "Tree"], "default": null},
    {"name": "u", "type": ["null", "boolean", "long", "double", "string", "bytes",
      {"type": "fixed", "name": "F2", "size": 2},
      {"type": "enum", "name": "E", "symbols": ["A", "B", "C"], "default": "A"},
      {"type": "array", "items": "double"},
      {"type": "map", "values": "bytes"}]},
    {"name": "tns", "type": {"type": "long", "logicalType": "timestamp-nanos"}},
    {"name": "weight", "type": "double", "default": 1.0}
  ]
}"#;

struct Fixtures {
    widget: AvroSchema,
    widget_v2: AvroSchema,
    everything: AvroSchema,
    tree: AvroSchema,
    /// (name, writer schema, plan) for every decode target.
    plans: Vec<(&'static str, AvroSchema, ResolvedPlan)>,
    /// Valid encodings to mutate, two per schema in `schemas()` order.
    seeds: Vec<Vec<u8>>,
}

impl Fixtures {
    fn schemas(&self) -> [&AvroSchema; 3] {
        [&self.widget, &self.everything, &self.tree]
    }
}

static FIXTURES: LazyLock<Fixtures> = LazyLock::new(|| {
    let store = SchemaStore::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas"));
    let widget = store.get("com.acme.Widget").unwrap();
    let everything = store.get("com.acme.Everything").unwrap();
    let tree = AvroSchema::parse(TREE).unwrap();
    let widget_v2 = AvroSchema::parse(WIDGET_V2).unwrap();
    let everything_v2 = AvroSchema::parse(EVERYTHING_V2).unwrap();
    let tree_v2 = AvroSchema::parse(TREE_V2).unwrap();
    let plan = |w: &AvroSchema, r: &AvroSchema| ResolvedPlan::new(w, r).unwrap();
    let plans = vec![
        ("Widget", widget.clone(), ResolvedPlan::identity(&widget)),
        ("Widget→V2", widget.clone(), plan(&widget, &widget_v2)),
        ("Everything", everything.clone(), ResolvedPlan::identity(&everything)),
        ("Everything→V2", everything.clone(), plan(&everything, &everything_v2)),
        ("Tree", tree.clone(), ResolvedPlan::identity(&tree)),
        ("Tree→V2", tree.clone(), plan(&tree, &tree_v2)),
    ];
    let mut seeds = Vec::new();
    for (i, s) in [&widget, &everything, &tree].into_iter().enumerate() {
        for p in payloads(i) {
            seeds.push(s.encode_value(&p).unwrap());
        }
    }
    Fixtures {
        widget,
        widget_v2,
        everything,
        tree,
        plans,
        seeds,
    }
});

// ---------------------------------------------------------------------------------------------------
// Valid payloads (seeds for mutation).

fn widget_json() -> Json {
    json!({
        "id": 1_234_567, "message_id": "6f1c0d3e-8a52-4b7e-9f0a-2c3d4e5f6a7b", "name": "Sprocket",
        "description": "zinc plated", "price": 19.99, "quantity": "7", "status": "ACTIVE",
        "tags": ["hardware", "zinc", "large"], "updated_at": "1764000000000", "parent_id": 42
    })
}

fn everything_json() -> Json {
    json!({
        "b": true, "i": -3, "l": 1_234_567_890_123i64, "f": 1.5, "d": -2.25, "s": "héllo",
        "raw": "\u{0}\u{ff}x", "fx": "abcd", "color": "GREEN", "nums": [1, -1, 300],
        "attrs": {"x": 1, "y": 2}, "inner": {"x": 5, "flag": true}, "opt": 12,
        "ts_ms": "2024-01-02T03:04:05.678Z", "ts_us": 5, "day": "2024-02-29", "tod": "12:34:56.789",
        "uid": "123e4567-e89b-12d3-a456-426614174000", "amount": "-12.34"
    })
}

fn tree_node(label: &str, children: Vec<Json>, next: Json, u: Json) -> Json {
    json!({
        "label": label, "children": children, "next": next,
        "matrix": [[null, 1, "two"], [], [-3]],
        "index": {"k": [{"a": 1.5, "b": null}, {}], "empty": []},
        "u": u,
        "ufix": "123e4567-e89b-12d3-a456-426614174000", "dfix": "-12345.6789",
        "dur": "\u{1}\u{0}\u{0}\u{0}\u{2}\u{0}\u{0}\u{0}\u{3}\u{0}\u{0}\u{0}",
        "lts": "2024-01-02T03:04:05", "tns": 1_700_000_000_000_000_000i64, "tmu": "01:02:03.000004",
        "nulls": [null, null]
    })
}

fn tree_json() -> Json {
    let leaf = |l: &str, u: Json| tree_node(l, vec![], Json::Null, u);
    let inner = tree_node(
        "inner",
        vec![leaf("x", json!("B"))],
        leaf("y", json!([1, 2])),
        json!({"m": "v"}),
    );
    let mut root = tree_node(
        "root",
        vec![inner, leaf("z", json!(2.5))],
        leaf("n", json!(true)),
        json!(7),
    );
    root["index"]["deep"] = json!([{"t": leaf("in-map", json!("ab"))}]);
    root
}

fn payloads(schema: usize) -> Vec<Json> {
    match schema {
        0 => {
            let mut w = widget_json();
            let mut w2 = w.clone();
            w2["parent_id"] = Json::Null;
            w2["tags"] = json!([]);
            w["payload_key"] = json!("1234567");
            vec![w, w2]
        }
        1 => {
            let mut e = everything_json();
            let mut e2 = e.clone();
            e2["opt"] = json!("text");
            e2["nums"] = json!([]);
            e2["attrs"] = json!({});
            e["opt"] = Json::Null;
            vec![e, e2]
        }
        _ => vec![tree_json(), tree_node("lone", vec![], Json::Null, Json::Null)],
    }
}

// ---------------------------------------------------------------------------------------------------
// Decode targets: the Widget types, and a probe for every other path of the `Deserializer`.

#[path = "support/widget.rs"]
mod widget;
use widget::{Status, WIDGET_V2_SCHEMA as WIDGET_V2, Widget, WidgetV2};

/// A value that asks the deserializer for whatever the next hint says (`deserialize_str`, `_bytes`, `_seq`,
/// `_f64`, `_option`, `_enum`, ...) and accepts anything it is given, recursively. Driven by fuzzed hints, it
/// walks every path of the serde `Deserializer`, including the string renderings of logical types.
#[derive(Debug)]
struct Probe;

thread_local! {
    static HINTS: std::cell::RefCell<(Vec<u8>, usize)> = const { std::cell::RefCell::new((Vec::new(), 0)) };
    static PROBE_DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn set_hints(hints: &[u8]) {
    HINTS.with(|h| *h.borrow_mut() = (hints.to_vec(), 0));
    PROBE_DEPTH.set(0);
}

fn next_hint() -> u8 {
    HINTS.with(|h| {
        let mut h = h.borrow_mut();
        let (hints, i) = &mut *h;
        if hints.is_empty() {
            return 0;
        }
        let x = hints[*i % hints.len()];
        *i += 1;
        x
    })
}

impl<'de> Deserialize<'de> for Probe {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Probe, D::Error> {
        // Guards the harness against serde's own value deserializers looping; deimos-avro's decoder must stop
        // far earlier.
        if PROBE_DEPTH.get() > 4_000 {
            return Err(serde::de::Error::custom("probe recursion"));
        }
        PROBE_DEPTH.set(PROBE_DEPTH.get() + 1);
        let result = probe(d);
        PROBE_DEPTH.set(PROBE_DEPTH.get() - 1);
        result
    }
}

fn probe<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Probe, D::Error> {
    match next_hint() % 16 {
        0..=2 => d.deserialize_any(ProbeVisitor),
        3 => d.deserialize_str(ProbeVisitor),
        4 => d.deserialize_string(ProbeVisitor),
        5 => d.deserialize_bytes(ProbeVisitor),
        6 => d.deserialize_byte_buf(ProbeVisitor),
        7 => d.deserialize_seq(ProbeVisitor),
        8 => d.deserialize_f64(ProbeVisitor),
        9 => d.deserialize_option(ProbeVisitor),
        10 => d.deserialize_enum("E", &["A", "B", "Long", "Tree"], ProbeVisitor),
        11 => d.deserialize_ignored_any(ProbeVisitor),
        12 => d.deserialize_map(ProbeVisitor),
        13 => d.deserialize_tuple(2, ProbeVisitor),
        14 => d.deserialize_i64(ProbeVisitor),
        _ => d.deserialize_struct("Tree", &["label", "next"], ProbeVisitor),
    }
}

struct ProbeVisitor;

impl<'de> serde::de::Visitor<'de> for ProbeVisitor {
    type Value = Probe;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("anything")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Probe, E> {
        Ok(Probe)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Probe, E> {
        Ok(Probe)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Probe, E> {
        Ok(Probe)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Probe, E> {
        Ok(Probe)
    }
    fn visit_str<E>(self, _: &str) -> Result<Probe, E> {
        Ok(Probe)
    }
    fn visit_bytes<E>(self, _: &[u8]) -> Result<Probe, E> {
        Ok(Probe)
    }
    fn visit_none<E>(self) -> Result<Probe, E> {
        Ok(Probe)
    }
    fn visit_unit<E>(self) -> Result<Probe, E> {
        Ok(Probe)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Probe, D::Error> {
        Probe::deserialize(d)
    }
    fn visit_newtype_struct<D: serde::Deserializer<'de>>(self, d: D) -> Result<Probe, D::Error> {
        Probe::deserialize(d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Probe, A::Error> {
        while seq.next_element::<Probe>()?.is_some() {}
        Ok(Probe)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Probe, A::Error> {
        while map.next_entry::<Probe, Probe>()?.is_some() {}
        Ok(Probe)
    }
    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> Result<Probe, A::Error> {
        use serde::de::VariantAccess;
        // The variant name is a plain string deserializer; a `Probe` there could ask it for an enum forever.
        let (serde::de::IgnoredAny, variant) = data.variant::<serde::de::IgnoredAny>()?;
        match next_hint() % 4 {
            0 => variant.unit_variant()?,
            1 => {
                variant.newtype_variant::<Probe>()?;
            }
            2 => {
                variant.tuple_variant(2, ProbeVisitor)?;
            }
            _ => {
                variant.struct_variant(&["label"], ProbeVisitor)?;
            }
        }
        Ok(Probe)
    }
}

/// Decodes `bytes` with every plan, into JSON, into the Widget types and into a [`Probe`] driven by `hints`;
/// only panics (and typed/JSON disagreement on Widget) fail.
fn decode_everywhere(bytes: &[u8], hints: &[u8]) {
    for (name, _, plan) in &FIXTURES.plans {
        let value = plan.decode_value(bytes);
        let typed_ok = match *name {
            "Widget" => Some(plan.decode::<Widget>(bytes).is_ok()),
            "Widget→V2" => Some(plan.decode::<WidgetV2>(bytes).is_ok()),
            _ => None,
        };
        if let Some(typed_ok) = typed_ok {
            // Every field of the Widget types fits what the plan produces: typed and JSON agree on validity.
            assert_eq!(
                typed_ok,
                value.is_ok(),
                "{name}: typed vs JSON decode of {bytes:?}: {value:?}"
            );
        }
        set_hints(hints);
        let _ = plan.decode::<Probe>(bytes);
        let _ = plan.decode::<serde::de::IgnoredAny>(bytes);
    }
    let _ = wire::parse_header(bytes);
}

/// deimos-avro and apache-avro must accept exactly the same Widget bytes and read the same values, both as
/// written and through the evolved reader schema.
fn widget_agrees_with_apache(bytes: &[u8]) {
    let f = &*FIXTURES;
    let (w, w2) = (f.widget.as_apache(), f.widget_v2.as_apache());
    let plan = ResolvedPlan::new(&f.widget, &f.widget_v2).unwrap();
    let same = GenericDatumReader::builder(w).build().unwrap();
    let evolved = GenericDatumReader::builder(w).reader_schema(w2).build().unwrap();
    agree(
        "Widget",
        bytes,
        |b| f.widget.decode::<Widget>(b),
        |b| apache_read(&same, b).and_then(|v| apache_avro::from_value::<Widget>(&v).ok()),
        false,
    );
    // apache-avro reads the whole writer value before resolving; we skip `description` without checking
    // that it is UTF-8. So through the plan we may accept more, but only what the full read refuses.
    let evolved_ok = agree(
        "Widget→V2",
        bytes,
        |b| plan.decode::<WidgetV2>(b),
        |b| apache_read(&evolved, b).and_then(|v| apache_avro::from_value::<WidgetV2>(&v).ok()),
        true,
    );
    assert!(
        evolved_ok || f.widget.decode::<Widget>(bytes).is_err(),
        "Widget→V2: apache-avro refuses {bytes:?}, which deimos-avro reads fully as written"
    );
}

/// apache-avro's value for the whole of `bytes` (`None` on an error or left-over bytes).
fn apache_read(reader: &GenericDatumReader<'_>, bytes: &[u8]) -> Option<apache_avro::types::Value> {
    let mut rest = bytes;
    reader.read_value(&mut rest).ok().filter(|_| rest.is_empty())
}

/// Both decoders accept `bytes` or both refuse them (or, with `lenient`, only we accept); accepted values
/// print the same (NaN equals NaN). Returns whether apache-avro's answer was the same as ours.
fn agree<T: std::fmt::Debug>(
    what: &str,
    bytes: &[u8],
    ours: impl Fn(&[u8]) -> Result<T, deimos_avro::DecodeError>,
    theirs: impl Fn(&[u8]) -> Option<T>,
    lenient: bool,
) -> bool {
    let (a, b) = (ours(bytes), theirs(bytes));
    match (&a, &b) {
        (Ok(a), Some(b)) => assert_eq!(
            format!("{a:?}"),
            format!("{b:?}"),
            "{what}: decoders disagree on {bytes:?}"
        ),
        (Err(_), None) => {}
        (Ok(_), None) if lenient => return false,
        // apache-avro reads a union index cut off by the end of the data (none or part of its varint) as
        // branch 0, null. `parent_id` is the last field, so that is data ending in or just before it; we call
        // it truncated. Check that it is the same value with the index completed as 0.
        (Err(deimos_avro::DecodeError::Truncated(_)), Some(b)) => {
            let mut with_null = bytes.to_vec();
            while with_null.last().is_some_and(|b| b & 0x80 != 0) {
                with_null.pop();
            }
            with_null.push(0);
            let a = ours(&with_null);
            assert!(
                a.as_ref().is_ok_and(|a| format!("{a:?}") == format!("{b:?}")),
                "{what}: validity differs on {bytes:?}: deimos-avro truncated, apache-avro {b:?}"
            );
        }
        _ => panic!("{what}: validity differs on {bytes:?}: deimos-avro {a:?}, apache-avro {b:?}"),
    }
    true
}

/// What apache-avro accepts as `com.acme.Everything` (the whole input), deimos-avro accepts too. (Not the
/// other way round: apache-avro also checks that a uuid string parses.)
fn everything_accepted_by_apache_is_accepted(bytes: &[u8]) {
    let f = &*FIXTURES;
    let w = f.everything.as_apache();
    let reader = GenericDatumReader::builder(w).build().unwrap();
    if apache_read(&reader, bytes).is_some() {
        let ours = f.everything.decode_value(bytes);
        assert!(ours.is_ok(), "apache-avro reads {bytes:?}, deimos-avro says {ours:?}");
    }
}

/// Equality with NaN == NaN (a double field may hold any bit pattern).
fn same_widget(a: &Widget, b: &Widget) -> bool {
    a.price.to_bits() == b.price.to_bits()
        && Widget {
            price: 0.0,
            ..a.clone()
        } == Widget {
            price: 0.0,
            ..b.clone()
        }
}

// ---------------------------------------------------------------------------------------------------
// Strategies.

/// Proptest config with `cases` unless `PROPTEST_CASES` is set; failures are not persisted to files.
fn config(cases: u32) -> Config {
    let mut c = Config {
        failure_persistence: None,
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    // Deterministic by default, so CI does not fail on a new random input it did not cause; explore with
    // `PROPTEST_RNG_SEED=$RANDOM` (and more `PROPTEST_CASES`).
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = proptest::test_runner::RngSeed::Fixed(0x00de_1705);
    }
    c
}

/// A byte edit: overwrite, insert, delete or truncate at a position.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
    /// Overwrite one byte with a value that matters to varints and lengths (0x7f, 0x80, 0xff, ...).
    Extreme(usize, u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Edit::Set(p, b)),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Edit::Insert(p, b)),
        2 => any::<usize>().prop_map(Edit::Delete),
        1 => any::<usize>().prop_map(Edit::Truncate),
        2 => (any::<usize>(), prop::sample::select(vec![0x7fu8, 0x80, 0xff, 0x01, 0x00, 0xfe]))
            .prop_map(|(p, b)| Edit::Extreme(p, b)),
    ]
}

fn apply_edits(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let n = bytes.len();
        match *e {
            Edit::Set(p, b) | Edit::Extreme(p, b) if n > 0 => bytes[p % n] = b,
            Edit::Insert(p, b) => bytes.insert(p % (n + 1), b),
            Edit::Delete(p) if n > 0 => {
                bytes.remove(p % n);
            }
            Edit::Truncate(p) => bytes.truncate(p % (n + 1)),
            _ => {}
        }
    }
    bytes
}

/// A seed encoding with a few edits applied.
fn mutated_encoding() -> impl Strategy<Value = Vec<u8>> {
    let seeds = FIXTURES.seeds.len();
    (0..seeds, prop::collection::vec(edit(), 1..6))
        .prop_map(|(i, edits)| apply_edits(FIXTURES.seeds[i].clone(), &edits))
}

const INTERESTING: &[&str] = &[
    "",
    "0",
    "7",
    "-1",
    " 42 ",
    "2147483647",
    "2147483648",
    "-2147483649",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "0x1F",
    "-0x8000000000000000",
    "0b101",
    "0o17",
    "1_000",
    "1__0",
    "_1",
    "-+5",
    "+-5",
    "0x+5",
    "-",
    "+",
    "0x",
    "1e3",
    "1.5",
    "-0.0",
    ".5",
    "5.",
    "1e39",
    "-1e39",
    "1e309",
    "1e-400",
    "NaN",
    "inf",
    "true",
    "false",
    "null",
    "ACTIVE",
    "RETIRED",
    "UNKNOWN",
    "RED",
    "GREEN",
    "A",
    "B",
    "2024-02-29",
    "2023-02-29",
    "1970-01-01",
    "-9999-01-01",
    "+262142-12-31",
    "12:34:56.789",
    "23:59:60.999",
    "24:00:00",
    "2024-01-02T03:04:05.678Z",
    "2024-01-02T03:04:05",
    "2024-01-02 03:04:05.123456789",
    "2024-01-02T03:04:05+25:00",
    "9999-12-31T23:59:59.999999999Z",
    "0000-01-01T00:00:00Z",
    "1677-09-21T00:12:43.145224191Z",
    "2262-04-11T23:47:16.854775808Z",
    "6f1c0d3e-8a52-4b7e-9f0a-2c3d4e5f6a7b",
    "urn:uuid:6f1c0d3e-8a52-4b7e-9f0a-2c3d4e5f6a7b",
    "{6f1c0d3e-8a52-4b7e-9f0a-2c3d4e5f6a7b}",
    "6f1c0d3e8a524b7e9f0a2c3d4e5f6a7b",
    "123.45",
    "-0.01",
    "99999999.99",
    "100000000.00",
    "-.",
    "1.000",
    "12345678901234567890123456789012345678",
    "0.123456789012345678901234567890123456789",
    "ab",
    "abcd",
    "\u{ff}\u{0}xy",
    "é",
    "€uro",
    "abcdefghijkl",
    "0123456789abcdef",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(INTERESTING).prop_map(str::to_string),
        1 => ".{0,12}",
        2 => "[-+0-9a-fA-FxXoObB_. eE:TZ]{0,24}",
    ]
}

fn number() -> impl Strategy<Value = Json> {
    prop_oneof![
        (-300i64..300).prop_map(Json::from),
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        prop::sample::select(vec![
            i64::from(i32::MAX),
            i64::from(i32::MAX) + 1,
            i64::from(i32::MIN),
            i64::from(i32::MIN) - 1,
            i64::MAX,
            i64::MIN,
            253_402_300_799_999,
            -62_135_596_800_000,
        ])
        .prop_map(Json::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Json::Number)),
        prop::sample::select(vec![0.5, -0.0, 1e38, 3.5e38, -1e300, 1e-46, 12.345, 123.45]).prop_map(Json::from),
    ]
}

const KEYS: &[&str] = &[
    "id",
    "message_id",
    "name",
    "description",
    "price",
    "quantity",
    "status",
    "tags",
    "updated_at",
    "parent_id",
    "payload_key",
    "partition_key",
    "timestamp",
    "b",
    "i",
    "l",
    "f",
    "d",
    "s",
    "raw",
    "fx",
    "color",
    "nums",
    "attrs",
    "inner",
    "x",
    "flag",
    "opt",
    "ts_ms",
    "ts_us",
    "day",
    "tod",
    "uid",
    "amount",
    "label",
    "children",
    "next",
    "matrix",
    "index",
    "u",
    "ufix",
    "dfix",
    "dur",
    "lts",
    "tns",
    "tmu",
    "nulls",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_string),
        1 => ".{0,6}",
    ]
}

fn leaf() -> impl Strategy<Value = Json> {
    prop_oneof![
        1 => Just(Json::Null),
        1 => any::<bool>().prop_map(Json::Bool),
        3 => number(),
        3 => text().prop_map(Json::String),
    ]
}

/// Arbitrary JSON trees, keys biased towards the field names of the schemas.
fn json_tree() -> impl Strategy<Value = Json> {
    leaf().prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Json::Array),
            prop::collection::btree_map(key(), inner, 0..10).prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

/// Replaces (`Some`) or removes (`None`) the `n`th descendant of `v` in pre-order; returns whether it did.
fn edit_json(v: &mut Json, n: &mut usize, with: &Option<Json>) -> bool {
    match v {
        Json::Array(items) => {
            let mut i = 0;
            while i < items.len() {
                if *n == 0 {
                    match with {
                        Some(w) => items[i] = w.clone(),
                        None => {
                            items.remove(i);
                        }
                    }
                    return true;
                }
                *n -= 1;
                if edit_json(&mut items[i], n, with) {
                    return true;
                }
                i += 1;
            }
            false
        }
        Json::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if *n == 0 {
                    match with {
                        Some(w) => {
                            map.insert(k, w.clone());
                        }
                        None => {
                            map.remove(&k);
                        }
                    }
                    return true;
                }
                *n -= 1;
                if let Some(child) = map.get_mut(&k)
                    && edit_json(child, n, with)
                {
                    return true;
                }
            }
            false
        }
        _ => false,
    }
}

fn nodes(v: &Json) -> usize {
    1 + match v {
        Json::Array(a) => a.iter().map(nodes).sum(),
        Json::Object(o) => o.values().map(nodes).sum(),
        _ => 0,
    }
}

/// A valid payload for schema `i` with a few subtrees replaced or removed.
fn mutated_payload() -> impl Strategy<Value = (usize, Json)> {
    let replacement = prop_oneof![3 => leaf().prop_map(Some), 1 => json_tree().prop_map(Some), 1 => Just(None)];
    (
        0usize..3,
        0usize..2,
        prop::collection::vec((any::<usize>(), replacement), 1..4),
    )
        .prop_map(|(schema, which, edits)| {
            let mut v = payloads(schema).swap_remove(which);
            for (at, with) in edits {
                let count = nodes(&v) - 1;
                if count > 0 {
                    edit_json(&mut v, &mut (at % count), &with);
                }
            }
            (schema, v)
        })
}

/// Whether an apache-avro value holds an infinite or NaN float or double.
fn has_non_finite(v: &apache_avro::types::Value) -> bool {
    use apache_avro::types::Value as V;
    match v {
        V::Float(f) => !f.is_finite(),
        V::Double(d) => !d.is_finite(),
        V::Union(_, inner) => has_non_finite(inner),
        V::Array(items) => items.iter().any(has_non_finite),
        V::Map(m) => m.values().any(has_non_finite),
        V::Record(fields) => fields.iter().any(|(_, f)| has_non_finite(f)),
        _ => false,
    }
}

/// Runs a payload through every encoding entry point. Accepted payloads must decode again (with us and
/// with apache-avro) and re-encode to the same bytes after `coerce`.
fn encode_checks(schema: &AvroSchema, payload: &Json) {
    encode_checks_with(schema, payload, true);
}

/// [`encode_checks`]; `stable_coerce: false` skips the re-encoding check, for schemas with unions where the
/// decoded form of a value fits an earlier branch (a timestamp reads back as a number, which a `float` branch
/// before it takes): `coerce` is the payload as sent, not a fixed point.
fn encode_checks_with(schema: &AvroSchema, payload: &Json, stable_coerce: bool) {
    if let Ok(bytes) = schema.encode_value(payload) {
        let back = schema
            .decode_value(&bytes)
            .unwrap_or_else(|e| panic!("encode_value wrote bytes it cannot read ({e}): {payload} → {bytes:?}"));
        let reader = GenericDatumReader::builder(schema.as_apache()).build().unwrap();
        let mut rest = &bytes[..];
        let read = reader.read_value(&mut rest);
        assert!(
            read.is_ok() && rest.is_empty(),
            "apache-avro cannot read what encode_value wrote ({read:?}, {} bytes left): {payload} → {bytes:?}",
            rest.len()
        );
        let coerced = schema
            .coerce(payload)
            .expect("coerce fails where encode_value succeeds");
        assert_eq!(coerced, back, "coerce differs from decode(encode) for {payload}");
        if !stable_coerce || read.as_ref().is_ok_and(has_non_finite) {
            // A finite number too large for a `float` is written as ±infinity (as Ruby's Avro does), which
            // JSON can only show as null: such a payload cannot be stable under coerce.
            return;
        }
        let again = schema
            .encode_value(&coerced)
            .unwrap_or_else(|e| panic!("the coerced payload does not encode again ({e}): {payload} → {coerced}"));
        assert_eq!(again, bytes, "coerce is not stable: {payload} → {coerced}");
    } else {
        assert!(
            schema.coerce(payload).is_err(),
            "coerce succeeds where encode_value fails: {payload}"
        );
    }
    // The typed serializer driven by serde_json's `Serialize` (maps, seqs, all scalar kinds).
    if let Ok(bytes) = schema.encode(payload) {
        schema
            .decode_value(&bytes)
            .unwrap_or_else(|e| panic!("encode (typed) wrote bytes it cannot read ({e}): {payload} → {bytes:?}"));
    }
    if let Json::Object(map) = payload {
        let mut map = map.clone();
        schema.add_auto_fields(&mut map);
        let _ = schema.encode_value(&Json::Object(map));
    }
}

/// Generated schemas: every Avro type, logical types, named types (unique names, some referred to again),
/// field defaults that fit (and now and then one that does not). Most are valid; the rest must fail cleanly.
fn schema_json() -> impl Strategy<Value = Json> {
    let primitive = prop::sample::select(vec![
        "null", "boolean", "int", "long", "float", "double", "bytes", "string", "REF",
    ])
    .prop_map(Json::from);
    let logical = (
        prop::sample::select(vec![
            ("int", "date"),
            ("int", "time-millis"),
            ("long", "time-micros"),
            ("long", "timestamp-millis"),
            ("long", "timestamp-micros"),
            ("long", "timestamp-nanos"),
            ("long", "local-timestamp-millis"),
            ("long", "local-timestamp-micros"),
            ("string", "uuid"),
            ("bytes", "decimal"),
            ("fixed", "decimal"),
            ("fixed", "uuid"),
            ("fixed", "duration"),
            ("bytes", "big-decimal"),
            ("int", "unknown-logical"),
        ]),
        1u64..30,
        0u64..12,
        0u64..20,
    )
        .prop_map(|((base, logical), precision, scale, size)| {
            let mut s =
                json!({"type": base, "logicalType": logical, "precision": precision, "scale": scale.min(precision)});
            if base == "fixed" {
                s["name"] = json!("N");
                s["size"] = json!(match logical {
                    "uuid" => 16,
                    "duration" => 12,
                    _ => size,
                });
            }
            s
        });
    let enumeration = (
        prop::collection::btree_set(prop::sample::select(vec!["A", "B", "C", "D"]), 1..4),
        any::<bool>(),
    )
        .prop_map(|(symbols, with_default)| {
            let symbols: Vec<&str> = symbols.into_iter().collect();
            let mut s = json!({"type": "enum", "name": "N", "symbols": symbols});
            if with_default {
                s["default"] = json!(symbols[0]);
            }
            s
        });
    let fixed = (0u64..20).prop_map(|size| json!({"type": "fixed", "name": "N", "size": size}));
    let leaf = prop_oneof![6 => primitive, 2 => logical, 1 => enumeration, 1 => fixed];
    let tree = leaf.prop_recursive(4, 32, 5, |inner| {
        let field = (inner.clone(), 0u8..10).prop_map(|(schema, d)| {
            let mut f = json!({"name": "f", "type": schema});
            match d {
                0..=3 => {}
                4 => f["default"] = json!("not a default"),
                _ => {
                    if let Some(d) = default_for(&f["type"]) {
                        f["default"] = d;
                    }
                }
            }
            f
        });
        prop_oneof![
            inner.clone().prop_map(|items| json!({"type": "array", "items": items})),
            inner
                .clone()
                .prop_map(|values| json!({"type": "map", "values": values})),
            prop::collection::vec(inner.clone(), 1..4).prop_map(Json::Array),
            prop::collection::vec(field, 0..5)
                .prop_map(|fields| json!({"type": "record", "name": "N", "fields": fields})),
        ]
    });
    (tree, any::<bool>()).prop_map(|(mut schema, record_root)| {
        if record_root && schema.get("type") != Some(&json!("record")) {
            schema = json!({"type": "record", "name": "N", "fields": [{"name": "f", "type": schema}]});
        }
        let mut names = Vec::new();
        uniquify(&mut schema, &mut names);
        schema
    })
}

/// Gives every named type a unique name (`N0`, `N1`, ...), every record field a unique name, and turns each
/// `"REF"` into a reference to a name defined before it (or `"int"`).
fn uniquify(v: &mut Json, names: &mut Vec<String>) {
    match v {
        Json::String(s) if s == "REF" => *s = names.last().cloned().unwrap_or_else(|| "int".into()),
        Json::Array(items) => items.iter_mut().for_each(|i| uniquify(i, names)),
        Json::Object(map) => {
            if map.get("name").is_some_and(|n| n == "N") {
                let name = format!("N{}", names.len());
                map.insert("name".into(), json!(name));
                names.push(name);
            }
            if let Some(Json::Array(fields)) = map.get_mut("fields") {
                for (i, f) in fields.iter_mut().enumerate() {
                    f["name"] = json!(format!("f{i}"));
                    uniquify(&mut f["type"], names);
                }
            }
            for key in ["items", "values"] {
                if let Some(t) = map.get_mut(key) {
                    uniquify(t, names);
                }
            }
        }
        _ => {}
    }
}

/// A default that fits the schema (for a union: its first branch), if one is easy to write.
fn default_for(schema: &Json) -> Option<Json> {
    Some(match schema {
        Json::String(t) => match t.as_str() {
            "null" => Json::Null,
            "boolean" => json!(true),
            "int" | "long" => json!(7),
            "float" | "double" => json!(1.5),
            "bytes" | "string" => json!("ab"),
            _ => return None,
        },
        Json::Array(branches) => return branches.first().and_then(default_for),
        Json::Object(o) => match (o.get("type")?.as_str()?, o.get("logicalType").and_then(Json::as_str)) {
            (_, Some("uuid" | "decimal" | "duration" | "big-decimal")) => return None,
            ("int" | "long", _) => json!(0),
            ("string", _) => json!("s"),
            ("enum", _) => o.get("symbols")?.get(0)?.clone(),
            ("fixed", _) => json!("x".repeat(usize::try_from(o.get("size")?.as_u64()?).ok()?)),
            ("array", _) => json!([]),
            ("map", _) => json!({}),
            ("record", _) => {
                let mut out = serde_json::Map::new();
                for f in o.get("fields")?.as_array()? {
                    out.insert(f["name"].as_str()?.to_string(), default_for(&f["type"])?);
                }
                Json::Object(out)
            }
            _ => return None,
        },
        _ => return None,
    })
}

/// A payload for a generated schema, choices (union branches, lengths, values) taken from `bits`.
fn sample_for(schema: &Json, bits: &[u8]) -> Json {
    fn defs(v: &Json, out: &mut std::collections::HashMap<String, Json>) {
        match v {
            Json::Array(items) => items.iter().for_each(|i| defs(i, out)),
            Json::Object(o) => {
                if let Some(name) = o.get("name").and_then(Json::as_str) {
                    out.insert(name.to_string(), v.clone());
                }
                for f in o.get("fields").and_then(Json::as_array).into_iter().flatten() {
                    defs(&f["type"], out);
                }
                for key in ["items", "values"] {
                    if let Some(t) = o.get(key) {
                        defs(t, out);
                    }
                }
            }
            _ => {}
        }
    }
    fn go(s: &Json, named: &std::collections::HashMap<String, Json>, next: &mut dyn FnMut() -> u8, depth: u32) -> Json {
        let b = next();
        if depth > 6 {
            return Json::Null;
        }
        match s {
            Json::String(t) => match t.as_str() {
                "null" => Json::Null,
                "boolean" => json!(b.is_multiple_of(2)),
                "int" | "long" => json!(i64::from(b) - 128),
                "float" | "double" => json!(f64::from(b) / 4.0),
                "bytes" | "string" => json!("x".repeat(usize::from(b % 4))),
                name => named.get(name).map_or(Json::Null, |d| go(d, named, next, depth + 1)),
            },
            Json::Array(branches) if !branches.is_empty() => {
                go(&branches[usize::from(b) % branches.len()], named, next, depth + 1)
            }
            Json::Object(o) => {
                let size = o
                    .get("size")
                    .and_then(Json::as_u64)
                    .and_then(|n| usize::try_from(n).ok())
                    .unwrap_or(0);
                match (
                    o.get("type").and_then(Json::as_str),
                    o.get("logicalType").and_then(Json::as_str),
                ) {
                    (_, Some("date")) => json!("2024-02-29"),
                    (_, Some("time-millis")) => json!("01:02:03.004"),
                    (_, Some("time-micros")) => json!(i64::from(b)),
                    (_, Some(l)) if l.contains("timestamp") => json!("2024-01-02T03:04:05.678Z"),
                    (_, Some("uuid")) => json!("123e4567-e89b-12d3-a456-426614174000"),
                    (_, Some("decimal" | "big-decimal")) => json!(format!("{}", b % 10)),
                    (Some("fixed"), _) => json!("x".repeat(size)),
                    (Some("enum"), _) => o["symbols"]
                        .as_array()
                        .and_then(|s| s.get(usize::from(b) % s.len().max(1)))
                        .cloned()
                        .unwrap_or(Json::Null),
                    (Some("array"), _) => {
                        Json::Array((0..b % 3).map(|_| go(&o["items"], named, next, depth + 1)).collect())
                    }
                    (Some("map"), _) => Json::Object(
                        (0..b % 3)
                            .map(|i| (format!("k{i}"), go(&o["values"], named, next, depth + 1)))
                            .collect(),
                    ),
                    (Some("record"), _) => Json::Object(
                        o["fields"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|f| {
                                (
                                    f["name"].as_str().unwrap_or("").to_string(),
                                    go(&f["type"], named, next, depth + 1),
                                )
                            })
                            .collect(),
                    ),
                    (Some(t), _) => go(&json!(t), named, next, depth + 1),
                    _ => Json::Null,
                }
            }
            _ => Json::Null,
        }
    }
    let mut named = std::collections::HashMap::new();
    defs(schema, &mut named);
    let mut i = 0;
    let mut next = || {
        i += 1;
        bits.get(i % bits.len().max(1))
            .copied()
            .unwrap_or(0)
            .wrapping_add((i / bits.len().max(1)) as u8)
    };
    go(schema, &named, &mut next, 0)
}

/// An evolution of a schema, mostly compatible: promotions, fields dropped or added with a default, enum
/// symbols added, types made nullable, now and then an incompatible change.
fn evolve(schema: &Json, ops: &[(u8, usize)]) -> Json {
    let mut out = schema.clone();
    for &(op, at) in ops {
        let mut n = at % (nodes(&out).max(1));
        evolve_at(&mut out, &mut n, op);
    }
    out
}

fn evolve_at(v: &mut Json, n: &mut usize, op: u8) -> bool {
    if *n == 0 {
        match (op % 8, &mut *v) {
            (0, Json::String(t)) => {
                let promoted = match t.as_str() {
                    "int" => "long",
                    "long" => "double",
                    "float" => "double",
                    "string" => "bytes",
                    "bytes" => "string",
                    _ => return true,
                };
                *t = promoted.into();
            }
            (1, Json::Object(o)) if o.get("type") == Some(&json!("record")) => {
                if let Some(Json::Array(fields)) = o.get_mut("fields") {
                    fields.pop();
                }
            }
            (2, Json::Object(o)) if o.get("type") == Some(&json!("record")) => {
                if let Some(Json::Array(fields)) = o.get_mut("fields") {
                    let name = format!("new{}", fields.len());
                    fields.push(json!({"name": name, "type": ["null", "string"], "default": null}));
                }
            }
            (3, Json::Object(o)) if o.get("type") == Some(&json!("enum")) => {
                if let Some(Json::Array(symbols)) = o.get_mut("symbols") {
                    symbols.push(json!("NEW"));
                }
            }
            (4, t) if !t.is_array() => *t = json!(["null", t.clone()]),
            (5, Json::String(t)) => *t = "string".into(),
            (6, Json::Object(o)) if o.get("type") == Some(&json!("enum")) => {
                o.remove("default");
                if let Some(Json::Array(symbols)) = o.get_mut("symbols")
                    && symbols.len() > 1
                {
                    symbols.remove(0);
                }
            }
            _ => {}
        }
        return true;
    }
    *n -= 1;
    match v {
        Json::Array(items) => items.iter_mut().any(|i| evolve_at(i, n, op)),
        Json::Object(o) => o.values_mut().any(|i| evolve_at(i, n, op)),
        _ => false,
    }
}

/// Whether a schema has a union with more than one non-null branch.
fn has_ambiguous_union(schema: &Json) -> bool {
    match schema {
        Json::Array(branches) => {
            branches.iter().filter(|b| *b != "null").count() > 1 || branches.iter().any(has_ambiguous_union)
        }
        Json::Object(o) => {
            ["type", "items", "values"]
                .iter()
                .any(|k| o.get(*k).is_some_and(has_ambiguous_union))
                || o.get("fields")
                    .and_then(Json::as_array)
                    .is_some_and(|fields| fields.iter().any(|f| has_ambiguous_union(&f["type"])))
        }
        _ => false,
    }
}

/// Two generated schemas as writer and reader: parsing, compiling and resolving them never panics; data the
/// writer schema accepts reads back, is read by apache-avro, and reads through the plan or fails only
/// because the data needs what the reader cannot resolve (or bytes read as a string are not UTF-8).
fn schema_pair_checks(writer: &Json, reader: &Json, payload: &Json, bytes: &[u8]) {
    let Ok(w) = AvroSchema::parse(&writer.to_string()) else {
        return;
    };
    let _ = w.fields();
    let _ = w.decode_value(bytes);
    encode_checks_with(&w, payload, !has_ambiguous_union(writer));
    let plan = ResolvedPlan::new(&w, &w).unwrap_or_else(|e| panic!("{w}: cannot read itself: {e}"));
    let _ = plan.decode_value(bytes);
    let Ok(r) = AvroSchema::parse(&reader.to_string()) else {
        return;
    };
    let _ = deimos_avro::compat::can_read(&w, &r);
    let Ok(plan) = ResolvedPlan::new(&w, &r) else { return };
    let _ = plan.decode_value(bytes);
    set_hints(bytes);
    let _ = plan.decode::<Probe>(bytes);
    if let Ok(data) = w.encode_value(payload)
        && w.decode_value(&data).is_ok()
    {
        let read = plan.decode_value(&data);
        // Besides what the reader cannot resolve, bytes promoted to a string may not be UTF-8, and a string
        // promoted to a decimal's bytes may not be a decimal that fits.
        let allowed = match &read {
            Ok(_) | Err(deimos_avro::DecodeError::Resolve(_)) => true,
            Err(deimos_avro::DecodeError::Corrupt { message, .. }) => {
                message.contains("UTF-8") || message.contains("decimal does not fit")
            }
            Err(_) => false,
        };
        assert!(
            allowed,
            "writer {w}\nreader {r}\ndata {payload} → {data:?}\nread {read:?}"
        );
    }
}

fn status() -> impl Strategy<Value = Status> {
    prop_oneof![Just(Status::ACTIVE), Just(Status::RETIRED), Just(Status::UNKNOWN)]
}

fn finite_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        prop::sample::select(vec![0.0, -0.0, f64::MIN_POSITIVE, f64::MAX, f64::MIN, 5e-324, 19.99]),
    ]
}

fn any_widget() -> impl Strategy<Value = Widget> {
    (
        (any::<i64>(), ".{0,40}", ".{0,20}", ".{0,60}", finite_f64()),
        (
            any::<i32>(),
            status(),
            prop::collection::vec(".{0,10}", 0..5),
            any::<i64>(),
        ),
        any::<Option<i64>>(),
    )
        .prop_map(
            |((id, message_id, name, description, price), (quantity, status, tags, updated_at), parent_id)| Widget {
                id,
                message_id,
                name,
                description,
                price,
                quantity,
                status,
                tags,
                updated_at,
                parent_id,
            },
        )
}

// ---------------------------------------------------------------------------------------------------
// Targets.

proptest! {
    #![proptest_config(config(1_000))]

    /// (a) Arbitrary bytes against every schema and plan: an error or a value, never a panic.
    #[test]
    fn fuzz_decode_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..160),
        hints in prop::collection::vec(any::<u8>(), 1..12),
    ) {
        decode_everywhere(&bytes, &hints);
    }

    /// (a) Valid encodings with a few bytes changed reach deep into the decoder.
    #[test]
    fn fuzz_decode_mutated_encodings(bytes in mutated_encoding(), hints in prop::collection::vec(any::<u8>(), 1..12)) {
        decode_everywhere(&bytes, &hints);
    }

    /// (a) apache-avro and deimos-avro accept the same Widget bytes and read the same widget.
    #[test]
    fn fuzz_decode_widget_agrees_with_apache_avro(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..96),
            (0usize..2, prop::collection::vec(edit(), 1..4))
                .prop_map(|(i, edits)| apply_edits(FIXTURES.seeds[i].clone(), &edits)),
        ]
    ) {
        widget_agrees_with_apache(&bytes);
    }

    /// (a) Every `com.acme.Everything` encoding apache-avro reads, deimos-avro reads too.
    #[test]
    fn fuzz_decode_everything_accepted_by_apache_avro(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..128),
            (2usize..4, prop::collection::vec(edit(), 1..4))
                .prop_map(|(i, edits)| apply_edits(FIXTURES.seeds[i].clone(), &edits)),
        ]
    ) {
        everything_accepted_by_apache_is_accepted(&bytes);
    }

    /// (b) Arbitrary JSON trees through every encode entry point, against every schema.
    #[test]
    fn fuzz_encode_arbitrary_json(payload in json_tree()) {
        for schema in FIXTURES.schemas() {
            encode_checks(schema, &payload);
        }
    }

    /// (b) Valid payloads with subtrees replaced or removed.
    #[test]
    fn fuzz_encode_mutated_payloads((schema, payload) in mutated_payload()) {
        encode_checks(FIXTURES.schemas()[schema], &payload);
    }
}

/// Generated writer and reader schemas (the reader mostly an evolution of the writer), a payload made for
/// the writer (or arbitrary JSON), raw bytes: see [`schema_pair_checks`].
#[test]
fn fuzz_generated_schemas() {
    // Generated recursive schemas reach the decoder's nesting limit at once: on the stack a consumer has.
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let strategy = (
                schema_json(),
                prop_oneof![
                    4 => prop::collection::vec((any::<u8>(), any::<usize>()), 0..4).prop_map(Some),
                    1 => Just(None),
                ],
                schema_json(),
                prop_oneof![3 => Just(None), 1 => json_tree().prop_map(Some)],
                prop::collection::vec(any::<u8>(), 0..48),
            );
            let mut runner = proptest::test_runner::TestRunner::new(config(300));
            let result = runner.run(&strategy, |(writer, evolution, other, payload, bytes)| {
                let reader = evolution.map_or(other, |ops| evolve(&writer, &ops));
                let payload = payload.unwrap_or_else(|| sample_for(&writer, &bytes));
                schema_pair_checks(&writer, &reader, &payload, &bytes);
                Ok(())
            });
            if let Err(e) = result {
                panic!("{e}");
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

proptest! {
    #![proptest_config(config(500))]

    /// (c) Any valid widget: typed encode → decode is the identity, the dynamic path and apache-avro write
    /// the same bytes, and the evolved reader reads them.
    #[test]
    fn fuzz_widget_round_trip(w in any_widget()) {
        let f = &*FIXTURES;
        let typed = f.widget.encode(&w).unwrap();
        let back: Widget = f.widget.decode(&typed).unwrap();
        prop_assert!(same_widget(&back, &w), "{back:?} != {w:?}");

        let json = serde_json::to_value(&w).unwrap();
        prop_assert_eq!(&f.widget.encode_value(&json).unwrap(), &typed);

        let value = apache_avro::to_value(&w).unwrap().resolve(f.widget.as_apache()).unwrap();
        let apache = GenericDatumWriter::builder(f.widget.as_apache()).build().unwrap().write_value_to_vec(value).unwrap();
        prop_assert_eq!(&apache, &typed);

        let framed = wire::frame(7, &typed);
        let (id, body) = wire::parse_header(&framed).unwrap();
        prop_assert_eq!(id, 7);
        let v2: WidgetV2 = ResolvedPlan::new(&f.widget, &f.widget_v2).unwrap().decode(body).unwrap();
        prop_assert_eq!(
            (v2.id, v2.quantity, v2.parent_id, v2.region.as_str(), &v2.tags),
            (w.id, i64::from(w.quantity), w.parent_id, "eu-west-1", &w.tags)
        );
    }
}

/// Runs `f` on a thread with a 2 MiB stack: Rust's and tokio's default for the threads a consumer decodes on.
fn on_default_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

/// Deep recursion in the data is an error, not a stack overflow.
#[test]
fn fuzz_deeply_nested_data_is_an_error() {
    on_default_stack(|| {
        let f = &*FIXTURES;
        // Tree: label "" (0), children [] (0), next = branch 1 (2) → another Tree, 100 000 levels deep.
        let deep: Vec<u8> = [0u8, 0, 2].repeat(100_000);
        for (name, writer, plan) in &f.plans {
            if writer == &f.tree {
                assert!(plan.decode_value(&deep).is_err(), "{name}");
                for hint in 0..16 {
                    set_hints(&[hint]);
                    assert!(plan.decode::<Probe>(&deep).is_err(), "{name}, hint {hint}");
                }
            }
        }
    });
}

/// The decoder's nesting limit must stop recursion before a 2 MiB stack overflows, in every build. (With a
/// limit of 512 levels a debug build overflowed: skipping ~80 levels of a field the reader does not have takes
/// ≈5 KiB of stack per level in `Reader::skip`, and decoding 512 directly nested records into a JSON value
/// did too.)
#[test]
fn fuzz_nesting_limit_holds_on_a_2_mib_stack() {
    on_default_stack(|| {
        // Tree → TREE_V2 skips `index`: label "", children [], next null, matrix [], then
        // index = {"k": [{"t": <Tree: "", [], null, [], index = ...>}]}, 200 times.
        let mut skipped = vec![0u8, 0, 0, 0];
        for _ in 0..200 {
            skipped.extend_from_slice(&[2, 2, b'k', 2, 2, 2, b't', 4, 0, 0, 0, 0]);
        }
        let tree_v2 = &FIXTURES.plans.iter().find(|(n, ..)| *n == "Tree→V2").unwrap().2;
        assert!(tree_v2.decode_value(&skipped).is_err());
    });
    on_default_stack(|| {
        // A record that holds itself: every level takes no bytes, so even empty input reaches the limit.
        let schema =
            AvroSchema::parse(r#"{"type": "record", "name": "Loop", "fields": [{"name": "me", "type": "Loop"}]}"#)
                .unwrap();
        assert!(schema.decode_value(&[]).is_err());
    });
}

/// The dynamic path must not write a `date` or `time-millis` outside the int range (the typed path refuses);
/// no reader accepts it.
#[test]
fn fuzz_date_and_time_millis_stay_in_the_int_range() {
    for logical in ["date", "time-millis"] {
        let schema = AvroSchema::parse(&json!({"type": "int", "logicalType": logical}).to_string()).unwrap();
        for v in [json!(2_147_483_648i64), json!(-2_147_483_649i64), json!("2147483648")] {
            let encoded = schema.encode_value(&v);
            assert!(
                encoded.is_err(),
                "{logical} {v}: wrote {encoded:?}, which reads back as {:?}",
                encoded.as_ref().map(|b| schema.decode_value(b))
            );
            assert!(schema.encode(&v).is_err());
        }
    }
}

/// Items that take no bytes (`null`, an empty record) must not let a small message decode into a huge one.
/// (When each block could announce up to 8 × (bytes left) + 1024 items, ~1 KiB decoded into 2.4 million nulls;
/// 16 KiB into 364 million, 11 GB and 38 s in release.)
#[test]
fn fuzz_zero_size_items_do_not_amplify() {
    // Tree with label "", children [], next null, matrix [], index {}, u null, 16 + 8 + 12 fixed bytes,
    // lts 0, tns 0, tmu 0, then `nulls` as blocks, each announcing the most items the reader allows.
    let mut bytes = vec![0u8; 6 + 16 + 8 + 12 + 3];
    let mut rev = vec![0u8];
    while rev.len() < 1024 {
        let count = (rev.len() * 8 + 1024) as u64;
        let mut z = count << 1;
        let mut varint = Vec::new();
        while z >= 0x80 {
            varint.push((z as u8) | 0x80);
            z >>= 7;
        }
        varint.push(z as u8);
        rev.extend(varint.iter().rev());
    }
    bytes.extend(rev.iter().rev());
    let decoded = FIXTURES.tree.decode_value(&bytes);
    let items = decoded.as_ref().ok().and_then(|v| v["nulls"].as_array().map(Vec::len));
    assert!(
        items.is_none_or(|n| n <= 100 * bytes.len()),
        "{} bytes decoded into {items:?} nulls",
        bytes.len()
    );
}

/// docs/AVRO.md: in a union, "bytes/fixed [fit] a byte string of the right size" and "array an array". A JSON
/// array of small integers must therefore take an array branch, not an earlier `bytes` branch; otherwise
/// `coerce` is not stable (its output re-encodes as the other branch).
#[test]
fn fuzz_union_takes_the_array_branch_for_a_json_array() {
    let schema = AvroSchema::parse(r#"["null", "bytes", {"type": "array", "items": "long"}]"#).unwrap();
    let payload = json!([1, 2]);
    let coerced = schema.coerce(&payload).unwrap();
    assert_eq!(coerced, payload, "took the bytes branch");
    let mixed = json!(["0x1F", 2]);
    let once = schema.coerce(&mixed).unwrap();
    assert_eq!(schema.coerce(&once).unwrap(), once, "coerce is not stable");
}

/// Parsing a schema is fed text from a schema registry: bad attribute values must be errors, not panics.
/// (apache-avro 0.22 accepts these when parsing, then panics computing the canonical form, in
/// `parsing_canonical_form`: `as_i64().unwrap()` and `expect("Only valid schemas are accepted!")`.)
#[test]
fn fuzz_parse_refuses_a_non_integer_precision() {
    for text in [
        r#"{"type": "fixed", "name": "F", "size": 4, "precision": {"a": 1}}"#,
        r#"{"type": "fixed", "name": "F", "size": 4, "logicalType": "decimal", "precision": ["null", 1]}"#,
        r#"{"type": "fixed", "name": "F", "size": 4, "logicalType": "decimal", "precision": 4, "scale": "x"}"#,
    ] {
        let parsed = std::panic::catch_unwind(|| AvroSchema::parse(text).map(|_| ()));
        assert!(matches!(parsed, Ok(Err(_))), "AvroSchema::parse on {text}: {parsed:?}");
    }
}

/// A decimal on a `fixed` wider than 16 bytes must read back as written (apache-avro reads 150 here; the
/// decoder once read the first 16 bytes, "0.00").
#[test]
fn fuzz_decimal_on_a_fixed_wider_than_16_bytes_reads_back() {
    let schema = AvroSchema::parse(
        r#"{"type": "fixed", "name": "Money", "size": 20, "logicalType": "decimal", "precision": 10, "scale": 2}"#,
    )
    .unwrap();
    let bytes = schema.encode_value(&json!("1.50")).unwrap();
    assert_eq!(bytes[19], 150);
    assert_eq!(schema.decode_value(&bytes).unwrap(), json!("1.50"));
}

const LINKED_LIST: &str = r#"{"type": "record", "name": "Node", "fields": [
  {"name": "v", "type": "int"}, {"name": "next", "type": ["null", "Node"], "default": null}]}"#;

fn linked_list(nodes: usize) -> Json {
    let mut list = json!({"v": 0, "next": null});
    for i in 1..nodes {
        list = json!({"v": i, "next": list});
    }
    list
}

/// Whatever `encode_value` writes, `decode_value` must read (or the encoder must refuse it, with the same
/// limit). A linked list once cost the decoder 3 nesting levels a node and the encoder 2, so a 22-node list
/// that `encode_value` wrote did not decode.
#[test]
fn fuzz_what_encode_value_writes_decodes() {
    on_default_stack(|| {
        let schema = AvroSchema::parse(LINKED_LIST).unwrap();
        for nodes in 1..=60 {
            let list = linked_list(nodes);
            if let Ok(bytes) = schema.encode_value(&list) {
                let back = schema.decode_value(&bytes);
                assert!(back.as_ref().is_ok_and(|b| *b == list), "{nodes} nodes: {back:?}");
            }
        }
    });
}

/// The encoders once had no nesting limit: `encode_value` on a 2 MiB stack overflowed at ~90 nested records
/// in a debug build. It must give an error instead.
#[test]
fn fuzz_encode_value_has_a_nesting_limit() {
    on_default_stack(|| {
        let schema = AvroSchema::parse(LINKED_LIST).unwrap();
        let list = linked_list(1_000);
        let _ = schema.encode_value(&list);
        std::mem::forget(list); // dropping 1 000 nested serde_json values is itself deep recursion
    });
}
