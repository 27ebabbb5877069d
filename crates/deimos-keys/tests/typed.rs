#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]
//! Keys of typed (serde) values: the key field read from a struct or map, or the key given explicitly.

mod common;

use std::collections::BTreeMap;

use deimos_keys::{KeyConfig, KeyError, KeySpec, serialized_field};
use serde::Serialize;
use serde_json::json;

#[derive(Serialize)]
struct Widget {
    id: i64,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_id: Option<i64>,
}

#[derive(Serialize)]
struct Wrapped(Widget);

#[derive(Serialize)]
struct Flattened {
    #[serde(flatten)]
    inner: Widget,
    extra: bool,
}

fn widget() -> Widget {
    Widget {
        id: 7,
        name: "w".into(),
        parent_id: None,
    }
}

fn field_spec() -> KeySpec {
    let store = common::store();
    KeySpec::build(KeyConfig::field("id"), &store.get("com.acme.Widget").unwrap(), &store).unwrap()
}

#[test]
fn the_key_field_is_read_from_structs_maps_and_wrappers() {
    let s = field_spec();
    assert_eq!(s.typed_key(&widget(), None).unwrap(), Some(json!(7)));
    assert_eq!(s.typed_key(&Wrapped(widget()), None).unwrap(), Some(json!(7)));
    assert_eq!(s.typed_key(&Some(widget()), None).unwrap(), Some(json!(7)));
    let flat = Flattened {
        inner: widget(),
        extra: true,
    };
    assert_eq!(s.typed_key(&flat, None).unwrap(), Some(json!(7)));
    let map: BTreeMap<&str, i64> = [("id", 3), ("other", 4)].into();
    assert_eq!(s.typed_key(&map, None).unwrap(), Some(json!(3)));
}

#[test]
fn a_given_key_wins_unless_it_is_falsy() {
    let s = field_spec();
    assert_eq!(s.typed_key(&widget(), Some(json!(9))).unwrap(), Some(json!(9)));
    assert_eq!(s.typed_key(&widget(), Some(json!(false))).unwrap(), Some(json!(7)));
    assert_eq!(s.typed_key(&widget(), Some(json!(null))).unwrap(), Some(json!(7)));
    let plain = KeySpec::schemaless(KeyConfig::Plain).unwrap();
    assert_eq!(plain.typed_key(&widget(), None).unwrap(), None);
    assert_eq!(plain.typed_key(&widget(), Some(json!("k"))).unwrap(), Some(json!("k")));
}

#[test]
fn absent_fields_give_no_key() {
    assert_eq!(serialized_field(&widget(), "parent_id").unwrap(), None);
    let with_parent = Widget {
        parent_id: Some(1),
        ..widget()
    };
    assert_eq!(serialized_field(&with_parent, "parent_id").unwrap(), Some(json!(1)));
    assert_eq!(serialized_field(&widget(), "nope").unwrap(), None);
}

#[test]
fn values_that_are_not_structs_or_maps_are_errors() {
    let e = field_spec().typed_key(&5_i64, None).unwrap_err();
    assert!(matches!(&e, KeyError::TypedKey { field, .. } if field == "id"), "{e:?}");
    assert_eq!(
        e.to_string(),
        "cannot read key field `id` from the value: the value serializes as a number, not as a struct or map; \
         pass the key explicitly instead"
    );
    assert!(serialized_field(&vec![1, 2], "id").is_err());
}
