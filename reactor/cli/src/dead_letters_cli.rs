//! `swarm dead-letters`: the dead letters of a Redis mesh, listed, replayed or purged.
//!
//! A mesh keeps one dead-letter stream per partition of its signal stream (`S:dead`, or
//! `S#k:dead`); a letter is named by its entry id, `k/ID` when the stream has partitions.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::Serialize;
use swarm_mesh::partition::partition_stream;
use swarm_mesh::prelude::*;
use swarm_mesh::{Entry, EntryId, RedisMesh, dead_letter_stream};
use swarm_schemas::{DeadLetter, Signal};

use crate::args::MeshArgs;

#[derive(Debug, Args)]
pub(crate) struct DeadLettersArgs {
    #[command(flatten)]
    mesh: MeshArgs,
    /// The signal stream whose dead letters these are.
    #[arg(long, default_value = "swarm:signals")]
    stream: String,
    #[command(subcommand)]
    command: DeadLettersCommand,
}

#[derive(Debug, Subcommand)]
enum DeadLettersCommand {
    /// List dead letters, oldest first: why each signal was not handled, by which unit.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON lines (each letter with its id) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Publish the signals of dead letters again, then remove the letters. Each goes out as a
    /// new signal (a new id, attempt 0) in the same conversation and trace, with the same
    /// partition key and parent: every unit it matches sees it again.
    Replay {
        /// The letters (as `list` names them).
        ids: Vec<String>,
        /// Every letter.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Remove dead letters.
    Purge {
        /// The letters (as `list` names them).
        ids: Vec<String>,
        /// Every letter.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
}

/// One dead letter as listed.
#[derive(Debug, Serialize)]
struct Listed {
    id: String,
    kind: String,
    #[serde(flatten)]
    letter: DeadLetter,
}

/// The dead-letter streams of a mesh: one per partition.
struct Letters {
    mesh: std::sync::Arc<RedisMesh>,
    streams: Vec<String>,
}

impl Letters {
    /// How `list` names entry `id` of partition `k`.
    fn name(&self, k: usize, id: EntryId) -> String {
        if self.streams.len() > 1 {
            format!("{k}/{id}")
        } else {
            id.to_string()
        }
    }

    /// The partition and entry a name stands for.
    fn parse(&self, name: &str) -> anyhow::Result<(usize, EntryId)> {
        let (k, id) = match name.split_once('/') {
            Some((k, id)) => {
                let k: usize = k
                    .parse()
                    .with_context(|| format!("`{name}`: `{k}` is not a partition number"))?;
                (k, id)
            }
            None => (0, name),
        };
        if k >= self.streams.len() || (self.streams.len() > 1 && !name.contains('/')) {
            bail!(
                "`{name}` names no dead letter: the stream has {} partition(s); name letters as `list` does",
                self.streams.len()
            );
        }
        let id: EntryId = id.parse().with_context(|| format!("`{name}`"))?;
        Ok((k, id))
    }

    /// Every letter (up to `limit`), oldest first within each partition.
    async fn read(&self, limit: usize) -> anyhow::Result<Vec<(usize, Entry)>> {
        let mut found = Vec::new();
        for (k, stream) in self.streams.iter().enumerate() {
            let mut after = None;
            while found.len() < limit {
                let page = self
                    .mesh
                    .range(stream, after, (limit - found.len()).min(500))
                    .await?;
                let Some(last) = page.last() else { break };
                after = Some(last.id);
                found.extend(page.into_iter().map(|e| (k, e)));
            }
        }
        Ok(found)
    }

    /// The letters named by `ids`, or every one with `all`.
    async fn chosen(&self, ids: &[String], all: bool) -> anyhow::Result<Vec<(usize, Entry)>> {
        if all {
            return self.read(usize::MAX).await;
        }
        if ids.is_empty() {
            bail!("name the letters to act on, or pass --all");
        }
        let mut chosen = Vec::new();
        for name in ids {
            let (k, id) = self.parse(name)?;
            // The range starts after the id just before this one.
            let after = match id.seq.checked_sub(1) {
                Some(seq) => Some(EntryId { ms: id.ms, seq }),
                None => id.ms.checked_sub(1).map(|ms| EntryId { ms, seq: u64::MAX }),
            };
            let entry = self
                .mesh
                .range(&self.streams[k], after, 1)
                .await?
                .into_iter()
                .find(|e| e.id == id)
                .with_context(|| format!("no dead letter `{name}`"))?;
            chosen.push((k, entry));
        }
        Ok(chosen)
    }
}

pub(crate) async fn run(args: DeadLettersArgs) -> anyhow::Result<ExitCode> {
    let mesh = args
        .mesh
        .redis()
        .await?
        .context("dead letters live on a Redis mesh: pass --redis URL (or SWARM_REDIS_URL)")?;
    let partitions = mesh.partitions(&args.stream, None).await?;
    let streams = (0..partitions)
        .map(|k| dead_letter_stream(&partition_stream(&args.stream, k, partitions)))
        .collect();
    let letters = Letters { mesh, streams };
    match args.command {
        DeadLettersCommand::List { limit, json } => list(&letters, limit, json).await,
        DeadLettersCommand::Replay { ids, all } => {
            replay(&letters, &args.stream, &letters.chosen(&ids, all).await?).await
        }
        DeadLettersCommand::Purge { ids, all } => {
            let chosen = letters.chosen(&ids, all).await?;
            let mut removed = 0;
            for (k, entry) in &chosen {
                removed += letters
                    .mesh
                    .delete(&letters.streams[*k], &[entry.id])
                    .await?;
            }
            println!("{removed} dead letter(s) removed");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn list(letters: &Letters, limit: usize, json: bool) -> anyhow::Result<ExitCode> {
    for (k, entry) in letters.read(limit).await? {
        let name = letters.name(k, entry.id);
        let Ok(signal) = &entry.body else {
            println!("{name}  (not a signal: {:?})", entry.body);
            continue;
        };
        let letter: Option<DeadLetter> = serde_json::from_value(signal.payload.clone()).ok();
        let Some(letter) = letter else {
            println!("{name}  (not a dead letter: kind `{}`)", signal.kind);
            continue;
        };
        let kind = letter
            .original
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("?")
            .to_owned();
        if json {
            let listed = Listed {
                id: name,
                kind,
                letter,
            };
            println!("{}", serde_json::to_string(&listed)?);
        } else {
            println!(
                "{name:<24} {} {kind:<24} {:<16} {}",
                signal.created_at.format("%Y-%m-%d %H:%M:%S"),
                letter.unit.as_deref().unwrap_or("-"),
                letter.reason
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Publishes each letter's signal again and removes the letter; a letter whose original is not
/// a signal (an undecodable entry) is kept, and the exit code says so.
async fn replay(
    letters: &Letters,
    stream: &str,
    chosen: &[(usize, Entry)],
) -> anyhow::Result<ExitCode> {
    let mut kept = 0;
    for (k, entry) in chosen {
        let name = letters.name(*k, entry.id);
        let original = entry
            .body
            .as_ref()
            .ok()
            .and_then(|s| serde_json::from_value::<DeadLetter>(s.payload.clone()).ok())
            .and_then(|l| serde_json::from_value::<Signal>(l.original).ok());
        let Some(original) = original else {
            eprintln!("{name}: its original is not a signal; kept (purge it to drop it)");
            kept += 1;
            continue;
        };
        let was = original.id;
        let again = Signal {
            id: uuid::Uuid::now_v7(),
            attempt: 0,
            created_at: chrono::Utc::now(),
            ..original
        };
        letters.mesh.publish(stream, &again).await?;
        letters
            .mesh
            .delete(&letters.streams[*k], &[entry.id])
            .await?;
        println!(
            "{name}: {} {was} published again as {}",
            again.kind, again.id
        );
    }
    Ok(if kept == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
