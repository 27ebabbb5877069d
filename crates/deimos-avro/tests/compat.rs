#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]
//! Compatibility: can-read, mutual read, and the registry levels against earlier versions.

use deimos_avro::compat::{can_read, check_compatibility, mutual_read};
use deimos_avro::{AvroSchema, CompatibilityLevel};

fn rec(fields: &str) -> AvroSchema {
    AvroSchema::parse(&format!(r#"{{"type":"record","name":"R","fields":[{fields}]}}"#)).unwrap()
}

#[test]
fn can_read_and_mutual_read() {
    let a = rec(r#"{"name":"x","type":"long"}"#);
    let with_default = rec(r#"{"name":"x","type":"long"},{"name":"y","type":"string","default":""}"#);
    let without_default = rec(r#"{"name":"x","type":"long"},{"name":"y","type":"string"}"#);
    assert!(can_read(&a, &with_default).is_ok());
    assert!(can_read(&with_default, &a).is_ok());
    assert!(mutual_read(&a, &with_default));
    let e = can_read(&a, &without_default).unwrap_err();
    assert!(e.contains('y'), "{e}");
    assert!(!mutual_read(&a, &without_default));
}

#[test]
fn levels_against_latest_and_all_versions() {
    use CompatibilityLevel::*;
    let v1 = rec(r#"{"name":"x","type":"long"}"#);
    let v2 = rec(r#"{"name":"x","type":"long"},{"name":"y","type":"string","default":""}"#);
    // Adding a field without a default: new readers can't read old data (not BACKWARD), old readers
    // can read new data (FORWARD).
    let v3 = rec(r#"{"name":"x","type":"long"},{"name":"y","type":"string","default":""},{"name":"z","type":"int"}"#);
    assert!(check_compatibility(Backward, &v3, &[v1.clone(), v2.clone()]).is_err());
    assert!(check_compatibility(Forward, &v3, &[v1.clone(), v2.clone()]).is_ok());
    assert!(check_compatibility(None, &v3, &[v1.clone(), v2.clone()]).is_ok());
    // Removing a field without default: backward ok, forward fails.
    let dropped = rec(r#"{"name":"y","type":"string","default":""}"#);
    assert!(check_compatibility(Backward, &dropped, std::slice::from_ref(&v2)).is_ok());
    let e = check_compatibility(Full, &dropped, std::slice::from_ref(&v2)).unwrap_err();
    assert_eq!(e.len(), 1);
    assert!(
        e[0].contains("version 1 cannot read data written with the new schema (FULL)"),
        "{e:?}"
    );
    // Transitive levels look at every earlier version, plain ones only at the latest.
    let t1 = rec(r#"{"name":"x","type":"long"},{"name":"w","type":"int"}"#);
    let t2 = rec(r#"{"name":"x","type":"long"},{"name":"w","type":"int","default":0}"#);
    let t3 = rec(r#"{"name":"x","type":"long"}"#);
    assert!(check_compatibility(Forward, &t3, &[t1.clone(), t2.clone()]).is_ok());
    let e = check_compatibility(ForwardTransitive, &t3, &[t1, t2]).unwrap_err();
    assert!(e[0].contains("version 1"), "{e:?}");
    assert!(check_compatibility(FullTransitive, &v1, &[]).is_ok());
}

#[test]
fn levels_parse_and_print_like_the_registry() {
    for l in CompatibilityLevel::ALL {
        assert_eq!(l.as_str().parse::<CompatibilityLevel>().unwrap(), l);
        assert_eq!(serde_json::to_string(&l).unwrap(), format!("\"{l}\""));
    }
    assert_eq!(
        "full_transitive".parse::<CompatibilityLevel>().unwrap(),
        CompatibilityLevel::FullTransitive
    );
    let e = "SOMETIMES".parse::<CompatibilityLevel>().unwrap_err();
    assert!(e.contains("BACKWARD_TRANSITIVE"), "{e}");
}
