//! History checking for fault-injection campaigns.
//!
//! A campaign records every client call as an [`Operation`]: who called what, when, and what
//! came back, or that the outcome is unknown (a timeout: the call may or may not have taken
//! effect). Two independent checkers judge the result:
//!
//! - [`check`]: is the history linearizable with respect to the key/value model (Get, Put,
//!   Append, PutHash, Delete and Redis's INCR on byte strings)? Keys are checked independently,
//!   each with a Wing–Gong–Lowe search under a time budget, so a key can come back undecided.
//! - [`check_appends`]: for a workload that appends unique [`element`]s to a key and reads it
//!   at the end, were acknowledged elements lost, duplicated, invented or reordered? It needs no
//!   search, so it still answers when the linearizability search gives up.

mod appends;
mod history;
mod linearizability;
mod model;
#[cfg(test)]
mod sim;

pub use appends::{
    check_appends, element, AppendError, AppendReport, Duplicate, OrderViolation, Phantom,
};
pub use history::{Call, History, HistoryError, Operation, Outcome};
pub use linearizability::{check, Counterexample, KeyReport, KeyVerdict, Report, Verdict};
pub use model::{fnv1a32, put_hash};
