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

#[test]
fn a_second_capture_sees_totals_and_last_values() {
    testing::install();
    let labels = [("topic", "twice")];
    metrics::counter!(PUBLISH.name, "status" => "success", "topic" => "twice").increment(1);
    metrics::gauge!(CONSUMER_LAG.name, "consumer_group" => "g", "partition" => "0", "topic" => "twice").set(4.0);
    let first = testing::capture();
    metrics::counter!(PUBLISH.name, "status" => "success", "topic" => "twice").increment(1);
    metrics::histogram!(HANDLER_TIME.name, "time" => "consume", "topic" => "twice").record(0.5);
    let second = testing::capture();
    assert_eq!(first.counter("publish", &labels), 1);
    assert_eq!(second.counter("publish", &labels), 2);
    assert_eq!(
        second.gauge("consumer_lag", &labels),
        Some(4.0),
        "a gauge keeps its value across captures"
    );
    assert_eq!(second.histogram("handler_time", &labels), [0.5]);
}
