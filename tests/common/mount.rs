//! Real mounts for tests: the `bladefs` binary in the foreground as a child
//! process, through the kernel's FUSE, against a server of the harness.
//! `unmount` uses `fusermount3 -u` and checks that the process then exited
//! with status 0; a mount dropped without it is torn down lazily.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{Kind, Server};

const MOUNT_DEADLINE: Duration = Duration::from_secs(30);
const EXIT_DEADLINE: Duration = Duration::from_secs(30);

pub struct Mounted {
    pub path: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

/// A private credentials file for `server`, in `dir`.
pub fn credentials_file(dir: &Path, server: &Server, secret: &str) -> PathBuf {
    let path = dir.join("credentials");
    std::fs::write(
        &path,
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {secret}\n",
            server.access_key
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The bladefs command for `server`, with credentials from a file and no
/// AWS variables from the environment.
pub fn bladefs_command(server: &Server, creds: &Path, source: &str, mountpoint: &Path) -> Command {
    bladefs_command_at(&server.endpoint, server.kind, creds, source, mountpoint)
}

/// The bladefs command for a server of `kind` reached at `endpoint`.
pub fn bladefs_command_at(
    endpoint: &str,
    kind: Kind,
    creds: &Path,
    source: &str,
    mountpoint: &Path,
) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bladefs"));
    cmd.arg(source)
        .arg(mountpoint)
        .args(["--endpoint", endpoint, "--credentials-file"])
        .arg(creds)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("BLADEFS_LOG")
        .stdin(Stdio::null());
    if kind == Kind::S3sFs {
        cmd.arg("--no-list-url-encoding");
    }
    cmd
}

// Not every test binary that includes this module signals a daemon.
#[allow(unused_imports)]
pub use bladefs::mount::daemon_pid;

pub fn is_mounted(path: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let wanted = path.to_string_lossy();
    table
        .lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|m| m == wanted))
}

impl Mounted {
    /// Mounts `source` of `server` with `extra` options, in the foreground.
    pub fn new(server: &Server, source: &str, extra: &[&str]) -> Mounted {
        Mounted::at(server, &server.endpoint, source, extra)
    }

    /// Mounts through another endpoint for `server` (a proxy before it).
    pub fn at(server: &Server, endpoint: &str, source: &str, extra: &[&str]) -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let log = dir.path().join("bladefs.log");
        let creds = credentials_file(dir.path(), server, &server.secret_key);
        let mut child = bladefs_command_at(endpoint, server.kind, &creds, source, &path)
            .args(["--foreground", "--debug", "--log-file"])
            .arg(&log)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start bladefs");
        let start = Instant::now();
        while !is_mounted(&path) {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                panic!("bladefs exited before mounting ({status}): {err}");
            }
            assert!(start.elapsed() < MOUNT_DEADLINE, "not mounted in time");
            std::thread::sleep(Duration::from_millis(10));
        }
        Mounted {
            path,
            log,
            child: Some(child),
            _dir: dir,
        }
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// The daemon's peak resident memory so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let pid = self.child.as_ref().expect("the daemon runs").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmHWM in /proc/PID/status")
            * 1024
    }

    /// `fusermount3 -u`, then the daemon must exit with status 0. Returns
    /// the log, which ends with the request counters.
    pub fn unmount(mut self) -> String {
        // A child forked by another test of this process holds copies of
        // every descriptor until its exec closes them: an unmount meeting
        // that window is EBUSY. Nothing announces the window's end, so
        // that answer (only that one) is tried again, for a bounded time.
        let start = Instant::now();
        let out = loop {
            let out = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.path)
                .output()
                .expect("run fusermount3");
            let busy = String::from_utf8_lossy(&out.stderr).contains("busy");
            if out.status.success() || !busy || start.elapsed() > EXIT_DEADLINE {
                break out;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            out.status.success(),
            "fusermount3 -u: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut child = self.child.take().unwrap();
        let status =
            wait_exit(&mut child, EXIT_DEADLINE).expect("bladefs did not exit after unmount");
        if !status.success() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            panic!(
                "bladefs exited with {status}; its log ends:\n{}\nstderr: {err}",
                tail.join("\n")
            );
        }
        assert!(!is_mounted(&self.path));
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as a crash: the daemon dies with whatever it had in
    /// flight, then the dead mount is taken down. Returns the log.
    pub fn kill_9(mut self) -> String {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        wait_exit(&mut child, EXIT_DEADLINE).expect("bladefs did not die on SIGKILL");
        run("fusermount3", &["-u", "-z", self.path.to_str().unwrap()]);
        assert!(!is_mounted(&self.path));
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, signal: i32) {
        let child = self.child.as_ref().expect("running");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` to the daemon and waits for it: status and log.
    pub fn stop_with(mut self, signal: i32) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = wait_exit(&mut child, EXIT_DEADLINE).expect("bladefs did not exit on signal");
        (
            status,
            std::fs::read_to_string(&self.log).unwrap_or_default(),
        )
    }
}

pub fn wait_exit(child: &mut Child, deadline: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if start.elapsed() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.path)
                .output();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Requests of kind `op` in the counters the daemon logs at unmount.
pub fn requests(log: &str, op: &str) -> u64 {
    let tail = log.rsplit("unmounted; requests:").next().unwrap_or("");
    tail.lines()
        .find(|l| l.split_whitespace().next() == Some(op))
        .and_then(|l| {
            let mut words = l.split_whitespace();
            words.position(|w| w == "requests")?;
            words.next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// Runs a command, asserting success; returns standard output.
pub fn run(program: &str, args: &[&str]) -> String {
    let out: Output = Command::new(program).args(args).output().expect(program);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One sample of a Prometheus text scrape: the value of the series named
/// exactly `series` (name and labels as the exposition writes them).
pub fn sample(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// `GET path` of a mount's `--metrics-addr` on 127.0.0.1:`port`: the
/// answer's head and body.
pub fn scrape(port: u16, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(conn, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}
