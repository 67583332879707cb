//! `swarm up --feed`: signals to publish at start, from a JSON-lines file or standard input.

use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use swarm_mesh::Publish;
use swarm_schemas::{Signal, validate_kind};

/// Parses one `{"kind": ..., "payload": ...}` line into a root signal.
fn parse_feed_line(line: &str) -> anyhow::Result<Signal> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Line {
        kind: String,
        #[serde(default)]
        payload: serde_json::Value,
    }
    let line: Line =
        serde_json::from_str(line).context("expected {\"kind\": \"...\", \"payload\": {...}}")?;
    validate_kind(&line.kind).with_context(|| format!("kind `{}`", line.kind))?;
    Ok(Signal::new(line.kind, line.payload))
}

/// The signals of a feed file (none for `-`, which is read as the reactor runs).
pub(crate) fn read_feed(path: Option<&Path>) -> anyhow::Result<Vec<Signal>> {
    let Some(path) = path.filter(|p| p.as_os_str() != "-") else {
        return Ok(Vec::new());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse_feed_line(l).with_context(|| format!("{}:{}", path.display(), i + 1)))
        .collect()
}

/// Publishes each line of standard input as it comes, from a thread of its own; a bad line is
/// reported and skipped.
fn feed_stdin(mesh: Arc<dyn Publish>, stream: String) {
    // Taken here: the reading thread is not the runtime's and has no current handle.
    let handle = tokio::runtime::Handle::current();
    std::thread::spawn(move || {
        for (i, line) in std::io::stdin().lock().lines().enumerate() {
            let Ok(line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            match parse_feed_line(&line) {
                Ok(signal) => {
                    if let Err(error) = handle.block_on(mesh.publish(&stream, &signal)) {
                        eprintln!("stdin:{}: not published: {error}", i + 1);
                    }
                }
                Err(error) => eprintln!("stdin:{}: {error:#}", i + 1),
            }
        }
    });
}

/// Publishes the signals of the feed file, then, with `from_stdin`, each line of standard
/// input as it comes.
pub(crate) async fn publish_feed(
    mesh: &Arc<dyn Publish>,
    stream: String,
    file: Vec<Signal>,
    from_stdin: bool,
) -> anyhow::Result<()> {
    for signal in file {
        mesh.publish(&stream, &signal).await?;
    }
    if from_stdin {
        feed_stdin(Arc::clone(mesh), stream);
    }
    Ok(())
}
