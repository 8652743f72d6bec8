//! The framed connections the kv service's RPCs travel on: many calls in flight on one
//! connection, taken in by the server in the order they were started and answered in any order;
//! the secret checked once per connection; a server that hangs costs one timeout, after which
//! the next call opens a new connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use viewkv::net::{
    bad_request, serve, Answering, CallOutcome, Handler, HttpRequest, HttpResponse, RpcClient,
    RpcError, Secret, ServeLimits,
};

const DEADLINE: Duration = Duration::from_secs(20);

/// Takes calls in, noting their order, and answers each after as many ms as its body says.
#[derive(Default)]
struct Delayed {
    /// The bodies in the order calls were taken in.
    taken: Mutex<Vec<u8>>,
}

impl Handler for Delayed {
    async fn handle(&self, _request: HttpRequest) -> HttpResponse {
        bad_request("only framed calls here")
    }

    fn call(self: Arc<Self>, _path: &str, body: Bytes) -> Answering {
        let byte = body.first().copied().unwrap_or(0);
        self.taken
            .lock()
            .expect("the order of calls taken in")
            .push(byte);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(u64::from(byte))).await;
            CallOutcome::ok(vec![byte; 3])
        })
    }
}

/// Serve `handler` on a fresh port, with `secret` if given.
async fn listen<H: Handler>(handler: Arc<H>, secret: Option<Secret>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("its address").to_string();
    tokio::spawn(serve(
        listener,
        handler,
        std::future::pending(),
        ServeLimits::default(),
        secret,
        None,
    ));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_taken_in_the_order_started_and_answered_as_they_finish() {
    let handler = Arc::new(Delayed::default());
    let addr = listen(handler.clone(), None).await;
    let rpc = RpcClient::new("framed-test", None);
    // Started 0..40 in order; the first ones take longest, so answers come back reversed.
    let calls: Vec<_> = (0..40u8)
        .map(|i| rpc.start(&addr, "/kv/test", vec![80 - 2 * i], DEADLINE))
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let body = call.await.expect("an answer");
        assert_eq!(
            &body[..],
            &[80 - 2 * i as u8; 3],
            "call {i} got another's answer"
        );
    }
    let taken = handler.taken.lock().expect("the order").clone();
    assert_eq!(taken, (0..40u8).map(|i| 80 - 2 * i).collect::<Vec<_>>());
    // The clones of a client share its connection: still in order.
    let clone = rpc.clone();
    let a = rpc.start(&addr, "/kv/test", vec![1], DEADLINE);
    let b = clone.start(&addr, "/kv/test", vec![2], DEADLINE);
    assert!(a.await.is_ok() && b.await.is_ok());
    let taken = handler.taken.lock().expect("the order").clone();
    assert_eq!(&taken[40..], &[1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_the_secret_is_refused_before_any_call_is_taken() {
    let handler = Arc::new(Delayed::default());
    let secret = Secret::generate();
    let addr = listen(handler.clone(), Some(secret.clone())).await;
    let without = RpcClient::new("no-secret", None);
    let wrong = RpcClient::new("wrong", None).with_secret(Some(Secret::generate()));
    for rpc in [&without, &wrong] {
        let reply = rpc.start(&addr, "/kv/test", vec![1], DEADLINE).await;
        assert!(
            reply.as_ref().is_err_and(RpcError::is_unauthorized),
            "{reply:?}"
        );
    }
    assert!(handler.taken.lock().expect("calls").is_empty());
    let with = RpcClient::new("owner", None).with_secret(Some(secret));
    let reply = with.start(&addr, "/kv/test", vec![1], DEADLINE).await;
    assert_eq!(reply.expect("admitted"), Bytes::from_static(&[1, 1, 1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_hangs_costs_a_timeout_then_a_new_connection_is_opened() {
    // Accepts connections and reads nothing: a stopped process looks like this.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("its address").to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    let rpc = RpcClient::new("patient", None);
    let timeout = Duration::from_millis(300);
    for attempt in 1..=2 {
        let reply = rpc.start(&addr, "/kv/test", vec![1], timeout).await;
        assert!(
            matches!(
                reply,
                Err(RpcError::Timeout { .. } | RpcError::Unreachable { .. })
            ),
            "attempt {attempt}: {reply:?}"
        );
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "each timed-out call left its hung connection behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framed_calls_are_counted_in_metrics_by_path() {
    let handler = Arc::new(Delayed::default());
    let addr = listen(handler, None).await;
    let rpc = RpcClient::new("counted", None);
    // One connection, its paths alternating: each answer is counted under its own path.
    for path in [
        "/kv/counted",
        "/kv/counted",
        "/kv/other",
        "/kv/counted",
        "/kv/other",
    ] {
        rpc.start(&addr, path, vec![0], DEADLINE)
            .await
            .expect("an answer");
    }
    let text = rpc
        .call_raw(&addr, "/metrics", Vec::new(), DEADLINE)
        .await
        .expect("metrics");
    let text = String::from_utf8_lossy(&text);
    for (path, count) in [("/kv/counted", 3), ("/kv/other", 2)] {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("path=\"{path}\"")) && l.contains("_total"))
            .unwrap_or_else(|| panic!("no count for {path} in {text}"));
        assert!(line.ends_with(&format!(" {count}")), "{line}");
    }
}

/// Takes a call in by working (the CPU busy, as installing a chunk of a state transfer is) for
/// as many ms as its first byte says, then answers at once.
struct Busy;

impl Handler for Busy {
    async fn handle(&self, _request: HttpRequest) -> HttpResponse {
        bad_request("only framed calls here")
    }

    fn call(self: Arc<Self>, _path: &str, body: Bytes) -> Answering {
        let ms = body.first().copied().unwrap_or(0);
        let until = std::time::Instant::now() + Duration::from_millis(u64::from(ms));
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
        Box::pin(std::future::ready(CallOutcome::ok(vec![ms])))
    }
}

/// A connection streaming big calls, each a few ms of work, faster than they are taken in (a
/// backup installing a large state transfer) does not starve the rest of its node: a timer on
/// the same one-thread runtime (a kv server's ping loop) keeps ticking. Before the connection
/// yielded after big calls, its task ran on while data kept arriving and this timer waited
/// more than a second (125-184 ms after); a backup missed its pings that way, and the monitors
/// dropped it in the middle of a transfer of a million keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_big_busy_calls_leaves_the_node_time_for_its_timers() {
    const CALLS: usize = 100;
    const WORK_MS: u8 = 15;
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let (gap_tx, gap_rx) = tokio::sync::oneshot::channel();
    let node = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("the node's runtime");
        runtime.block_on(async move {
            let addr = listen(Arc::new(Busy), None).await;
            let ticker = tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                let mut last = tokio::time::Instant::now();
                let mut longest = Duration::ZERO;
                let started = last;
                while started.elapsed() < Duration::from_millis(u64::from(WORK_MS)) * CALLS as u32 {
                    tick.tick().await;
                    longest = longest.max(last.elapsed());
                    last = tokio::time::Instant::now();
                }
                longest
            });
            addr_tx.send(addr).expect("the test waits for the address");
            let _ = gap_tx.send(ticker.await.expect("the ticker ends"));
        });
    });
    let addr = addr_rx.await.expect("the node's address");
    let rpc = RpcClient::new("busy", None);
    let mut body = vec![0u8; 1 << 20];
    body[0] = WORK_MS;
    let calls: Vec<_> = (0..CALLS)
        .map(|_| rpc.start(&addr, "/kv/busy", body.clone(), DEADLINE))
        .collect();
    for call in calls {
        assert_eq!(&call.await.expect("an answer")[..], &[WORK_MS]);
    }
    let longest = gap_rx.await.expect("the ticker's longest gap");
    node.join().expect("the node's thread");
    println!("longest gap between ticks: {longest:?}");
    assert!(
        longest < Duration::from_millis(500),
        "a 10 ms timer waited {longest:?} while big calls streamed in"
    );
}
