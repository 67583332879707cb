//! [`Partitions`] for the in-process mesh: partition counts, members and leases in one map
//! beside the streams, with the semantics of the Redis ones (see [`crate::partition`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::{InProcMesh, MeshError, Partitions, partition};

/// Partition counts, members and leases (see [`crate::partition`]).
#[derive(Default)]
pub(crate) struct Layout {
    pub(crate) partitions: HashMap<String, u32>,
    /// Per stream: member → when its heartbeat runs out.
    members: HashMap<String, HashMap<String, Instant>>,
    /// Per partition stream: owner and when the lease runs out.
    leases: HashMap<String, (String, Instant)>,
}

impl Layout {
    /// Who holds the lease of partition stream `name` (`S#k`), if anyone.
    pub(crate) fn holder(&self, name: &str) -> Option<&str> {
        self.leases
            .get(name)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(owner, _)| owner.as_str())
    }
}

#[async_trait]
impl Partitions for InProcMesh {
    async fn partitions(&self, stream: &str, wanted: Option<u32>) -> Result<u32, MeshError> {
        let mut layout = self.layout.lock();
        if let Some(&recorded) = layout.partitions.get(stream) {
            return Ok(recorded);
        }
        let Some(wanted) = wanted else {
            return Ok(1);
        };
        let wanted = partition::check_partitions(wanted)?;
        layout.partitions.insert(stream.to_owned(), wanted);
        Ok(wanted)
    }

    async fn heartbeat(
        &self,
        stream: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<Vec<String>, MeshError> {
        let now = Instant::now();
        let mut layout = self.layout.lock();
        let members = layout.members.entry(stream.to_owned()).or_default();
        members.insert(member.to_owned(), now + ttl);
        members.retain(|_, until| *until > now);
        let mut live: Vec<String> = members.keys().cloned().collect();
        live.sort();
        Ok(live)
    }

    async fn leave(&self, stream: &str, member: &str) -> Result<(), MeshError> {
        if let Some(members) = self.layout.lock().members.get_mut(stream) {
            members.remove(member);
        }
        Ok(())
    }

    async fn lease(
        &self,
        stream: &str,
        partition: u32,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, MeshError> {
        let now = Instant::now();
        let mut layout = self.layout.lock();
        let lease = layout
            .leases
            .entry(partition::partition_name(stream, partition))
            .or_insert_with(|| (owner.to_owned(), now));
        if lease.0 != owner && lease.1 > now {
            return Ok(false);
        }
        *lease = (owner.to_owned(), now + ttl);
        Ok(true)
    }

    async fn release(&self, stream: &str, partition: u32, owner: &str) -> Result<bool, MeshError> {
        let mut layout = self.layout.lock();
        let key = partition::partition_name(stream, partition);
        let held = layout
            .leases
            .get(&key)
            .is_some_and(|(o, until)| o == owner && *until > Instant::now());
        if held {
            layout.leases.remove(&key);
        }
        Ok(held)
    }

    async fn lease_owner(&self, stream: &str, partition: u32) -> Result<Option<String>, MeshError> {
        let layout = self.layout.lock();
        Ok(layout
            .holder(&partition::partition_name(stream, partition))
            .map(str::to_owned))
    }
}
