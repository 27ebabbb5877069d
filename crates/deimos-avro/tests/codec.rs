#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]
//! Encoding and decoding: bytes against apache-avro, typed == dynamic, schema evolution both ways.

use std::collections::HashMap;
use std::path::Path;

use deimos_avro::{AvroSchema, DecodeError, PlanCache, ResolvedPlan, SchemaStore, wire};
use serde::{Deserialize, Serialize};
use serde_json::json;

fn store() -> SchemaStore {
    SchemaStore::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas"))
}

#[path = "support/widget.rs"]
mod widget;
use widget::{Status, Widget};

fn widget() -> Widget {
    Widget {
        id: 42,
        message_id: "5b6c3f7e-1a2b-4c3d-8e9f-0a1b2c3d4e5f".into(),
        name: "sprocket".into(),
        description: "a small sprocket".into(),
        price: 9.99,
        quantity: 7,
        status: Status::RETIRED,
        tags: vec!["a".into(), "b".into(), "c".into()],
        updated_at: 1_700_000_000_000,
        parent_id: Some(41),
    }
}

fn apache_bytes(schema: &AvroSchema, value: &serde_json::Value) -> Vec<u8> {
    let v = apache_avro::types::Value::try_from(value.clone())
        .unwrap()
        .resolve(schema.as_apache())
        .unwrap();
    #[allow(deprecated)]
    apache_avro::to_avro_datum(schema.as_apache(), v).unwrap()
}

#[test]
fn typed_and_dynamic_paths_write_the_same_bytes_as_apache_avro() {
    let schema = store().get("com.acme.Widget").unwrap();
    let w = widget();
    let typed = schema.encode(&w).unwrap();
    let loose = json!({
        "id": "42", "message_id": w.message_id, "name": "sprocket", "description": "a small sprocket",
        "price": "9.99", "quantity": 7, "status": "RETIRED", "tags": ["a", "b", "c"],
        "updated_at": 1_700_000_000_000i64, "parent_id": 41, "not_in_schema": true
    });
    let dynamic = schema.encode_value(&loose).unwrap();
    assert_eq!(typed, dynamic);
    let canonical = serde_json::to_value(&w).unwrap();
    assert_eq!(typed, apache_bytes(&schema, &canonical));
    assert_eq!(schema.decode::<Widget>(&typed).unwrap(), w);
    assert_eq!(schema.decode_value(&typed).unwrap(), canonical);
}

#[test]
fn struct_fields_in_any_order_and_maps_encode_the_same() {
    #[derive(Serialize)]
    struct Shuffled {
        tags: Vec<String>,
        id: i64,
        status: Status,
        name: String,
        message_id: String,
        description: String,
        price: f64,
        quantity: i32,
        updated_at: i64,
        // parent_id omitted: takes its default (null)
    }
    let schema = store().get("com.acme.Widget").unwrap();
    let mut w = widget();
    w.parent_id = None;
    let s = Shuffled {
        tags: w.tags.clone(),
        id: w.id,
        status: w.status,
        name: w.name.clone(),
        message_id: w.message_id.clone(),
        description: w.description.clone(),
        price: w.price,
        quantity: w.quantity,
        updated_at: w.updated_at,
    };
    assert_eq!(schema.encode(&s).unwrap(), schema.encode(&w).unwrap());
    let as_map: HashMap<String, serde_json::Value> = serde_json::from_value(serde_json::to_value(&w).unwrap()).unwrap();
    assert_eq!(schema.encode(&as_map).unwrap(), schema.encode(&w).unwrap());
}

#[test]
fn every_type_round_trips_through_both_paths() {
    let schema = store().get("com.acme.Everything").unwrap();
    let value = json!({
        "b": true, "i": -3, "l": 1_234_567_890_123i64, "f": 1.5, "d": -2.25, "s": "héllo",
        "raw": "\u{0}\u{ff}x", "fx": "abcd", "color": "GREEN", "nums": [1, -1, 300],
        "attrs": {"x": 1, "y": 2}, "inner": {"x": 5, "flag": true}, "opt": "twelve",
        "ts_ms": 1_557_014_400_000i64, "ts_us": 5, "day": 19000, "tod": 3_600_000,
        "uid": "123e4567-e89b-12d3-a456-426614174000", "amount": "-12.34"
    });
    let bytes = schema.encode_value(&value).unwrap();
    let back = schema.decode_value(&bytes).unwrap();
    assert_eq!(back, value);
    assert_eq!(schema.encode_value(&back).unwrap(), bytes);
    // apache-avro reads our bytes.
    let mut cursor = &bytes[..];
    #[allow(deprecated)]
    let v = apache_avro::from_avro_datum(schema.as_apache(), &mut cursor, None).unwrap();
    assert!(cursor.is_empty());
    assert!(matches!(v, apache_avro::types::Value::Record(_)));
}

#[test]
fn typed_logical_types_use_strings_where_the_rust_type_asks_for_them() {
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Ev {
        ts_ms: String,
        day: String,
        uid: String,
    }
    let schema = AvroSchema::parse(
        r#"{"type":"record","name":"Ev","fields":[
            {"name":"ts_ms","type":{"type":"long","logicalType":"timestamp-millis"}},
            {"name":"day","type":{"type":"int","logicalType":"date"}},
            {"name":"uid","type":{"type":"string","logicalType":"uuid"}}]}"#,
    )
    .unwrap();
    let e = Ev {
        ts_ms: "2019-05-05T00:00:00.250Z".into(),
        day: "2020-02-29".into(),
        uid: "123e4567-e89b-12d3-a456-426614174000".into(),
    };
    let bytes = schema.encode(&e).unwrap();
    assert_eq!(schema.decode::<Ev>(&bytes).unwrap(), e);
    assert_eq!(
        schema.decode_value(&bytes).unwrap()["ts_ms"],
        json!(1_557_014_400_250i64)
    );
}

const V1: &str = r#"{"type":"record","name":"User","namespace":"ev","fields":[
    {"name":"id","type":"int"},
    {"name":"name","type":"string"},
    {"name":"old","type":"string"},
    {"name":"kind","type":{"type":"enum","name":"Kind","symbols":["A","B","C"]}},
    {"name":"score","type":"float"},
    {"name":"nick","type":"string"}]}"#;

const V2: &str = r#"{"type":"record","name":"User","namespace":"ev","fields":[
    {"name":"id","type":"long"},
    {"name":"name","type":"string"},
    {"name":"kind","type":{"type":"enum","name":"Kind","symbols":["A","B","Z"],"default":"Z"}},
    {"name":"score","type":"double"},
    {"name":"nick","type":["null","string"]},
    {"name":"email","type":["null","string"],"default":null},
    {"name":"tags","type":{"type":"array","items":"string"},"default":["x"]}]}"#;

#[test]
fn new_reader_reads_old_data_with_defaults_skips_promotions_and_enum_defaults() {
    let (v1, v2) = (AvroSchema::parse(V1).unwrap(), AvroSchema::parse(V2).unwrap());
    let old = v1
        .encode_value(&json!({"id": 7, "name": "ann", "old": "gone", "kind": "C", "score": 0.5, "nick": "a"}))
        .unwrap();
    let plan = ResolvedPlan::new(&v1, &v2).unwrap();
    let read = plan.decode_value(&old).unwrap();
    assert_eq!(
        read,
        json!({"id": 7, "name": "ann", "kind": "Z", "score": 0.5, "nick": "a", "email": null, "tags": ["x"]})
    );

    #[derive(Debug, Deserialize, PartialEq)]
    struct UserV2 {
        id: i64,
        name: String,
        kind: String,
        score: f64,
        nick: Option<String>,
        email: Option<String>,
        tags: Vec<String>,
    }
    let typed: UserV2 = plan.decode(&old).unwrap();
    assert_eq!(typed.id, 7);
    assert_eq!(typed.nick.as_deref(), Some("a"));
    assert_eq!(typed.email, None);
    assert_eq!(typed.tags, vec!["x".to_string()]);
}

#[test]
fn old_reader_reads_new_data_when_compatible_and_explains_when_not() {
    let (v1, v2) = (AvroSchema::parse(V1).unwrap(), AvroSchema::parse(V2).unwrap());
    // v2 -> v1: the plan names the first problem with its field.
    let e = ResolvedPlan::new(&v2, &v1).unwrap_err();
    assert_eq!(e.message, "field `id`: long cannot be read as int", "{e}");
    let writer = AvroSchema::parse(r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"}]}"#).unwrap();
    let reader = AvroSchema::parse(
        r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"},{"name":"old","type":"string"}]}"#,
    )
    .unwrap();
    let e = ResolvedPlan::new(&writer, &reader).unwrap_err();
    assert!(e.message.contains("`old`") && e.message.contains("no default"), "{e}");
    // A forward-compatible pair: the old reader ignores the new field.
    let old = AvroSchema::parse(r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"}]}"#).unwrap();
    let new = AvroSchema::parse(
        r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"},{"name":"b","type":{"type":"map","values":{"type":"array","items":"string"}}}]}"#,
    )
    .unwrap();
    let data = new
        .encode_value(&json!({"a": 5, "b": {"k": ["x", "y"], "l": []}}))
        .unwrap();
    let plan = ResolvedPlan::new(&new, &old).unwrap();
    assert_eq!(plan.decode_value(&data).unwrap(), json!({"a": 5}));
}

#[test]
fn union_branches_resolve_on_either_side() {
    let w = AvroSchema::parse(r#"{"type":"record","name":"U","fields":[{"name":"v","type":["null","int","string"]}]}"#)
        .unwrap();
    let r =
        AvroSchema::parse(r#"{"type":"record","name":"U","fields":[{"name":"v","type":["null","long"]}]}"#).unwrap();
    let plan = ResolvedPlan::new(&w, &r).unwrap();
    assert_eq!(
        plan.decode_value(&w.encode_value(&json!({"v": 3})).unwrap()).unwrap(),
        json!({"v": 3})
    );
    assert_eq!(
        plan.decode_value(&w.encode_value(&json!({"v": null})).unwrap())
            .unwrap(),
        json!({"v": null})
    );
    // A branch the reader lacks is an error only when the data uses it.
    let e = plan
        .decode_value(&w.encode_value(&json!({"v": "x"})).unwrap())
        .unwrap_err();
    assert!(matches!(e, DecodeError::Resolve(_)), "{e}");
    // Writer non-union → reader union.
    let w2 = AvroSchema::parse(r#"{"type":"record","name":"U","fields":[{"name":"v","type":"int"}]}"#).unwrap();
    let plan2 = ResolvedPlan::new(&w2, &r).unwrap();
    #[derive(Deserialize, PartialEq, Debug)]
    struct U {
        v: Option<i64>,
    }
    assert_eq!(
        plan2.decode::<U>(&w2.encode_value(&json!({"v": 9})).unwrap()).unwrap(),
        U { v: Some(9) }
    );
}

#[test]
fn unknown_enum_symbol_without_default_is_an_error() {
    let w = AvroSchema::parse(r#"{"type":"enum","name":"E","symbols":["A","B"]}"#).unwrap();
    let r = AvroSchema::parse(r#"{"type":"enum","name":"E","symbols":["A"]}"#).unwrap();
    let plan = ResolvedPlan::new(&w, &r).unwrap();
    assert_eq!(
        plan.decode_value(&w.encode_value(&json!("A")).unwrap()).unwrap(),
        json!("A")
    );
    let e = plan.decode_value(&w.encode_value(&json!("B")).unwrap()).unwrap_err();
    assert!(e.to_string().contains("symbol `B`"), "{e}");
}

#[test]
fn recursive_records_encode_and_decode() {
    let s = AvroSchema::parse(
        r#"{"type":"record","name":"Node","fields":[{"name":"v","type":"int"},{"name":"next","type":["null","Node"],"default":null}]}"#,
    )
    .unwrap();
    let v = json!({"v": 1, "next": {"v": 2, "next": {"v": 3, "next": null}}});
    let bytes = s.encode_value(&v).unwrap();
    assert_eq!(s.decode_value(&bytes).unwrap(), v);
}

#[test]
fn plan_cache_builds_each_plan_once() {
    let (v1, v2) = (AvroSchema::parse(V1).unwrap(), AvroSchema::parse(V2).unwrap());
    let cache = PlanCache::new();
    assert!(cache.get(1, &v2).is_none());
    cache.get_or_build(1, &v1, &v2).unwrap();
    cache.get_or_build(1, &v1, &v2).unwrap();
    assert_eq!(cache.len(), 1);
    assert!(
        cache.get(1, &AvroSchema::parse(V2).unwrap()).is_some(),
        "an equal reader schema hits"
    );
    assert!(cache.get(2, &v2).is_none());
}

#[test]
fn corrupt_data_is_an_error_not_a_panic() {
    let schema = store().get("com.acme.Widget").unwrap();
    let good = schema.encode(&widget()).unwrap();
    assert!(matches!(
        schema.decode_value(&good[..good.len() - 3]),
        Err(DecodeError::Truncated(_))
    ));
    let mut extra = good.clone();
    extra.push(0);
    assert_eq!(schema.decode_value(&extra), Err(DecodeError::TrailingBytes(1)));
    assert!(schema.decode_value(&[0xff; 12]).is_err());
    let framed = wire::frame(7, &good);
    let (id, body) = wire::parse_header(&framed).unwrap();
    assert_eq!((id, body), (7, &good[..]));
}
