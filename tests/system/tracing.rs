//! OpenTelemetry: two `swarm up` processes on one Redis mesh export their spans over OTLP/HTTP
//! to a real OTLP receiver run by the test (axum, decoding the protobuf messages of
//! `opentelemetry-proto`). One conversation is one trace across both processes, with the right
//! parents: the posted signal's `send` is the root (or that of `swarm emit`, a third process),
//! each execution is a child of the execution that emitted its signal (of the post for the
//! first), and each emit's `send` a child of its execution.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::json;
use swarm_mesh::prelude::*;
use swarm_tests::{ReactorSpec, deploy_order_flow, free_port, wait_serving};

/// A span as received, with the `service.instance.id` of the process that sent it.
#[derive(Debug, Clone)]
struct Received {
    instance: String,
    span: Span,
}

impl Received {
    fn attribute(&self, key: &str) -> Option<String> {
        text_of(&self.span.attributes, key)
    }
}

fn text_of(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    match value.value.as_ref()? {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        AnyValue::DoubleValue(d) => Some(d.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

/// An OTLP/HTTP receiver on loopback: every span posted to `/v1/traces`.
async fn receiver() -> (String, Arc<Mutex<Vec<Received>>>) {
    let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
    let kept = Arc::clone(&spans);
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let kept = Arc::clone(&kept);
            async move {
                let request = ExportTraceServiceRequest::decode(body)
                    .expect("the exporter sends an OTLP protobuf request");
                let mut kept = kept.lock().expect("spans");
                for resource_spans in request.resource_spans {
                    let instance = resource_spans
                        .resource
                        .as_ref()
                        .and_then(|r| text_of(&r.attributes, "service.instance.id"))
                        .unwrap_or_default();
                    for scope in resource_spans.scope_spans {
                        for span in scope.spans {
                            kept.push(Received {
                                instance: instance.clone(),
                                span,
                            });
                        }
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the receiver");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), spans)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_conversation_is_one_trace_across_two_reactors_with_the_right_parents() {
    let (endpoint, spans) = receiver().await;
    let units = tempfile::tempdir().expect("units dir");
    let work = tempfile::tempdir().expect("work dir");
    deploy_order_flow(units.path());
    let (prefix, mesh) = swarm_tests::fresh_mesh().await;
    let spec = ReactorSpec::new(
        prefix,
        units.path(),
        work.path(),
        vec!["--otlp".into(), endpoint.clone()],
    );
    let port = free_port();
    let a = spec.start_serving("trace-a", &format!("127.0.0.1:{port}"));
    let port_b = free_port();
    let b = spec.start_serving("trace-b", &format!("127.0.0.1:{port_b}"));
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    // Both reactors read the stream before the first post (each serves once it has started),
    // so the signals are shared between them.
    wait_serving(&http, &base).await;
    wait_serving(&http, &format!("http://127.0.0.1:{port_b}")).await;
    // Conversations of their own trace ids; the two reactors share their signals.
    let mut traces = Vec::new();
    for id in 0..16 {
        let trace = uuid::Uuid::now_v7();
        let answer = http
            .post(format!("{base}/v1/signals?wait=10&reply=order.fulfilled"))
            .json(&json!({
                "kind": "order.placed",
                "trace_id": trace,
                "payload": {"id": id, "items": [{"sku": "tea", "qty": 1}]},
            }))
            .send()
            .await
            .expect("post");
        assert_eq!(
            answer.status(),
            200,
            "{}",
            answer.text().await.unwrap_or_default()
        );
        traces.push(trace);
    }
    // One more order from `swarm emit`, whose `send` is then the root of its trace.
    let emitted = std::process::Command::new(swarm_tests::swarm_binary())
        .args([
            "emit",
            "order.placed",
            r#"{"id": 99, "items": [{"sku": "tea", "qty": 1}]}"#,
        ])
        .args([
            "--redis",
            &spec.redis,
            "--redis-prefix",
            &spec.prefix,
            "--otlp",
            &endpoint,
        ])
        .output()
        .expect("swarm emit runs");
    let printed = String::from_utf8_lossy(&emitted.stdout).into_owned();
    assert!(
        emitted.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&emitted.stderr)
    );
    let id: uuid::Uuid = printed
        .split_whitespace()
        .nth(2)
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("`emitted KIND ID ...` in {printed}"));
    let fulfilled = swarm_tests::wait_for_async(Duration::from_secs(20), async || {
        let entries = mesh.range("swarm:signals", None, usize::MAX).await.ok()?;
        entries
            .into_iter()
            .filter_map(|e| e.body.ok())
            .find(|s| s.correlation_id == id && s.kind == "order.fulfilled")
    })
    .await;
    let emitted_trace = fulfilled.expect("the emitted order is fulfilled").trace_id;
    // Stopping flushes what the exporters hold.
    assert!(a.stop(), "reactor a exits cleanly");
    assert!(b.stop(), "reactor b exits cleanly");
    let spans = spans.lock().expect("spans").clone();
    eprintln!("{} spans received", spans.len());
    let mut by_trace: BTreeMap<Vec<u8>, Vec<Received>> = BTreeMap::new();
    for span in spans {
        by_trace
            .entry(span.span.trace_id.clone())
            .or_default()
            .push(span);
    }
    let mut across = 0;
    for trace in traces {
        let spans = by_trace
            .get(trace.as_bytes().as_slice())
            .unwrap_or_else(|| panic!("no span of trace {trace}"));
        check_trace(trace, spans, "trace-a");
        let instances: BTreeSet<&str> = spans.iter().map(|s| s.instance.as_str()).collect();
        assert!(
            instances.is_subset(&BTreeSet::from(["trace-a", "trace-b"])),
            "{instances:?}"
        );
        across += usize::from(instances.len() == 2);
    }
    let spans = by_trace
        .get(emitted_trace.as_bytes().as_slice())
        .expect("the spans of the emitted order");
    check_trace(emitted_trace, spans, "emit");
    eprintln!("{across} of 16 conversations were handled by both reactors");
    assert!(across > 0, "no conversation was handled by both reactors");
}

/// The spans of one order's conversation and how they hang together.
fn check_trace(trace: uuid::Uuid, spans: &[Received], sender: &str) {
    let by_id: BTreeMap<&[u8], &Received> = spans
        .iter()
        .map(|s| (s.span.span_id.as_slice(), s))
        .collect();
    assert_eq!(
        by_id.len(),
        spans.len(),
        "span ids are unique in trace {trace}"
    );
    let roots: Vec<&Received> = spans
        .iter()
        .filter(|s| s.span.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1, "one root in trace {trace}: {spans:#?}");
    let root = roots[0];
    assert_eq!(root.span.name, "send order.placed");
    assert_eq!(root.span.kind, SpanKind::Producer as i32);
    assert_eq!(root.instance, sender, "the signal was sent by {sender}");
    for span in spans {
        assert_eq!(span.attribute("messaging.system").as_deref(), Some("swarm"));
        assert!(span.attribute("messaging.destination.name").is_some());
        assert!(span.span.end_time_unix_nano >= span.span.start_time_unix_nano);
        if span.span.parent_span_id.is_empty() {
            continue;
        }
        let parent = by_id
            .get(span.span.parent_span_id.as_slice())
            .unwrap_or_else(|| panic!("the parent of {} is in trace {trace}", span.span.name));
        let kind = span.attribute("swarm.signal.kind").expect("its kind");
        if span.span.kind == SpanKind::Consumer as i32 {
            assert_eq!(span.span.name, format!("process {kind}"));
            assert_eq!(
                span.attribute("messaging.operation.type").as_deref(),
                Some("process")
            );
            if kind == "order.placed" {
                // The first execution's parent is the post.
                assert!(std::ptr::eq(*parent, root), "{span:#?}");
            } else {
                // Every other's is the execution that emitted its signal.
                assert_eq!(parent.span.kind, SpanKind::Consumer as i32, "{span:#?}");
                let emitted = parent.attribute("swarm.emitted").expect("emitted");
                assert_ne!(emitted, "0");
            }
        } else {
            assert_eq!(span.span.kind, SpanKind::Producer as i32);
            assert_eq!(span.span.name, format!("send {kind}"));
            assert_eq!(
                span.attribute("messaging.operation.type").as_deref(),
                Some("send")
            );
            // An emitted signal's send is a child of the execution that emitted it.
            assert_eq!(parent.span.kind, SpanKind::Consumer as i32, "{span:#?}");
        }
    }
    let units: BTreeSet<String> = spans
        .iter()
        .filter_map(|s| s.attribute("swarm.unit"))
        .collect();
    assert!(
        units.contains("order-validate") && units.contains("order-price"),
        "{units:?}"
    );
    assert!(
        units.contains("fulfil-express") || units.contains("fulfil-standard"),
        "{units:?}"
    );
    let sends: BTreeSet<&str> = spans
        .iter()
        .filter(|s| s.span.kind == SpanKind::Producer as i32)
        .map(|s| s.span.name.as_str())
        .collect();
    assert_eq!(
        sends,
        BTreeSet::from([
            "send order.placed",
            "send order.validated",
            "send order.priced",
            "send order.fulfilled"
        ])
    );
}

/// `swarm up`'s stderr from start to a clean stop, with `env` set.
fn up_with(env: &[(&str, &str)]) -> String {
    let units = tempfile::tempdir().expect("units dir");
    deploy_order_flow(units.path());
    let mut command = std::process::Command::new(swarm_tests::swarm_binary());
    command
        .args(["up", "--no-watch", "--http", "127.0.0.1:0", "--units"])
        .arg(units.path())
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_SDK_DISABLED")
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().expect("swarm up starts");
    std::thread::sleep(Duration::from_millis(1500));
    let stderr = swarm_tests::stop_cleanly(child);
    assert!(stderr.contains("reactor up on"), "{stderr}");
    stderr
}

#[test]
fn traces_are_off_unless_a_flag_or_the_standard_variables_ask_for_them() {
    assert!(!up_with(&[]).contains("traces to"));
    let base = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9/")];
    assert!(up_with(&base).contains("traces to http://127.0.0.1:9/v1/traces"));
    let traces = [(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "http://127.0.0.1:9/otlp/traces",
    )];
    assert!(up_with(&traces).contains("traces to http://127.0.0.1:9/otlp/traces"));
    let disabled = [base[0], ("OTEL_SDK_DISABLED", "true")];
    assert!(!up_with(&disabled).contains("traces to"));
}
