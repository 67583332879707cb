//! The live side: what the mesh carries and what the units do, as it happens. One task tails
//! the signal stream and one its dead letters (outside any consumer group, so watching takes
//! nothing from the reactors); one forwards the runtime's executions. Each event updates the
//! traffic counts, answers request/reply waiters, and goes to every websocket on a broadcast
//! channel.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};
use serde::Serialize;
use swarm_mesh::{EntryId, Observe, dead_letter_stream};
use swarm_schemas::{ExecutionRecord, KindPattern, Signal, SignalId};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinSet;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::Runtime;
use crate::topology::Traffic;

/// Events kept for websockets that fall behind before they lose the oldest.
const EVENT_BUFFER: usize = 4096;
/// Entries read per tail call.
const TAIL_BATCH: usize = 512;

/// One thing that happened on the mesh, as sent on `/v1/live`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveEvent {
    /// A signal appended to the mesh (or to its dead letters).
    Signal {
        /// Its mesh entry id.
        entry: String,
        /// Whether it is a dead letter.
        dead_letter: bool,
        /// The signal.
        signal: Box<Signal>,
    },
    /// A unit handled a signal.
    Execution {
        /// The execution.
        #[schema(value_type = ExecutionRecord)]
        execution: Arc<ExecutionRecord>,
    },
    /// This watcher fell behind and missed events.
    Lagged {
        /// How many.
        missed: u64,
    },
}

struct Waiter {
    request: SignalId,
    /// The kinds that answer it (any, when `None`); a dead letter always does.
    kinds: Option<KindPattern>,
    reply: oneshot::Sender<Signal>,
}

impl Waiter {
    fn answered_by(&self, signal: &Signal, dead: bool) -> bool {
        signal.id != self.request
            && (dead || self.kinds.as_ref().is_none_or(|k| k.matches(&signal.kind)))
    }
}

/// A signal of a conversation someone waits on, as seen on the stream.
#[derive(Debug, Clone)]
struct Seen {
    stream: String,
    entry: EntryId,
    signal: SignalId,
}

/// What the hub has seen of a conversation while posts wait on it.
#[derive(Debug, Default)]
struct Conversation {
    /// Posts waiting on it.
    waiting: usize,
    seen: Vec<Seen>,
}

/// The live hub of one inspector.
pub(crate) struct Hub {
    events: broadcast::Sender<Arc<LiveEvent>>,
    waiters: Mutex<HashMap<Uuid, Vec<Waiter>>>,
    conversations: Mutex<HashMap<Uuid, Conversation>>,
    /// How far the tail of each stream has read.
    positions: Mutex<HashMap<String, EntryId>>,
    traffic: Mutex<Traffic>,
}

impl Hub {
    /// Starts watching `stream` (each of its `partitions`, and their dead letters) from their
    /// current ends, and the runtime's executions. The tasks run until `tasks` is dropped or
    /// aborted.
    pub(crate) async fn start(
        mesh: Arc<dyn Observe>,
        stream: &str,
        partitions: u32,
        runtime: Arc<dyn Runtime>,
        tasks: &mut JoinSet<()>,
    ) -> Result<Arc<Self>, swarm_mesh::MeshError> {
        let hub = Arc::new(Self {
            events: broadcast::channel(EVENT_BUFFER).0,
            waiters: Mutex::new(HashMap::new()),
            conversations: Mutex::new(HashMap::new()),
            positions: Mutex::new(HashMap::new()),
            traffic: Mutex::new(Traffic::default()),
        });
        let watched = (0..partitions.max(1)).flat_map(|k| {
            let part = swarm_mesh::partition::partition_stream(stream, k, partitions);
            [(dead_letter_stream(&part), true), (part, false)]
        });
        for (name, dead) in watched {
            // From the current end, known before the server answers anything: a signal posted
            // through the API is always seen.
            let after = mesh.last_id(&name).await?;
            hub.positions.lock().insert(name.clone(), after);
            tasks.spawn(Arc::clone(&hub).tail(Arc::clone(&mesh), name, dead, after));
        }
        tasks.spawn(Arc::clone(&hub).forward(runtime.executions()));
        Ok(hub)
    }

    /// A new subscriber to every event from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.events.subscribe()
    }

    pub(crate) fn traffic(&self) -> MutexGuard<'_, Traffic> {
        self.traffic.lock()
    }

    fn waiters(&self) -> MutexGuard<'_, HashMap<Uuid, Vec<Waiter>>> {
        self.waiters.lock()
    }

    /// Waits for the first signal other than `request` itself that carries `correlation` and
    /// whose kind matches `kinds` (any kind when `None`), or for a dead letter of the
    /// conversation. Register before publishing the request, so the reply cannot slip past.
    pub(crate) fn await_reply(
        &self,
        correlation: Uuid,
        request: SignalId,
        kinds: Option<KindPattern>,
    ) -> Reply<'_> {
        let (reply, receiver) = oneshot::channel();
        self.conversations
            .lock()
            .entry(correlation)
            .or_default()
            .waiting += 1;
        self.waiters().entry(correlation).or_default().push(Waiter {
            request,
            kinds,
            reply,
        });
        Reply {
            hub: self,
            correlation,
            receiver,
        }
    }

    fn answer(&self, signal: &Signal, dead: bool) {
        let mut waiters = self.waiters();
        let Some(list) = waiters.get_mut(&signal.correlation_id) else {
            return;
        };
        let (answered, rest): (Vec<Waiter>, Vec<Waiter>) =
            list.drain(..).partition(|w| w.answered_by(signal, dead));
        for waiter in answered {
            let _ = waiter.reply.send(signal.clone());
        }
        if rest.is_empty() {
            waiters.remove(&signal.correlation_id);
        } else {
            *list = rest;
        }
    }

    /// Notes a signal of a conversation someone waits on.
    fn note(&self, stream: &str, entry: EntryId, signal: &Signal) {
        if let Some(conversation) = self.conversations.lock().get_mut(&signal.correlation_id) {
            conversation.seen.push(Seen {
                stream: stream.to_owned(),
                entry,
                signal: signal.id,
            });
        }
    }

    /// The signals of conversation `correlation`, if it has settled: `request` was seen on the
    /// stream, the group has settled every signal of the conversation seen so far, and the
    /// tails have read past everything those signals emitted (an entry's emits are on its
    /// stream before it is acknowledged) without finding another. `None` while it goes on, or
    /// when the mesh cannot tell.
    pub(crate) async fn settled(
        &self,
        mesh: &dyn Observe,
        group: &str,
        correlation: Uuid,
        request: SignalId,
    ) -> Option<Vec<SignalId>> {
        let seen = self.conversations.lock().get(&correlation)?.seen.clone();
        if !seen.iter().any(|s| s.signal == request) {
            return None;
        }
        let mut streams: Vec<&str> = seen.iter().map(|s| s.stream.as_str()).collect();
        streams.sort_unstable();
        streams.dedup();
        for stream in &streams {
            let ids: Vec<EntryId> = seen
                .iter()
                .filter(|s| s.stream == *stream)
                .map(|s| s.entry)
                .collect();
            let settled = mesh.settled(stream, group, &ids).await.ok()?;
            if !settled.iter().all(|s| *s) {
                return None;
            }
        }
        for stream in &streams {
            let end = mesh.last_id(stream).await.ok()?;
            let read = self.positions.lock().get(*stream).copied()?;
            if read < end {
                return None;
            }
        }
        let now = self.conversations.lock().get(&correlation)?.seen.len();
        (now == seen.len()).then(|| seen.iter().map(|s| s.signal).collect())
    }

    fn publish(&self, event: LiveEvent) {
        // No receivers is not an error: nobody is watching.
        let _ = self.events.send(Arc::new(event));
    }

    async fn tail(
        self: Arc<Self>,
        mesh: Arc<dyn Observe>,
        stream: String,
        dead: bool,
        mut after: EntryId,
    ) {
        let mut failing = false;
        loop {
            match mesh
                .tail(&stream, after, TAIL_BATCH, Duration::from_secs(1))
                .await
            {
                Ok(entries) => {
                    failing = false;
                    for entry in entries {
                        after = entry.id;
                        let Ok(signal) = entry.body else { continue };
                        self.traffic().signal(&signal, dead);
                        if !dead {
                            self.note(&stream, entry.id, &signal);
                        }
                        self.answer(&signal, dead);
                        self.publish(LiveEvent::Signal {
                            entry: entry.id.to_string(),
                            dead_letter: dead,
                            signal: Box::new(signal),
                        });
                    }
                    self.positions.lock().insert(stream.clone(), after);
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, %stream, "the live view cannot read the mesh; retrying");
                        failing = true;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn forward(self: Arc<Self>, mut executions: broadcast::Receiver<Arc<ExecutionRecord>>) {
        loop {
            match executions.recv().await {
                Ok(record) => {
                    self.traffic().execution(&record);
                    self.publish(LiveEvent::Execution { execution: record });
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "the live view fell behind the executions");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

/// A pending request/reply wait; forgets itself when dropped.
pub(crate) struct Reply<'a> {
    hub: &'a Hub,
    correlation: Uuid,
    receiver: oneshot::Receiver<Signal>,
}

impl Reply<'_> {
    /// The reply, or `None` after `timeout`.
    pub(crate) async fn wait(&mut self, timeout: Duration) -> Option<Signal> {
        tokio::time::timeout(timeout, &mut self.receiver)
            .await
            .ok()
            .and_then(Result::ok)
    }
}

impl Drop for Reply<'_> {
    fn drop(&mut self) {
        {
            let mut conversations = self.hub.conversations.lock();
            if let Some(c) = conversations.get_mut(&self.correlation) {
                c.waiting -= 1;
                if c.waiting == 0 {
                    conversations.remove(&self.correlation);
                }
            }
        }
        // Closed first, so this waiter's sender reads as closed below.
        self.receiver.close();
        let mut waiters = self.hub.waiters();
        if let Some(list) = waiters.get_mut(&self.correlation) {
            list.retain(|w| !w.reply.is_closed());
            if list.is_empty() {
                waiters.remove(&self.correlation);
            }
        }
    }
}
