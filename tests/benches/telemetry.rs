//! What tracing costs the reactor: the time to build and end one span of an execution
//! (`Telemetry::processed`) and of a publish (`Telemetry::sent`) on the reactor's thread, with
//! the SDK's batch span processor behind them (export happens on its thread, here into an
//! exporter that only counts). In the same run, the reference: encoding the same execution
//! record as JSON, which memory's writer does for every record anyway. With tracing off the
//! reactor makes no span at all (`ReactorConfig::telemetry` is `None`).
//!
//! Run with: `cargo bench -p swarm-tests --bench telemetry` (`BENCH_SPANS`, default 200,000).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use swarm_mesh::telemetry::Telemetry;
use swarm_schemas::{ExecutionRecord, Signal};

/// Counts what the batch processor hands it.
#[derive(Debug)]
struct Counting(Arc<AtomicU64>);

impl SpanExporter for Counting {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        async { Ok(()) }
    }
}

fn per_item_ns(count: usize, run: impl FnOnce()) -> f64 {
    let started = Instant::now();
    run();
    started.elapsed().as_nanos() as f64 / count as f64
}

fn main() {
    let count: usize = std::env::var("BENCH_SPANS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let records: Vec<ExecutionRecord> = (0..count)
        .map(|i| {
            let signal = Signal::new(
                "order.placed",
                serde_json::json!({"id": i, "items": [{"sku": "tea", "qty": 1}]}),
            );
            swarm_memory::testkit::record(&signal, "order-validate", true, 0)
        })
        .collect();
    let exported = Arc::new(AtomicU64::new(0));
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(Counting(Arc::clone(&exported)))
        .build();
    let telemetry = Telemetry::new(BoxedTracer::new(Box::new(provider.tracer("bench"))));

    let encode = || {
        for record in &records {
            black_box(serde_json::to_vec(record).map(|v| v.len()).unwrap_or(0));
        }
    };
    // Once to warm up, then measured.
    encode();
    let json = per_item_ns(count, encode);
    let process = per_item_ns(count, || {
        for record in &records {
            telemetry.processed("swarm:signals", "reactor", black_box(record));
        }
    });
    let now = SystemTime::now();
    let send = per_item_ns(count, || {
        for record in &records {
            telemetry.sent("swarm:signals", black_box(&record.signal), now, now);
        }
    });
    let _ = provider.force_flush();
    let _ = provider.shutdown();
    let exported = exported.load(Ordering::Relaxed);
    println!("telemetry: {count} executions, one core");
    println!("  process span (build + end)   {process:>8.0} ns");
    println!("  send span (build + end)      {send:>8.0} ns");
    println!("  reference: record as JSON    {json:>8.0} ns");
    println!(
        "  spans per signal through one unit (one send, one process): {:.0} ns, {:.2}x the JSON encoding",
        process + send,
        (process + send) / json
    );
    println!(
        "  exported {exported} of {} spans; the batch processor's queue (OTEL_BSP_MAX_QUEUE_SIZE, 2048) dropped the rest of this burst",
        2 * count
    );
}
