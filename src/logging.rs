//! Where a mount's log goes, and its level while it runs.
//!
//! - `--log-file FILE`: that file;
//! - in the foreground (a terminal, or systemd's journal): standard error;
//! - detached, where the daemon has no standard error left: syslog (the
//!   journal, or rsyslog) when `/dev/log` exists, else a file of its own,
//!   `/var/log/bladefs/MOUNTPOINT.log` for root and
//!   `$XDG_STATE_HOME/bladefs/MOUNTPOINT.log` (`~/.local/state/...`) for
//!   others, the mountpoint's slashes made dashes. The mount command says
//!   which on its terminal.
//!
//! SIGUSR2 switches a running mount between its level and debug.

use std::ffi::CString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::reload;

const INFO: &str = "bladefs=info,fuser=error,warn";
const DEBUG: &str = "bladefs=debug,fuser=error,info";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stderr,
    File(PathBuf),
    Syslog,
}

impl Destination {
    /// Where the log of a mount on `mountpoint` goes.
    pub fn choose(log_file: Option<&Path>, foreground: bool, mountpoint: &Path) -> Destination {
        if let Some(f) = log_file {
            return Destination::File(f.to_path_buf());
        }
        if foreground {
            return Destination::Stderr;
        }
        if is_socket(Path::new("/dev/log")) {
            return Destination::Syslog;
        }
        Destination::File(default_dir().join(file_name(mountpoint)))
    }

    /// What the mount command tells the user.
    pub fn describe(&self) -> String {
        match self {
            Destination::Stderr => "standard error".to_string(),
            Destination::File(p) => p.display().to_string(),
            Destination::Syslog => "syslog (journalctl -t bladefs)".to_string(),
        }
    }
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// `/var/log/bladefs` for root, else the user's state directory.
fn default_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/log/bladefs");
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    state.join("bladefs")
}

/// `/mnt/data` gives `mnt-data.log`, as systemd names mount units.
pub fn file_name(mountpoint: &Path) -> String {
    let path = mountpoint.to_string_lossy();
    let name = path.trim_matches('/').replace('/', "-");
    if name.is_empty() {
        "root.log".to_string()
    } else {
        format!("{name}.log")
    }
}

/// The running mount's handle on its log level.
pub struct Level {
    handle: reload::Handle<EnvFilter, tracing_subscriber::Registry>,
    normal: String,
    debug: Mutex<bool>,
}

impl Level {
    /// Debug if it was not, else back to the level it started with.
    pub fn toggle(&self) {
        let mut debug = self.debug.lock().expect("level lock");
        *debug = !*debug;
        let filter = if *debug { DEBUG } else { &self.normal };
        match self.handle.reload(EnvFilter::new(filter)) {
            Ok(()) => tracing::info!(filter, "log level changed (SIGUSR2)"),
            Err(e) => tracing::warn!(error = %e, "log level unchanged"),
        }
    }
}

/// Starts logging to `dest`, at debug level if `debug`, or as
/// `BLADEFS_LOG` says.
pub fn init(dest: &Destination, debug: bool) -> Result<Level, String> {
    let normal = std::env::var("BLADEFS_LOG")
        .ok()
        .filter(|f| EnvFilter::try_new(f).is_ok())
        .unwrap_or_else(|| if debug { DEBUG } else { INFO }.to_string());
    let (filter, handle) = reload::Layer::new(EnvFilter::new(&normal));
    let registry = tracing_subscriber::registry().with(filter);
    let fmt = tracing_subscriber::fmt::layer();
    let done = match dest {
        Destination::Stderr => registry.with(fmt.with_writer(std::io::stderr)).try_init(),
        Destination::File(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot make log directory {}: {e}", dir.display()))?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?;
            registry
                .with(fmt.with_ansi(false).with_writer(Mutex::new(file)))
                .try_init()
        }
        Destination::Syslog => {
            Syslog::open();
            registry
                .with(
                    fmt.with_ansi(false)
                        .without_time()
                        .with_level(true)
                        .with_writer(Syslog),
                )
                .try_init()
        }
    };
    done.map_err(|e| e.to_string())?;
    Ok(Level {
        handle,
        normal,
        debug: Mutex::new(debug),
    })
}

/// Lines to syslog(3) (glibc writes them to `/dev/log`, reconnecting as
/// needed), each at the priority of its event.
#[derive(Clone, Copy)]
struct Syslog;

impl Syslog {
    fn open() {
        static IDENT: &std::ffi::CStr = c"bladefs";
        // SAFETY: IDENT lives for the whole program, as openlog requires.
        unsafe {
            libc::openlog(
                IDENT.as_ptr(),
                libc::LOG_PID | libc::LOG_NDELAY,
                libc::LOG_DAEMON,
            )
        };
    }
}

/// One event's text, sent when the formatter is done with it.
struct SyslogLine {
    priority: libc::c_int,
    text: Vec<u8>,
}

impl Write for SyslogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine {
    fn drop(&mut self) {
        let text: Vec<u8> = self.text.iter().copied().filter(|b| *b != 0).collect();
        let Ok(line) = CString::new(text) else {
            return;
        };
        // SAFETY: a constant format with one C string argument.
        unsafe { libc::syslog(self.priority, c"%s".as_ptr(), line.as_ptr()) };
    }
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = SyslogLine;

    fn make_writer(&'a self) -> SyslogLine {
        SyslogLine {
            priority: libc::LOG_INFO,
            text: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> SyslogLine {
        let priority = match *meta.level() {
            tracing::Level::ERROR => libc::LOG_ERR,
            tracing::Level::WARN => libc::LOG_WARNING,
            tracing::Level::INFO => libc::LOG_INFO,
            _ => libc::LOG_DEBUG,
        };
        SyslogLine {
            priority,
            text: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_logs_go() {
        let mnt = Path::new("/mnt/data/x");
        assert_eq!(
            Destination::choose(Some(Path::new("/tmp/l")), false, mnt),
            Destination::File("/tmp/l".into())
        );
        assert_eq!(Destination::choose(None, true, mnt), Destination::Stderr);
        assert_eq!(file_name(mnt), "mnt-data-x.log");
        assert_eq!(file_name(Path::new("/")), "root.log");
    }
}
