//! `cargo xtask bench records`: the batch record consumer against a raw diesel multi-row upsert of the same
//! rows, on PostgreSQL, in the same run.
//!
//! Both sides apply the same 100,000 product rows (env `DEIMOS_BENCH_ROWS`) in batches of 1,000, one
//! transaction per batch, twice: into an empty table (inserts) and again (every row conflicts: updates). The
//! consumer gets decoded payloads (as the runner hands them over) and does everything it does in production:
//! compaction by key, conversion to the column types, the upsert that keeps `created_at`, the transaction.
//! The raw side is diesel's typed `insert_into(…).values(&rows).on_conflict(id).do_update()` on
//! diesel-async's connection. Five rounds alternate sides; the table prints medians.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use chrono::NaiveDateTime;
use deimos_avro::AvroSchema;
use deimos_consumer::{Batch, BatchHandler, BatchMetadata, DecodedKey};
use deimos_outbox_diesel::Conn;
use deimos_records_diesel::{BatchRecordConsumer, RecordConsumer, RecordTable};
use diesel::upsert::excluded;
use diesel::{ExpressionMethods, Insertable};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use serde_json::{Value as Json, json};

const BATCH: usize = 1000;
const ROUNDS: usize = 5;

diesel::table! {
    bench_products (id) {
        id -> BigInt,
        sku -> Text,
        name -> Text,
        price -> Nullable<Double>,
        active -> Bool,
        released_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

#[derive(Insertable)]
#[diesel(table_name = bench_products)]
struct Row {
    id: i64,
    sku: String,
    name: String,
    price: Option<f64>,
    active: bool,
    released_at: Option<NaiveDateTime>,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

fn rows() -> usize {
    std::env::var("DEIMOS_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn payload(i: i64, pass: i64) -> Json {
    json!({"id": i, "sku": format!("SKU-{i:08}"), "name": format!("product {i} v{pass}"),
           "price": i as f64 * 0.25 + pass as f64, "active": i % 2 == 0,
           "released_at": 1_557_014_400_000_i64 + i, "updated_at": 0})
}

fn batches(n: usize, pass: i64) -> Vec<Batch<Json>> {
    (0..n)
        .step_by(BATCH)
        .map(|start| {
            let end = (start + BATCH).min(n);
            let mut md = BatchMetadata::new("bench-products", 0);
            md.group_id = "bench".into();
            md.first_offset = start as i64;
            md.batch_size = end - start;
            let mut payloads = Vec::with_capacity(end - start);
            for i in start..end {
                let i = i as i64;
                payloads.push(Some(payload(i, pass)));
                md.keys.push(Some(DecodedKey::Value(json!(i))));
                md.offsets.push(i);
            }
            Batch::new(payloads, md)
        })
        .collect()
}

fn raw_rows(n: usize, pass: i64) -> Vec<Vec<Row>> {
    let now = chrono::Utc::now().naive_utc();
    let mut out = Vec::new();
    for start in (0..n).step_by(BATCH) {
        let end = (start + BATCH).min(n);
        out.push(
            (start..end)
                .map(|i| {
                    let i = i as i64;
                    Row {
                        id: i,
                        sku: format!("SKU-{i:08}"),
                        name: format!("product {i} v{pass}"),
                        price: Some(i as f64 * 0.25 + pass as f64),
                        active: i % 2 == 0,
                        released_at: chrono::DateTime::from_timestamp_millis(1_557_014_400_000 + i)
                            .map(|t| t.naive_utc()),
                        created_at: now,
                        updated_at: now,
                    }
                })
                .collect(),
        );
    }
    out
}

async fn consumer_round(consumer: &BatchRecordConsumer, conn: &mut Conn, n: usize) -> f64 {
    conn.execute("TRUNCATE bench_products").await.unwrap();
    let inserts = batches(n, 0);
    let updates = batches(n, 1);
    let started = Instant::now();
    for b in inserts.into_iter().chain(updates) {
        consumer.consume_batch(b).await.unwrap();
    }
    (2 * n) as f64 / started.elapsed().as_secs_f64()
}

async fn raw_round(conn: &mut AsyncPgConnection, admin: &mut Conn, n: usize) -> f64 {
    use bench_products::dsl as p;
    use diesel_async::RunQueryDsl;
    admin.execute("TRUNCATE bench_products").await.unwrap();
    let inserts = raw_rows(n, 0);
    let updates = raw_rows(n, 1);
    let started = Instant::now();
    for chunk in inserts.iter().chain(&updates) {
        conn.transaction::<_, diesel::result::Error, _>(async |c| {
            diesel::insert_into(bench_products::table)
                .values(chunk)
                .on_conflict(p::id)
                .do_update()
                .set((
                    p::sku.eq(excluded(p::sku)),
                    p::name.eq(excluded(p::name)),
                    p::price.eq(excluded(p::price)),
                    p::active.eq(excluded(p::active)),
                    p::released_at.eq(excluded(p::released_at)),
                    p::updated_at.eq(excluded(p::updated_at)),
                ))
                .execute(c)
                .await
        })
        .await
        .unwrap();
    }
    (2 * n) as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let admin = std::env::var("DEIMOS_BENCH_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let name = format!("deimos_records_bench_{}", std::process::id());
    let mut c = Conn::connect(&format!("{admin}/test"))
        .await
        .expect("PostgreSQL is needed for the records bench");
    c.execute(&format!("DROP DATABASE IF EXISTS {name}")).await.unwrap();
    c.execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    let url = format!("{admin}/{name}");
    let mut conn = Conn::connect(&url).await.unwrap();
    conn.execute(
        "CREATE TABLE bench_products (id BIGINT PRIMARY KEY, sku VARCHAR(64) NOT NULL, name VARCHAR(255) NOT NULL, \
         price DOUBLE PRECISION, active BOOLEAN NOT NULL, released_at TIMESTAMP, created_at TIMESTAMP NOT NULL, \
         updated_at TIMESTAMP NOT NULL)",
    )
    .await
    .unwrap();
    let schema = AvroSchema::parse(include_str!("../tests/schemas/com/acme/records/Product.avsc")).unwrap();
    let consumer = RecordConsumer::builder(RecordTable::of::<bench_products::table>("bench_products"), &schema)
        .database_url(&url)
        .build_batch()
        .unwrap();
    let mut raw = AsyncPgConnection::establish(&url).await.unwrap();
    let n = rows();
    println!("records bench: {n} rows, batches of {BATCH}, inserted then updated, {ROUNDS} rounds per side");
    // Warm-up: connections, plans, the table's pages.
    consumer_round(&consumer, &mut conn, n.min(10_000)).await;
    raw_round(&mut raw, &mut conn, n.min(10_000)).await;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let r = raw_round(&mut raw, &mut conn, n).await;
        let o = consumer_round(&consumer, &mut conn, n).await;
        println!("  round {round}: batch record consumer {o:>9.0} rows/s, raw diesel upsert {r:>9.0} rows/s");
        ours.push(o);
        theirs.push(r);
    }
    let (ours, theirs) = (median(ours), median(theirs));
    let ratio = ours / theirs;
    println!();
    println!("| metric                          | value      | unit   |");
    println!("|---------------------------------|------------|--------|");
    println!("| records.upsert.rows_per_s       | {ours:>10.0} | rows/s |");
    println!("| records.upsert.raw_rows_per_s   | {theirs:>10.0} | rows/s |");
    println!("| records.upsert.vs_raw_ratio     | {ratio:>10.3} | ratio  |");
    println!(
        r#"BENCH {{"metric":"records.upsert.rows_per_s","value":{ours:.2},"unit":"rows/s","baseline":"records.upsert.raw_rows_per_s"}}"#
    );
    println!(r#"BENCH {{"metric":"records.upsert.raw_rows_per_s","value":{theirs:.2},"unit":"rows/s"}}"#);
    println!(r#"BENCH {{"metric":"records.upsert.vs_raw_ratio","value":{ratio:.3},"unit":"ratio"}}"#);
    println!(r#"TARGET {{"metric":"records.upsert.vs_raw_ratio","op":">=","value":0.8}}"#);
    drop(conn);
    drop(raw);
    drop(consumer);
    let _ = c
        .execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ))
        .await;
    let _ = c.execute(&format!("DROP DATABASE IF EXISTS {name}")).await;
}
