//! Batch delivery: per partition, in offset order, up to max_batch_size, keys in the same order.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use deimos_consumer::{DecodedKey, KeyConfig};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_per_partition_with_keys_in_order() {
    within(40, async {
        let kit = Kit::new();
        let topic = kit.topic("widgets-batch", 2);
        // Produce first, so the batches fill to max_batch_size before max_wait.
        for id in 0..30i64 {
            let partition = (id % 2) as i32;
            let key = if id == 7 {
                None
            } else {
                Some(format!("k{id}").into_bytes())
            };
            let value = if id == 9 {
                None
            } else {
                Some(kit.widget(&topic, id).await)
            };
            kit.send(&topic, Some(partition), key.as_deref(), value.as_deref())
                .await;
        }
        let (handler, mut rx) = collect_batches::<Widget>();
        let listener = kit
            .listener(&topic, "g-batch")
            .key_config(KeyConfig::Plain)
            .max_batch_size(10)
            .max_wait(Duration::from_millis(300))
            .batch_handler(handler)
            .build()
            .unwrap();
        let running = Running::start(kit.runner().listener(listener).build().unwrap());

        let mut by_partition: BTreeMap<i32, Vec<_>> = BTreeMap::new();
        let mut total = 0;
        while total < 30 {
            let batch = take(&mut rx, 1, 30).await.remove(0);
            total += batch.len();
            by_partition.entry(batch.metadata.partition).or_default().push(batch);
        }
        for (partition, batches) in &by_partition {
            let sizes: Vec<usize> = batches.iter().map(|b| b.metadata.batch_size).collect();
            assert_eq!(
                sizes,
                [10, 5],
                "partition {partition}: 15 messages in batches of at most 10"
            );
            let mut expected_offset = 0;
            for b in batches {
                assert_eq!(b.metadata.first_offset, expected_offset);
                assert_eq!(b.metadata.offsets.first(), Some(&expected_offset));
                assert_eq!(b.metadata.keys.len(), b.len());
                assert_eq!(b.metadata.headers.len(), b.len());
                assert_eq!(b.metadata.retry_count, 0);
                for (i, (payload, key)) in b.payloads.iter().zip(&b.metadata.keys).enumerate() {
                    let offset = expected_offset + i as i64;
                    let id = offset * 2 + i64::from(*partition);
                    assert_eq!(b.metadata.offsets[i], offset);
                    if id == 7 {
                        assert_eq!(key, &None);
                    } else {
                        assert_eq!(key, &Some(DecodedKey::Text(format!("k{id}"))));
                    }
                    if id == 9 {
                        assert_eq!(payload, &None, "tombstones stay in place");
                    } else {
                        assert_eq!(payload.as_ref().map(|w| w.id), Some(id));
                    }
                }
                expected_offset += b.len() as i64;
            }
        }
        nothing_more(&mut rx, 300).await;
        running.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_batch_is_delivered_after_max_wait() {
    within(40, async {
        let kit = Kit::new();
        let topic = kit.topic("widgets-wait", 1);
        let (handler, mut rx) = collect_batches::<serde_json::Value>();
        let listener = kit
            .listener(&topic, "g-wait")
            .max_batch_size(100)
            .max_wait(Duration::from_millis(200))
            .batch_handler(handler)
            .build()
            .unwrap();
        let running = Running::start(kit.runner().listener(listener).build().unwrap());
        for id in 0..3 {
            let v = kit.widget(&topic, id).await;
            kit.send(&topic, None, None, Some(&v)).await;
        }
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let b = take(&mut rx, 1, 30).await.remove(0);
            assert!(b.len() <= 3);
            seen.extend(b.payloads.into_iter().map(|p| p.unwrap()["id"].clone()));
        }
        assert_eq!(seen, [json!(0), json!(1), json!(2)]);
        running.stop().await;
    })
    .await;
}
