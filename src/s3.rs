//! The S3 client: one signed, pooled, retrying HTTP client behind the
//! [`ObjectClient`] trait.
//!
//! - `client`: the trait and its typed parameters and results
//! - `http`: the reqwest implementation
//! - `sign`: SigV4 / SigV2 as pure functions
//! - `xml`: response parsing and request bodies
//! - `error`: typed errors and their meaning
//! - `retry`: backoff and what is safe to resend
//! - `credentials`: where keys come from
//! - `stats`: request counters
//! - `mem`: an in-memory store, and `faults`: a fault-injecting wrapper,
//!   both behind the same trait, for testing the core without a server

pub mod client;
pub mod credentials;
pub mod error;
pub mod faults;
pub mod http;
pub mod mem;
pub mod retry;
pub mod sign;
pub mod stats;
pub mod xml;

pub use client::*;
pub use error::{ErrorKind, S3Error, S3ErrorCode};
pub use http::S3Client;
pub use sign::Credentials;
pub use stats::{ClientStats, Op, StatsSnapshot};
