//! `deimos outbox migrate | status | relay`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use deimos_config::Config;
use deimos_outbox_diesel::{Relay, Status};

use crate::OutboxCommand;

pub(crate) async fn run(config: &Config, command: OutboxCommand) -> Result<ExitCode> {
    let url = config.database_url()?;
    match command {
        OutboxCommand::Migrate => {
            let applied = deimos_outbox_diesel::migrate(url).await?;
            if applied.is_empty() {
                println!("outbox tables are up to date");
            }
            for version in applied {
                println!("applied migration {version}");
            }
        }
        OutboxCommand::Status => {
            let mut status = Status::read(url).await?;
            // Rows for partitions their topic lacks are shown when Kafka can be asked.
            let unchecked = match config.kafka_backend() {
                Ok(backend) => status.check_partitions(&backend).await,
                Err(_) => Vec::new(),
            };
            println!("{status}");
            for (topic, why) in unchecked {
                eprintln!("partitions of {topic} not checked against Kafka: {why}");
            }
        }
        OutboxCommand::Relay => {
            let mut kafka = config.kafka_backend_builder()?;
            // The relay hands over whole batches, so waiting for more messages only adds latency.
            if !config.producer_settings().contains_key("linger.ms") {
                kafka = kafka.kafka_setting("linger.ms", "1");
            }
            let backend = kafka.build()?;
            let stats = Relay::new(url, backend.clone(), config.relay_config())?.run().await?;
            backend.flush(Duration::from_secs(10)).await.ok();
            println!(
                "relay stopped: {} sent, {} compacted away, {} too large (moved to kafka_messages_dead), {} batches",
                stats.sent, stats.compacted, stats.too_large, stats.batches
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
