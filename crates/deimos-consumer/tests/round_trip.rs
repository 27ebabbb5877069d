//! Values and keys produced as Deimos produces them come back decoded, for every key_config.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use deimos_consumer::{DecodedKey, KeyConfig, Listener};
use serde_json::{Value as Json, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_config_none_typed_payloads_tombstones_and_headers() {
    within(40, async {
        let kit = Kit::new();
        let topic = kit.topic("widgets-none", 1);
        let (handler, mut rx) = collect::<Widget>();
        let runner = kit
            .runner()
            .listener(
                kit.listener(&topic, "g-none")
                    .key_config(KeyConfig::None)
                    .handler(handler)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let running = Running::start(runner);

        let v1 = kit.widget(&topic, 1).await;
        kit.send_with_headers(
            &topic,
            None,
            None,
            Some(&v1),
            &[("trace", Some(b"abc")), ("empty", None)],
        )
        .await;
        kit.send(&topic, None, Some(b"raw-key"), None).await; // tombstone with a raw key
        let v3 = kit.widget(&topic, 3).await;
        kit.send(&topic, None, Some(b"k3"), Some(&v3)).await;

        let got = take(&mut rx, 3, 30).await;
        let first = &got[0];
        assert_eq!(first.payload.as_ref().map(|w| w.id), Some(1));
        assert_eq!(first.payload.as_ref().map(|w| w.status), Some(Status::ACTIVE));
        assert_eq!(first.metadata.key, None);
        assert_eq!(first.metadata.offset, 0);
        assert_eq!(&*first.metadata.topic, topic.as_str());
        assert_eq!(&*first.metadata.group_id, "g-none");
        assert_eq!(first.metadata.retry_count, 0);
        assert_eq!(first.metadata.headers.get_str("trace"), Some("abc"));
        assert_eq!(first.metadata.headers.len(), 2);
        assert!(first.metadata.timestamp.is_some());

        assert_eq!(got[1].payload, None, "a message without a value is a tombstone");
        assert_eq!(got[1].metadata.key, Some(DecodedKey::Text("raw-key".into())));
        assert_eq!(got[1].metadata.raw_key.as_deref(), Some(&b"raw-key"[..]));
        assert_eq!(got[2].metadata.key.as_ref().and_then(|k| k.as_str()), Some("k3"));
        running.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_config_plain_dynamic_payloads() {
    within(40, async {
        let kit = Kit::new();
        let topic = kit.topic("widgets-plain", 2);
        let (handler, mut rx) = collect::<Json>();
        let runner = kit
            .runner()
            .listener(
                kit.listener(&topic, "g-plain")
                    .key_config(KeyConfig::Plain)
                    .handler(handler)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let running = Running::start(runner);
        for id in 0..4 {
            let key = kit
                .key(&topic, WIDGET, KeyConfig::Plain, &json!(format!("key-{id}")))
                .await
                .unwrap();
            let value = kit.widget(&topic, id).await;
            kit.send(&topic, Some((id % 2) as i32), Some(&key), Some(&value)).await;
        }
        let mut got = take(&mut rx, 4, 30).await;
        got.sort_by_key(|m| m.payload.as_ref().and_then(|p| p["id"].as_i64()));
        for (id, m) in got.iter().enumerate() {
            assert_eq!(m.metadata.key, Some(DecodedKey::Text(format!("key-{id}"))));
            assert_eq!(m.metadata.partition, (id % 2) as i32);
            let payload = m.payload.as_ref().unwrap();
            assert_eq!(payload["name"], json!(format!("widget {id}")));
            assert_eq!(payload["status"], json!("ACTIVE"));
            assert_eq!(payload["parent_id"], Json::Null);
        }
        running.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_config_schema_decodes_key_records() {
    within(40, async {
        let kit = Kit::new();
        let topic = kit.topic("gadgets", 1);
        let (handler, mut rx) = collect::<Json>();
        let listener = kit
            .listener(&topic, "g-schema")
            .schema("Gadget")
            .namespace("com.acme.keys")
            .key_config(KeyConfig::schema("GadgetKey"))
            .handler(handler)
            .build()
            .unwrap();
        let running = Running::start(kit.runner().listener(listener).build().unwrap());
        let key_json = json!({"id": 5, "region": "eu"});
        let key = kit
            .key(
                &topic,
                "com.acme.keys.Gadget",
                KeyConfig::schema("GadgetKey"),
                &key_json,
            )
            .await;
        let value = kit
            .value(
                &topic,
                "com.acme.keys.Gadget",
                &json!({"id": 5, "region": "eu", "name": "g"}),
            )
            .await;
        kit.send(&topic, None, key.as_deref(), Some(&value)).await;
        kit.send(&topic, None, key.as_deref(), None).await;
        let got = take(&mut rx, 2, 30).await;
        assert_eq!(got[0].metadata.key, Some(DecodedKey::Value(key_json.clone())));
        assert_eq!(got[0].payload.as_ref().unwrap()["name"], json!("g"));
        assert_eq!(got[1].payload, None);
        assert_eq!(got[1].metadata.key, Some(DecodedKey::Value(key_json)));
        running.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_config_field_decodes_the_field_value() {
    within(40, async {
        let kit = Kit::new();
        let topic = kit.topic("widgets-field", 1);
        let (handler, mut rx) = collect::<Widget>();
        let listener = kit
            .listener(&topic, "g-field")
            .key_config(KeyConfig::field("message_id"))
            .handler(handler)
            .build()
            .unwrap();
        let running = Running::start(kit.runner().listener(listener).build().unwrap());
        for id in 0..3 {
            let key = kit
                .key(
                    &topic,
                    WIDGET,
                    KeyConfig::field("message_id"),
                    &json!(format!("m-{id}")),
                )
                .await;
            let value = kit.widget(&topic, id).await;
            kit.send(&topic, None, key.as_deref(), Some(&value)).await;
        }
        let key = kit
            .key(&topic, WIDGET, KeyConfig::field("message_id"), &json!("m-gone"))
            .await;
        kit.send(&topic, None, key.as_deref(), None).await;
        let got = take(&mut rx, 4, 30).await;
        for (id, m) in got.iter().take(3).enumerate() {
            assert_eq!(m.metadata.key, Some(DecodedKey::Value(json!(format!("m-{id}")))));
            assert_eq!(m.payload.as_ref().map(|w| w.id), Some(id as i64));
            assert_eq!(m.metadata.offset, id as i64);
        }
        assert_eq!(got[3].payload, None);
        assert_eq!(got[3].metadata.key.as_ref().and_then(|k| k.as_str()), Some("m-gone"));
        running.stop().await;
    })
    .await;
}

#[tokio::test]
async fn preflight_reports_bad_configuration_before_consuming() {
    let kit = Kit::new();
    let (handler, _rx) = collect::<Json>();
    let err = kit
        .runner()
        .listener(
            kit.listener("t", "g")
                .schema("com.acme.Nope")
                .handler(handler)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("com.acme.Nope"), "{err}");

    let (handler, _rx) = collect::<Json>();
    let err = kit
        .runner()
        .listener(
            kit.listener("t", "g")
                .key_config(KeyConfig::field("nope"))
                .handler(handler)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("key field `nope`"), "{err}");

    let (handler, _rx) = collect::<Json>();
    let err = kit
        .runner()
        .listener(
            kit.listener("t", "g")
                .kafka_setting("no.such.setting", "1")
                .handler(handler)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("no.such.setting"), "{err}");

    let err = kit.listener("t", "g").build().unwrap_err();
    assert!(err.to_string().contains("has no handler"), "{err}");
    let (handler, _rx) = collect::<Json>();
    let err = kit
        .listener("t", "g")
        .dead_letter_topic("t")
        .handler(handler)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("dead-letter topic"), "{err}");

    // Without a key config a listener is not built: Deimos's message, and what to write instead.
    let (handler, _rx) = collect::<Json>();
    let err = Listener::builder("t", "g")
        .schema(WIDGET)
        .handler(handler)
        .build()
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("No key config given - if you are not decoding keys, please use `key_config plain: true`")
            && text.contains("KeyConfig::Plain")
            && text.contains("topic `t`"),
        "{text}"
    );
}
