//! Error policy: swallow, fatal retries with backoff, max attempts and the dead-letter topic, undecodable
//! messages, the fatal_error predicates.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use deimos_avro::wire;
use deimos_consumer::{
    Batch, BatchHandler, ErrorContext, ErrorPolicy, ErrorStage, Handler, HandlerError, KeyConfig, Message,
    MessageDecodeError,
};
use rdkafka::Message as _;
use tokio::sync::mpsc;

/// Fails for the listed ids, `times` times each (u32::MAX = always); reports every attempt as
/// (id, retry_count, ok).
struct Flaky {
    fail: Mutex<HashMap<i64, u32>>,
    fatal_ids: Vec<i64>,
    tx: mpsc::UnboundedSender<(i64, u32, bool)>,
}

fn flaky(fail: &[(i64, u32)]) -> (Flaky, mpsc::UnboundedReceiver<(i64, u32, bool)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let flaky = Flaky {
        fail: Mutex::new(fail.iter().copied().collect()),
        fatal_ids: Vec::new(),
        tx,
    };
    (flaky, rx)
}

#[derive(Debug, thiserror::Error)]
#[error("boom on widget {0}")]
struct Boom(i64);

#[async_trait]
impl Handler for Flaky {
    type Payload = Widget;

    async fn consume(&self, message: Message<Widget>) -> Result<(), HandlerError> {
        let id = message.payload.as_ref().map_or(-1, |w| w.id);
        let fail = {
            let mut f = self.fail.lock().unwrap();
            match f.get_mut(&id) {
                Some(n) if *n > 0 => {
                    *n = n.saturating_sub(1);
                    true
                }
                _ => false,
            }
        };
        let _ = self.tx.send((id, message.metadata.retry_count, !fail));
        if fail { Err(Box::new(Boom(id))) } else { Ok(()) }
    }

    fn fatal_error(&self, error: &HandlerError, _context: &ErrorContext) -> bool {
        error
            .downcast_ref::<Boom>()
            .is_some_and(|b| self.fatal_ids.contains(&b.0))
    }
}

async fn send_widgets(kit: &Kit, topic: &str, ids: std::ops::Range<i64>) {
    for id in ids {
        let v = kit.widget(topic, id).await;
        let key = format!("k{id}");
        kit.send_with_headers(
            topic,
            None,
            Some(key.as_bytes()),
            Some(&v),
            &[("origin", Some(b"test"))],
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swallow_skips_the_failing_message_and_moves_on() {
    within(40, async {
        let kit = Kit::new();
        let topic = kit.topic("swallow", 1);
        let (handler, mut rx) = flaky(&[(1, u32::MAX)]);
        let listener = kit.listener(&topic, "g").handler(handler).build().unwrap();
        let running = Running::start(kit.runner().listener(listener).build().unwrap());
        send_widgets(&kit, &topic, 0..3).await;
        let got = take(&mut rx, 3, 30).await;
        assert_eq!(got, [(0, 0, true), (1, 0, false), (2, 0, true)]);
        nothing_more(&mut rx, 500).await;
        running.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_retries_the_same_message_with_increasing_retry_count() {
    within(40, async {
        let kit = Kit::new();
        let topic = kit.topic("fatal", 1);
        let (handler, mut rx) = flaky(&[(1, 2)]);
        let listener = kit
            .listener(&topic, "g")
            .error_policy(ErrorPolicy::Fatal)
            .handler(handler)
            .build()
            .unwrap();
        let running = Running::start(kit.runner().listener(listener).build().unwrap());
        send_widgets(&kit, &topic, 0..3).await;
        let got = take(&mut rx, 5, 30).await;
        assert_eq!(
            got,
            [(0, 0, true), (1, 0, false), (1, 1, false), (1, 2, true), (2, 0, true)]
        );
        running.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_attempts_sends_the_message_to_the_dead_letter_topic_with_headers() {
    within(50, async {
        let kit = Kit::new();
        let topic = kit.topic("dlq-source", 1);
        let dlq = kit.topic("dlq-target", 1);
        let (handler, mut rx) = flaky(&[(1, u32::MAX)]);
        let listener = kit
            .listener(&topic, "g-dlq")
            .error_policy(ErrorPolicy::Fatal)
            .max_attempts(3)
            .dead_letter_topic(&dlq)
            .handler(handler)
            .build()
            .unwrap();
        let running = Running::start(kit.runner().listener(listener).build().unwrap());
        send_widgets(&kit, &topic, 0..3).await;
        let got = take(&mut rx, 5, 30).await;
        assert_eq!(
            got,
            [(0, 0, true), (1, 0, false), (1, 1, false), (1, 2, false), (2, 0, true)]
        );

        let dead = kit.read_all(&dlq, 1).await;
        assert_eq!(dead.len(), 1);
        let m = &dead[0];
        assert_eq!(m.key(), Some(&b"k1"[..]), "the original key bytes");
        assert_eq!(
            m.payload(),
            Some(&kit.widget(&topic, 1).await[..]),
            "the original value bytes"
        );
        assert_eq!(header(m, "origin"), Some("test"), "original headers are kept");
        assert_eq!(header(m, deimos_consumer::HEADER_ORIGINAL_TOPIC), Some(topic.as_str()));
        assert_eq!(header(m, deimos_consumer::HEADER_ORIGINAL_PARTITION), Some("0"));
        assert_eq!(header(m, deimos_consumer::HEADER_ORIGINAL_OFFSET), Some("1"));
        assert!(
            header(m, deimos_consumer::HEADER_ORIGINAL_TIMESTAMP)
                .unwrap()
                .parse::<i64>()
                .unwrap()
                > 0
        );
        assert_eq!(header(m, deimos_consumer::HEADER_GROUP_ID), Some("g-dlq"));
        assert_eq!(header(m, deimos_consumer::HEADER_ERROR_TYPE), Some("handler"));
        assert_eq!(
            header(m, deimos_consumer::HEADER_ERROR_MESSAGE),
            Some("boom on widget 1")
        );
        assert_eq!(header(m, deimos_consumer::HEADER_ATTEMPTS), Some("3"));
        running.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_messages_are_swallowed_into_the_dead_letter_topic() {
    within(50, async {
        let kit = Kit::new();
        let topic = kit.topic("bad-swallow", 1);
        let dlq = kit.topic("bad-swallow-dlq", 1);
        let (handler, mut rx) = collect::<Widget>();
        let listener = kit
            .listener(&topic, "g")
            .dead_letter_topic(&dlq)
            .handler(handler)
            .build()
            .unwrap();
        let running = Running::start(kit.runner().listener(listener).build().unwrap());
        kit.send(&topic, None, None, Some(b"\x01not avro")).await;
        kit.send(&topic, None, None, Some(&wire::frame(9999, &[2, 4]))).await;
        let mut corrupt = kit.widget(&topic, 5).await;
        corrupt.truncate(9);
        kit.send(&topic, None, None, Some(&corrupt)).await;
        send_widgets(&kit, &topic, 3..4).await;
        let got = take(&mut rx, 1, 30).await;
        assert_eq!(
            got[0].payload.as_ref().map(|w| w.id),
            Some(3),
            "the partition is not stalled"
        );
        assert_eq!(got[0].metadata.offset, 3);

        let dead = kit.read_all(&dlq, 3).await;
        assert_eq!(dead.len(), 3);
        for (i, m) in dead.iter().enumerate() {
            assert_eq!(header(m, deimos_consumer::HEADER_ERROR_TYPE), Some("value_decode"));
            assert_eq!(
                header(m, deimos_consumer::HEADER_ORIGINAL_OFFSET),
                Some(i.to_string().as_str())
            );
            assert_eq!(header(m, deimos_consumer::HEADER_ATTEMPTS), Some("1"));
        }
        assert!(
            header(&dead[0], deimos_consumer::HEADER_ERROR_MESSAGE)
                .unwrap()
                .contains("first byte is 0x01")
        );
        assert!(
            header(&dead[1], deimos_consumer::HEADER_ERROR_MESSAGE)
                .unwrap()
                .contains("9999")
        );
        assert_eq!(dead[0].payload(), Some(&b"\x01not avro"[..]));
        running.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_messages_made_fatal_by_the_runner_predicate_are_retried_then_skipped() {
    within(40, async {
        let kit = Kit::new();
        let topic = kit.topic("bad-fatal", 1);
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let (handler, mut rx) = collect::<Widget>();
        // The listener swallows; the runner's predicate makes decoding errors fatal.
        let listener = kit
            .listener(&topic, "g")
            .max_attempts(3)
            .handler(handler)
            .build()
            .unwrap();
        let runner = kit
            .runner()
            .fatal_error(move |error, context| {
                seen2
                    .lock()
                    .unwrap()
                    .push((context.stage, context.retry_count, context.first_offset));
                error.downcast_ref::<MessageDecodeError>().is_some()
            })
            .listener(listener)
            .build()
            .unwrap();
        let running = Running::start(runner);
        kit.send(&topic, None, None, Some(b"\x07garbage")).await;
        send_widgets(&kit, &topic, 1..2).await;
        let got = take(&mut rx, 1, 30).await;
        assert_eq!(got[0].payload.as_ref().map(|w| w.id), Some(1));
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            [
                (ErrorStage::ValueDecode, 0, 0),
                (ErrorStage::ValueDecode, 1, 0),
                (ErrorStage::ValueDecode, 2, 0)
            ]
        );
        running.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_decode_errors_follow_the_policy() {
    within(50, async {
        let kit = Kit::new();
        let topic = kit.topic("bad-key", 1);
        let dlq = kit.topic("bad-key-dlq", 1);
        let (handler, mut rx) = collect::<Widget>();
        let listener = kit
            .listener(&topic, "g")
            .key_config(KeyConfig::field("message_id"))
            .dead_letter_topic(&dlq)
            .handler(handler)
            .build()
            .unwrap();
        let running = Running::start(kit.runner().listener(listener).build().unwrap());
        let v = kit.widget(&topic, 0).await;
        kit.send(&topic, None, Some(b"plain-not-avro"), Some(&v)).await;
        let key = kit
            .key(
                &topic,
                WIDGET,
                KeyConfig::field("message_id"),
                &serde_json::json!("m-1"),
            )
            .await;
        let v = kit.widget(&topic, 1).await;
        kit.send(&topic, None, key.as_deref(), Some(&v)).await;
        let got = take(&mut rx, 1, 30).await;
        assert_eq!(got[0].payload.as_ref().map(|w| w.id), Some(1));
        let dead = kit.read_all(&dlq, 1).await;
        assert_eq!(header(&dead[0], deimos_consumer::HEADER_ERROR_TYPE), Some("key_decode"));
        assert_eq!(dead[0].key(), Some(&b"plain-not-avro"[..]));
        running.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_and_runner_predicates_make_errors_fatal() {
    within(40, async {
        let kit = Kit::new();
        let topic = kit.topic("predicates", 1);
        // The handler says its error on id 1 is fatal although the policy swallows.
        let (mut handler, mut rx) = flaky(&[(1, 1), (2, 1)]);
        handler.fatal_ids = vec![1];
        let listener = kit.listener(&topic, "g").handler(handler).build().unwrap();
        let running = Running::start(kit.runner().listener(listener).build().unwrap());
        send_widgets(&kit, &topic, 0..4).await;
        let got = take(&mut rx, 5, 30).await;
        assert_eq!(
            got,
            [(0, 0, true), (1, 0, false), (1, 1, true), (2, 0, false), (3, 0, true)]
        );
        running.stop().await;

        // reraise_errors makes every error fatal.
        let topic = kit.topic("reraise", 1);
        let (handler, mut rx) = flaky(&[(0, 1)]);
        let listener = kit.listener(&topic, "g2").handler(handler).build().unwrap();
        let running = Running::start(kit.runner().reraise_errors(true).listener(listener).build().unwrap());
        send_widgets(&kit, &topic, 0..1).await;
        assert_eq!(take(&mut rx, 2, 30).await, [(0, 0, false), (0, 1, true)]);
        running.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_interrupts_endless_retries_and_the_message_comes_back() {
    within(50, async {
        let kit = Kit::new();
        let topic = kit.topic("endless", 1);
        let (handler, mut rx) = flaky(&[(0, u32::MAX)]);
        let listener = kit
            .listener(&topic, "g-endless")
            .error_policy(ErrorPolicy::Fatal)
            .backoff(Duration::from_secs(30), Duration::from_secs(60))
            .handler(handler)
            .build()
            .unwrap();
        let running = Running::start(kit.runner().listener(listener).build().unwrap());
        send_widgets(&kit, &topic, 0..1).await;
        assert_eq!(take(&mut rx, 1, 30).await, [(0, 0, false)]);
        let started = std::time::Instant::now();
        running.stop().await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "shutdown does not wait for the backoff"
        );

        let (handler, mut rx) = collect::<Widget>();
        let listener = kit.listener(&topic, "g-endless").handler(handler).build().unwrap();
        let running = Running::start(kit.runner().listener(listener).build().unwrap());
        let got = take(&mut rx, 1, 30).await;
        assert_eq!(got[0].metadata.offset, 0, "a message never handled is not committed");
        running.stop().await;
    })
    .await;
}

/// Fails every batch holding widget 1.
struct FailingBatches(mpsc::UnboundedSender<(Vec<i64>, u32)>);

#[async_trait]
impl BatchHandler for FailingBatches {
    type Payload = Widget;

    async fn consume_batch(&self, batch: Batch<Widget>) -> Result<(), HandlerError> {
        let ids: Vec<i64> = batch.payloads.iter().map(|p| p.as_ref().map_or(-1, |w| w.id)).collect();
        let _ = self.0.send((ids.clone(), batch.metadata.retry_count));
        if ids.contains(&1) {
            Err("batch with widget 1".into())
        } else {
            Ok(())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_batches_are_retried_then_dead_lettered_whole() {
    within(50, async {
        let kit = Kit::new();
        let topic = kit.topic("batch-dlq", 1);
        let dlq = kit.topic("batch-dlq-target", 1);
        send_widgets(&kit, &topic, 0..4).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let listener = kit
            .listener(&topic, "g")
            .max_batch_size(2)
            .error_policy(ErrorPolicy::Fatal)
            .max_attempts(2)
            .dead_letter_topic(&dlq)
            .batch_handler(FailingBatches(tx))
            .build()
            .unwrap();
        let running = Running::start(kit.runner().listener(listener).build().unwrap());
        let mut got = take(&mut rx, 3, 30).await;
        assert_eq!(
            got[..2],
            [(vec![0, 1], 0), (vec![0, 1], 1)],
            "the failing batch, tried twice"
        );
        // The partition is paused while its batch waits to be retried; after that, 2 and 3 form one batch, or
        // two when 3 is fetched again only after max_wait (the mock cluster answers a fetch late).
        if got[2].0 == [2] {
            got.extend(take(&mut rx, 1, 30).await);
        }
        let rest: Vec<i64> = got[2..].iter().flat_map(|(ids, _)| ids.clone()).collect();
        assert_eq!(rest, [2, 3], "then the next messages, once each, in order");
        assert!(got[2..].iter().all(|(_, retry)| *retry == 0));
        let dead = kit.read_all(&dlq, 2).await;
        let offsets: Vec<_> = dead
            .iter()
            .map(|m| header(m, deimos_consumer::HEADER_ORIGINAL_OFFSET).unwrap())
            .collect();
        assert_eq!(offsets, ["0", "1"]);
        assert_eq!(
            header(&dead[1], deimos_consumer::HEADER_ERROR_MESSAGE),
            Some("batch with widget 1")
        );
        running.stop().await;
    })
    .await;
}
