//! Bad input and faults that must neither stop a runner nor skip a message: header keys that are not UTF-8,
//! handlers that panic, a schema registry that is down, dead letters that cannot be sent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use deimos_consumer::{ErrorPolicy, ErrorStage, Handler, HandlerError, Message};
use deimos_registry::{EmbeddedRegistry, HttpRegistry, SchemaRegistry};
use rdkafka::producer::FutureRecord;
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_key_that_is_not_utf8_neither_stops_the_runner_nor_is_lost() {
    within(40, async {
        let kit = Kit::new();
        let topic = kit.topic("raw-header", 1);
        let value = kit.widget(&topic, 0).await;
        let record = FutureRecord::<[u8], [u8]>::to(&topic)
            .payload(&value)
            // A key that is not UTF-8: rdkafka's safe API only writes UTF-8 keys; this goes through librdkafka's
            // C API.
            .headers(deimos_consumer::write_headers(
                [(&b"\xff\xfe"[..], Some(&b"\x00\x01"[..]))].into_iter(),
            ));
        kit.producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        for id in 1..=10 {
            let v = kit.widget(&topic, id).await;
            kit.send_with_headers(&topic, None, None, Some(&v), &[("origin", Some(b"test"))])
                .await;
        }
        let (handler, mut rx) = collect::<Widget>();
        let listener = kit.listener(&topic, "g-raw").handler(handler).build().unwrap();
        let running = Running::start(kit.runner().listener(listener).build().unwrap());
        let got = take(&mut rx, 11, 30).await;
        let ids: Vec<i64> = got.iter().map(|m| m.payload.as_ref().unwrap().id).collect();
        assert_eq!(ids, (0..=10).collect::<Vec<_>>());
        let first: Vec<(&[u8], Option<&[u8]>)> = got[0].metadata.headers.iter_raw().collect();
        assert_eq!(
            first,
            [(&b"\xff\xfe"[..], Some(&b"\x00\x01"[..]))],
            "the header is kept as bytes"
        );
        assert_eq!(got[1].metadata.headers.get_str("origin"), Some("test"));
        assert!(!running.task.is_finished(), "the runner keeps running");
        running.stop().await;
    })
    .await;
}

/// Panics on the listed ids; reports every id it handled.
struct Panicky(Vec<i64>, mpsc::UnboundedSender<i64>);

#[async_trait]
impl Handler for Panicky {
    type Payload = Widget;

    async fn consume(&self, message: Message<Widget>) -> Result<(), HandlerError> {
        let id = message.payload.as_ref().map_or(-1, |w| w.id);
        if self.0.contains(&id) {
            panic!("widget {id} is cursed");
        }
        let _ = self.1.send(id);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_goes_through_the_error_policy() {
    within(50, async {
        let kit = Kit::new();
        let topic = kit.topic("panics", 1);
        let dlq = kit.topic("panics-dlq", 1);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let listener = kit
            .listener(&topic, "g-panic")
            .error_policy(ErrorPolicy::Fatal)
            .max_attempts(2)
            .dead_letter_topic(&dlq)
            .handler(Panicky(vec![3], tx))
            .build()
            .unwrap();
        let running = Running::start(kit.runner().listener(listener).build().unwrap());
        for id in 0..6 {
            let v = kit.widget(&topic, id).await;
            kit.send(&topic, None, None, Some(&v)).await;
        }
        let ids = take(&mut rx, 5, 30).await;
        assert_eq!(
            ids,
            [0, 1, 2, 4, 5],
            "the panicking message is given up, the others handled"
        );
        let dead = kit.read_all(&dlq, 1).await;
        assert_eq!(dead.len(), 1);
        assert_eq!(
            header(&dead[0], deimos_consumer::HEADER_ERROR_TYPE),
            Some(ErrorStage::Handler.as_str())
        );
        let message = header(&dead[0], deimos_consumer::HEADER_ERROR_MESSAGE).unwrap();
        assert!(
            message.contains("panicked") && message.contains("widget 3 is cursed"),
            "{message}"
        );
        assert_eq!(header(&dead[0], deimos_consumer::HEADER_ATTEMPTS), Some("2"));
        assert!(!running.task.is_finished(), "the runner keeps running");
        running.stop().await;
    })
    .await;
}

/// Reports every widget id it handled.
struct Ids(mpsc::UnboundedSender<i64>);

#[async_trait]
impl Handler for Ids {
    type Payload = Widget;

    async fn consume(&self, message: Message<Widget>) -> Result<(), HandlerError> {
        let _ = self.0.send(message.payload.as_ref().map_or(-1, |w| w.id));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_delays_messages_but_skips_none() {
    within(120, async {
        const TOTAL: i64 = 1000;
        let kit = Kit::new();
        let topic = kit.topic("registry-outage", 3);
        // The writer schema lives in the kit's registry, served over HTTP by an embedded registry.
        let server = EmbeddedRegistry::builder()
            .registry((*kit.registry).clone())
            .start()
            .await
            .unwrap();
        let addr = server.addr();
        let client: Arc<dyn SchemaRegistry> = Arc::new(
            HttpRegistry::builder(server.url())
                .timeout(Duration::from_millis(500))
                .max_retries(0)
                .build()
                .unwrap(),
        );
        for id in 0..TOTAL {
            let v = kit.widget(&topic, id).await;
            kit.send(&topic, Some((id % 3) as i32), None, Some(&v)).await;
        }
        // Down before the runner starts: its cache is cold, so every writer schema fetch fails for 10 s.
        server.shutdown().await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let listener = kit.listener(&topic, "g-outage").handler(Ids(tx)).build().unwrap();
        let running = Running::start(kit.runner().registry(client).listener(listener).build().unwrap());
        tokio::time::sleep(Duration::from_secs(10)).await;
        let server = EmbeddedRegistry::builder()
            .registry((*kit.registry).clone())
            .bind(addr)
            .start()
            .await
            .unwrap();
        let got: BTreeSet<i64> = take(&mut rx, TOTAL as usize, 60).await.into_iter().collect();
        assert_eq!(
            got,
            (0..TOTAL).collect::<BTreeSet<_>>(),
            "every message handled once the registry is back"
        );
        nothing_more(&mut rx, 500).await;
        running.stop().await;
        server.shutdown().await;
    })
    .await;
}

/// Always fails, with a long error message; reports every id it saw.
struct AlwaysFails(mpsc::UnboundedSender<(i64, i32)>);

#[async_trait]
impl Handler for AlwaysFails {
    type Payload = Widget;

    async fn consume(&self, message: Message<Widget>) -> Result<(), HandlerError> {
        let id = message.payload.as_ref().map_or(-1, |w| w.id);
        let _ = self.0.send((id, message.metadata.partition));
        if id % 2 == 0 {
            Err(format!("widget {id} rejected: {}", "x".repeat(10_000)).into())
        } else {
            Ok(())
        }
    }
}

fn big_widget(id: i64) -> serde_json::Value {
    let mut w = widget_json(id);
    w["description"] = serde_json::Value::String("d".repeat(4_000));
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_too_large_for_its_topic_goes_without_its_value_and_says_so() {
    within(50, async {
        let kit = Kit::new();
        let topic = kit.topic("big-source", 1);
        let dlq = kit.topic("big-dlq", 1);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let listener = kit
            .listener(&topic, "g-big")
            .dead_letter_topic(&dlq)
            // The dead-letter producer takes the listener's settings: its messages may be 6,000 bytes at most.
            .kafka_setting("message.max.bytes", "6000")
            .handler(AlwaysFails(tx))
            .build()
            .unwrap();
        let running = Running::start(kit.runner().listener(listener).build().unwrap());
        for id in [0, 1] {
            let v = kit.value(&topic, WIDGET, &big_widget(id)).await;
            kit.send(&topic, None, Some(b"k"), Some(&v)).await;
        }
        assert_eq!(
            take(&mut rx, 2, 30).await,
            [(0, 0), (1, 0)],
            "the runner goes on after the dead letter"
        );
        let dead = kit.read_all(&dlq, 1).await;
        assert_eq!(dead.len(), 1);
        let m = &dead[0];
        assert_eq!(rdkafka::Message::payload(m), None, "sent without its value");
        assert_eq!(rdkafka::Message::key(m), Some(&b"k"[..]), "with its key");
        let dropped = header(m, deimos_consumer::HEADER_VALUE_DROPPED).unwrap();
        assert!(dropped.contains("too large"), "{dropped}");
        let message = header(m, deimos_consumer::HEADER_ERROR_MESSAGE).unwrap();
        assert!(
            message.len() <= deimos_consumer::MAX_ERROR_MESSAGE_BYTES,
            "{}",
            message.len()
        );
        assert!(message.starts_with("widget 0 rejected") && message.ends_with("(truncated)"));
        running.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsendable_dead_letter_stops_its_partition_and_no_other() {
    within(60, async {
        let kit = Kit::new();
        let topic = kit.topic("stuck-source", 2);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let listener = kit
            .listener(&topic, "g-stuck")
            // A dead-letter topic the producer may not write to (see the injected errors below).
            .dead_letter_topic("forbidden-dlq")
            .handler(AlwaysFails(tx))
            .build()
            .unwrap();
        // Partition 0: 0 fails (cannot be dead-lettered), 1 and 3 wait behind it. Partition 1: odd ids pass.
        for (id, partition) in [(0, 0), (1, 0), (3, 0), (5, 1), (7, 1)] {
            let v = kit.widget(&topic, id).await;
            kit.send(&topic, Some(partition), None, Some(&v)).await;
        }
        kit.mock.request_errors(
            rdkafka::types::RDKafkaApiKey::Produce,
            &[rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 50],
        );
        let running = Running::start(kit.runner().listener(listener).build().unwrap());
        let mut seen = take(&mut rx, 3, 30).await;
        seen.sort();
        assert_eq!(seen, [(0, 0), (5, 1), (7, 1)], "partition 1 goes on");
        nothing_more(&mut rx, 3000).await;
        assert!(!running.task.is_finished(), "the runner keeps running");
        running.stop().await;
    })
    .await;
}
