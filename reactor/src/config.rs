//! The reactor's resolved configuration: typed values only. Reading files and the environment
//! is the binary's job.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use swarm_schemas::{DispatchPolicy, KindPattern};

use crate::ranking::RankerConfig;
use crate::{HostConfig, Isolation, TrustPolicy};

/// Everything the reactor needs to run, already validated.
#[derive(Debug, Clone)]
pub struct ReactorConfig {
    /// Directory watched for unit libraries.
    pub units_dir: PathBuf,
    /// Private directory the libraries are copied into before they are opened.
    pub private_dir: PathBuf,
    /// Whether to watch `units_dir` and hot-swap on change.
    pub watch: bool,
    /// How long a file must be quiet before a change to it is loaded.
    pub debounce: Duration,
    /// The stream signals flow on.
    pub stream: String,
    /// Partitions of the stream, when it is created (the count is fixed then and recorded on
    /// the mesh): 1 has every process read the one stream; more have each partition read by
    /// one process at a time, each key's signals in publish order.
    pub partitions: u32,
    /// How long a partition's lease, and a process's membership, last without renewal: how
    /// soon the partitions of a process that died are taken over.
    pub lease_ttl: Duration,
    /// The consumer group of this reactor role.
    pub group: String,
    /// This process's consumer name; keep it stable across restarts.
    pub consumer: String,
    /// Entries read per batch.
    pub batch: usize,
    /// How long a read waits for new entries.
    pub block: Duration,
    /// Signals handled at once.
    pub concurrency: usize,
    /// Blocking-pool threads a batch of unit calls is spread over (one hand-off each).
    pub unit_threads: usize,
    /// Deadline of one unit call, for units whose manifest sets none. A call past it fails
    /// with `timeout`; its thread cannot be stopped and is counted as stuck.
    pub call_timeout: Duration,
    /// Timeouts of one unit (since its version loaded or it was last enabled) that quarantine
    /// it: it gets no signals until swapped or enabled again. 0: never.
    pub quarantine_after: u64,
    /// Calls stuck past their deadline beyond which the reactor reports itself fatally
    /// degraded ([`crate::Reactor::fatal`]), for the process to exit and be restarted. 0: no
    /// bound.
    pub max_stuck_calls: usize,
    /// Tries per (signal, unit) before the signal is dead-lettered for that unit.
    pub max_attempts: u32,
    /// Pause before the second try; doubled for each further try.
    pub retry_backoff: Duration,
    /// Deliveries of one entry (crashes, timeouts) before it is dead-lettered unhandled.
    pub max_deliveries: u32,
    /// Entries pending this long with any consumer are claimed by this one.
    pub claim_idle: Duration,
    /// How often acknowledged entries are trimmed from the stream (and dead letters past
    /// their retention from the dead-letter stream).
    pub trim_every: Duration,
    /// Dead letters kept, at most (the oldest go first); `None`: no bound.
    pub dead_letter_max: Option<u64>,
    /// Dead letters older than this are removed; `None`: no bound.
    pub dead_letter_max_age: Option<Duration>,
    /// Configuration handed to each unit's constructor, by unit name.
    pub unit_config: UnitConfig,
    /// Dispatch policies that override the units' manifests for the kinds they match (the
    /// first matching pattern wins).
    pub dispatch: Vec<(KindPattern, DispatchPolicy)>,
    /// How competing units are ranked, and their circuit breakers.
    pub ranker: RankerConfig,
    /// How often the ranker refreshes its rankings from memory.
    pub ranker_refresh: Duration,
    /// The host capabilities units are granted, and their limits.
    pub host: HostConfig,
    /// What a library must pass before it is opened: the trust file, the ownership and
    /// permissions of the units directory.
    pub trust: TrustPolicy,
    /// Which units run in worker processes of their own, and with what limits.
    pub isolation: Isolation,
    /// OpenTelemetry spans of each execution and each emitted signal (none: no tracing, and
    /// no cost).
    pub telemetry: Option<swarm_mesh::telemetry::Telemetry>,
}

impl ReactorConfig {
    /// Defaults for a reactor on `units_dir`, copying libraries into `private_dir`.
    pub fn new(units_dir: PathBuf, private_dir: PathBuf) -> Self {
        Self {
            units_dir,
            private_dir,
            watch: true,
            debounce: Duration::from_millis(20),
            stream: "swarm:signals".to_owned(),
            partitions: 1,
            lease_ttl: Duration::from_secs(10),
            group: "reactor".to_owned(),
            consumer: "reactor-1".to_owned(),
            batch: 256,
            block: Duration::from_millis(500),
            concurrency: 512,
            unit_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            call_timeout: Duration::from_secs(5),
            quarantine_after: 5,
            max_stuck_calls: 64,
            max_attempts: 3,
            retry_backoff: Duration::from_millis(10),
            max_deliveries: 5,
            claim_idle: Duration::from_secs(30),
            trim_every: Duration::from_secs(5),
            dead_letter_max: Some(100_000),
            dead_letter_max_age: Some(Duration::from_secs(7 * 24 * 3600)),
            unit_config: BTreeMap::new(),
            dispatch: Vec::new(),
            ranker: RankerConfig::default(),
            ranker_refresh: Duration::from_millis(250),
            host: HostConfig::default(),
            trust: TrustPolicy::default(),
            isolation: Isolation::default(),
            telemetry: None,
        }
    }
}

/// The units' configuration: a section for each unit's constructor, by unit name.
pub type UnitConfig = BTreeMap<String, serde_json::Value>;

/// Parses a unit configuration file's text: a JSON object of sections by unit name. Each
/// section is checked against its unit's config schema when the unit is loaded.
pub fn parse_unit_config(text: &str) -> Result<UnitConfig, serde_json::Error> {
    serde_json::from_str(text)
}
