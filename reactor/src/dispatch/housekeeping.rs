//! Beside the read loops: the ranker's refresh from memory, and each partition's keep-alive,
//! claims of abandoned entries and trimming.

use std::sync::Arc;
use std::time::Duration;

use swarm_mesh::EntryId;
use tokio::sync::watch;

use super::{Dispatcher, Part};

impl Dispatcher {
    /// Keeps the ranker's rankings fresh from memory, off the dispatch path.
    pub(super) async fn refresh_rankings(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.config.ranker_refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            match self
                .ranker
                .refresh(&*self.memory, chrono::Utc::now(), 256)
                .await
            {
                Ok(_) => failing = false,
                Err(error) if !failing => {
                    // Ranking goes on from this process's own outcomes meanwhile.
                    tracing::info!(%error, "rankings cannot be refreshed from memory");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }

    /// Removes the partition's dead letters past their retention (count and age).
    async fn trim_dead_letters(&self, stream: &str) {
        let c = &self.config;
        if c.dead_letter_max.is_none() && c.dead_letter_max_age.is_none() {
            return;
        }
        let before = c.dead_letter_max_age.map(|age| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            EntryId {
                ms: u64::try_from(now.saturating_sub(age).as_millis()).unwrap_or(0),
                seq: 0,
            }
        });
        let dead = swarm_mesh::dead_letter_stream(stream);
        match self
            .mesh
            .trim_retained(&dead, c.dead_letter_max, before)
            .await
        {
            Ok(0) => {}
            Ok(removed) => {
                metrics::counter!("swarm_dead_letters_expired_total").increment(removed);
                tracing::info!(removed, stream = %dead, "dead letters past their retention removed");
            }
            Err(error) => tracing::warn!(%error, "trimming dead letters failed"),
        }
    }

    /// Keeps running entries claimed, takes over entries abandoned by dead consumers, and
    /// trims what every group has acknowledged, on one partition.
    pub(super) async fn housekeeping(
        self: Arc<Self>,
        part: Arc<Part>,
        mut stop: watch::Receiver<bool>,
    ) {
        let c = &self.config;
        let stream = &part.stream;
        // First ticks one period from now, not at once.
        let every = |period: Duration| {
            tokio::time::interval_at(tokio::time::Instant::now() + period, period)
        };
        let mut keep_alive = every(c.claim_idle / 3);
        let mut claim = every(c.claim_idle / 2);
        let mut trim = every(c.trim_every);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = keep_alive.tick() => {
                    // Before the entries are gathered: each of them is kept from this on.
                    let collected = std::time::Instant::now();
                    // Entries waiting behind their key are in flight too.
                    let ids: Vec<EntryId> = self
                        .in_flight
                        .iter()
                        .filter(|e| e.key().0 == part.index)
                        .map(|e| e.key().1)
                        .collect();
                    let kept = if ids.is_empty() {
                        Ok(Vec::new())
                    } else {
                        self.mesh.keep_alive(stream, &c.group, &c.consumer, &ids).await
                    };
                    match kept {
                        Ok(mut gone) => {
                            // Those settled here meanwhile are gone too, and no concern.
                            gone.retain(|id| self.in_flight.contains_key(&(part.index, *id)));
                            part.kept_alive(collected, &gone);
                        }
                        Err(error) => tracing::warn!(%error, "keep-alive failed"),
                    }
                }
                _ = claim.tick() => {
                    match self.mesh.claim_idle(stream, &c.group, &c.consumer, c.claim_idle, c.batch).await {
                        Ok(claimed) if claimed.is_empty() => {}
                        Ok(claimed) => {
                            for delivery in &claimed {
                                tracing::info!(entry = %delivery.id, deliveries = delivery.deliveries, "claimed an abandoned entry");
                            }
                            let run = part.order.admit(claimed, &self.in_flight);
                            self.run_released(&part, run);
                        }
                        Err(error) => tracing::warn!(%error, "claiming idle entries failed"),
                    }
                }
                _ = trim.tick() => {
                    if let Err(error) = self.mesh.trim_acknowledged(stream).await {
                        tracing::warn!(%error, "trimming failed");
                    }
                    self.trim_dead_letters(stream).await;
                }
            }
        }
    }
}
