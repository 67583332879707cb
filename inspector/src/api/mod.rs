//! The HTTP API: state, routes by scope, the OpenAPI document.

mod audit;
mod conversation;
mod executions;
mod live;
mod ops;
mod signals;
mod units;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::PrometheusHandle;
use swarm_memory::Memory;
use swarm_mesh::{Observe, Publish};
use tokio::sync::watch;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use conversation::{Conversation, ExecutionNode, SignalNode};
pub use executions::SimilarHit;
pub use ops::{Health, MeshHealth, RecordingHealth, UnitProblem};
pub(crate) use signals::SignalSchemas;
pub use signals::{BadSchema, PayloadSchemas, Posted, Replied};

use crate::auth::{Scope, Tokens, require};
use crate::edge::{self, Edge};
use crate::error::{ApiError, ErrorBody};
use crate::gate::Gate;
use crate::guard::{RateLimiter, rate_limit};
use crate::live::{Hub, LiveEvent};
use crate::{Limits, Runtime, page};

/// What every handler can reach.
#[derive(Clone)]
pub(crate) struct AppState {
    pub publish: Arc<dyn Publish>,
    pub observe: Arc<dyn Observe>,
    pub memory: Arc<dyn Memory>,
    pub runtime: Arc<dyn Runtime>,
    pub hub: Arc<Hub>,
    pub stream: String,
    /// Its partitions.
    pub partitions: u32,
    pub group: String,
    pub schemas: Arc<SignalSchemas>,
    pub metrics: Option<PrometheusHandle>,
    pub tokens: Tokens,
    pub audit: swarm_memory::AuditTrail,
    pub limits: Arc<Limits>,
    /// Posts waiting for a reply, bounded in all and per client.
    pub waiters: Gate,
    /// Live websockets, bounded in all and per client.
    pub watchers: Gate,
    pub shutdown: watch::Receiver<bool>,
}

impl AppState {
    /// The stream's backlog summed over its partitions: the group's pending and lag, the
    /// stream's length and the dead letters kept; also set as gauges for `/metrics`.
    pub(crate) async fn backlog(&self) -> Result<MeshHealth, swarm_mesh::MeshError> {
        let info = self.group_info().await?;
        let (mut length, mut dead_letters) = (0, 0);
        for k in 0..self.partitions.max(1) {
            let part = swarm_mesh::partition::partition_stream(&self.stream, k, self.partitions);
            length += self.observe.len(&part).await?;
            dead_letters += self
                .observe
                .len(&swarm_mesh::dead_letter_stream(&part))
                .await?;
        }
        metrics::gauge!("swarm_stream_pending").set(info.pending as f64);
        metrics::gauge!("swarm_stream_lag").set(info.lag as f64);
        metrics::gauge!("swarm_stream_length").set(length as f64);
        metrics::gauge!("swarm_dead_letters_kept").set(dead_letters as f64);
        Ok(MeshHealth {
            pending: info.pending,
            lag: info.lag,
            length,
            dead_letters,
        })
    }

    /// The reactors' group on the stream, summed over its partitions.
    pub(crate) async fn group_info(&self) -> Result<swarm_mesh::GroupInfo, swarm_mesh::MeshError> {
        let mut total = swarm_mesh::GroupInfo::default();
        for k in 0..self.partitions.max(1) {
            let part = swarm_mesh::partition::partition_stream(&self.stream, k, self.partitions);
            let info = self.observe.group_info(&part, &self.group).await?;
            total.pending += info.pending;
            total.lag += info.lag;
            for consumer in info.consumers {
                match total.consumers.iter_mut().find(|c| c.name == consumer.name) {
                    Some(known) => known.pending += consumer.pending,
                    None => total.consumers.push(consumer),
                }
            }
        }
        Ok(total)
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "swarm",
        description = "Drive a swarm with signals, watch its mesh live, search what its units did. \
            Every error is a JSON `ErrorBody`. With API tokens configured, each endpoint needs a \
            bearer token with the scope it names (`read`, `emit`, `admin`)."
    ),
    modifiers(&BearerAuth),
    components(schemas(LiveEvent, ErrorBody, swarm_schemas::AuditAction)),
    tags(
        (name = "signals", description = "Post signals onto the mesh"),
        (name = "units", description = "The loaded units"),
        (name = "executions", description = "What units did, from memory"),
        (name = "mesh", description = "The live mesh, metrics, health"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

fn scoped(
    router: OpenApiRouter<AppState>,
    tokens: &Tokens,
    scope: Scope,
) -> OpenApiRouter<AppState> {
    router.route_layer(from_fn_with_state((tokens.clone(), scope), require))
}

/// The whole application: API, OpenAPI document, page, guards.
pub(crate) fn app(state: AppState, limiter: Arc<RateLimiter>, edge: Edge) -> Router {
    let body_limit = state.limits.body_limit;
    let router = routes(&state)
        .fallback(|| async { ApiError::not_found("not_found", "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .with_state(state)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::custom(handler_panicked))
        .layer(from_fn_with_state(limiter, rate_limit))
        .layer(from_fn_with_state(edge, edge::edge));
    with_security_headers(router)
}

/// Every endpoint behind its scope's token check, the OpenAPI document and the web page.
fn routes(state: &AppState) -> Router<AppState> {
    let tokens = &state.tokens;
    let read = OpenApiRouter::new()
        .routes(routes!(units::list_units))
        .routes(routes!(executions::similar, executions::similar_post))
        .routes(routes!(executions::get_execution))
        .routes(routes!(conversation::of_execution))
        .routes(routes!(conversation::of_signal))
        .routes(routes!(ops::topology))
        .routes(routes!(ops::metrics))
        .routes(routes!(live::live));
    let emit = OpenApiRouter::new().routes(routes!(signals::post_signal));
    let admin = OpenApiRouter::new()
        .routes(routes!(units::enable_unit))
        .routes(routes!(units::disable_unit))
        .routes(routes!(audit::read_audit));
    // Outside the token check, so refused calls are recorded too.
    let admin = scoped(admin, tokens, Scope::Admin)
        .route_layer(from_fn_with_state(state.clone(), audit::record_admin_calls));
    let (api, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(scoped(read, tokens, Scope::Read))
        .merge(scoped(emit, tokens, Scope::Emit))
        .merge(admin)
        .routes(routes!(ops::health))
        .split_for_parts();
    let openapi = Arc::new(openapi);
    api.route(
        "/v1/openapi.json",
        axum::routing::get(move || {
            let openapi = Arc::clone(&openapi);
            async move { axum::Json(openapi) }
        }),
    )
    .merge(page::routes())
}

/// A handler's panic is a bug, not bad input: the client gets a JSON 500 and the server keeps
/// serving.
fn handler_panicked(_panic: Box<dyn std::any::Any + Send>) -> axum::response::Response {
    tracing::error!("an API handler panicked");
    ApiError::new(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "the server failed to answer this request",
    )
    .into_response()
}

/// The security headers every answer carries unless its handler set its own.
fn with_security_headers(router: Router) -> Router {
    let csp = "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; \
               script-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'";
    [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CONTENT_SECURITY_POLICY, csp),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (header::CACHE_CONTROL, "no-store"),
    ]
    .into_iter()
    .fold(router, |router, (name, value)| {
        router.layer(SetResponseHeaderLayer::if_not_present(
            name,
            HeaderValue::from_static(value),
        ))
    })
}
