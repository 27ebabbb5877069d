//! Bad input and faults that must neither stop a runner nor skip a message: header keys that are not UTF-8,
//! handlers that panic, a schema registry that is down, dead letters that cannot be sent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// One test writes a header through librdkafka's C API: the safe API only takes UTF-8 header keys.
#![allow(unsafe_code)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use deimos_consumer::{ErrorPolicy, ErrorStage, Handler, HandlerError, Message};
use deimos_registry::{EmbeddedRegistry, HttpRegistry, SchemaRegistry};
use rdkafka::message::{BorrowedHeaders, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use tokio::sync::mpsc;

/// Headers with one header whose key is not UTF-8, added through librdkafka's C API.
fn headers_with_raw_key(key: &[u8], value: &[u8]) -> OwnedHeaders {
    let headers = OwnedHeaders::new();
    let ptr = headers.as_borrowed() as *const BorrowedHeaders as *mut rdkafka::bindings::rd_kafka_headers_t;
    // SAFETY: `ptr` is the headers object `headers` owns, alive for this call; librdkafka copies the name and
    // the value (with their lengths) into it.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_header_add(
            ptr,
            key.as_ptr().cast(),
            isize::try_from(key.len()).unwrap(),
            value.as_ptr().cast(),
            isize::try_from(value.len()).unwrap(),
        )
    };
    assert_eq!(err, rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
    headers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_key_that_is_not_utf8_neither_stops_the_runner_nor_is_lost() {
    within(40, async {
        let kit = Kit::new();
        let topic = kit.topic("raw-header", 1);
        let value = kit.widget(&topic, 0).await;
        let record = FutureRecord::<[u8], [u8]>::to(&topic)
            .payload(&value)
            .headers(headers_with_raw_key(b"\xff\xfe", b"\x00\x01"));
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
