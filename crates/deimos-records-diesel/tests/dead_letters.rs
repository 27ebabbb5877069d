//! Dead letters of batch record consumers, through a listener with a dead-letter topic (the runner's error
//! policy, inline): when a batch fails part-way and the per-message fallback commits some of its messages, only
//! the others are dead-lettered, so a redrive applies nothing twice. On PostgreSQL, MariaDB and SQLite.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::{Kind, TestDb};
use deimos_consumer::{
    BatchHandler, HEADER_ORIGINAL_OFFSET, InlineListener, InlineMessage, InlineOutcome, KeyConfig, Listener,
};
use deimos_records_diesel::{RecordConsumer, RecordError};
use deimos_registry::{MemoryRegistry, SchemaCodec, SchemaRegistry};
use serde_json::{Value as Json, json};

per_database!(
    dead_letters_leave_out_committed_messages,
    fallback_errors_name_keys_as_values
);

const TOPIC: &str = "products";
const DEAD: &str = "products.dead";

/// A product whose `released_at` (timestamp-millis) is `released_at`.
fn product(id: i64, released_at: i64) -> Json {
    json!({"id": id, "sku": format!("D-{id}"), "name": format!("product {id}"), "price": 1.5, "active": true,
           "released_at": released_at, "updated_at": 0})
}

/// Offsets 10–14, plain keys "1" to "5"; the message of key "3" has a `released_at` that no timestamp holds,
/// so the batch's upsert fails and, alone, that message fails for good.
async fn batch_with_a_poison_message(registry: &Arc<MemoryRegistry>) -> Vec<InlineMessage> {
    let schema = common::schema("com.acme.records.Product");
    let codec = SchemaCodec::from_arc(registry.clone() as Arc<dyn SchemaRegistry>);
    let mut messages = Vec::new();
    for (i, id) in (1..=5_i64).enumerate() {
        let released = if id == 3 { i64::MAX } else { 1_557_014_400_000 };
        let value = codec
            .encode_value(&format!("{TOPIC}-value"), &schema, &product(id, released))
            .await
            .unwrap();
        messages.push(InlineMessage::new(Some(id.to_string().into_bytes()), Some(value)).at(0, 10 + i as i64));
    }
    messages
}

fn listener(handler: impl BatchHandler<Payload = Json>) -> Listener {
    Listener::builder(TOPIC, "records-dead-letters")
        .schema("com.acme.records.Product")
        .key_config(KeyConfig::Plain)
        .batch_handler(handler)
        .dead_letter_topic(DEAD)
        .build()
        .unwrap()
}

async fn ids(db: &TestDb) -> Vec<i64> {
    let mut conn = db.conn().await;
    common::rows(&mut conn, &common::products())
        .await
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

async fn dead_letters_leave_out_committed_messages(kind: Kind) {
    for exactly_once in [false, true] {
        let db = TestDb::new(kind).await;
        let consumer = RecordConsumer::builder(common::products(), &common::schema("com.acme.records.Product"))
            .database_url(&db.url)
            .exactly_once(exactly_once)
            .build_batch()
            .unwrap();
        let listener = listener(consumer);
        let registry = Arc::new(MemoryRegistry::new());
        let store = common::store();
        let inline = InlineListener::builder(&listener, &store, registry.clone() as Arc<dyn SchemaRegistry>)
            .build()
            .unwrap();
        let outcome = inline
            .process_batch(batch_with_a_poison_message(&registry).await)
            .await
            .unwrap();
        let InlineOutcome::Skipped { dead_letters, .. } = outcome else {
            panic!("the batch is given up (swallow policy): {outcome:?}")
        };
        let dead: Vec<i64> = dead_letters
            .iter()
            .map(|d| {
                assert_eq!(d.topic, DEAD);
                d.headers.get_str(HEADER_ORIGINAL_OFFSET).unwrap().parse().unwrap()
            })
            .collect();
        if exactly_once {
            // 10 and 11 are saved, 12 fails, 13 and 14 are not tried: the stored offset points at 12.
            assert_eq!(ids(&db).await, [1, 2]);
            assert_eq!(
                dead,
                [12, 13, 14],
                "exactly-once: the failing message and the later ones, not the committed ones"
            );
        } else {
            assert_eq!(ids(&db).await, [1, 2, 4, 5]);
            assert_eq!(dead, [12], "only the message that could not be saved");
        }
        db.drop_db().await;
    }
}

async fn fallback_errors_name_keys_as_values(kind: Kind) {
    let db = TestDb::new(kind).await;
    let consumer = RecordConsumer::builder(common::products(), &common::schema("com.acme.records.Product"))
        .database_url(&db.url)
        .build_batch()
        .unwrap();
    let listener = listener(consumer);
    let registry = Arc::new(MemoryRegistry::new());
    let store = common::store();
    let inline = InlineListener::builder(&listener, &store, registry.clone() as Arc<dyn SchemaRegistry>)
        .build()
        .unwrap();
    let outcome = inline
        .process_batch(batch_with_a_poison_message(&registry).await)
        .await
        .unwrap();
    let error = outcome.error().unwrap();
    let fallback = std::iter::successors(Some(&**error as &(dyn std::error::Error + 'static)), |e| e.source())
        .find_map(|e| e.downcast_ref::<RecordError>())
        .unwrap();
    match fallback {
        RecordError::BatchFallback { failed_keys, .. } => assert_eq!(failed_keys, &["\"3\""]),
        other => panic!("{other}"),
    }
    let text = error.to_string();
    assert!(
        text.starts_with("1 message(s) could not be saved individually after the batch failed. Failed keys: \"3\"."),
        "a plain key is shown as its value (JSON), not as Rust Debug: {text}"
    );
    db.drop_db().await;
}
