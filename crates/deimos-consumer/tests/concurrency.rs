//! Handling at the same time, with the order each `ProcessingOrder` promises; offsets that never pass an
//! unfinished message; backpressure; control (pause, resume, seek) and health.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use deimos_consumer::{Handler, HandlerError, KeyConfig, Message, ProcessingOrder, SeekTo};
use serde_json::{Value as Json, json};
use tokio::sync::mpsc;

/// What a handler saw of one message.
#[derive(Debug, Clone)]
struct Seen {
    runner: usize,
    key: Option<String>,
    seq: i64,
    partition: i32,
    offset: i64,
}

/// Records each message after a random pause (so completions come in random order), and the most messages it
/// had in hand at once.
struct Record {
    runner: usize,
    max_pause_ms: u64,
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    tx: mpsc::UnboundedSender<Seen>,
}

impl Record {
    fn new(runner: usize, max_pause_ms: u64, tx: &mpsc::UnboundedSender<Seen>) -> (Record, Arc<AtomicUsize>) {
        let peak = Arc::new(AtomicUsize::new(0));
        (
            Record {
                runner,
                max_pause_ms,
                now: Arc::new(AtomicUsize::new(0)),
                peak: Arc::clone(&peak),
                tx: tx.clone(),
            },
            peak,
        )
    }
}

#[async_trait]
impl Handler for Record {
    type Payload = Json;

    async fn consume(&self, message: Message<Json>) -> Result<(), HandlerError> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let pause = fastrand_ms(self.max_pause_ms);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        let payload = message.payload.unwrap_or(Json::Null);
        let _ = self.tx.send(Seen {
            runner: self.runner,
            key: payload["name"].as_str().map(str::to_string),
            seq: payload["id"].as_i64().unwrap_or(-1),
            partition: message.metadata.partition,
            offset: message.metadata.offset,
        });
        Ok(())
    }
}

/// A pseudo-random pause of 0..=max ms, without another dependency.
fn fastrand_ms(max: u64) -> u64 {
    use std::hash::{BuildHasher, RandomState};
    if max == 0 {
        return 0;
    }
    RandomState::new().hash_one(std::time::Instant::now()) % (max + 1)
}

/// A widget whose `name` is its key (`k<key>`) and whose `id` is its sequence number within the key.
fn keyed_widget(key: i64, seq: i64) -> Json {
    let mut w = widget_json(seq);
    w["name"] = json!(format!("k{key}"));
    w
}

/// Sends `per_key` widgets for each of `keys` keys, interleaved, keyed by `name` (so one partition holds many
/// keys); returns how many were sent.
async fn send_keyed(kit: &Kit, topic: &str, keys: i64, per_key: i64, partitions: i32) -> usize {
    let mut sent = 0;
    for seq in 0..per_key {
        for key in 0..keys {
            let value = kit.value(topic, WIDGET, &keyed_widget(key, seq)).await;
            let k = format!("k{key}");
            kit.send(
                topic,
                Some(i32::try_from(key).unwrap() % partitions),
                Some(k.as_bytes()),
                Some(&value),
            )
            .await;
            sent += 1;
        }
    }
    sent
}

/// Per key, the sequence numbers in the order they were handled.
fn by_key(seen: &[Seen]) -> BTreeMap<String, Vec<i64>> {
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for s in seen {
        out.entry(s.key.clone().unwrap_or_default()).or_default().push(s.seq);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_order_keeps_each_key_in_order_and_runs_keys_at_the_same_time() {
    within(60, async {
        let kit = Kit::new();
        let topic = kit.topic("by-key", 2);
        let sent = send_keyed(&kit, &topic, 40, 10, 2).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (handler, peak) = Record::new(0, 3, &tx);
        let runner = Running::start(
            kit.runner()
                .listener(
                    kit.listener(&topic, "g-key")
                        .schema(WIDGET)
                        .key_config(KeyConfig::Plain)
                        .ordering(ProcessingOrder::Key)
                        .max_in_flight(32)
                        .handler(handler)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        );
        let seen = take(&mut rx, sent, 40).await;
        nothing_more(&mut rx, 500).await;
        runner.stop().await;
        for (key, seqs) in by_key(&seen) {
            assert_eq!(
                seqs,
                (0..10).collect::<Vec<_>>(),
                "key {key} handled in order, each once"
            );
        }
        let peak = peak.load(Ordering::SeqCst);
        assert!(
            peak > 2,
            "different keys of one partition were handled at the same time (peak {peak})"
        );
        assert!(peak <= 32, "never more than max_in_flight at once (peak {peak})");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_order_runs_partitions_at_the_same_time_each_in_order() {
    within(60, async {
        let kit = Kit::new();
        let topic = kit.topic("by-partition", 4);
        let sent = send_keyed(&kit, &topic, 8, 15, 4).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (handler, peak) = Record::new(0, 3, &tx);
        let runner = Running::start(
            kit.runner()
                .listener(
                    kit.listener(&topic, "g-partition")
                        .key_config(KeyConfig::Plain)
                        .handler(handler)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        );
        let seen = take(&mut rx, sent, 40).await;
        runner.stop().await;
        let mut offsets: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for s in &seen {
            offsets.entry(s.partition).or_default().push(s.offset);
        }
        for (partition, handled) in offsets {
            let mut sorted = handled.clone();
            sorted.sort_unstable();
            assert_eq!(handled, sorted, "partition {partition} handled in offset order");
        }
        let peak = peak.load(Ordering::SeqCst);
        assert!(
            (2..=4).contains(&peak),
            "partitions at the same time, one message each (peak {peak})"
        );
    })
    .await;
}

/// Completions in random order (unordered), the runner dropped without a shutdown in the middle, then a new
/// runner in the same group: every message is handled, none skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_with_completions_out_of_order_skips_nothing() {
    within(90, async {
        let kit = Kit::new();
        let topic = kit.topic("crash", 2);
        let sent = send_keyed(&kit, &topic, 50, 40, 2).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let listener = |runner: usize| {
            let (handler, _) = Record::new(runner, 30, &tx);
            kit.listener(&topic, "g-crash")
                .key_config(KeyConfig::Plain)
                .ordering(ProcessingOrder::Unordered)
                .max_in_flight(16)
                .handler(handler)
                .build()
                .unwrap()
        };
        let first = Running::start(kit.runner().listener(listener(1)).build().unwrap());
        let mut seen = take(&mut rx, sent / 3, 40).await;
        // Let a commit or two happen with work in flight, then crash: the task is aborted, nothing committed at
        // shutdown, the consumer dropped.
        tokio::time::sleep(Duration::from_millis(300)).await;
        first.task.abort();
        let _ = first.task.await;
        while let Ok(s) = rx.try_recv() {
            seen.push(s);
        }
        let before = seen.len();
        let second = Running::start(kit.runner().listener(listener(2)).build().unwrap());
        let mut handled: BTreeSet<(i32, i64)> = seen.iter().map(|s| (s.partition, s.offset)).collect();
        while handled.len() < sent {
            let s = take(&mut rx, 1, 40).await.remove(0);
            handled.insert((s.partition, s.offset));
            seen.push(s);
        }
        second.stop().await;
        assert_eq!(handled.len(), sent, "every message handled");
        assert!(before < sent, "the crash came before the end");
        assert!(seen.iter().any(|s| s.runner == 2), "the second runner took over");
    })
    .await;
}

/// A second member joins while 200 messages are in flight: the first finishes them before giving the partitions
/// up, so nothing is handled twice, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_with_200_messages_in_flight_loses_none_and_repeats_none() {
    within(120, async {
        let kit = Kit::new();
        let topic = kit.topic("inflight", 4);
        let sent = send_keyed(&kit, &topic, 200, 20, 4).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let listener = |runner: usize| {
            // Slow enough that 200 are in flight at once, and that the second member joins long before the end.
            let (handler, peak) = Record::new(runner, 800, &tx);
            (
                kit.listener(&topic, "g-inflight")
                    .key_config(KeyConfig::Plain)
                    .ordering(ProcessingOrder::Key)
                    .max_in_flight(200)
                    .handler(handler)
                    .build()
                    .unwrap(),
                peak,
            )
        };
        let (a_listener, a_peak) = listener(1);
        let a = Running::start(kit.runner().listener(a_listener).build().unwrap());
        let mut seen = take(&mut rx, 100, 40).await;
        let (b_listener, _) = listener(2);
        let b = Running::start(kit.runner().listener(b_listener).build().unwrap());
        let mut handled: HashMap<(i32, i64), usize> = HashMap::new();
        for s in &seen {
            *handled.entry((s.partition, s.offset)).or_default() += 1;
        }
        while handled.len() < sent {
            let s = take(&mut rx, 1, 60).await.remove(0);
            *handled.entry((s.partition, s.offset)).or_default() += 1;
            seen.push(s);
        }
        nothing_more(&mut rx, 1500).await;
        b.stop().await;
        a.stop().await;
        assert!(
            a_peak.load(Ordering::SeqCst) >= 150,
            "the first member had about 200 in flight"
        );
        assert!(
            seen.iter().any(|s| s.runner == 2),
            "the second member took partitions over"
        );
        let twice: Vec<_> = handled.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "handled twice: {twice:?}");
        for (key, seqs) in by_key(&seen) {
            assert_eq!(
                seqs,
                (0..20).collect::<Vec<_>>(),
                "key {key} in order across the two members"
            );
        }
    })
    .await;
}

/// A handler slower than the messages come: the listener pauses its partitions instead of buffering without
/// bound, and keeps polling, so the group never sees it as gone even though the whole run takes longer than
/// `max.poll.interval.ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_pauses_the_partitions_and_keeps_its_group() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    within(90, async {
        let kit = Kit::new();
        let topic = kit.topic("backpressure", 1);
        let mut value_of = Vec::new();
        for i in 0..6_000 {
            value_of.push(kit.widget(&topic, i).await);
        }
        for v in &value_of {
            kit.send(&topic, Some(0), None, Some(v)).await;
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (handler, _) = Record::new(0, 0, &tx);
        let runner = kit
            .runner()
            .listener(
                kit.listener(&topic, "g-bp")
                    .max_in_flight(1)
                    .max_buffered_bytes(256 * 1024)
                    .kafka_setting("max.poll.interval.ms", "6000")
                    .handler(Slow(handler))
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let control = runner.control().listener(&topic).unwrap();
        let running = Running::start(runner);
        let mut max_buffered = 0;
        let mut was_paused = false;
        let mut assigned_once = false;
        let mut lost = false;
        let mut handled = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
        while tokio::time::Instant::now() < deadline {
            while rx.try_recv().is_ok() {
                handled += 1;
            }
            let health = control.health();
            max_buffered = max_buffered.max(health.buffered);
            was_paused |= health.paused.contains(&0);
            lost |= assigned_once && health.assigned.is_empty();
            assigned_once |= !health.assigned.is_empty();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            was_paused,
            "the partition was paused while the handler fell behind (buffered at most {max_buffered}, handled {handled})"
        );
        assert!(
            max_buffered <= 2_000 + 256,
            "the buffer stayed bounded ({max_buffered})"
        );
        assert!(control.health().is_live(), "still polling");
        assert!(
            assigned_once && !lost,
            "the partition stayed assigned past max.poll.interval.ms"
        );
        running.stop().await;
        while rx.try_recv().is_ok() {
            handled += 1;
        }
        assert!(handled > 500, "kept handling ({handled})");
    })
    .await;
}

/// [`Record`] with a pause of 1 ms per message.
struct Slow(Record);

#[async_trait]
impl Handler for Slow {
    type Payload = Json;

    async fn consume(&self, message: Message<Json>) -> Result<(), HandlerError> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.0.consume(message).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_is_paused_resumed_and_sought_from_its_control_and_reports_its_health() {
    within(90, async {
        let kit = Kit::new();
        let topic = kit.topic("control", 1);
        for i in 0..20 {
            let v = kit.widget(&topic, i).await;
            kit.send(&topic, Some(0), None, Some(&v)).await;
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (handler, _) = Record::new(0, 0, &tx);
        let runner = kit
            .runner()
            .listener(kit.listener(&topic, "g-control").handler(handler).build().unwrap())
            .build()
            .unwrap();
        let control = runner.control();
        assert!(!control.health().is_live(), "not started yet");
        let listener = control.listener(&topic).unwrap();
        let running = Running::start(runner);
        let first = take(&mut rx, 20, 30).await;
        assert_eq!(
            first.iter().map(|s| s.offset).collect::<Vec<_>>(),
            (0..20).collect::<Vec<_>>()
        );
        // The snapshot is refreshed four times a second.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let health = control.health();
        assert!(health.is_live() && health.is_ready(), "{health:?}");
        assert_eq!(health.listeners[0].assigned, vec![0]);

        listener.pause();
        tokio::time::sleep(Duration::from_millis(300)).await;
        for i in 20..25 {
            let v = kit.widget(&topic, i).await;
            kit.send(&topic, Some(0), None, Some(&v)).await;
        }
        nothing_more(&mut rx, 1000).await;
        assert!(listener.health().paused.contains(&0));
        listener.resume();
        let after = take(&mut rx, 5, 30).await;
        assert_eq!(
            after.iter().map(|s| s.offset).collect::<Vec<_>>(),
            (20..25).collect::<Vec<_>>()
        );

        listener.seek(0, SeekTo::Offset(10)).await.unwrap();
        let replayed = take(&mut rx, 15, 30).await;
        assert_eq!(
            replayed.iter().map(|s| s.offset).collect::<Vec<_>>(),
            (10..25).collect::<Vec<_>>()
        );
        let error = listener.seek(7, SeekTo::Beginning).await.unwrap_err().to_string();
        assert!(error.contains("partition 7 is not assigned"), "{error}");
        running.stop().await;
        assert!(!control.health().is_live(), "stopped");
    })
    .await;
}
