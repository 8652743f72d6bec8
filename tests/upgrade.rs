//! A rolling upgrade of the monitors: this build opens a data directory written by the first
//! release (unversioned log entries and snapshot, `tests/fixtures/monitor-v0`, made by
//! `viewkv monitor --snapshot-every 3` with two kv servers until view 2 was settled), serves
//! the view it holds, appends decisions in the current format after the old ones, and reads
//! the mixed log back after a restart.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use viewkv::monitor::api::PingReply;
use viewkv::monitor::{self, MonitorClient, MonitorConfig, RaftTimings};
use viewkv::net::RpcClient;
use viewkv::testkit::wait_for;
use viewkv::view::{Ping, Timings, View};

const DEADLINE: Duration = Duration::from_secs(30);

/// Copy the fixture's files into `to`.
fn copy_fixture(to: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/monitor-v0/monitor-1");
    std::fs::create_dir_all(to).expect("a data directory");
    for entry in std::fs::read_dir(&from).expect("the fixture") {
        let entry = entry.expect("a fixture file");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("a copy");
    }
}

/// The fixture's single monitor, on a free port; (address, stop, task).
async fn start(dir: &Path) -> (String, oneshot::Sender<()>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("an address").to_string();
    let config = MonitorConfig {
        id: 1,
        peers: BTreeMap::from([(1, addr.clone())]),
        data_dir: dir.to_path_buf(),
        // Pings every 10 s: no server of the fixture pings, and none may be declared dead
        // while the test reads the view it left.
        timings: Timings {
            ping_interval: Duration::from_secs(10),
            dead_pings: 5,
        },
        raft: RaftTimings::default(),
        secret: None,
        tls: None,
        join: false,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let rpc = RpcClient::new(&addr, None);
    let task = tokio::spawn(async move {
        let ran = monitor::run(config, listener, rpc, async {
            let _ = stopped.await;
        })
        .await;
        if let Err(err) = ran {
            panic!("the monitor failed on the old data directory: {err}");
        }
    });
    (addr, stop, task)
}

async fn serving_view(client: &MonitorClient) -> View {
    wait_for("the monitor to serve", DEADLINE, || async {
        client
            .view()
            .await
            .ok()
            .filter(|r| r.serving)
            .map(|r| r.view)
    })
    .await
}

fn id(member: &Option<viewkv::view::Member>) -> Option<&str> {
    member.as_ref().map(|m| m.id.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_the_first_release_opens_and_keeps_its_view() {
    viewkv::testkit::init_tracing();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("monitor-1");
    copy_fixture(&data);

    let (addr, stop, task) = start(&data).await;
    let client = MonitorClient::new(RpcClient::new("t", None), vec![addr], DEADLINE);
    let view = serving_view(&client).await;
    assert_eq!(view.num, 2, "{view:?}");
    assert_eq!(id(&view.primary), Some("127.0.0.1:7611"), "{view:?}");
    assert_eq!(id(&view.backup), Some("127.0.0.1:7612"), "{view:?}");
    assert!(view.acked && view.backup_ready, "{view:?}");

    // The primary reports its backup failed: the monitor decides view 3 without it, written
    // in the current format after the first release's entries.
    let primary = view.primary.clone().expect("a primary");
    let ping = Ping {
        id: primary.id.clone(),
        addr: primary.addr.clone(),
        incarnation: primary.incarnation,
        viewnum: 2,
        backup_synced: true,
        backup_failed: true,
        cluster: 0,
        holds_state: false,
    };
    let next = wait_for("view 3", DEADLINE, || async {
        client
            .ping(&ping)
            .await
            .ok()
            .and_then(PingReply::into_view)
            .filter(|v| v.num == 3)
    })
    .await;
    assert_eq!(id(&next.primary), Some("127.0.0.1:7611"), "{next:?}");
    assert_eq!(next.backup, None, "{next:?}");
    let _ = stop.send(());
    task.await.expect("the monitor stops");

    let (addr, stop, task) = start(&data).await;
    let client = MonitorClient::new(RpcClient::new("t", None), vec![addr], DEADLINE);
    let reopened = serving_view(&client).await;
    assert_eq!(reopened.num, 3, "the mixed log read back: {reopened:?}");
    assert_eq!(id(&reopened.primary), Some("127.0.0.1:7611"));
    let _ = stop.send(());
    task.await.expect("the monitor stops");
}
