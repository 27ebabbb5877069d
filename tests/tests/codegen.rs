//! Types generated from `schemas/` (`cargo xtask codegen` → `src/generated.rs`): current with the schemas,
//! the same bytes through the typed and the dynamic codec, evolution both ways, and producers and consumers
//! taking them as they are.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use deimos::avro::generated::{AvroRecord, BigDecimal, chrono, uuid};
use deimos::avro::{AvroSchema, ResolvedPlan, SchemaStore};
use deimos::consumer::{ConsumerRunner, Handler, HandlerError, Listener, Message};
use deimos::keys::KeyConfig;
use deimos::producer::{KafkaBackend, MemoryBackend, Producer, ProducerSetup, PublishOptions, Record};
use deimos::registry::{MemoryRegistry, SchemaRegistry};
use deimos_integration_tests::generated::com::acme::keys::{Gadget, GadgetKey};
use deimos_integration_tests::generated::com::acme::orders::{Address, Order};
use deimos_integration_tests::generated::com::acme::{Color, Everything, EverythingOpt, Inner, Status, Widget};
use serde_json::json;
use tokio::sync::Mutex;

const SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas");

fn store() -> SchemaStore {
    SchemaStore::load_all(SCHEMAS).unwrap()
}

#[test]
fn generated_types_are_current_with_the_schemas() {
    let fresh = deimos_codegen::Codegen::from_dir(SCHEMAS)
        .unwrap()
        .runtime("::deimos::avro")
        .source_name("schemas/")
        .generate()
        .unwrap();
    let checked_in = include_str!("../src/generated.rs");
    assert!(
        fresh == checked_in,
        "tests/src/generated.rs is out of date with schemas/: run `cargo xtask codegen` and commit the result"
    );
}

fn widget() -> Widget {
    Widget {
        id: 7,
        message_id: "m-7".into(),
        name: "sprocket".into(),
        description: "zinc".into(),
        price: 9.5,
        quantity: 3,
        status: Status::ACTIVE,
        tags: vec!["steel".into()],
        updated_at: 1_700_000_000_000,
        parent_id: None,
    }
}

fn everything() -> Everything {
    Everything {
        b: true,
        i: -3,
        l: 1 << 40,
        f: 1.5,
        d: -2.25,
        s: "text".into(),
        raw: vec![0, 1, 255],
        fx: vec![1, 2, 3, 4],
        color: Color::GREEN,
        nums: vec![1, -1],
        attrs: BTreeMap::from([("a".to_string(), 1), ("b".to_string(), 2)]),
        inner: Inner { x: 5, flag: true },
        opt: Some(EverythingOpt::String("forty-two".into())),
        ts_ms: chrono::DateTime::from_timestamp_millis(1_700_000_000_123).unwrap(),
        ts_us: chrono::DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
        day: chrono::NaiveDate::from_ymd_opt(2024, 2, 29).unwrap(),
        tod: chrono::NaiveTime::from_hms_milli_opt(13, 14, 15, 160).unwrap(),
        uid: uuid::Uuid::parse_str("0b9d2d4c-6c43-4f4e-9a8e-3f6b0c1d2e3f").unwrap(),
        amount: "1234.56".parse::<BigDecimal>().unwrap(),
    }
}

#[test]
fn typed_and_dynamic_codecs_write_the_same_bytes_and_read_the_value_back() {
    let store = store();
    let cases: Vec<(AvroSchema, Vec<u8>, serde_json::Value)> = vec![
        (
            Widget::schema().unwrap(),
            store.get(Widget::FULL_NAME).unwrap().encode(&widget()).unwrap(),
            serde_json::to_value(widget()).unwrap(),
        ),
        (
            Everything::schema().unwrap(),
            store.get(Everything::FULL_NAME).unwrap().encode(&everything()).unwrap(),
            {
                // serde tags a union enum's variant ({"Long": 42}); a loose payload gives the value alone.
                let mut json = serde_json::to_value(everything()).unwrap();
                json["opt"] = json!("forty-two");
                json
            },
        ),
    ];
    for (schema, typed, json) in &cases {
        let dynamic = schema
            .encode_value(json)
            .unwrap_or_else(|e| panic!("{}: {e}\n{json}", schema));
        assert_eq!(&dynamic, typed, "{}", schema.name().unwrap_or_default());
    }
    let back: Widget = store.get(Widget::FULL_NAME).unwrap().decode(&cases[0].1).unwrap();
    assert_eq!(back, widget());
    let back: Everything = store.get(Everything::FULL_NAME).unwrap().decode(&cases[1].1).unwrap();
    assert_eq!(back, everything());

    // The other union branch and a missing optional value.
    let mut e = everything();
    e.opt = Some(EverythingOpt::Long(42));
    let bytes = Everything::schema().unwrap().encode(&e).unwrap();
    assert_eq!(Everything::schema().unwrap().decode::<Everything>(&bytes).unwrap(), e);
    e.opt = None;
    let bytes = Everything::schema().unwrap().encode(&e).unwrap();
    assert_eq!(Everything::schema().unwrap().decode::<Everything>(&bytes).unwrap(), e);

    // A record of another namespace and file, through its generated module path.
    let order = Order {
        order_id: "o-1".into(),
        shipping: Address {
            street: "1 Main St".into(),
            city: "Springfield".into(),
            zip: Some("12345".into()),
        },
        billing: None,
        widget_status: Status::RETIRED,
        message_id: None,
        timestamp: "2024-01-01T00:00:00Z".into(),
    };
    let bytes = store.get(Order::FULL_NAME).unwrap().encode(&order).unwrap();
    assert_eq!(
        store.get(Order::FULL_NAME).unwrap().decode::<Order>(&bytes).unwrap(),
        order
    );
}

#[test]
fn generated_types_evolve_both_ways() {
    let current = Widget::schema().unwrap();
    // A newer writer adds a field with a default: the generated (older) type reads it and skips the field.
    let newer = AvroSchema::parse_with_refs(
        &Widget::SCHEMA.replacen(
            r#""fields":["#,
            r#""fields":[{"name":"color","type":"string","default":"none"},"#,
            1,
        ),
        &[],
    )
    .unwrap();
    let mut payload = serde_json::to_value(widget()).unwrap();
    payload["color"] = json!("teal");
    let bytes = newer.encode_value(&payload).unwrap();
    let plan = ResolvedPlan::new(&newer, &current).unwrap();
    assert_eq!(plan.decode::<Widget>(&bytes).unwrap(), widget());

    // An older writer without `parent_id`: the generated type gets the field's default (null → None).
    let older: serde_json::Value = serde_json::from_str(Widget::SCHEMA).unwrap();
    let mut older = older;
    older["fields"]
        .as_array_mut()
        .unwrap()
        .retain(|f| f["name"] != "parent_id");
    let older = AvroSchema::parse(&older.to_string()).unwrap();
    let mut payload = serde_json::to_value(widget()).unwrap();
    payload.as_object_mut().unwrap().remove("parent_id");
    let bytes = older.encode_value(&payload).unwrap();
    let plan = ResolvedPlan::new(&older, &current).unwrap();
    let read: Widget = plan.decode(&bytes).unwrap();
    assert_eq!(read.parent_id, Widget::default_parent_id());
    assert_eq!(read, widget());
}

#[test]
fn defaults_and_docs_are_generated() {
    // `Inner.flag` defaults to false: serde uses it for a missing field.
    let inner: Inner = serde_json::from_value(json!({"x": 1})).unwrap();
    assert_eq!(inner, Inner { x: 1, flag: false });
    let code = include_str!("../src/generated.rs");
    assert!(
        code.contains("/// A widget: the ten-field record used by the benchmarks"),
        "record docs"
    );
    assert!(code.contains("pub mod orders {"), "namespaces are modules");
}

#[tokio::test]
async fn producers_take_generated_types_and_keyed_tombstones() {
    let registry: Arc<dyn SchemaRegistry> = Arc::new(MemoryRegistry::new());
    let backend = MemoryBackend::new();
    let setup = ProducerSetup::builder(store(), registry, backend.clone()).build();
    let widgets = Producer::builder("WidgetProducer")
        .topic("widgets")
        .schema(Widget::FULL_NAME)
        .key_config(KeyConfig::field("id"))
        .build(&setup)
        .await
        .unwrap();
    let w = widget();
    widgets
        .publish_records(&[Record::new(&w), Record::deletion_of(&w)], &PublishOptions::new())
        .await
        .unwrap();
    let gadgets = Producer::builder("GadgetProducer")
        .topic("gadgets")
        .schema(Gadget::FULL_NAME)
        .key_config(KeyConfig::schema("GadgetKey"))
        .build(&setup)
        .await
        .unwrap();
    let key = GadgetKey {
        id: 4,
        region: "eu".into(),
    };
    gadgets
        .publish_records(
            &[Record::<Gadget>::tombstone_for(&key).unwrap()],
            &PublishOptions::new(),
        )
        .await
        .unwrap();
    // With a partition key, the tombstone goes where the value's messages went.
    let by_name = Producer::builder("WidgetsByName")
        .topic("widgets-by-name")
        .schema(Widget::FULL_NAME)
        .key_config(KeyConfig::field("id"))
        .partition_key(|payload| payload.get("name").and_then(|n| n.as_str()).map(str::to_string))
        .build(&setup)
        .await
        .unwrap();
    by_name
        .publish_records(&[Record::new(&w), Record::deletion_of(&w)], &PublishOptions::new())
        .await
        .unwrap();
    let sent = backend.sent();
    assert_eq!(sent[3].partition_key.as_deref(), Some("sprocket"));
    assert_eq!(
        (sent[4].payload.clone(), sent[4].partition_key.as_deref()),
        (None, Some("sprocket"))
    );
    assert_eq!(sent[0].key, Some(json!(7)));
    assert_eq!(sent[0].payload.as_ref().unwrap()["name"], json!("sprocket"));
    assert_eq!(
        (sent[1].key.clone(), sent[1].payload.clone()),
        (Some(json!(7)), None),
        "deletion_of: the key of the value, no value"
    );
    assert_eq!(
        (sent[2].key.clone(), sent[2].payload.clone()),
        (Some(json!({"id": 4, "region": "eu"})), None)
    );
}

struct Collect(Arc<Mutex<Vec<Option<Widget>>>>);

#[async_trait::async_trait]
impl Handler for Collect {
    type Payload = Widget;

    async fn consume(&self, message: Message<Widget>) -> Result<(), HandlerError> {
        self.0.lock().await.push(message.payload);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_decode_into_generated_types_over_kafka() {
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    mock.create_topic("generated.widgets", 1, 1).unwrap();
    let registry: Arc<dyn SchemaRegistry> = Arc::new(MemoryRegistry::new());
    let backend = KafkaBackend::builder()
        .bootstrap_servers(mock.bootstrap_servers())
        .build()
        .unwrap();
    let setup = ProducerSetup::builder(store(), Arc::clone(&registry), backend).build();
    let producer = Producer::builder("WidgetProducer")
        .topic("generated.widgets")
        .schema(Widget::FULL_NAME)
        .key_config(KeyConfig::field("id"))
        .build(&setup)
        .await
        .unwrap();
    let w = widget();
    producer
        .publish_records(&[Record::new(&w), Record::deletion_of(&w)], &PublishOptions::new())
        .await
        .unwrap();

    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = Listener::builder("generated.widgets", "generated-widgets")
        .schema(Widget::FULL_NAME)
        .key_config(KeyConfig::field("id"))
        .handler(Collect(Arc::clone(&seen)))
        .session_timeout(Duration::from_secs(6))
        .build()
        .unwrap();
    let runner = ConsumerRunner::builder()
        .bootstrap_servers(mock.bootstrap_servers())
        .registry(registry)
        .schema_store(SchemaStore::new(SCHEMAS))
        .listener(listener)
        .build()
        .unwrap();
    let done = Arc::clone(&seen);
    tokio::time::timeout(
        Duration::from_secs(60),
        runner.run_until(async move {
            while done.lock().await.len() < 2 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(*seen.lock().await, vec![Some(widget()), None]);
}
