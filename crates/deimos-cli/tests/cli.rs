//! The `deimos` binary against librdkafka's mock cluster, the embedded registry and SQLite, run as a user runs
//! it: arguments in, output and exit code out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use deimos_avro::SchemaStore;
use deimos_keys::KeyConfig;
use deimos_producer::{KafkaBackend, Producer, ProducerSetup};
use deimos_registry::{EmbeddedRegistry, HttpRegistry, SchemaRegistry};
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value as Json, json};

const SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");

struct Env {
    dir: PathBuf,
    config: PathBuf,
    brokers: String,
    registry: String,
}

impl Env {
    fn new(brokers: String, registry: String) -> Env {
        let dir = std::env::temp_dir().join(format!(
            "deimos-cli-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("deimos.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[kafka]
brokers = "{brokers}"
[schema]
registry_url = "{registry}"
path = "{SCHEMAS}"
[producers]
topic_prefix = "dev."
[[producer]]
name = "WidgetProducer"
topic = "widgets"
schema = "Widget"
namespace = "com.acme"
key_config = {{ field = "id" }}
[[consumer]]
name = "WidgetConsumer"
topic = "dev.widgets"
group_id = "widgets"
schema = "Widget"
namespace = "com.acme"
dead_letter_topic = "dev.widgets.dead"
"#
            ),
        )
        .unwrap();
        Env {
            dir,
            config,
            brokers,
            registry,
        }
    }

    /// Runs `deimos --config <file> args…` off the runtime's threads (the registry serves on them).
    async fn deimos(&self, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_deimos"));
        command
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("DATABASE_URL");
        for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("DEIMOS_")) {
            command.env_remove(name);
        }
        tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn lines(output: &Output) -> Vec<Json> {
    text(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

async fn widget_producer(env: &Env) -> Producer {
    let registry: Arc<dyn SchemaRegistry> = Arc::new(HttpRegistry::new(&env.registry).unwrap());
    let backend = KafkaBackend::builder().bootstrap_servers(&env.brokers).build().unwrap();
    let store = Arc::new(SchemaStore::load_all(SCHEMAS).unwrap());
    let setup = ProducerSetup::builder(store, registry, backend)
        .topic_prefix("dev.")
        .build();
    Producer::builder("WidgetProducer")
        .topic("widgets")
        .schema("Widget")
        .namespace("com.acme")
        .key_config(KeyConfig::field("id"))
        .build(&setup)
        .await
        .unwrap()
}

fn widget(id: i64) -> Json {
    json!({"id": id, "name": format!("w{id}"), "description": "", "price": 1.5, "quantity": 1,
           "status": "ACTIVE", "tags": [], "updated_at": 0})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_check_and_register_follow_the_producers() {
    let mock = MockCluster::new(1).unwrap();
    let registry = EmbeddedRegistry::start().await.unwrap();
    let env = Env::new(mock.bootstrap_servers(), registry.url().to_string());

    let out = env.deimos(&["schema", "check"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("new") && shown.contains("dev.widgets-value") && shown.contains("dev.widgets-key"),
        "{shown}"
    );

    let out = env.deimos(&["schema", "register"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("registered dev.widgets-value"),
        "{}",
        text(&out.stdout)
    );

    let out = env.deimos(&["schema", "check", "--compatibility", "FULL"]).await;
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("ok        dev.widgets-value") && text(&out.stdout).contains("(1 version, FULL)"),
        "{}",
        text(&out.stdout)
    );

    // Another record under the same subject is incompatible: exit code 1, the reasons printed.
    let out = env
        .deimos(&[
            "schema",
            "check",
            "--compatibility",
            "BACKWARD",
            "--subject",
            "dev.widgets-value=com.acme.orders.Order",
        ])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("FAILED"), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("1 schema is incompatible"),
        "{}",
        text(&out.stderr)
    );

    // Bad input is an error (exit 2) that says what to write.
    let out = env.deimos(&["schema", "check", "--subject", "no-equals-sign"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("SUBJECT=full.schema.Name"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_decoded_messages_as_json_lines() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("dev.widgets", 3, 1).unwrap();
    let registry = EmbeddedRegistry::start().await.unwrap();
    let env = Env::new(mock.bootstrap_servers(), registry.url().to_string());
    let producer = widget_producer(&env).await;
    for id in 1..=5 {
        producer.publish(widget(id)).await.unwrap();
    }

    let out = env.deimos(&["tail", "dev.widgets", "-n", "3"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let messages = lines(&out);
    assert_eq!(messages.len(), 3, "{messages:?}");
    for m in &messages {
        let id = m["value"]["id"].as_i64().unwrap();
        assert_eq!(m["key"], json!({"id": id}));
        assert_eq!(m["value"]["name"], json!(format!("w{id}")));
        assert_eq!(m["topic"], json!("dev.widgets"));
    }

    let out = env.deimos(&["tail", "no.such.topic"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("does not exist"), "{}", text(&out.stderr));
}

async fn dead_letter(brokers: &str, value: &[u8], original: Option<&str>) {
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    let mut headers = OwnedHeaders::new().insert(Header {
        key: "trace",
        value: Some("t-1"),
    });
    if let Some(topic) = original {
        headers = headers
            .insert(Header {
                key: deimos_consumer::HEADER_ORIGINAL_TOPIC,
                value: Some(topic),
            })
            .insert(Header {
                key: deimos_consumer::HEADER_ERROR_MESSAGE,
                value: Some("boom"),
            });
    }
    producer
        .send(
            FutureRecord::to("dev.widgets.dead")
                .key("k")
                .payload(value)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_redrive_sends_dead_letters_back_once() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("dev.widgets", 1, 1).unwrap();
    mock.create_topic("dev.widgets.dead", 1, 1).unwrap();
    let registry = EmbeddedRegistry::start().await.unwrap();
    let env = Env::new(mock.bootstrap_servers(), registry.url().to_string());
    dead_letter(&env.brokers, b"first", Some("dev.widgets")).await;
    dead_letter(&env.brokers, b"second", Some("dev.widgets")).await;

    let out = env.deimos(&["dlq", "redrive", "dev.widgets.dead", "--dry-run"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).matches("would send").count(),
        2,
        "{}",
        text(&out.stdout)
    );

    let out = env.deimos(&["dlq", "redrive", "dev.widgets.dead"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("2 messages redriven"),
        "{}",
        text(&out.stdout)
    );
    let out = env.deimos(&["tail", "dev.widgets"]).await;
    let back = lines(&out);
    assert_eq!(back.len(), 2, "{back:?}");
    assert_eq!(back[0]["value"], json!("first"));
    assert_eq!(back[0]["key"], json!("k"));
    assert_eq!(
        back[0]["headers"],
        json!({"trace": "t-1"}),
        "the deimos.dlq.* headers are dropped"
    );

    // A second run sends nothing again; a dead letter without its original topic stops with exit code 1.
    let out = env.deimos(&["dlq", "redrive", "dev.widgets.dead"]).await;
    assert!(
        text(&out.stdout).contains("nothing to redrive"),
        "{}",
        text(&out.stdout)
    );
    dead_letter(&env.brokers, b"third", None).await;
    let out = env.deimos(&["dlq", "redrive", "dev.widgets.dead"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("pass --to TOPIC"), "{}", text(&out.stderr));
    let out = env
        .deimos(&["dlq", "redrive", "dev.widgets.dead", "--to", "dev.widgets"])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(lines(&env.deimos(&["tail", "dev.widgets"]).await).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_redrive_sends_only_to_configured_topics() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("dev.widgets", 1, 1).unwrap();
    mock.create_topic("dev.widgets.dead", 1, 1).unwrap();
    mock.create_topic("dev.payments", 1, 1).unwrap();
    let registry = EmbeddedRegistry::start().await.unwrap();
    let env = Env::new(mock.bootstrap_servers(), registry.url().to_string());
    // The second dead letter's header names a topic that no [[consumer]] of the configuration reads.
    dead_letter(&env.brokers, b"first", Some("dev.widgets")).await;
    dead_letter(&env.brokers, b"forged", Some("dev.payments")).await;
    dead_letter(&env.brokers, b"after", Some("dev.widgets")).await;

    for dry_run in [true, false] {
        let mut args = vec!["dlq", "redrive", "dev.widgets.dead"];
        if dry_run {
            args.push("--dry-run");
        }
        let out = env.deimos(&args).await;
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("dev.payments") && stderr.contains("--to") && stderr.contains("[[consumer]]"),
            "the message names the topic and how to allow it: {stderr}"
        );
        assert!(
            !text(&out.stdout).contains("dev.payments"),
            "nothing is (or would be) sent there: {}",
            text(&out.stdout)
        );
    }
    assert!(
        lines(&env.deimos(&["tail", "dev.payments"]).await).is_empty(),
        "a header cannot pick the destination"
    );
    // The partition stopped at the forged one: only the message before it went back.
    let back = lines(&env.deimos(&["tail", "dev.widgets"]).await);
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(back[0]["value"], json!("first"));

    // Named with --to, the destination is the operator's choice.
    let out = env
        .deimos(&["dlq", "redrive", "dev.widgets.dead", "--to", "dev.payments"])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(lines(&env.deimos(&["tail", "dev.payments"]).await).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_redrive_reads_header_keys_as_bytes() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("dev.widgets", 1, 1).unwrap();
    mock.create_topic("dev.widgets.dead", 1, 1).unwrap();
    let registry = EmbeddedRegistry::start().await.unwrap();
    let env = Env::new(mock.bootstrap_servers(), registry.url().to_string());
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .create()
        .unwrap();
    // A header key that is not UTF-8 (rdkafka's safe API only writes UTF-8 keys; this goes through librdkafka's
    // C API).
    let raw: [(&[u8], Option<&[u8]>); 3] = [
        (b"\xff\xfe", Some(b"raw")),
        (b"trace", Some(b"t-1")),
        (deimos_consumer::HEADER_ORIGINAL_TOPIC.as_bytes(), Some(b"dev.widgets")),
    ];
    let headers = deimos_consumer::write_headers(raw.into_iter());
    producer
        .send(
            FutureRecord::to("dev.widgets.dead")
                .key("k")
                .payload("v")
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    // rdkafka's header reader panics on such a key; the command reads and writes keys as bytes, so the header
    // goes back as it came.
    let out = env.deimos(&["dlq", "redrive", "dev.widgets.dead"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let back = deimos_consumer::tail::last_messages(
        &env.brokers,
        &Default::default(),
        "dev.widgets",
        10,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(back[0].value.as_deref(), Some(&b"v"[..]));
    let headers: Vec<(&[u8], Option<&[u8]>)> = back[0].headers.iter_raw().collect();
    assert_eq!(
        headers,
        [
            (&b"\xff\xfe"[..], Some(&b"raw"[..])),
            (&b"trace"[..], Some(&b"t-1"[..]))
        ],
        "the original headers, the key that is not UTF-8 included, without deimos.dlq.*"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_relay_sends_what_was_written_and_stops_on_sigterm() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("dev.widgets", 1, 1).unwrap();
    let registry = EmbeddedRegistry::start().await.unwrap();
    let env = Env::new(mock.bootstrap_servers(), registry.url().to_string());
    let db = format!("sqlite://{}", env.dir.join("relay.db").display());
    assert!(
        env.deimos(&["--database-url", &db, "outbox", "migrate"])
            .await
            .status
            .success()
    );

    // A service writes two widgets into the outbox in its transaction.
    let outbox = deimos_outbox_diesel::Outbox::builder().build();
    let store = Arc::new(SchemaStore::load_all(SCHEMAS).unwrap());
    let http: Arc<dyn SchemaRegistry> = Arc::new(HttpRegistry::new(&env.registry).unwrap());
    let setup = ProducerSetup::builder(store, http, outbox.clone())
        .topic_prefix("dev.")
        .build();
    let producer = Producer::builder("WidgetProducer")
        .topic("widgets")
        .schema("Widget")
        .namespace("com.acme")
        .key_config(KeyConfig::field("id"))
        .build(&setup)
        .await
        .unwrap();
    let mut conn = deimos_outbox_diesel::Conn::connect(&db).await.unwrap();
    conn.begin().await.unwrap();
    outbox
        .publish(
            &producer,
            &mut conn,
            vec![widget(1), widget(2)],
            &deimos_producer::PublishOptions::new(),
        )
        .await
        .unwrap();
    conn.commit().await.unwrap();

    // `deimos outbox relay` sends them, then stops gracefully on SIGTERM.
    let relay = Command::new(env!("CARGO_BIN_EXE_deimos"))
        .args(["--config"])
        .arg(&env.config)
        .args(["--database-url", &db, "outbox", "relay"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let out = env.deimos(&["tail", "dev.widgets"]).await;
        if lines(&out).len() == 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the relay sent nothing within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pid = relay.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let out = tokio::task::spawn_blocking(move || relay.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("relay stopped: 2 sent"),
        "{}",
        text(&out.stdout)
    );
    let status = env.deimos(&["--database-url", &db, "outbox", "status"]).await;
    assert!(
        text(&status.stdout).contains("0 messages pending"),
        "{}",
        text(&status.stdout)
    );
    let _ = std::fs::remove_dir_all(Path::new(&env.dir));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_migrate_and_status_on_sqlite() {
    let env = Env::new("127.0.0.1:1".into(), "http://127.0.0.1:1".into());
    let db = format!("sqlite://{}", env.dir.join("outbox.db").display());
    let out = env.deimos(&["--database-url", &db, "outbox", "status"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("migrate"), "{}", text(&out.stderr));
    let out = env.deimos(&["--database-url", &db, "outbox", "migrate"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("applied migration"), "{}", text(&out.stdout));
    let out = env.deimos(&["--database-url", &db, "outbox", "status"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("0 messages pending"),
        "{}",
        text(&out.stdout)
    );
    let out = env.deimos(&["outbox", "status"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("DEIMOS_OUTBOX__DATABASE_URL"),
        "{}",
        text(&out.stderr)
    );
    // Without a database in the file, a DEIMOS_ variable or a flag, the plain DATABASE_URL, as deimos-outbox.
    let mut plain = Command::new(env!("CARGO_BIN_EXE_deimos"));
    plain
        .args(["--config", &env.config.display().to_string(), "outbox", "status"])
        .env("DATABASE_URL", &db)
        .env_remove("DEIMOS_OUTBOX__DATABASE_URL");
    let out = tokio::task::spawn_blocking(move || plain.output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("0 messages pending"),
        "{}",
        text(&out.stdout)
    );
    let _ = std::fs::remove_dir_all(Path::new(&env.dir));
}
