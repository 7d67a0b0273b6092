//! Request counters: how many requests of each kind the client sent, how
//! many were retries or failed, and the bytes moved. Lock-free, so the hot
//! path pays one atomic add per field.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency buckets: from a loopback answer
/// to a stalled request.
pub const LATENCY_BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram of durations, lock-free: one atomic add per bucket hit.
#[derive(Default)]
pub struct Latency {
    /// Per bucket of [`LATENCY_BOUNDS`], and one beyond the last.
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    micros: AtomicU64,
}

/// A histogram's figures: per-bucket counts (not cumulative), the last
/// bucket unbounded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencySnapshot {
    pub buckets: Vec<(f64, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl Latency {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LatencySnapshot {
        let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.buckets)
            .map(|(b, n)| (b, n.load(Ordering::Relaxed)))
            .collect();
        LatencySnapshot {
            count: buckets.iter().map(|(_, n)| n).sum(),
            sum_seconds: self.micros.load(Ordering::Relaxed) as f64 / 1e6,
            buckets,
        }
    }
}

/// Each kind of request the client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    ListBuckets,
    HeadBucket,
    CreateBucket,
    DeleteBucket,
    GetBucketLocation,
    GetBucketVersioning,
    PutBucketVersioning,
    ListObjectsV2,
    ListObjectsV1,
    ListObjectVersions,
    HeadObject,
    GetObject,
    PutObject,
    DeleteObject,
    DeleteObjects,
    CopyObject,
    CreateMultipartUpload,
    UploadPart,
    UploadPartCopy,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    ListParts,
    ListMultipartUploads,
}

impl Op {
    pub const ALL: [Op; 23] = [
        Op::ListBuckets,
        Op::HeadBucket,
        Op::CreateBucket,
        Op::DeleteBucket,
        Op::GetBucketLocation,
        Op::GetBucketVersioning,
        Op::PutBucketVersioning,
        Op::ListObjectsV2,
        Op::ListObjectsV1,
        Op::ListObjectVersions,
        Op::HeadObject,
        Op::GetObject,
        Op::PutObject,
        Op::DeleteObject,
        Op::DeleteObjects,
        Op::CopyObject,
        Op::CreateMultipartUpload,
        Op::UploadPart,
        Op::UploadPartCopy,
        Op::CompleteMultipartUpload,
        Op::AbortMultipartUpload,
        Op::ListParts,
        Op::ListMultipartUploads,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::ListBuckets => "ListBuckets",
            Op::HeadBucket => "HeadBucket",
            Op::CreateBucket => "CreateBucket",
            Op::DeleteBucket => "DeleteBucket",
            Op::GetBucketLocation => "GetBucketLocation",
            Op::GetBucketVersioning => "GetBucketVersioning",
            Op::PutBucketVersioning => "PutBucketVersioning",
            Op::ListObjectsV2 => "ListObjectsV2",
            Op::ListObjectsV1 => "ListObjects",
            Op::ListObjectVersions => "ListObjectVersions",
            Op::HeadObject => "HeadObject",
            Op::GetObject => "GetObject",
            Op::PutObject => "PutObject",
            Op::DeleteObject => "DeleteObject",
            Op::DeleteObjects => "DeleteObjects",
            Op::CopyObject => "CopyObject",
            Op::CreateMultipartUpload => "CreateMultipartUpload",
            Op::UploadPart => "UploadPart",
            Op::UploadPartCopy => "UploadPartCopy",
            Op::CompleteMultipartUpload => "CompleteMultipartUpload",
            Op::AbortMultipartUpload => "AbortMultipartUpload",
            Op::ListParts => "ListParts",
            Op::ListMultipartUploads => "ListMultipartUploads",
        }
    }

    fn index(self) -> usize {
        Op::ALL
            .iter()
            .position(|o| *o == self)
            .expect("every op is in ALL")
    }
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    failures: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    /// From sending a request to the end of its answer.
    latency: Latency,
}

/// One operation's figures at a point in time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpStats {
    /// HTTP requests sent, retries included.
    pub requests: u64,
    /// Of those, how many were retries.
    pub retries: u64,
    /// Operations that failed for good (after retries).
    pub failures: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

#[derive(Default)]
pub struct ClientStats {
    ops: [Counters; Op::ALL.len()],
}

impl fmt::Debug for ClientStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.snapshot().to_string())
    }
}

impl ClientStats {
    pub(crate) fn request(&self, op: Op, bytes_sent: u64) {
        let c = &self.ops[op.index()];
        c.requests.fetch_add(1, Ordering::Relaxed);
        c.bytes_sent.fetch_add(bytes_sent, Ordering::Relaxed);
    }

    pub(crate) fn retry(&self, op: Op) {
        self.ops[op.index()].retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn failure(&self, op: Op) {
        self.ops[op.index()]
            .failures
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn answered(&self, op: Op, took: Duration) {
        self.ops[op.index()].latency.observe(took);
    }

    /// How long the requests of `op` took.
    pub fn latency(&self, op: Op) -> LatencySnapshot {
        self.ops[op.index()].latency.snapshot()
    }

    pub(crate) fn received(&self, op: Op, bytes: u64) {
        self.ops[op.index()]
            .bytes_received
            .fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            ops: Op::ALL
                .iter()
                .map(|&op| {
                    let c = &self.ops[op.index()];
                    (
                        op,
                        OpStats {
                            requests: c.requests.load(Ordering::Relaxed),
                            retries: c.retries.load(Ordering::Relaxed),
                            failures: c.failures.load(Ordering::Relaxed),
                            bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
                            bytes_received: c.bytes_received.load(Ordering::Relaxed),
                        },
                    )
                })
                .collect(),
        }
    }
}

/// Counters of every operation, subtractable to measure one piece of work.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub ops: Vec<(Op, OpStats)>,
}

impl StatsSnapshot {
    pub fn get(&self, op: Op) -> OpStats {
        self.ops
            .iter()
            .find(|(o, _)| *o == op)
            .map(|(_, s)| *s)
            .unwrap_or_default()
    }

    pub fn total(&self) -> OpStats {
        self.ops
            .iter()
            .fold(OpStats::default(), |acc, (_, s)| OpStats {
                requests: acc.requests + s.requests,
                retries: acc.retries + s.retries,
                failures: acc.failures + s.failures,
                bytes_sent: acc.bytes_sent + s.bytes_sent,
                bytes_received: acc.bytes_received + s.bytes_received,
            })
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            ops: self
                .ops
                .iter()
                .map(|(op, s)| {
                    let e = earlier.get(*op);
                    (
                        *op,
                        OpStats {
                            requests: s.requests - e.requests,
                            retries: s.retries - e.retries,
                            failures: s.failures - e.failures,
                            bytes_sent: s.bytes_sent - e.bytes_sent,
                            bytes_received: s.bytes_received - e.bytes_received,
                        },
                    )
                })
                .collect(),
        }
    }
}

impl fmt::Display for StatsSnapshot {
    /// One line per operation that sent anything, then the total.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (op, s) in self.ops.iter().filter(|(_, s)| s.requests > 0) {
            writeln!(
                f,
                "{:<24} requests {:>6}  retries {:>4}  failures {:>4}  sent {:>12}  received {:>12}",
                op.name(),
                s.requests,
                s.retries,
                s.failures,
                s.bytes_sent,
                s.bytes_received
            )?;
        }
        let t = self.total();
        write!(
            f,
            "{:<24} requests {:>6}  retries {:>4}  failures {:>4}  sent {:>12}  received {:>12}",
            "total", t.requests, t.retries, t.failures, t.bytes_sent, t.bytes_received
        )
    }
}
