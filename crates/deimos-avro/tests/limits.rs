#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]
//! What the schema layer refuses instead of crashing or misreading: decimals beyond 128 bits, decimals
//! resolved across scales, and messages that would decode into more values than a message may.

use deimos_avro::{AvroSchema, DecodeError, MAX_DECIMAL_PRECISION, MAX_DECODED_VALUES, PlanCache, ResolvedPlan};
use serde::de::IgnoredAny;
use serde_json::json;

/// Avro's zig-zag varint of a long.
fn long(n: i64, out: &mut Vec<u8>) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

// -------------------------------------------------------------------------------------------------
// Decimal precision and scale

const ABSURD_DECIMAL: &str =
    r#"{"type": "bytes", "logicalType": "decimal", "precision": 1000000000000, "scale": 1000000000000}"#;

#[test]
fn a_decimal_beyond_the_precision_limit_is_refused_when_parsed() {
    let err = AvroSchema::parse(ABSURD_DECIMAL).expect_err("a decimal of precision 10^12 must be refused");
    let msg = err.to_string();
    assert!(msg.contains("precision 1000000000000"), "{msg}");
    assert!(msg.contains(&MAX_DECIMAL_PRECISION.to_string()), "{msg}");

    // Inside a record, over a fixed, and just above the limit: refused too.
    let in_record = json!({"type": "record", "name": "R", "fields": [
        {"name": "amount", "type": serde_json::from_str::<serde_json::Value>(ABSURD_DECIMAL).unwrap()}
    ]});
    let err = AvroSchema::parse(&in_record.to_string()).unwrap_err().to_string();
    assert!(err.contains("precision"), "{err}");
    let fixed = r#"{"type": "fixed", "name": "F", "size": 16, "logicalType": "decimal", "precision": 39, "scale": 2}"#;
    let err = AvroSchema::parse(fixed).unwrap_err().to_string();
    assert!(err.contains("precision 39") && err.contains("38"), "{err}");

    // The limit itself is fine, and reads back.
    let max = AvroSchema::parse(
        &json!({"type": "bytes", "logicalType": "decimal", "precision": MAX_DECIMAL_PRECISION, "scale": MAX_DECIMAL_PRECISION})
            .to_string(),
    )
    .unwrap();
    let bytes = max.encode_value(&json!("0.5")).unwrap();
    assert_eq!(
        max.decode_value(&bytes).unwrap(),
        json!(format!("0.5{}", "0".repeat(37)))
    );
}

#[test]
fn a_decimal_on_a_huge_fixed_is_refused_when_parsed() {
    // Encoding a value sign-extends it to the fixed size: a terabyte.
    let schema = json!({"type": "record", "name": "R", "fields": [{
        "name": "d",
        "type": {"type": "fixed", "name": "D", "size": 1_000_000_000_000u64, "logicalType": "decimal", "precision": 10, "scale": 0}
    }]});
    match AvroSchema::parse(&schema.to_string()) {
        Err(e) => assert!(e.to_string().contains("1000000000000 bytes"), "{e}"),
        Ok(_) => panic!("a decimal over a 10^12-byte fixed parsed (encoding {{\"d\": 1}} would allocate a terabyte)"),
    }
    // A fixed wider than the 16 bytes a decimal needs is fine within reason.
    let wide = r#"{"type": "fixed", "name": "W", "size": 32, "logicalType": "decimal", "precision": 38, "scale": 0}"#;
    let wide = AvroSchema::parse(wide).unwrap();
    let bytes = wide.encode_value(&json!("-12")).unwrap();
    assert_eq!(bytes.len(), 32);
    assert_eq!(wide.decode_value(&bytes).unwrap(), json!("-12"));
}

// -------------------------------------------------------------------------------------------------
// Decimal resolution

fn decimal(precision: u32, scale: u32) -> AvroSchema {
    AvroSchema::parse(
        &json!({"type": "record", "name": "Price", "fields": [
            {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale}}
        ]})
        .to_string(),
    )
    .unwrap()
}

fn fixed_decimal(precision: u32, scale: u32) -> AvroSchema {
    AvroSchema::parse(
        &json!({"type": "record", "name": "Price", "fields": [
            {"name": "amount", "type": {"type": "fixed", "name": "Money", "size": 8, "logicalType": "decimal", "precision": precision, "scale": scale}}
        ]})
        .to_string(),
    )
    .unwrap()
}

#[test]
fn decimals_of_another_scale_do_not_resolve() {
    let writer = decimal(10, 2);
    let reader = decimal(10, 4);
    let bytes = writer.encode_value(&json!({"amount": "123.45"})).unwrap();
    match ResolvedPlan::new(&writer, &reader) {
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("decimal(10,2)") && msg.contains("decimal(10,4)"), "{msg}");
            assert!(msg.contains("amount"), "{msg}");
        }
        Ok(plan) => panic!(
            "decimal(10,2) resolved to decimal(10,4): 123.45 reads as {:?}",
            plan.decode_value(&bytes)
        ),
    }
    // Over fixed too, and a different precision at the same scale.
    assert!(ResolvedPlan::new(&fixed_decimal(10, 2), &fixed_decimal(10, 4)).is_err());
    assert!(ResolvedPlan::new(&decimal(10, 2), &decimal(12, 2)).is_err());
    // The same decimal still resolves, and reads the value as written.
    let same = ResolvedPlan::new(&writer, &decimal(10, 2)).unwrap();
    assert_eq!(same.decode_value(&bytes).unwrap(), json!({"amount": "123.45"}));
}

#[test]
fn a_decimal_of_another_scale_matches_no_union_branch() {
    let writer = decimal(10, 2);
    let reader = AvroSchema::parse(
        &json!({"type": "record", "name": "Price", "fields": [
            {"name": "amount", "type": ["null", {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 4}]}
        ]})
        .to_string(),
    )
    .unwrap();
    let bytes = writer.encode_value(&json!({"amount": "1.5"})).unwrap();
    if let Ok(plan) = ResolvedPlan::new(&writer, &reader) {
        panic!("resolved: 1.5 reads as {:?}", plan.decode_value(&bytes));
    }
}

// -------------------------------------------------------------------------------------------------
// Values per message

/// A record of 100 null fields takes no bytes; an array of 50 000 of them is 5 million values from a
/// message of a few KiB.
#[test]
fn values_that_take_no_bytes_count_towards_the_message_limit() {
    let nulls: Vec<_> = (0..100)
        .map(|i| json!({"name": format!("n{i}"), "type": "null"}))
        .collect();
    let schema = AvroSchema::parse(
        &json!({"type": "record", "name": "Outer", "fields": [
            {"name": "pad", "type": "bytes"},
            {"name": "xs", "type": {"type": "array", "items": {"type": "record", "name": "Nulls", "fields": nulls}}}
        ]})
        .to_string(),
    )
    .unwrap();
    let count: usize = 50_000;
    assert!(count * 101 > MAX_DECODED_VALUES);
    let mut bytes = Vec::new();
    // Enough bytes that the array's item count is within what the message size allows.
    long(7_000, &mut bytes);
    bytes.extend(std::iter::repeat_n(0u8, 7_000));
    long(count as i64, &mut bytes);
    long(0, &mut bytes);

    match schema.decode::<IgnoredAny>(&bytes) {
        Err(e @ DecodeError::TooManyValues { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&MAX_DECODED_VALUES.to_string()), "{msg}");
            assert!(msg.contains("xs"), "names where: {msg}");
        }
        other => panic!("{} bytes decoded into {count} × 100 nulls: {other:?}", bytes.len()),
    }
    // Skipped values count too: a reader without `xs` still walks every one of them.
    let reader =
        AvroSchema::parse(r#"{"type": "record", "name": "Outer", "fields": [{"name": "pad", "type": "bytes"}]}"#)
            .unwrap();
    let plan = ResolvedPlan::new(&schema, &reader).unwrap();
    assert!(matches!(
        plan.decode::<IgnoredAny>(&bytes),
        Err(DecodeError::TooManyValues { .. })
    ));
}

/// Reader fields filled from defaults take no bytes either: an empty writer record read as a record whose
/// default is a long array.
#[test]
fn values_filled_in_from_defaults_count_towards_the_message_limit() {
    let writer =
        AvroSchema::parse(r#"{"type": "array", "items": {"type": "record", "name": "E", "fields": []}}"#).unwrap();
    let reader = AvroSchema::parse(
        &json!({"type": "array", "items": {"type": "record", "name": "E", "fields": [
            {"name": "filler", "type": {"type": "array", "items": "null"}, "default": vec![serde_json::Value::Null; 5_000]}
        ]}})
        .to_string(),
    )
    .unwrap();
    let plan = ResolvedPlan::new(&writer, &reader).unwrap();
    let mut bytes = Vec::new();
    long(1_000, &mut bytes);
    long(0, &mut bytes);
    const { assert!(1_000 * 5_000 > MAX_DECODED_VALUES) };
    let decoded = plan.decode::<IgnoredAny>(&bytes);
    assert!(
        matches!(decoded, Err(DecodeError::TooManyValues { .. })),
        "{} bytes decoded into 1 000 × 5 000 nulls: {decoded:?}",
        bytes.len()
    );
    // A few of them are fine.
    let mut few = Vec::new();
    long(3, &mut few);
    long(0, &mut few);
    let value = plan.decode_value(&few).unwrap();
    assert_eq!(value.as_array().map(Vec::len), Some(3));
    assert_eq!(value[2]["filler"].as_array().map(Vec::len), Some(5_000));
}

/// A block announcing a billion nulls is refused at once.
#[test]
fn a_billion_nulls_are_refused() {
    let schema = AvroSchema::parse(r#"{"type": "array", "items": "null"}"#).unwrap();
    let mut bytes = Vec::new();
    long(1_000_000_000, &mut bytes);
    long(0, &mut bytes);
    let started = std::time::Instant::now();
    assert!(schema.decode::<IgnoredAny>(&bytes).is_err());
    assert!(schema.decode_value(&bytes).is_err());
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
}

#[test]
fn the_plan_cache_is_bounded() {
    let cache = PlanCache::with_max_plans(2);
    let schema = AvroSchema::parse(r#""long""#).unwrap();
    for id in 1..=5 {
        cache.get_or_build(id, &schema, &schema).unwrap();
    }
    assert_eq!(cache.len(), 2);
    assert!(cache.get(5, &schema).is_some());
    assert!(cache.get(1, &schema).is_none());
    assert!(PlanCache::new().max_plans() >= 1_000);
}
