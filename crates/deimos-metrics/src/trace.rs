//! Tracing: the spans deimos-rs opens, named and attributed per the OpenTelemetry messaging semantic
//! conventions, and the trace context carried in Kafka headers.
//!
//! Spans are `tracing` spans; with a `tracing-opentelemetry` layer installed they become OpenTelemetry spans
//! (`otel.name`, `otel.kind` and the `messaging.*` attributes are read by that layer). With the `otel` feature,
//! producers put the context of their span in each message's headers through the application's global
//! OpenTelemetry propagator (`opentelemetry::global::set_text_map_propagator`: W3C trace context, baggage, B3,
//! or several composed), the outbox stores it with the row, the relay sends it on, and consumers make their
//! `process` span a child of the context that propagator reads back, so one trace links producer → outbox →
//! relay → consumer. Without the feature, without an OpenTelemetry layer or without a global propagator
//! (OpenTelemetry's default propagates nothing), nothing is added to messages.

use tracing::Span;

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

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::propagation::{Extractor, Injector};
    use opentelemetry::trace::{SpanContext, TraceContextExt};
    use tracing::Span;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    /// Kafka headers as the propagator writes them: a header per field, replacing one of the same name.
    pub(super) struct HeaderInjector<'a>(pub(super) &'a mut Vec<(String, Vec<u8>)>);

    impl Injector for HeaderInjector<'_> {
        fn set(&mut self, key: &str, value: String) {
            self.0.retain(|(k, _)| k != key);
            self.0.push((key.to_string(), value.into_bytes()));
        }
    }

    /// Kafka headers as the propagator reads them: those whose value is UTF-8 text, the first of each name,
    /// names compared without regard to ASCII case (HTTP propagators write lowercase names).
    pub(super) struct HeaderExtractor<'a>(Vec<(&'a str, &'a str)>);

    impl<'a> HeaderExtractor<'a> {
        pub(super) fn new(headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>) -> Self {
            HeaderExtractor(
                headers
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, std::str::from_utf8(v?).ok()?)))
                    .collect(),
            )
        }
    }

    impl Extractor for HeaderExtractor<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| *v)
        }

        fn keys(&self) -> Vec<&str> {
            self.0.iter().map(|(k, _)| *k).collect()
        }
    }

    /// The headers the global propagator writes for `span`'s context; none when OpenTelemetry does not record
    /// the span.
    pub(super) fn inject(span: &Span) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        if span.is_disabled() {
            return out;
        }
        let cx = span.context();
        if !cx.span().span_context().is_valid() {
            return out;
        }
        opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut HeaderInjector(&mut out)));
        out
    }

    /// The context the global propagator reads from `headers`, with the remote span it names; `None` when
    /// they carry no valid span context.
    pub(super) fn extract<'a>(
        headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    ) -> Option<(opentelemetry::Context, SpanContext)> {
        let extractor = HeaderExtractor::new(headers);
        if extractor.0.is_empty() {
            return None;
        }
        let cx = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract_with_context(&opentelemetry::Context::new(), &extractor)
        });
        let sc = cx.span().span_context().clone();
        sc.is_valid().then_some((cx, sc))
    }
}

/// The trace-context headers of `span`, as the application's global OpenTelemetry propagator writes them
/// (`traceparent` and `tracestate` with W3C trace context); none when the span is not recorded by
/// OpenTelemetry, no propagator is set, or the `otel` feature is off.
pub fn headers_of(span: &Span) -> Vec<(String, Vec<u8>)> {
    #[cfg(feature = "otel")]
    {
        otel::inject(span)
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = span;
        Vec::new()
    }
}

/// Replaces (or adds) the trace-context headers of `headers` with those of `span` (see [`headers_of`]);
/// leaves them alone when the span carries none.
pub fn replace_headers(span: &Span, headers: &mut Vec<(String, Vec<u8>)>) {
    let fresh = headers_of(span);
    if !fresh.is_empty() {
        headers.retain(|(k, _)| !fresh.iter().any(|(f, _)| f == k));
        headers.extend(fresh);
    }
}

/// The context a span was made a child of by [`set_parent`] (to leave it out of a batch's [`Links`]).
#[derive(Debug, Clone)]
pub struct Parent {
    #[cfg(feature = "otel")]
    context: opentelemetry::trace::SpanContext,
}

/// Makes `span` a child of the context the global propagator reads from `headers` (call it before the span is
/// first entered; baggage and other values the propagator reads come along); returns that context, when there
/// was one and OpenTelemetry records the span.
pub fn set_parent<'a>(span: &Span, headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>) -> Option<Parent> {
    if span.is_disabled() {
        return None;
    }
    #[cfg(feature = "otel")]
    {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let (cx, context) = otel::extract(headers)?;
        span.set_parent(cx).ok().map(|()| Parent { context })
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = headers;
        None
    }
}

/// Links a batch's span to the contexts its messages carry: each distinct context once (a publish call gives
/// all its messages the same one), the parent's excepted.
#[derive(Debug, Default)]
pub struct Links {
    #[cfg(feature = "otel")]
    seen: std::collections::HashSet<(opentelemetry::trace::TraceId, opentelemetry::trace::SpanId)>,
    active: Option<bool>,
}

impl Links {
    /// Links `span` to the context in `headers` unless it was linked already (or is `span`'s parent, given with
    /// [`Links::parent`]).
    pub fn add<'a>(&mut self, span: &Span, headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>) {
        if !*self.active.get_or_insert_with(|| !span.is_disabled()) {
            return;
        }
        #[cfg(feature = "otel")]
        {
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            if let Some((_, sc)) = otel::extract(headers)
                && self.seen.insert((sc.trace_id(), sc.span_id()))
            {
                span.add_link(sc);
            }
        }
        #[cfg(not(feature = "otel"))]
        {
            let _ = headers;
        }
    }

    /// Notes the parent's context, so it is not linked as well.
    pub fn parent(&mut self, parent: &Parent) {
        #[cfg(feature = "otel")]
        self.seen.insert((parent.context.trace_id(), parent.context.span_id()));
        #[cfg(not(feature = "otel"))]
        let _ = parent;
    }
}

#[cfg(all(test, feature = "otel"))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    #[test]
    fn kafka_headers_carry_what_a_propagator_writes_and_read_back_what_it_reads() {
        let propagator = TraceContextPropagator::new();
        let tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".as_slice();
        let headers = [
            ("other", Some(b"\xff".as_slice())),
            ("TraceParent", Some(tp)),
            ("tracestate", Some(b"congo=t61rcWkgMzE".as_slice())),
        ];
        let cx = propagator.extract(&otel::HeaderExtractor::new(headers));
        let sc = cx.span().span_context().clone();
        assert_eq!(sc.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(sc.trace_state().header(), "congo=t61rcWkgMzE");

        let mut out = vec![
            ("traceparent".to_string(), b"stale".to_vec()),
            ("h".to_string(), b"v".to_vec()),
        ];
        propagator.inject_context(&cx, &mut otel::HeaderInjector(&mut out));
        let names: Vec<&str> = out.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            ["h", "traceparent", "tracestate"],
            "one header per field, the stale one replaced"
        );
        assert_eq!(out[1].1, tp);

        // Without an OpenTelemetry layer, spans carry nothing; without a valid context nothing is a parent.
        assert!(headers_of(&send_span("t", 1)).is_empty());
        assert!(otel::extract([("traceparent", Some(b"garbage".as_slice()))]).is_none());
    }
}
