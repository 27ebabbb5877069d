//! At-least-once: handled offsets are committed (periodically and at shutdown) and a restart resumes there.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

fn committed(kit: &Kit, topic: &str, group: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kit.bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let got = consumer.committed_offsets(tpl, Duration::from_secs(5)).unwrap();
    match got.elements()[0].offset() {
        rdkafka::Offset::Offset(o) => o,
        _ => -1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_commits_and_a_restart_resumes_after_the_last_handled_message() {
    within(60, async {
        let kit = Kit::new();
        let topic = kit.topic("widgets-resume", 1);
        for id in 0..5 {
            let v = kit.widget(&topic, id).await;
            kit.send(&topic, None, None, Some(&v)).await;
        }
        // A long commit interval: only the shutdown commit can save the offsets.
        let (handler, mut rx) = collect::<Widget>();
        let listener = kit
            .listener(&topic, "g-resume")
            .commit_interval(Duration::from_secs(3600))
            .handler(handler)
            .build()
            .unwrap();
        let running = Running::start(kit.runner().listener(listener).build().unwrap());
        let first: Vec<i64> = take(&mut rx, 5, 30)
            .await
            .iter()
            .map(|m| m.payload.as_ref().unwrap().id)
            .collect();
        assert_eq!(first, [0, 1, 2, 3, 4]);
        running.stop().await;
        assert_eq!(
            committed(&kit, &topic, "g-resume"),
            5,
            "the shutdown commit covers every handled message"
        );

        for id in 5..8 {
            let v = kit.widget(&topic, id).await;
            kit.send(&topic, None, None, Some(&v)).await;
        }
        let (handler, mut rx) = collect::<Widget>();
        let listener = kit.listener(&topic, "g-resume").handler(handler).build().unwrap();
        let running = Running::start(kit.runner().listener(listener).build().unwrap());
        let second: Vec<i64> = take(&mut rx, 3, 30)
            .await
            .iter()
            .map(|m| m.payload.as_ref().unwrap().id)
            .collect();
        assert_eq!(second, [5, 6, 7], "nothing already handled comes back");
        nothing_more(&mut rx, 500).await;
        running.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_committed_periodically_while_running() {
    within(40, async {
        let kit = Kit::new();
        let topic = kit.topic("widgets-periodic", 1);
        let (handler, mut rx) = collect::<Widget>();
        let listener = kit.listener(&topic, "g-periodic").handler(handler).build().unwrap();
        let running = Running::start(kit.runner().listener(listener).build().unwrap());
        for id in 0..4 {
            let v = kit.widget(&topic, id).await;
            kit.send(&topic, None, None, Some(&v)).await;
        }
        take(&mut rx, 4, 30).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let c = committed(&kit, &topic, "g-periodic");
            if c == 4 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "offset 4 not committed while running (got {c})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        running.stop().await;
    })
    .await;
}
