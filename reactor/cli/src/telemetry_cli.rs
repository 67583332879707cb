//! OpenTelemetry tracing of `swarm up`: the OTLP/HTTP exporter, the tracer provider and its
//! id generator, set up from `--otlp` and the standard `OTEL_*` variables. Off unless asked for.

use anyhow::Context;
use clap::Args;
use opentelemetry::KeyValue;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider};
use swarm_mesh::telemetry::{DerivedIds, Telemetry};

#[derive(Debug, Args)]
pub(crate) struct TelemetryArgs {
    /// Export OpenTelemetry traces over OTLP/HTTP (protobuf) to this collector
    /// (`http://HOST:4318` or `https://...`; `/v1/traces` is added to a URL without a path). Without it, traces
    /// are exported when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is
    /// set; OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_HEADERS and
    /// OTEL_BSP_* apply either way, and OTEL_SDK_DISABLED=true turns tracing off.
    #[arg(long, value_name = "URL")]
    otlp: Option<String>,
}

/// The process's tracing, while it runs.
pub(crate) struct Tracing {
    provider: SdkTracerProvider,
    pub telemetry: Telemetry,
    pub endpoint: String,
}

/// Span ids from [`DerivedIds`] for the spans the mesh makes, random for any other.
#[derive(Debug)]
struct Derived(RandomIdGenerator);

impl IdGenerator for Derived {
    fn new_trace_id(&self) -> TraceId {
        DerivedIds::trace_id().unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        DerivedIds::span_id().unwrap_or_else(|| self.0.new_span_id())
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

impl TelemetryArgs {
    /// Where traces go: `--otlp`, else the standard variables; none when tracing is off.
    fn endpoint(&self) -> Option<String> {
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
        {
            return None;
        }
        if let Some(url) = &self.otlp {
            let trimmed = url.trim_end_matches('/');
            let has_path = trimmed
                .split_once("://")
                .is_some_and(|(_, rest)| rest.contains('/'));
            return Some(if has_path {
                trimmed.to_owned()
            } else {
                format!("{trimmed}/v1/traces")
            });
        }
        env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| {
            env("OTEL_EXPORTER_OTLP_ENDPOINT")
                .map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
        })
    }

    /// Starts exporting, if asked to; `instance` names this process in the spans' resource
    /// (`service.instance.id`).
    pub(crate) fn start(&self, instance: &str) -> anyhow::Result<Option<Tracing>> {
        let Some(endpoint) = self.endpoint() else {
            return Ok(None);
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(Ureq::new())
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .build()
            .with_context(|| format!("cannot export traces to {endpoint}"))?;
        let mut resource = Resource::builder().with_attribute(KeyValue::new(
            opentelemetry_semantic_conventions::resource::SERVICE_INSTANCE_ID,
            instance.to_owned(),
        ));
        if env("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("swarm");
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_id_generator(Derived(RandomIdGenerator::default()))
            .with_resource(resource.build())
            .build();
        let tracer = provider.tracer("swarm");
        Ok(Some(Tracing {
            telemetry: Telemetry::new(BoxedTracer::new(Box::new(tracer))),
            provider,
            endpoint,
        }))
    }
}

/// The exporter's HTTP client: ureq on its own rustls (ring, the platform's certificates), so
/// `https` collectors work.
#[derive(Debug)]
struct Ureq(ureq::Agent);

impl Ureq {
    fn new() -> Self {
        let agent = crate::args::https_client()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(10)))
            .build()
            .into();
        Self(agent)
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Ureq {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<
        opentelemetry_http::Response<opentelemetry_http::Bytes>,
        opentelemetry_http::HttpError,
    > {
        // The batch span processor exports from a thread of its own, blocking on this future:
        // a blocking call here holds up nothing else.
        let (parts, body) = request.into_parts();
        let mut response = self.0.run(opentelemetry_http::Request::from_parts(
            parts,
            body.to_vec(),
        ))?;
        let body = response.body_mut().read_to_vec()?;
        let (parts, _) = response.into_parts();
        Ok(opentelemetry_http::Response::from_parts(
            parts,
            opentelemetry_http::Bytes::from(body),
        ))
    }
}

impl Tracing {
    /// Exports what is left and stops.
    pub(crate) async fn shutdown(self) {
        let provider = self.provider;
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(error)) = done {
            tracing::warn!(%error, "traces not all exported at shutdown");
        }
    }
}
