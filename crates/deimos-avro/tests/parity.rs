//! Where deimos-avro must behave as the Avro spec and Confluent's serializers do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use deimos_avro::AvroSchema;
use serde_json::{Value as Json, json};

/// Doubles that need all 17 significant digits to round-trip.
const DOUBLES: &[&str] = &[
    "90.28571428571429",
    "0.30000000000000004",
    "2.2250738585072014e-308",
    "1.7976931348623157e308",
    "123456789.12345679",
];

#[test]
fn double_defaults_keep_every_bit() {
    for text in DOUBLES {
        let expected: f64 = text.parse().unwrap();
        let schema = AvroSchema::parse(&format!(
            r#"{{"type":"record","name":"D","fields":[{{"name":"x","type":"double","default":{text}}}]}}"#
        ))
        .unwrap();
        let default = schema.field("x").unwrap().default.unwrap();
        assert_eq!(
            default.as_f64().unwrap().to_bits(),
            expected.to_bits(),
            "{text}: the default as parsed"
        );
        assert!(
            schema.canonical_json().contains(text.trim_start_matches('+')) || {
                // The schema's own text may print the number in another, equally exact, form.
                let back: Json = serde_json::from_str(schema.canonical_json()).unwrap();
                back["fields"][0]["default"].as_f64().unwrap().to_bits() == expected.to_bits()
            },
            "{text}: the schema handed back"
        );
        let encoded = schema.encode_value(&json!({})).unwrap();
        assert_eq!(encoded, expected.to_le_bytes(), "{text}: the encoded default");
    }
}

#[test]
fn double_payloads_keep_every_bit() {
    let schema = AvroSchema::parse(r#"{"type":"record","name":"D","fields":[{"name":"x","type":"double"}]}"#).unwrap();
    for text in DOUBLES {
        let expected: f64 = text.parse().unwrap();
        let payload: Json = serde_json::from_str(&format!(r#"{{"x": {text}}}"#)).unwrap();
        assert_eq!(schema.encode_value(&payload).unwrap(), expected.to_le_bytes(), "{text}");
    }
}

#[test]
fn a_record_default_may_leave_out_a_field_that_has_its_own_default() {
    let schema = r#"{"type":"record","name":"R","fields":[
        {"name":"r","type":{"type":"record","name":"ND","fields":[
            {"name":"a","type":"int"},
            {"name":"z","type":"string","default":"zz"}]},
         "default":{"a":1}}]}"#;
    let schema = AvroSchema::parse(schema).unwrap();
    let encoded = schema.encode_value(&json!({})).unwrap();
    assert_eq!(
        schema.decode_value(&encoded).unwrap(),
        json!({"r": {"a": 1, "z": "zz"}})
    );
}

#[test]
fn a_union_takes_the_branch_the_value_already_is() {
    let s =
        AvroSchema::parse(r#"{"type":"record","name":"U","fields":[{"name":"u","type":["null","string","long"]}]}"#)
            .unwrap();
    let back = s.decode_value(&s.encode_value(&json!({"u": 1})).unwrap()).unwrap();
    assert_eq!(
        back,
        json!({"u": 1}),
        "a number goes to the long branch, not the string one"
    );
    let back = s.decode_value(&s.encode_value(&json!({"u": "1"})).unwrap()).unwrap();
    assert_eq!(back, json!({"u": "1"}));
    let s =
        AvroSchema::parse(r#"{"type":"record","name":"U","fields":[{"name":"u","type":["null","long","string"]}]}"#)
            .unwrap();
    let back = s.decode_value(&s.encode_value(&json!({"u": "123"})).unwrap()).unwrap();
    assert_eq!(
        back,
        json!({"u": "123"}),
        "text goes to the string branch, not the long one"
    );
    let back = s.decode_value(&s.encode_value(&json!({"u": 123})).unwrap()).unwrap();
    assert_eq!(back, json!({"u": 123}));
}

#[test]
fn schema_names_with_hyphens_are_refused_with_the_file_and_the_name() {
    let dir = std::env::temp_dir().join(format!("deimos-dashed-names-{}", std::process::id()));
    let ns = dir.join("com/my-namespace");
    std::fs::create_dir_all(&ns).unwrap();
    let file = ns.join("MySchema.avsc");
    std::fs::write(
        &file,
        r#"{"type":"record","name":"MySchema","namespace":"com.my-namespace","fields":[{"name":"id","type":"int"}]}"#,
    )
    .unwrap();
    let err = deimos_avro::SchemaStore::load_all(&dir)
        .expect_err("refused")
        .to_string();
    assert!(err.contains("MySchema.avsc"), "names the file: {err}");
    assert!(err.contains("com.my-namespace"), "names the offending name: {err}");
    assert!(err.contains("hyphen") || err.contains("`-`"), "says why: {err}");
    std::fs::remove_dir_all(&dir).unwrap();
    let acme = dir.join("com/acme");
    std::fs::create_dir_all(&acme).unwrap();
    let file = acme.join("MySchema.avsc");
    std::fs::write(
        &file,
        r#"{"type":"record","name":"MySchema","namespace":"com.acme","fields":[{"name":"int-field","type":"int"}]}"#,
    )
    .unwrap();
    let err = deimos_avro::SchemaStore::load_all(&dir)
        .expect_err("refused")
        .to_string();
    assert!(err.contains("int-field") && err.contains("MySchema.avsc"), "{err}");
    assert!(err.contains("hyphen") || err.contains("`-`"), "says why: {err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
