//! `deimos dev`: a local Kafka endpoint (librdkafka's mock cluster) and the embedded schema registry, for
//! development on a machine without either, until SIGTERM / ctrl-c.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use deimos_config::Config;
use deimos_registry::EmbeddedRegistry;
use rdkafka::mocking::MockCluster;
use tokio::net::{TcpListener, TcpStream};

use crate::DevOptions;

/// Starts everything, prints the addresses and a configuration that points at them, and waits for a signal.
pub(crate) async fn run(config: &Config, options: DevOptions) -> Result<ExitCode> {
    if options.partitions < 1 {
        bail!("--partitions must be at least 1 (got {})", options.partitions);
    }
    let cluster = MockCluster::new(1).context("starting librdkafka's mock cluster")?;
    let mock = cluster.bootstrap_servers();
    // A fixed port forwards to the mock broker's own (it picks a free one). Clients bootstrap through it, then
    // talk to the broker at the address its metadata gives, which is on loopback too.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, options.port))
        .await
        .with_context(|| {
            format!(
                "Kafka's port {} on 127.0.0.1 is taken (another broker or `deimos dev`?): pass --port with another \
                 number, or --port 0 for any free port",
                options.port
            )
        })?;
    let brokers = listener.local_addr().context("reading the Kafka port")?.to_string();
    tokio::spawn(forward(listener, mock.clone()));

    let topics = topics(config, &options.topics);
    for topic in &topics {
        cluster
            .create_topic(topic, options.partitions, 1)
            .with_context(|| format!("creating topic {topic} on the mock cluster"))?;
    }

    let registry = EmbeddedRegistry::builder()
        .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, options.registry_port)))
        .start()
        .await
        .with_context(|| {
            format!(
                "starting the schema registry on 127.0.0.1:{}: pass --registry-port with another number, or \
                 --registry-port 0 for any free port",
                options.registry_port
            )
        })?;

    if let Some(url) = &options.outbox {
        let applied = deimos_outbox_diesel::migrate(url)
            .await
            .with_context(|| format!("migrating the outbox at {}", deimos_core::redact::url(url)))?;
        eprintln!(
            "deimos dev: outbox tables ready ({} migration{} applied)",
            applied.len(),
            if applied.len() == 1 { "" } else { "s" }
        );
    }

    eprintln!("deimos dev: Kafka (librdkafka's mock cluster) on {brokers}");
    if topics.is_empty() {
        eprintln!(
            "deimos dev: no topics created; others are created when first used, with 4 partitions (the mock \
             cluster's own default): name them with --topic to give them --partitions"
        );
    } else {
        eprintln!(
            "deimos dev: topics with {} partition{}: {}; others are created when first used, with 4 partitions",
            options.partitions,
            if options.partitions == 1 { "" } else { "s" },
            topics.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    eprintln!("deimos dev: schema registry on {}", registry.url());
    eprintln!("deimos dev: nothing is kept: everything is gone when this stops (ctrl-c)");
    eprintln!("deimos dev: a configuration for it (or set DEIMOS_KAFKA__BROKERS and DEIMOS_SCHEMA__REGISTRY_URL):");
    print!(
        "{}",
        configuration(config, &brokers, registry.url(), options.outbox.as_deref())
    );
    use std::io::Write as _;
    let _ = std::io::stdout().flush();

    deimos_core::shutdown::signal().await;
    eprintln!("deimos dev: stopping");
    registry.shutdown().await;
    drop(cluster);
    Ok(ExitCode::SUCCESS)
}

/// The topics of the configuration (producers' with the prefix, consumers' and their dead-letter topics) and
/// those named on the command line.
fn topics(config: &Config, named: &[String]) -> BTreeSet<String> {
    let prefix = config.producers.topic_prefix.as_deref().unwrap_or("");
    let mut topics: BTreeSet<String> = named.iter().cloned().collect();
    for producer in &config.producer_list {
        if let Some(topic) = &producer.topic {
            topics.insert(format!("{prefix}{topic}"));
        }
    }
    for consumer in &config.consumer_list {
        topics.extend(consumer.topic.iter().cloned());
        topics.extend(consumer.dead_letter_topic.iter().cloned());
    }
    topics
}

/// The TOML a service needs to use this endpoint and registry.
fn configuration(config: &Config, brokers: &str, registry: &str, outbox: Option<&str>) -> String {
    let schemas = config
        .schema
        .path
        .as_deref()
        .map_or_else(|| "schemas".to_owned(), |p| p.display().to_string());
    let mut toml = format!(
        "[kafka]\nbrokers = {}\n\n[schema]\nregistry_url = {}\npath = {}\n",
        quoted(brokers),
        quoted(registry),
        quoted(&schemas)
    );
    if let Some(url) = outbox {
        toml.push_str(&format!("\n[outbox]\ndatabase_url = {}\n", quoted(url)));
    }
    toml
}

/// A TOML basic string.
fn quoted(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// Accepts connections on `listener` and copies bytes both ways between each and the mock broker.
async fn forward(listener: TcpListener, broker: String) {
    loop {
        let mut client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(e) => {
                // Out of file descriptors, say: wait instead of trying again at once, which would spin.
                eprintln!("deimos dev: accepting a connection failed: {e}; trying again in 100 ms");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let broker = broker.clone();
        tokio::spawn(async move {
            match TcpStream::connect(&broker).await {
                Ok(mut upstream) => {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
                Err(e) => eprintln!("deimos dev: could not reach the mock broker at {broker}: {e}"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]

    use super::*;

    #[test]
    fn the_configuration_points_at_the_endpoints() {
        let toml = configuration(
            &Config::default(),
            "127.0.0.1:9092",
            "http://127.0.0.1:8081",
            Some("sqlite://dev.db"),
        );
        let parsed = Config::from_toml_str(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert_eq!(parsed.kafka.brokers.as_deref(), Some("127.0.0.1:9092"));
        assert_eq!(parsed.schema.registry_url.as_deref(), Some("http://127.0.0.1:8081"));
        assert_eq!(parsed.outbox.database_url.as_deref(), Some("sqlite://dev.db"));
    }
}
