//! The audit trail: what changed what a swarm runs — loads, swaps, rollbacks, removals,
//! enables and disables (with the token's name and the client's address), refused admin calls,
//! trust changes — kept append-only in PostgreSQL and shared by every reactor on it.

use std::path::Path;
use std::time::Duration;

use swarm_memory::AuditQuery;
use swarm_schemas::{AuditAction, AuditEntry};
use swarm_tests::observed::{serve_a_and_b, setup, until};
use swarm_tests::{TestSwarm, deploy, swarm_binary};

const OPS: &str = "ops-secret-0123456789";
const READER: &str = "reader-secret-0123456";

/// One reactor in process: each change to its units directory is in its trail, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_swaps_rollbacks_and_removals_are_recorded_in_order() {
    let swarm = TestSwarm::new();
    swarm.deploy("fixture-counter-v1", "counter.so");
    let (reactor, _) = swarm.start().await;
    let registry = reactor.registry();
    let file = swarm.units.path().join("counter.so");
    let wait_version = async |version: &str| {
        until(
            "the new version serves",
            Duration::from_secs(10),
            async || {
                registry
                    .status()
                    .iter()
                    .any(|u| u.name == "counter" && u.version == version)
                    .then_some(())
            },
        )
        .await
    };
    // v2 swaps in; a constructor that panics is refused and v2 keeps serving; then the file
    // goes away.
    swarm.deploy("fixture-counter-v2", "counter.so");
    wait_version("2.0.0").await;
    swarm.deploy("fixture-counter-ctor-panic", "counter.so");
    until("the refusal", Duration::from_secs(10), async || {
        (!registry.failures().is_empty()
            || registry.status().iter().any(|u| u.last_error.is_some()))
        .then_some(())
    })
    .await;
    std::fs::remove_file(&file).expect("remove");
    until("the unit unloads", Duration::from_secs(10), async || {
        registry.status().is_empty().then_some(())
    })
    .await;

    let log = reactor.handle().audit().log().clone();
    let entries = until("four entries", Duration::from_secs(5), async || {
        let entries = log
            .read(&AuditQuery {
                limit: 100,
                ..AuditQuery::default()
            })
            .await
            .ok()?;
        (entries.len() >= 4).then_some(entries)
    })
    .await;
    let actions: Vec<AuditAction> = entries.iter().rev().map(|e| e.action).collect();
    assert_eq!(
        actions,
        [
            AuditAction::Load,
            AuditAction::Swap,
            AuditAction::Rollback,
            AuditAction::Remove
        ],
        "{entries:#?}"
    );
    for entry in &entries {
        assert_eq!(entry.unit.as_deref(), Some("counter"));
        assert_eq!(entry.actor, "reactor");
        assert_eq!(entry.process, swarm.config.consumer);
    }
    let (load, swap, rollback) = (&entries[3], &entries[2], &entries[1]);
    let v1 = swarm_tests::sha256sum(&swarm_tests::library("fixture-counter-v1"));
    assert!(
        load.detail.contains("version 1.0.0") && load.detail.contains(&v1),
        "{}",
        load.detail
    );
    assert!(swap.detail.contains("version 2.0.0"), "{}", swap.detail);
    assert!(
        rollback.detail.contains("panicked") && rollback.detail.contains("2.0.0 keeps serving"),
        "{}",
        rollback.detail
    );
    assert_eq!(rollback.outcome, "refused");
    reactor.stop().await;
}

async fn call(method: reqwest::Method, port: u16, path: &str, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(method, format!("http://127.0.0.1:{port}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("the reactor answers")
}

async fn audit(port: u16, query: &str) -> Vec<AuditEntry> {
    let response = call(
        reqwest::Method::GET,
        port,
        &format!("/v1/audit{query}"),
        OPS,
    )
    .await;
    assert!(response.status().is_success(), "{response:?}");
    response.json().await.expect("audit entries")
}

/// Two `swarm up` processes on one PostgreSQL: each reads the whole swarm's trail, admin calls
/// carry the token's name and the client's address, refused calls are recorded, trust changes
/// are seen, and not even SQL can change an entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reactor_on_one_postgres_shares_one_append_only_trail() {
    let database =
        swarm_memory::testkit::fresh_database(&swarm_memory::testkit::database_url()).await;
    let mut s = setup(&[]).await;
    let work = tempfile::tempdir().expect("work dir");
    let tokens = work.path().join("tokens.json");
    std::fs::write(
        &tokens,
        format!(
            r#"[{{"name": "ops", "token": "{OPS}", "scopes": ["read", "admin"]}},
                {{"name": "reader", "token": "{READER}", "scopes": ["read"]}}]"#
        ),
    )
    .expect("tokens file");
    // The hang fixture is trusted; the noop library beside it is not.
    let trust = work.path().join("trust");
    let trust_add = |library: &Path| {
        let status = std::process::Command::new(swarm_binary())
            .args(["trust", "add", "--trust"])
            .arg(&trust)
            .arg(library)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("swarm trust add runs");
        assert!(status.success());
    };
    trust_add(&s.spec.units.join("hang.so"));
    deploy(&s.spec.units, "fixture-noop", "noop.so");
    let models = swarm_memory::testkit::models_dir();
    s.spec.extra_args.extend([
        "--postgres".to_owned(),
        database.clone(),
        "--models".to_owned(),
        models.display().to_string(),
        "--api-tokens".to_owned(),
        tokens.display().to_string(),
        "--trust".to_owned(),
        trust.display().to_string(),
    ]);
    let ((a, port_a), (b, port_b)) = serve_a_and_b(&s.spec, Some(READER)).await;

    // An admin disables on A; a reader's try is refused; the admin enables again on B.
    let disabled = call(reqwest::Method::POST, port_a, "/v1/units/hang/disable", OPS).await;
    assert!(disabled.status().is_success(), "{disabled:?}");
    let refused = call(
        reqwest::Method::POST,
        port_a,
        "/v1/units/hang/enable",
        READER,
    )
    .await;
    assert_eq!(refused.status(), reqwest::StatusCode::FORBIDDEN);
    let enabled = call(reqwest::Method::POST, port_b, "/v1/units/hang/enable", OPS).await;
    assert!(enabled.status().is_success(), "{enabled:?}");
    // Reading the trail takes the admin scope.
    let forbidden = call(reqwest::Method::GET, port_b, "/v1/audit", READER).await;
    assert_eq!(forbidden.status(), reqwest::StatusCode::FORBIDDEN);
    // The noop library is trusted while both run: each sees the trust file change.
    trust_add(&s.spec.units.join("noop.so"));

    let trail = until(
        "the whole swarm's trail on B",
        Duration::from_secs(10),
        async || {
            let trail = audit(port_b, "?limit=1000").await;
            let trusts = trail
                .iter()
                .filter(|e| e.action == AuditAction::Trust)
                .count();
            (trusts >= 2 && trail.iter().any(|e| e.action == AuditAction::Enable)).then_some(trail)
        },
    )
    .await;
    let of = |action: AuditAction| -> Vec<&AuditEntry> {
        trail.iter().filter(|e| e.action == action).collect()
    };
    let mut loaded_by: Vec<&str> = of(AuditAction::Load)
        .iter()
        .filter(|e| e.unit.as_deref() == Some("hang"))
        .map(|e| e.process.as_str())
        .collect();
    loaded_by.sort_unstable();
    assert_eq!(loaded_by, ["a", "b"], "{trail:#?}");
    let mut refused_by: Vec<&str> = of(AuditAction::Refuse)
        .iter()
        .filter(|e| e.detail.contains("noop.so") && e.detail.contains("trust file"))
        .map(|e| e.process.as_str())
        .collect();
    refused_by.sort_unstable();
    assert_eq!(refused_by, ["a", "b"], "{trail:#?}");

    let disables = of(AuditAction::Disable);
    assert_eq!(disables.len(), 1, "{trail:#?}");
    let disable = disables[0];
    assert_eq!(
        (disable.actor.as_str(), disable.process.as_str()),
        ("ops", "a")
    );
    assert_eq!(disable.unit.as_deref(), Some("hang"));
    assert_eq!(disable.outcome, "ok");
    assert!(
        disable
            .client
            .as_deref()
            .is_some_and(|c| c.starts_with("127.0.0.1:")),
        "{disable:?}"
    );
    assert!(disable.detail.contains("POST /v1/units/hang/disable"));
    let enables = of(AuditAction::Enable);
    let by_reader = enables
        .iter()
        .find(|e| e.actor == "reader")
        .expect("the refused enable is recorded");
    assert_eq!(by_reader.outcome, "refused: 403 Forbidden");
    assert_eq!(by_reader.process, "a");
    let by_ops = enables
        .iter()
        .find(|e| e.actor == "ops")
        .expect("the enable");
    assert_eq!(
        (by_ops.process.as_str(), by_ops.outcome.as_str()),
        ("b", "ok")
    );
    let noop = swarm_tests::sha256sum(&s.spec.units.join("noop.so"));
    for trust in of(AuditAction::Trust) {
        assert!(trust.detail.contains(&noop), "{trust:?}");
    }
    // Newest first, and A reads the same trail.
    assert!(trail.windows(2).all(|w| w[0].seq > w[1].seq));
    let on_a = audit(port_a, "?limit=1000").await;
    assert!(on_a.len() >= trail.len());
    assert!(trail.iter().all(|e| on_a.contains(e)));
    // Filters, and bad ones.
    let only = audit(port_a, "?unit=hang&action=disable").await;
    assert_eq!(only.len(), 1);
    for bad in ["?action=delete", "?limit=0", "?unit=Bad_Name", "?nope=1"] {
        let response = call(
            reqwest::Method::GET,
            port_a,
            &format!("/v1/audit{bad}"),
            OPS,
        )
        .await;
        assert_eq!(response.status(), reqwest::StatusCode::BAD_REQUEST, "{bad}");
    }

    // The command line prints it.
    let output = std::process::Command::new(swarm_binary())
        .args(["audit", "--server", &format!("http://127.0.0.1:{port_b}")])
        .args(["--token", OPS, "--action", "disable"])
        .output()
        .expect("swarm audit runs");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        printed.contains("disable") && printed.contains("ops") && printed.contains("hang"),
        "{printed}"
    );
    assert_eq!(printed.lines().count(), 1, "{printed}");

    // Not even SQL rewrites it.
    let pool = sqlx::PgPool::connect(&database).await.expect("connect");
    for statement in [
        "UPDATE audit SET actor = 'someone else'",
        "DELETE FROM audit",
    ] {
        let error = sqlx::query(statement)
            .execute(&pool)
            .await
            .expect_err("refused");
        assert!(error.to_string().contains("append-only"), "{error}");
    }
    drop((a, b));
}
