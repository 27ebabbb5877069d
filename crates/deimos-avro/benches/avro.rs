#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]
//! The deimos-avro bench suite, run by `cargo xtask bench avro` (or `cargo bench -p deimos-avro --bench avro`).
//!
//! One thread, one record: `com.acme.Widget` from `schemas/` (ten fields), framed with the Confluent wire header.
//! Each metric is the median over [`BATCHES`] timed batches of many iterations, in ns per operation, after a
//! warm-up. Besides a human-readable table, the binary prints the `BENCH {...}` / `TARGET {...}` lines that
//! `cargo xtask bench` collects (see `xtask/src/bench.rs`).
//!
//! Before timing anything it checks that the compared paths do the same work: the typed, dynamic and
//! apache-avro encoders produce identical bytes, and both decoders read them into the same value.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use deimos_avro::{AvroSchema, PlanCache, SchemaStore, wire};
use serde_json::json;

/// The schema id the frames carry (any value; there is no registry here).
const SCHEMA_ID: u32 = 4711;
/// Timed batches per metric; the reported value is their median.
const BATCHES: usize = 21;
/// Wall time of one timed batch.
const BATCH_TIME: Duration = Duration::from_millis(25);
/// Warm-up before each metric (also used to size the batches).
const WARM_UP: Duration = Duration::from_millis(300);

const APACHE_ENCODE: &str = "avro.encode.apache_value_ns";
const APACHE_DECODE: &str = "avro.decode.apache_resolved_ns";

#[path = "../tests/support/widget.rs"]
mod widget;
use widget::{Status, WIDGET_V2_SCHEMA as READER_SCHEMA, Widget, WidgetV2};

fn widget() -> Widget {
    Widget {
        id: 1_234_567,
        message_id: "6f1c0d3e-8a52-4b7e-9f0a-2c3d4e5f6a7b".into(),
        name: "Sprocket, large".into(),
        description: "A large sprocket for the assembly line, zinc plated.".into(),
        price: 19.99,
        quantity: 7,
        status: Status::ACTIVE,
        tags: vec!["hardware".into(), "zinc".into(), "large".into()],
        updated_at: 1_764_000_000_000,
        parent_id: Some(42),
    }
}

/// The same widget as a service gets it from outside: loose JSON, some numbers as strings, an extra key.
fn payload() -> serde_json::Value {
    json!({
        "id": 1_234_567,
        "message_id": "6f1c0d3e-8a52-4b7e-9f0a-2c3d4e5f6a7b",
        "name": "Sprocket, large",
        "description": "A large sprocket for the assembly line, zinc plated.",
        "price": 19.99,
        "quantity": "7",
        "status": "ACTIVE",
        "tags": ["hardware", "zinc", "large"],
        "updated_at": "1764000000000",
        "parent_id": 42,
        "payload_key": "1234567"
    })
}

/// What a consumer with [`READER_SCHEMA`] reads from [`widget`].
fn expected_v2(w: &Widget) -> WidgetV2 {
    WidgetV2 {
        id: w.id,
        message_id: w.message_id.clone(),
        name: w.name.clone(),
        price: w.price,
        quantity: i64::from(w.quantity),
        status: w.status,
        tags: w.tags.clone(),
        updated_at: w.updated_at,
        parent_id: w.parent_id,
        region: "eu-west-1".into(),
    }
}

/// Timing of one metric.
struct Sample {
    /// Median ns per op over the batches.
    median: f64,
    min: f64,
    max: f64,
    /// Iterations per batch.
    iters: u64,
}

/// Warms `op` up, sizes batches to about [`BATCH_TIME`], and returns the median ns/op of [`BATCHES`] batches.
fn measure(mut op: impl FnMut()) -> Sample {
    let start = Instant::now();
    let mut warm = 0u64;
    while start.elapsed() < WARM_UP {
        for _ in 0..64 {
            op();
        }
        warm += 64;
    }
    let per_op = start.elapsed().as_secs_f64() / warm as f64;
    let iters = ((BATCH_TIME.as_secs_f64() / per_op) as u64).max(64);
    let mut times: Vec<f64> = (0..BATCHES)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                op();
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    Sample {
        median: times[times.len() / 2],
        min: times[0],
        max: times[times.len() - 1],
        iters,
    }
}

/// One reported metric.
struct Row {
    metric: &'static str,
    what: &'static str,
    sample: Sample,
    baseline: Option<&'static str>,
    target: Option<f64>,
}

fn main() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    let store = SchemaStore::new(&root);
    let schema = store.get("com.acme.Widget").context("loading com.acme.Widget")?;
    let reader_schema = AvroSchema::parse(READER_SCHEMA).context("parsing the reader schema")?;
    let apache_writer_schema = schema.as_apache();
    let apache_reader_schema = reader_schema.as_apache();

    let widget = widget();
    let payload = payload();
    let expected = expected_v2(&widget);

    // ---- Same work: every encoder writes the same frame, every decoder reads the same value. ----
    let mut typed = Vec::new();
    wire::write_header(SCHEMA_ID, &mut typed);
    schema.encode_into(&widget, &mut typed)?;
    let mut dynamic = Vec::new();
    wire::write_header(SCHEMA_ID, &mut dynamic);
    schema.encode_value_into(&payload, &mut dynamic)?;
    ensure!(
        typed == dynamic,
        "typed and dynamic encodings differ:\n{typed:?}\n{dynamic:?}"
    );

    let apache_writer = GenericDatumWriter::builder(apache_writer_schema).build()?;
    let mut apache = Vec::new();
    wire::write_header(SCHEMA_ID, &mut apache);
    let value = apache_avro::to_value(&widget)?.resolve(apache_writer_schema)?;
    apache_writer.write_value_ref(&mut apache, &value)?;
    ensure!(
        typed == apache,
        "deimos-avro and apache-avro encodings differ:\n{typed:?}\n{apache:?}"
    );
    let framed = typed;

    let cache = PlanCache::new();
    let plan = cache.get_or_build(SCHEMA_ID, &schema, &reader_schema)?;
    let (id, avro) = wire::parse_header(&framed)?;
    ensure!(id == SCHEMA_ID, "schema id {id} read back as {SCHEMA_ID}");
    let ours: WidgetV2 = plan.decode(avro)?;
    ensure!(ours == expected, "resolved decode gave {ours:?}, expected {expected:?}");

    let apache_reader = GenericDatumReader::builder(apache_writer_schema)
        .reader_schema(apache_reader_schema)
        .build()?;
    let mut rest = avro;
    let theirs: WidgetV2 = apache_avro::from_value(&apache_reader.read_value(&mut rest)?)?;
    ensure!(rest.is_empty(), "apache-avro left {} bytes unread", rest.len());
    ensure!(
        theirs == expected,
        "apache-avro decode gave {theirs:?}, expected {expected:?}"
    );

    println!(
        "deimos-avro bench: com.acme.Widget, {} bytes framed ({} Avro + 5 header); 1 thread; median of {BATCHES} batches of ~{} ms after {} ms warm-up",
        framed.len(),
        framed.len() - wire::HEADER_LEN,
        BATCH_TIME.as_millis(),
        WARM_UP.as_millis()
    );

    // ---- Timed loops. ----
    let mut out: Vec<u8> = Vec::with_capacity(256);
    let mut rows = Vec::new();

    rows.push(Row {
        metric: APACHE_ENCODE,
        what: "apache-avro: to_value + resolve + GenericDatumWriter::write_value_ref (writer built once)",
        sample: measure(|| {
            out.clear();
            wire::write_header(black_box(SCHEMA_ID), &mut out);
            let value = apache_avro::to_value(black_box(&widget))
                .unwrap()
                .resolve(apache_writer_schema)
                .unwrap();
            apache_writer.write_value_ref(&mut out, &value).unwrap();
            black_box(&out);
        }),
        baseline: None,
        target: None,
    });
    rows.push(Row {
        metric: "avro.encode.typed_ns",
        what: "deimos-avro typed: write_header + encode_into(&Widget) into a reused Vec",
        sample: measure(|| {
            out.clear();
            wire::write_header(black_box(SCHEMA_ID), &mut out);
            schema.encode_into(black_box(&widget), &mut out).unwrap();
            black_box(&out);
        }),
        baseline: Some(APACHE_ENCODE),
        target: Some(300.0),
    });
    rows.push(Row {
        metric: "avro.encode.dynamic_ns",
        what: "deimos-avro dynamic: write_header + encode_value_into(&loose JSON) (coerce + encode)",
        sample: measure(|| {
            out.clear();
            wire::write_header(black_box(SCHEMA_ID), &mut out);
            schema.encode_value_into(black_box(&payload), &mut out).unwrap();
            black_box(&out);
        }),
        baseline: Some(APACHE_ENCODE),
        target: Some(1500.0),
    });
    rows.push(Row {
        metric: APACHE_DECODE,
        what: "apache-avro: parse_header + read_value (reader schema) + from_value::<WidgetV2>",
        sample: measure(|| {
            let (id, mut avro) = wire::parse_header(black_box(&framed)).unwrap();
            let value = apache_reader.read_value(&mut avro).unwrap();
            let w: WidgetV2 = apache_avro::from_value(&value).unwrap();
            black_box((id, w));
        }),
        baseline: None,
        target: None,
    });
    rows.push(Row {
        metric: "avro.decode.resolved_typed_ns",
        what: "deimos-avro: parse_header + plan.decode::<WidgetV2> (plan from PlanCache, built once)",
        sample: measure(|| {
            let (id, avro) = wire::parse_header(black_box(&framed)).unwrap();
            let w: WidgetV2 = plan.decode(avro).unwrap();
            black_box((id, w));
        }),
        baseline: Some(APACHE_DECODE),
        target: Some(500.0),
    });
    rows.push(Row {
        metric: "avro.decode.resolved_typed_lookup_ns",
        what: "as above, plus PlanCache::get_or_build(id, ..) per message (what a consumer does)",
        sample: measure(|| {
            let (id, avro) = wire::parse_header(black_box(&framed)).unwrap();
            let plan = cache.get_or_build(id, &schema, &reader_schema).unwrap();
            let w: WidgetV2 = plan.decode(avro).unwrap();
            black_box((id, w));
        }),
        baseline: Some(APACHE_DECODE),
        target: None,
    });

    report(&rows);
    Ok(())
}

fn report(rows: &[Row]) {
    let value_of = |name: &str| rows.iter().find(|r| r.metric == name).map(|r| r.sample.median);
    println!();
    println!(
        "{:<38} {:>10} {:>10} {:>19} {:>12} {:>9}  what",
        "metric", "ns/op", "Mops/s", "min..max ns", "iters/batch", "vs base"
    );
    for row in rows {
        let s = &row.sample;
        let ratio = row
            .baseline
            .and_then(value_of)
            .map_or_else(String::new, |base| format!("{:.2}x", s.median / base));
        println!(
            "{:<38} {:>10.1} {:>10.3} {:>19} {:>12} {:>9}  {}",
            row.metric,
            s.median,
            1_000.0 / s.median,
            format!("{:.1}..{:.1}", s.min, s.max),
            s.iters,
            ratio,
            row.what
        );
    }
    println!();
    for row in rows {
        let mut line = json!({"metric": row.metric, "value": row.sample.median, "unit": "ns"});
        if let Some(base) = row.baseline {
            line["baseline"] = json!(base);
        }
        println!("BENCH {line}");
    }
    for row in rows {
        if let Some(target) = row.target {
            println!("TARGET {}", json!({"metric": row.metric, "op": "<=", "value": target}));
        }
    }
}
