//! What the `deimos` program says when it cannot do what it was asked: what was wrong and what to do, each cause
//! once, exit code 2.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Command, Output};

const SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");

/// An empty folder to run in.
fn empty_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "deimos-cli-messages-{}-{name}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `deimos args…` in `dir` with no `DEIMOS_*` variable but `env`.
fn deimos(dir: &PathBuf, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_deimos"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("KAFKA_BROKERS");
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("DEIMOS_")) {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    command.output().unwrap()
}

/// The error line of a failed run (exit code 2).
fn error(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    stderr
}

#[test]
fn no_configuration_and_no_schema_folder() {
    let dir = empty_dir("no-schemas");
    let said = error(&deimos(&dir, &["schema", "check"], &[]));
    assert!(said.contains("cannot read the schema folder schemas: "), "{said}");
    assert!(said.contains("--config") && said.contains("--schemas"), "{said}");
    assert_eq!(said.matches("No such file or directory").count(), 1, "{said}");
}

#[test]
fn a_missing_configuration_file() {
    let dir = empty_dir("missing-config");
    let said = error(&deimos(&dir, &["--config", "nope.toml", "outbox", "status"], &[]));
    assert!(
        said.contains("could not read the configuration file nope.toml: No such file or directory"),
        "{said}"
    );
    assert_eq!(said.matches("No such file or directory").count(), 1, "{said}");
}

#[test]
fn a_registry_url_without_a_scheme() {
    let dir = empty_dir("registry-url");
    let said = error(&deimos(
        &dir,
        &["--schemas", SCHEMAS, "--registry", "localhost:8081", "schema", "check"],
        &[],
    ));
    assert!(said.contains("schema registry URL `localhost:8081`"), "{said}");
    assert_eq!(said.matches("localhost:8081").count(), 1, "{said}");
}

#[test]
fn an_unknown_schema_name() {
    let dir = empty_dir("unknown-schema");
    let said = error(&deimos(
        &dir,
        &[
            "--schemas",
            SCHEMAS,
            "--registry",
            "http://127.0.0.1:9",
            "schema",
            "check",
            "--subject",
            "widgets-value=com.acme.Gizmo",
        ],
        &[],
    ));
    assert!(
        said.contains("schema com.acme.Gizmo not found: there is no ") && said.contains("com/acme/Gizmo.avsc"),
        "{said}"
    );
    assert!(
        !said.contains("com.acme.Widget"),
        "no other schema is suggested: {said}"
    );
}

#[test]
fn an_unknown_key_in_an_environment_override_names_the_variable() {
    let dir = empty_dir("env-key");
    let said = error(&deimos(
        &dir,
        &["--database-url", "sqlite://x.db", "outbox", "status"],
        &[("DEIMOS_CONSUMERS__REPORT_LAGG", "true")],
    ));
    assert!(
        said.contains("environment variable DEIMOS_CONSUMERS__REPORT_LAGG: unknown field `report_lagg`"),
        "{said}"
    );
}

#[test]
fn a_consumer_without_a_group_is_refused_by_every_command() {
    let dir = empty_dir("no-group");
    std::fs::write(
        dir.join("deimos.toml"),
        "[[consumer]]\nname = \"WidgetConsumer\"\ntopic = \"widgets\"\n",
    )
    .unwrap();
    let said = error(&deimos(
        &dir,
        &[
            "--config",
            "deimos.toml",
            "--database-url",
            "sqlite://x.db",
            "outbox",
            "status",
        ],
        &[],
    ));
    assert!(
        said.contains(
            "consumer `WidgetConsumer`: group_id is not set: set group_id in the [[consumer]] named `WidgetConsumer`"
        ),
        "{said}"
    );
}

#[test]
fn a_database_that_refuses_the_connection_says_so() {
    let dir = empty_dir("pg-port");
    // Nothing listens on port 9 of this machine.
    let said = error(&deimos(
        &dir,
        &[
            "--database-url",
            "postgres://postgres@127.0.0.1:9/test",
            "outbox",
            "status",
        ],
        &[],
    ));
    assert!(said.contains("postgres://postgres@127.0.0.1:9/test"), "{said}");
    assert!(said.contains("Connection refused"), "{said}");
}

#[test]
fn a_broker_that_cannot_be_reached_is_named() {
    let dir = empty_dir("brokers");
    let started = std::time::Instant::now();
    let said = error(&deimos(
        &dir,
        &["--brokers", "127.0.0.1:9", "tail", "widgets", "--timeout", "3s"],
        &[],
    ));
    assert!(
        said.contains("no answer from Kafka at 127.0.0.1:9 within 3s: is a broker running there?"),
        "{said}"
    );
    assert_eq!(said.matches("127.0.0.1:9").count(), 1, "{said}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn redriving_an_empty_topic_says_it_is_empty() {
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    mock.create_topic("widgets.dead", 1, 1).unwrap();
    let dir = empty_dir("empty-dlq");
    let out = deimos(
        &dir,
        &[
            "--brokers",
            &mock.bootstrap_servers(),
            "dlq",
            "redrive",
            "widgets.dead",
            "--to",
            "widgets",
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("nothing to redrive: widgets.dead holds no message"),
        "{stdout}"
    );
}
