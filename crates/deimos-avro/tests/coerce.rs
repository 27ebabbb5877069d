#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]
//! Every coercion rule and every coercion error (docs/AVRO.md, "Coercion").

use deimos_avro::{AvroSchema, EncodeError};
use serde_json::{Value, json};

fn schema(field_type: Value) -> AvroSchema {
    AvroSchema::parse(
        &json!({"type": "record", "name": "T", "namespace": "t", "fields": [{"name": "v", "type": field_type}]})
            .to_string(),
    )
    .unwrap()
}

/// The value of `v` after coercion.
fn coerce(field_type: Value, v: Value) -> Result<Value, EncodeError> {
    schema(field_type).coerce(&json!({ "v": v })).map(|o| o["v"].clone())
}

fn ok(field_type: Value, v: Value) -> Value {
    coerce(field_type.clone(), v.clone()).unwrap_or_else(|e| panic!("{field_type} <- {v}: {e}"))
}

fn err(field_type: Value, v: Value) -> String {
    match coerce(field_type.clone(), v.clone()) {
        Ok(x) => panic!("{field_type} <- {v} should fail, got {x}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn ints_and_longs_take_integers_and_integer_strings() {
    assert_eq!(ok(json!("int"), json!(5)), json!(5));
    assert_eq!(ok(json!("long"), json!("42")), json!(42));
    assert_eq!(ok(json!("long"), json!(" -7 ")), json!(-7));
    assert_eq!(ok(json!("long"), json!("0x1A")), json!(26));
    assert_eq!(ok(json!("long"), json!("0b11")), json!(3));
    assert_eq!(ok(json!("long"), json!("0o7")), json!(7));
    assert_eq!(ok(json!("long"), json!("1_000")), json!(1000));
    assert_eq!(
        ok(json!("long"), json!("010")),
        json!(10),
        "leading zero is decimal, not octal"
    );
    assert!(err(json!("int"), json!("1.5")).contains("expected int"));
    for bad in ["-+5", "0x+5", "0b+1", "_1", "1_", "1__0"] {
        assert!(err(json!("long"), json!(bad)).contains("expected long"), "{bad}");
    }
    assert!(err(json!("int"), json!("")).contains("expected int"));
    assert!(err(json!("long"), json!(4.5)).contains("expected long"));
    assert!(err(json!("long"), json!(true)).contains("boolean true"));
    let e = err(json!("int"), json!(3_000_000_000i64));
    assert!(e.contains("out of the int range"), "{e}");
}

#[test]
fn floats_and_doubles_take_numbers_and_float_strings() {
    assert_eq!(ok(json!("double"), json!(1)), json!(1.0));
    assert_eq!(ok(json!("double"), json!("1.1")), json!(1.1));
    assert_eq!(ok(json!("double"), json!("123.456")), json!(123.456));
    assert_eq!(ok(json!("float"), json!("2.5e2")), json!(250.0));
    assert!(err(json!("double"), json!("abc")).contains("expected double"));
    assert!(err(json!("double"), json!("NaN")).contains("expected double"));
    for bad in ["1._5", "1_.5", "1e+_5", "_1.0"] {
        assert!(err(json!("double"), json!(bad)).contains("expected double"), "{bad}");
    }
    assert_eq!(ok(json!("double"), json!("1_000.5")), json!(1000.5));
    let e = err(json!("float"), json!(1e39));
    assert!(e.contains("out of the float range"), "{e}");
}

#[test]
fn strings_take_scalars_like_to_s() {
    assert_eq!(ok(json!("string"), json!("x")), json!("x"));
    assert_eq!(ok(json!("string"), json!(123)), json!("123"));
    assert_eq!(ok(json!("string"), json!(1.5)), json!("1.5"));
    assert_eq!(ok(json!("string"), json!(true)), json!("true"));
    assert_eq!(ok(json!("string"), json!({"a": 1})), json!("{\"a\":1}"));
    assert!(err(json!("string"), Value::Null).contains("got null"));
}

#[test]
fn booleans_take_only_true_false_and_their_strings() {
    assert_eq!(ok(json!("boolean"), json!(true)), json!(true));
    assert_eq!(ok(json!("boolean"), json!("false")), json!(false));
    assert_eq!(ok(json!("boolean"), json!("true")), json!(true));
    for bad in [json!(0), json!(""), json!("yes"), json!(1), Value::Null] {
        let e = err(json!("boolean"), bad.clone());
        assert!(e.contains("expected boolean"), "{bad}: {e}");
    }
}

#[test]
fn arrays_maps_and_records_coerce_element_by_element() {
    assert_eq!(
        ok(json!({"type": "array", "items": "long"}), json!(["1", 2])),
        json!([1, 2])
    );
    assert_eq!(
        ok(json!({"type": "map", "values": "double"}), json!({"a": "1.5"})),
        json!({"a": 1.5})
    );
    let rec = json!({"type": "record", "name": "R", "fields": [{"name": "n", "type": "int"}, {"name": "s", "type": "string"}]});
    assert_eq!(
        ok(rec.clone(), json!({"n": "3", "s": 4, "extra": 1})),
        json!({"n": 3, "s": "4"})
    );
    let e = err(json!({"type": "array", "items": "long"}), json!([1, "x"]));
    assert!(e.contains("`v[1]`") && e.contains("expected long"), "{e}");
    let e = err(rec, json!({"n": 1}));
    assert!(
        e.contains("missing required field `v.s`") && e.contains("string"),
        "{e}"
    );
    assert!(err(json!({"type": "array", "items": "long"}), json!("nope")).contains("expected array of long"));
}

#[test]
fn enums_fixed_and_bytes() {
    let e = json!({"type": "enum", "name": "E", "symbols": ["A", "B"]});
    assert_eq!(ok(e.clone(), json!("B")), json!("B"));
    let m = err(e, json!("C"));
    assert!(m.contains("one of A, B"), "{m}");
    assert_eq!(ok(json!("bytes"), json!("abc")), json!("abc"));
    assert_eq!(ok(json!("bytes"), json!([0, 255])), json!("\u{0}\u{ff}"));
    assert!(err(json!("bytes"), json!("€")).contains("expected bytes"));
    let f = json!({"type": "fixed", "name": "F", "size": 2});
    assert_eq!(ok(f.clone(), json!("ab")), json!("ab"));
    assert!(err(f, json!("abc")).contains("3 bytes"));
}

#[test]
fn unions_take_the_values_own_type_first_then_the_first_branch_it_fits() {
    let u = json!(["null", "int", "string"]);
    assert_eq!(ok(u.clone(), json!("5")), json!("5"), "text goes to the string branch");
    assert_eq!(ok(u.clone(), json!(5)), json!(5));
    assert_eq!(ok(u.clone(), json!("abc")), json!("abc"));
    assert_eq!(ok(u.clone(), Value::Null), Value::Null);
    // Confluent's serializers pick the branch of the value's own type (Deimos 2.x took the first branch it fits,
    // so a string branch, which accepts any scalar, won when it came first).
    assert_eq!(ok(json!(["null", "string", "long"]), json!(12)), json!(12));
    assert_eq!(ok(json!(["null", "long", "string"]), json!(12)), json!(12));
    assert_eq!(ok(json!(["null", "long", "string"]), json!("123")), json!("123"));
    // Without a branch of its own type, the first branch the value coerces to.
    assert_eq!(ok(json!(["null", "long", "boolean"]), json!("123")), json!(123));
    assert_eq!(ok(json!(["null", "string"]), json!(12)), json!("12"));
    let records = json!([
        "null",
        {"type": "record", "name": "R1", "fields": [{"name": "record1_id", "type": "int"}]},
        {"type": "record", "name": "R3", "fields": [{"name": "record3_id", "type": "float"}]},
        "int",
        {"type": "array", "items": "string"}
    ]);
    assert_eq!(
        ok(records.clone(), json!({"record3_id": 10.101})),
        json!({"record3_id": f64::from(10.101_f32)})
    );
    assert_eq!(ok(records.clone(), json!(1010101)), json!(1010101));
    assert_eq!(
        ok(records.clone(), json!(["hello", "world"])),
        json!(["hello", "world"])
    );
    let e = err(records, json!(true));
    assert!(
        e.contains("union [null, t.R1, t.R3, int, array]") && e.contains("boolean true"),
        "{e}"
    );
    assert!(err(json!(["int", "long"]), Value::Null).contains("got null"));
}

#[test]
fn logical_types() {
    let ts = json!({"type": "long", "logicalType": "timestamp-millis"});
    assert_eq!(ok(ts.clone(), json!(1_557_014_400_000i64)), json!(1_557_014_400_000i64));
    assert_eq!(
        ok(ts.clone(), json!("2019-05-05T00:00:00Z")),
        json!(1_557_014_400_000i64)
    );
    assert_eq!(
        ok(ts.clone(), json!("2019-05-05T02:00:00.250+02:00")),
        json!(1_557_014_400_250i64)
    );
    assert!(err(ts, json!("yesterday")).contains("timestamp-millis"));
    let us = json!({"type": "long", "logicalType": "timestamp-micros"});
    assert_eq!(ok(us, json!("1970-01-01T00:00:01.000002Z")), json!(1_000_002));
    let date = json!({"type": "int", "logicalType": "date"});
    assert_eq!(ok(date.clone(), json!("1970-01-11")), json!(10));
    assert_eq!(ok(date, json!(3)), json!(3));
    let tod = json!({"type": "int", "logicalType": "time-millis"});
    assert_eq!(ok(tod, json!("01:00:00.5")), json!(3_600_500));
    let uuid = json!({"type": "string", "logicalType": "uuid"});
    assert_eq!(
        ok(uuid.clone(), json!("123e4567-e89b-12d3-a456-426614174000")),
        json!("123e4567-e89b-12d3-a456-426614174000")
    );
    assert!(err(uuid, json!("not-a-uuid")).contains("uuid"));
    let dec = json!({"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2});
    assert_eq!(ok(dec.clone(), json!("1234.5")), json!("1234.50"));
    assert_eq!(ok(dec.clone(), json!(-0.25)), json!("-0.25"));
    assert!(
        err(dec.clone(), json!("1.234")).contains("decimal(6,2)"),
        "more fractional digits than the scale"
    );
    assert!(
        err(dec, json!("123456")).contains("decimal(6,2)"),
        "more digits than the precision"
    );
    let fixed_dec =
        json!({"type": "fixed", "name": "D8", "size": 8, "logicalType": "decimal", "precision": 10, "scale": 3});
    assert_eq!(ok(fixed_dec.clone(), json!("-1.5")), json!("-1.500"));
    assert_eq!(ok(fixed_dec, json!(12)), json!("12.000"));
}

#[test]
fn unknown_fields_are_dropped_and_defaults_filled() {
    let s = AvroSchema::parse(
        &json!({"type": "record", "name": "T", "fields": [
            {"name": "a", "type": "long"},
            {"name": "b", "type": ["null", "string"], "default": null},
            {"name": "c", "type": "string", "default": "dflt"}
        ]})
        .to_string(),
    )
    .unwrap();
    assert_eq!(
        s.coerce(&json!({"a": "1", "zzz": 9})).unwrap(),
        json!({"a": 1, "b": null, "c": "dflt"})
    );
    let e = s.coerce(&json!({"b": "x"})).unwrap_err();
    assert_eq!(
        e,
        EncodeError::MissingField {
            path: "a".into(),
            expected: "long".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "missing required field `a` (expected long); add it to the payload or give the field a default in the schema"
    );
    let e = s.coerce(&json!([1])).unwrap_err();
    assert!(e.to_string().contains("`<root>`: expected record T"), "{e}");
}

#[test]
fn auto_fields_fill_message_id_and_timestamp() {
    let s = AvroSchema::parse(
        &json!({"type": "record", "name": "T", "fields": [
            {"name": "message_id", "type": "string"},
            {"name": "timestamp", "type": "string"},
            {"name": "a", "type": "long"}
        ]})
        .to_string(),
    )
    .unwrap();
    let mut p = json!({"a": 1}).as_object().cloned().unwrap();
    s.add_auto_fields(&mut p);
    let id = p["message_id"].as_str().unwrap();
    assert_eq!(id.len(), 36);
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4);
    let ts = p["timestamp"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_str(ts, "%Y-%m-%d %H:%M:%S %z").is_ok(),
        "{ts}"
    );
    // Existing values are kept; null is replaced.
    let mut q = json!({"a": 1, "message_id": "mine", "timestamp": null})
        .as_object()
        .cloned()
        .unwrap();
    s.add_auto_fields(&mut q);
    assert_eq!(q["message_id"], "mine");
    assert!(q["timestamp"].is_string());
    // A tombstone (only payload_key) is left alone.
    let mut t = json!({"payload_key": 5}).as_object().cloned().unwrap();
    s.add_auto_fields(&mut t);
    assert_eq!(t.len(), 1);
    // Schemas without those fields get nothing.
    let plain = AvroSchema::parse(r#"{"type":"record","name":"P","fields":[{"name":"a","type":"long"}]}"#).unwrap();
    let mut r = json!({"a": 1}).as_object().cloned().unwrap();
    plain.add_auto_fields(&mut r);
    assert_eq!(r.len(), 1);
    // A timestamp-millis timestamp gets epoch millis.
    let ms = AvroSchema::parse(
        r#"{"type":"record","name":"M","fields":[{"name":"timestamp","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#,
    )
    .unwrap();
    let mut m = json!({"x": 1}).as_object().cloned().unwrap();
    ms.add_auto_fields(&mut m);
    assert!(m["timestamp"].as_i64().unwrap() > 1_700_000_000_000);
}
