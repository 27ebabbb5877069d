//! Deimos's consumer metrics, through a globally installed debugging recorder (this test binary only).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use deimos_consumer::{ErrorPolicy, Handler, HandlerError, Message};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde_json::{Value as Json, json};
use tokio::sync::mpsc;

/// Snapshots drain the recorder; this keeps running totals (counters summed, histogram values collected,
/// every gauge value seen).
struct Totals {
    snapshotter: Snapshotter,
    counters: HashMap<String, u64>,
    histograms: HashMap<String, Vec<f64>>,
    gauges: HashMap<String, Vec<f64>>,
}

fn recorder() -> &'static Mutex<Totals> {
    static TOTALS: OnceLock<Mutex<Totals>> = OnceLock::new();
    TOTALS.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().unwrap();
        Mutex::new(Totals {
            snapshotter,
            counters: HashMap::new(),
            histograms: HashMap::new(),
            gauges: HashMap::new(),
        })
    })
}

/// `name{k=v,...}` with labels in emission order.
fn refresh() -> std::sync::MutexGuard<'static, Totals> {
    let mut t = recorder().lock().unwrap();
    for (key, _, _, value) in t.snapshotter.snapshot().into_vec() {
        let k = key.key();
        let labels: Vec<String> = k.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        let id = format!("{}{{{}}}", k.name(), labels.join(","));
        match value {
            DebugValue::Counter(n) => *t.counters.entry(id).or_default() += n,
            DebugValue::Histogram(v) => t.histograms.entry(id).or_default().extend(v.into_iter().map(|f| f.0)),
            DebugValue::Gauge(g) => t.gauges.entry(id).or_default().push(g.0),
        }
    }
    t
}

fn counter(id: &str) -> u64 {
    refresh().counters.get(id).copied().unwrap_or(0)
}

fn histogram(id: &str) -> Vec<f64> {
    refresh().histograms.get(id).cloned().unwrap_or_default()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never true: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn order(id: &str, timestamp: &str) -> Json {
    json!({
        "order_id": id, "shipping": {"street": "Main St", "city": "Springfield", "zip": null},
        "billing": null, "widget_status": "ACTIVE", "message_id": null, "timestamp": timestamp
    })
}

struct FailOn(&'static str);

#[async_trait]
impl Handler for FailOn {
    type Payload = Json;

    async fn consume(&self, message: Message<Json>) -> Result<(), HandlerError> {
        if message.payload.as_ref().and_then(|p| p["order_id"].as_str()) == Some(self.0) {
            return Err("this order fails".into());
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_mode_counts_times_and_reports_time_delayed() {
    within(40, async {
        recorder();
        let kit = Kit::new();
        let topic = kit.topic("orders", 1);
        let listener = kit
            .listener(&topic, "g-orders")
            .schema("com.acme.orders.Order")
            .handler(FailOn("o3"))
            .build()
            .unwrap();
        let running = Running::start(kit.runner().listener(listener).build().unwrap());
        let long_ago = "2019-01-01 10:30:00 -0500";
        for (id, ts) in [("o1", long_ago), ("o2", "yesterday morning"), ("o3", long_ago)] {
            let v = kit.value(&topic, "com.acme.orders.Order", &order(id, ts)).await;
            kit.send(&topic, None, None, Some(&v)).await;
        }
        kit.send(&topic, None, None, Some(b"\x01undecodable")).await;
        let t = topic.as_str();
        eventually("4 messages handled or failed", || {
            counter(&format!("handler{{status=success,topic={t}}}")) == 2
                && counter(&format!("handler{{status=error,topic={t}}}")) == 2
        })
        .await;
        assert_eq!(
            counter(&format!("handler{{status=received,topic={t}}}")),
            3,
            "decoded messages only"
        );
        assert_eq!(histogram(&format!("handler_time{{time=consume,topic={t}}}")).len(), 2);
        let delays = histogram(&format!("handler_time{{time=time_delayed,topic={t}}}"));
        assert_eq!(
            delays.len(),
            2,
            "o1 and o3 have parsable timestamps, o2 does not: {delays:?}"
        );
        assert!(delays.iter().all(|d| *d > 5.0 * 365.0 * 86400.0), "{delays:?}");
        running.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_mode_counts_batches_and_messages() {
    within(40, async {
        recorder();
        let kit = Kit::new();
        let topic = kit.topic("metrics-batch", 1);
        for id in 0..4 {
            let v = kit.widget(&topic, id).await;
            kit.send(&topic, None, None, Some(&v)).await;
        }
        let (handler, mut rx) = collect_batches::<Widget>();
        let listener = kit
            .listener(&topic, "g")
            .max_batch_size(4)
            .batch_handler(handler)
            .build()
            .unwrap();
        let running = Running::start(kit.runner().listener(listener).build().unwrap());
        assert_eq!(take(&mut rx, 1, 30).await[0].len(), 4);
        let t = topic.as_str();
        eventually("batch counted", || {
            counter(&format!("handler{{status=batch_success,topic={t}}}")) == 1
        })
        .await;
        assert_eq!(counter(&format!("handler{{status=batch_received,topic={t}}}")), 1);
        assert_eq!(counter(&format!("handler{{status=received,topic={t}}}")), 4);
        assert_eq!(counter(&format!("handler{{status=success,topic={t}}}")), 4);
        assert_eq!(
            histogram(&format!("handler_time{{time=consume_batch,topic={t}}}")).len(),
            1
        );
        running.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_dead_letters_are_counted() {
    within(40, async {
        recorder();
        let kit = Kit::new();
        let topic = kit.topic("metrics-dlq", 1);
        let dlq = kit.topic("metrics-dlq-target", 1);
        let listener = kit
            .listener(&topic, "g")
            .error_policy(ErrorPolicy::Fatal)
            .max_attempts(3)
            .dead_letter_topic(&dlq)
            .handler(FailOn("x"))
            .schema("com.acme.orders.Order")
            .build()
            .unwrap();
        let running = Running::start(kit.runner().listener(listener).build().unwrap());
        let v = kit.value(&topic, "com.acme.orders.Order", &order("x", "")).await;
        kit.send(&topic, None, None, Some(&v)).await;
        let t = topic.as_str();
        eventually("dead-lettered", || {
            counter(&format!("dead_letter{{topic={t},dead_letter_topic={dlq}}}")) == 1
        })
        .await;
        assert_eq!(
            counter(&format!("handler_retry{{topic={t}}}")),
            2,
            "attempts 1 and 2 were retried"
        );
        assert_eq!(counter(&format!("handler{{status=error,topic={t}}}")), 3);
        running.stop().await;
    })
    .await;
}

/// Takes a while per message, so the group lags behind the partition's end while it works.
struct Slow;

#[async_trait]
impl Handler for Slow {
    type Payload = Widget;

    async fn consume(&self, _message: Message<Widget>) -> Result<(), HandlerError> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_lag_is_reported_per_partition() {
    within(40, async {
        recorder();
        let kit = Kit::new();
        let topic = kit.topic("metrics-lag", 1);
        for id in 0..8 {
            let v = kit.widget(&topic, id).await;
            kit.send(&topic, None, None, Some(&v)).await;
        }
        let listener = kit
            .listener(&topic, "g-lag")
            .report_lag(true)
            .lag_interval(Duration::from_millis(100))
            .handler(Slow)
            .build()
            .unwrap();
        let running = Running::start(kit.runner().listener(listener).build().unwrap());
        let id = format!("consumer_lag{{consumer_group=g-lag,partition=0,topic={topic}}}");
        eventually("a positive lag reported", || {
            refresh()
                .gauges
                .get(&id)
                .is_some_and(|v| v.iter().any(|lag| *lag > 0.0))
        })
        .await;
        let seen = refresh().gauges.get(&id).cloned().unwrap_or_default();
        assert!(seen.iter().all(|lag| (0.0..=7.0).contains(lag)), "{seen:?}");
        running.stop().await;
    })
    .await;
}

/// Fails with a transient error the first `n` times, then succeeds.
struct TransientTimes(std::sync::atomic::AtomicU32, mpsc::UnboundedSender<i64>);

#[async_trait]
impl Handler for TransientTimes {
    type Payload = Widget;

    async fn consume(&self, message: Message<Widget>) -> Result<(), HandlerError> {
        let left = self.0.load(std::sync::atomic::Ordering::SeqCst);
        if left > 0 {
            self.0.store(left - 1, std::sync::atomic::Ordering::SeqCst);
            return Err(deimos_consumer::Transient::new("the database is restarting").into());
        }
        let _ = self.1.send(message.payload.as_ref().map_or(-1, |w| w.id));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_are_counted_and_the_partition_shows_as_held_meanwhile() {
    within(40, async {
        recorder();
        let kit = Kit::new();
        let topic = kit.topic("metrics-transient", 1);
        let (tx, mut rx) = mpsc::unbounded_channel();
        // The default policy (swallow) would skip an ordinary error; a transient one is retried.
        let listener = kit
            .listener(&topic, "g-transient")
            .handler(TransientTimes(std::sync::atomic::AtomicU32::new(5), tx))
            .build()
            .unwrap();
        let running = Running::start(kit.runner().listener(listener).build().unwrap());
        let v = kit.widget(&topic, 7).await;
        kit.send(&topic, None, None, Some(&v)).await;
        let t = topic.as_str();
        let held_id = format!("partitions_held{{topic={t},reason=transient}}");
        eventually("the partition held", || {
            refresh().gauges.get(&held_id).is_some_and(|v| v.contains(&1.0))
        })
        .await;
        assert_eq!(
            take(&mut rx, 1, 30).await,
            [7],
            "handled once the error passed, not skipped"
        );
        assert_eq!(counter(&format!("transient_retry{{topic={t}}}")), 5);
        assert_eq!(
            counter(&format!("handler_retry{{topic={t}}}")),
            0,
            "not the policy's retries"
        );
        eventually("the partition released", || {
            refresh().gauges.get(&held_id).and_then(|v| v.last().copied()) == Some(0.0)
        })
        .await;
        running.stop().await;
    })
    .await;
}
