//! Blocking HTTP requests made by the host's pooled client, to the hosts the unit's manifest
//! allows (deny by default), with the host's timeout and response size limit.
//!
//! ```no_run
//! # fn f() -> Result<(), swarm_sdk::HostError> {
//! let response = swarm_sdk::http::get("http://127.0.0.1:8080/stock/42")?;
//! if response.status == 200 {
//!     let stock: serde_json::Value = response.json()?;
//! }
//! # Ok(()) }
//! ```
//!
//! Needs `Manifest::uses_http` (with the allowed hosts) and a grant in the reactor's
//! configuration. Redirects are not followed: a 3xx comes back as it is.

use std::time::Duration;

use swarm_abi::HOST_HTTP;
use swarm_schemas::{HttpRequest, HttpResponse};

use super::{HostError, HostErrorKind, call_raw};

/// A request to send.
#[derive(Debug, Clone)]
pub struct Request {
    head: HttpRequest,
    body: Vec<u8>,
}

impl Request {
    /// A request with `method` to an absolute `url`.
    pub fn new(method: &str, url: &str) -> Self {
        Self {
            head: HttpRequest {
                method: method.to_owned(),
                url: url.to_owned(),
                headers: Vec::new(),
                timeout_ms: None,
            },
            body: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.head.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and its content type.
    pub fn json(self, value: &impl serde::Serialize) -> Result<Self, HostError> {
        let body = serde_json::to_vec(value)
            .map_err(|e| HostError::new(HostErrorKind::BadRequest, e.to_string()))?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// A timeout shorter than the host's (a longer one is cut to the host's).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.head.timeout_ms = Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Sends it and waits for the whole response.
    pub fn send(self) -> Result<Response, HostError> {
        let mut wire = serde_json::to_vec(&self.head)
            .map_err(|e| HostError::new(HostErrorKind::BadRequest, e.to_string()))?;
        wire.push(b'\n');
        wire.extend_from_slice(&self.body);
        let reply = call_raw(HOST_HTTP, &wire)?;
        let (head, body) = split(&reply)
            .ok_or_else(|| HostError::new(HostErrorKind::Failed, "the host's reply has no head"))?;
        let head: HttpResponse = serde_json::from_slice(head)
            .map_err(|e| HostError::new(HostErrorKind::Failed, format!("the host's reply: {e}")))?;
        Ok(Response {
            status: head.status,
            headers: head.headers,
            body: body.to_vec(),
        })
    }
}

/// The JSON head and the raw body of a framed message.
fn split(wire: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = wire.iter().position(|&b| b == b'\n')?;
    Some((&wire[..at], &wire[at + 1..]))
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<&str, HostError> {
        std::str::from_utf8(&self.body)
            .map_err(|e| HostError::new(HostErrorKind::Failed, format!("body is not UTF-8: {e}")))
    }

    /// The body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, HostError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| HostError::new(HostErrorKind::Failed, format!("body is not JSON: {e}")))
    }
}

/// Sends a GET request.
pub fn get(url: &str) -> Result<Response, HostError> {
    Request::new("GET", url).send()
}
