//! The kv service suite (`suites/kv_service.rs`) on plain HTTP.

/// Whether the suite's clusters run over TLS.
const OVER_TLS: bool = false;

#[path = "suites/kv_service.rs"]
mod suite;
