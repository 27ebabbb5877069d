//! `deimos dev`, run as a user runs it: the printed configuration reaches a Kafka endpoint with the topics it
//! announced and a schema registry, and ctrl-c stops it cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use deimos_registry::{HttpRegistry, SchemaRegistry};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("deimos-dev-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts `deimos dev args…` and reads its configuration from stdout (up to the line starting with `last`).
fn start(args: &[&str], last: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_deimos"))
        .arg("dev")
        .args(args)
        .env_remove("DEIMOS_CONFIG")
        .current_dir(temp("cwd"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut printed = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if line.starts_with(last) {
            break;
        }
    }
    (child, printed)
}

fn value<'a>(toml: &'a str, key: &str) -> &'a str {
    toml.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in:\n{toml}"))
        .trim_matches('"')
}

fn interrupt(child: &mut Child) -> (Option<i32>, String) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = std::mem::replace(child, Command::new("true").spawn().unwrap())
        .wait_with_output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_serves_kafka_and_a_registry_until_ctrl_c() {
    let db = temp("outbox").join("dev.db");
    let outbox = format!("sqlite://{}", db.display());
    let (mut child, toml) = start(
        &[
            "--port",
            "0",
            "--registry-port",
            "0",
            "--partitions",
            "2",
            "--topic",
            "widgets",
            "--outbox",
            &outbox,
        ],
        "database_url",
    );
    let brokers = value(&toml, "brokers").to_owned();
    let registry_url = value(&toml, "registry_url").to_owned();
    assert_eq!(value(&toml, "database_url"), outbox);
    assert!(db.exists(), "the outbox database was not created");

    // Kafka: the announced topic has the announced partitions, and takes a message.
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    let metadata = producer
        .client()
        .fetch_metadata(Some("widgets"), Duration::from_secs(10))
        .unwrap();
    assert_eq!(metadata.topics()[0].partitions().len(), 2, "{toml}");
    producer
        .send(
            FutureRecord::<str, str>::to("widgets").payload("hello"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    // The registry answers, empty.
    let registry = HttpRegistry::builder(&registry_url).build().unwrap();
    assert_eq!(registry.subjects().await.unwrap(), Vec::<String>::new());

    let (code, stderr) = interrupt(&mut child);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("Kafka (librdkafka's mock cluster) on 127.0.0.1:"),
        "{stderr}"
    );
    assert!(stderr.contains("widgets"), "{stderr}");
    assert!(stderr.contains("stopping"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_is_named_with_the_way_out() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_deimos"))
        .args(["dev", "--port", &port, "--registry-port", "0"])
        .env_remove("DEIMOS_CONFIG")
        .current_dir(temp("cwd"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("Kafka's port {port} on 127.0.0.1 is taken")) && stderr.contains("--port 0"),
        "{stderr}"
    );
}
