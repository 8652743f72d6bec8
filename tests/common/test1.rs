//! MIT 6.824's viewservice `Test1`, step by step, against any view service: the pure rules with
//! a fake clock, or a real monitor group over HTTP with real time.

use viewkv::view::{Ping, View};

/// How many missed pings make a server dead (the scenario's loop bounds derive from it).
pub const DEAD_PINGS: u32 = 5;

/// A scripted kv server: it pings with whatever view number the script says.
pub struct Scripted {
    /// The server's id (and address).
    pub id: String,
    /// Its incarnation; a restart in the script keeps it, as in 6.824 (only view 0 tells).
    pub incarnation: u64,
}

impl Scripted {
    pub fn new(id: &str, incarnation: u64) -> Scripted {
        Scripted {
            id: id.to_string(),
            incarnation,
        }
    }

    /// The ping this server sends with `viewnum`. A scripted primary reports its backup in sync
    /// at once (state transfer is the kv servers' business, not the view service's).
    pub fn ping(&self, viewnum: u64) -> Ping {
        Ping {
            id: self.id.clone(),
            addr: self.id.clone(),
            incarnation: self.incarnation,
            viewnum,
            backup_synced: viewnum > 0,
            backup_failed: false,
            cluster: 0,
            holds_state: false,
        }
    }
}

/// A view service as the scenario sees it.
#[allow(async_fn_in_trait)]
pub trait Service {
    /// Send a ping and return the view in the reply.
    async fn ping(&mut self, ping: Ping) -> View;
    /// The current view.
    async fn get(&mut self) -> View;
    /// Let one ping interval pass.
    async fn interval(&mut self);
    /// How many rounds a loop waiting for `rounds` rounds in 6.824 may take here.
    fn rounds(&self, rounds: u32) -> u32;
}

fn id(view: &View, backup: bool) -> Option<String> {
    let slot = if backup { &view.backup } else { &view.primary };
    slot.as_ref().map(|m| m.id.clone())
}

fn check(view: &View, primary: &Scripted, backup: Option<&Scripted>, num: u64, step: &str) {
    assert_eq!(
        id(view, false).as_deref(),
        Some(primary.id.as_str()),
        "{step}: primary in {view:?}"
    );
    assert_eq!(
        id(view, true),
        backup.map(|b| b.id.clone()),
        "{step}: backup in {view:?}"
    );
    assert_eq!(view.num, num, "{step}: view number in {view:?}");
}

/// Run every step of Test1 in order; each builds on the state the previous one left.
pub async fn run<S: Service>(s: &mut S) {
    let ck1 = Scripted::new("ck1", 1);
    let ck2 = Scripted::new("ck2", 2);
    let ck3 = Scripted::new("ck3", 3);
    let dead = DEAD_PINGS;

    let empty = s.get().await;
    assert!(
        empty.primary.is_none() && empty.num == 0,
        "fresh service: {empty:?}"
    );

    // First primary.
    for _ in 0..s.rounds(dead * 2) {
        let v = s.ping(ck1.ping(0)).await;
        if id(&v, false).as_deref() == Some("ck1") {
            break;
        }
        s.interval().await;
    }
    check(&s.get().await, &ck1, None, 1, "first primary");

    // First backup.
    let vx = s.get().await;
    for _ in 0..s.rounds(dead * 2) {
        s.ping(ck1.ping(1)).await;
        let v = s.ping(ck2.ping(0)).await;
        if id(&v, true).as_deref() == Some("ck2") {
            break;
        }
        s.interval().await;
    }
    check(&s.get().await, &ck1, Some(&ck2), vx.num + 1, "first backup");

    // Backup takes over if the primary fails.
    s.ping(ck1.ping(2)).await;
    let vx = s.ping(ck2.ping(2)).await;
    for _ in 0..s.rounds(dead * 2) {
        let v = s.ping(ck2.ping(vx.num)).await;
        if id(&v, false).as_deref() == Some("ck2") && v.backup.is_none() {
            break;
        }
        s.interval().await;
    }
    check(&s.get().await, &ck2, None, vx.num + 1, "backup takes over");

    // A restarted server becomes backup.
    let vx = s.get().await;
    s.ping(ck2.ping(vx.num)).await;
    for _ in 0..s.rounds(dead * 2) {
        s.ping(ck1.ping(0)).await;
        let v = s.ping(ck2.ping(vx.num)).await;
        if id(&v, false).as_deref() == Some("ck2") && id(&v, true).as_deref() == Some("ck1") {
            break;
        }
        s.interval().await;
    }
    check(
        &s.get().await,
        &ck2,
        Some(&ck1),
        vx.num + 1,
        "restarted server becomes backup",
    );

    // Idle third server becomes backup if the primary fails, in a single view change.
    let mut vx = s.get().await;
    s.ping(ck2.ping(vx.num)).await;
    for _ in 0..s.rounds(dead * 2) {
        s.ping(ck3.ping(0)).await;
        let v = s.ping(ck1.ping(vx.num)).await;
        if id(&v, false).as_deref() == Some("ck1") && id(&v, true).as_deref() == Some("ck3") {
            break;
        }
        vx = v;
        s.interval().await;
    }
    check(
        &s.get().await,
        &ck1,
        Some(&ck3),
        vx.num + 1,
        "idle third server becomes backup",
    );

    // A restarted primary is treated as dead even though it keeps pinging.
    let vx = s.get().await;
    s.ping(ck1.ping(vx.num)).await;
    for _ in 0..s.rounds(dead * 2) {
        s.ping(ck1.ping(0)).await;
        s.ping(ck3.ping(vx.num)).await;
        if id(&s.get().await, false).as_deref() != Some("ck1") {
            break;
        }
        s.interval().await;
    }
    let vy = s.get().await;
    assert_eq!(
        id(&vy, false).as_deref(),
        Some("ck3"),
        "restarted primary treated as dead: {vy:?}"
    );

    // A dead backup is removed from the view.
    // (ck1, still pinging a moment ago, may first become backup and then die.)
    for round in 0..s.rounds(dead * 3) {
        let vx = s.get().await;
        let v = s.ping(ck3.ping(vx.num)).await;
        if round >= dead * 3 && v.backup.is_none() && id(&v, false).as_deref() == Some("ck3") {
            break;
        }
        s.interval().await;
    }
    let v = s.get().await;
    assert!(
        id(&v, false).as_deref() == Some("ck3") && v.backup.is_none(),
        "dead backup removed: {v:?}"
    );

    // The monitor waits for the primary to ack a view before moving on.
    let vx = s.get().await;
    for _ in 0..s.rounds(dead * 3) {
        s.ping(ck1.ping(0)).await;
        s.ping(ck3.ping(vx.num)).await;
        if s.get().await.num > vx.num {
            break;
        }
        s.interval().await;
    }
    check(
        &s.get().await,
        &ck3,
        Some(&ck1),
        vx.num + 1,
        "primary gets a backup",
    );
    let vy = s.get().await;
    // ck3 is the primary but never acks vy; it dies. ck1 must not be promoted.
    for _ in 0..dead * 3 {
        let v = s.ping(ck1.ping(vy.num)).await;
        assert_eq!(
            v.num, vy.num,
            "view moved on without the primary's ack: {v:?}"
        );
        s.interval().await;
    }
    check(&s.get().await, &ck3, Some(&ck1), vy.num, "waits for ack");

    // An uninitialized server can't become primary.
    for _ in 0..dead * 2 {
        let v = s.get().await;
        s.ping(ck1.ping(v.num)).await;
        s.ping(ck2.ping(0)).await;
        s.ping(ck3.ping(v.num)).await;
        s.interval().await;
    }
    for _ in 0..dead * 2 {
        s.ping(ck2.ping(0)).await;
        s.interval().await;
    }
    let vz = s.get().await;
    assert_ne!(
        id(&vz, false).as_deref(),
        Some("ck2"),
        "uninitialized server promoted: {vz:?}"
    );
}
