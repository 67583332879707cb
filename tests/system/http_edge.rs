//! The inspector's edge over real sockets: slow and idle connections are closed on time,
//! connection floods are capped per address, oversized bodies get a 413, loopback mode
//! refuses foreign `Host` values, TLS serves, the tokens file is reloaded, and reply waiters
//! and live watchers are bounded. The reactor behind it runs no units (none is needed).
//!
//! Linux routes all of 127.0.0.0/8 to loopback, so a client bound to 127.0.0.2 is another
//! address to the server.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use swarm_inspector::{
    ConnectionLimits, ErrorBody, Inspector, InspectorConfig, Limits, Services, TlsFiles,
};
use swarm_reactor::Reactor;
use swarm_tests::TestSwarm;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// An inspector over a reactor with no units.
struct Edge {
    _swarm: TestSwarm,
    reactor: Option<Reactor>,
    inspector: Option<Inspector>,
    addr: SocketAddr,
}

impl Edge {
    async fn start(configure: impl FnOnce(&mut InspectorConfig)) -> Self {
        Self::try_start(configure).await.expect("inspector starts")
    }

    async fn try_start(
        configure: impl FnOnce(&mut InspectorConfig),
    ) -> Result<Self, swarm_inspector::StartError> {
        let swarm = TestSwarm::new();
        let (reactor, _) = swarm.start().await;
        let mut config = InspectorConfig::new("127.0.0.1:0".parse().expect("addr"));
        config.stream.clone_from(&swarm.config.stream);
        config.group.clone_from(&swarm.config.group);
        configure(&mut config);
        let started = Inspector::start(
            config,
            Services {
                publish: Arc::clone(&swarm.mesh) as _,
                observe: Arc::clone(&swarm.mesh) as _,
                memory: Arc::clone(&swarm.memory) as _,
                runtime: Arc::new(reactor.handle()),
                metrics: None,
                audit: reactor.handle().audit().clone(),
            },
        )
        .await;
        let inspector = match started {
            Ok(inspector) => inspector,
            Err(error) => {
                reactor.stop().await;
                return Err(error);
            }
        };
        Ok(Self {
            addr: inspector.local_addr(),
            _swarm: swarm,
            reactor: Some(reactor),
            inspector: Some(inspector),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the reactor alone: the inspector keeps serving, and nothing reads the mesh.
    async fn stop_reactor(&mut self) {
        if let Some(reactor) = self.reactor.take() {
            reactor.stop().await;
        }
    }

    async fn stop(mut self) {
        if let Some(inspector) = self.inspector.take() {
            inspector.stop().await;
        }
        if let Some(reactor) = self.reactor.take() {
            reactor.stop().await;
        }
    }
}

/// A connection to `to` from the loopback address `from`.
async fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::from(from), 0))?;
    socket.connect(to).await
}

/// A client whose requests come from the loopback address `from`.
fn client_from(from: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(from))
        .build()
        .expect("client")
}

/// Reads until the peer closes (or `within` passes); what it sent, and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// The error code of a JSON error answer.
async fn error_code(response: reqwest::Response) -> String {
    let body: ErrorBody = response.json().await.expect("a JSON error");
    body.error.code
}

/// The error code in a raw HTTP answer's JSON body.
fn raw_error_code(answer: &str) -> String {
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str::<ErrorBody>(body)
        .map(|b| b.error.code)
        .unwrap_or_else(|e| panic!("no JSON error in {answer:?}: {e}"))
}

/// Checks a raw HTTP answer's status, and, for an error, its JSON error's code.
fn assert_raw_answer(answer: &str, status: &str, error: Option<&str>, what: &str) {
    assert!(
        answer.starts_with(&format!("HTTP/1.1 {status}")),
        "{what}: {answer:?}"
    );
    if let Some(code) = error {
        assert_eq!(raw_error_code(answer), code, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_header_connections_are_closed_on_time_while_others_are_served() {
    const SLOW: usize = 3000;
    let header_timeout = Duration::from_secs(2);
    let edge = Edge::start(|config| {
        config.connections = ConnectionLimits {
            header_timeout,
            max_connections: 10_000,
            max_connections_per_client: 10_000,
            ..ConnectionLimits::default()
        };
    })
    .await;

    // Each slow client sends a partial header, then one more header line every second: more
    // than the timeout in all, never quiet for long.
    let mut slow = tokio::task::JoinSet::new();
    let addr = edge.addr;
    for i in 0..SLOW {
        slow.spawn(async move {
            // Spread over a few source addresses, like a small botnet.
            let from = [127, 0, 0, 10 + (i % 8) as u8];
            let mut stream = connect_from(from, addr).await.expect("connect");
            let opened = Instant::now();
            let _ = stream
                .write_all(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n")
                .await;
            let mut buf = [0u8; 1024];
            loop {
                tokio::select! {
                    read = stream.read(&mut buf) => match read {
                        Ok(0) | Err(_) => return opened.elapsed(),
                        Ok(_) => return opened.elapsed(),
                    },
                    () = tokio::time::sleep(Duration::from_secs(1)) => {
                        if stream.write_all(b"X-Slow: 1\r\n").await.is_err() {
                            return opened.elapsed();
                        }
                    }
                }
                assert!(opened.elapsed() < Duration::from_secs(30), "never closed");
            }
        });
    }

    // Meanwhile a normal client is answered, every 50 ms.
    let client = reqwest::Client::new();
    let mut answered = 0;
    let normal_until = Instant::now() + header_timeout * 2;
    while Instant::now() < normal_until {
        let response = client
            .get(edge.url("/v1/health"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .expect("a normal request is answered while the slow ones hang");
        assert_eq!(response.status(), StatusCode::OK);
        answered += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut held: Vec<Duration> = slow.join_all().await;
    held.sort();
    let longest = held.last().copied().unwrap_or_default();
    println!(
        "{SLOW} slow-header connections held: median {:?}, p99 {:?}, longest {longest:?} (timeout {header_timeout:?}); {answered} normal requests answered meanwhile",
        held[held.len() / 2],
        held[held.len() * 99 / 100]
    );
    assert_eq!(held.len(), SLOW);
    assert!(
        longest < header_timeout + Duration::from_secs(2),
        "a slow connection stayed open {longest:?}"
    );
    assert!(answered >= 20, "only {answered} normal requests answered");
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_flood_from_one_address_is_capped_and_others_are_served() {
    let edge = Edge::start(|config| {
        config.connections.max_connections_per_client = 20;
        config.connections.max_connections = 1000;
    })
    .await;
    let mut flood = Vec::new();
    for _ in 0..100 {
        flood.push(
            connect_from([127, 0, 0, 1], edge.addr)
                .await
                .expect("connect"),
        );
    }
    // The refused are told why and closed; the admitted stay open, waiting for a request.
    let mut refused = 0;
    for stream in &mut flood {
        let (answer, closed) = read_until_closed(stream, Duration::from_millis(300)).await;
        if closed {
            assert!(answer.starts_with("HTTP/1.1 429"), "{answer:?}");
            assert_eq!(raw_error_code(&answer), "too_many_from_client");
            refused += 1;
        }
    }
    assert_eq!(refused, 80, "20 of 100 connections admitted");

    // The flooding address gets no more; another address is served.
    let more = client_from([127, 0, 0, 1])
        .get(edge.url("/v1/health"))
        .send()
        .await;
    assert!(
        more.is_err() || more.is_ok_and(|r| r.status() == StatusCode::TOO_MANY_REQUESTS),
        "the flooding address is held to its share"
    );
    let other = client_from([127, 0, 0, 2])
        .get(edge.url("/v1/health"))
        .send()
        .await
        .expect("another address is served");
    assert_eq!(other.status(), StatusCode::OK);

    // Once the flood closes, its address is served again.
    drop(flood);
    let again = swarm_tests::wait_for_async(Duration::from_secs(5), async || {
        let response = client_from([127, 0, 0, 1])
            .get(edge.url("/v1/health"))
            .send()
            .await
            .ok()?;
        (response.status() == StatusCode::OK).then_some(())
    })
    .await;
    assert!(
        again.is_some(),
        "the address is served once its connections closed"
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_and_slow_requests_are_cut_off() {
    let edge = Edge::start(|config| {
        config.connections.idle_timeout = Duration::from_secs(1);
        config.limits.request_timeout = Duration::from_secs(1);
    })
    .await;

    // A keep-alive connection is answered, then closed after a second of quiet.
    let mut stream = connect_from([127, 0, 0, 1], edge.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).await.expect("an answer");
    assert_eq!(&first, b"HTTP/1.1 200");
    let quiet = Instant::now();
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(closed, "an idle keep-alive connection is closed");
    let after = quiet.elapsed();
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(3),
        "closed after {after:?} of quiet (idle timeout 1 s)"
    );

    // A body that never finishes arriving gets an error when the request's time is up.
    let mut stream = connect_from([127, 0, 0, 1], edge.addr)
        .await
        .expect("connect");
    stream
        .write_all(
            b"POST /v1/signals HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"kind\":",
        )
        .await
        .expect("write");
    let started = Instant::now();
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert_eq!(raw_error_code(&answer), "timed_out");
    assert!(started.elapsed() < Duration::from_secs(3));
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_bodies_and_foreign_hosts_get_json_errors() {
    let edge = Edge::start(|_| {}).await;
    let client = reqwest::Client::new();

    // 10 MiB against the 1 MiB default: a 413 the client reads, not a reset.
    let body = vec![b' '; 10 * 1024 * 1024];
    let response = client
        .post(edge.url("/v1/signals"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the 413 is read, not a reset connection");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(response).await, "body_too_large");

    // A body of unknown length (chunked): a small one is served, a large one gets the 413
    // once it has been sent, not a reset.
    for (size, status, error) in [
        (200usize, "202", None),
        (20 * 1024 * 1024, "413", Some("body_too_large")),
    ] {
        let mut stream = connect_from([127, 0, 0, 1], edge.addr)
            .await
            .expect("connect");
        let head = "POST /v1/signals HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
        stream.write_all(head.as_bytes()).await.expect("write");
        let mut body = json!({ "kind": "edge.ping", "payload": {} }).to_string();
        body.push_str(&" ".repeat(size.saturating_sub(body.len())));
        for chunk in body.as_bytes().chunks(64 * 1024) {
            let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
            framed.extend_from_slice(chunk);
            framed.extend_from_slice(b"\r\n");
            stream
                .write_all(&framed)
                .await
                .expect("the whole body is taken");
        }
        stream.write_all(b"0\r\n\r\n").await.expect("write");
        let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
        assert_raw_answer(&answer, status, error, &format!("{size} bytes chunked"));
    }

    // Loopback mode (no tokens): a DNS-rebinding page's Host is refused, loopback names pass.
    let refused = Some("host_not_allowed");
    for (host, status, error) in [
        ("evil.example", "403", refused),
        ("evil.example:7077", "403", refused),
        ("localhost", "200", None),
        ("127.0.0.1:7077", "200", None),
        ("[::1]:7077", "200", None),
    ] {
        let mut stream = connect_from([127, 0, 0, 1], edge.addr)
            .await
            .expect("connect");
        let request =
            format!("GET /v1/health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
        assert_raw_answer(&answer, status, error, &format!("Host {host}"));
    }

    // The server is unharmed.
    let health = client
        .get(edge.url("/v1/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), StatusCode::OK);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_is_served_with_the_configured_certificate() {
    let dir = tempfile::tempdir().expect("dir");
    let (made, cert, key) = self_signed(dir.path());

    let edge = Edge::start(|config| {
        config.tls = Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        });
    })
    .await;
    assert!(
        edge.inspector
            .as_ref()
            .is_some_and(|i| i.url().starts_with("https://"))
    );

    let connector = tls_client(&made.cert);
    let tcp = TcpStream::connect(edge.addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    tls.write_all(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let health: Value = serde_json::from_str(body).expect("health JSON over TLS");
    assert!(health.get("status").is_some(), "{health}");

    // Plain HTTP on the TLS port gets nothing served.
    let plain = reqwest::Client::new()
        .get(edge.url("/v1/health"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP is not served on the TLS port");
    edge.stop().await;

    // A key that is not a key stops the start with the file named.
    std::fs::write(&key, "not a key").expect("write");
    let error = Edge::try_start(|config| {
        config.tls = Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        });
    })
    .await
    .err()
    .expect("a bad key is refused");
    assert!(error.to_string().contains("key.pem"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replaced_tokens_file_takes_effect_without_a_restart() {
    const OLD: &str = "old-reader-token-0123456789";
    const NEW: &str = "new-reader-token-0123456789";
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("tokens.json");
    let write = |token: &str| {
        let tmp = dir.path().join("tokens.json.tmp");
        let text = json!([{ "name": "reader", "token": token, "scopes": ["read"] }]);
        std::fs::write(&tmp, text.to_string()).expect("write");
        std::fs::rename(&tmp, &file).expect("rename");
    };
    write(OLD);
    let edge = Edge::start(|config| {
        config.tokens = swarm_inspector::read_tokens(&file).expect("tokens");
        config.tokens_file = Some(file.clone());
    })
    .await;
    let client = reqwest::Client::new();
    let status = async |token: &str| {
        client
            .get(edge.url("/v1/units"))
            .bearer_auth(token)
            .send()
            .await
            .expect("answered")
            .status()
    };
    assert_eq!(status(OLD).await, StatusCode::OK);
    assert_eq!(status(NEW).await, StatusCode::UNAUTHORIZED);

    write(NEW);
    let swapped = swarm_tests::wait_for_async(Duration::from_secs(10), async || {
        (status(NEW).await == StatusCode::OK).then_some(())
    })
    .await;
    assert!(swapped.is_some(), "the new token works without a restart");
    assert_eq!(status(OLD).await, StatusCode::UNAUTHORIZED);

    // A broken file, or one that would open every endpoint, leaves the tokens as they are.
    for text in ["not json", "[]"] {
        std::fs::write(&file, text).expect("write");
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(status(NEW).await, StatusCode::OK, "after {text:?}");
        assert_eq!(
            status(OLD).await,
            StatusCode::UNAUTHORIZED,
            "after {text:?}"
        );
        let anonymous = client
            .get(edge.url("/v1/units"))
            .send()
            .await
            .expect("answered");
        assert_eq!(
            anonymous.status(),
            StatusCode::UNAUTHORIZED,
            "after {text:?}"
        );
    }
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reply_waiters_and_live_watchers_are_bounded() {
    let mut edge = Edge::start(|config| {
        config.limits = Limits {
            max_waiters: 2,
            max_waiters_per_client: 1,
            max_watchers: 2,
            max_watchers_per_client: 1,
            ..Limits::default()
        };
    })
    .await;
    // Nothing reads the mesh: a post that waits for its reply holds its place for its wait (a
    // conversation that settled would be answered at once).
    edge.stop_reactor().await;
    let post = |from: [u8; 4]| {
        let url = edge.url("/v1/signals?wait=3");
        async move {
            client_from(from)
                .post(url)
                .json(&json!({ "kind": "edge.ping", "payload": {} }))
                .send()
                .await
                .expect("answered")
        }
    };
    let first = tokio::spawn(post([127, 0, 0, 1]));
    let second = tokio::spawn(post([127, 0, 0, 2]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let same_client = post([127, 0, 0, 1]).await;
    assert_eq!(same_client.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_code(same_client).await, "too_many_from_client");
    let third_client = post([127, 0, 0, 3]).await;
    assert_eq!(third_client.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(third_client).await, "server_full");
    for held in [first, second] {
        let answer = held.await.expect("task");
        assert_eq!(
            answer.status(),
            StatusCode::GATEWAY_TIMEOUT,
            "no reply came"
        );
    }
    // Their places are given back.
    let free = post([127, 0, 0, 3]).await;
    assert_eq!(free.status(), StatusCode::GATEWAY_TIMEOUT);

    // One live websocket per client: a second from the same address gets 429.
    let live = format!("ws://{}/v1/live", edge.addr);
    let (watcher, _) = tokio_tungstenite::connect_async(&live)
        .await
        .expect("the first watcher");
    match tokio_tungstenite::connect_async(&live).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        }
        other => panic!("a second watcher from one address: {other:?}"),
    }
    drop(watcher);
    let again = swarm_tests::wait_for_async(Duration::from_secs(5), async || {
        tokio_tungstenite::connect_async(&live).await.ok()
    })
    .await;
    assert!(again.is_some(), "a closed watcher gives its place back");
    edge.stop().await;
}

/// A certificate for `localhost` made here, and its PEM files in `dir`.
fn self_signed(
    dir: &std::path::Path,
) -> (
    rcgen::CertifiedKey<rcgen::KeyPair>,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).expect("write cert");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("write key");
    (made, cert, key)
}

/// A TLS client that trusts `cert` only.
fn tls_client(cert: &rcgen::Certificate) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).expect("root");
    #[allow(deprecated)] // ring, as the server uses
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swarm_up_serves_https_and_times_headers_out_as_its_flags_say() {
    let dir = tempfile::tempdir().expect("dir");
    let (made, cert, key) = self_signed(dir.path());
    let units = dir.path().join("units");
    std::fs::create_dir(&units).expect("units dir");
    let addr: SocketAddr = ([127, 0, 0, 1], swarm_tests::free_port()).into();
    let child = std::process::Command::new(swarm_tests::swarm_binary())
        .args(["up", "--no-watch", "--http", &addr.to_string()])
        .arg("--units")
        .arg(&units)
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .args(["--header-timeout", "1"])
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("swarm up starts");

    let connector = tls_client(&made.cert);
    let health = swarm_tests::wait_for_async(Duration::from_secs(60), async || {
        let tcp = TcpStream::connect(addr).await.ok()?;
        let name = rustls::pki_types::ServerName::try_from("localhost").ok()?;
        let mut tls = connector.connect(name, tcp).await.ok()?;
        tls.write_all(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        Some(String::from_utf8_lossy(&answer).into_owned())
    })
    .await
    .expect("swarm up serves HTTPS");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    // --header-timeout 1: a header that never ends is cut off after about a second.
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("handshake");
    tls.write_all(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed, not answered: {read:?}"
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "closed after {took:?}");

    let stderr = swarm_tests::stop_cleanly(child);
    assert!(
        stderr.contains(&format!("inspector on https://{addr}/")),
        "{stderr}"
    );
}
