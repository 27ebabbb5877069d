//! Tracing: the spans deimos-rs opens, named and attributed per the OpenTelemetry messaging semantic
//! conventions, and the W3C trace context (`traceparent`, `tracestate`) carried in Kafka headers.
//!
//! Spans are `tracing` spans; with a `tracing-opentelemetry` layer installed they become OpenTelemetry spans
//! (`otel.name`, `otel.kind` and the `messaging.*` attributes are read by that layer). Producers put the
//! context of their span in each message's headers, the outbox stores it with the row, the relay sends it on,
//! and consumers make their `process` span a child of it, so one trace links producer → outbox → relay →
//! consumer. Without an OpenTelemetry layer nothing is added to messages.

use std::str::FromStr;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C trace-context header with the trace id, span id and flags.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C trace-state header.
pub const TRACESTATE: &str = "tracestate";

/// `send {topic}` (kind producer): a publish call, or a relay batch.
pub fn send_span(topic: &str, messages: usize) -> Span {
    let span = tracing::info_span!(
        "send",
        otel.name = format!("send {topic}"),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.operation.name = "send",
        messaging.destination.name = topic,
        messaging.batch.message_count = tracing::field::Empty,
    );
    record_count(&span, messages);
    span
}

/// `messaging.batch.message_count`, which the conventions set only for batches of more than one.
fn record_count(span: &Span, messages: usize) {
    if messages > 1 {
        span.record("messaging.batch.message_count", messages as u64);
    }
}

/// Marks `span` as failed (`otel.status_code = ERROR`, `error.type`).
pub fn record_error(span: &Span, error_type: &str) {
    span.record("otel.status_code", "ERROR");
    span.record("error.type", error_type);
}

/// `create {topic}` (kind producer): messages created for later sending (written to the outbox).
pub fn create_span(topic: &str, messages: usize) -> Span {
    let span = tracing::info_span!(
        "create",
        otel.name = format!("create {topic}"),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        messaging.system = "kafka",
        messaging.operation.type = "create",
        messaging.operation.name = "create",
        messaging.destination.name = topic,
        messaging.batch.message_count = tracing::field::Empty,
    );
    record_count(&span, messages);
    span
}

/// `encode {topic}` (internal): a group of messages encoded (key and value, Avro, framed).
pub fn encode_span(topic: &str, messages: usize) -> Span {
    tracing::info_span!(
        "encode",
        otel.name = format!("encode {topic}"),
        messaging.destination.name = topic,
        messaging.batch.message_count = messages as u64,
    )
}

/// `process {topic}` (kind consumer): one message decoded and handled.
pub fn process_span(topic: &str, group: &str, partition: i32, offset: i64, retry_count: u32) -> Span {
    tracing::info_span!(
        "process",
        otel.name = format!("process {topic}"),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = topic,
        messaging.consumer.group.name = group,
        messaging.destination.partition.id = partition.to_string(),
        messaging.kafka.offset = offset,
        deimos.retry_count = retry_count,
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// `process {topic}` (kind consumer) for a batch: linked to each message's context.
pub fn process_batch_span(
    topic: &str,
    group: &str,
    partition: i32,
    first_offset: i64,
    messages: usize,
    retry_count: u32,
) -> Span {
    let span = tracing::info_span!(
        "process",
        otel.name = format!("process {topic}"),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = topic,
        messaging.consumer.group.name = group,
        messaging.destination.partition.id = partition.to_string(),
        messaging.batch.message_count = tracing::field::Empty,
        deimos.first_offset = first_offset,
        deimos.retry_count = retry_count,
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    record_count(&span, messages);
    span
}

/// Whether `span` is recorded by OpenTelemetry (so its context is worth carrying).
fn recorded(span: &Span) -> Option<SpanContext> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// The trace-context headers of `span`: `traceparent` (and `tracestate` when it has one); none when the span
/// is not recorded by OpenTelemetry.
pub fn headers_of(span: &Span) -> Vec<(String, Vec<u8>)> {
    let Some(sc) = recorded(span) else {
        return Vec::new();
    };
    let mut out = vec![(
        TRACEPARENT.to_string(),
        format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8()).into_bytes(),
    )];
    let state = sc.trace_state().header();
    if !state.is_empty() {
        out.push((TRACESTATE.to_string(), state.into_bytes()));
    }
    out
}

/// Replaces (or adds) the trace-context headers of `headers` with those of `span`; leaves them alone when the
/// span is not recorded.
pub fn replace_headers(span: &Span, headers: &mut Vec<(String, Vec<u8>)>) {
    let fresh = headers_of(span);
    if !fresh.is_empty() {
        put_headers(headers, &fresh);
    }
}

/// Replaces the trace-context headers of `headers` with `context` (from [`headers_of`]).
pub fn put_headers(headers: &mut Vec<(String, Vec<u8>)>, context: &[(String, Vec<u8>)]) {
    headers.retain(|(k, _)| k != TRACEPARENT && k != TRACESTATE);
    headers.extend(context.iter().cloned());
}

/// The remote span context in trace-context headers, if a valid `traceparent` is there.
pub fn span_context_from<'a>(headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>) -> Option<SpanContext> {
    let (mut parent, mut state) = (None, None);
    for (k, v) in headers {
        match k {
            TRACEPARENT => parent = v.and_then(|v| std::str::from_utf8(v).ok()),
            TRACESTATE => state = v.and_then(|v| std::str::from_utf8(v).ok()),
            _ => {}
        }
    }
    // W3C trace context: `version-traceid-spanid-flags`, lowercase hex; version ff is invalid; version 00 has
    // exactly four parts (later versions may add more).
    let parts: Vec<&str> = parent?.trim().split('-').collect();
    let lower_hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let [version, trace, span, flags, rest @ ..] = parts.as_slice() else {
        return None;
    };
    if !lower_hex(version, 2)
        || *version == "ff"
        || (*version == "00" && !rest.is_empty())
        || !lower_hex(trace, 32)
        || !lower_hex(span, 16)
        || !lower_hex(flags, 2)
    {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()? & TraceFlags::SAMPLED.to_u8());
    let state = state.and_then(|s| TraceState::from_str(s).ok()).unwrap_or_default();
    let sc = SpanContext::new(trace_id, span_id, flags, true, state);
    sc.is_valid().then_some(sc)
}

/// Makes `span` a child of the context carried in `headers` (call it before the span is first entered); returns
/// that context, when there was one and OpenTelemetry records the span.
pub fn set_parent<'a>(
    span: &Span,
    headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
) -> Option<SpanContext> {
    if span.is_disabled() {
        return None;
    }
    let sc = span_context_from(headers)?;
    span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc.clone()))
        .ok()
        .map(|()| sc)
}

/// Links a batch's span to the contexts its messages carry: each distinct context once (a publish call gives
/// all its messages the same one), the parent's excepted.
#[derive(Debug, Default)]
pub struct Links {
    seen: std::collections::HashSet<(TraceId, SpanId)>,
    active: Option<bool>,
}

impl Links {
    /// Links `span` to the context in `headers` unless it was linked already (or is `span`'s parent, given with
    /// [`Links::parent`]).
    pub fn add<'a>(&mut self, span: &Span, headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>) {
        if !*self.active.get_or_insert_with(|| !span.is_disabled()) {
            return;
        }
        if let Some(sc) = span_context_from(headers)
            && self.seen.insert((sc.trace_id(), sc.span_id()))
        {
            span.add_link(sc);
        }
    }

    /// Notes the parent's context, so it is not linked as well.
    pub fn parent(&mut self, sc: &SpanContext) {
        self.seen.insert((sc.trace_id(), sc.span_id()));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn traceparent_round_trip_and_bad_values() {
        let tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".as_slice();
        let sc = span_context_from([
            ("traceparent", Some(tp)),
            ("tracestate", Some(b"congo=t61rcWkgMzE".as_slice())),
        ])
        .unwrap();
        assert_eq!(sc.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        // Unknown flag bits are dropped; a later version may carry more parts.
        let later = b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what".as_slice();
        assert_eq!(
            span_context_from([("traceparent", Some(later))]).unwrap().trace_flags(),
            TraceFlags::SAMPLED
        );
        assert_eq!(sc.trace_state().header(), "congo=t61rcWkgMzE");
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
        ] {
            assert!(
                span_context_from([("traceparent", Some(bad.as_bytes()))]).is_none(),
                "{bad}"
            );
        }
        // Without an OpenTelemetry layer, spans carry nothing.
        assert!(headers_of(&send_span("t", 1)).is_empty());
    }
}
