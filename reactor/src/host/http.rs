//! The `http` capability: a request through the host's pooled client, to a host on the
//! unit's allowlist, with a timeout and a cap on the response body.

use std::time::Duration;

use swarm_schemas::{HttpRequest, HttpResponse, validate_host_pattern};

use super::Failure;

/// One entry of an HTTP allowlist: a host (or every subdomain of a domain), on one port or any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: String,
    subdomains: bool,
    port: Option<u16>,
}

impl HostPattern {
    /// Parses `host`, `host:port`, `*.domain` or `*.domain:port`.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        validate_host_pattern(pattern)?;
        let (host, port) = match pattern.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().ok()),
            None => (pattern, None),
        };
        Ok(match host.strip_prefix("*.") {
            Some(domain) => Self {
                host: domain.to_owned(),
                subdomains: true,
                port,
            },
            None => Self {
                host: host.to_owned(),
                subdomains: false,
                port,
            },
        })
    }

    /// Whether a request to `host` on `port` is allowed by this entry.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        let host_ok = if self.subdomains {
            host.strip_suffix(&self.host)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
        } else {
            host == self.host
        };
        host_ok && self.port.is_none_or(|p| p == port)
    }
}

/// The host's limits on every request.
pub(super) struct Limits {
    pub timeout: Duration,
    pub max_bytes: usize,
}

/// Makes the request framed in `wire` (a JSON head, a newline, the body) and frames the
/// response the same way.
pub(super) async fn request(
    client: &reqwest::Client,
    limits: &Limits,
    allow: &[HostPattern],
    unit: &str,
    wire: &[u8],
) -> Result<Vec<u8>, Failure> {
    let (builder, timeout_ms) = prepare(client, allow, unit, wire)?;
    let timeout = timeout_ms.map_or(limits.timeout, |ms| {
        Duration::from_millis(ms).min(limits.timeout)
    });
    match tokio::time::timeout(timeout, exchange(builder, limits.max_bytes)).await {
        Ok(result) => result,
        Err(_) => Err(Failure::Failed(format!(
            "the request timed out after {} ms",
            timeout.as_millis()
        ))),
    }
}

/// The request `wire` asks for (its JSON head, a newline, then the body), checked against the
/// allowlist; with the timeout the unit asked for, if any.
fn prepare(
    client: &reqwest::Client,
    allow: &[HostPattern],
    unit: &str,
    wire: &[u8],
) -> Result<(reqwest::RequestBuilder, Option<u64>), Failure> {
    let (head, body) = match wire.iter().position(|&b| b == b'\n') {
        Some(at) => (&wire[..at], &wire[at + 1..]),
        None => (wire, &[][..]),
    };
    let head: HttpRequest = serde_json::from_slice(head)
        .map_err(|e| Failure::BadRequest(format!("an HTTP request head is not valid: {e}")))?;
    let url = reqwest::Url::parse(&head.url)
        .map_err(|e| Failure::BadRequest(format!("`{}` is not a URL: {e}", head.url)))?;
    if url.scheme() != "http" {
        return Err(Failure::BadRequest(format!(
            "`{}`: only http:// URLs are supported",
            head.url
        )));
    }
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(80);
    if !allow.iter().any(|p| p.allows(host, port)) {
        return Err(Failure::Denied(format!(
            "unit `{unit}` may not reach `{host}:{port}`: it is not on the HTTP allowlist in the unit's manifest"
        )));
    }
    let method = reqwest::Method::from_bytes(head.method.as_bytes())
        .map_err(|_| Failure::BadRequest(format!("`{}` is not an HTTP method", head.method)))?;
    let mut builder = client.request(method, url);
    for (name, value) in &head.headers {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Failure::BadRequest(format!("`{name}` is not a header name")))?;
        let value = reqwest::header::HeaderValue::from_str(value)
            .map_err(|_| Failure::BadRequest(format!("the value of `{name}` is not valid")))?;
        builder = builder.header(name, value);
    }
    if !body.is_empty() {
        builder = builder.body(body.to_vec());
    }
    Ok((builder, head.timeout_ms))
}

/// Sends the request and reads the answer: its JSON head (status, headers), a newline, then
/// the body, read chunk by chunk and refused past `max_bytes`.
async fn exchange(builder: reqwest::RequestBuilder, max_bytes: usize) -> Result<Vec<u8>, Failure> {
    let mut response = builder
        .send()
        .await
        .map_err(|e| Failure::Failed(format!("the request failed: {e}")))?;
    if let Some(length) = response.content_length() {
        if length > max_bytes as u64 {
            return Err(too_large(max_bytes, &format!("{length} bytes")));
        }
    }
    let status = response.status().as_u16();
    let headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let mut out = serde_json::to_vec(&HttpResponse { status, headers })
        .map_err(|e| Failure::Failed(e.to_string()))?;
    out.push(b'\n');
    let start = out.len();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| Failure::Failed(format!("reading the response failed: {e}")))?
    {
        if out.len() - start + chunk.len() > max_bytes {
            return Err(too_large(max_bytes, "more"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn too_large(max: usize, got: &str) -> Failure {
    Failure::Failed(format!(
        "the response is larger than the limit of {max} bytes ({got}); it was cut off"
    ))
}

#[cfg(test)]
mod tests {
    use super::HostPattern;

    fn allows(pattern: &str, host: &str, port: u16) -> bool {
        HostPattern::parse(pattern).is_ok_and(|p| p.allows(host, port))
    }

    #[test]
    fn allowlist_entries() {
        assert!(allows("example.com", "example.com", 443));
        assert!(allows("example.com", "EXAMPLE.com", 80));
        assert!(!allows("example.com", "api.example.com", 80));
        assert!(!allows("example.com", "badexample.com", 80));
        assert!(allows("127.0.0.1:8080", "127.0.0.1", 8080));
        assert!(!allows("127.0.0.1:8080", "127.0.0.1", 8081));
        assert!(allows("*.example.com", "api.example.com", 80));
        assert!(allows("*.example.com:81", "a.b.example.com", 81));
        assert!(!allows("*.example.com", "example.com", 80));
        assert!(!allows("*.example.com", "xexample.com", 80));
        assert!(!allows("*.example.com:81", "a.example.com", 80));
        assert!(HostPattern::parse("not a host").is_err());
    }
}
