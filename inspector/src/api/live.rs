//! `/v1/live`: the mesh as it happens, over a websocket.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use swarm_schemas::KindPattern;
use tokio::sync::{broadcast, watch};
use utoipa::IntoParams;

use super::AppState;
use crate::error::{ApiError, ErrorBody, Query};
use crate::live::LiveEvent;

/// Which events a watcher wants.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct LiveParams {
    /// Only signals and executions of kinds matching this pattern (`order.*`, `order.>`).
    kind: Option<String>,
    /// Only executions of this unit (signals are not filtered by it).
    unit: Option<String>,
    /// `signals`, `executions`, or both (default).
    events: Option<String>,
    /// The bearer token, for browsers, which cannot set headers on a websocket.
    #[allow(dead_code)]
    access_token: Option<String>,
}

struct Filter {
    kind: Option<KindPattern>,
    unit: Option<String>,
    signals: bool,
    executions: bool,
}

impl Filter {
    fn new(params: LiveParams) -> Result<Self, ApiError> {
        let kind = params
            .kind
            .map(|k| {
                KindPattern::parse(&k).map_err(|e| {
                    ApiError::bad_request("bad_query", format!("kind pattern `{k}` {e}"))
                })
            })
            .transpose()?;
        let (signals, executions) = match params.events.as_deref() {
            None | Some("all") => (true, true),
            Some("signals") => (true, false),
            Some("executions") => (false, true),
            Some(other) => {
                return Err(ApiError::bad_request(
                    "bad_query",
                    format!("events must be `signals`, `executions` or `all`, not `{other}`"),
                ));
            }
        };
        Ok(Self {
            kind,
            unit: params.unit,
            signals,
            executions,
        })
    }

    fn admits(&self, event: &LiveEvent) -> bool {
        let kind_ok = |kind: &str| self.kind.as_ref().is_none_or(|p| p.matches(kind));
        match event {
            LiveEvent::Signal {
                signal,
                dead_letter,
                ..
            } => {
                self.signals
                    && (kind_ok(&signal.kind)
                        || (*dead_letter
                            && signal.payload["original"]["kind"]
                                .as_str()
                                .is_some_and(kind_ok)))
            }
            LiveEvent::Execution { execution } => {
                self.executions
                    && kind_ok(&execution.signal.kind)
                    && self.unit.as_ref().is_none_or(|u| *u == execution.unit)
            }
            LiveEvent::Lagged { .. } => true,
        }
    }
}

/// A browser's websocket must come from this server's own page or an allowed origin;
/// clients that send no Origin (not browsers) are let through (they need a token anyway).
pub(crate) fn check_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    if allowed.iter().any(|a| a == origin) {
        return Ok(());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or_default();
    if !host.is_empty() && authority.eq_ignore_ascii_case(host) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "bad_origin",
        format!("websocket connections from origin `{origin}` are not allowed"),
    ))
}

/// Signals and executions as they happen, as JSON text messages (`LiveEvent`).
#[utoipa::path(
    get,
    path = "/v1/live",
    tag = "mesh",
    params(LiveParams),
    responses(
        (status = 101, description = "Websocket of LiveEvent messages"),
        (status = 400, body = ErrorBody),
        (status = 403, description = "Origin not allowed", body = ErrorBody),
        (status = 429, description = "This client holds as many live watchers as it may", body = ErrorBody),
        (status = 503, description = "The server holds as many live watchers as it takes", body = ErrorBody),
    ),
    security(("bearer" = ["read"]))
)]
pub(crate) async fn live(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(params): Query<LiveParams>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    check_origin(&headers, &state.limits.allowed_origins)?;
    let upgrade =
        upgrade.map_err(|e| ApiError::new(e.status(), "not_a_websocket", e.body_text()))?;
    let filter = Filter::new(params)?;
    let place = state
        .watchers
        .admit(peer.ip())
        .map_err(|full| full.error("live watchers"))?;
    let events = state.hub.subscribe();
    let shutdown = state.shutdown.clone();
    Ok(upgrade.on_upgrade(move |socket| async move {
        watch_live(socket, events, filter, shutdown).await;
        drop(place);
    }))
}

async fn watch_live(
    socket: WebSocket,
    mut events: broadcast::Receiver<Arc<LiveEvent>>,
    filter: Filter,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut sink, mut incoming) = socket.split();
    metrics::gauge!("swarm_inspector_watchers").increment(1.0);
    loop {
        let event = tokio::select! {
            _ = shutdown.changed() => break,
            message = incoming.next() => match message {
                // Pings are answered by the websocket itself; anything else is ignored.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => continue,
            },
            event = events.recv() => match event {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(missed)) => Arc::new(LiveEvent::Lagged { missed }),
                Err(broadcast::error::RecvError::Closed) => break,
            },
        };
        if !filter.admits(&event) {
            continue;
        }
        let Ok(text) = serde_json::to_string(&*event) else {
            continue;
        };
        if sink.send(Message::Text(text.into())).await.is_err() {
            break;
        }
    }
    let _ = sink.send(Message::Close(None)).await;
    metrics::gauge!("swarm_inspector_watchers").decrement(1.0);
}
