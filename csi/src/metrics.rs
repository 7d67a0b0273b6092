//! One Prometheus endpoint for every volume of the node.
//!
//! Each volume's bladefs daemon serves its metrics on a unix socket in the
//! volume's state directory (`--metrics-socket`, see `crate::mounts`); at
//! each scrape of the plugin's `--metrics-addr` every socket is asked, and
//! the answers are merged into one exposition, each sample labelled with
//! the `volume` (the PersistentVolume's handle) and the `target` (the pod's
//! mount path, which names the pod). One scrape target per node, found by
//! the DaemonSet's pod; no port per volume.
//!
//! Rules:
//! - A family's HELP and TYPE appear once, then its samples from every
//!   volume (OpenMetrics wants a family's samples together).
//! - `bladefs_csi_volume_up{volume,target}` is 1 for a volume whose daemon
//!   answered, 0 for one that did not (dead, or slower than 2 s): a dead
//!   daemon shows as a 0, not as missing series.
//! - Nothing here reads or shows a secret: the daemons' metrics hold none.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one daemon may take to answer a scrape.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// The socket a volume's daemon serves its metrics on, in its state dir.
pub const SOCKET: &str = "metrics.sock";
/// The volume id and target path of a state dir, one per line.
pub const LABELS: &str = "volume";

/// Answers `GET /metrics` on `listener` with the merged metrics of every
/// volume under `state`, until the runtime ends.
pub fn serve(listener: tokio::net::TcpListener, state: PathBuf) {
    let state = Arc::new(state);
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            let state = state.clone();
            tokio::spawn(bladefs::metrics::answer_metrics(conn, move || async move {
                gather(&state).await
            }));
        }
    });
}

/// The merged exposition of every volume under `state`, asked at once.
pub async fn gather(state: &Path) -> String {
    let mut volumes = Vec::new();
    if let Ok(dirs) = std::fs::read_dir(state) {
        for dir in dirs.flatten() {
            let Ok(text) = std::fs::read_to_string(dir.path().join(LABELS)) else {
                continue;
            };
            let mut lines = text.lines();
            if let (Some(volume), Some(target)) = (lines.next(), lines.next()) {
                volumes.push((
                    volume.to_string(),
                    target.to_string(),
                    dir.path().join(SOCKET),
                ));
            }
        }
    }
    volumes.sort();
    let mut asks = tokio::task::JoinSet::new();
    for (i, (_, _, socket)) in volumes.iter().enumerate() {
        let socket = socket.clone();
        asks.spawn(async move { (i, ask(socket).await) });
    }
    let mut answers = vec![None; volumes.len()];
    while let Some(Ok((i, body))) = asks.join_next().await {
        answers[i] = body;
    }
    let mut merged = Merged::default();
    let mut up = Vec::new();
    for ((volume, target, _), body) in volumes.iter().zip(answers) {
        let labels = format!(
            "volume=\"{}\",target=\"{}\"",
            escape(volume),
            escape(target)
        );
        up.push(format!(
            "bladefs_csi_volume_up{{{labels}}} {}",
            u8::from(body.is_some())
        ));
        if let Some(body) = body {
            merged.add(&body, &labels);
        }
    }
    let mut out = String::from(
        "# HELP bladefs_csi_volume_up Whether the volume's bladefs daemon answered this scrape.\n# TYPE bladefs_csi_volume_up gauge\n",
    );
    for line in up {
        out.push_str(&line);
        out.push('\n');
    }
    merged.write(&mut out);
    out.push_str("# EOF\n");
    out
}

/// One daemon's exposition, or `None` if it did not answer in time.
async fn ask(socket: PathBuf) -> Option<String> {
    let exchange = async {
        let mut conn = tokio::net::UnixStream::connect(&socket).await.ok()?;
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: bladefs\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).await.ok()?;
        let answer = String::from_utf8(answer).ok()?;
        let (head, body) = answer.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_string())
    };
    tokio::time::timeout(ASK_TIMEOUT, exchange).await.ok()?
}

/// Families in the order first seen, each with its header and samples.
#[derive(Default)]
struct Merged {
    order: Vec<String>,
    families: HashMap<String, (Vec<String>, Vec<String>)>,
}

impl Merged {
    /// Adds one exposition, every sample given `labels` first.
    fn add(&mut self, body: &str, labels: &str) {
        let mut family = String::new();
        for line in body.lines() {
            if line == "# EOF" || line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# ") {
                let mut words = rest.splitn(3, ' ');
                let (_, name) = (words.next(), words.next().unwrap_or(""));
                family = name.to_string();
                let (header, _) = self.family(&family);
                if !header.iter().any(|h| h == line) {
                    header.push(line.to_string());
                }
                continue;
            }
            let sample = labelled(line, labels);
            self.family(&family).1.push(sample);
        }
    }

    fn family(&mut self, name: &str) -> &mut (Vec<String>, Vec<String>) {
        if !self.families.contains_key(name) {
            self.order.push(name.to_string());
        }
        self.families.entry(name.to_string()).or_default()
    }

    fn write(&self, out: &mut String) {
        for name in &self.order {
            let (header, samples) = &self.families[name];
            for line in header.iter().chain(samples) {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
}

/// `name{a="b"} 1` → `name{LABELS,a="b"} 1`; `name 1` → `name{LABELS} 1`.
fn labelled(sample: &str, labels: &str) -> String {
    let name_end = sample.find(['{', ' ']).unwrap_or(sample.len());
    let (name, rest) = sample.split_at(name_end);
    match rest.strip_prefix('{') {
        Some(inner) if inner.starts_with('}') => format!("{name}{{{labels}{inner}"),
        Some(inner) => format!("{name}{{{labels},{inner}"),
        None => format!("{name}{{{labels}}}{rest}"),
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_get_the_volume_labels() {
        let l = "volume=\"pv\",target=\"/t\"";
        assert_eq!(
            labelled("bladefs_up 1", l),
            "bladefs_up{volume=\"pv\",target=\"/t\"} 1"
        );
        assert_eq!(
            labelled("bladefs_s3_requests_total{op=\"GetObject\"} 3", l),
            "bladefs_s3_requests_total{volume=\"pv\",target=\"/t\",op=\"GetObject\"} 3"
        );
        assert_eq!(labelled("x{} 2", l), "x{volume=\"pv\",target=\"/t\"} 2");
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
    }

    #[test]
    fn families_of_two_volumes_are_merged_with_one_header() {
        let body = |n: u32| {
            format!(
                "# HELP bladefs_up Up.\n# TYPE bladefs_up gauge\nbladefs_up 1\n\
                 # HELP bladefs_s3_requests Requests.\n# TYPE bladefs_s3_requests counter\n\
                 bladefs_s3_requests_total{{op=\"GetObject\"}} {n}\n# EOF\n"
            )
        };
        let mut m = Merged::default();
        m.add(&body(1), "volume=\"a\"");
        m.add(&body(2), "volume=\"b\"");
        let mut out = String::new();
        m.write(&mut out);
        assert_eq!(
            out,
            "# HELP bladefs_up Up.\n# TYPE bladefs_up gauge\n\
             bladefs_up{volume=\"a\"} 1\nbladefs_up{volume=\"b\"} 1\n\
             # HELP bladefs_s3_requests Requests.\n# TYPE bladefs_s3_requests counter\n\
             bladefs_s3_requests_total{volume=\"a\",op=\"GetObject\"} 1\n\
             bladefs_s3_requests_total{volume=\"b\",op=\"GetObject\"} 2\n"
        );
    }
}
