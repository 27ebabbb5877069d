//! Secrets given to the `deimos` binary never show: not in the parsed command line's `Debug` output, not in
//! what it prints when a command fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use clap::Parser;
use deimos_cli::Cli;

const SECRET: &str = "s3cr3t-PASS";
const SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");

fn assert_hidden(shown: &str) {
    assert!(!shown.contains(SECRET), "a secret shows in: {shown}");
}

#[test]
fn command_line_debug_hides_urls() {
    let registry = format!("https://key:{SECRET}@registry.example.com/?api_key={SECRET}");
    let database = format!("postgres://app:{SECRET}@db/app?sslpassword={SECRET}");
    let cli = Cli::parse_from([
        "deimos",
        "--registry",
        &registry,
        "--database-url",
        &database,
        "outbox",
        "status",
    ]);
    for shown in [format!("{cli:?}"), format!("{cli:#?}")] {
        assert_hidden(&shown);
        assert!(
            shown.contains("registry.example.com") && shown.contains("db/app"),
            "{shown}"
        );
    }
}

#[test]
fn dev_options_debug_hides_the_outbox_url() {
    let database = format!("postgres://app:{SECRET}@db/app");
    let cli = Cli::parse_from(["deimos", "dev", "--outbox", &database]);
    let shown = format!("{cli:?}");
    assert_hidden(&shown);
    assert!(shown.contains("db/app"), "{shown}");
}

/// Runs `deimos args…` with `config` as its configuration file and no `DEIMOS_*` variables; returns what it
/// printed, after checking that it failed.
fn failing(config: &str, args: &[&str]) -> String {
    let dir = std::env::temp_dir().join(format!(
        "deimos-cli-secrets-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("deimos.toml");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_deimos"));
    command.arg("--config").arg(&path).args(args).env_remove("DATABASE_URL");
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("DEIMOS_")) {
        command.env_remove(name);
    }
    let output = command.output().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "deimos {args:?} succeeded: {printed}");
    printed
}

#[test]
fn failing_commands_hide_secrets() {
    let database = format!("postgres://app:{SECRET}@127.0.0.1:1/app?sslpassword={SECRET}");
    assert_hidden(&failing("", &["--database-url", &database, "outbox", "status"]));
    assert_hidden(&failing(
        &format!("[outbox]\ndatabase_url = \"host=127.0.0.1 port=1 password={SECRET}\"\n"),
        &["outbox", "migrate"],
    ));
    // librdkafka refuses a misspelt setting and rdkafka quotes its value.
    let kafka = format!("[kafka]\nbrokers = \"127.0.0.1:1\"\nsettings = {{ \"sasl.pasword\" = \"{SECRET}\" }}\n");
    let printed = failing(&kafka, &["dlq", "redrive", "dead-letters", "--timeout", "1s"]);
    assert!(printed.contains("sasl.pasword"), "{printed}");
    assert_hidden(&printed);
    let file = std::env::temp_dir().join(format!("deimos-cli-secrets-{}.db", std::process::id()));
    let outbox = format!("sqlite://{}", file.display());
    let printed = failing(&kafka, &["--database-url", &outbox, "outbox", "relay"]);
    std::fs::remove_file(&file).ok();
    assert!(printed.contains("sasl.pasword"), "{printed}");
    assert_hidden(&printed);
    let registry = format!("ftp://key:{SECRET}@registry.example.com/");
    let printed = failing("", &["--schemas", SCHEMAS, "--registry", &registry, "schema", "check"]);
    assert!(printed.contains("registry.example.com"), "{printed}");
    assert_hidden(&printed);
    assert_hidden(&failing(
        &format!("[schema]\npassword = {SECRET}\n"),
        &["schema", "check"],
    ));
}
