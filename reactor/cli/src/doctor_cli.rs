//! `swarm doctor`: checks what `swarm up` needs, one line per check, and says what to do about
//! anything wrong.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use swarm_memory::{Embedder, PgMemory};
use swarm_mesh::{RedisMesh, RedisMeshConfig};
use swarm_reactor::Registry;

/// How long a service may take to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub(crate) struct DoctorArgs {
    #[command(flatten)]
    config: crate::config_cli::ConfigFile,
    #[command(flatten)]
    units: crate::args::UnitsDir,
    #[command(flatten)]
    mesh: crate::args::MeshArgs,
    #[command(flatten)]
    memory: crate::memory_cli::MemoryArgs,
    #[command(flatten)]
    http: crate::serve_cli::HttpArgs,
}

/// One check's verdict.
enum Verdict {
    Ok(String),
    /// Not checked, and why that is fine.
    Skipped(String),
    /// Wrong: what is wrong, and what to do.
    Fail(String, &'static str),
}

fn line(name: &str, verdict: &Verdict) -> String {
    match verdict {
        Verdict::Ok(what) => format!("ok    {name:<10} {what}"),
        Verdict::Skipped(why) => format!("skip  {name:<10} {why}"),
        Verdict::Fail(what, fix) => format!("FAIL  {name:<10} {what} → {fix}"),
    }
}

fn check_config(args: &DoctorArgs) -> Verdict {
    // The file was read, and its keys checked, before the arguments got here.
    let file = args.config.path().map_or_else(
        || "no configuration file".to_owned(),
        |file| format!("settings from {}", file.display()),
    );
    match args.http.config("swarm:signals", "reactor") {
        Ok(Some(config)) => {
            let schemas = config.payload_schemas.kinds().count();
            Verdict::Ok(format!(
                "{file}; {} API tokens, {schemas} payload schemas",
                if config.tokens.is_empty() {
                    "no"
                } else {
                    "valid"
                },
            ))
        }
        Ok(None) => Verdict::Ok(format!("{file}; inspector off (--no-http)")),
        Err(error) => Verdict::Fail(
            format!("{error:#}"),
            "fix the file named (see `swarm up --help`)",
        ),
    }
}

fn check_units(args: &DoctorArgs) -> Verdict {
    let dir = &args.units.dir;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries.count(),
        Err(error) => {
            return Verdict::Fail(
                format!("{}: {error}", dir.display()),
                "create it, fix its permissions, or pass --units DIR",
            );
        }
    };
    let private = match swarm_reactor::private_dir() {
        Ok(private) => private,
        Err(error) => {
            return Verdict::Fail(
                format!("cannot create a private directory for unit copies: {error}"),
                "make the temporary directory (TMPDIR) writable",
            );
        }
    };
    let policy = match args.units.policy() {
        Ok(policy) => policy,
        Err(error) => {
            return Verdict::Fail(
                format!("{error:#}"),
                "fix the trust file, or pass --trust FILE with one that exists",
            );
        }
    };
    if let Err(problem) = policy.check_owner(dir) {
        return Verdict::Fail(
            problem,
            "run the command named, or pass --insecure-units-dir",
        );
    }
    let registry = Registry::new(private.path().to_owned(), Default::default()).with_trust(policy);
    if let Err(error) = registry.load_dir(dir) {
        return Verdict::Fail(
            format!("{}: {error}", dir.display()),
            "fix the directory's permissions",
        );
    }
    let loaded = registry.status().len();
    let refused = registry.failures();
    if refused.is_empty() {
        let names: Vec<String> = registry.status().into_iter().map(|u| u.name).collect();
        return Verdict::Ok(format!(
            "{}: {loaded} units load ({}); {entries} entries",
            dir.display(),
            names.join(", ")
        ));
    }
    let reasons: Vec<String> = refused
        .iter()
        .map(|f| format!("{}: {}", f.file.display(), f.error))
        .collect();
    Verdict::Fail(
        format!(
            "{loaded} units load, {} refused: {}",
            refused.len(),
            reasons.join("; ")
        ),
        "rebuild or remove the refused files (`swarm units` lists them)",
    )
}

async fn check_redis(args: &DoctorArgs) -> Verdict {
    let Some(url) = &args.mesh.redis_url else {
        return Verdict::Skipped("no --redis: the mesh is in-process (one process only)".into());
    };
    let connect = async {
        let mesh = RedisMesh::connect(RedisMeshConfig::new(url.clone())).await?;
        mesh.server_version().await
    };
    match tokio::time::timeout(ANSWER_WITHIN, connect).await {
        Ok(Ok(version)) => {
            let major: u32 = version
                .split('.')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            if major < 7 {
                Verdict::Fail(
                    format!("{url}: Redis {version}; swarm needs 7 or newer (XAUTOCLAIM)"),
                    "upgrade Redis, or run ops/start-redis",
                )
            } else {
                Verdict::Ok(format!("{url}: Redis {version}"))
            }
        }
        Ok(Err(error)) => Verdict::Fail(
            format!("{url}: {error}"),
            "start it (ops/start-redis) or fix --redis / SWARM_REDIS_URL",
        ),
        Err(_) => Verdict::Fail(
            format!("{url}: no answer within {} s", ANSWER_WITHIN.as_secs()),
            "check the host and port, or start it (ops/start-redis)",
        ),
    }
}

async fn check_postgres(args: &DoctorArgs) -> Verdict {
    let Some(url) = &args.memory.database_url else {
        return Verdict::Skipped("no --postgres: memory is in-process (forgotten at exit)".into());
    };
    match PgMemory::probe(url, ANSWER_WITHIN).await {
        Ok(probe) => match (&probe.vector_installed, &probe.vector_available) {
            (Some(installed), _) => Verdict::Ok(format!(
                "PostgreSQL {} with pgvector {installed}; {}",
                probe.server_version,
                shared_memory(&probe)
            )),
            (None, Some(available)) => Verdict::Ok(format!(
                "PostgreSQL {}; pgvector {available} available (swarm up installs it); {}",
                probe.server_version,
                shared_memory(&probe)
            )),
            (None, None) => Verdict::Fail(
                format!("PostgreSQL {} has no pgvector", probe.server_version),
                "use the project's PostgreSQL (ops/start-postgres) or install pgvector",
            ),
        },
        Err(error) => Verdict::Fail(
            format!("{error}"),
            "start it (ops/start-postgres) or fix --postgres / SWARM_DATABASE_URL",
        ),
    }
}

/// Shared buffers and whether they are in huge pages: a large memory searches about twice as
/// fast in huge pages (ops/start-postgres sets them up).
fn shared_memory(probe: &swarm_memory::PgProbe) -> String {
    let pages = match probe.huge_pages.as_deref() {
        Some("on") => "in huge pages",
        Some(_) => {
            "in ordinary pages (huge pages make search of a large memory about twice as fast)"
        }
        None => "huge pages not reported",
    };
    format!("shared buffers {} {pages}", probe.shared_buffers)
}

async fn check_model(args: &DoctorArgs) -> Verdict {
    let dir = args.memory.models_dir.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        let embedder = swarm_memory::TractEmbedder::load_dir(&dir)?;
        let started = Instant::now();
        let vectors = embedder.embed(&["swarm doctor checks the model"])?;
        Ok::<_, swarm_memory::EmbedError>((embedder.dimensions(), vectors.len(), started.elapsed()))
    })
    .await;
    match loaded {
        Ok(Ok((dimensions, 1, took))) => Verdict::Ok(format!(
            "{}: embeds ({dimensions} dimensions, {:.1} ms)",
            args.memory.models_dir.display(),
            took.as_secs_f64() * 1e3
        )),
        Ok(Ok((_, n, _))) => Verdict::Fail(
            format!("one text gave {n} embeddings"),
            "fetch the model again (ops/fetch-model)",
        ),
        Ok(Err(error)) => Verdict::Fail(
            format!("{}: {error}", args.memory.models_dir.display()),
            "fetch it with ops/fetch-model, or pass --models DIR",
        ),
        Err(error) => Verdict::Fail(
            format!("loading the model crashed: {error}"),
            "fetch the model again (ops/fetch-model)",
        ),
    }
}

async fn check_inspector(args: &DoctorArgs) -> Verdict {
    let Ok(Some(config)) = args.http.config("swarm:signals", "reactor") else {
        return Verdict::Skipped(
            "inspector off, or its configuration is wrong (see config)".into(),
        );
    };
    let addr = config.serving_addr();
    let note = if addr == config.addr {
        ""
    } else {
        " (loopback only: no API tokens)"
    };
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => {
            let bound = listener.local_addr().map_or(addr, |a| a);
            Verdict::Ok(format!("http://{bound}/ is free{note}"))
        }
        Err(error) => match running_health(addr).await {
            // A swarm already serves there: report on it instead.
            Some(health) if health.problems.is_empty() => Verdict::Ok(format!(
                "a running swarm serves http://{addr}/ and is healthy"
            )),
            Some(health) => {
                let problems: Vec<String> = health
                    .problems
                    .iter()
                    .map(|p| format!("unit `{}`: {}", p.unit, p.reason))
                    .collect();
                Verdict::Fail(
                    format!(
                        "the swarm serving http://{addr}/ is {}: {}",
                        health.status,
                        problems.join("; ")
                    ),
                    "deploy a fixed version of the unit or enable it again (POST /v1/units/NAME/enable); restart the process to free threads stuck in unit calls",
                )
            }
            None => Verdict::Fail(
                format!("cannot listen on {addr}: {error}"),
                "stop what uses it (another swarm up?) or pass --http ADDR",
            ),
        },
    }
}

/// The health of a swarm already serving on `addr`, if one answers there.
async fn running_health(addr: std::net::SocketAddr) -> Option<swarm_inspector::Health> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .build()
        .ok()?;
    let response = client
        .get(format!("http://{addr}/v1/health"))
        .send()
        .await
        .ok()?;
    response.json().await.ok()
}

pub(crate) async fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let checks = [
        ("config", check_config(&args)),
        ("units", check_units(&args)),
        ("redis", check_redis(&args).await),
        ("postgres", check_postgres(&args).await),
        ("model", check_model(&args).await),
        ("inspector", check_inspector(&args).await),
    ];
    let mut failed = 0;
    for (name, verdict) in &checks {
        println!("{}", line(name, verdict));
        if matches!(verdict, Verdict::Fail(..)) {
            failed += 1;
        }
    }
    if failed > 0 {
        println!("{failed} of {} checks failed", checks.len());
        Ok(ExitCode::FAILURE)
    } else {
        Ok(ExitCode::SUCCESS)
    }
}
