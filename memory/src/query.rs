//! What can be asked of a memory: similarity search, statistics, retention.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use swarm_schemas::{ExecutionRecord, Signal};

use crate::MemoryError;

/// Largest `k` a search accepts.
pub const MAX_K: usize = 1_000;

/// What a search looks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// Free text, embedded as it is.
    Text(String),
    /// A signal, embedded by its shape.
    Signal(Box<Signal>),
    /// A signal's shape already taken ([`crate::Shape::of`]); what a caller keeps instead of
    /// the whole signal.
    Shape(crate::Shape),
    /// A vector already embedded (by the same model as the memory's).
    Vector(Vec<f32>),
}

/// Keep executions by outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeFilter {
    /// Only successes.
    Success,
    /// Only failures.
    Failure,
}

/// How a search orders the shapes it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fusion {
    /// The nearest shapes by vector fused by reciprocal rank with the shapes that hold every
    /// word of the probe (full-text, ranked like PostgreSQL's `ts_rank`). A probe without words
    /// (a vector) is searched by vector alone.
    #[default]
    Hybrid,
    /// The nearest shapes by vector alone.
    Vector,
}

/// A similarity search over executions.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    /// What to look for.
    pub probe: Probe,
    /// Only signals of this kind.
    pub kind: Option<String>,
    /// Only executions by this unit.
    pub unit: Option<String>,
    /// Only successes or only failures.
    pub outcome: Option<OutcomeFilter>,
    /// Only executions started at or after this.
    pub since: Option<DateTime<Utc>>,
    /// Only executions started before this.
    pub until: Option<DateTime<Utc>>,
    /// How many executions, at most (1 ..= [`MAX_K`]).
    pub k: usize,
    /// At most this many executions of any one signal shape (the newest), so that the nearest
    /// few shapes do not fill all of `k`; `None`: no limit.
    pub per_shape: Option<usize>,
    /// Vector neighbours alone, or fused with full-text matches.
    pub fusion: Fusion,
}

impl SearchQuery {
    /// A search for free text, no filters, 10 results.
    pub fn text(text: impl Into<String>) -> Self {
        Self::new(Probe::Text(text.into()))
    }

    /// A search for signals of `shape`, no filters, 10 results.
    pub fn shape(shape: crate::Shape) -> Self {
        Self::new(Probe::Shape(shape))
    }

    /// A search for signals shaped like `signal`, no filters, 10 results.
    pub fn signal(signal: Signal) -> Self {
        Self::new(Probe::Signal(Box::new(signal)))
    }

    fn new(probe: Probe) -> Self {
        Self {
            probe,
            kind: None,
            unit: None,
            outcome: None,
            since: None,
            until: None,
            k: 10,
            per_shape: None,
            fusion: Fusion::default(),
        }
    }

    /// Only signals of `kind`.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Only executions by `unit`.
    pub fn unit(mut self, unit: impl Into<String>) -> Self {
        self.unit = Some(unit.into());
        self
    }

    /// Only successes or only failures.
    pub fn outcome(mut self, outcome: OutcomeFilter) -> Self {
        self.outcome = Some(outcome);
        self
    }

    /// Only executions started in `since .. until`.
    pub fn between(mut self, since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> Self {
        self.since = since;
        self.until = until;
        self
    }

    /// At most `k` executions.
    pub fn k(mut self, k: usize) -> Self {
        self.k = k;
        self
    }

    /// At most `n` executions per signal shape.
    pub fn per_shape(mut self, n: usize) -> Self {
        self.per_shape = Some(n);
        self
    }

    /// Orders shapes by vector alone, or fused with full-text matches.
    pub fn fusion(mut self, fusion: Fusion) -> Self {
        self.fusion = fusion;
        self
    }

    /// The words a hybrid search matches: the text, or the shape's text; none for a vector
    /// probe or a vector-only search.
    pub fn words(&self) -> Option<std::borrow::Cow<'_, str>> {
        use std::borrow::Cow;
        if self.fusion == Fusion::Vector {
            return None;
        }
        match &self.probe {
            Probe::Text(text) => Some(Cow::Borrowed(text)),
            Probe::Shape(shape) => Some(Cow::Borrowed(&shape.text)),
            Probe::Signal(signal) => Some(Cow::Owned(crate::Shape::of(signal).text)),
            Probe::Vector(_) => None,
        }
    }

    /// How many shapes each ranked list (vector, words) contributes: enough to fill k, four
    /// times over (at least 40) up to k = 100. An approximate index scan that stops at exactly
    /// the shapes needed misses more of the true nearest, most of all under filters.
    pub fn shape_candidates(&self) -> usize {
        let per = self.shape_limit().max(1);
        let needed = self.k.div_ceil(per);
        if self.k <= 100 {
            (needed * 4).max(40)
        } else {
            needed
        }
    }

    /// Executions a search takes from one shape.
    pub fn shape_limit(&self) -> usize {
        self.per_shape.unwrap_or(self.k).min(self.k)
    }

    /// Refuses queries no memory can answer.
    pub fn validate(&self, dimensions: usize) -> Result<(), MemoryError> {
        let invalid = |m: String| Err(MemoryError::InvalidQuery(m));
        if self.k == 0 || self.k > MAX_K {
            return invalid(format!("k must be between 1 and {MAX_K}, not {}", self.k));
        }
        if self.per_shape == Some(0) {
            return invalid("per_shape must be at least 1".into());
        }
        if let (Some(since), Some(until)) = (self.since, self.until) {
            if since >= until {
                return invalid(format!(
                    "the time range is empty: {since} is not before {until}"
                ));
            }
        }
        match &self.probe {
            Probe::Text(text) if text.trim().is_empty() => {
                invalid("the search text is empty".into())
            }
            Probe::Vector(v) if v.len() != dimensions => invalid(format!(
                "the vector has {} dimensions, the memory's model {dimensions}",
                v.len()
            )),
            Probe::Vector(v) if v.iter().any(|x| !x.is_finite()) => {
                invalid("the vector is not finite".into())
            }
            _ => Ok(()),
        }
    }

    /// Whether an execution passes the filters (not the probe).
    pub fn admits(&self, record: &ExecutionRecord) -> bool {
        self.kind.as_ref().is_none_or(|k| *k == record.signal.kind)
            && self.unit.as_ref().is_none_or(|u| *u == record.unit)
            && self
                .outcome
                .is_none_or(|o| (o == OutcomeFilter::Success) == record.outcome.is_success())
            && self.since.is_none_or(|t| record.started_at >= t)
            && self.until.is_none_or(|t| record.started_at < t)
    }
}

/// One execution found by a search.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchHit {
    /// Cosine similarity of the probe and the execution's signal shape (1 is identical).
    pub similarity: f32,
    /// The shape's fused reciprocal-rank score, what hits are ordered by (a shape at rank r of
    /// the vector or the words list adds `1 / (60 + r)`).
    pub score: f64,
    /// The shape text that was matched.
    pub shape: String,
    /// The execution.
    pub record: ExecutionRecord,
}

/// What one unit's executions add up to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitStats {
    /// The unit's name.
    pub unit: String,
    /// Executions remembered.
    pub executions: u64,
    /// Of which succeeded.
    pub successes: u64,
    /// Of which failed.
    pub failures: u64,
    /// Mean latency, microseconds.
    pub mean_latency_us: f64,
    /// 95th percentile latency (nearest rank), microseconds.
    pub p95_latency_us: u64,
    /// When its latest remembered execution started.
    pub last_started_at: DateTime<Utc>,
}

/// How much a memory keeps. Either bound, both, or neither (keep everything).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Forget executions that started longer ago than this.
    pub max_age: Option<Duration>,
    /// Keep at most this many executions, the newest.
    pub max_rows: Option<u64>,
}

/// What a compaction removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Compaction {
    /// Executions forgotten.
    pub executions: u64,
    /// Shapes no remaining execution used.
    pub shapes: u64,
}

/// The nearest-rank percentile of sorted values.
pub(crate) fn nearest_rank(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The moment `age` ago, or the earliest representable moment when `age` reaches further back.
pub(crate) fn ago(age: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(age)
        .ok()
        .and_then(|age| Utc::now().checked_sub_signed(age))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}
