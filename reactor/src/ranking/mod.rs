//! Ranking: which of the units competing for a signal fire, and in what order.
//!
//! - `evidence.rs` — rewards and the weights of past executions (similarity, recency).
//! - `ranker/` — [`Ranker`]: evidence per (kind, shape), posterior sampling (near greedy under
//!   first-success, Thompson under top-k), refresh from memory.
//! - `change.rs` — the change detector that lets a ranking recover when a unit's quality moves.
//! - `propensity.rs` — the probability of each choice, logged with every execution.
//! - `explain.rs` — why a unit was chosen, recomputed from memory (`swarm explain`).
//! - `breaker.rs` — a circuit breaker per unit; an open unit is skipped by every policy.

mod breaker;
mod change;
mod evidence;
mod explain;
mod propensity;
mod ranker;

pub use breaker::{Breaker, BreakerConfig, BreakerState};
pub use evidence::{Evidence, Weighed, Weighing, weigh};
pub use explain::{Explanation, Neighbour, Standing};
pub use ranker::{Choice, Order, Ranker, RankerConfig, Refreshed, Unplaced};
