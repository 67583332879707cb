//! Rate limiting per client address (GCRA, `governor`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::Clock;

use crate::error::ApiError;

/// One rate limiter keyed by client address.
pub(crate) type RateLimiter = governor::DefaultKeyedRateLimiter<IpAddr>;

/// A limiter allowing `per_second` requests per client, in bursts of up to `burst`.
pub(crate) fn limiter(per_second: NonZeroU32, burst: NonZeroU32) -> RateLimiter {
    governor::RateLimiter::keyed(governor::Quota::per_second(per_second).allow_burst(burst))
}

/// Middleware: a client over its rate gets 429 with the seconds to wait.
pub(crate) async fn rate_limit(
    State(limiter): State<Arc<RateLimiter>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    if let Err(not_until) = limiter.check_key(&ip) {
        let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
        metrics::counter!("swarm_inspector_rate_limited_total").increment(1);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests from this address; slow down",
        )
        .retry_after(wait.as_secs().max(1)));
    }
    Ok(next.run(request).await)
}
