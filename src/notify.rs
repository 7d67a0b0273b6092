//! The systemd readiness protocol (`Type=notify`), without libsystemd: one
//! datagram to `$NOTIFY_SOCKET` (a path, or `@name` in the abstract
//! namespace) when the mount is live, another when it is stopping. Without
//! the variable, nothing is sent.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (`READY=1`, `STOPPING=1`, `STATUS=...` lines) to systemd,
/// if it asked for it. Failures are logged, never fatal: the mount works
/// whether or not anyone listens.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = (|| -> std::io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            sock.send_to(state.as_bytes(), &path)?;
        }
        Ok(())
    })();
    if let Err(e) = sent {
        tracing::warn!(socket = ?path, error = %e, "could not notify systemd");
    }
}
