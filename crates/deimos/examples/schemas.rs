//! The schema layer end to end on embedded defaults: an in-process Confluent-compatible registry, the
//! fixture schemas under `schemas/`, a loose payload produced the Deimos way (auto fields, key from a
//! field, coercion, Confluent framing) and read back by a consumer whose schema has evolved.
//!
//! Run it with `cargo run --example schemas` (add `-- <registry-url>` to use a real registry).

use std::path::Path;

use anyhow::Context;
use deimos::avro::{AvroSchema, SchemaStore, compat};
use deimos::keys::{KeyConfig, KeyDecoder, KeyEncoder, KeySpec};
use deimos::registry::{
    CachedRegistry, EmbeddedRegistry, HttpRegistry, SchemaCodec, SchemaRegistry, SubjectNameStrategy, VersionRef,
};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Warnings and errors of the crates go to stderr; RUST_LOG=info (or debug) shows more.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // A registry: the one given on the command line, or an embedded one on a free loopback port.
    let embedded;
    let url = match std::env::args().nth(1) {
        Some(url) => url,
        None => {
            embedded = EmbeddedRegistry::start().await?;
            embedded.url().to_string()
        }
    };
    println!("schema registry: {url}");
    let registry = CachedRegistry::new(HttpRegistry::builder(&url).build()?);
    let codec = SchemaCodec::new(registry);

    // Every schema under schemas/ is loaded and checked at start-up.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    let store = SchemaStore::load_all(&root).with_context(|| format!("loading {}", root.display()))?;
    println!("loaded {} schemas from {}", store.names().len(), root.display());
    let widget = store.get("com.acme.Widget")?;

    // The producer side: key_config field: 'id', topic `widgets` with the prefix `dev.`.
    let topic = "dev.widgets";
    let keys = KeySpec::build(KeyConfig::field("id"), &widget, &store)?;
    let key_encoder = KeyEncoder::for_topic(keys.clone(), "dev.", "widgets");
    key_encoder.prepare(codec.registry().as_ref()).await?;
    let value_subject = SubjectNameStrategy::Topic.subject(topic, &widget, false);
    let writer = codec.writer(&value_subject, &widget).await?;

    let mut payload = json!({
        "id": "1001", "name": "sprocket", "description": "a small sprocket", "price": "9.99",
        "quantity": 7, "status": "ACTIVE", "tags": ["steel", "small", "new"], "updated_at": 1_700_000_000_000i64,
        "not_in_the_schema": "dropped"
    })
    .as_object()
    .cloned()
    .context("payload is an object")?;
    widget.add_auto_fields(&mut payload);
    let extracted = keys.take_key(&mut payload);
    let payload = serde_json::Value::Object(payload);
    let key = key_encoder
        .encode(extracted.key.as_ref())?
        .context("a field key is always present here")?;
    let value = writer.encode_value(&payload)?;
    println!("\nproduced to {topic}");
    println!(
        "  key   subject {:<22} id {} -> {} bytes {}",
        key_encoder.subject(),
        key_id(&key),
        key.len(),
        hex(&key)
    );
    println!(
        "  value subject {:<22} id {} -> {} bytes",
        value_subject,
        writer.id(),
        value.len()
    );
    println!("  sent payload: {}", widget.coerce(&payload)?);

    // A bad payload is refused with a reason.
    let mut bad = payload.clone();
    bad["status"] = json!("MELTED");
    if let Err(e) = writer.encode_value(&bad) {
        println!("  refused a payload with status MELTED: {e}");
    }

    // The consumer side has a newer schema: a new field with a default.
    let evolved = {
        let mut s: serde_json::Value = serde_json::from_str(widget.canonical_json())?;
        if let Some(fields) = s["fields"].as_array_mut() {
            fields.push(json!({"name": "color", "type": "string", "default": "unpainted"}));
        }
        AvroSchema::parse(&s.to_string())?
    };
    compat::can_read(&widget, &evolved).map_err(anyhow::Error::msg)?;
    let check = codec
        .registry()
        .test_compatibility(&value_subject, &evolved, VersionRef::Latest)
        .await?;
    println!(
        "\nconsumer schema adds `color` (default \"unpainted\"); registry says compatible: {}",
        check.is_compatible
    );
    let decoded_key = KeyDecoder::new(keys)
        .decode(codec.registry().as_ref(), Some(&key))
        .await?;
    let decoded = codec.decode_value(&value, Some(&evolved)).await?;
    println!("consumed:");
    println!("  key   {:?}", decoded_key.map(|k| k.into_json()));
    println!("  value {decoded}");
    Ok(())
}

fn key_id(framed: &[u8]) -> u32 {
    framed
        .get(1..5)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
