//! The API tokens file, watched: a change takes effect without a restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, new_debouncer};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::auth::{Tokens, TokensError};

/// Why a tokens file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TokensFileError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file's content is not a valid tokens list.
    #[error("{path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: TokensError,
    },
    /// The file's directory cannot be watched.
    #[error("cannot watch {path}: {source}")]
    Watch {
        /// The file.
        path: PathBuf,
        /// Why.
        source: notify::Error,
    },
}

/// Reads a tokens file.
pub fn read_tokens(path: &Path) -> Result<Tokens, TokensFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokensFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    Tokens::from_json(&text).map_err(|source| TokensFileError::Invalid {
        path: path.to_owned(),
        source,
    })
}

/// Watches `path` (through its directory, so a file replaced by a rename is seen) and makes
/// its tokens `tokens`' whenever it changes. A file that cannot be read or does not parse, or
/// that holds no tokens where some were configured (that would open every endpoint), leaves
/// the tokens as they were, and the log and `swarm_inspector_tokens_reloads_total` say why.
pub(crate) fn watch_tokens(
    path: PathBuf,
    tokens: Tokens,
    mut shutdown: watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> Result<(), TokensFileError> {
    let watch_error = |source| TokensFileError::Watch {
        path: path.clone(),
        source,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(ToOwned::to_owned);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut debouncer = new_debouncer(
        Duration::from_millis(200),
        move |result: DebounceEventResult| {
            let ours = match result {
                Ok(events) => events.iter().any(|e| e.path.file_name() == name.as_deref()),
                Err(_) => true,
            };
            if ours {
                let _ = tx.send(());
            }
        },
    )
    .map_err(watch_error)?;
    debouncer
        .watcher()
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(watch_error)?;
    tasks.spawn(async move {
        // The watch lasts as long as this task holds the debouncer.
        let _debouncer = debouncer;
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                changed = rx.recv() => if changed.is_none() { return },
            }
            reload(&path, &tokens);
        }
    });
    Ok(())
}

fn reload(path: &Path, tokens: &Tokens) {
    let outcome = match read_tokens(path) {
        Ok(new) if new.is_empty() && !tokens.is_empty() => {
            tracing::error!(path = %path.display(), "the tokens file now holds no token: refused (it would open every endpoint); the tokens in use are kept");
            "refused"
        }
        Ok(new) => {
            tokens.replace(&new);
            tracing::info!(path = %path.display(), tokens = new.len(), "API tokens reloaded");
            "reloaded"
        }
        Err(error) => {
            tracing::error!(%error, "the tokens file cannot be used; the tokens in use are kept");
            "refused"
        }
    };
    metrics::counter!("swarm_inspector_tokens_reloads_total", "outcome" => outcome).increment(1);
}
