//! Rows for a partition the topic does not have (a writer that declared more partitions than the topic has):
//! refused at start-up when the writer can ask Kafka, and otherwise said once by the relay, counted in a metric
//! and shown by `status`, while the other partitions' rows are sent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Kind, Kit, PARTITIONS, SCHEMAS, TestDb, fast_config, spawn_relay};
use deimos_avro::SchemaStore;
use deimos_keys::KeyConfig;
use deimos_outbox_diesel::{Outbox, Relay, Status};
use deimos_producer::{Producer, ProducerSetup, PublishOptions};
use deimos_registry::SchemaRegistry;

/// Everything logged, as text.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_for_a_partition_the_topic_lacks_are_said_once_and_the_rest_is_sent() {
    let log = Log::default();
    let writer = log.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .unwrap();
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let db = TestDb::new(Kind::Sqlite).await;
    let kit = Kit::new("outbox.fewer").await;
    // The writer believes the topic has twice the partitions it has.
    let declared = PARTITIONS * 2;
    let outbox = Outbox::builder().partitions(&kit.topic, declared).build();
    let setup = ProducerSetup::builder(
        SchemaStore::new(SCHEMAS),
        kit.registry.clone() as Arc<dyn SchemaRegistry>,
        outbox.clone(),
    )
    .build();
    let producer = Producer::builder("WidgetProducer")
        .topic(&kit.topic)
        .schema("com.acme.Widget")
        .key_config(KeyConfig::field("id"))
        .build(&setup)
        .await
        .unwrap();
    let mut conn = db.conn().await;
    conn.begin().await.unwrap();
    let payloads: Vec<_> = (0..60).map(|key| common::widget(key, 1, true)).collect();
    outbox
        .publish(&producer, &mut conn, payloads, &PublishOptions::new())
        .await
        .unwrap();
    conn.commit().await.unwrap();

    let (stop, relay) = spawn_relay(Relay::new(&db.url, kit.backend(), fast_config().build()).unwrap());
    // The rows of the partitions the topic has are sent; the others stay.
    let started = Instant::now();
    let mut status = loop {
        let status = Status::read(&db.url).await.unwrap();
        if status.backlog.iter().all(|b| b.partition >= PARTITIONS) || started.elapsed() > Duration::from_secs(30) {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.backlog.iter().all(|b| b.partition >= PARTITIONS), "{status}");
    let stuck: Vec<i32> = status.backlog.iter().map(|b| b.partition).collect();
    assert!(
        !stuck.is_empty(),
        "some keys should fall on partitions {PARTITIONS}..{declared}"
    );
    // Several backoff periods (at most 1 s each) pass: the relay says it once per partition, not each time.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.send(()).unwrap();
    let stats = relay.await.unwrap();
    assert_eq!(stats.sent as i64 + status.pending(), 60);

    let text = log.text();
    for p in &stuck {
        let said = text
            .lines()
            .filter(|l| l.contains(&format!("outbox rows for partition {p} (")))
            .count();
        assert_eq!(said, 1, "partition {p} said {said} times:\n{text}");
    }
    assert!(
        text.contains(&format!("topic outbox.fewer has {PARTITIONS} partitions")),
        "{text}"
    );
    assert!(!text.contains("sending them again after backoff"), "{text}");

    let gauges: Vec<String> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, _, _, _)| key.key().name() == "db_producer.unknown_partition")
        .filter_map(|(key, _, _, value)| match value {
            metrics_util::debugging::DebugValue::Gauge(g) if g.into_inner() == 1.0 => key
                .key()
                .labels()
                .find(|l| l.key() == "partition")
                .map(|l| l.value().to_string()),
            _ => None,
        })
        .collect();
    let mut expected: Vec<String> = stuck.iter().map(ToString::to_string).collect();
    let mut gauges = gauges;
    gauges.sort();
    expected.sort();
    assert_eq!(gauges, expected);

    // `status`, asked to check against Kafka, names them.
    assert_eq!(status.check_partitions(&kit.backend()).await, Vec::new());
    let shown = status.to_string();
    assert!(
        shown.contains(&format!(
            "outbox.fewer has {PARTITIONS} partitions: its {} row",
            status.backlog[0].count
        )) && shown.contains("can never be sent"),
        "{shown}"
    );
    assert_eq!(status.unknown_partitions().count(), stuck.len());

    // A writer that can ask Kafka refuses the declaration at start-up.
    let checked = Outbox::builder()
        .partitions(&kit.topic, declared)
        .kafka(kit.backend())
        .build();
    let err = checked.fetch_partition_counts(&[&kit.topic]).await.unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "the outbox declares {declared} partitions for `outbox.fewer`, but the topic has {PARTITIONS}"
        )),
        "{err}"
    );
    db.drop_db().await;
}
