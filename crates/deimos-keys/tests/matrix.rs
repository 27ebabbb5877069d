#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]
//! The key-config matrix of Deimos's README ("Kafka Message Keys"): every config × the key given via
//! `payload_key`, via the key field, or missing; plus key extraction and tombstones.

mod common;

use common::{framed, obj, produce_key};
use deimos_keys::{ExtractedKey, KeyConfig, KeyError, KeySpec, PAYLOAD_KEY};
use serde_json::{Value as Json, json};

/// Deimos's messages, word for word.
const NO_KEY_GIVEN: &str = "No key given but a key is required! Use `key_config none: true` to avoid using keys.";
const NO_KEY_CONFIG: &str = "No key config given - if you are not encoding keys, please use `key_config plain: true`";

enum Expect {
    Bytes(Option<Vec<u8>>),
    NoKeyGiven,
    NoKeyConfig,
}

const WIDGET: &str = "com.acme.Widget";
const GADGET: &str = "com.acme.keys.Gadget";

/// `id: long` 9 and 5 in Avro (zigzag varints).
const NINE: u8 = 18;
const FIVE: u8 = 10;

fn rows() -> Vec<(KeyConfig, &'static str, &'static str, Json, Expect)> {
    use Expect::*;
    let via_payload_key = |k: Json| {
        let mut p = json!({"id": 5, "region": "eu", "name": "w"});
        p[PAYLOAD_KEY] = k;
        p
    };
    let via_field = || json!({"id": 5, "region": "eu", "name": "w"});
    let missing = || json!({"name": "w"});
    vec![
        // (none set): a key present → "No key config given…"; no key → "No key given…".
        (
            KeyConfig::NotSet,
            WIDGET,
            "payload_key",
            via_payload_key(json!("k-1")),
            NoKeyConfig,
        ),
        (KeyConfig::NotSet, WIDGET, "field", via_field(), NoKeyGiven),
        (KeyConfig::NotSet, WIDGET, "missing", missing(), NoKeyGiven),
        // none: a given key is passed raw; no key is fine.
        (
            KeyConfig::None,
            WIDGET,
            "payload_key",
            via_payload_key(json!("k-1")),
            Bytes(Some(b"k-1".to_vec())),
        ),
        (KeyConfig::None, WIDGET, "field", via_field(), Bytes(None)),
        (KeyConfig::None, WIDGET, "missing", missing(), Bytes(None)),
        // plain: payload_key required, sent raw.
        (
            KeyConfig::Plain,
            WIDGET,
            "payload_key",
            via_payload_key(json!("k-1")),
            Bytes(Some(b"k-1".to_vec())),
        ),
        (KeyConfig::Plain, WIDGET, "field", via_field(), NoKeyGiven),
        (KeyConfig::Plain, WIDGET, "missing", missing(), NoKeyGiven),
        // schema: payload_key required (an object), Avro-encoded with the key schema and framed.
        (
            KeyConfig::schema("GadgetKey"),
            GADGET,
            "payload_key",
            via_payload_key(json!({"id": 9, "region": "eu"})),
            Bytes(Some(framed(1, &[NINE, 4, b'e', b'u']))),
        ),
        (KeyConfig::schema("GadgetKey"), GADGET, "field", via_field(), NoKeyGiven),
        (KeyConfig::schema("GadgetKey"), GADGET, "missing", missing(), NoKeyGiven),
        // field: payload_key wins, else the field; encoded as {id: key} with the generated schema.
        (
            KeyConfig::field("id"),
            WIDGET,
            "payload_key",
            via_payload_key(json!(9)),
            Bytes(Some(framed(1, &[NINE]))),
        ),
        (
            KeyConfig::field("id"),
            WIDGET,
            "field",
            via_field(),
            Bytes(Some(framed(1, &[FIVE]))),
        ),
        (KeyConfig::field("id"), WIDGET, "missing", missing(), NoKeyGiven),
    ]
}

#[tokio::test]
async fn key_config_matrix() {
    for (config, value, case, payload, expect) in rows() {
        let got = produce_key(config.clone(), value, payload).await;
        let ctx = format!("{config} with the key via {case}");
        match (expect, got) {
            (Expect::Bytes(want), Ok(bytes)) => assert_eq!(bytes, want, "{ctx}"),
            (Expect::NoKeyGiven, Err(e)) => {
                assert!(matches!(e, KeyError::NoKeyGiven), "{ctx}: {e:?}");
                assert!(e.to_string().starts_with(NO_KEY_GIVEN), "{ctx}: {e}");
                assert!(e.to_string().contains("KeyConfig::None"), "{ctx}: {e}");
            }
            (Expect::NoKeyConfig, Err(e)) => {
                assert!(matches!(e, KeyError::NoKeyConfig), "{ctx}: {e:?}");
                assert!(e.to_string().starts_with(NO_KEY_CONFIG), "{ctx}: {e}");
                assert!(e.to_string().contains("KeyConfig::Plain"), "{ctx}: {e}");
            }
            (_, got) => panic!("{ctx}: unexpected {got:?}"),
        }
    }
}

#[tokio::test]
async fn plain_keys_are_sent_like_ruby_to_s() {
    for (key, want) in [
        (json!("héllo"), "héllo".as_bytes().to_vec()),
        (json!(42), b"42".to_vec()),
        (json!(-7), b"-7".to_vec()),
        (json!(1.5), b"1.5".to_vec()),
        (json!(true), b"true".to_vec()),
        (json!(0), b"0".to_vec()),
        (json!(""), Vec::new()),
    ] {
        for config in [KeyConfig::Plain, KeyConfig::None] {
            let got = produce_key(config.clone(), WIDGET, json!({ "payload_key": key.clone(), "id": 1 })).await;
            assert_eq!(got.unwrap(), Some(want.clone()), "{config} {key}");
        }
    }
}

#[tokio::test]
async fn structured_plain_keys_are_rejected() {
    for key in [json!({"a": 1}), json!([1, 2])] {
        let e = produce_key(KeyConfig::Plain, WIDGET, json!({ "payload_key": key, "id": 1 }))
            .await
            .unwrap_err();
        assert!(matches!(e, KeyError::RawKeyNotScalar { config: "plain", .. }), "{e:?}");
        assert!(e.to_string().contains("KeyConfig::Schema"), "{e}");
    }
}

fn spec(config: KeyConfig, value: &str) -> KeySpec {
    let store = common::store();
    KeySpec::build(config, &store.get(value).unwrap(), &store).unwrap()
}

fn take(spec: &KeySpec, payload: Json) -> (ExtractedKey, Json) {
    let mut p = obj(payload);
    let e = spec.take_key(&mut p);
    (e, Json::Object(p))
}

#[test]
fn payload_key_is_removed_and_the_key_field_stays() {
    let s = spec(KeyConfig::field("id"), WIDGET);
    let (e, rest) = take(&s, json!({"payload_key": 9, "id": 5, "name": "w"}));
    assert_eq!(e.key, Some(json!(9)));
    assert!(!e.tombstone);
    assert_eq!(rest, json!({"id": 5, "name": "w"}));

    let (e, rest) = take(&s, json!({"id": 5, "name": "w"}));
    assert_eq!(e.key, Some(json!(5)));
    assert_eq!(rest, json!({"id": 5, "name": "w"}));
}

#[test]
fn the_key_field_is_read_before_coercion() {
    let s = spec(KeyConfig::field("id"), WIDGET);
    let (e, _) = take(&s, json!({"id": "5"}));
    assert_eq!(e.key, Some(json!("5")));
}

#[test]
fn falsy_payload_keys_fall_back_to_the_field_and_zero_is_truthy() {
    let s = spec(KeyConfig::field("id"), WIDGET);
    assert_eq!(take(&s, json!({"payload_key": null, "id": 5})).0.key, Some(json!(5)));
    assert_eq!(take(&s, json!({"payload_key": false, "id": 5})).0.key, Some(json!(5)));
    assert_eq!(take(&s, json!({"payload_key": 0, "id": 5})).0.key, Some(json!(0)));
    assert_eq!(take(&s, json!({"payload_key": "", "id": 5})).0.key, Some(json!("")));
    assert_eq!(take(&s, json!({"id": null})).0.key, None);

    let plain = spec(KeyConfig::Plain, WIDGET);
    assert_eq!(take(&plain, json!({"payload_key": false, "id": 5})).0.key, None);
    assert_eq!(take(&plain, json!({"id": 5})).0.key, None, "plain never reads fields");
}

#[test]
fn a_payload_that_is_only_a_key_is_a_tombstone() {
    for config in [
        KeyConfig::Plain,
        KeyConfig::field("id"),
        KeyConfig::None,
        KeyConfig::NotSet,
    ] {
        let s = spec(config.clone(), WIDGET);
        let (e, rest) = take(&s, json!({"payload_key": 5}));
        assert_eq!(e.key, Some(json!(5)), "{config}");
        assert!(e.tombstone, "{config}");
        assert_eq!(rest, json!({}));
        let (e, _) = take(&s, json!({}));
        assert!(e.tombstone && e.key.is_none(), "{config}");
        assert!(!take(&s, json!({"payload_key": 5, "id": 5})).0.tombstone, "{config}");
    }
}

#[tokio::test]
async fn a_tombstone_with_a_field_key_still_encodes_its_key() {
    let bytes = produce_key(KeyConfig::field("id"), WIDGET, json!({"payload_key": 5})).await;
    assert_eq!(bytes.unwrap(), Some(framed(1, &[FIVE])));
}
