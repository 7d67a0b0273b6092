//! The S3 client: one signed, pooled, retrying HTTP client behind the
//! [`ObjectClient`] trait.
//!
//! - `client`: the trait and its typed parameters and results
//! - `config`: the client's configuration and defaults
//! - `http`: the HTTP client (hyper): construction, TLS, the request pipeline
//! - `connect`: its TCP connections (overrides, timeouts, quick ACKs)
//! - `ops`: the S3 operations over that pipeline
//! - `listing`: listing encodings and V1 behind V2
//! - `recovery`: what lost answers of non-idempotent requests left
//! - `chunked`: aws-chunked framing
//! - `sign`: SigV4 / SigV2 as pure functions
//! - `xml`: response parsing and request bodies
//! - `error`: typed errors and their meaning
//! - `retry`: backoff and what is safe to resend
//! - `credentials`: where keys come from
//! - `stats`: request counters
//! - `mem`: an in-memory store, and `faults`: a fault-injecting wrapper,
//!   both behind the same trait, for testing the core without a server,
//!   and `generated`: a read-only bucket of millions of objects made up
//!   on the fly (only with the `test-doubles` feature, which the tests
//!   enable)

pub mod buffers;
pub mod chunked;
pub mod client;
pub mod config;
mod connect;
pub mod credentials;
pub mod error;
#[cfg(any(test, feature = "test-doubles"))]
pub mod faults;
#[cfg(any(test, feature = "test-doubles"))]
pub mod generated;
pub mod http;
mod listing;
#[cfg(any(test, feature = "test-doubles"))]
pub mod mem;
mod ops;
mod recovery;
pub mod retry;
pub mod sign;
pub mod stats;
pub mod xml;

pub use client::*;
pub use error::{ErrorKind, S3Error, S3ErrorCode};
pub use http::S3Client;
pub use sign::Credentials;
pub use stats::{ClientStats, LATENCY_BOUNDS, Latency, LatencySnapshot, Op, StatsSnapshot};
