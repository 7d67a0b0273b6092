//! Prometheus metrics of a mount: `--metrics-addr HOST:PORT` serves them
//! at `/metrics` in the text format, and SIGUSR1 writes the same text to
//! the log. Nothing is counted twice: at each scrape the figures are read
//! from their owners (the S3 client's counters, the FUSE adapter's, the
//! file system's gauges) and encoded by `prometheus-client`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::fs::Fs;
use crate::s3::{ClientStats, Latency, LatencySnapshot, Op};

/// Calls, failures and latency of each kind of FUSE operation.
#[derive(Debug, Default)]
pub struct FuseStats {
    ops: Mutex<BTreeMap<&'static str, Arc<FuseOp>>>,
}

#[derive(Default)]
struct FuseOp {
    calls: AtomicU64,
    errors: AtomicU64,
    latency: Latency,
}

impl std::fmt::Debug for FuseOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FuseOp")
    }
}

impl FuseStats {
    /// An operation of kind `op` answered after `took`, with an error or not.
    pub fn record(&self, op: &'static str, took: Duration, failed: bool) {
        let entry = self
            .ops
            .lock()
            .expect("fuse stats lock")
            .entry(op)
            .or_default()
            .clone();
        entry.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            entry.errors.fetch_add(1, Ordering::Relaxed);
        }
        entry.latency.observe(took);
    }

    fn snapshot(&self) -> Vec<(&'static str, u64, u64, LatencySnapshot)> {
        self.ops
            .lock()
            .expect("fuse stats lock")
            .iter()
            .map(|(op, s)| {
                (
                    *op,
                    s.calls.load(Ordering::Relaxed),
                    s.errors.load(Ordering::Relaxed),
                    s.latency.snapshot(),
                )
            })
            .collect()
    }
}

/// Reads every figure at scrape time.
pub struct Exporter {
    pub fs: Arc<Fs>,
    pub s3: Arc<ClientStats>,
    pub fuse: Arc<FuseStats>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exporter")
    }
}

type Result = std::result::Result<(), std::fmt::Error>;

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, unit: Option<&Unit>, v: u64) -> Result {
    ConstGauge::new(v as i64).encode(e.encode_descriptor(name, help, unit, MetricType::Gauge)?)
}

/// A counter family with one label.
fn counters(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    label: &str,
    values: &[(&str, u64)],
) -> Result {
    let mut family = e.encode_descriptor(name, help, unit, MetricType::Counter)?;
    for (value, v) in values {
        ConstCounter::new(*v).encode(family.encode_family(&[(label, *value)])?)?;
    }
    Ok(())
}

fn histograms(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, LatencySnapshot)],
) -> Result {
    let mut family =
        e.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    for (value, h) in values {
        family
            .encode_family(&[(label, *value)])?
            .encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &h.buckets, None)?;
    }
    Ok(())
}

impl Collector for Exporter {
    fn encode(&self, mut e: DescriptorEncoder) -> Result {
        let s3 = self.s3.snapshot();
        let used: Vec<(Op, _)> = s3
            .ops
            .iter()
            .filter(|(_, s)| s.requests > 0 || s.failures > 0)
            .copied()
            .collect();
        let by_op = |f: &dyn Fn(&crate::s3::stats::OpStats) -> u64| -> Vec<(&str, u64)> {
            used.iter().map(|(op, s)| (op.name(), f(s))).collect()
        };
        counters(
            &mut e,
            "bladefs_s3_requests",
            "HTTP requests sent to the store, retries included",
            None,
            "op",
            &by_op(&|s| s.requests),
        )?;
        counters(
            &mut e,
            "bladefs_s3_retries",
            "Requests that were retries of a failed attempt",
            None,
            "op",
            &by_op(&|s| s.retries),
        )?;
        counters(
            &mut e,
            "bladefs_s3_errors",
            "Operations that failed for good, after their retries",
            None,
            "op",
            &by_op(&|s| s.failures),
        )?;
        counters(
            &mut e,
            "bladefs_s3_sent",
            "Bytes of request bodies sent",
            Some(&Unit::Bytes),
            "op",
            &by_op(&|s| s.bytes_sent),
        )?;
        counters(
            &mut e,
            "bladefs_s3_received",
            "Bytes of response bodies received",
            Some(&Unit::Bytes),
            "op",
            &by_op(&|s| s.bytes_received),
        )?;
        let latency: Vec<(&str, LatencySnapshot)> = used
            .iter()
            .map(|(op, _)| (op.name(), self.s3.latency(*op)))
            .collect();
        histograms(
            &mut e,
            "bladefs_s3_request_duration",
            "From sending a request to the end of its answer",
            "op",
            &latency,
        )?;

        let fuse = self.fuse.snapshot();
        let calls: Vec<(&str, u64)> = fuse.iter().map(|(op, c, _, _)| (*op, *c)).collect();
        let errors: Vec<(&str, u64)> = fuse.iter().map(|(op, _, e, _)| (*op, *e)).collect();
        let latency: Vec<(&str, LatencySnapshot)> =
            fuse.iter().map(|(op, _, _, l)| (*op, l.clone())).collect();
        counters(
            &mut e,
            "bladefs_fuse_operations",
            "Operations the kernel asked of the file system",
            None,
            "op",
            &calls,
        )?;
        counters(
            &mut e,
            "bladefs_fuse_errors",
            "Operations answered with an error (ENOENT included)",
            None,
            "op",
            &errors,
        )?;
        histograms(
            &mut e,
            "bladefs_fuse_operation_duration",
            "From the kernel's request to the reply",
            "op",
            &latency,
        )?;

        let g = self.fs.gauges();
        counters(
            &mut e,
            "bladefs_cache_hits",
            "Lookups answered from the metadata cache",
            None,
            "cache",
            &[("names", g.name_hits), ("listings", g.listing_hits)],
        )?;
        counters(
            &mut e,
            "bladefs_cache_misses",
            "Lookups the metadata cache could not answer",
            None,
            "cache",
            &[("names", g.name_misses), ("listings", g.listing_misses)],
        )?;
        counters(
            &mut e,
            "bladefs_read_ahead_files",
            "Small files fetched ahead of a directory walk, and those an open then used",
            None,
            "outcome",
            &[("fetched", g.walk_fetched), ("used", g.walk_used)],
        )?;
        counters(
            &mut e,
            "bladefs_list_ahead_dirs",
            "Subdirectories listed ahead of a directory walk, and those an open or lookup then used",
            None,
            "outcome",
            &[
                ("listed", g.list_ahead_started),
                ("used", g.list_ahead_used),
            ],
        )?;
        gauge(
            &mut e,
            "bladefs_metadata_cache",
            "Bytes charged to the metadata budget now: inodes, cached names and listings, metadata tables",
            Some(&Unit::Bytes),
            g.metadata_charged_bytes,
        )?;
        gauge(
            &mut e,
            "bladefs_metadata_cache_limit",
            "The metadata budget (--metadata-cache-mib)",
            Some(&Unit::Bytes),
            g.metadata_limit_bytes,
        )?;
        counters(
            &mut e,
            "bladefs_data_cache_blocks",
            "Blocks the local data cache served (hit), could not serve (miss), evicted, or found damaged and removed (invalid)",
            None,
            "outcome",
            &[
                ("hit", g.data_cache_hits),
                ("miss", g.data_cache_misses),
                ("evicted", g.data_cache_evicted),
                ("invalid", g.data_cache_invalid),
            ],
        )?;
        counters(
            &mut e,
            "bladefs_data_cache",
            "Bytes the local data cache served, and bytes stored in it",
            Some(&Unit::Bytes),
            "op",
            &[
                ("served", g.data_cache_hit_bytes),
                ("stored", g.data_cache_stored_bytes),
            ],
        )?;
        counters(
            &mut e,
            "bladefs_write_back_uploads",
            "Write-back: queued files uploaded, uploads that failed (the file stays journaled and is tried again), and files uploaded at mount from an earlier mount's journal",
            None,
            "outcome",
            &[
                ("uploaded", g.write_back_uploaded),
                ("failed", g.write_back_failures),
                ("replayed", g.write_back_replayed),
            ],
        )?;
        gauge(
            &mut e,
            "bladefs_write_back_queued_files",
            "Write-back: files closed and journaled on local disk, not yet in the bucket",
            None,
            g.write_back_queued_files,
        )?;
        gauge(
            &mut e,
            "bladefs_write_back_queued",
            "Write-back: bytes journaled on local disk, not yet in the bucket",
            Some(&Unit::Bytes),
            g.write_back_queued_bytes,
        )?;
        gauge(
            &mut e,
            "bladefs_write_back_failed_files",
            "Write-back: queued files whose last upload failed",
            None,
            g.write_back_failed_files,
        )?;
        gauge(
            &mut e,
            "bladefs_data_cache_used",
            "Bytes of the local data cache on disk",
            Some(&Unit::Bytes),
            g.data_cache_used_bytes,
        )?;
        gauge(
            &mut e,
            "bladefs_inodes",
            "Inodes the kernel holds",
            None,
            g.inodes,
        )?;
        gauge(
            &mut e,
            "bladefs_open_handles",
            "Open file handles",
            None,
            g.open_handles,
        )?;
        gauge(
            &mut e,
            "bladefs_dirty_files",
            "Files with changes not yet in the bucket",
            None,
            g.dirty_files,
        )?;
        gauge(
            &mut e,
            "bladefs_staged",
            "Bytes staged on local disk waiting to be uploaded",
            Some(&Unit::Bytes),
            g.staged_bytes,
        )?;
        gauge(
            &mut e,
            "bladefs_multipart_uploads",
            "Multipart uploads in flight",
            None,
            g.multipart_uploads,
        )?;
        gauge(
            &mut e,
            "bladefs_read_ahead_memory",
            "Memory held by read-ahead",
            Some(&Unit::Bytes),
            g.read_ahead_bytes,
        )?;
        gauge(
            &mut e,
            "bladefs_transfer_memory",
            "Memory held by upload parts and fills",
            Some(&Unit::Bytes),
            g.transfer_bytes,
        )?;
        gauge(
            &mut e,
            "bladefs_memory_peak",
            "The most data memory held at once",
            Some(&Unit::Bytes),
            g.memory_peak_bytes,
        )?;
        gauge(&mut e, "bladefs_up", "1 while the mount serves", None, 1)?;
        Ok(())
    }
}

/// The text exposition of `exporter`'s figures now.
pub fn render(exporter: Arc<Exporter>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(exporter));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("writing to a String does not fail");
    out
}

/// Answers `GET /metrics` on `addr` until the runtime ends. Anything else
/// is a 404; one request per connection.
pub async fn serve(addr: SocketAddr, exporter: Arc<Exporter>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tokio::spawn(async move {
        loop {
            if let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(answer(conn, exporter.clone()));
            }
        }
    });
    Ok(())
}

/// [`serve`] on a unix socket at `path` (mode 0600; one left by an earlier
/// mount is replaced): for a supervisor on the same host, such as
/// bladefs-csi, that gathers the metrics of many mounts.
pub async fn serve_unix(path: &std::path::Path, exporter: Arc<Exporter>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    tokio::spawn(async move {
        loop {
            if let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(answer(conn, exporter.clone()));
            }
        }
    });
    Ok(())
}

async fn answer<C>(conn: C, exporter: Arc<Exporter>)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    answer_metrics(conn, || async move { render(exporter) }).await
}

/// One HTTP/1.1 request on `conn`: `GET /metrics` answered with `body()`
/// as OpenMetrics text, anything else with a 404; then closed. Shared with
/// bladefs-csi's node endpoint.
pub async fn answer_metrics<C, B, F>(mut conn: C, body: B)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: FnOnce() -> F,
    F: std::future::Future<Output = String>,
{
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    // The request line is all that matters; the head is read up to its end
    // (or 8 KiB) so the client is not reset.
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        match tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let line = String::from_utf8_lossy(&head);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next(), words.next());
    let (status, kind, body) = match (method, path) {
        (Some("GET"), Some("/metrics")) => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body().await,
        ),
        _ => (
            "404 Not Found",
            "text/plain",
            "only GET /metrics\n".to_string(),
        ),
    };
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(answer.as_bytes()).await;
}
