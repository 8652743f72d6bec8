//! A pipeline (`Client::pipeline`, what a Redis connection runs its pipelined commands
//! through) is applied in the order given even when the server the view names primary has not
//! learned it yet: it refuses the first request and takes the next, having learned in between.
//! A stand-in answers both as the monitors (a view naming itself primary) and as that server.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::watch;
use viewkv::client::{Client, ClientOptions};
use viewkv::kv::api::{KvError, Op, Reply, Request, Sent, REQUEST};
use viewkv::monitor::api::{ViewReply, VIEW};
use viewkv::net::{
    bad_request, bincode_reply, decode, encode, serve, Answering, CallOutcome, Handler,
    HttpRequest, HttpResponse, ServeLimits,
};
use viewkv::view::{Member, View};

/// What the stand-in has done.
#[derive(Default)]
struct Log {
    /// How many of the next new requests to refuse as not the primary.
    refuse: usize,
    /// The requests applied, to answer a retry of one without applying it again.
    applied: HashSet<(u64, u64)>,
    /// The keys of the writes applied, in order.
    order: Vec<Vec<u8>>,
}

/// The monitors and the primary in one.
struct Stub {
    /// Its own address, which the view names.
    addr: String,
    /// What it did.
    log: Mutex<Log>,
    /// Requests taken in so far: when `hold` is set, each answer waits until that many came.
    taken: watch::Sender<usize>,
    /// Answer nothing until this many requests were taken in (0: answer at once).
    hold: Mutex<usize>,
}

impl Stub {
    fn view(&self) -> ViewReply {
        ViewReply {
            view: View {
                num: 2,
                primary: Some(Member {
                    id: "primary".into(),
                    addr: self.addr.clone(),
                    incarnation: 1,
                }),
                backup: None,
                acked: true,
                backup_ready: false,
                recovered: false,
            },
            leader: None,
            serving: true,
            stalled: None,
            cluster: 7,
        }
    }

    /// Take `request` in: refuse it, or apply it once.
    fn take(&self, request: &Request) -> Reply {
        let mut log = self.log.lock().expect("the log");
        let id = (request.client, request.seq);
        if log.applied.contains(&id) {
            return Reply::Ok(None);
        }
        if log.refuse > 0 {
            log.refuse -= 1;
            return Reply::Err(KvError::WrongServer { view: 1 });
        }
        log.applied.insert(id);
        if let Op::Put { key, .. } = &request.op {
            log.order.push(key.clone());
        }
        self.taken.send_modify(|taken| *taken += 1);
        Reply::Ok(None)
    }
}

impl Handler for Stub {
    /// The monitors are asked over HTTP.
    async fn handle(&self, request: HttpRequest) -> HttpResponse {
        match request.uri().path() {
            VIEW => bincode_reply(&self.view()),
            path => bad_request(format!("no {path} here")),
        }
    }

    fn call(self: Arc<Self>, path: &str, body: Bytes) -> Answering {
        let answer = match path {
            VIEW => return Box::pin(std::future::ready(CallOutcome::ok(encode(&self.view())))),
            REQUEST => match decode::<Sent>(&body) {
                Ok(sent) => encode(&self.take(&sent.request)),
                Err(err) => return Box::pin(CallOutcome::of(bad_request(err))),
            },
            _ => return Box::pin(CallOutcome::of(bad_request("no such call"))),
        };
        let hold = *self.hold.lock().expect("the hold");
        let mut taken = self.taken.subscribe();
        Box::pin(async move {
            // A request held waits for the others of its pipeline; one sent alone never sees
            // them and fails at its client's deadline.
            let _ = taken.wait_for(|taken| *taken >= hold).await;
            CallOutcome::ok(answer)
        })
    }
}

async fn stub() -> Arc<Stub> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("its address").to_string();
    let stub = Arc::new(Stub {
        addr,
        log: Mutex::new(Log::default()),
        taken: watch::channel(0).0,
        hold: Mutex::new(0),
    });
    tokio::spawn(serve(
        listener,
        stub.clone(),
        std::future::pending(),
        ServeLimits::default(),
        None,
        None,
    ));
    stub
}

fn puts(keys: std::ops::Range<u8>) -> Vec<Op> {
    keys.map(|k| Op::Put {
        key: vec![k],
        value: b"v".to_vec(),
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_is_applied_in_order_when_the_primary_learns_its_role_mid_way() {
    let stub = stub().await;
    let options = ClientOptions {
        deadline: Duration::from_secs(5),
        retry_interval: Duration::from_millis(10),
        rpc_timeout: Duration::from_secs(2),
    };
    // The client has read the view (a Redis connection's client has, after its first command).
    let mut client = Client::with_options(vec![stub.addr.clone()], options)
        .checked()
        .await
        .expect("the view");
    let mut sessions = Vec::new();

    // The server has not learned it is primary: it refuses the first request it sees.
    stub.log.lock().expect("the log").refuse = 1;
    let outcomes = client.pipeline(&mut sessions, puts(0..6)).await;
    for (i, outcome) in outcomes.iter().enumerate() {
        assert!(outcome.is_ok(), "put {i}: {outcome:?}");
    }
    let order = stub.log.lock().expect("the log").order.clone();
    assert_eq!(order, (0..6u8).map(|k| vec![k]).collect::<Vec<_>>());

    // Now that it took requests in, the next pipeline is sent whole before any answer: the
    // server answers none until all six are there.
    *stub.hold.lock().expect("the hold") = 12;
    let outcomes = client.pipeline(&mut sessions, puts(6..12)).await;
    for (i, outcome) in outcomes.iter().enumerate() {
        assert!(outcome.is_ok(), "put {}: {outcome:?}", i + 6);
    }
    let order = stub.log.lock().expect("the log").order.clone();
    assert_eq!(order, (0..12u8).map(|k| vec![k]).collect::<Vec<_>>());
}
