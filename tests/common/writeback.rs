//! What the write-back tests through real mounts share: a proxy that holds
//! uploads (so that closed files stay queued), a write that reports close's
//! own result, and the replay's count in a mount's log.

use std::io::Write;
use std::path::Path;

use super::Server;
use super::proxy::{self, FaultProxy};

/// A proxy before `server` that holds every PUT to `bucket` (objects and
/// parts) until released: what is closed stays queued.
pub fn holding_puts(rt: &tokio::runtime::Runtime, server: &Server, bucket: &str) -> FaultProxy {
    let when: &'static str = Box::leak(format!("put /{bucket}/").into_boxed_str());
    rt.block_on(proxy::start_rules(
        server.addr,
        vec![proxy::Rule {
            when: vec![when],
            fault: proxy::Fault::Hold,
            count: usize::MAX,
        }],
    ))
}

/// Writes one file as cp does: create (truncating), write, close; `Ok`
/// only if close returned success.
pub fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    let fd = std::os::fd::IntoRawFd::into_raw_fd(f);
    // SAFETY: closing the descriptor we own, to see close's own result.
    if unsafe { libc::close(fd) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The replay's figure in a mount's log: files an earlier mount left.
pub fn replayed(log: &str) -> u64 {
    log.lines()
        .find(|l| l.contains("files journaled by an earlier mount are stored"))
        .and_then(|l| l.split("files=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
