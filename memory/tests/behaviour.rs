//! The memory behaviour suite, run against both implementations: the in-process memory and
//! PostgreSQL + pgvector (a fresh database per case on the server `ops/start-postgres` runs;
//! without it these tests fail).

use std::sync::Arc;
use std::time::Duration;

use swarm_memory::{Embedder, InProcMemory, Memory, PgMemory, PgMemoryConfig};

mod in_process {
    use super::*;

    async fn make(embedder: Arc<dyn Embedder>) -> Arc<dyn Memory> {
        Arc::new(InProcMemory::new().with_embedder(embedder))
    }

    swarm_memory::memory_behaviour_suite!(super::make, swarm_memory::testkit::embedder);
}

mod pgvector {
    use super::*;

    async fn make(embedder: Arc<dyn Embedder>) -> Arc<dyn Memory> {
        let url =
            swarm_memory::testkit::fresh_database(&swarm_memory::testkit::database_url()).await;
        // No grace for unused shapes: nothing else writes to this database.
        let config = PgMemoryConfig {
            shape_grace: Duration::ZERO,
            max_connections: 4,
            ..PgMemoryConfig::default()
        };
        Arc::new(
            PgMemory::connect(&url, embedder, config)
                .await
                .expect("connect to the test database"),
        )
    }

    swarm_memory::memory_behaviour_suite!(super::make, swarm_memory::testkit::embedder);
}
