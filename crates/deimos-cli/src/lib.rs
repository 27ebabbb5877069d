#![doc = include_str!("../README.md")]
// The crate is the `deimos` program; its library holds the commands so that they are documented and tested.
// As an application it reports errors with `anyhow`, as the `deimos-outbox` binary does.

mod dev;
mod dlq;
mod outbox;
mod schema;
mod tail;

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use deimos_avro::CompatibilityLevel;
use deimos_config::{Config, parse_duration};
use deimos_core::redact;

/// `deimos`: operate a deimos-rs deployment from the shell. Its `Debug` output shows the registry and database
/// URLs without their passwords or secret parameters.
#[derive(Parser)]
#[command(
    name = "deimos",
    version,
    about = "deimos-rs: a local Kafka and registry, tail topics, check and register schemas, run the outbox relay, redrive dead letters"
)]
pub struct Cli {
    /// The configuration file (TOML, docs/CONFIGURATION.md); DEIMOS_* environment variables override it.
    #[arg(long, env = "DEIMOS_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers (overrides kafka.brokers).
    #[arg(long, global = true)]
    pub brokers: Option<String>,
    /// Schema registry URL (overrides schema.registry_url).
    #[arg(long, global = true)]
    pub registry: Option<String>,
    /// The folder of .avsc files (overrides schema.path; default `schemas`).
    #[arg(long, global = true)]
    pub schemas: Option<PathBuf>,
    /// The outbox database: postgres://…, mysql://… or sqlite://PATH (overrides outbox.database_url, which the
    /// environment's DEIMOS_OUTBOX__DATABASE_URL sets; without either, DATABASE_URL, as `deimos-outbox` reads it).
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl fmt::Debug for Cli {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Cli {
            config,
            brokers,
            registry,
            schemas,
            database_url,
            command,
        } = self;
        f.debug_struct("Cli")
            .field("config", config)
            .field("brokers", brokers)
            .field("registry", &registry.as_deref().map(redact::url))
            .field("schemas", schemas)
            .field("database_url", &database_url.as_deref().map(redact::url))
            .field("command", command)
            .finish()
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a local Kafka endpoint (librdkafka's mock cluster: nothing is kept) and the embedded schema registry
    /// until ctrl-c, and print a configuration that points at them.
    Dev(DevOptions),
    /// Print the last messages of a topic as JSON lines, decoded with their writer schemas (Deimos's
    /// InlineConsumer).
    Tail {
        /// The topic, as it is on the broker.
        topic: String,
        /// How many messages (across all partitions, newest last).
        #[arg(short = 'n', long, default_value_t = 10)]
        count: usize,
        /// How long reading may take.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Check or register the local schemas of the configured producers.
    #[command(subcommand)]
    Schema(SchemaCommand),
    /// The transactional outbox: migrate, status, relay.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// Dead-letter topics.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

/// `deimos dev`'s options. Its `Debug` output shows the outbox URL without its password.
#[derive(clap::Args)]
pub struct DevOptions {
    /// Kafka's port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 9092)]
    pub port: u16,
    /// The schema registry's port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 8081)]
    pub registry_port: u16,
    /// Partitions of the topics created at start: the configuration's producer, consumer and dead-letter topics,
    /// and those named with --topic.
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,
    /// A topic to create at start, repeatable.
    #[arg(long = "topic")]
    pub topics: Vec<String>,
    /// Create or upgrade the outbox tables in this database (e.g. sqlite://dev.db) and put it in the printed
    /// configuration.
    #[arg(long)]
    pub outbox: Option<String>,
}

impl fmt::Debug for DevOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevOptions")
            .field("port", &self.port)
            .field("registry_port", &self.registry_port)
            .field("partitions", &self.partitions)
            .field("topics", &self.topics)
            .field("outbox", &self.outbox.as_deref().map(redact::url))
            .finish()
    }
}

/// `deimos schema …`.
#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Check each local schema against the versions registered under its subject; exits 1 if one is
    /// incompatible (for CI).
    Check {
        /// The compatibility mode to check under (BACKWARD, FORWARD, FULL, their _TRANSITIVE forms, NONE);
        /// default: each subject's level in the registry.
        #[arg(long)]
        compatibility: Option<CompatibilityLevel>,
        /// `SUBJECT=full.schema.Name`, repeatable; default: the value and key subjects of every `[[producer]]`.
        #[arg(long = "subject")]
        subjects: Vec<String>,
    },
    /// Register each local schema under its subject (the registry enforces the subject's compatibility).
    Register {
        /// `SUBJECT=full.schema.Name`, repeatable; default: the value and key subjects of every `[[producer]]`.
        #[arg(long = "subject")]
        subjects: Vec<String>,
    },
}

/// `deimos outbox …`.
#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Create or upgrade the outbox tables.
    Migrate,
    /// Print the backlog per topic and partition, the leases and the dead rows.
    Status,
    /// Send outbox rows to Kafka until SIGTERM / ctrl-c (`[outbox]` settings of the configuration).
    Relay,
}

/// `deimos dlq …`.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Send dead-lettered messages back to their original topic (header deimos.dlq.original.topic) when a
    /// `[[consumer]]` of the configuration reads it, or to --to, with their key, value and original headers.
    /// Progress is committed under a consumer group, so a second run sends only what arrived since.
    Redrive {
        /// The dead-letter topic.
        topic: String,
        /// The consumer group that remembers what was redriven.
        #[arg(long, default_value = "deimos-dlq-redrive")]
        group: String,
        /// Send every message to this topic instead of its original one (any topic: no `[[consumer]]` needed).
        #[arg(long)]
        to: Option<String>,
        /// Only print what would be sent where; commit nothing.
        #[arg(long)]
        dry_run: bool,
        /// How long reading and each delivery may take.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        timeout: Duration,
    },
}

/// Runs a parsed command line. `Ok(ExitCode::FAILURE)` is a finding (an incompatible schema, a message that
/// could not be redriven) rather than an error.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    let config = load(&cli)?;
    match cli.command {
        Command::Dev(options) => dev::run(&config, options).await,
        Command::Tail { topic, count, timeout } => tail::run(&config, &topic, count, timeout).await,
        Command::Schema(SchemaCommand::Check {
            compatibility,
            subjects,
        }) => schema::check(&config, compatibility, &subjects).await,
        Command::Schema(SchemaCommand::Register { subjects }) => schema::register(&config, &subjects).await,
        Command::Outbox(command) => outbox::run(&config, command).await,
        Command::Dlq(DlqCommand::Redrive {
            topic,
            group,
            to,
            dry_run,
            timeout,
        }) => dlq::redrive(&config, &topic, &group, to.as_deref(), dry_run, timeout).await,
    }
}

/// The configuration file (if any) with the environment's and then the command line's overrides.
fn load(cli: &Cli) -> Result<Config> {
    let mut config = Config::load_or_default(cli.config.as_deref()).context("reading the configuration")?;
    if let Some(brokers) = &cli.brokers {
        config.kafka.brokers = Some(brokers.clone());
    }
    if let Some(url) = &cli.registry {
        config.schema.registry_url = Some(url.clone());
    }
    if let Some(path) = &cli.schemas {
        config.schema.path = Some(path.clone());
    }
    if let Some(url) = &cli.database_url {
        config.outbox.database_url = Some(url.clone());
    }
    // Last, the plain variables the `deimos-outbox` program reads too.
    let plain = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if config.outbox.database_url.is_none() {
        config.outbox.database_url = plain("DATABASE_URL");
    }
    if config.kafka.brokers.is_none() {
        config.kafka.brokers = plain("KAFKA_BROKERS");
    }
    Ok(config)
}
