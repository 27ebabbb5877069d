//! Injected broker faults surface as retries and then results, never as hangs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

fn committed(kit: &Kit, topic: &str, group: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kit.bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    match consumer.committed_offsets(tpl, Duration::from_secs(5)) {
        Ok(got) => match got.elements()[0].offset() {
            rdkafka::Offset::Offset(o) => o,
            _ => -1,
        },
        Err(_) => -1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_errors_are_retried_and_consumption_resumes() {
    within(40, async {
        let kit = Kit::new();
        let topic = kit.topic("fetch-faults", 1);
        let (handler, mut rx) = collect::<Widget>();
        let listener = kit.listener(&topic, "g").handler(handler).build().unwrap();
        let running = Running::start(kit.runner().listener(listener).build().unwrap());
        for id in 0..3 {
            let v = kit.widget(&topic, id).await;
            kit.send(&topic, None, None, Some(&v)).await;
        }
        take(&mut rx, 3, 30).await;
        kit.mock.request_errors(
            RDKafkaApiKey::Fetch,
            &[
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            ],
        );
        for id in 3..8 {
            let v = kit.widget(&topic, id).await;
            kit.send(&topic, None, None, Some(&v)).await;
        }
        let ids: Vec<i64> = take(&mut rx, 5, 30)
            .await
            .iter()
            .map(|m| m.payload.as_ref().unwrap().id)
            .collect();
        assert_eq!(ids, [3, 4, 5, 6, 7]);
        running.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_errors_are_retried_and_offsets_end_up_committed() {
    within(40, async {
        let kit = Kit::new();
        let topic = kit.topic("commit-faults", 1);
        let (handler, mut rx) = collect::<Widget>();
        let listener = kit.listener(&topic, "g-commit").handler(handler).build().unwrap();
        let running = Running::start(kit.runner().listener(listener).build().unwrap());
        for id in 0..2 {
            let v = kit.widget(&topic, id).await;
            kit.send(&topic, None, None, Some(&v)).await;
        }
        take(&mut rx, 2, 30).await;
        kit.mock.request_errors(
            RDKafkaApiKey::OffsetCommit,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT; 6],
        );
        for id in 2..6 {
            let v = kit.widget(&topic, id).await;
            kit.send(&topic, None, None, Some(&v)).await;
        }
        take(&mut rx, 4, 30).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while committed(&kit, &topic, "g-commit") != 6 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "offset 6 never committed after commit errors"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        running.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_then_up_resumes_consumption_and_shutdown_still_returns() {
    within(120, async {
        let kit = Kit::new();
        let topic = kit.topic("broker-faults", 1);
        let (handler, mut rx) = collect::<Widget>();
        let listener = kit.listener(&topic, "g-down").handler(handler).build().unwrap();
        let runner = kit
            .runner()
            .shutdown_timeout(Duration::from_secs(3))
            .listener(listener)
            .build()
            .unwrap();
        let running = Running::start(runner);
        let v = kit.widget(&topic, 0).await;
        kit.send(&topic, None, None, Some(&v)).await;
        take(&mut rx, 1, 30).await;

        kit.mock.broker_down(1).unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        kit.mock.broker_up(1).unwrap();
        for id in 1..4 {
            let v = kit.widget(&topic, id).await;
            kit.send(&topic, None, None, Some(&v)).await;
        }
        // At least once: if the broker went down before message 0's offset was committed, it comes again.
        // librdkafka reconnects with a growing backoff (up to 10 s), so under load this can take a while.
        let mut ids = Vec::new();
        while ids.iter().filter(|id| **id > 0).count() < 3 {
            ids.extend(
                take(&mut rx, 1, 60)
                    .await
                    .iter()
                    .map(|m| m.payload.as_ref().unwrap().id),
            );
        }
        let new: Vec<i64> = ids.iter().copied().filter(|id| *id > 0).collect();
        assert_eq!(new, [1, 2, 3], "{ids:?}");
        assert!(ids.iter().filter(|id| **id == 0).count() <= 1, "{ids:?}");

        // With the broker down, shutdown cannot commit or leave the group, but it still returns in time.
        kit.mock.broker_down(1).unwrap();
        let started = std::time::Instant::now();
        running.handle.shutdown();
        let result = tokio::time::timeout(Duration::from_secs(15), running.task).await;
        assert!(result.is_ok(), "run_until returned");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "bounded by the 3 s shutdown timeout (twice)"
        );
        kit.mock.broker_up(1).unwrap();
    })
    .await;
}
