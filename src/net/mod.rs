//! Everything that crosses the network: bincode bodies over HTTP/1.1, one path per RPC.
//!
//! Every outbound call of every node — Raft, pings, forwards, client requests — goes through one
//! [`RpcClient`], which consults a shared [`Faults`] table when one is installed. That is how the
//! test harness cuts links, loses messages and adds delay without touching the protocol code.

mod client;
mod codec;
mod faults;
mod frame;
mod framed;
mod metrics;
mod mux;
mod secret;
mod server;
mod tls;

pub use client::{RpcClient, RpcError};
pub use codec::{decode, encode, DecodeError, MAX_MESSAGE};
pub use faults::{Fate, Faults};
pub use frame::{decode_answer, decode_call, encode_answer, encode_call, FrameError};
pub use framed::{through_http, Answering, CallOutcome};
pub use metrics::{vm_rss, Gauge};
pub use secret::{Secret, SecretError, MIN_SECRET_BYTES};
pub use server::{
    bad_request, bincode_reply, json_reply, not_found, serve, Handler, HttpRequest, HttpResponse,
    ServeLimits,
};
pub use tls::{Tls, TlsError, TlsFiles};
/// What [`serve`] accepts TLS connections with ([`Tls::acceptor`]).
pub use tokio_rustls::TlsAcceptor;
