//! Unit calls on the blocking pool, each with a deadline.
//!
//! A batch of calls is spread over a few lanes: one hand-off to the blocking pool each, which
//! runs its calls one after another (handing each call to the pool on its own cost more than
//! the call). The async side waits for the results and watches the call each lane is running.
//! A call past its deadline is abandoned: it fails with `timeout`, its lane is left to the stuck
//! thread, and the calls queued behind it move to a new lane, so the rest of the batch settles
//! normally. If the stuck thread ever returns, it sees that its lane was abandoned, drops what
//! its call produced and stops.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::attempt::{Attempt, Attempted, finish, run, timed_out};
use crate::quarantine::Watchdog;

/// A call a lane is running: which, since when, until when.
struct Running {
    index: usize,
    attempt: Arc<Attempt>,
    started_at: chrono::DateTime<chrono::Utc>,
    timeout: std::time::Duration,
    deadline: Instant,
}

#[derive(Default)]
struct LaneState {
    queue: VecDeque<(usize, Attempt)>,
    running: Option<Running>,
    /// Its thread is stuck in a call past the deadline; the lane takes no more calls.
    abandoned: bool,
}

/// Calls run one after another by one blocking thread.
#[derive(Default)]
struct Lane {
    state: Mutex<LaneState>,
}

impl Lane {
    /// Runs the lane's calls on the current (blocking) thread, sending each result.
    fn work(&self, watchdog: &Watchdog, results: &mpsc::UnboundedSender<(usize, Attempted)>) {
        loop {
            let (index, attempt) = {
                let mut state = self.state.lock();
                if state.abandoned {
                    return;
                }
                let Some((index, attempt)) = state.queue.pop_front() else {
                    return;
                };
                let attempt = Arc::new(attempt);
                let timeout = attempt
                    .generation
                    .manifest()
                    .timeout()
                    .unwrap_or(watchdog.default_timeout);
                let started_at = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 6);
                state.running = Some(Running {
                    index,
                    attempt: Arc::clone(&attempt),
                    started_at,
                    timeout,
                    deadline: Instant::now() + timeout,
                });
                (index, attempt)
            };
            let ran = run(&attempt);
            let mut state = self.state.lock();
            if state.abandoned {
                // Already failed with `timeout` by the watchdog; what the call made is dropped.
                drop(state);
                // Counted as stuck unless isolated (its worker was killed, and it returned).
                if attempt.generation.loaded.worker().is_none() {
                    watchdog.returned(attempt.slot.name(), &attempt.slot.health);
                }
                return;
            }
            // The running entry held the other reference: now the attempt is this thread's alone.
            let started_at = state.running.take().map(|r| r.started_at);
            drop(state);
            let Ok(attempt) = Arc::try_unwrap(attempt) else {
                // Unreachable: only `running` shared it. Nothing to report without the attempt.
                continue;
            };
            let done = finish(attempt, ran, started_at);
            if results.send((index, done)).is_err() {
                return;
            }
        }
    }

    /// If the call running is past its deadline: abandons the lane and returns that call and
    /// the calls queued behind it.
    fn expire(&self, now: Instant) -> Option<(Running, VecDeque<(usize, Attempt)>)> {
        let mut state = self.state.lock();
        if state.abandoned || state.running.as_ref().is_none_or(|r| r.deadline > now) {
            return None;
        }
        state.abandoned = true;
        let running = state.running.take()?;
        Some((running, std::mem::take(&mut state.queue)))
    }

    fn deadline(&self) -> Option<Instant> {
        let state = self.state.lock();
        if state.abandoned {
            return None;
        }
        state.running.as_ref().map(|r| r.deadline)
    }

    /// The calls that never started (the lane's task did not run, or died): taken back.
    fn unstarted(&self) -> Vec<usize> {
        let mut state = self.state.lock();
        if state.abandoned {
            return Vec::new();
        }
        let mut left: Vec<usize> = state.queue.drain(..).map(|(i, _)| i).collect();
        left.extend(state.running.take().map(|r| r.index));
        left
    }
}

/// The lanes of one batch, and their blocking tasks.
struct Lanes {
    lanes: Vec<Arc<Lane>>,
    /// Each lane's task, by task id: a task that fails to run says only its id.
    by_task: HashMap<tokio::task::Id, usize>,
    tasks: JoinSet<()>,
    watchdog: Arc<Watchdog>,
    results: mpsc::UnboundedSender<(usize, Attempted)>,
}

impl Lanes {
    fn new(watchdog: &Arc<Watchdog>, results: mpsc::UnboundedSender<(usize, Attempted)>) -> Self {
        Self {
            lanes: Vec::new(),
            by_task: HashMap::new(),
            tasks: JoinSet::new(),
            watchdog: Arc::clone(watchdog),
            results,
        }
    }

    fn spawn(&mut self, queue: VecDeque<(usize, Attempt)>) {
        let lane = Arc::new(Lane::default());
        lane.state.lock().queue = queue;
        let (worker, watchdog) = (Arc::clone(&lane), Arc::clone(&self.watchdog));
        let results = self.results.clone();
        let task = self
            .tasks
            .spawn_blocking(move || worker.work(&watchdog, &results));
        self.by_task.insert(task.id(), self.lanes.len());
        self.lanes.push(lane);
    }

    /// When to look at the lanes again: at the next deadline of a running call, and at least
    /// every `shortest`.
    fn next_look(&self, shortest: Duration) -> Instant {
        let look_again = Instant::now() + shortest;
        self.lanes
            .iter()
            .filter_map(|l| l.deadline())
            .min()
            .map_or(look_again, |d| d.min(look_again))
    }

    /// A lane's task ended; anything it did not start never will (shutdown, or a panic outside
    /// the unit's call). Returns how many calls that leaves without a result.
    fn ended(&self, joined: Result<(tokio::task::Id, ()), tokio::task::JoinError>) -> usize {
        let task = match joined {
            Ok((task, ())) => task,
            Err(error) => {
                tracing::warn!(%error, "a lane of unit calls did not run");
                error.id()
            }
        };
        self.by_task
            .get(&task)
            .and_then(|&n| self.lanes.get(n))
            .map_or(0, |lane| lane.unstarted().len())
    }

    /// Fails every call past its deadline with `timeout` into `out`, and moves the calls queued
    /// behind each to a new lane. Returns how many calls failed.
    fn expire(&mut self, now: Instant, out: &mut [Option<Attempted>]) -> usize {
        let expired: Vec<_> = self.lanes.iter().filter_map(|l| l.expire(now)).collect();
        let failed = expired.len();
        for (running, queue) in expired {
            let attempt = &running.attempt;
            let worker = attempt.generation.loaded.worker();
            self.watchdog
                .timed_out(attempt.slot.name(), &attempt.slot.health, worker.is_none());
            if let Some(worker) = worker {
                // An isolated unit's call can be stopped: its worker is killed (and started
                // again at the next call), and the lane's thread returns.
                worker.kill(&format!(
                    "a call ran past its {:?} deadline",
                    running.timeout
                ));
            }
            out[running.index] = Some(timed_out(attempt, running.started_at, running.timeout));
            if !queue.is_empty() {
                self.spawn(queue);
            }
        }
        failed
    }
}

/// Makes every call, spread over at most `threads` lanes, each call within its deadline.
/// Returns one entry per call, in order; `None` where the blocking pool could not run it
/// (shutdown).
pub(crate) async fn call_all(
    attempts: Vec<Attempt>,
    threads: usize,
    watchdog: &Arc<Watchdog>,
) -> Vec<Option<Attempted>> {
    let total = attempts.len();
    let mut out: Vec<Option<Attempted>> = (0..total).map(|_| None).collect();
    if total == 0 {
        return out;
    }
    let (results, mut receive) = mpsc::unbounded_channel();
    let mut lanes = Lanes::new(watchdog, results);
    // A call that starts after the watcher last looked has its deadline no sooner than this
    // from then: looking again this often never misses one.
    let shortest = attempts
        .iter()
        .map(|a| {
            a.generation
                .manifest()
                .timeout()
                .unwrap_or(watchdog.default_timeout)
        })
        .min()
        .unwrap_or(watchdog.default_timeout);
    let chunk = total.div_ceil(threads.max(1)).max(1);
    let mut attempts = attempts.into_iter().enumerate().peekable();
    while attempts.peek().is_some() {
        lanes.spawn(attempts.by_ref().take(chunk).collect());
    }
    let mut left = total;
    let mut done = Vec::with_capacity(total.min(1024));
    // The watcher's next look: set again only after each look, not for every result (a call
    // that started since the last look has its deadline no sooner than `shortest` after it).
    let look = tokio::time::sleep_until(lanes.next_look(shortest).into());
    tokio::pin!(look);
    while left > 0 {
        tokio::select! {
            // Every result that has come, at once.
            received = receive.recv_many(&mut done, left) => {
                for (index, attempted) in done.drain(..received) {
                    out[index] = Some(attempted);
                    left -= 1;
                }
            }
            Some(joined) = lanes.tasks.join_next_with_id() => {
                left = left.saturating_sub(lanes.ended(joined));
            }
            () = &mut look => {
                left -= lanes.expire(Instant::now(), &mut out);
                look.as_mut().reset(lanes.next_look(shortest).into());
            }
        }
    }
    out
}
