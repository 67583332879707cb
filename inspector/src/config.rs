//! How to serve: the address, tokens, limits on requests and connections, TLS, and the
//! stream and group the inspector reads.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::{ConnectionLimits, PayloadSchemas, StartError, Tokens};

/// Limits that protect the server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, bytes.
    pub body_limit: usize,
    /// Requests per second per client address.
    pub rate_per_second: NonZeroU32,
    /// Requests a client may make at once before the rate applies.
    pub rate_burst: NonZeroU32,
    /// Longest wait for a reply a post may ask for.
    pub max_wait: Duration,
    /// Longest a request may take, its body read included (a post that waits for a reply
    /// gets its wait on top; the live websocket, once open, is not bound by it).
    pub request_timeout: Duration,
    /// Origins (`https://host:port`) besides the server's own allowed to open `/v1/live`.
    pub allowed_origins: Vec<String>,
    /// Posts waiting for a reply at once, in all.
    pub max_waiters: usize,
    /// Posts one client address may have waiting at once.
    pub max_waiters_per_client: usize,
    /// Live websockets open at once, in all.
    pub max_watchers: usize,
    /// Live websockets one client address may have open at once.
    pub max_watchers_per_client: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_limit: 1024 * 1024,
            rate_per_second: NonZeroU32::new(200).unwrap_or(NonZeroU32::MIN),
            rate_burst: NonZeroU32::new(400).unwrap_or(NonZeroU32::MIN),
            max_wait: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            allowed_origins: Vec::new(),
            max_waiters: 1024,
            max_waiters_per_client: 128,
            max_watchers: 256,
            max_watchers_per_client: 16,
        }
    }
}

/// How to serve.
#[derive(Debug, Clone)]
pub struct InspectorConfig {
    /// Address to listen on. Without tokens, only its port is used, on loopback.
    pub addr: SocketAddr,
    /// Bearer tokens; none: nothing is checked and the server listens on loopback only.
    pub tokens: Tokens,
    /// The file `tokens` were read from: watched, and read again when it changes.
    pub tokens_file: Option<PathBuf>,
    /// Limits on requests.
    pub limits: Limits,
    /// Limits on connections.
    pub connections: ConnectionLimits,
    /// Serve HTTPS with this certificate chain and key (PEM files).
    pub tls: Option<TlsFiles>,
    /// The stream signals flow on.
    pub stream: String,
    /// Partitions of the stream (see `swarm_mesh::partition`): the live view follows each.
    pub partitions: u32,
    /// The reactors' consumer group (for pending and lag).
    pub group: String,
    /// JSON Schemas of payloads by signal kind; posts of those kinds must pass them.
    pub payload_schemas: PayloadSchemas,
}

impl InspectorConfig {
    /// The address it serves on: `addr`, or, with no tokens configured, loopback of the same
    /// family on the same port.
    pub fn serving_addr(&self) -> SocketAddr {
        if !self.tokens.is_empty() || self.addr.ip().is_loopback() {
            return self.addr;
        }
        let ip = match self.addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        };
        SocketAddr::new(ip, self.addr.port())
    }

    /// Defaults for serving on `addr` over the reactor's default stream and group.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            tokens: Tokens::default(),
            tokens_file: None,
            limits: Limits::default(),
            connections: ConnectionLimits::default(),
            tls: None,
            stream: "swarm:signals".into(),
            partitions: 1,
            group: "reactor".into(),
            payload_schemas: PayloadSchemas::default(),
        }
    }
}

/// A certificate chain and its private key, PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// The TLS acceptor of these files (HTTP/1.1 over TLS 1.2 and 1.3).
    pub(crate) fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, StartError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |path: &Path, error: &dyn std::fmt::Display| StartError::Tls {
            path: path.to_owned(),
            message: error.to_string(),
        };
        let certs = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| bad(&self.cert, &e))?;
        if certs.is_empty() {
            return Err(bad(&self.cert, &"no certificate in the file"));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| bad(&self.key, &e))?;
        // ring, not aws-lc (which adds minutes of C to a fresh build); it has no post-quantum
        // key exchange, which rustls now flags.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(&self.cert, &e))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| bad(&self.key, &e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}
