//! Test-only: histories recorded from a simulated store that is linearizable by construction,
//! with a seed printed for every run and replayable through `VIEWKV_SEED`.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::history::{Call, Operation, Outcome};
use super::model::put_hash;

/// Longest pause of a client between two calls, in nanoseconds.
const GAP: u64 = 10;
/// Longest duration of a call, in nanoseconds: long against `GAP`, so calls overlap a lot.
const DURATION: u64 = 40;

/// What kind of history to simulate.
pub(crate) struct Shape {
    /// How many clients call concurrently (each one call at a time).
    pub(crate) clients: u64,
    /// How many keys the calls spread over.
    pub(crate) keys: usize,
    /// How many calls in all.
    pub(crate) ops: usize,
    /// Percentage of calls whose outcome is unknown (half of them take effect, half not).
    pub(crate) unknown_percent: u32,
}

/// The run's random generator, seeded from `VIEWKV_SEED` or at random; prints the seed.
pub(crate) fn rng() -> (u64, StdRng) {
    let seed = match std::env::var("VIEWKV_SEED") {
        Ok(text) => match text.trim().parse() {
            Ok(seed) => seed,
            Err(_) => panic!("VIEWKV_SEED={text:?} is not a number"),
        },
        Err(_) => rand::random(),
    };
    println!("seed = {seed}");
    (seed, StdRng::seed_from_u64(seed))
}

/// One simulated call before its return value is known.
struct Planned {
    /// Who calls.
    client: u64,
    /// What.
    call: Call,
    /// When the call starts.
    invoke: u64,
    /// When it returns; `None` if the client gives up on it.
    complete: Option<u64>,
    /// When it takes effect, if it does: inside `[invoke, complete]`, or for an unknown outcome
    /// anywhere after `invoke`, even after the client's later calls.
    effect: Option<u64>,
}

/// A random history of `shape` from a store that applies each call atomically at some instant
/// during it. Written values are unique: puts write `v<n>`, appends add `a<n>`, and puthash
/// hashes `h<n>` (storing only digits, which INCR counts on; an INCR of anything else fails).
pub(crate) fn linearizable_history(rng: &mut StdRng, shape: &Shape) -> Vec<Operation> {
    let mut planned = Vec::with_capacity(shape.ops);
    for client in 0..shape.clients {
        let share = shape.ops / shape.clients as usize
            + usize::from((client as usize) < shape.ops % shape.clients as usize);
        let mut now = rng.gen_range(0..GAP);
        for _ in 0..share {
            let serial = planned.len();
            let key = format!("k{}", rng.gen_range(0..shape.keys));
            let call = match rng.gen_range(0..100) {
                0..40 => Call::get(key),
                40..62 => Call::put(key, format!("v{serial}")),
                62..75 => Call::append(key, format!("a{serial}")),
                75..85 => Call::put_hash(key, format!("h{serial}")),
                85..93 => Call::incr(key),
                _ => Call::delete(key),
            };
            let invoke = now + rng.gen_range(1..=GAP);
            let complete = invoke + rng.gen_range(0..=DURATION);
            let unknown = rng.gen_range(0..100) < shape.unknown_percent;
            let effect = if !unknown {
                Some(rng.gen_range(invoke..=complete))
            } else if rng.gen_bool(0.5) {
                Some(invoke + rng.gen_range(0..=5 * DURATION))
            } else {
                None
            };
            planned.push(Planned {
                client,
                call,
                invoke,
                complete: (!unknown).then_some(complete),
                effect,
            });
            now = complete;
        }
    }
    let mut order: Vec<(u64, usize)> = planned
        .iter()
        .enumerate()
        .filter_map(|(i, call)| call.effect.map(|at| (at, i)))
        .collect();
    order.sort_unstable();
    let mut store = HashMap::new();
    let mut returned = vec![Some(None); planned.len()];
    for (_, i) in order {
        returned[i] = apply(&mut store, &planned[i].call);
    }
    // A call that failed changed nothing: a client that saw it fail records nothing, one that
    // gave up on it records an unknown outcome (which may as well never have taken effect).
    let mut history: Vec<Operation> = planned
        .into_iter()
        .zip(returned)
        .filter_map(|(call, value)| match (call.complete, value) {
            (Some(at), Some(value)) => Some(Operation::ok(
                call.client,
                call.call,
                call.invoke,
                at,
                value,
            )),
            (Some(_), None) => None,
            (None, _) => Some(Operation::unknown(call.client, call.call, call.invoke)),
        })
        .collect();
    history.sort_by_key(|op| op.invoke);
    history
}

/// Runs `call` on `store`, returning what the store returns, or `None` if the call fails (an
/// INCR of a value that is not an integer) and changes nothing; written independently of the
/// checker's model so that the two check each other.
fn apply(store: &mut HashMap<Vec<u8>, Vec<u8>>, call: &Call) -> Option<Option<Vec<u8>>> {
    Some(match call {
        Call::Get { key } => store.get(key).cloned(),
        Call::Put { key, value } => {
            store.insert(key.clone(), value.clone());
            None
        }
        Call::Append { key, value } => {
            store
                .entry(key.clone())
                .or_default()
                .extend_from_slice(value);
            None
        }
        Call::PutHash { key, value } => {
            let previous = store.get(key).cloned();
            store.insert(key.clone(), put_hash(previous.as_deref(), value));
            previous
        }
        Call::Delete { key } => store.remove(key),
        Call::Incr { key } => {
            let old = match store.get(key) {
                Some(value) => integer(value)?,
                None => 0,
            };
            let new = old.checked_add(1)?.to_string().into_bytes();
            store.insert(key.clone(), new.clone());
            Some(new)
        }
    })
}

/// `bytes` as the integer Redis reads in them: `0`, or an optional `-` and digits not starting
/// with `0`, within `i64`.
fn integer(bytes: &[u8]) -> Option<i64> {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    let well_formed = match digits {
        [b'0'] => digits.len() == bytes.len(),
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    well_formed.then(|| std::str::from_utf8(bytes).ok()?.parse().ok())?
}

/// `history` (from [`linearizable_history`]) with one completed read changed to return the
/// value of a completed put that a completed write certainly overwrote before the read began.
/// Only that put ever wrote that value, and no other call can rebuild it, so the result is
/// certainly not linearizable. `None` if the history has no such put, write and read.
pub(crate) fn stale_read(history: &[Operation]) -> Option<Vec<Operation>> {
    let completed = |op: &&Operation| op.complete().is_some();
    for (read_index, read) in history.iter().enumerate() {
        let (Call::Get { key }, Outcome::Ok { at, .. }) = (&read.call, &read.outcome) else {
            continue;
        };
        let on_key = |op: &&Operation| op.call.key() == key.as_slice();
        let overwrites = history
            .iter()
            .filter(on_key)
            .filter(completed)
            .filter(|write| !matches!(write.call, Call::Get { .. }))
            .filter(|write| write.complete().is_some_and(|done| done < read.invoke));
        for write in overwrites {
            let put =
                history
                    .iter()
                    .filter(on_key)
                    .find_map(|put| match (&put.call, put.complete()) {
                        (Call::Put { value, .. }, Some(done)) if done < write.invoke => Some(value),
                        _ => None,
                    });
            if let Some(value) = put {
                let mut corrupt = history.to_vec();
                corrupt[read_index].outcome = Outcome::Ok {
                    at: *at,
                    value: Some(value.clone()),
                };
                return Some(corrupt);
            }
        }
    }
    None
}
