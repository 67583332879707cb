//! Unit calls on the blocking pool, each with a deadline.
//!
//! A batch of calls is spread over a few lanes: one hand-off to the blocking pool each, which
//! runs its calls one after another (handing each call to the pool on its own cost more than
//! the call), keeping their results until it ends. The async side waits for the lanes to end
//! and watches the call each lane is running; it is woken once per lane, not once per call.
//! A call past its deadline is abandoned: it fails with `timeout`, its lane is left to the stuck
//! thread, and the calls queued behind it move to a new lane, so the rest of the batch settles
//! normally. If the stuck thread ever returns, it sees that its lane was abandoned, drops what
//! its call produced and stops.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
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
    /// Results of the calls it made, until the async side takes them.
    done: Vec<(usize, Attempted)>,
}

/// Calls run one after another by one blocking thread.
#[derive(Default)]
struct Lane {
    state: Mutex<LaneState>,
}

impl Lane {
    /// Runs the lane's calls on the current (blocking) thread, keeping each result.
    fn work(&self, watchdog: &Watchdog) {
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
            self.state.lock().done.push((index, done));
        }
    }

    /// If the call running is past its deadline: abandons the lane and returns that call, the
    /// calls queued behind it and the results of those it made.
    fn expire(&self, now: Instant) -> Option<Expired> {
        let mut state = self.state.lock();
        if state.abandoned || state.running.as_ref().is_none_or(|r| r.deadline > now) {
            return None;
        }
        state.abandoned = true;
        let running = state.running.take()?;
        Some(Expired {
            running,
            queue: std::mem::take(&mut state.queue),
            done: std::mem::take(&mut state.done),
        })
    }

    /// The results of the calls it made, taken.
    fn take_done(&self) -> Vec<(usize, Attempted)> {
        std::mem::take(&mut self.state.lock().done)
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

/// A lane abandoned past a deadline: the call it was running, the calls queued behind it, and
/// the results of those it made before.
struct Expired {
    running: Running,
    queue: VecDeque<(usize, Attempt)>,
    done: Vec<(usize, Attempted)>,
}

/// Puts each result a lane made in its call's place in `out`; returns how many there were.
fn hand_over(done: Vec<(usize, Attempted)>, out: &mut [Option<Attempted>]) -> usize {
    let made = done.len();
    for (index, attempted) in done {
        out[index] = Some(attempted);
    }
    made
}

/// The lanes of one batch, and their blocking tasks.
struct Lanes {
    lanes: Vec<Arc<Lane>>,
    /// Each lane's task, by task id: a task that fails to run says only its id.
    by_task: HashMap<tokio::task::Id, usize>,
    tasks: JoinSet<()>,
    watchdog: Arc<Watchdog>,
}

impl Lanes {
    fn new(watchdog: &Arc<Watchdog>) -> Self {
        Self {
            lanes: Vec::new(),
            by_task: HashMap::new(),
            tasks: JoinSet::new(),
            watchdog: Arc::clone(watchdog),
        }
    }

    fn spawn(&mut self, queue: VecDeque<(usize, Attempt)>) {
        let lane = Arc::new(Lane::default());
        lane.state.lock().queue = queue;
        let (worker, watchdog) = (Arc::clone(&lane), Arc::clone(&self.watchdog));
        let task = self.tasks.spawn_blocking(move || worker.work(&watchdog));
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

    /// A lane's task ended: its results go into `out`; anything it did not start never will
    /// (shutdown, or a panic outside the unit's call). Returns how many calls that accounts
    /// for, with or without a result.
    fn ended(
        &self,
        joined: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
        out: &mut [Option<Attempted>],
    ) -> usize {
        let task = match joined {
            Ok((task, ())) => task,
            Err(error) => {
                tracing::warn!(%error, "a lane of unit calls did not run");
                error.id()
            }
        };
        let Some(lane) = self.by_task.get(&task).and_then(|&n| self.lanes.get(n)) else {
            return 0;
        };
        hand_over(lane.take_done(), out) + lane.unstarted().len()
    }

    /// Fails every call past its deadline with `timeout` into `out`, with the results its lane
    /// made before, and moves the calls queued behind each to a new lane. Returns how many
    /// calls that accounts for.
    fn expire(&mut self, now: Instant, out: &mut [Option<Attempted>]) -> usize {
        let expired: Vec<_> = self.lanes.iter().filter_map(|l| l.expire(now)).collect();
        let mut accounted = 0;
        for Expired {
            running,
            queue,
            done,
        } in expired
        {
            accounted += 1 + hand_over(done, out);
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
        accounted
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
    let mut lanes = Lanes::new(watchdog);
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
    // The watcher's next look: set again only after each look (a call that started since the
    // last look has its deadline no sooner than `shortest` after it).
    let look = tokio::time::sleep_until(lanes.next_look(shortest).into());
    tokio::pin!(look);
    while left > 0 {
        tokio::select! {
            Some(joined) = lanes.tasks.join_next_with_id() => {
                left = left.saturating_sub(lanes.ended(joined, &mut out));
            }
            () = &mut look => {
                left = left.saturating_sub(lanes.expire(Instant::now(), &mut out));
                look.as_mut().reset(lanes.next_look(shortest).into());
            }
        }
    }
    out
}
