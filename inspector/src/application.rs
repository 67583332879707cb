//! The application (API, page, guards) and the tasks beside it, built from the configuration
//! and the services; [`crate::Inspector::start`] serves it on its listener.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::{InspectorConfig, Services, StartError, api, edge, gate, guard, live, tokens_file};

/// The application (API, page, guards) and what runs beside it: what [`crate::Inspector::start`]
/// serves on its listener.
pub(crate) struct Application {
    pub(crate) router: axum::Router,
    pub(crate) loopback_only: bool,
    /// Sent `true` to close the websockets and stop the tasks.
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) tasks: JoinSet<()>,
}

impl Application {
    pub(crate) async fn build(
        config: InspectorConfig,
        services: Services,
    ) -> Result<Self, StartError> {
        let loopback_only = config.tokens.is_empty();
        let schemas = Arc::new(api::SignalSchemas::new(config.payload_schemas)?);
        let mut tasks = JoinSet::new();
        let hub = live::Hub::start(
            Arc::clone(&services.observe),
            &config.stream,
            config.partitions,
            Arc::clone(&services.runtime),
            &mut tasks,
        )
        .await?;
        let limiter = Arc::new(guard::limiter(
            config.limits.rate_per_second,
            config.limits.rate_burst,
        ));
        {
            // Forget clients idle long enough to be back at a full burst.
            let limiter = Arc::clone(&limiter);
            tasks.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    limiter.retain_recent();
                }
            });
        }
        let (shutdown, shutdown_rx) = watch::channel(false);
        if let Some(path) = config.tokens_file {
            tokens_file::watch_tokens(
                path,
                config.tokens.clone(),
                shutdown_rx.clone(),
                &mut tasks,
            )?;
        }
        let limits = Arc::new(config.limits);
        let state = api::AppState {
            publish: services.publish,
            observe: services.observe,
            memory: services.memory,
            runtime: services.runtime,
            hub,
            stream: config.stream,
            partitions: config.partitions,
            group: config.group,
            schemas,
            metrics: services.metrics,
            tokens: config.tokens,
            audit: services.audit,
            waiters: gate::Gate::new(limits.max_waiters, limits.max_waiters_per_client),
            watchers: gate::Gate::new(limits.max_watchers, limits.max_watchers_per_client),
            limits: Arc::clone(&limits),
            shutdown: shutdown_rx,
        };
        let edge = edge::Edge {
            limits,
            loopback_only,
        };
        Ok(Self {
            router: api::app(state, limiter, edge),
            loopback_only,
            shutdown,
            tasks,
        })
    }
}

/// The application without a listener, public for the fuzz targets (`tests/fuzz`), which
/// drive it with `tower::ServiceExt::oneshot`: requests need a `ConnectInfo<SocketAddr>`
/// extension, as the server adds.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// The router [`crate::Inspector::start`] serves, the tasks beside it (they run while the set is
    /// kept) and the sender that stops them.
    pub async fn application(
        config: InspectorConfig,
        services: Services,
    ) -> Result<(axum::Router, JoinSet<()>, watch::Sender<bool>), StartError> {
        let app = Application::build(config, services).await?;
        Ok((app.router, app.tasks, app.shutdown))
    }
}
