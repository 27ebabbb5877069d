#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]
//! The schema store: paths, cross-file references, and every load error.

use std::path::{Path, PathBuf};

use deimos_avro::{SchemaError, SchemaStore};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

fn tmp(files: &[(&str, &str)]) -> tempdir::Dir {
    let d = tempdir::Dir::new();
    for (p, text) in files {
        let path = d.0.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    d
}

mod tempdir {
    use std::sync::atomic::{AtomicUsize, Ordering};
    pub struct Dir(pub std::path::PathBuf);
    static N: AtomicUsize = AtomicUsize::new(0);
    impl Dir {
        pub fn new() -> Dir {
            let p = std::env::temp_dir().join(format!(
                "deimos-avro-store-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn loads_a_schema_by_full_name_with_references_in_other_files() {
    let store = SchemaStore::new(fixtures());
    let order = store.get("com.acme.orders.Order").unwrap();
    assert_eq!(order.name(), Some("com.acme.orders.Order"));
    assert_eq!(order.namespace(), Some("com.acme.orders"));
    assert_eq!(order.simple_name(), Some("Order"));
    // The registered form is self-contained: Address and Status are inlined once.
    let json = order.canonical_json();
    assert_eq!(json.matches("\"street\"").count(), 1, "{json}");
    assert!(json.contains("ACTIVE"), "{json}");
    assert!(deimos_avro::AvroSchema::parse(json).is_ok());
}

#[test]
fn get_in_joins_namespace_and_name_like_deimos() {
    let store = SchemaStore::new(fixtures());
    assert_eq!(
        store.get_in("com.acme", "Widget").unwrap().name(),
        Some("com.acme.Widget")
    );
}

#[test]
fn load_all_resolves_in_any_order() {
    let store = SchemaStore::load_all(fixtures()).unwrap();
    let names = store.names();
    for n in [
        "com.acme.Widget",
        "com.acme.Status",
        "com.acme.orders.Order",
        "com.acme.orders.Address",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
    // Reverse-order definitions resolve too: a file that refers to a type defined in a later file.
    let d = tmp(&[
        (
            "a/A.avsc",
            r#"{"type":"record","name":"A","namespace":"a","fields":[{"name":"z","type":"z.Z"}]}"#,
        ),
        (
            "z/Z.avsc",
            r#"{"type":"record","name":"Z","namespace":"z","fields":[{"name":"v","type":"int"}]}"#,
        ),
    ]);
    let s = SchemaStore::load_all(&d.0).unwrap();
    assert!(s.get("a.A").unwrap().canonical_json().contains("\"v\""));
    let lazy = SchemaStore::new(&d.0);
    assert!(lazy.get("a.A").is_ok());
}

#[test]
fn a_type_defined_inside_another_file_is_found() {
    let d = tmp(&[
        (
            "a/Outer.avsc",
            r#"{"type":"record","name":"Outer","namespace":"a","fields":[{"name":"in","type":{"type":"record","name":"Nested","fields":[{"name":"v","type":"int"}]}}]}"#,
        ),
        (
            "a/User.avsc",
            r#"{"type":"record","name":"User","namespace":"a","fields":[{"name":"n","type":"Nested"}]}"#,
        ),
    ]);
    let store = SchemaStore::new(&d.0);
    assert!(store.get("a.User").unwrap().canonical_json().contains("Nested"));
}

#[test]
fn missing_file_names_the_path() {
    let store = SchemaStore::new(fixtures());
    let e = store.get("com.acme.Nope").unwrap_err();
    assert!(matches!(e, SchemaError::NotFound { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("com.acme.Nope") && msg.contains("com/acme/Nope.avsc"),
        "{msg}"
    );
}

#[test]
fn bad_json_names_the_file_and_position() {
    let d = tmp(&[("x/Bad.avsc", "{\"type\": \"record\",\n \"name\": }")]);
    let e = SchemaStore::new(&d.0).get("x.Bad").unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, SchemaError::Json { .. }), "{e:?}");
    assert!(msg.contains("Bad.avsc") && msg.contains("line 2"), "{msg}");
    assert!(SchemaStore::load_all(&d.0).is_err());
}

#[test]
fn unknown_type_names_the_referring_file_and_where_it_looked() {
    let d = tmp(&[(
        "x/A.avsc",
        r#"{"type":"record","name":"A","namespace":"x","fields":[{"name":"b","type":"Missing"}]}"#,
    )]);
    for e in [
        SchemaStore::new(&d.0).get("x.A").unwrap_err(),
        SchemaStore::load_all(&d.0).unwrap_err(),
    ] {
        let msg = e.to_string();
        assert!(matches!(e, SchemaError::UnknownType { .. }), "{e:?}");
        assert!(
            msg.contains("x.Missing") && msg.contains("A.avsc") && msg.contains("x/Missing.avsc"),
            "{msg}"
        );
    }
}

#[test]
fn duplicate_names_are_reported_with_both_files() {
    let d = tmp(&[
        (
            "x/A.avsc",
            r#"{"type":"record","name":"A","namespace":"x","fields":[{"name":"e","type":{"type":"enum","name":"E","symbols":["P"]}}]}"#,
        ),
        (
            "x/E.avsc",
            r#"{"type":"enum","name":"E","namespace":"x","symbols":["Q"]}"#,
        ),
    ]);
    let e = SchemaStore::load_all(&d.0).unwrap_err();
    assert!(matches!(e, SchemaError::Duplicate { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("x.E") && msg.contains("A.avsc") && msg.contains("E.avsc"),
        "{msg}"
    );
}

#[test]
fn misplaced_file_is_reported() {
    let d = tmp(&[(
        "x/A.avsc",
        r#"{"type":"record","name":"B","namespace":"x","fields":[]}"#,
    )]);
    let e = SchemaStore::load_all(&d.0).unwrap_err();
    assert!(matches!(e, SchemaError::Misplaced { .. }), "{e:?}");
}

#[test]
fn invalid_avro_is_reported_with_the_file() {
    let d = tmp(&[(
        "x/A.avsc",
        r#"{"type":"record","name":"A","namespace":"x","fields":[{"name":"f","type":"int","default":"nope"}]}"#,
    )]);
    let e = SchemaStore::new(&d.0).get("x.A").unwrap_err();
    assert!(e.to_string().contains("A.avsc"), "{e}");
}

#[test]
fn added_schemas_can_refer_to_files() {
    let store = SchemaStore::new(fixtures());
    let s = store
        .add_json(r#"{"type":"record","name":"Holder","namespace":"com.acme","fields":[{"name":"s","type":"Status"}]}"#)
        .unwrap();
    assert_eq!(s.name(), Some("com.acme.Holder"));
    assert_eq!(store.get("com.acme.Holder").unwrap(), s);
}
