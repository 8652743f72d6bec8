//! Every listener refuses a request without the cluster secret (when there is one) and bounds
//! what a peer can make it hold before anything is authenticated: a
//! request whose headers or body trickle in, more connections than it serves, more body bytes
//! at once than its budget. Driven over raw TCP so the misbehaving peer is exactly as written.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};
use viewkv::net::{
    json_reply, serve, Handler, HttpRequest, HttpResponse, RpcClient, RpcError, Secret,
    ServeLimits, TlsAcceptor,
};
use viewkv::testkit::{wait_for, TestCa};

const DEADLINE: Duration = Duration::from_secs(20);

/// Answers `{"len": N}`; a request to `/hold` first waits until the test releases it.
#[derive(Default)]
struct Echo {
    /// Requests to `/hold` being held.
    holding: AtomicUsize,
    /// Releases the held requests.
    release: Notify,
}

impl Handler for Echo {
    async fn handle(&self, request: HttpRequest) -> HttpResponse {
        if request.uri().path() == "/hold" {
            let released = self.release.notified();
            self.holding.fetch_add(1, Ordering::SeqCst);
            released.await;
        }
        json_reply(&serde_json::json!({ "len": request.body().len() }))
    }
}

/// A listener serving `Echo` within `limits` until the returned sender is dropped.
async fn start(limits: ServeLimits) -> (String, Arc<Echo>, oneshot::Sender<()>) {
    start_with(limits, None, None).await
}

/// The same, requiring `secret`, over TLS if given `tls`.
async fn start_with(
    limits: ServeLimits,
    secret: Option<Secret>,
    tls: Option<TlsAcceptor>,
) -> (String, Arc<Echo>, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("an address").to_string();
    let echo = Arc::new(Echo::default());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(
        listener,
        echo.clone(),
        async {
            let _ = stopped.await;
        },
        limits,
        secret,
        tls,
    ));
    (addr, echo, stop)
}

fn limits() -> ServeLimits {
    ServeLimits {
        header_timeout: Duration::from_secs(60),
        body_timeout: Duration::from_secs(60),
        max_connections: 64,
        max_body_bytes: 1 << 20,
    }
}

fn post(path: &str, body: usize) -> Vec<u8> {
    let mut request =
        format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {body}\r\n\r\n").into_bytes();
    request.resize(request.len() + body, b'x');
    request
}

/// The status code of the next response on `stream`, or `None` if it closes first.
async fn status(stream: &mut TcpStream) -> Option<u16> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(DEADLINE, stream.read(&mut buf))
            .await
            .expect("the server neither answered nor closed the connection");
        match read {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&got);
        if let Some(line) = text
            .split("\r\n")
            .next()
            .filter(|_| text.contains("\r\n\r\n"))
        {
            return line.split(' ').nth(1).and_then(|code| code.parse().ok());
        }
    }
}

/// Send `request` on a new connection; the response's status code, `None` if it closed.
async fn send(addr: &str, request: &[u8]) -> (TcpStream, Option<u16>) {
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    if stream.write_all(request).await.is_err() {
        return (stream, None);
    }
    let code = status(&mut stream).await;
    (stream, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_the_cap_is_closed_and_a_freed_slot_serves_again() {
    let (addr, _, _stop) = start(ServeLimits {
        max_connections: 2,
        ..limits()
    })
    .await;
    let (first, code) = send(&addr, &post("/", 3)).await;
    assert_eq!(code, Some(200));
    let (_second, code) = send(&addr, &post("/", 3)).await;
    assert_eq!(code, Some(200));
    let (_, code) = send(&addr, &post("/", 3)).await;
    assert_eq!(
        code, None,
        "a third connection was served with a cap of two"
    );
    drop(first);
    wait_for("a freed connection slot", DEADLINE, || async {
        let (_, code) = send(&addr, &post("/", 3)).await;
        (code == Some(200)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_that_trickle_in_get_the_connection_closed() {
    let (addr, _, _stop) = start(ServeLimits {
        header_timeout: Duration::from_millis(300),
        ..limits()
    })
    .await;
    let (_, code) = send(&addr, b"POST / HTTP/1.1\r\nhost: x\r\n").await;
    assert_eq!(code, None, "headers never finished, yet an answer came");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_that_never_ends_is_closed_and_frees_its_slot() {
    let ca = TestCa::new("limits");
    let tls = ca.tls("node");
    let acceptor = tls.acceptor().expect("a listener's TLS");
    let (addr, _, _stop) = start_with(
        ServeLimits {
            header_timeout: Duration::from_millis(300),
            max_connections: 1,
            ..limits()
        },
        None,
        Some(acceptor),
    )
    .await;
    // The start of a TLS record, then nothing: the handshake never ends.
    let (_, code) = send(&addr, &[0x16, 0x03, 0x01]).await;
    assert_eq!(code, None, "a handshake that never ended got an answer");
    let client = RpcClient::new("tls-client", None).with_tls(Some(&tls));
    let reply = wait_for(
        "the only slot to serve a real TLS client",
        DEADLINE,
        || async {
            client
                .call_raw(&addr, "/", b"abc".to_vec(), DEADLINE)
                .await
                .ok()
        },
    )
    .await;
    let reply: serde_json::Value = serde_json::from_slice(&reply).expect("JSON");
    assert_eq!(reply["len"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_in_gets_408() {
    let (addr, _, _stop) = start(ServeLimits {
        body_timeout: Duration::from_millis(300),
        ..limits()
    })
    .await;
    let mut request = post("/", 100);
    request.truncate(request.len() - 90);
    let (_, code) = send(&addr, &request).await;
    assert_eq!(code, Some(408));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_budget_get_503_until_the_held_ones_are_done() {
    let (addr, echo, _stop) = start(ServeLimits {
        max_body_bytes: 1000,
        ..limits()
    })
    .await;
    let mut held = TcpStream::connect(&addr).await.expect("connects");
    held.write_all(&post("/hold", 800)).await.expect("sends");
    wait_for("the first request to be held", DEADLINE, || async {
        (echo.holding.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    let (_, code) = send(&addr, &post("/", 800)).await;
    assert_eq!(
        code,
        Some(503),
        "1600 body bytes held with a budget of 1000"
    );
    let (_, code) = send(&addr, &post("/", 100)).await;
    assert_eq!(code, Some(200), "a body within what is left of the budget");
    echo.release.notify_waiters();
    assert_eq!(status(&mut held).await, Some(200));
    wait_for("the budget to be returned", DEADLINE, || async {
        let (_, code) = send(&addr, &post("/", 800)).await;
        (code == Some(200)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_requests_that_prove_the_secret_are_served_and_status_stays_open() {
    let secret = Secret::new("a-test-secret-of-some-length").expect("a secret");
    let (addr, echo, _stop) = start_with(limits(), Some(secret.clone()), None).await;
    let (_, code) = send(&addr, &post("/hold", 10)).await;
    assert_eq!(code, Some(401), "no Authorization header");
    let wrong = b"POST /hold HTTP/1.1\r\nhost: x\r\nauthorization: Bearer a-test-secret-of-some-lengtH\r\ncontent-length: 0\r\n\r\n";
    let (_, code) = send(&addr, wrong).await;
    assert_eq!(code, Some(401), "a wrong secret");
    assert_eq!(
        echo.holding.load(Ordering::SeqCst),
        0,
        "a refused request reached the handler"
    );
    let status = b"GET /status HTTP/1.1\r\nhost: x\r\n\r\n";
    let (_, code) = send(&addr, status).await;
    assert_eq!(code, Some(200), "/status needs no secret");
    let without = RpcClient::new("without", None);
    let refused = without.call_raw(&addr, "/", vec![1, 2, 3], DEADLINE).await;
    assert!(
        matches!(&refused, Err(RpcError::Status { status: 401, message, .. }) if message.contains("secret")),
        "{refused:?}"
    );
    let with = RpcClient::new("with", None).with_secret(Some(secret));
    let reply = with.call_raw(&addr, "/", vec![1, 2, 3], DEADLINE).await;
    assert_eq!(reply.ok(), Some(b"{\"len\":3}\n".to_vec()));
}

/// Acceptance of the operations issue: a slowloris of 1,000 connections on the primary and on
/// every monitor — each sending the start of a request and never finishing its headers — and
/// a real client is still served within its deadline, failover included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_of_a_thousand_connections_does_not_starve_a_real_client() {
    use viewkv::client::ClientOptions;
    use viewkv::testkit::{self, Cluster, ClusterOptions};

    testkit::init_tracing();
    let mut cluster = Cluster::start(ClusterOptions::fast(testkit::seed())).await;
    let first = cluster.start_server().await;
    cluster.start_server().await;
    cluster.start_server().await;
    let view = cluster.wait_ready(DEADLINE).await;
    let primary = view.primary.map(|m| m.addr).unwrap_or(first);
    let mut targets = vec![primary.clone()];
    targets.extend(cluster.monitor_addrs());
    let mut held = Vec::new();
    for addr in &targets {
        for _ in 0..1000 {
            let mut stream = TcpStream::connect(addr).await.expect("connects");
            stream
                .write_all(b"POST /kv/request HTTP/1.1\r\nhost: x\r\n")
                .await
                .expect("the start of a request");
            held.push(stream);
        }
    }
    let mut client = cluster.client_with(ClientOptions {
        deadline: DEADLINE,
        ..cluster.client_options()
    });
    client
        .put(b"k", b"v")
        .await
        .expect("a put under a slowloris");
    assert_eq!(client.get(b"k").await, Ok(Some(b"v".to_vec())));
    // The primary the slowloris holds on to dies: the backup takes over and serves too.
    cluster.crash_server(&primary).await;
    client.put(b"k", b"w").await.expect("a put after failover");
    assert_eq!(client.get(b"k").await, Ok(Some(b"w".to_vec())));
    drop(held);
    cluster.shutdown().await;
}
