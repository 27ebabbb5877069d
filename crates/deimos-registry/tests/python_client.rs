//! confluent-kafka's Python SchemaRegistryClient against the EmbeddedRegistry (skipped when Python or
//! confluent-kafka is not installed).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use deimos_registry::{EmbeddedRegistry, SchemaRegistry};

fn confluent_kafka_available() -> bool {
    Command::new("python3")
        .args(["-c", "import confluent_kafka.schema_registry.avro, fastavro"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn confluent_python_client_works_against_the_embedded_registry() -> anyhow::Result<()> {
    if !confluent_kafka_available() {
        eprintln!("skipped: python3 with confluent-kafka and fastavro is not installed");
        return Ok(());
    }
    let server = EmbeddedRegistry::builder().basic_auth("py", "secret").start().await?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/confluent_client.py");
    let url = server.url().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([script, &url, "py:secret"])
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .output()
    })
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim() == "ok",
        "python client failed:\n{stdout}\n{stderr}"
    );
    // What Python registered is visible on the Rust side.
    assert_eq!(server.registry().subjects().await?, vec!["gadgets-value"]);
    assert_eq!(server.registry().schema_by_id(3).await?.name(), Some("com.acme.Gadget"));
    Ok(())
}
