//! The monitor group suite (`suites/monitor_group.rs`) with every node and client over mutual
//! TLS.

mod common;

/// Whether the suite's clusters run over TLS.
const OVER_TLS: bool = true;

#[path = "suites/monitor_group.rs"]
mod suite;
