//! The monitor group suite (`suites/monitor_group.rs`) on plain HTTP.

mod common;

/// Whether the suite's clusters run over TLS.
const OVER_TLS: bool = false;

#[path = "suites/monitor_group.rs"]
mod suite;
