#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]
//! Interoperability with Confluent's Python client (`pip install "confluent-kafka[avro,schemaregistry]"`,
//! which `cargo xtask setup` installs): for the same schema and payload our framed key and value bytes equal those of
//! its AvroSerializer, its AvroDeserializer decodes ours, and its SchemaRegistryClient works against our
//! embedded registry server.

use std::path::{Path, PathBuf};
use std::process::Command;

use deimos::avro::{AvroSchema, SchemaStore};
use deimos::keys::{KeyConfig, KeyEncoder, KeySpec};
use deimos::registry::{EmbeddedRegistry, HttpRegistry, SchemaCodec, SubjectNameStrategy};
use serde_json::{Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn python() -> String {
    std::env::var("DEIMOS_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_confluent_kafka_agrees_with_our_bytes_and_registry() {
    let probe = Command::new(python())
        .args(["-c", "import confluent_kafka, fastavro"])
        .output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "the interoperability test needs Python with confluent-kafka: pip install \"confluent-kafka[avro,schemaregistry]\" (`cargo xtask setup` does this); {probe:?}"
    );

    let server = EmbeddedRegistry::start().await.unwrap();
    let http = HttpRegistry::builder(server.url()).build().unwrap();
    let codec = SchemaCodec::new(http);
    let store = SchemaStore::new(root().join("schemas"));
    let widget = store.get("com.acme.Widget").unwrap();
    let topic = "interop.widgets";

    // A loose payload, as a service would have it; Python gets the coerced form.
    let loose = json!({
        "id": "42", "message_id": "5b6c3f7e-1a2b-4c3d-8e9f-0a1b2c3d4e5f", "name": "sprocket",
        "description": "ünïcödé ✓", "price": 9.99, "quantity": "7", "status": "RETIRED",
        "tags": ["a", "b", "c"], "updated_at": 1_700_000_000_000i64, "parent_id": null, "extra": "dropped"
    });
    let payload = widget.coerce(&loose).unwrap();
    let value_subject = SubjectNameStrategy::Topic.subject(topic, &widget, false);
    assert_eq!(value_subject, "interop.widgets-value");
    let value_bytes = codec.encode_value(&value_subject, &widget, &loose).await.unwrap();

    let spec = KeySpec::build(KeyConfig::field("id"), &widget, &store).unwrap();
    let key_schema = spec.key_schema().unwrap().clone();
    let keys = KeyEncoder::for_topic(spec, "", topic);
    keys.prepare(codec.registry().as_ref()).await.unwrap();
    let key_bytes = keys.encode(Some(&json!(42))).unwrap().unwrap();

    let evolved = {
        let mut s: Value = serde_json::from_str(widget.canonical_json()).unwrap();
        s["fields"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "email", "type": ["null", "string"], "default": null}));
        s.to_string()
    };
    let incompatible = widget
        .canonical_json()
        .replace(r#"{"name":"id","type":"long"}"#, r#"{"name":"id","type":"string"}"#);
    assert_ne!(incompatible, widget.canonical_json());

    // A top-level "bytes" value: Confluent frames the bytes raw (no Avro length prefix).
    let bytes_schema = AvroSchema::parse(r#""bytes""#).unwrap();
    let raw_payload: Vec<u8> = (0u8..=255).collect();
    let raw_json = Value::String(raw_payload.iter().map(|b| char::from(*b)).collect());
    let raw_bytes = codec
        .encode_value("interop.raw-value", &bytes_schema, &raw_json)
        .await
        .unwrap();
    assert_eq!(&raw_bytes[5..], &raw_payload[..], "raw after the header");

    let spec_file = std::env::temp_dir().join(format!("deimos-interop-{}.json", std::process::id()));
    let spec_json = json!({
        "registry_url": server.url(),
        "topic": topic,
        "value": {"schema": widget.canonical_json(), "payload": payload, "rust_hex": hex(&value_bytes)},
        "key": {"schema": key_schema.canonical_json(), "payload": {"id": 42}, "rust_hex": hex(&key_bytes)},
        "raw": {"topic": "interop.raw", "schema": r#""bytes""#, "payload_hex": hex(&raw_payload), "rust_hex": hex(&raw_bytes)},
        "evolved_value_schema": evolved,
        "incompatible_value_schema": incompatible,
    });
    std::fs::write(&spec_file, spec_json.to_string()).unwrap();
    let script = root().join("tests/python/interop.py");
    let out = tokio::task::spawn_blocking(move || Command::new(python()).arg(script).arg(&spec_file).output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();

    // Same bytes, both ways.
    assert_eq!(got["value_python_hex"], json!(hex(&value_bytes)), "value bytes differ");
    assert_eq!(got["key_python_hex"], json!(hex(&key_bytes)), "key bytes differ");
    assert_eq!(got["value_decoded"], payload);
    assert_eq!(got["key_decoded"], json!({"id": 42}));
    assert_eq!(
        got["raw_python_hex"],
        json!(hex(&raw_bytes)),
        "a bytes value is framed as Confluent frames it"
    );
    assert_eq!(got["raw_decoded_hex"], json!(hex(&raw_payload)));
    assert_eq!(
        codec.decode_value(&raw_bytes, None).await.unwrap(),
        raw_json,
        "and read back"
    );

    // Their registry client against our server.
    let r = &got["registry"];
    assert_eq!(
        r["subjects"],
        json!(["interop.raw-value", "interop.widgets-key", "interop.widgets-value"])
    );
    assert_eq!(r["latest_version"], json!(1));
    assert_eq!(
        r["latest_id"],
        json!(u32::from_be_bytes(value_bytes[1..5].try_into().unwrap()))
    );
    assert_eq!(r["evolved_compatible"], json!(true));
    assert_eq!(r["broken_compatible"], json!(false));
    assert_eq!(r["level"], json!("FULL"));
    assert_eq!(r["lookup_version"], json!(2));
    assert_eq!(r["by_id_has_email"], json!(true));
    assert_eq!(r["versions"], json!([1, 2]));
    assert_eq!(r["broken_register"], json!(409));
    assert_eq!(r["deleted_key_versions"], json!([1]));

    // And we decode what they wrote with the evolved schema's id, as our (older) reader schema.
    let evolved_id = r["evolved_id"].as_u64().unwrap();
    assert_ne!(
        evolved_id,
        u64::from(u32::from_be_bytes(value_bytes[1..5].try_into().unwrap()))
    );
    let back = codec.decode_value(&value_bytes, Some(&widget)).await.unwrap();
    assert_eq!(back, payload);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
