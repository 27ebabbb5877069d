//! Producers over the memory backend: Deimos's per-message order, keys, errors, groups, disabling, events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use deimos_avro::SchemaStore;
use deimos_keys::KeyConfig;
use deimos_metrics::events;
use deimos_producer::{
    DeliveryError, MemoryBackend, OutgoingBatch, Pending, Producer, ProducerSetup, PublishBackend, PublishError,
    PublishOptions, Record, disable,
};
use deimos_registry::{MemoryRegistry, SchemaRegistry};
use serde::Serialize;
use serde_json::{Value as Json, json};

fn store() -> SchemaStore {
    SchemaStore::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))
}

fn widget(id: Json) -> Json {
    json!({"id": id, "name": "sprocket", "description": "", "price": 1.5, "quantity": 2,
           "status": "ACTIVE", "tags": ["a"], "updated_at": 5})
}

struct Env {
    backend: MemoryBackend,
    registry: Arc<MemoryRegistry>,
    setup: ProducerSetup,
}

fn env_with(prefix: &str, backend: MemoryBackend) -> Env {
    let registry = Arc::new(MemoryRegistry::new());
    let setup = ProducerSetup::builder(store(), registry.clone(), backend.clone())
        .topic_prefix(prefix)
        .build();
    Env {
        backend,
        registry,
        setup,
    }
}

fn env() -> Env {
    env_with("", MemoryBackend::new())
}

async fn widgets(env: &Env, name: &str, key: KeyConfig) -> Producer {
    Producer::builder(name)
        .topic("widgets")
        .schema("Widget")
        .namespace("com.acme")
        .key_config(key)
        .build(&env.setup)
        .await
        .unwrap()
}

#[tokio::test]
async fn field_key_auto_fields_coercion_and_subjects() {
    let env = env_with("dev.", MemoryBackend::new());
    let p = widgets(&env, "field", KeyConfig::field("id")).await;
    let mut payload = widget(json!("7"));
    payload["unknown"] = json!(1);
    p.publish(payload).await.unwrap();
    let sent = env.backend.sent_to("dev.widgets");
    assert_eq!(sent.len(), 1);
    let m = &sent[0];
    assert_eq!(
        m.key,
        Some(json!("7")),
        "the key is read before coercion, as Deimos does"
    );
    let payload = m.payload.as_ref().unwrap();
    assert_eq!(payload["id"], json!(7), "coerced to long");
    assert!(payload.get("unknown").is_none(), "fields not in the schema are dropped");
    let message_id = payload["message_id"].as_str().unwrap();
    assert_eq!(message_id.len(), 36, "message_id is a v4 UUID");
    // Subjects carry the prefix and come from the configured topic.
    let subjects = env.registry.subjects().await.unwrap();
    assert!(subjects.contains(&"dev.widgets-value".to_string()), "{subjects:?}");
    assert!(subjects.contains(&"dev.widgets-key".to_string()), "{subjects:?}");
    let key_schema = env.registry.latest("dev.widgets-key").await.unwrap();
    assert_eq!(key_schema.schema.name(), Some("com.acme.Widget_key"));
}

#[tokio::test]
async fn payload_key_wins_and_a_lone_payload_key_is_a_tombstone() {
    let env = env();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let p = Producer::builder("pk")
        .topic("widgets")
        .schema("com.acme.Widget")
        .key_config(KeyConfig::Plain)
        .partition_key(move |payload| {
            sink.lock().unwrap().push(payload.contains_key("payload_key"));
            payload.get("name").and_then(Json::as_str).map(str::to_string)
        })
        .build(&env.setup)
        .await
        .unwrap();
    let mut payload = widget(json!(1));
    payload["payload_key"] = json!("explicit");
    p.publish_list(vec![payload, json!({"payload_key": "gone"})])
        .await
        .unwrap();
    let sent = env.backend.sent();
    assert_eq!(sent[0].key, Some(json!("explicit")));
    assert_eq!(
        sent[0].encoded_key.as_deref(),
        Some(&b"explicit"[..]),
        "plain keys are sent as they are"
    );
    assert_eq!(sent[0].partition_key.as_deref(), Some("sprocket"));
    assert!(sent[0].payload.as_ref().unwrap().get("payload_key").is_none());
    assert_eq!(sent[1].key, Some(json!("gone")));
    assert!(
        sent[1].payload.is_none() && sent[1].encoded_value.is_none(),
        "tombstone"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        vec![true, true],
        "the partition key function still sees payload_key"
    );
}

#[tokio::test]
async fn schema_and_none_keys() {
    let env = env();
    let gadgets = Producer::builder("gadgets")
        .topic("gadgets")
        .schema("com.acme.keys.Gadget")
        .key_config(KeyConfig::schema("GadgetKey"))
        .build(&env.setup)
        .await
        .unwrap();
    let schema = gadgets.schema().clone();
    let mut payload = serde_json::Map::new();
    for f in schema.fields() {
        payload.insert(f.name.clone(), json!(null));
    }
    let key_schema = gadgets.key_spec().key_schema().unwrap().clone();
    let mut key = serde_json::Map::new();
    for f in key_schema.fields() {
        key.insert(f.name.clone(), json!("k"));
    }
    // Whatever the fixture's fields, a key record that does not fit is refused with its field path.
    let err = gadgets
        .publish(json!({"payload_key": {"nope": 1}, "x": 1}))
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::Key { index: 0, .. }), "{err}");

    let none = widgets(&env, "none", KeyConfig::None).await;
    none.publish(widget(json!(3))).await.unwrap();
    let sent = env.backend.sent_to("widgets");
    assert_eq!(sent.last().unwrap().encoded_key, None);
}

#[tokio::test]
async fn deimos_errors() {
    let env = env();
    let err = Producer::builder("blank")
        .schema("com.acme.Widget")
        .key_config(KeyConfig::None)
        .build(&env.setup)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("Topic not specified. Please specify the topic."),
        "{err}"
    );

    let plain = widgets(&env, "plain", KeyConfig::Plain).await;
    let err = plain.publish(widget(json!(1))).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("No key given but a key is required! Use `key_config none: true` to avoid using keys."),
        "{err}"
    );
    // Without a key config every publish would fail: the producer is not built, with Deimos's message.
    let err = Producer::builder("unset")
        .topic("widgets")
        .schema("com.acme.Widget")
        .build(&env.setup)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(
            "producer `unset`: No key config given - if you are not encoding keys, please use `key_config plain: true`"
        ),
        "{err}"
    );
    let field = widgets(&env, "field", KeyConfig::field("id")).await;
    let mut bad = widget(json!(2));
    bad["status"] = json!("NOPE");
    let err = field.publish_list(vec![widget(json!(1)), bad]).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("message 1") && text.contains("status"), "{text}");
    assert!(
        env.backend.sent().is_empty(),
        "nothing of a call with a bad message is sent"
    );
    let err = field.publish(json!([1, 2])).await.unwrap_err();
    assert!(err.to_string().contains("must be a JSON object"), "{err}");
    let err = field
        .publish_list_with(vec![widget(json!(1))], &PublishOptions::new().topic(" "))
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("Topic not specified."), "{err}");

    let err = Producer::builder("missing")
        .topic("t")
        .schema("com.acme.Nope")
        .key_config(KeyConfig::None)
        .build(&env.setup)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("com.acme.Nope"), "{err}");
    let err = Producer::builder("badkey")
        .topic("t")
        .schema("com.acme.Widget")
        .key_config(KeyConfig::field("nope"))
        .build(&env.setup)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("key field `nope`"), "{err}");
}

#[derive(Serialize)]
struct Widget {
    id: i64,
    message_id: Option<String>,
    name: String,
    description: String,
    price: f64,
    quantity: i32,
    status: &'static str,
    tags: Vec<String>,
    updated_at: i64,
}

fn typed(id: i64, message_id: Option<&str>) -> Widget {
    Widget {
        id,
        message_id: message_id.map(str::to_string),
        name: "t".into(),
        description: String::new(),
        price: 1.0,
        quantity: 1,
        status: "ACTIVE",
        tags: vec![],
        updated_at: 0,
    }
}

#[tokio::test]
async fn typed_payloads_keys_and_tombstones() {
    let env = env();
    let p = widgets(&env, "typed", KeyConfig::field("id")).await;
    p.publish_typed_list(&[typed(1, Some("given")), typed(2, None)])
        .await
        .unwrap();
    p.publish_records(&[Record::<Widget>::tombstone(3)], &PublishOptions::new())
        .await
        .unwrap();
    let sent = env.backend.sent();
    assert_eq!(sent[0].key, Some(json!(1)));
    assert_eq!(sent[0].payload.as_ref().unwrap()["message_id"], "given");
    assert_eq!(
        sent[1].payload.as_ref().unwrap()["message_id"].as_str().unwrap().len(),
        36
    );
    assert_eq!(sent[2].key, Some(json!(3)));
    assert!(sent[2].payload.is_none());
    // Typed and loose payloads encode to the same bytes.
    let loose = p
        .publish(
            json!({"id": 1, "message_id": "given", "name": "t", "description": "", "price": 1.0,
        "quantity": 1, "status": "ACTIVE", "tags": [], "updated_at": 0}),
        )
        .await;
    loose.unwrap();
    let sent = env.backend.sent();
    assert_eq!(sent[0].encoded_value, sent[3].encoded_value);
}

/// Counts the groups the producer hands over.
#[derive(Debug, Default)]
struct Groups {
    sizes: Mutex<Vec<usize>>,
    inner: MemoryBackend,
}

#[async_trait]
impl PublishBackend for Groups {
    async fn enqueue(&self, batch: OutgoingBatch) -> Pending {
        self.sizes.lock().unwrap().push(batch.messages.len());
        self.inner.enqueue(batch).await
    }
}

#[tokio::test]
async fn large_lists_go_in_groups_of_500() {
    let groups = Arc::new(Groups::default());
    let registry: Arc<dyn SchemaRegistry> = Arc::new(MemoryRegistry::new());
    let setup = ProducerSetup::builder(store(), registry, groups.clone()).build();
    let p = Producer::builder("many")
        .topic("widgets")
        .schema("com.acme.Widget")
        .key_config(KeyConfig::field("id"))
        .build(&setup)
        .await
        .unwrap();
    let report = p
        .publish_list((0..1201).map(|i| widget(json!(i))).collect())
        .await
        .unwrap();
    assert_eq!(*groups.sizes.lock().unwrap(), vec![500, 500, 201]);
    assert_eq!(report.delivered().count(), 1201);
    // Order is kept across groups.
    let offsets: Vec<i64> = groups.inner.sent().iter().map(|m| m.offset).collect();
    assert_eq!(offsets, (0..1201).collect::<Vec<_>>());

    // A bad message fails its group; the groups before it were already handed over, and the error says so.
    groups.inner.clear();
    let mut payloads: Vec<Json> = (0..1201).map(|i| widget(json!(i))).collect();
    payloads[700]["status"] = json!("NOPE");
    let err = p.publish_list(payloads).await.unwrap_err();
    assert_eq!(err.sent(), 500, "{err}");
    assert!(err.to_string().contains("message 700"), "{err}");
    assert_eq!(groups.inner.sent().len(), 500);
}

#[tokio::test]
async fn too_large_messages_are_reported_and_the_rest_sent() {
    let env = env_with("", MemoryBackend::new().max_message_bytes(200));
    let p = widgets(&env, "big", KeyConfig::field("id")).await;
    let mut big = widget(json!(2));
    big["description"] = json!("x".repeat(500));
    let err = p
        .publish_list(vec![widget(json!(1)), big, widget(json!(3))])
        .await
        .unwrap_err();
    let PublishError::Undelivered {
        failed,
        first_index,
        first_error,
        report,
        ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!((*failed, *first_index), (1, 1));
    let DeliveryError::TooLarge { size, limit } = &**first_error else {
        panic!("{first_error}")
    };
    assert!(*size > 500 && *limit == 200);
    assert!(err.to_string().contains("over the limit of 200 bytes"), "{err}");
    assert_eq!(report.delivered().count(), 2);
    assert_eq!(env.backend.sent().len(), 2);
}

#[tokio::test]
async fn topic_override_keeps_the_configured_subject() {
    let env = env_with("p.", MemoryBackend::new());
    let p = widgets(&env, "override", KeyConfig::field("id")).await;
    p.publish_list_with(
        vec![widget(json!(1))],
        &PublishOptions::new().topic("elsewhere").header("h", "v"),
    )
    .await
    .unwrap();
    let sent = env.backend.sent();
    assert_eq!(sent[0].topic, "elsewhere");
    assert_eq!(sent[0].headers, vec![("h".to_string(), b"v".to_vec())]);
    let subjects = env.registry.subjects().await.unwrap();
    assert!(!subjects.iter().any(|s| s.starts_with("elsewhere")), "{subjects:?}");
}

#[tokio::test]
async fn disabled_producers_send_nothing() {
    let env = env();
    let a = widgets(&env, "A", KeyConfig::field("id")).await;
    let b = widgets(&env, "B", KeyConfig::field("id")).await;
    let r = disable::without_producers_named_in(&["A"], async {
        let ra = a.publish(widget(json!(1))).await.unwrap();
        b.publish(widget(json!(2))).await.unwrap();
        ra
    })
    .await;
    assert!(r.disabled);
    let outcome: Result<(), &str> = disable::without_producers_in(async {
        a.publish(widget(json!(3))).await.unwrap();
        b.publish(widget(json!(4))).await.unwrap();
        Err("the block failed")
    })
    .await;
    assert!(outcome.is_err());
    a.publish(widget(json!(5))).await.unwrap();
    let keys: Vec<Json> = env.backend.sent().into_iter().filter_map(|m| m.key).collect();
    assert_eq!(keys, vec![json!(2), json!(5)], "scopes end even when the block fails");
}

#[tokio::test]
async fn a_disabled_setup_disables_its_own_producers_and_no_others() {
    let on = env();
    let off_backend = MemoryBackend::new();
    let off = Env {
        backend: off_backend.clone(),
        registry: Arc::new(MemoryRegistry::new()),
        setup: ProducerSetup::builder(store(), Arc::new(MemoryRegistry::new()), off_backend)
            .disabled(true)
            .build(),
    };
    let quiet = widgets(&off, "A", KeyConfig::field("id")).await;
    let loud = widgets(&on, "A", KeyConfig::field("id")).await;
    assert!(quiet.publish(widget(json!(1))).await.unwrap().disabled);
    assert!(!loud.publish(widget(json!(2))).await.unwrap().disabled);
    assert!(off.backend.sent().is_empty());
    assert_eq!(
        on.backend.sent().len(),
        1,
        "a producer of the same name on another setup still sends"
    );
    assert!(!disable::all_disabled(), "nothing process-wide changed");
}

#[tokio::test]
async fn encode_messages_event_carries_producer_topic_and_payloads() {
    let env = env();
    let p = widgets(&env, "evented", KeyConfig::field("id")).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let _sub = events::subscribe(events::ENCODE_MESSAGES, move |e| {
        if e.producer.as_deref() == Some("evented") {
            sink.lock().unwrap().push(e.clone());
        }
    });
    p.publish(widget(json!(1))).await.unwrap();
    let _ = p.publish(json!(1)).await;
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].topic, "widgets");
    assert_eq!(seen[0].payloads, vec![widget(json!(1))]);
    assert!(seen[0].error.is_none() && seen[0].duration.is_some());
    assert_eq!(seen[1].error.as_ref().unwrap().kind, "NotAnObject");
}
