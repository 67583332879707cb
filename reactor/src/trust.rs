//! Which unit libraries may load.
//!
//! A unit is native code run with the reactor's rights, so two things are checked before a
//! library is opened:
//! - **Who can put code there.** The units directory and each library must be owned by the
//!   user running the reactor (or root) and writable by no one else: anyone who can write
//!   there can run code in this process. A refusal names the command that fixes it;
//!   `--insecure-units-dir` overrides, and says so at every load.
//! - **Which code.** With a trust file, only libraries whose SHA-256 digest is on it load. The
//!   file has one `<digest>  <name>` line per library (the format of `sha256sum`, so its
//!   output can be appended as is); `#` starts a comment. It is read again at every load, so
//!   `swarm trust add` takes effect with the next deployment without a restart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The SHA-256 digest of `bytes`, in lower-case hex (as `sha256sum` prints it).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Why a trust file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The file could not be read or written.
    #[error("trust file {path}: {message}")]
    Io {
        /// The trust file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A line is not `<64 hex digits>  <name>`, a comment or blank.
    #[error("trust file {path}, line {line}: {message}")]
    Syntax {
        /// The trust file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
}

/// The digests a trust file allows, each with the name written beside it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustFile {
    digests: BTreeMap<String, String>,
}

impl TrustFile {
    /// Reads and parses the trust file at `path`.
    pub fn read(path: &Path) -> Result<Self, TrustError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrustError::Io {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Self::parse(path, &text)
    }

    /// Parses a trust file's text; `path` is only for messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, TrustError> {
        let mut digests = BTreeMap::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let (digest, name) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            // `sha256sum` marks binary-mode reads with `*` before the name.
            let name = name.trim().trim_start_matches('*');
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(TrustError::Syntax {
                    path: path.to_owned(),
                    line: n + 1,
                    message: format!(
                        "`{digest}` is not a SHA-256 digest (64 hex digits); lines are `<digest>  <name>`, as `sha256sum` prints them"
                    ),
                });
            }
            digests.insert(digest.to_ascii_lowercase(), name.to_owned());
        }
        Ok(Self { digests })
    }

    /// Whether `digest` (lower-case hex) is allowed.
    pub fn allows(&self, digest: &str) -> bool {
        self.digests.contains_key(digest)
    }

    /// The allowed digests, each with its name.
    pub fn digests(&self) -> &BTreeMap<String, String> {
        &self.digests
    }

    /// Adds the library at `library` to the trust file at `path` (created if missing).
    /// Returns its digest, and whether it was not on the file before.
    pub fn add(path: &Path, library: &Path) -> Result<(String, bool), TrustError> {
        let io = |p: &Path, e: std::io::Error| TrustError::Io {
            path: p.to_owned(),
            message: e.to_string(),
        };
        let bytes = std::fs::read(library).map_err(|e| io(library, e))?;
        let digest = sha256_hex(&bytes);
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(path, e)),
        };
        if Self::parse(path, &text)?.allows(&digest) {
            return Ok((digest, false));
        }
        let name = library.file_name().map_or_else(
            || library.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let mut text = text;
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        let _ = writeln!(text, "{digest}  {name}");
        // Written whole and renamed over, so a reactor reading it never sees half a line.
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(|e| io(path, e))?;
        std::io::Write::write_all(&mut temp, text.as_bytes()).map_err(|e| io(path, e))?;
        temp.persist(path).map_err(|e| io(path, e.error))?;
        Ok((digest, true))
    }
}

/// How often [`audit_changes`] reads the trust file.
const TRUST_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// The digests `before` and `after` differ by, as audit details: added ones, then removed.
fn trust_changes(before: &TrustFile, after: &TrustFile) -> Vec<String> {
    let added = after
        .digests
        .iter()
        .filter(|(d, _)| !before.allows(d))
        .map(|(d, name)| format!("trusted sha256 {d} ({name})"));
    let removed = before
        .digests
        .iter()
        .filter(|(d, _)| !after.allows(d))
        .map(|(d, name)| format!("no longer trusted: sha256 {d} ({name})"));
    added.chain(removed).collect()
}

/// Reads the trust file at `path` every second until `shutdown`, and records each digest
/// added to or removed from it in `audit`. A file that cannot be read or parsed is logged
/// once and counts as unchanged.
pub(crate) async fn audit_changes(
    path: PathBuf,
    audit: swarm_memory::AuditTrail,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let read = |path: &Path| TrustFile::read(path);
    let mut known = read(&path).unwrap_or_default();
    let mut failing = false;
    let mut tick = tokio::time::interval(TRUST_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let now = match read(&path) {
            Ok(now) => now,
            Err(error) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(%error, "cannot read the trust file; libraries are refused until it can be read");
                }
                continue;
            }
        };
        failing = false;
        for detail in trust_changes(&known, &now) {
            tracing::info!(file = %path.display(), "{detail}");
            audit.record(
                "trust file",
                None,
                swarm_schemas::AuditAction::Trust,
                None,
                "ok",
                format!("{detail} in {}", path.display()),
            );
        }
        known = now;
    }
}

/// What the reactor checks before it opens a library.
#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    /// The trust file, if libraries must be on one.
    pub trust_file: Option<PathBuf>,
    /// Load from a directory or library others can write, or that another user owns, with a
    /// warning instead of a refusal.
    pub insecure_units_dir: bool,
}

impl TrustPolicy {
    /// Checks that `path` (the units directory, or a library in it) is owned by this user or
    /// root and writable by no one else. `Err` says what is wrong and the command that fixes
    /// it; with `insecure_units_dir` the problem is logged and `Ok` returned.
    pub fn check_owner(&self, path: &Path) -> Result<(), String> {
        match unsafe_to_load_from(path) {
            Some(problem) if self.insecure_units_dir => {
                tracing::warn!(
                    path = %path.display(),
                    "--insecure-units-dir: loading anyway, though {problem}"
                );
                Ok(())
            }
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }

    /// Checks a library's SHA-256 `digest` (lower-case hex) against the trust file, if there
    /// is one. `Err` has the digest in its message.
    pub fn check_digest(&self, library: &Path, digest: &str) -> Result<(), String> {
        let Some(trust_file) = &self.trust_file else {
            return Ok(());
        };
        let trusted = TrustFile::read(trust_file).map_err(|e| e.to_string())?;
        if trusted.allows(digest) {
            return Ok(());
        }
        Err(format!(
            "its sha256 {digest} is not in the trust file {}; if you trust it: swarm trust add {} --trust {}",
            trust_file.display(),
            library.display(),
            trust_file.display()
        ))
    }
}

/// Why code at `path` could be replaced by someone other than this user, if it could.
fn unsafe_to_load_from(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) => return Some(format!("{} cannot be inspected: {e}", path.display())),
    };
    let me = rustix::process::geteuid().as_raw();
    replaceable_by_others(path, meta.uid(), meta.mode(), me)
}

/// Why a file owned by `owner` with permission bits `mode` could be replaced by someone other
/// than user `me`, if it could.
fn replaceable_by_others(path: &Path, owner: u32, mode: u32, me: u32) -> Option<String> {
    if owner != me && owner != 0 {
        return Some(format!(
            "{} is owned by uid {owner}, not by this user (uid {me}) or root: that user can replace the code this reactor runs. Fix: chown {me} {}",
            path.display(),
            path.display()
        ));
    }
    let writable = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => "its group and all other users",
        (true, false) => "its group",
        (false, true) => "all other users",
        (false, false) => return None,
    };
    Some(format!(
        "{} is writable by {writable}: anyone who can write there can run code in this reactor. Fix: chmod go-w {}",
        path.display(),
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sha256sum_output_comments_and_blank_lines() {
        let a = "a".repeat(64);
        let b = "B".repeat(64);
        let text = format!("# units\n{a}  echo.so\n\n{b} *other.so  # binary mode\n");
        let file = TrustFile::parse(Path::new("t"), &text).expect("parses");
        assert!(file.allows(&a));
        assert!(
            file.allows(&"b".repeat(64)),
            "digests compare in lower case"
        );
        assert_eq!(file.digests()[&a], "echo.so");
        assert_eq!(file.digests()[&"b".repeat(64)], "other.so");
        assert!(!file.allows(&"c".repeat(64)));
    }

    #[test]
    fn trust_changes_name_added_and_removed_digests() {
        let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        let before =
            TrustFile::parse(Path::new("t"), &format!("{a}  a.so\n{b}  b.so\n")).expect("parses");
        let after =
            TrustFile::parse(Path::new("t"), &format!("{b}  b.so\n{c}  c.so\n")).expect("parses");
        assert_eq!(
            trust_changes(&before, &after),
            vec![
                format!("trusted sha256 {c} (c.so)"),
                format!("no longer trusted: sha256 {a} (a.so)"),
            ]
        );
        assert!(trust_changes(&after, &after).is_empty());
    }

    #[test]
    fn a_line_that_is_not_a_digest_is_refused_with_its_number() {
        let text = format!("{}  ok.so\nnot-a-digest  bad.so\n", "a".repeat(64));
        let error = TrustFile::parse(Path::new("trust"), &text).expect_err("refused");
        assert!(error.to_string().contains("line 2"), "{error}");
        assert!(error.to_string().contains("not-a-digest"), "{error}");
    }

    #[test]
    fn add_appends_the_digest_once() {
        let dir = tempfile::tempdir().expect("dir");
        let library = dir.path().join("unit.so");
        std::fs::write(&library, b"code").expect("write");
        let trust = dir.path().join("trust");
        let (digest, added) = TrustFile::add(&trust, &library).expect("added");
        assert!(added);
        assert_eq!(digest, sha256_hex(b"code"));
        let (_, again) = TrustFile::add(&trust, &library).expect("added");
        assert!(!again, "already there");
        let text = std::fs::read_to_string(&trust).expect("read");
        assert_eq!(text, format!("{digest}  unit.so\n"));
    }

    #[test]
    fn a_library_another_user_owns_is_refused_with_the_fix() {
        let path = Path::new("/srv/units/echo.so");
        let problem = replaceable_by_others(path, 1001, 0o644, 1000).expect("refused");
        assert!(problem.contains("owned by uid 1001"), "{problem}");
        assert!(
            problem.contains("Fix: chown 1000 /srv/units/echo.so"),
            "{problem}"
        );
        assert_eq!(
            replaceable_by_others(path, 0, 0o755, 1000),
            None,
            "root's is fine"
        );
        assert_eq!(replaceable_by_others(path, 1000, 0o755, 1000), None);
        let problem = replaceable_by_others(path, 1000, 0o664, 1000).expect("refused");
        assert!(problem.contains("writable by its group:"), "{problem}");
    }

    #[test]
    fn a_directory_others_can_write_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("dir");
        let policy = TrustPolicy::default();
        assert_eq!(policy.check_owner(dir.path()), Ok(()));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let problem = policy.check_owner(dir.path()).expect_err("refused");
        assert!(
            problem.contains("its group and all other users"),
            "{problem}"
        );
        assert!(
            problem.contains(&format!("chmod go-w {}", dir.path().display())),
            "{problem}"
        );
        let lenient = TrustPolicy {
            insecure_units_dir: true,
            ..TrustPolicy::default()
        };
        assert_eq!(lenient.check_owner(dir.path()), Ok(()));
    }
}
