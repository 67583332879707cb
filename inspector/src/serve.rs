//! The accept loop: each connection admitted by the connection gate, then served by hyper
//! with a timer (header-read timeout), closed after an idle spell, over TLS when configured,
//! and let finish on shutdown.
//!
//! `axum::serve` runs hyper without a timer, so a client that trickles its request header
//! keeps its socket forever; this loop is what bounds it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

use crate::gate::{Full, Gate};

/// Bounds on connections.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Longest a client may take to send a request's header (and, over TLS, its handshake).
    pub header_timeout: Duration,
    /// A connection with no bytes either way for this long is closed (a request in progress
    /// is answered first).
    pub idle_timeout: Duration,
    /// Connections open at once, in all.
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_connections_per_client: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            max_connections: 4096,
            max_connections_per_client: 256,
        }
    }
}

/// What every connection is served with.
pub(crate) struct Serving {
    pub(crate) router: Router,
    pub(crate) limits: ConnectionLimits,
    pub(crate) connections: Gate,
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
}

/// A listener on `addr` with a deep accept queue: a burst of connections waits there to be
/// accepted (and timed) instead of being dropped and retried by the clients' kernels seconds
/// later.
pub(crate) fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Accepts and serves until `stop` turns true; then each connection finishes the request it
/// is answering and closes, for at most `grace`.
pub(crate) async fn serve(
    listener: TcpListener,
    serving: Serving,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let serving = Arc::new(serving);
    let mut open = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, mostly: wait for some to close rather than spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        // Reap the finished ones as we go, so the set holds only open connections.
        while open.try_join_next().is_some() {}
        let admitted = match serving.connections.admit(peer.ip()) {
            Ok(admitted) => admitted,
            Err(full) => {
                metrics::counter!("swarm_inspector_connections_refused_total", "bound" => full.as_str())
                    .increment(1);
                refuse(&stream, full);
                continue;
            }
        };
        metrics::gauge!("swarm_inspector_connections").set(serving.connections.held() as f64);
        let serving = Arc::clone(&serving);
        let stop = stop.clone();
        open.spawn(async move {
            let _ = stream.set_nodelay(true);
            match &serving.tls {
                None => connection(&serving, stream, peer, stop).await,
                Some(acceptor) => {
                    let handshake = acceptor.accept(stream);
                    match tokio::time::timeout(serving.limits.header_timeout, handshake).await {
                        Ok(Ok(tls)) => connection(&serving, tls, peer, stop).await,
                        Ok(Err(error)) => tracing::debug!(%error, %peer, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            drop(admitted);
            metrics::gauge!("swarm_inspector_connections").set(serving.connections.held() as f64);
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, open.join_all()).await.is_err() {
        tracing::warn!("connections still open after the grace period are dropped");
    }
}

/// Serves one connection with HTTP/1.1 (with upgrades, for the live websocket) until the
/// client closes it, it stays idle past the idle timeout, or the server stops.
async fn connection<I>(serving: &Serving, io: I, peer: SocketAddr, mut stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let router = serving.router.clone();
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request.map(axum::body::Body::new))
        });
    let (io, activity) = Watched::new(io);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(serving.limits.header_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let idle = serving.limits.idle_timeout;
    let mut check = tokio::time::interval((idle / 4).max(Duration::from_millis(10)));
    let mut closing = false;
    loop {
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(error) = ended {
                    tracing::debug!(%error, %peer, "connection ended");
                }
                return;
            }
            _ = check.tick(), if !closing => {
                if activity.idle() >= idle {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            () = stopped(&mut stop), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Waits for `stop` to turn true (or its sender to go).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Tells a refused connection why, if its socket takes the answer at once, and closes it:
/// nothing waits on a client the server has no room for.
fn refuse(stream: &TcpStream, full: Full) {
    let error = full.error("connections");
    let (status, body) = (error.status(), error.body_bytes());
    let mut answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    let _ = stream.try_write(&answer);
}

/// When a connection last moved a byte either way.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// An IO that records its activity.
struct Watched<I> {
    io: I,
    activity: Arc<Activity>,
}

impl<I> Watched<I> {
    fn new(io: I) -> (Self, Arc<Activity>) {
        let activity = Arc::new(Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        });
        let io = Self {
            io,
            activity: Arc::clone(&activity),
        };
        (io, activity)
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
