//! Which dispatch policy applies to each unit that takes a signal, and how the units are
//! grouped: units whose policy is fan-out each fire on their own; the others compete in one
//! group, ranked by the ranker.

use std::sync::Arc;

use swarm_schemas::{DispatchPolicy, KindPattern};

use crate::slot::UnitSlot;

/// Units that take one signal under one policy.
pub(crate) struct Group {
    pub policy: DispatchPolicy,
    pub units: Vec<Arc<UnitSlot>>,
}

/// The policy of `slot`'s subscription to `kind`: the first configured override whose pattern
/// matches, else what the unit's manifest says for that kind.
fn policy_of(
    slot: &UnitSlot,
    kind: &str,
    overrides: &[(KindPattern, DispatchPolicy)],
) -> DispatchPolicy {
    if let Some((_, policy)) = overrides.iter().find(|(p, _)| p.matches(kind)) {
        return *policy;
    }
    slot.current()
        .map_or(DispatchPolicy::FanOut, |g| g.manifest().policy_for(kind))
}

/// Whether at least two of the candidates for a signal of `kind` compete (the ranker orders
/// them).
pub(crate) fn competes(
    kind: &str,
    candidates: &[Arc<UnitSlot>],
    overrides: &[(KindPattern, DispatchPolicy)],
) -> bool {
    candidates
        .iter()
        .filter(|slot| policy_of(slot, kind, overrides) != DispatchPolicy::FanOut)
        .nth(1)
        .is_some()
}

/// Groups the candidates for a signal of `kind`: fan-out units in one group, every other unit
/// in one competing group whose policy is the most inclusive any of them asks for (top-k with
/// the largest k, else first-success).
pub(crate) fn groups(
    kind: &str,
    candidates: Vec<Arc<UnitSlot>>,
    overrides: &[(KindPattern, DispatchPolicy)],
) -> Vec<Group> {
    let mut fan_out = Vec::new();
    let mut competing = Vec::new();
    let mut policy: Option<DispatchPolicy> = None;
    for slot in candidates {
        match policy_of(&slot, kind, overrides) {
            DispatchPolicy::FanOut => fan_out.push(slot),
            asked => {
                policy = Some(match (policy, asked) {
                    (Some(DispatchPolicy::TopK { k: a }), DispatchPolicy::TopK { k: b }) => {
                        DispatchPolicy::TopK { k: a.max(b) }
                    }
                    (Some(top @ DispatchPolicy::TopK { .. }), _) => top,
                    (_, asked) => asked,
                });
                competing.push(slot);
            }
        }
    }
    let mut groups = Vec::with_capacity(2);
    if !fan_out.is_empty() {
        groups.push(Group {
            policy: DispatchPolicy::FanOut,
            units: fan_out,
        });
    }
    if let Some(policy) = policy {
        groups.push(Group {
            policy,
            units: competing,
        });
    }
    groups
}
