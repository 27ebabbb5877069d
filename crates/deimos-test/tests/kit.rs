//! The test kit through its public API: sent-message assertions, the consume helpers, schema compatibility.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use deimos_consumer::{
    Batch, BatchHandler, DecodedKey, ErrorPolicy, ErrorStage, Handler, HandlerError, KeyConfig, Listener, Message,
};
use deimos_producer::{Producer, PublishOptions};
use deimos_test::matchers::{any, any_integer, including};
use deimos_test::{
    ConsumeError, Expectation, TestKit, assert_not_sent, assert_sent, assert_sent_including, disable,
    schemas_compatible,
};
use serde::Deserialize;
use serde_json::{Value, json};

const SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");

fn kit() -> TestKit {
    TestKit::new(SCHEMAS).unwrap()
}

fn gadget(id: i64, name: &str) -> Value {
    json!({"id": id, "region": "eu", "name": name})
}

async fn gadget_producer(kit: &TestKit, config: KeyConfig) -> Producer {
    kit.producer(
        Producer::builder("GadgetProducer")
            .topic("gadgets")
            .schema("com.acme.keys.Gadget")
            .key_config(config),
    )
    .await
    .unwrap()
}

fn failure(f: impl FnOnce()) -> String {
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).expect_err("the assertion should fail");
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap()
}

// ---------------------------------------------------------------------------------------------------------
// Sent messages

#[tokio::test]
async fn exact_matching_follows_deimos() {
    let kit = kit();
    let producer = gadget_producer(&kit, KeyConfig::field("id")).await;
    producer.publish(gadget(1, "one")).await.unwrap();
    producer.publish(json!({"payload_key": 2})).await.unwrap(); // a tombstone keyed 2

    assert_sent!(kit, "gadgets", gadget(1, "one"));
    assert_sent!(kit, "gadgets", gadget(1, "one"), key = 1, partition_key = "1");
    assert_sent!(
        kit,
        "gadgets",
        json!({"id": any_integer(), "region": "eu", "name": any()})
    );
    assert_sent!(kit, "gadgets", Value::Null, key = 2); // have_sent(nil): the tombstone
    assert_sent!(kit, "gadgets", any(), key = 2);
    assert_sent_including!(kit, "gadgets", json!({"name": "one"}));
    // Exact: a missing key or an extra one is a mismatch; so is another key or topic.
    assert_not_sent!(kit, "gadgets", json!({"id": 1, "name": "one"}));
    assert_not_sent!(kit, "gadgets", gadget(1, "one"), key = 3);
    assert_not_sent!(kit, "other", any());
    assert!(
        Expectation::new("gadgets", gadget(1, "one"))
            .find(&kit.sent_messages())
            .is_ok()
    );

    kit.clear_sent_messages();
    assert_not_sent!(kit, "gadgets", any());
}

#[tokio::test]
async fn headers_must_be_present_and_others_may_be() {
    let kit = kit();
    let producer = gadget_producer(&kit, KeyConfig::field("id")).await;
    let options = PublishOptions::new().header("source", "test").header("trace", "x");
    producer
        .publish_list_with(vec![gadget(1, "one")], &options)
        .await
        .unwrap();

    assert_sent!(kit, "gadgets", gadget(1, "one"), headers = [("source", "test")]);
    assert_sent!(
        kit,
        "gadgets",
        gadget(1, "one"),
        headers = [("source", any()), ("trace", json!("x"))]
    );
    assert_not_sent!(kit, "gadgets", gadget(1, "one"), headers = [("source", "prod")]);
    assert_not_sent!(kit, "gadgets", gadget(1, "one"), headers = [("missing", any())]);
}

#[tokio::test]
async fn a_failure_lists_the_topic_and_diffs_the_closest_message() {
    let kit = kit();
    let producer = gadget_producer(&kit, KeyConfig::field("id")).await;
    producer
        .publish_list(vec![gadget(1, "one"), gadget(2, "two"), json!({"payload_key": 3})])
        .await
        .unwrap();
    let sent = kit.sent_messages();

    let report = failure(|| {
        Expectation::new(
            "gadgets",
            json!({"id": 2, "region": "us", "name": "two", "colour": "red"}),
        )
        .key(2)
        .assert_in(&sent)
    });
    assert!(report.contains("no message sent to `gadgets` matched"), "{report}");
    assert!(report.contains("messages sent to `gadgets` (3):"), "{report}");
    assert!(
        report.contains(r#"#0: key 1, payload {"id": 1, "name": "one", "region": "eu"}"#),
        "{report}"
    );
    assert!(report.contains("#2: key 3, payload tombstone"), "{report}");
    assert!(report.contains("closest: #1, 2 differences:"), "{report}");
    assert!(
        report.contains(r#"payload.region: expected "us", got "eu""#),
        "{report}"
    );
    assert!(
        report.contains(r#"payload.colour: expected "red", got nothing (missing)"#),
        "{report}"
    );

    let report = failure(|| Expectation::new("gadgetz", any()).assert_in(&sent));
    assert!(
        report.contains("nothing was sent to `gadgetz`; messages were sent to `gadgets` (3)"),
        "{report}"
    );

    let report = failure(|| Expectation::new("gadgets", gadget(1, "one")).assert_not_in(&sent));
    assert!(report.contains("but one was sent: key 1"), "{report}");
}

#[tokio::test]
async fn the_topic_prefix_is_part_of_the_sent_topic() {
    let kit = TestKit::builder(SCHEMAS).topic_prefix("staging.").build().unwrap();
    let producer = gadget_producer(&kit, KeyConfig::field("id")).await;
    producer.publish(gadget(1, "one")).await.unwrap();
    assert_sent!(kit, "staging.gadgets", gadget(1, "one"));
    assert_eq!(kit.sent_to("staging.gadgets").len(), 1);
    // The registry has the prefixed subjects, as Deimos registers them.
    let subjects = deimos_registry::SchemaRegistry::subjects(kit.memory_registry().as_ref())
        .await
        .unwrap();
    assert!(subjects.contains(&"staging.gadgets-value".to_string()), "{subjects:?}");
}

#[tokio::test]
async fn producers_can_be_disabled_in_a_test() {
    let kit = kit();
    let gadgets = gadget_producer(&kit, KeyConfig::field("id")).await;
    let others = kit
        .producer(
            Producer::builder("OtherProducer")
                .topic("others")
                .schema("com.acme.keys.Gadget")
                .key_config(KeyConfig::field("id")),
        )
        .await
        .unwrap();
    disable::without_producers_in(async {
        gadgets.publish(gadget(1, "one")).await.unwrap();
        others.publish(gadget(1, "one")).await.unwrap();
    })
    .await;
    assert!(kit.sent_messages().is_empty());
    disable::without_producers_named_in(&["GadgetProducer"], async {
        gadgets.publish(gadget(2, "two")).await.unwrap();
        others.publish(gadget(2, "two")).await.unwrap();
    })
    .await;
    assert_not_sent!(kit, "gadgets", any());
    assert_sent!(kit, "others", gadget(2, "two"));
}

// ---------------------------------------------------------------------------------------------------------
// Consume helpers

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
struct Gadget {
    id: i64,
    region: String,
    name: String,
}

type SeenMessage = (Option<DecodedKey>, Option<Gadget>, i32, i64, Option<String>, String);

/// Records what it was given; fails on gadgets named "bad".
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<SeenMessage>>>,
    calls: Arc<Mutex<u32>>,
}

#[async_trait]
impl Handler for Recorder {
    type Payload = Gadget;

    async fn consume(&self, m: Message<Gadget>) -> Result<(), HandlerError> {
        *self.calls.lock().unwrap() += 1;
        if m.payload.as_ref().is_some_and(|g| g.name == "bad") {
            return Err("bad gadget".into());
        }
        let header = m.metadata.headers.get_str("source").map(str::to_string);
        self.seen.lock().unwrap().push((
            m.metadata.key,
            m.payload,
            m.metadata.partition,
            m.metadata.offset,
            header,
            m.metadata.topic.to_string(),
        ));
        Ok(())
    }
}

fn listener(topic: &str, config: KeyConfig, handler: Recorder) -> Listener {
    Listener::builder(topic, "test-group")
        .schema("com.acme.keys.Gadget")
        .key_config(config)
        .handler(handler)
        .build()
        .unwrap()
}

fn typed(id: i64, name: &str) -> Gadget {
    Gadget {
        id,
        region: "eu".into(),
        name: name.into(),
    }
}

#[tokio::test]
async fn consume_message_decodes_through_the_real_path_with_deimos_default_keys() {
    let kit = kit();
    let cases = [
        (KeyConfig::field("id"), Some(DecodedKey::Value(json!(1)))),
        (
            KeyConfig::schema("GadgetKey"),
            Some(DecodedKey::Value(json!({"id": 1, "region": "1"}))),
        ),
        (KeyConfig::Plain, Some(DecodedKey::Text("1".into()))),
        (KeyConfig::None, None),
    ];
    for (i, (config, key)) in cases.into_iter().enumerate() {
        // A topic each: the registry refuses a key schema incompatible with the topic's earlier one.
        let topic = format!("gadgets.{i}");
        let handler = Recorder::default();
        let l = listener(&topic, config.clone(), handler.clone());
        let consumed = kit.consume_message(&l, gadget(5, "five")).await.unwrap();
        assert_eq!(consumed.attempts, 1);
        let seen = handler.seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "{config:?}");
        let (k, payload, partition, offset, _, topic) = &seen[0];
        assert_eq!(k, &key, "{config:?}");
        assert_eq!(payload, &Some(typed(5, "five")));
        assert_eq!((*partition, *offset), (1, 1));
        assert_eq!(*topic, format!("gadgets.{i}")); // the listener's own topic, not Deimos's 'my-topic'
    }
    // The value and the generated key schema went through the registry, as a producer's would.
    let subjects = deimos_registry::SchemaRegistry::subjects(kit.memory_registry().as_ref())
        .await
        .unwrap();
    assert!(subjects.contains(&"gadgets.0-value".to_string()), "{subjects:?}");
    assert!(subjects.contains(&"gadgets.0-key".to_string()), "{subjects:?}");
}

#[tokio::test]
async fn consume_message_takes_a_key_headers_and_position_and_consumes_tombstones() {
    let kit = kit();
    let handler = Recorder::default();
    let l = listener("gadgets", KeyConfig::field("id"), handler.clone());
    kit.consume_message(&l, gadget(7, "seven"))
        .key(7)
        .header("source", "unit")
        .at(3, 42)
        .await
        .unwrap();
    kit.consume_message(&l, Value::Null).key(8).await.unwrap();
    let seen = handler.seen.lock().unwrap();
    assert_eq!(seen[0].0, Some(DecodedKey::Value(json!(7))));
    assert_eq!((seen[0].2, seen[0].3), (3, 42));
    assert_eq!(seen[0].4.as_deref(), Some("unit"));
    assert_eq!(seen[1].0, Some(DecodedKey::Value(json!(8))));
    assert_eq!(seen[1].1, None);
}

#[tokio::test]
async fn invalid_payloads_are_refused_before_the_handler_runs() {
    let kit = kit();
    let handler = Recorder::default();
    let l = listener("gadgets", KeyConfig::field("id"), handler.clone());
    for (payload, needle) in [
        (json!({"id": 1, "region": "eu"}), "name"),
        (
            json!({"id": 1, "region": "eu", "name": "n", "colour": "red"}),
            "`colour` is not a field",
        ),
        (json!({"id": "1", "region": "eu", "name": "n"}), "`id` is \"1\""),
    ] {
        let err = kit.consume_message(&l, payload.clone()).await.unwrap_err();
        assert!(matches!(err, ConsumeError::InvalidPayload { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("com.acme.keys.Gadget") && text.contains(needle), "{text}");
        assert!(kit.assert_invalid_payload(&l, payload).contains(needle));
    }
    assert_eq!(*handler.calls.lock().unwrap(), 0);
    let report = failure(|| {
        kit.assert_invalid_payload(&l, gadget(1, "fine"));
    });
    assert!(report.contains("but it is valid"), "{report}");
    // A key that cannot be encoded with the key config says what to do.
    let l = listener("gadgets", KeyConfig::schema("GadgetKey"), Recorder::default());
    let err = kit
        .consume_message(&l, gadget(1, "n"))
        .key("not a record")
        .await
        .unwrap_err();
    assert!(matches!(err, ConsumeError::InvalidKey { .. }), "{err}");
}

#[tokio::test]
async fn errors_follow_the_listener_policy() {
    deimos_metrics::testing::install();
    let kit = kit();

    // Swallow (the default): skipped, counted, nothing retried.
    let handler = Recorder::default();
    let l = listener("policy.swallow", KeyConfig::field("id"), handler.clone());
    let err = kit.consume_message(&l, gadget(1, "bad")).await.unwrap_err();
    match &err {
        ConsumeError::Skipped {
            stage,
            attempts,
            fatal,
            dead_letters,
            ..
        } => {
            assert_eq!((*stage, *attempts, *fatal), (ErrorStage::Handler, 1, false));
            assert!(dead_letters.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.handler_error().unwrap().to_string(), "bad gadget");
    assert!(err.to_string().contains("error swallowed by its policy"), "{err}");
    kit.consume_message(&l, gadget(2, "good")).await.unwrap();
    let metrics = deimos_metrics::testing::capture();
    let count = |status| metrics.counter("handler", &[("topic", "policy.swallow"), ("status", status)]);
    assert_eq!((count("received"), count("success"), count("error")), (2, 1, 1));

    // Fatal without max_attempts: the runner would retry forever; the helper hands the error back.
    let handler = Recorder::default();
    let l = Listener::builder("policy.fatal", "g")
        .schema("com.acme.keys.Gadget")
        .key_config(KeyConfig::field("id"))
        .handler(handler.clone())
        .error_policy(ErrorPolicy::Fatal)
        .build()
        .unwrap();
    let err = kit.consume_message(&l, gadget(1, "bad")).await.unwrap_err();
    assert!(matches!(err, ConsumeError::Raised { attempts: 1, .. }), "{err:?}");
    assert_eq!(*handler.calls.lock().unwrap(), 1);

    // Fatal with max_attempts and a dead-letter topic: retried (without waiting), then dead-lettered.
    let handler = Recorder::default();
    let l = Listener::builder("policy.dlq", "g")
        .schema("com.acme.keys.Gadget")
        .key_config(KeyConfig::field("id"))
        .handler(handler.clone())
        .error_policy(ErrorPolicy::Fatal)
        .max_attempts(3)
        .dead_letter_topic("policy.dlq.dead")
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let err = kit.consume_message(&l, gadget(9, "bad")).key(9).await.unwrap_err();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "the backoff is not waited"
    );
    assert_eq!(*handler.calls.lock().unwrap(), 3);
    let dead = err.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].topic, "policy.dlq.dead");
    let h = &dead[0].headers;
    assert_eq!(h.get_str("deimos.dlq.original.topic"), Some("policy.dlq"));
    assert_eq!(h.get_str("deimos.dlq.original.partition"), Some("1"));
    assert_eq!(h.get_str("deimos.dlq.original.offset"), Some("1"));
    assert_eq!(h.get_str("deimos.dlq.error.type"), Some("handler"));
    assert_eq!(h.get_str("deimos.dlq.error.message"), Some("bad gadget"));
    assert_eq!(h.get_str("deimos.dlq.attempts"), Some("3"));
    assert!(
        dead[0].value.as_ref().is_some_and(|v| v[0] == 0),
        "the original framed value"
    );
    let metrics = deimos_metrics::testing::capture();
    assert_eq!(metrics.counter("handler_retry", &[("topic", "policy.dlq")]), 2);

    // reraise_errors (Deimos's test default) makes a swallowed error fatal.
    let strict = TestKit::builder(SCHEMAS).reraise_errors(true).build().unwrap();
    let l = listener("policy.reraise", KeyConfig::field("id"), Recorder::default());
    let err = strict.consume_message(&l, gadget(1, "bad")).await.unwrap_err();
    assert!(matches!(err, ConsumeError::Raised { .. }), "{err:?}");
}

#[tokio::test]
async fn the_global_fatal_error_predicate_applies_to_the_consume_helpers() {
    // Deimos's global `fatal_error`, as the runner takes it: what it picks is fatal, whatever the listener's
    // policy; it sees the error and its context.
    let contexts = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&contexts);
    let picky = TestKit::builder(SCHEMAS)
        .fatal_error(move |error, context| {
            seen.lock()
                .unwrap()
                .push((context.topic.to_string(), context.stage, context.retry_count));
            error.to_string() == "bad gadget"
        })
        .build()
        .unwrap();

    // A swallowing listener (the default policy) without max_attempts: the runner would retry forever, so
    // the helper hands the error back after the first attempt.
    let handler = Recorder::default();
    let l = listener("policy.global", KeyConfig::field("id"), handler.clone());
    let err = picky.consume_message(&l, gadget(1, "bad")).await.unwrap_err();
    assert!(matches!(err, ConsumeError::Raised { attempts: 1, .. }), "{err:?}");
    assert_eq!(*handler.calls.lock().unwrap(), 1);
    assert_eq!(
        contexts.lock().unwrap().as_slice(),
        [("policy.global".to_string(), ErrorStage::Handler, 0u32)]
    );

    // With max_attempts it is retried (clones of the kit share the predicate), then given up on as fatal.
    let handler = Recorder::default();
    let l = Listener::builder("policy.global.retried", "g")
        .schema("com.acme.keys.Gadget")
        .key_config(KeyConfig::field("id"))
        .handler(handler.clone())
        .max_attempts(2)
        .dead_letter_topic("policy.global.dead")
        .build()
        .unwrap();
    let err = picky.clone().consume_message(&l, gadget(2, "bad")).await.unwrap_err();
    match &err {
        ConsumeError::Skipped {
            attempts,
            fatal,
            dead_letters,
            ..
        } => {
            assert_eq!((*attempts, *fatal), (2, true));
            assert_eq!(dead_letters.len(), 1);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(*handler.calls.lock().unwrap(), 2);

    // An error the predicate does not pick keeps the listener's policy; so does a kit without one.
    let lenient = TestKit::builder(SCHEMAS).fatal_error(|_, _| false).build().unwrap();
    let l = listener("policy.global.lenient", KeyConfig::field("id"), Recorder::default());
    let err = lenient.consume_message(&l, gadget(3, "bad")).await.unwrap_err();
    assert!(
        matches!(
            err,
            ConsumeError::Skipped {
                fatal: false,
                attempts: 1,
                ..
            }
        ),
        "{err:?}"
    );
    let err = kit().consume_message(&l, gadget(3, "bad")).await.unwrap_err();
    assert!(matches!(err, ConsumeError::Skipped { fatal: false, .. }), "{err:?}");
}

/// Records batches; fails a batch holding a gadget named "bad".
type SeenBatch = (Vec<Option<Value>>, Vec<Option<Value>>, Vec<i64>);

#[derive(Clone, Default)]
struct BatchRecorder(Arc<Mutex<Vec<SeenBatch>>>);

#[async_trait]
impl BatchHandler for BatchRecorder {
    type Payload = Value;

    async fn consume_batch(&self, batch: Batch<Value>) -> Result<(), HandlerError> {
        if batch.payloads.iter().flatten().any(|p| p["name"] == "bad") {
            return Err("bad batch".into());
        }
        let keys = batch
            .metadata
            .keys
            .into_iter()
            .map(|k| k.map(DecodedKey::into_json))
            .collect();
        self.0
            .lock()
            .unwrap()
            .push((keys, batch.payloads, batch.metadata.offsets));
        Ok(())
    }
}

#[tokio::test]
async fn consume_batch_delivers_one_batch_with_keys_in_order() {
    let kit = kit();
    let handler = BatchRecorder::default();
    let l = Listener::builder("gadgets", "g")
        .schema("com.acme.keys.Gadget")
        .key_config(KeyConfig::field("id"))
        .batch_handler(handler.clone())
        .dead_letter_topic("gadgets.dlq")
        .build()
        .unwrap();
    kit.consume_batch(&l, vec![gadget(1, "a"), gadget(2, "b"), Value::Null])
        .keys([Some(1), None, Some(3)])
        .await
        .unwrap();
    let batches = handler.0.lock().unwrap().clone();
    assert_eq!(batches.len(), 1);
    let (keys, payloads, offsets) = &batches[0];
    assert_eq!(keys, &[Some(json!(1)), Some(json!(1)), Some(json!(3))]); // the None took Deimos's default
    assert_eq!(payloads[1], Some(gadget(2, "b")));
    assert_eq!(payloads[2], None);
    assert_eq!(offsets, &[1, 2, 3]);

    let err = kit
        .consume_batch(&l, vec![gadget(1, "a"), gadget(2, "bad")])
        .await
        .unwrap_err();
    assert_eq!(
        err.dead_letters().len(),
        2,
        "every message of the given-up batch is dead-lettered"
    );
    assert!(err.to_string().contains("gave up on the batch"), "{err}");

    // The helper must fit the delivery, as Deimos 2.5 checks.
    let err = kit.consume_message(&l, gadget(1, "a")).await.unwrap_err();
    assert!(err.to_string().contains("delivers batches"), "{err}");
    let single = listener("gadgets", KeyConfig::field("id"), Recorder::default());
    let err = kit.consume_batch(&single, vec![gadget(1, "a")]).await.unwrap_err();
    assert!(err.to_string().contains("one message at a time"), "{err}");
    let err = kit
        .consume_batch(&l, vec![gadget(1, "a"), json!({"id": 2})])
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConsumeError::InvalidPayload { index: Some(1), .. }),
        "{err:?}"
    );

    // An empty batch reaches the handler and nothing happens, as with Deimos's test_consume_batch.
    handler.0.lock().unwrap().clear();
    kit.consume_batch(&l, vec![]).await.unwrap();
    let batches = handler.0.lock().unwrap().clone();
    assert_eq!(batches.len(), 1);
    assert!(batches[0].1.is_empty());
}

#[test]
fn schemas_compatible_takes_paths_json_and_parsed_schemas() {
    let path = format!("{SCHEMAS}/com/acme/keys/Gadget.avsc");
    let store = deimos_avro::SchemaStore::load_all(SCHEMAS).unwrap();
    let parsed = store.get("com.acme.keys.Gadget").unwrap();
    let more = json!({"type": "record", "name": "Gadget", "namespace": "com.acme.keys", "fields": [
        {"name": "id", "type": "long"}, {"name": "region", "type": "string"}, {"name": "name", "type": "string"},
        {"name": "colour", "type": "string", "default": "none"}]});
    let fewer = r#"{"type": "record", "name": "Gadget", "namespace": "com.acme.keys",
        "fields": [{"name": "id", "type": "long"}]}"#;
    let required = json!({"type": "record", "name": "Gadget", "namespace": "com.acme.keys", "fields": [
        {"name": "id", "type": "long"}, {"name": "region", "type": "string"}, {"name": "name", "type": "string"},
        {"name": "colour", "type": "string"}]});
    assert!(schemas_compatible(path.as_str(), &parsed).unwrap());
    assert!(schemas_compatible(&parsed, more).unwrap());
    // Full compatibility: each must read the other. `fewer` reads Gadget, not the other way round.
    assert!(!schemas_compatible(&parsed, fewer).unwrap());
    assert!(!schemas_compatible(path.as_str(), required).unwrap());
    let err = schemas_compatible("no/such.avsc", fewer).unwrap_err();
    assert!(err.to_string().contains("no/such.avsc"), "{err}");
    let err = schemas_compatible(fewer, "{not json").unwrap_err();
    assert!(err.to_string().starts_with("schema b could not be read"), "{err}");
}

#[tokio::test]
async fn including_matches_nested_subsets_when_asked() {
    let kit = kit();
    let producer = gadget_producer(&kit, KeyConfig::None).await;
    producer.publish(gadget(1, "one")).await.unwrap();
    assert_sent!(kit, "gadgets", including(json!({"id": 1})));
}

#[test]
fn a_float_field_matches_the_number_it_was_given() {
    use deimos_test::matchers::matches;
    // A `float` field holds 32 bits, so a sent 123.456 reads back as 123.45600128173828 (Deimos's have_sent
    // compares it with the 123.456 it was given).
    let sent_back = f64::from(123.456f32);
    assert!(matches(
        &json!({"test_float": 123.456}),
        &json!({"test_float": sent_back})
    ));
    assert!(!matches(
        &json!({"test_float": 123.457}),
        &json!({"test_float": sent_back})
    ));
    // A double is compared as it is.
    assert!(!matches(&json!(0.1), &json!(0.1f64 + f64::EPSILON)));
}

#[tokio::test]
async fn a_blank_partition_key_checks_nothing() {
    let kit = kit();
    let producer = gadget_producer(&kit, KeyConfig::field("id")).await;
    producer.publish(gadget(1, "one")).await.unwrap();
    assert_sent!(kit, "gadgets", gadget(1, "one"), partition_key = "");
    assert_sent!(kit, "gadgets", gadget(1, "one"), partition_key = Value::Null);
    assert_not_sent!(kit, "gadgets", gadget(1, "one"), partition_key = "2");
}
