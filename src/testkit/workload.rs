//! Campaign clients: a mixed workload on a few keys, every call recorded for the checkers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::check::{check, check_appends, element, AppendReport, Call, Operation, Report};
use crate::client::ClientError;
use crate::kv::api::{KvError, Op};
use crate::Client;

/// Keys of the register workload (checked for linearizability).
pub const MODEL_KEYS: &[&str] = &["r0", "r1", "r2", "r3", "r4"];
/// Keys of the append-set workload (checked for lost and duplicated elements).
pub const APPEND_KEYS: &[&str] = &["a0", "a1", "a2"];

/// The shared record of a campaign.
#[derive(Debug)]
pub struct Recorder {
    /// Time zero of the history.
    start: Instant,
    /// Every call so far.
    ops: Mutex<Vec<Operation>>,
    /// Calls the service refused outright (never expected in a campaign).
    refused: Mutex<Vec<String>>,
}

impl Recorder {
    /// An empty record starting now.
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
            refused: Mutex::new(Vec::new()),
        }
    }

    /// Nanoseconds since the start.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// A copy of every call recorded.
    pub fn operations(&self) -> Vec<Operation> {
        match self.ops.lock() {
            Ok(ops) => ops.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Refusals seen.
    pub fn refused(&self) -> Vec<String> {
        match self.refused.lock() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Record `op`, a call made by a client of the caller's own (`perform` records those made
    /// through the client library); its times must come from [`Recorder::now`].
    pub fn push(&self, op: Operation) {
        match self.ops.lock() {
            Ok(mut ops) => ops.push(op),
            Err(poisoned) => poisoned.into_inner().push(op),
        }
    }

    /// Perform `call` with `client` and record it.
    pub async fn perform(&self, client: &mut Client, who: u64, call: Call) {
        let invoke = self.now();
        let result = match &call {
            Call::Get { key } => client.get(key).await,
            Call::Put { key, value } => client.put(key, value).await.map(|()| None),
            Call::Append { key, value } => client.append(key, value).await.map(|()| None),
            Call::PutHash { key, value } => client.put_hash(key, value).await,
            Call::Delete { key } => client.delete(key).await,
            Call::Incr { key } => {
                let key = key.clone();
                client.execute(Op::IncrBy { key, by: 1 }).await
            }
        };
        match result {
            Ok(value) => self.push(Operation::ok(who, call, invoke, self.now(), value)),
            // A read that failed changed nothing, a client that never reached a monitor sent
            // nothing, and a write refused at every attempt for want of a backup was never
            // applied; recorded as unknown, they constrain nothing either way.
            Err(
                ClientError::Indeterminate { .. }
                | ClientError::ReadFailed { .. }
                | ClientError::NoMonitors { .. }
                | ClientError::Refused(KvError::NoReplicas { .. }),
            ) => self.push(Operation::unknown(who, call, invoke)),
            Err(
                err @ (ClientError::Refused(_)
                | ClientError::SessionLost
                | ClientError::Unauthorized(_)
                | ClientError::BadReply(_)),
            ) => {
                let text = format!("{call}: {err}");
                match self.refused.lock() {
                    Ok(mut r) => r.push(text),
                    Err(poisoned) => poisoned.into_inner().push(text),
                }
            }
        }
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

/// Run one campaign client until `stop`: random calls on the register keys, unique elements
/// appended to the append keys.
pub async fn client_loop(
    recorder: Arc<Recorder>,
    mut client: Client,
    who: u64,
    seed: u64,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = MODEL_KEYS[rng.gen_range(0..MODEL_KEYS.len())]
            .as_bytes()
            .to_vec();
        let unique = format!("{who}.{n};").into_bytes();
        let call = match rng.gen_range(0..100) {
            0..=34 => Call::get(key),
            35..=54 => Call::put(key, unique),
            55..=64 => Call::append(key, unique),
            65..=74 => Call::put_hash(key, unique),
            75..=79 => Call::delete(key),
            _ => {
                let key = APPEND_KEYS[rng.gen_range(0..APPEND_KEYS.len())];
                Call::append(key.as_bytes().to_vec(), element(who * 1_000_000_000 + n))
            }
        };
        recorder.perform(&mut client, who, call).await;
        // A little think time keeps histories at a size the checker decides in seconds.
        tokio::time::sleep(std::time::Duration::from_micros(rng.gen_range(0..4000))).await;
    }
}

/// The final read of every append key, recorded: what the append check needs.
pub async fn final_reads(recorder: &Recorder, client: &mut Client) {
    for key in APPEND_KEYS {
        recorder
            .perform(client, 0, Call::get(key.as_bytes().to_vec()))
            .await;
    }
}

/// Judge a recorded history: the linearizability of the register keys (within `budget`) and
/// the append check of each append key. Panics if the recorder produced an impossible history.
pub fn judge(ops: &[Operation], budget: std::time::Duration) -> (Report, Vec<AppendReport>) {
    let on = |keys: &[&str], op: &Operation| keys.iter().any(|k| k.as_bytes() == op.call.key());
    let model: Vec<Operation> = ops
        .iter()
        .filter(|op| on(MODEL_KEYS, op))
        .cloned()
        .collect();
    let report = match check(&model, budget) {
        Ok(report) => report,
        Err(err) => panic!("the recorder produced an invalid history: {err}"),
    };
    let appends = APPEND_KEYS
        .iter()
        .map(|key| {
            let ops: Vec<Operation> = ops.iter().filter(|op| on(&[key], op)).cloned().collect();
            match check_appends(&ops) {
                Ok(report) => report,
                Err(err) => panic!("append check of {key}: {err}"),
            }
        })
        .collect();
    (report, appends)
}
