//! The CLI's client of a running `swarm up`'s HTTP API.

use std::time::Duration;

use anyhow::{Context, bail};
use serde::de::DeserializeOwned;

/// `GET {server}{path}?{query}` with `token` as the bearer token if given; the answer's JSON
/// body as `T`. A refusal fails with the status and the server's words; `what` names what the
/// body should have been.
pub(crate) async fn get_json<T: DeserializeOwned>(
    server: &str,
    path: &str,
    query: &[(&str, String)],
    token: Option<&str>,
    what: &str,
) -> anyhow::Result<T> {
    let url = format!("{}{path}", server.trim_end_matches('/'));
    let mut request = reqwest::Client::new()
        .get(&url)
        .query(query)
        .timeout(Duration::from_secs(10));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("no answer from {url}"))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        bail!("{url} answered {status}: {body}");
    }
    response
        .json()
        .await
        .with_context(|| format!("{url} did not answer with {what}"))
}
