//! OpenTelemetry spans of the mesh: a `send` span for each signal published and a `process` span
//! for each execution, with the attributes of the messaging semantic conventions.
//!
//! A signal already carries what a trace needs, so no trace context travels beside it:
//! - the trace id is the signal's `trace_id`, so one conversation is one trace in every process;
//! - span ids are derived from the ids of signals (`send`) and executions (`process`);
//! - a signal's `send` span is a child of the execution that emitted it (`parent_execution`),
//!   or the root of its trace when it came from outside (an HTTP post, a feed);
//! - an execution's `process` span is a child of the execution that emitted its signal, or,
//!   for a signal from outside, of that signal's `send` span.
//!
//! The tracer this module is given picks the ids through [`DerivedIds`]: the id generator of
//! the process's tracer provider must ask it (the `swarm` binary's does), otherwise the spans
//! get random ids and lose their parents across processes.
//!
//! Spans are made after the fact, from the execution records and the settled emits, with their
//! real start and end times: nothing is opened on the hot path, and without a [`Telemetry`]
//! nothing at all is done.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_semantic_conventions::attribute as semconv;
use swarm_schemas::{ExecutionRecord, Outcome, Signal};
use uuid::Uuid;

/// The value of `messaging.system` on every span.
pub const MESSAGING_SYSTEM: &str = "swarm";

/// Makes the spans of one process. Cheap to clone.
#[derive(Clone)]
pub struct Telemetry {
    tracer: Arc<BoxedTracer>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry")
    }
}

thread_local! {
    /// The ids of the span being built on this thread, for [`DerivedIds`].
    static NEXT: Cell<Option<(TraceId, SpanId)>> = const { Cell::new(None) };
}

/// The ids of the span this module is building on the calling thread, if it is building one:
/// what the process's id generator must answer (see the module's documentation).
pub struct DerivedIds;

impl DerivedIds {
    /// The trace id to give the span being built on this thread, if any.
    pub fn trace_id() -> Option<TraceId> {
        NEXT.with(|next| next.get().map(|(trace, _)| trace))
    }

    /// The span id to give the span being built on this thread, if any.
    pub fn span_id() -> Option<SpanId> {
        NEXT.with(|next| next.get().map(|(_, span)| span))
    }
}

/// The trace of a signal.
pub fn trace_id(signal: &Signal) -> TraceId {
    TraceId::from_bytes(*signal.trace_id.as_bytes())
}

/// The span id of the `send` of the signal with this id.
pub fn send_span_id(signal: Uuid) -> SpanId {
    span_id_of(signal, 0x5e4d)
}

/// The span id of the `process` span of the execution with this id.
pub fn process_span_id(execution: Uuid) -> SpanId {
    span_id_of(execution, 0x9c0e)
}

/// 64 bits of a UUID (v7 ids keep their random bits there), mixed with a salt so a signal and
/// an execution never share a span id by construction; never the invalid id 0.
fn span_id_of(id: Uuid, salt: u64) -> SpanId {
    let low = id.as_u64_pair().1 ^ salt.rotate_left(48);
    SpanId::from(low.max(1))
}

/// The span of the execution that emitted `signal`, or of the signal's own `send`.
fn parent_of_execution(signal: &Signal) -> SpanId {
    match signal.parent_execution {
        Some(parent) => process_span_id(parent),
        None => send_span_id(signal.id),
    }
}

fn remote(trace: TraceId, span: SpanId) -> Context {
    Context::new().with_remote_span_context(SpanContext::new(
        trace,
        span,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ))
}

impl Telemetry {
    /// Spans made with `tracer`, whose provider's id generator asks [`DerivedIds`].
    pub fn new(tracer: BoxedTracer) -> Self {
        Self {
            tracer: Arc::new(tracer),
        }
    }

    /// Builds a span with the given ids and parent (none: the trace's root) and ends it.
    fn span(
        &self,
        ids: (TraceId, SpanId),
        parent: Option<SpanId>,
        builder: opentelemetry::trace::SpanBuilder,
        end: SystemTime,
        status: Status,
    ) {
        use opentelemetry::trace::Span as _;
        let cx = match parent {
            Some(parent) => remote(ids.0, parent),
            None => Context::new(),
        };
        NEXT.with(|next| next.set(Some(ids)));
        let mut span = self.tracer.build_with_context(builder, &cx);
        NEXT.with(|next| next.set(None));
        span.set_status(status);
        span.end_with_timestamp(end);
    }

    /// The `send` span of a signal appended to `stream` between `start` and `end`.
    pub fn sent(&self, stream: &str, signal: &Signal, start: SystemTime, end: SystemTime) {
        let trace = trace_id(signal);
        let builder = self
            .tracer
            .span_builder(format!("send {}", signal.kind))
            .with_kind(SpanKind::Producer)
            .with_start_time(start)
            .with_attributes(
                message_attributes(signal, stream)
                    .into_iter()
                    .chain([
                        KeyValue::new(semconv::MESSAGING_OPERATION_TYPE, "send"),
                        KeyValue::new(semconv::MESSAGING_OPERATION_NAME, "send"),
                    ])
                    .collect::<Vec<_>>(),
            );
        let parent = signal.parent_execution.map(process_span_id);
        self.span(
            (trace, send_span_id(signal.id)),
            parent,
            builder,
            end,
            Status::Unset,
        );
    }

    /// The `process` span of an execution of a signal read from `stream` by `group`.
    pub fn processed(&self, stream: &str, group: &str, record: &ExecutionRecord) {
        let signal = &record.signal;
        let start: SystemTime = record.started_at.into();
        let end = start + Duration::from_micros(record.latency_us);
        let mut attributes = message_attributes(signal, stream);
        attributes.extend([
            KeyValue::new(semconv::MESSAGING_OPERATION_TYPE, "process"),
            KeyValue::new(semconv::MESSAGING_OPERATION_NAME, "process"),
            KeyValue::new(semconv::MESSAGING_CONSUMER_GROUP_NAME, group.to_owned()),
            KeyValue::new("swarm.execution.id", record.id.to_string()),
            KeyValue::new("swarm.unit", record.unit.clone()),
            KeyValue::new("swarm.unit.version", record.unit_version.to_string()),
            KeyValue::new("swarm.unit.generation", record.generation as i64),
            KeyValue::new("swarm.attempt", i64::from(record.attempt)),
            KeyValue::new("swarm.policy", record.policy.clone()),
            KeyValue::new("swarm.propensity", record.propensity),
            KeyValue::new("swarm.emitted", record.emitted.len() as i64),
        ]);
        let status = match &record.outcome {
            Outcome::Success => Status::Unset,
            Outcome::Failure { kind, error } => {
                let kind = serde_json::to_value(kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "failure".to_owned());
                attributes.push(KeyValue::new(semconv::ERROR_TYPE, kind));
                Status::error(error.clone())
            }
        };
        let builder = self
            .tracer
            .span_builder(format!("process {}", signal.kind))
            .with_kind(SpanKind::Consumer)
            .with_start_time(start)
            .with_attributes(attributes);
        self.span(
            (trace_id(signal), process_span_id(record.id)),
            Some(parent_of_execution(signal)),
            builder,
            end,
            status,
        );
    }
}

/// What the `send` and `process` spans of a signal both say of it.
fn message_attributes(signal: &Signal, stream: &str) -> Vec<KeyValue> {
    let mut attributes = vec![
        KeyValue::new(semconv::MESSAGING_SYSTEM, MESSAGING_SYSTEM),
        KeyValue::new(semconv::MESSAGING_DESTINATION_NAME, stream.to_owned()),
        KeyValue::new(semconv::MESSAGING_MESSAGE_ID, signal.id.to_string()),
        KeyValue::new(
            semconv::MESSAGING_MESSAGE_CONVERSATION_ID,
            signal.correlation_id.to_string(),
        ),
        KeyValue::new("swarm.signal.kind", signal.kind.clone()),
    ];
    if let Some(key) = &signal.partition_key {
        attributes.push(KeyValue::new("swarm.partition_key", key.clone()));
    }
    attributes
}

/// A [`Publish`](crate::Publish) that makes a `send` span of each signal it publishes: what
/// the HTTP API and the feed publish through.
pub struct TracedPublish<P: ?Sized> {
    inner: Arc<P>,
    telemetry: Telemetry,
}

impl<P: ?Sized> TracedPublish<P> {
    /// `inner`, traced.
    pub fn new(inner: Arc<P>, telemetry: Telemetry) -> Self {
        Self { inner, telemetry }
    }
}

/// `publish`, traced when there is telemetry, else as it is.
pub fn traced(
    publish: Arc<dyn crate::Publish>,
    telemetry: Option<&Telemetry>,
) -> Arc<dyn crate::Publish> {
    match telemetry {
        Some(telemetry) => Arc::new(TracedPublish::new(publish, telemetry.clone())),
        None => publish,
    }
}

#[async_trait::async_trait]
impl<P: crate::Publish + ?Sized> crate::Publish for TracedPublish<P> {
    async fn publish(
        &self,
        stream: &str,
        signal: &Signal,
    ) -> Result<crate::EntryId, crate::MeshError> {
        let start = SystemTime::now();
        let entry = self.inner.publish(stream, signal).await?;
        self.telemetry
            .sent(stream, signal, start, SystemTime::now());
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_ids_are_derived_apart_and_never_invalid() {
        let id = Uuid::now_v7();
        assert_ne!(send_span_id(id), process_span_id(id));
        assert_eq!(send_span_id(id), send_span_id(id));
        assert_ne!(send_span_id(id), SpanId::INVALID);
        assert_ne!(process_span_id(Uuid::nil()), SpanId::INVALID);
        assert_ne!(
            process_span_id(Uuid::from_u64_pair(0, 0x9c0e_u64.rotate_left(48))),
            SpanId::INVALID
        );
    }
}
