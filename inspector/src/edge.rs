//! What every request passes first: the `Host` check of loopback mode, the refusal of a body
//! larger than the limit (read and dropped first, so the client reads the 413), and the
//! request timeout.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use crate::Limits;
use crate::error::ApiError;

/// The most of an oversized body read (and dropped) so that its client, still sending, gets
/// the 413 instead of a reset connection; past it the connection is just closed.
const DRAIN_AT_MOST: u64 = 64 * 1024 * 1024;

/// The edge's settings.
#[derive(Debug, Clone)]
pub(crate) struct Edge {
    pub(crate) limits: Arc<Limits>,
    /// Loopback mode (no tokens): only loopback `Host` values are served.
    pub(crate) loopback_only: bool,
}

/// Middleware: host check, declared body size, then the request within its timeout.
pub(crate) async fn edge(State(edge): State<Edge>, request: Request, next: Next) -> Response {
    if edge.loopback_only && !host_is_loopback(&request) {
        metrics::counter!("swarm_inspector_refused_host_total").increment(1);
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "host_not_allowed",
            "this server has no API tokens and answers only requests addressed to loopback \
             (localhost, 127.0.0.1, [::1])",
        )
        .into_response();
    }
    let limit = edge.limits.body_limit;
    if let Some(declared) = declared_length(&request).filter(|n| *n > limit as u64) {
        return too_large(request, declared, limit, edge.limits.request_timeout).await;
    }
    let timeout = timeout_of(&request, &edge.limits);
    let answer = async move {
        // A body of unknown length (chunked) is read here, within the limit, so that one that
        // turns out too large is answered once it has been read (and dropped), not reset.
        let request = if request.headers().contains_key(header::TRANSFER_ENCODING) {
            match read_within(request, limit).await {
                Ok(request) => request,
                Err(response) => return *response,
            }
        } else {
            request
        };
        next.run(request).await
    };
    match tokio::time::timeout(timeout, answer).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("swarm_inspector_timed_out_total").increment(1);
            ApiError::unavailable(
                "timed_out",
                format!(
                    "the request was not answered within {} s",
                    timeout.as_secs_f64()
                ),
            )
            .into_response()
        }
    }
}

/// The request's bound: the request timeout, plus the reply wait it asks for (`?wait=S`).
fn timeout_of(request: &Request, limits: &Limits) -> Duration {
    let waits = request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|pair| pair.starts_with("wait=")));
    if waits {
        limits.request_timeout + limits.max_wait
    } else {
        limits.request_timeout
    }
}

fn declared_length(request: &Request) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// 413 for a body declared larger than `limit`. A body of reasonable size is read and dropped
/// first, so a client that sends before it reads gets the answer; the connection then closes.
async fn too_large(request: Request, declared: u64, limit: usize, within: Duration) -> Response {
    if declared <= DRAIN_AT_MOST {
        let mut body = request.into_body().into_data_stream();
        let _ = tokio::time::timeout(within, async {
            while let Some(Ok(_)) = body.next().await {}
        })
        .await;
    }
    body_too_large(format!(
        "the body is {declared} bytes; this server takes at most {limit}"
    ))
}

/// The request with its body read into memory, if it is at most `limit` bytes; otherwise the
/// answer: 413 once the rest (up to 64 MiB) has been read and dropped, or 400 if the body
/// broke off.
async fn read_within(request: Request, limit: usize) -> Result<Request, Box<Response>> {
    let (parts, body) = request.into_parts();
    let mut stream = body.into_data_stream();
    let mut kept = Vec::new();
    let mut read: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            Box::new(
                ApiError::bad_request("bad_body", format!("the body broke off: {e}"))
                    .into_response(),
            )
        })?;
        read += chunk.len() as u64;
        if read <= limit as u64 {
            kept.extend_from_slice(&chunk);
        } else if read > DRAIN_AT_MOST {
            break;
        }
    }
    if read > limit as u64 {
        return Err(Box::new(body_too_large(format!(
            "the body is more than {limit} bytes, the most this server takes"
        ))));
    }
    Ok(Request::from_parts(parts, axum::body::Body::from(kept)))
}

/// 413, closing the connection.
fn body_too_large(message: String) -> Response {
    metrics::counter!("swarm_inspector_body_too_large_total").increment(1);
    let mut response =
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message).into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Whether the request is addressed to loopback: a `localhost` name or a loopback address,
/// with or without a port. A request without any host (HTTP/1.0) is let through: browsers,
/// which DNS rebinding works through, always send one.
fn host_is_loopback(request: &Request) -> bool {
    let host = match request.uri().authority() {
        Some(authority) => Some(authority.host().to_owned()),
        None => request
            .headers()
            .get(header::HOST)
            .map(|h| h.to_str().map(str::to_owned).unwrap_or_default()),
    };
    host.is_none_or(|host| is_loopback_name(&host))
}

/// `localhost`, `*.localhost`, `127.x.x.x` or `[::1]`, each with an optional port.
pub(crate) fn is_loopback_name(host: &str) -> bool {
    let name = if let Some(bracketed) = host.strip_prefix('[') {
        match bracketed.split_once(']') {
            Some((inside, rest)) if rest.is_empty() || port(rest) => inside,
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, rest)) if port(&format!(":{rest}")) => name,
            Some(_) => return false,
            None => host,
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn port(rest: &str) -> bool {
    rest.strip_prefix(':')
        .is_some_and(|p| !p.is_empty() && p.parse::<u16>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::is_loopback_name;

    #[test]
    fn loopback_names_with_and_without_ports() {
        for host in [
            "localhost",
            "localhost:7077",
            "LOCALHOST.:80",
            "app.localhost:1",
            "127.0.0.1",
            "127.1.2.3:7077",
            "[::1]",
            "[::1]:7077",
        ] {
            assert!(is_loopback_name(host), "{host} is loopback");
        }
        for host in [
            "evil.example",
            "evil.example:7077",
            "localhost.evil.example",
            "10.0.0.1:7077",
            "[::2]:7077",
            "[::1]x",
            "localhost:notaport",
            "localhost:99999",
            "127.0.0.1.evil.example",
            "",
        ] {
            assert!(!is_loopback_name(host), "{host} is not loopback");
        }
    }
}
