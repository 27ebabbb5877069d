//! `deimos-outbox`: run the outbox relay, show the backlog, run the migrations.
//!
//! ```text
//! deimos-outbox --database-url postgres://postgres@127.0.0.1/app migrate
//! deimos-outbox --database-url postgres://postgres@127.0.0.1/app status
//! deimos-outbox --database-url postgres://postgres@127.0.0.1/app relay --brokers kafka:9092
//! ```
//!
//! It reads the environment as `deimos outbox` does (`DEIMOS_OUTBOX__DATABASE_URL`, `DEIMOS_KAFKA__BROKERS`,
//! then the plain `DATABASE_URL` and `KAFKA_BROKERS`) and exits as `deimos` does: 0 when done, 2 on an error.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use deimos_outbox_diesel::{Relay, RelayConfig, Status, Topics};
use deimos_producer::{KafkaBackend, Partitioner};

#[derive(Parser)]
#[command(
    name = "deimos-outbox",
    version,
    about = "The deimos-rs transactional outbox: relay, status, migrations"
)]
struct Cli {
    /// The database holding kafka_messages: postgres://…, mysql://… (MySQL, MariaDB) or sqlite://PATH; else
    /// DATABASE_URL.
    #[arg(long, env = "DEIMOS_OUTBOX__DATABASE_URL", global = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create or upgrade the outbox tables (Deimos's tables if missing, then the deimos-rs upgrade).
    Migrate,
    /// Print the backlog per topic and partition, the leases and the dead-lettered rows.
    Status,
    /// Send outbox rows to Kafka until SIGTERM / ctrl-c.
    Relay(RelayArgs),
}

#[derive(clap::Args)]
struct RelayArgs {
    /// Kafka bootstrap servers; else KAFKA_BROKERS.
    #[arg(long, env = "DEIMOS_KAFKA__BROKERS")]
    brokers: Option<String>,
    /// Rows per batch.
    #[arg(long, default_value_t = 2000)]
    batch_size: usize,
    /// Batches of one partition in flight at once.
    #[arg(long, default_value_t = 2)]
    max_in_flight: usize,
    /// Partitions worked on at once (one database connection each).
    #[arg(long, default_value_t = 32)]
    max_workers: usize,
    /// Lease time-to-live, in seconds.
    #[arg(long, default_value_t = 30)]
    lease_ttl_secs: u64,
    /// Polling interval when nothing wakes the relay, in milliseconds.
    #[arg(long, default_value_t = 500)]
    poll_interval_ms: u64,
    /// How long librdkafka may try to deliver a message (message.timeout.ms), in milliseconds; default a third
    /// of the lease, at most half of it minus 1 s.
    #[arg(long)]
    delivery_timeout_ms: Option<u64>,
    /// How long opening a database connection may take, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    connect_timeout_ms: u64,
    /// How long one database statement may take before its connection is dropped, in milliseconds.
    #[arg(long, default_value_t = 10000)]
    statement_timeout_ms: u64,
    /// Database connections of the relay; default max-workers + 1.
    #[arg(long)]
    pool_size: Option<usize>,
    /// Topics to compact within a batch (last message per key): `all` or a comma-separated list.
    #[arg(long)]
    compact_topics: Option<String>,
    /// Topics whose messages are logged at debug level: `all` or a comma-separated list.
    #[arg(long)]
    log_topics: Option<String>,
    /// The partitioner used when rows have no partition (must match the writers').
    #[arg(long, value_enum, default_value_t = PartitionerArg::Consistent)]
    partitioner: PartitionerArg,
    /// A librdkafka producer setting, `key=value`; repeatable.
    #[arg(long = "kafka-setting", value_parser = parse_setting)]
    kafka_settings: Vec<(String, String)>,
}

#[derive(Clone, Copy, ValueEnum)]
enum PartitionerArg {
    /// librdkafka's default (CRC-32).
    Consistent,
    /// The Java client's (murmur2).
    Murmur2,
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{s}` is not key=value"))
}

fn topics(arg: Option<&str>) -> Topics {
    match arg.map(str::trim) {
        None | Some("") => Topics::None,
        Some("all") => Topics::All,
        Some(list) => Topics::only(list.split(',').map(str::trim).filter(|t| !t.is_empty())),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("deimos-outbox: could not start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("deimos-outbox: {}", deimos_core::report::chain(e.as_ref()));
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let url = cli.database_url.or_else(|| plain_var("DATABASE_URL")).context(
        "no database: pass --database-url or set DEIMOS_OUTBOX__DATABASE_URL (or DATABASE_URL) to postgres://…, \
         mysql://… or sqlite://PATH",
    )?;
    match cli.command {
        Command::Migrate => {
            let applied = deimos_outbox_diesel::migrate(&url).await?;
            if applied.is_empty() {
                println!("outbox tables are up to date");
            } else {
                for v in applied {
                    println!("applied migration {v}");
                }
            }
        }
        Command::Status => status(&url).await?,
        Command::Relay(args) => {
            let brokers =
                args.brokers.clone().or_else(|| plain_var("KAFKA_BROKERS")).context(
                    "no brokers: pass --brokers or set DEIMOS_KAFKA__BROKERS (or KAFKA_BROKERS) to host:9092,…",
                )?;
            let mut kafka = KafkaBackend::builder()
                .bootstrap_servers(&brokers)
                .partitioner(match args.partitioner {
                    PartitionerArg::Consistent => Partitioner::Consistent,
                    PartitionerArg::Murmur2 => Partitioner::Murmur2,
                });
            // The relay hands over whole batches, so waiting for more messages only adds latency.
            kafka = kafka.kafka_setting("linger.ms", "1");
            for (k, v) in &args.kafka_settings {
                kafka = kafka.kafka_setting(k, v);
            }
            let backend = kafka.build()?;
            let mut config = RelayConfig::builder();
            config = config.batch_size(args.batch_size);
            config = config.max_in_flight(args.max_in_flight);
            config = config.max_workers(args.max_workers);
            config = config.lease_ttl(Duration::from_secs(args.lease_ttl_secs));
            config = config.poll_interval(Duration::from_millis(args.poll_interval_ms));
            config = config.delivery_timeout(args.delivery_timeout_ms.map(Duration::from_millis));
            config = config.connect_timeout(Duration::from_millis(args.connect_timeout_ms));
            config = config.statement_timeout(Duration::from_millis(args.statement_timeout_ms));
            config = config.pool_size(args.pool_size);
            config = config.compact_topics(topics(args.compact_topics.as_deref()));
            config = config.log_topics(topics(args.log_topics.as_deref()));
            let stats = Relay::new(url, backend.clone(), config.build())?.run().await?;
            backend.flush(Duration::from_secs(10)).await.ok();
            println!(
                "relay stopped: {} sent, {} compacted away, {} too large (moved to kafka_messages_dead), {} batches",
                stats.sent, stats.compacted, stats.too_large, stats.batches
            );
        }
    }
    Ok(())
}

/// A variable of the environment, unless unset or blank.
fn plain_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

async fn status(url: &str) -> Result<()> {
    let status = Status::read(url).await?;
    println!("{status}");
    Ok(())
}
