//! A unit's control (enabled or not) lives on the mesh: it survives a restart of the process
//! that changed it, and every reactor on the same mesh applies it within a second. Two
//! `swarm up` processes on the real Redis, counted on the mesh (not through their own API).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;
use swarm_mesh::RedisMesh;
use swarm_mesh::prelude::*;
use swarm_tests::observed::{
    GROUP, Running, STREAM, done, hang_state, publish, serve_a_and_b, setup, until,
};

/// Publishes `test.hang` signals numbered `from..to` and waits until the reactors' group has
/// settled them all; returns the `n`s handled meanwhile, with how often each was.
async fn run_batch(mesh: &RedisMesh, from: u64, to: u64) -> BTreeMap<u64, u32> {
    for n in from..to {
        publish(mesh, json!({ "n": n })).await;
    }
    until("the batch settled", Duration::from_secs(30), async || {
        let info = mesh.group_info(STREAM, GROUP).await.ok()?;
        (info.pending == 0 && info.lag == 0).then_some(())
    })
    .await;
    done(mesh).await
}

async fn post(port: u16, path: &str) {
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .expect("the reactor answers");
    assert!(response.status().is_success(), "{response:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_unit_stays_disabled_across_restarts_and_on_every_reactor() {
    let s = setup(&[]).await;
    let ((a, port_a), (b, port_b)) = serve_a_and_b(&s.spec, None).await;
    let handled = run_batch(&s.mesh, 0, 200).await;
    assert_eq!(handled.len(), 200, "both serve the unit");

    // Disabled over A's API: within a second, neither A nor B fires it.
    post(port_a, "/v1/units/hang/disable").await;
    let disabled_at = Instant::now();
    until("B applies the change", Duration::from_secs(5), async || {
        hang_state(port_b, None).await.filter(|s| s == "disabled")
    })
    .await;
    let took = disabled_at.elapsed();
    assert!(took < Duration::from_secs(1), "B applied it after {took:?}");
    let handled = run_batch(&s.mesh, 1000, 1200).await;
    assert!(handled.is_empty(), "a disabled unit fired: {handled:?}");

    // A restarted: still disabled, from the first signal on.
    a.kill();
    let a = Running(Some(
        s.spec.start_serving("a", &format!("127.0.0.1:{port_a}")),
    ));
    let state = until("A serves again", Duration::from_secs(30), async || {
        hang_state(port_a, None).await
    })
    .await;
    assert_eq!(state, "disabled");
    b.kill();
    let handled = run_batch(&s.mesh, 2000, 2100).await;
    assert!(handled.is_empty(), "the restarted A fired it: {handled:?}");

    // Enabled on A: B (restarted too) serves it again.
    let b = Running(Some(
        s.spec.start_serving("b", &format!("127.0.0.1:{port_b}")),
    ));
    until("B serves", Duration::from_secs(30), async || {
        hang_state(port_b, None).await.filter(|s| s == "disabled")
    })
    .await;
    post(port_a, "/v1/units/hang/enable").await;
    until("B applies the enable", Duration::from_secs(1), async || {
        hang_state(port_b, None).await.filter(|s| s == "ready")
    })
    .await;
    let handled = run_batch(&s.mesh, 3000, 3100).await;
    assert_eq!(handled.len(), 100);
    assert!(handled.values().all(|&times| times == 1));
    drop((a, b));
}
