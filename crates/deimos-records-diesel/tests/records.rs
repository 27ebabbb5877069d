//! Record producers, change publishing through the outbox, and record consumers, on PostgreSQL, MariaDB and
//! SQLite.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Kind, TestDb};
use deimos_consumer::{Batch, BatchHandler, BatchMetadata, DecodedKey, Handler, Message, Metadata};
use deimos_records_diesel::{ChangeSource, RecordConsumer, RecordError, RecordProducer, Tombstone};
use serde::Serialize;
use serde_json::{Map, Value as Json, json};

per_database!(
    record_producer_payloads,
    changes_publish_in_the_transaction,
    bulk_inserts_publish_generated_ids,
    message_consumer_saves_records,
    batch_consumer_compacts_and_upserts,
    batch_consumer_slices_when_not_compacted,
    batch_consumer_compound_keys,
    batch_consumer_falls_back_per_message,
    exactly_once_skips_redelivered_messages,
    exactly_once_fallback_stops_at_the_failure,
);

#[derive(Debug, Clone, Serialize)]
struct NewProduct {
    sku: String,
    name: String,
    price: Option<f64>,
    active: bool,
    note: Option<String>,
}

fn new_product(sku: &str, price: f64) -> NewProduct {
    NewProduct {
        sku: sku.into(),
        name: format!("product {sku}"),
        price: Some(price),
        active: true,
        note: None,
    }
}

fn obj(v: Json) -> Map<String, Json> {
    match v {
        Json::Object(m) => m,
        _ => panic!("not an object"),
    }
}

async fn record_producer_payloads(kind: Kind) {
    let db = TestDb::new(kind).await;
    let mut conn = db.conn().await;
    let (producer, sent) = common::memory_producer().await;
    let records = RecordProducer::builder(producer, common::products())
        .payload(|payload, attrs| {
            // Deimos's generate_payload override: change a field from an attribute that is not a field.
            if let Some(Json::String(note)) = attrs.get("note") {
                payload.insert(
                    "name".into(),
                    json!(format!("{} ({note})", payload["name"].as_str().unwrap_or(""))),
                );
            }
        })
        .build()
        .unwrap();

    // A whole record (as a diesel model serializes): only the schema's fields, times as epoch numbers.
    let model = json!({
        "id": 7, "sku": "A-7", "name": "seven", "price": 1.5, "active": true,
        "released_at": "2019-05-05T00:00:00", "note": "boxed", "created_at": "2019-05-01T00:00:00",
        "updated_at": "2019-05-05T00:00:00"
    });
    records.send_event(&model).await.unwrap();
    let m = sent.sent().pop().unwrap();
    assert_eq!(m.key, Some(json!(7)));
    assert_eq!(
        m.payload,
        Some(json!({
            "id": 7, "sku": "A-7", "name": "seven (boxed)", "price": 1.5, "active": true,
            "released_at": 1_557_014_400_000_i64, "updated_at": 1_557_014_400
        }))
    );

    // An attribute map with only the id is refetched: the payload is the row as stored.
    let mut source_conn = db.conn().await;
    let (outbox, outbox_producer, _) = common::outbox_producer().await;
    let source = ChangeSource::builder(common::products(), outbox)
        .producer(
            RecordProducer::builder(outbox_producer, common::products())
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let row = source
        .insert(&mut source_conn, &new_product("B-1", 9.25))
        .await
        .unwrap();
    let id = row["id"].clone();
    sent.clear();
    records
        .send_events_refetched(&mut conn, &[json!({ "id": id })])
        .await
        .unwrap();
    let m = sent.sent().pop().unwrap();
    let payload = m.payload.unwrap();
    assert_eq!(payload["sku"], json!("B-1"));
    assert_eq!(payload["price"].as_f64(), Some(9.25));
    // With refetching off, the map is published as given (and fails the schema: the error names the field).
    let (producer, _) = common::memory_producer().await;
    let no_refetch = RecordProducer::builder(producer, common::products())
        .refetch(false)
        .build()
        .unwrap();
    let err = no_refetch
        .send_events_refetched(&mut conn, &[json!({ "id": id })])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("sku"), "{err}");

    // The deletion payload is a tombstone keyed by the primary key.
    sent.clear();
    records.send_deletions(&[json!({"id": 7, "sku": "A-7"})]).await.unwrap();
    let m = sent.sent().pop().unwrap();
    assert_eq!((m.key, m.payload), (Some(json!(7)), None));
    db.drop_db().await;
}

async fn changes_publish_in_the_transaction(kind: Kind) {
    let db = TestDb::new(kind).await;
    let mut conn = db.conn().await;
    let (outbox, producer, registry) = common::outbox_producer().await;
    let records = RecordProducer::builder(producer, common::products()).build().unwrap();
    let source = ChangeSource::builder(common::products(), outbox.clone())
        .producer(records.clone())
        .build()
        .unwrap();

    // Insert: the row and its message.
    let row = source.insert(&mut conn, &new_product("C-1", 2.0)).await.unwrap();
    let id = row["id"].as_i64().unwrap();
    assert!(
        row["created_at"].is_string() && row["updated_at"].is_string(),
        "{row:?}"
    );
    let msgs = common::outbox_messages(&mut conn, &registry).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].0, json!(id));
    assert_eq!(msgs[0].1.as_ref().unwrap()["sku"], json!("C-1"));

    // An update of a column that is not watched publishes nothing; of a watched one, the new row.
    let after = source
        .update(&mut conn, &json!(id), &json!({"note": "internal"}))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after["note"], json!("internal"));
    assert_eq!(common::outbox_messages(&mut conn, &registry).await.len(), 1);
    source
        .update(&mut conn, &json!(id), &json!({"price": 3.5}))
        .await
        .unwrap()
        .unwrap();
    let msgs = common::outbox_messages(&mut conn, &registry).await;
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[1].1.as_ref().unwrap()["price"].as_f64(), Some(3.5));
    // A watched extra (not a schema field) publishes too.
    let watching = ChangeSource::builder(common::products(), outbox.clone())
        .producer(
            RecordProducer::builder(records.producer().clone(), common::products())
                .watch(["note"])
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    watching
        .update(&mut conn, &json!(id), &json!({"note": "changed"}))
        .await
        .unwrap();
    assert_eq!(common::outbox_messages(&mut conn, &registry).await.len(), 3);
    assert_eq!(
        source
            .update(&mut conn, &json!(999_999), &json!({"price": 1.0}))
            .await
            .unwrap(),
        None
    );

    // Delete: a tombstone keyed by the id.
    source.delete(&mut conn, &json!(id)).await.unwrap().unwrap();
    let msgs = common::outbox_messages(&mut conn, &registry).await;
    assert_eq!(msgs.len(), 4);
    assert_eq!(msgs[3], (json!(id), None));

    // In a transaction that rolls back, neither the row nor the message stays.
    use deimos_records_diesel::RecordConnection;
    conn.begin_tx().await.unwrap();
    source.insert(&mut conn, &new_product("C-2", 1.0)).await.unwrap();
    conn.rollback_tx().await.unwrap();
    assert_eq!(common::count(&mut conn, "products").await, 0);
    assert_eq!(common::outbox_messages(&mut conn, &registry).await.len(), 4);

    // A message that fails its schema fails the statement: the row is not written either.
    let strict = ChangeSource::builder(common::products(), outbox.clone())
        .producer(
            RecordProducer::builder(records.producer().clone(), common::products())
                .payload(|p, _| {
                    p.insert("active".into(), json!("not a boolean"));
                })
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let err = strict.insert(&mut conn, &new_product("C-3", 1.0)).await.unwrap_err();
    assert!(err.to_string().contains("active"), "{err}");
    assert_eq!(common::count(&mut conn, "products").await, 0);

    // Switches: with create off, an insert publishes nothing.
    let quiet = ChangeSource::builder(common::products(), outbox)
        .producer(records)
        .publish_creates(false)
        .build()
        .unwrap();
    quiet.insert(&mut conn, &new_product("C-4", 1.0)).await.unwrap();
    assert_eq!(common::count(&mut conn, "products").await, 1);
    assert_eq!(common::outbox_messages(&mut conn, &registry).await.len(), 4);
    db.drop_db().await;
}

async fn bulk_inserts_publish_generated_ids(kind: Kind) {
    let db = TestDb::new(kind).await;
    let mut conn = db.conn().await;
    let (outbox, producer, registry) = common::outbox_producer().await;
    let source = ChangeSource::builder(common::products(), outbox)
        .producer(RecordProducer::builder(producer, common::products()).build().unwrap())
        .build()
        .unwrap();
    let rows = source
        .insert_all(
            &mut conn,
            &(0..5)
                .map(|i| new_product(&format!("D-{i}"), f64::from(i)))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 5);
    let stored = common::rows(&mut conn, &common::products()).await;
    let msgs = common::outbox_messages(&mut conn, &registry).await;
    assert_eq!(msgs.len(), 5);
    for (row, (key, value)) in stored.iter().zip(&msgs) {
        assert_eq!(key, &row["id"], "every message carries the id the database generated");
        assert_eq!(value.as_ref().unwrap()["sku"], row["sku"]);
    }

    // Upsert on the unique sku: D-0 is updated (created_at kept), D-9 inserted; both published with their ids.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let created_before = stored[0]["created_at"].clone();
    let rows = source
        .upsert_all(
            &mut conn,
            &[new_product("D-0", 100.0), new_product("D-9", 9.0)],
            &["sku"],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let stored = common::rows(&mut conn, &common::products()).await;
    assert_eq!(stored.len(), 6);
    let d0 = stored.iter().find(|r| r["sku"] == json!("D-0")).unwrap();
    assert_eq!(d0["price"].as_f64(), Some(100.0));
    assert_eq!(d0["created_at"], created_before, "the upsert keeps created_at");
    assert_ne!(d0["updated_at"], d0["created_at"]);
    let msgs = common::outbox_messages(&mut conn, &registry).await;
    assert_eq!(msgs.len(), 7);
    let ids: Vec<&Json> = msgs[5..].iter().map(|(k, _)| k).collect();
    let d9 = stored.iter().find(|r| r["sku"] == json!("D-9")).unwrap();
    assert!(ids.contains(&&d0["id"]) && ids.contains(&&d9["id"]), "{ids:?}");

    // A binary column: written from Avro-style bytes (one char per byte), read back the same way.
    let with_photo = source
        .insert(
            &mut conn,
            &json!({"sku": "P-1", "name": "pic", "active": true, "photo": "\u{0}\u{ff}A"}),
        )
        .await
        .unwrap();
    assert_eq!(with_photo["photo"], json!("\u{0}\u{ff}A"));
    db.drop_db().await;
}

fn product_payload(id: i64, sku: &str, price: f64) -> Json {
    json!({"id": id, "sku": sku, "name": format!("product {sku}"), "price": price, "active": true,
           "released_at": 1_557_014_400_000_i64, "updated_at": 0})
}

fn message(payload: Option<Json>, key: Option<Json>, offset: i64) -> Message<Json> {
    let mut md = Metadata::new("products", 0, offset);
    md.key = key.map(DecodedKey::Value);
    md.group_id = "records-test".into();
    Message::new(payload, md)
}

fn batch(items: Vec<(Option<Json>, Option<Json>)>, first_offset: i64) -> Batch<Json> {
    batch_on("products", items, first_offset)
}

fn batch_on(topic: &str, items: Vec<(Option<Json>, Option<Json>)>, first_offset: i64) -> Batch<Json> {
    let mut md = BatchMetadata::new(topic, 0);
    md.group_id = "records-test".into();
    md.first_offset = first_offset;
    md.batch_size = items.len();
    let mut payloads = Vec::new();
    for (i, (payload, key)) in items.into_iter().enumerate() {
        payloads.push(payload);
        md.keys.push(key.map(DecodedKey::Value));
        md.offsets.push(first_offset + i as i64);
    }
    Batch::new(payloads, md)
}

async fn message_consumer_saves_records(kind: Kind) {
    let db = TestDb::new(kind).await;
    let mut conn = db.conn().await;
    let schema = common::schema("com.acme.records.Product");
    let consumer = RecordConsumer::builder(common::products(), &schema)
        .database_url(&db.url)
        .filter(|m| m.payload.is_none_or(|p| p.get("sku") != Some(&json!("SKIP"))))
        .build()
        .unwrap();
    consumer
        .consume(message(Some(product_payload(1, "E-1", 1.0)), Some(json!(1)), 0))
        .await
        .unwrap();
    let stored = common::rows(&mut conn, &common::products()).await;
    assert_eq!(stored.len(), 1);
    let first = stored[0].clone();
    assert_eq!(first["sku"], json!("E-1"));
    // timestamp-millis in the payload → the timestamp column.
    assert!(
        first["released_at"].as_str().unwrap().starts_with("2019-05-05"),
        "{first:?}"
    );
    assert_eq!(first["note"], Json::Null);

    tokio::time::sleep(Duration::from_millis(20)).await;
    consumer
        .consume(message(Some(product_payload(1, "E-1", 2.0)), Some(json!(1)), 1))
        .await
        .unwrap();
    let stored = common::rows(&mut conn, &common::products()).await;
    assert_eq!(stored[0]["price"].as_f64(), Some(2.0));
    assert_eq!(stored[0]["created_at"], first["created_at"], "created_at is kept");
    assert_ne!(stored[0]["updated_at"], first["updated_at"], "updated_at is set");

    // The filter skips; a tombstone deletes; a tombstone for a missing record is a no-op.
    consumer
        .consume(message(Some(product_payload(2, "SKIP", 1.0)), Some(json!(2)), 2))
        .await
        .unwrap();
    assert_eq!(common::count(&mut conn, "products").await, 1);
    consumer.consume(message(None, Some(json!(1)), 3)).await.unwrap();
    consumer.consume(message(None, Some(json!(42)), 4)).await.unwrap();
    assert_eq!(common::count(&mut conn, "products").await, 0);

    // A value that does not fit its column names the attribute and the column type.
    let mut bad = product_payload(3, "E-3", 1.0);
    bad["released_at"] = json!("soon");
    let err = consumer
        .consume(message(Some(bad), Some(json!(3)), 5))
        .await
        .unwrap_err();
    let err = err.to_string();
    assert!(err.contains("released_at") && err.contains("Timestamp"), "{err}");

    // A soft delete instead of a delete.
    let soft = RecordConsumer::builder(common::products(), &schema)
        .database_url(&db.url)
        .on_tombstone(Tombstone::Update(obj(json!({"active": false}))))
        .build()
        .unwrap();
    soft.consume(message(Some(product_payload(4, "E-4", 1.0)), Some(json!(4)), 6))
        .await
        .unwrap();
    soft.consume(message(None, Some(json!(4)), 7)).await.unwrap();
    let stored = common::rows(&mut conn, &common::products()).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0]["active"],
        if kind == Kind::Postgres { json!(false) } else { json!(0) }
    );
    db.drop_db().await;
}

async fn batch_consumer_compacts_and_upserts(kind: Kind) {
    let db = TestDb::new(kind).await;
    let mut conn = db.conn().await;
    let schema = common::schema("com.acme.records.Product");
    let consumer = RecordConsumer::builder(common::products(), &schema)
        .database_url(&db.url)
        .max_db_batch_size(2)
        .build_batch()
        .unwrap();
    consumer
        .consume_batch(batch(
            (1..=5)
                .map(|i| (Some(product_payload(i, &format!("F-{i}"), 1.0)), Some(json!(i))))
                .collect(),
            0,
        ))
        .await
        .unwrap();
    let before = common::rows(&mut conn, &common::products()).await;
    assert_eq!(before.len(), 5);
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Key 1 updated twice (the last wins), key 2 deleted then re-created (last wins: exists), key 3 deleted.
    consumer
        .consume_batch(batch(
            vec![
                (Some(product_payload(1, "F-1", 2.0)), Some(json!(1))),
                (None, Some(json!(2))),
                (Some(product_payload(1, "F-1", 3.0)), Some(json!(1))),
                (Some(product_payload(2, "F-2", 5.0)), Some(json!(2))),
                (None, Some(json!(3))),
            ],
            5,
        ))
        .await
        .unwrap();
    let after = common::rows(&mut conn, &common::products()).await;
    let ids: Vec<i64> = after.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 4, 5]);
    assert_eq!(after[0]["price"].as_f64(), Some(3.0));
    assert_eq!(after[1]["price"].as_f64(), Some(5.0));
    assert_eq!(
        after[0]["created_at"], before[0]["created_at"],
        "the upsert keeps created_at"
    );
    assert_ne!(after[0]["updated_at"], before[0]["updated_at"]);
    db.drop_db().await;
}

async fn batch_consumer_slices_when_not_compacted(kind: Kind) {
    let db = TestDb::new(kind).await;
    let mut conn = db.conn().await;
    let schema = common::schema("com.acme.records.Product");
    let consumer = RecordConsumer::builder(common::products(), &schema)
        .database_url(&db.url)
        .compacted(false)
        .build_batch()
        .unwrap();
    // A1 A2(delete) B1 C1 C2 C3 → slices [A1 B1 C1] [A2 C2] [C3]: A ends deleted, C at its third version.
    consumer
        .consume_batch(batch(
            vec![
                (Some(product_payload(1, "A", 1.0)), Some(json!(1))),
                (None, Some(json!(1))),
                (Some(product_payload(2, "B", 1.0)), Some(json!(2))),
                (Some(product_payload(3, "C", 1.0)), Some(json!(3))),
                (Some(product_payload(3, "C", 2.0)), Some(json!(3))),
                (Some(product_payload(3, "C", 3.0)), Some(json!(3))),
            ],
            0,
        ))
        .await
        .unwrap();
    let after = common::rows(&mut conn, &common::products()).await;
    let ids: Vec<i64> = after.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [2, 3]);
    assert_eq!(after[1]["price"].as_f64(), Some(3.0));
    db.drop_db().await;
}

async fn batch_consumer_compound_keys(kind: Kind) {
    let db = TestDb::new(kind).await;
    let mut conn = db.conn().await;
    let schema = common::schema("com.acme.keys.Gadget");
    let consumer = RecordConsumer::builder(common::gadgets(), &schema)
        .database_url(&db.url)
        .build_batch()
        .unwrap();
    let gadget = |id: i64, region: &str, name: &str| json!({"id": id, "region": region, "name": name});
    let key = |id: i64, region: &str| Some(json!({"id": id, "region": region}));
    consumer
        .consume_batch(batch_on(
            "gadgets",
            vec![
                (Some(gadget(1, "eu", "a")), key(1, "eu")),
                (Some(gadget(1, "us", "b")), key(1, "us")),
                (Some(gadget(2, "eu", "c")), key(2, "eu")),
            ],
            0,
        ))
        .await
        .unwrap();
    consumer
        .consume_batch(batch_on(
            "gadgets",
            vec![(Some(gadget(1, "eu", "a2")), key(1, "eu")), (None, key(1, "us"))],
            3,
        ))
        .await
        .unwrap();
    let rows = common::rows(&mut conn, &common::gadgets()).await;
    let got: Vec<(i64, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["id"].as_i64().unwrap(),
                r["region"].as_str().unwrap(),
                r["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, [(1, "eu", "a2"), (2, "eu", "c")]);
    db.drop_db().await;
}

async fn batch_consumer_falls_back_per_message(kind: Kind) {
    let db = TestDb::new(kind).await;
    let mut conn = db.conn().await;
    let schema = common::schema("com.acme.records.Product");
    let consumer = RecordConsumer::builder(common::products(), &schema)
        .database_url(&db.url)
        .build_batch()
        .unwrap();
    // Product 2 has no name (a NOT NULL column): the multi-row upsert fails; alone, 1 and 3 save and 2 is
    // reported.
    let nameless = |id: i64| {
        let mut p = product_payload(id, &format!("G-{id}"), 1.0);
        p["name"] = Json::Null;
        p
    };
    let err = consumer
        .consume_batch(batch(
            vec![
                (Some(product_payload(1, "G-1", 1.0)), Some(json!(1))),
                (Some(nameless(2)), Some(json!(2))),
                (Some(product_payload(3, "G-3", 1.0)), Some(json!(3))),
            ],
            0,
        ))
        .await
        .unwrap_err();
    // The RecordError is at the end of the chain (the runner reads the wrappers: which messages were saved).
    let record_error = std::iter::successors(Some(&*err as &(dyn std::error::Error + 'static)), |e| e.source())
        .find_map(|e| e.downcast_ref::<RecordError>())
        .unwrap();
    match record_error {
        RecordError::BatchFallback { failed_keys, .. } => assert_eq!(failed_keys, &["2"]),
        other => panic!("{other}"),
    }
    assert!(
        err.to_string()
            .starts_with("1 message(s) could not be saved individually after the batch failed. Failed keys: 2"),
        "{err}"
    );
    let ids: Vec<i64> = common::rows(&mut conn, &common::products())
        .await
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 3]);

    // When nothing can be saved, the batch's own error is returned and nothing is written.
    let err = consumer
        .consume_batch(batch(
            vec![(Some(nameless(4)), Some(json!(4))), (Some(nameless(5)), Some(json!(5)))],
            3,
        ))
        .await
        .unwrap_err();
    assert!(!err.to_string().contains("individually"), "{err}");
    assert_eq!(common::count(&mut conn, "products").await, 2);
    db.drop_db().await;
}

async fn exactly_once_skips_redelivered_messages(kind: Kind) {
    let db = TestDb::new(kind).await;
    let mut conn = db.conn().await;
    let schema = common::schema("com.acme.records.Event");
    let consumer = RecordConsumer::builder(common::events(), &schema)
        .database_url(&db.url)
        .exactly_once(true)
        .build_batch()
        .unwrap();
    let events = |from: i64, to: i64| -> Vec<(Option<Json>, Option<Json>)> {
        (from..to)
            .map(|i| (Some(json!({"seq": i, "note": "e"})), None))
            .collect()
    };
    consumer
        .consume_batch(batch_on("events", events(0, 10), 0))
        .await
        .unwrap();
    assert_eq!(common::count(&mut conn, "events").await, 10);
    // Delivered again (after a crash before the Kafka commit), and again overlapping with new ones.
    consumer
        .consume_batch(batch_on("events", events(0, 10), 0))
        .await
        .unwrap();
    consumer
        .consume_batch(batch_on("events", events(5, 15), 5))
        .await
        .unwrap();
    assert_eq!(common::count(&mut conn, "events").await, 15);
    // Without exactly-once, a redelivered batch is applied again (no keys: every message inserts).
    let plain = RecordConsumer::builder(common::events(), &schema)
        .database_url(&db.url)
        .build_batch()
        .unwrap();
    plain.consume_batch(batch_on("events", events(0, 10), 0)).await.unwrap();
    assert_eq!(common::count(&mut conn, "events").await, 25);
    // Message mode stores offsets too.
    let single = RecordConsumer::builder(common::events(), &schema)
        .database_url(&db.url)
        .exactly_once(true)
        .build()
        .unwrap();
    let mut m = message(Some(json!({"seq": 100, "note": "m"})), None, 0);
    m.metadata.topic = "events-single".into();
    single.consume(m.clone()).await.unwrap();
    single.consume(m).await.unwrap();
    assert_eq!(common::count(&mut conn, "events").await, 26);
    db.drop_db().await;
}

async fn exactly_once_fallback_stops_at_the_failure(kind: Kind) {
    let db = TestDb::new(kind).await;
    let mut conn = db.conn().await;
    let schema = common::schema("com.acme.records.Product");
    let consumer = RecordConsumer::builder(common::products(), &schema)
        .database_url(&db.url)
        .exactly_once(true)
        .build_batch()
        .unwrap();
    let mut poison = product_payload(2, "H-2", 1.0);
    poison["name"] = Json::Null;
    let items = |second: Json| {
        vec![
            (Some(product_payload(1, "H-1", 1.0)), Some(json!(1))),
            (Some(second), Some(json!(2))),
            (Some(product_payload(3, "H-3", 1.0)), Some(json!(3))),
        ]
    };
    // 1 is saved, 2 fails, 3 is not tried: the stored offset points at 2.
    let err = consumer
        .consume_batch(batch(items(poison.clone()), 0))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Failed keys: 2"), "{err}");
    let ids = |rows: Vec<Map<String, Json>>| rows.iter().map(|r| r["id"].as_i64().unwrap()).collect::<Vec<_>>();
    assert_eq!(ids(common::rows(&mut conn, &common::products()).await), [1]);
    // Redelivered as it was (a retry): 1 is skipped, 2 fails again, nothing is applied twice.
    assert!(consumer.consume_batch(batch(items(poison), 0)).await.is_err());
    // Once 2 can be saved, the batch completes from there.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let created = common::rows(&mut conn, &common::products()).await[0]["updated_at"].clone();
    consumer
        .consume_batch(batch(items(product_payload(2, "H-2", 1.0)), 0))
        .await
        .unwrap();
    let rows = common::rows(&mut conn, &common::products()).await;
    assert_eq!(ids(rows.clone()), [1, 2, 3]);
    assert_eq!(rows[0]["updated_at"], created, "message 1 was not applied again");
    db.drop_db().await;
}
