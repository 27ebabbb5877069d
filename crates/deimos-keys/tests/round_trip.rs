#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]
//! Encoding then decoding keys through a schema registry, for every key config; subjects; caching.

mod common;

use common::{Counting, framed};
use deimos_keys::{DecodedKey, KeyConfig, KeyDecoder, KeyEncoder, KeyError, KeySpec, key_subject};
use deimos_registry::{MemoryRegistry, SchemaRegistry};
use serde_json::{Value as Json, json};

fn spec(config: KeyConfig, value: &str) -> KeySpec {
    let store = common::store();
    KeySpec::build(config, &store.get(value).unwrap(), &store).unwrap()
}

async fn round_trip(config: KeyConfig, value: &str, key: Json) -> Option<DecodedKey> {
    let registry = MemoryRegistry::new();
    let s = spec(config, value);
    let encoder = KeyEncoder::for_topic(s.clone(), "", "widgets");
    encoder.prepare(&registry).await.unwrap();
    let bytes = encoder.encode(Some(&key)).unwrap();
    KeyDecoder::new(s).decode(&registry, bytes.as_deref()).await.unwrap()
}

#[tokio::test]
async fn field_keys_round_trip_to_the_field_value() {
    for (field, key) in [("id", json!(7)), ("id", json!(-1_234_567_890_123_i64))] {
        let got = round_trip(KeyConfig::field(field), "com.acme.Widget", key.clone()).await;
        assert_eq!(got, Some(DecodedKey::Value(key)));
    }
    for (field, key) in [
        ("b", json!(true)),
        ("i", json!(3)),
        ("f", json!(1.5)),
        ("d", json!(2.25)),
        ("s", json!("abc")),
        ("raw", json!("ab")),
    ] {
        let got = round_trip(KeyConfig::field(field), "com.acme.Everything", key.clone()).await;
        assert_eq!(got, Some(DecodedKey::Value(key)), "{field}");
    }
}

#[tokio::test]
async fn schema_keys_round_trip_to_the_whole_record() {
    let key = json!({"id": 9, "region": "eu"});
    let got = round_trip(KeyConfig::schema("GadgetKey"), "com.acme.keys.Gadget", key.clone()).await;
    assert_eq!(got, Some(DecodedKey::Value(key)));
}

#[tokio::test]
async fn plain_and_none_keys_round_trip_as_text() {
    for config in [KeyConfig::Plain, KeyConfig::None] {
        let got = round_trip(config.clone(), "com.acme.Widget", json!("k-1")).await;
        assert_eq!(got, Some(DecodedKey::Text("k-1".into())), "{config}");
        let got = round_trip(config.clone(), "com.acme.Widget", json!(42)).await;
        assert_eq!(got.as_ref().and_then(DecodedKey::as_str), Some("42"), "{config}");
    }
}

#[tokio::test]
async fn raw_keys_that_are_not_utf8_come_back_as_bytes() {
    let registry = MemoryRegistry::new();
    let d = KeyDecoder::new(KeySpec::schemaless(KeyConfig::Plain).unwrap());
    let got = d.decode(&registry, Some(&[0xff, 0x41])).await.unwrap().unwrap();
    assert_eq!(got, DecodedKey::Bytes(vec![0xff, 0x41]));
    assert_eq!(got.into_json(), json!("\u{ff}A"));
}

#[tokio::test]
async fn messages_without_a_key_decode_to_none_whatever_the_config() {
    let registry = MemoryRegistry::new();
    for config in [
        KeyConfig::NotSet,
        KeyConfig::None,
        KeyConfig::Plain,
        KeyConfig::field("id"),
    ] {
        let d = KeyDecoder::new(spec(config.clone(), "com.acme.Widget"));
        assert_eq!(d.decode(&registry, None).await.unwrap(), None, "{config}");
    }
}

#[tokio::test]
async fn a_consumer_without_key_config_rejects_keys_with_deimos_s_message() {
    let registry = MemoryRegistry::new();
    let d = KeyDecoder::new(KeySpec::schemaless(KeyConfig::NotSet).unwrap());
    let e = d.decode(&registry, Some(b"k")).await.unwrap_err();
    assert!(matches!(e, KeyError::NoKeyConfigForDecoding), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("No key config given - if you are not decoding keys, please use `key_config plain: true`"),
        "{e}"
    );
}

#[tokio::test]
async fn no_key_with_key_config_none_sends_no_key() {
    let registry = MemoryRegistry::new();
    let e = KeyEncoder::for_topic(spec(KeyConfig::None, "com.acme.Widget"), "", "widgets");
    e.prepare(&registry).await.unwrap();
    assert_eq!(e.encode(None).unwrap(), None);
    assert_eq!(e.encode(Some(&Json::Null)).unwrap(), None, "a JSON null key is no key");
    assert!(registry.subjects().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_key_schema_is_registered_under_prefix_topic_key() {
    assert_eq!(key_subject("staging.", "widgets"), "staging.widgets-key");
    let registry = MemoryRegistry::new();
    let s = spec(KeyConfig::field("id"), "com.acme.Widget");
    let e = KeyEncoder::for_topic(s.clone(), "staging.", "widgets");
    assert_eq!(e.subject(), "staging.widgets-key");
    e.prepare(&registry).await.unwrap();
    assert_eq!(
        registry.subjects().await.unwrap(),
        vec!["staging.widgets-key".to_string()]
    );
    let latest = registry.latest("staging.widgets-key").await.unwrap();
    assert_eq!(Some(latest.id), e.schema_id());
    assert_eq!(&latest.schema, s.key_schema().unwrap());
    let bytes = e.encode(Some(&json!(5))).unwrap().unwrap();
    assert_eq!(bytes, framed(latest.id, &[10]));

    // Another topic with the same key schema: another subject, the same global id.
    let other = KeyEncoder::for_topic(s, "staging.", "gizmos");
    other.prepare(&registry).await.unwrap();
    assert_eq!(other.schema_id(), e.schema_id());
    assert_eq!(registry.subjects().await.unwrap().len(), 2);

    let custom = KeyEncoder::new(
        spec(KeyConfig::schema("GadgetKey"), "com.acme.keys.Gadget"),
        "my-subject",
    );
    custom.prepare(&registry).await.unwrap();
    assert!(registry.subjects().await.unwrap().contains(&"my-subject".to_string()));
}

#[tokio::test]
async fn registration_happens_once_and_writer_schemas_are_fetched_once() {
    let registry = Counting::default();
    let s = spec(KeyConfig::field("id"), "com.acme.Widget");
    let e = KeyEncoder::for_topic(s.clone(), "", "widgets");
    assert!(!e.is_prepared());
    e.prepare(&registry).await.unwrap();
    e.prepare(&registry).await.unwrap();
    assert!(e.is_prepared());
    assert_eq!(registry.registers(), 1);

    let d = KeyDecoder::new(s);
    for k in 0..5 {
        let bytes = e.encode(Some(&json!(k))).unwrap();
        let got = d.decode(&registry, bytes.as_deref()).await.unwrap();
        assert_eq!(got, Some(DecodedKey::Value(json!(k))));
    }
    assert_eq!(registry.by_id(), 1);
}

#[tokio::test]
async fn encoding_before_prepare_says_what_to_do() {
    let e = KeyEncoder::for_topic(spec(KeyConfig::field("id"), "com.acme.Widget"), "", "widgets");
    let err = e.encode(Some(&json!(1))).unwrap_err();
    assert!(matches!(err, KeyError::NotPrepared { .. }), "{err:?}");
    assert!(
        err.to_string().contains("call `KeyEncoder::prepare(&registry).await`"),
        "{err}"
    );
    // Configs without a key schema need no preparation.
    let plain = KeyEncoder::for_topic(spec(KeyConfig::Plain, "com.acme.Widget"), "", "widgets");
    assert!(plain.is_prepared());
    assert_eq!(plain.encode(Some(&json!("k"))).unwrap(), Some(b"k".to_vec()));
}

#[tokio::test]
async fn prepare_works_through_a_dyn_registry() {
    let registry: std::sync::Arc<dyn SchemaRegistry> = std::sync::Arc::new(MemoryRegistry::new());
    let s = spec(KeyConfig::field("id"), "com.acme.Widget");
    let e = KeyEncoder::for_topic(s.clone(), "", "widgets");
    e.prepare(registry.as_ref()).await.unwrap();
    let bytes = e.encode(Some(&json!(3))).unwrap();
    let got = KeyDecoder::new(s).decode(&*registry, bytes.as_deref()).await.unwrap();
    assert_eq!(got, Some(DecodedKey::Value(json!(3))));
}

async fn schema_encoder() -> KeyEncoder {
    let registry = MemoryRegistry::new();
    let e = KeyEncoder::for_topic(
        spec(KeyConfig::schema("GadgetKey"), "com.acme.keys.Gadget"),
        "",
        "gadgets",
    );
    e.prepare(&registry).await.unwrap();
    e
}

#[tokio::test]
async fn schema_keys_must_be_objects_matching_the_key_schema() {
    let e = schema_encoder().await;
    let err = e.encode(Some(&json!("k-1"))).unwrap_err();
    assert!(matches!(err, KeyError::KeyNotObject { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "the key for key schema com.acme.keys.GadgetKey must be an object with the key schema's fields, got string \"k-1\""
    );

    let err = e
        .encode(Some(&json!({"id": 1, "region": "eu", "extra": 1})))
        .unwrap_err();
    assert!(
        matches!(&err, KeyError::UnknownKeyField { field, .. } if field == "extra"),
        "{err:?}"
    );
    assert!(err.to_string().contains("(its fields: id, region)"), "{err}");

    let err = e.encode(Some(&json!({"id": "abc", "region": "eu"}))).unwrap_err();
    assert!(matches!(err, KeyError::Encode { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("the key does not fit key schema com.acme.keys.GadgetKey: field `id`"),
        "{err}"
    );

    let err = e.encode(Some(&json!({"id": 1}))).unwrap_err();
    assert!(err.to_string().contains("missing required field `region`"), "{err}");
}

#[tokio::test]
async fn field_keys_that_do_not_fit_the_field_type_are_errors() {
    let registry = MemoryRegistry::new();
    let e = KeyEncoder::for_topic(spec(KeyConfig::field("id"), "com.acme.Widget"), "", "widgets");
    e.prepare(&registry).await.unwrap();
    let err = e.encode(Some(&json!({"not": "a long"}))).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("the key does not fit key schema com.acme.Widget_key: field `id`"),
        "{err}"
    );
}

#[tokio::test]
async fn keys_are_read_with_the_local_key_schema_as_reader() {
    // A producer with a newer key schema (an extra field with a default) writes; an older consumer reads.
    let registry = MemoryRegistry::new();
    let store = common::store();
    let newer = store
        .add_json(
            r#"{"type":"record","name":"GadgetKey","namespace":"com.acme.keys","fields":[
                {"name":"id","type":"long"},{"name":"region","type":"string"},
                {"name":"zone","type":"string","default":"z1"}]}"#,
        )
        .unwrap();
    let gadget = store.get("com.acme.keys.Gadget").unwrap();
    let writer_spec = KeySpec::build(KeyConfig::schema("GadgetKey"), &gadget, &store).unwrap();
    assert_eq!(writer_spec.key_schema(), Some(&newer));
    let e = KeyEncoder::for_topic(writer_spec, "", "gadgets");
    e.prepare(&registry).await.unwrap();
    let bytes = e.encode(Some(&json!({"id": 1, "region": "eu", "zone": "z9"}))).unwrap();

    let reader = KeyDecoder::new(spec(KeyConfig::schema("GadgetKey"), "com.acme.keys.Gadget"));
    let got = reader.decode(&registry, bytes.as_deref()).await.unwrap();
    assert_eq!(got, Some(DecodedKey::Value(json!({"id": 1, "region": "eu"}))));
}

#[tokio::test]
async fn undecodable_keys_say_why() {
    let registry = MemoryRegistry::new();
    let d = KeyDecoder::new(spec(KeyConfig::field("id"), "com.acme.Widget"));
    let err = d.decode(&registry, Some(b"plain-key")).await.unwrap_err();
    assert!(matches!(err, KeyError::Decode { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("not a Confluent-framed Avro message"), "{msg}");
    assert!(msg.contains("use `KeyConfig::Plain`"), "{msg}");

    let err = d.decode(&registry, Some(&framed(77, &[2]))).await.unwrap_err();
    assert!(matches!(err, KeyError::FetchSchema { id: 77, .. }), "{err:?}");
    assert!(err.to_string().contains("schema id 77 not found"), "{err}");
}
