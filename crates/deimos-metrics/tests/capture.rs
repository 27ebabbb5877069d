//! `deimos_metrics::testing`: what was emitted, by name and labels.
#![allow(clippy::unwrap_used)]

use deimos_metrics::catalogue::{CONSUMER_LAG, HANDLER_TIME, PUBLISH};
use deimos_metrics::testing;

#[test]
fn counters_gauges_and_histograms_are_captured_by_labels() {
    testing::install();
    metrics::counter!(PUBLISH.name, "status" => "success", "topic" => "a").increment(2);
    metrics::counter!(PUBLISH.name, "status" => "success", "topic" => "b").increment(3);
    metrics::gauge!(CONSUMER_LAG.name, "consumer_group" => "g", "partition" => "0", "topic" => "a").set(7.0);
    metrics::histogram!(HANDLER_TIME.name, "time" => "consume", "topic" => "a").record(0.25);
    let m = testing::capture();
    assert_eq!(m.counter("publish", &[("topic", "a")]), 2);
    assert_eq!(m.counter("publish", &[("status", "success")]), 5);
    assert_eq!(m.gauge("consumer_lag", &[("partition", "0")]), Some(7.0));
    assert_eq!(m.histogram("handler_time", &[("time", "consume")]), [0.25]);
    assert_eq!(m.names(), ["consumer_lag", "handler_time", "publish"]);
}
