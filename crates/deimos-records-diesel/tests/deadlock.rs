//! Deadlocks: a batch that deadlocks with another transaction is retried (Deimos's `DeadlockRetry`) and
//! counted in the `deadlock` metric.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::{Kind, TestDb};
use deimos_consumer::{Batch, BatchHandler, BatchMetadata, DecodedKey};
use deimos_records_diesel::{RecordConnection, RecordConsumer};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde_json::{Value as Json, json};

fn snapshotter() -> &'static Snapshotter {
    static S: OnceLock<Snapshotter> = OnceLock::new();
    S.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let s = recorder.snapshotter();
        recorder.install().unwrap();
        s
    })
}

fn deadlocks() -> u64 {
    snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, ..)| k.key().name() == "deadlock")
        .map(|(k, _, _, v)| {
            assert!(k.key().labels().any(|l| l.key() == "topic" && l.value() == "products"));
            match v {
                DebugValue::Counter(n) => n,
                other => panic!("{other:?}"),
            }
        })
        .sum()
}

fn batch(items: &[(i64, &str)], first_offset: i64) -> Batch<Json> {
    let mut md = BatchMetadata::new("products", 0);
    md.group_id = "deadlock-test".into();
    let mut payloads = Vec::new();
    for (i, (id, note)) in items.iter().enumerate() {
        payloads.push(Some(
            json!({"id": id, "sku": format!("S-{id}"), "name": note, "active": true, "updated_at": 0}),
        ));
        md.keys.push(Some(DecodedKey::Value(json!(id))));
        md.offsets.push(first_offset + i as i64);
    }
    Batch::new(payloads, md)
}

async fn batch_deadlock_is_retried(kind: Kind) {
    snapshotter();
    let db = TestDb::new(kind).await;
    let schema = common::schema("com.acme.records.Product");
    let consumer = RecordConsumer::builder(common::products(), &schema)
        .database_url(&db.url)
        .deadlock_retry(3, Duration::from_millis(50)..=Duration::from_millis(100))
        .build_batch()
        .unwrap();
    consumer
        .consume_batch(batch(&[(1, "one"), (2, "two")], 0))
        .await
        .unwrap();
    assert_eq!(deadlocks(), 0);

    // Another transaction holds row 1 and has done more work (so MariaDB picks the batch as the victim).
    let mut other = db.conn().await;
    other.begin_tx().await.unwrap();
    for i in 0..50 {
        other
            .run(&format!("INSERT INTO events (seq, note) VALUES ({i}, 'x')"), &[])
            .await
            .unwrap();
    }
    other
        .run("UPDATE products SET note = 'other' WHERE id = 1", &[])
        .await
        .unwrap();
    // The batch locks row 2, then waits for row 1 …
    let applying = tokio::spawn({
        let consumer = consumer.clone();
        async move {
            consumer
                .consume_batch(batch(&[(2, "two'"), (1, "one'")], 2))
                .await
                .map_err(|e| e.to_string())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // … while the other transaction asks for row 2: a deadlock. The batch is rolled back and retried.
    other
        .run("UPDATE products SET note = 'other' WHERE id = 2", &[])
        .await
        .unwrap();
    other.commit_tx().await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), applying)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(deadlocks(), 1);
    let mut conn = db.conn().await;
    let names: Vec<Json> = common::rows(&mut conn, &common::products())
        .await
        .iter()
        .map(|r| r["name"].clone())
        .collect();
    assert_eq!(names, [json!("one'"), json!("two'")]);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_batch_deadlock_is_retried() {
    batch_deadlock_is_retried(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_batch_deadlock_is_retried() {
    batch_deadlock_is_retried(Kind::Mariadb).await;
}
