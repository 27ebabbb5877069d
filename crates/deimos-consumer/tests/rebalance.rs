//! Two runners in one group through a rebalance: no message lost, none handled twice.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use deimos_consumer::{Handler, HandlerError, Message};
use rdkafka::producer::FutureRecord;
use tokio::sync::mpsc;

/// Records (runner, widget id, partition) and takes a little time per message, so work is in flight when
/// the group rebalances.
struct Tagged(&'static str, mpsc::UnboundedSender<(&'static str, i64, i32)>);

#[async_trait]
impl Handler for Tagged {
    type Payload = Widget;

    async fn consume(&self, message: Message<Widget>) -> Result<(), HandlerError> {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let id = message.payload.as_ref().map_or(-1, |w| w.id);
        let _ = self.1.send((self.0, id, message.metadata.partition));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_runner_joins_and_leaves_without_losing_or_repeating_messages() {
    within(90, async {
        let kit = Kit::new();
        let topic = kit.topic("rebalance", 4);
        const TOTAL: i64 = 600;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let a = Running::start(
            kit.runner()
                .listener(
                    kit.listener(&topic, "g-reb")
                        .handler(Tagged("a", tx.clone()))
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        );
        // Produce steadily for the whole test: ~12 s.
        let mut values = Vec::new();
        for id in 0..TOTAL {
            values.push(kit.widget(&topic, id).await);
        }
        let producer = {
            let producer = kit.producer.clone();
            let topic = topic.clone();
            tokio::spawn(async move {
                for (id, v) in values.iter().enumerate() {
                    let record = FutureRecord::<[u8], [u8]>::to(&topic)
                        .partition((id % 4) as i32)
                        .payload(v);
                    producer
                        .send(record, Duration::from_secs(10))
                        .await
                        .map_err(|(e, _)| e)
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        let mut seen: HashMap<i64, Vec<(&'static str, i32)>> = HashMap::new();
        fn record(seen: &mut HashMap<i64, Vec<(&'static str, i32)>>, batch: Vec<(&'static str, i64, i32)>) {
            for (runner, id, partition) in batch {
                seen.entry(id).or_default().push((runner, partition));
            }
        }
        record(&mut seen, take(&mut rx, 50, 30).await);
        let b = Running::start(
            kit.runner()
                .listener(
                    kit.listener(&topic, "g-reb")
                        .handler(Tagged("b", tx.clone()))
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        );
        // Wait until B has handled something, then let B leave again while messages keep coming.
        loop {
            let got = take(&mut rx, 1, 30).await;
            let by_b = got[0].0 == "b";
            record(&mut seen, got);
            if by_b {
                break;
            }
        }
        record(&mut seen, take(&mut rx, 50, 30).await);
        b.stop().await;
        producer.await.unwrap();
        // Everything else arrives at A.
        while seen.len() < TOTAL as usize {
            record(&mut seen, take(&mut rx, 1, 30).await);
        }
        nothing_more(&mut rx, 1000).await;
        a.stop().await;

        let by_b = seen.values().flatten().filter(|(r, _)| *r == "b").count();
        assert!(by_b > 0, "the second runner took partitions over");
        let missing: Vec<i64> = (0..TOTAL).filter(|id| !seen.contains_key(id)).collect();
        assert!(missing.is_empty(), "lost: {missing:?}");
        let twice: Vec<_> = seen.iter().filter(|(_, v)| v.len() > 1).collect();
        assert!(twice.is_empty(), "handled twice: {twice:?}");
    })
    .await;
}

/// Records (runner, partition, offset) of every message handled, after a short pause so that work is always in
/// progress.
struct Positions(usize, mpsc::UnboundedSender<(usize, i32, i64)>);

#[async_trait]
impl Handler for Positions {
    type Payload = Widget;

    async fn consume(&self, message: Message<Widget>) -> Result<(), HandlerError> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let _ = self
            .1
            .send((self.0, message.metadata.partition, message.metadata.offset));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_during_a_rebalance_commits_what_was_handled() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    within(240, async {
        let kit = Kit::new();
        let topic = kit.topic("rolling", 12);
        const TOTAL: i64 = 6_000;
        let v = kit.widget(&topic, 1).await;
        let producer = {
            let producer = kit.producer.clone();
            let topic = topic.clone();
            tokio::spawn(async move {
                for i in 0..TOTAL {
                    let record = FutureRecord::<[u8], [u8]>::to(&topic)
                        .partition((i % 12) as i32)
                        .payload(&v);
                    producer
                        .send(record, Duration::from_secs(10))
                        .await
                        .map_err(|(e, _)| e)
                        .unwrap();
                    // About 30 s of traffic, so every round of the rolling restart has work in progress.
                    if i % 10 == 0 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            })
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        // The mock cluster holds a rebalance until every member rejoined (or session timeout − 1 s): members
        // heartbeat often so they notice soon, and a stop may take most of a production-like shutdown timeout.
        let start = |n: usize| {
            Running::start(
                kit.runner()
                    .shutdown_timeout(Duration::from_secs(30))
                    .listener(
                        kit.listener(&topic, "g-rolling")
                            .heartbeat_interval(Duration::from_millis(500))
                            .handler(Positions(n, tx.clone()))
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
        };
        let mut running: Vec<(usize, Running)> = (0..3).map(|n| (n, start(n))).collect();
        let mut handled: Vec<(usize, i32, i64)> = take(&mut rx, 100, 60).await;
        // Rolling restart: a new member joins (a rebalance starts), and while the group rebalances an old member is
        // stopped gracefully.
        let mut stopped = Vec::new();
        let mut stop_asked: HashMap<usize, usize> = HashMap::new();
        for round in 0..5 {
            let n = 3 + round;
            running.push((n, start(n)));
            tokio::time::sleep(Duration::from_millis(300 + 150 * round as u64)).await;
            let (old, runner) = running.remove(0);
            while let Ok(x) = rx.try_recv() {
                handled.push(x);
            }
            // Everything the stopping runner handles from here on is handled before it leaves the group.
            stop_asked.insert(old, handled.len());
            runner.stop().await;
            while let Ok(x) = rx.try_recv() {
                handled.push(x);
            }
            stopped.push(old);
            // Let the group settle and the new owners work.
            tokio::time::sleep(Duration::from_secs(2)).await;
            while let Ok(x) = rx.try_recv() {
                handled.push(x);
            }
        }
        producer.await.unwrap();
        let distinct = |handled: &[(usize, i32, i64)]| {
            handled
                .iter()
                .map(|(_, p, o)| (*p, *o))
                .collect::<std::collections::HashSet<_>>()
                .len()
        };
        while distinct(&handled) < TOTAL as usize {
            match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
                Ok(Some(x)) => handled.push(x),
                _ => break,
            }
        }
        for (_, runner) in running {
            runner.stop().await;
        }
        while let Ok(x) = rx.try_recv() {
            handled.push(x);
        }
        // Per position, who handled it, in the order it was handled.
        let mut by_position: HashMap<(i32, i64), Vec<(usize, usize)>> = HashMap::new();
        for (at, (runner, partition, offset)) in handled.iter().enumerate() {
            by_position
                .entry((*partition, *offset))
                .or_default()
                .push((*runner, at));
        }
        let lost = (TOTAL as usize).saturating_sub(by_position.len());
        assert_eq!(lost, 0, "messages never handled");
        // A message a stopped runner handled, handled again by another after that runner was asked to stop: its
        // shutdown did not commit it.
        let after_stop: Vec<_> = by_position
            .iter()
            .filter(|(_, seen)| {
                let (first, _) = seen[0];
                stop_asked
                    .get(&first)
                    .is_some_and(|asked| seen.iter().skip(1).any(|(r, at)| *r != first && at >= asked))
            })
            .collect();
        let twice = by_position.values().filter(|seen| seen.len() > 1).count();
        assert!(
            after_stop.is_empty(),
            "{} messages handled by a stopped runner were handled again by the next owner ({twice} handled twice in \
             all), e.g. {:?}",
            after_stop.len(),
            after_stop.iter().take(5).collect::<Vec<_>>()
        );
    })
    .await;
}
