//! viewkv: a fault-tolerant primary/backup key/value store whose view service is a Raft group.
pub mod check;
pub mod client;
pub mod config;
pub mod kv;
pub mod monitor;
pub mod net;
pub mod resp;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod view;
pub use client::Client;
