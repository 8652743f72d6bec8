//! The kv service suite (`suites/kv_service.rs`) with every node and client over mutual TLS.

/// Whether the suite's clusters run over TLS.
const OVER_TLS: bool = true;

#[path = "suites/kv_service.rs"]
mod suite;
