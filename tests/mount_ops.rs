//! Operating a mount as a system tool: mount(8) and fstab syntax, what
//! the kernel's mount table shows, systemd's readiness protocol, Prometheus
//! metrics, and mounts by a user other than root (through fusermount3).

#[macro_use]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Kind;
use common::mount::{Mounted, credentials_file, daemon_pid, is_mounted, run, sample, scrape};
use common::store::Store;

const MIB: usize = 1024 * 1024;

#[test]
fn mounts_from_fstab_syntax_with_mount_8() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "mount(8) needs root");
    let server = common::start(Kind::S3sFs);
    Store::new(&server, "fstab").put("f.txt", b"from fstab".to_vec());
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let creds = credentials_file(dir.path(), &server, &server.secret_key);
    // As a line of /etc/fstab would give it: TYPE fuse, the program in SOURCE.
    let source = format!("{}#fstab", env!("CARGO_BIN_EXE_bladefs"));
    let options = format!(
        "endpoint={},credentials_file={},no_list_url_encoding,ro,_netdev,nofail,metadata_ttl=5",
        server.endpoint,
        creds.display()
    );
    run(
        "mount",
        &["-t", "fuse", &source, mnt.to_str().unwrap(), "-o", &options],
    );
    assert!(is_mounted(&mnt));
    assert_eq!(
        std::fs::read_to_string(mnt.join("f.txt")).unwrap(),
        "from fstab"
    );
    assert_eq!(
        std::fs::write(mnt.join("g.txt"), b"x")
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EROFS)
    );
    let pid = daemon_pid(&mnt).expect("the daemon serving the mount");
    run("umount", &[mnt.to_str().unwrap()]);
    assert!(!is_mounted(&mnt));
    common::wait_for("the daemon to exit", || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
}

/// The kernel shows what is mounted: type `fuse.bladefs` (not bare
/// `fuse`) and the bucket as the source, for /proc/mounts, findmnt, df.
#[test]
fn the_mount_says_what_it_is() {
    let server = common::start(Kind::S3sFs);
    Store::new(&server, "ident").put("a", b"a".to_vec());
    let m = Mounted::new(&server, "ident", &[]);
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(m.path.to_str().unwrap()))
        .expect("in /proc/mounts");
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(
        &fields[..3],
        ["ident", m.path.to_str().unwrap(), "fuse.bladefs"],
        "{line}"
    );
    let shown = run(
        "findmnt",
        &["-n", "-o", "SOURCE,FSTYPE", m.path.to_str().unwrap()],
    );
    assert_eq!(
        shown.split_whitespace().collect::<Vec<_>>(),
        ["ident", "fuse.bladefs"]
    );
    m.unmount();
}

/// `Type=notify`: with `$NOTIFY_SOCKET` set, the daemon says READY=1 once
/// the mount is live and STOPPING=1 when it starts to unmount.
#[test]
fn systemd_is_told_when_the_mount_is_live_and_when_it_stops() {
    use std::os::unix::net::UnixDatagram;
    let server = common::start(Kind::S3sFs);
    Store::new(&server, "notify").put("a", b"a".to_vec());
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let creds = credentials_file(dir.path(), &server, &server.secret_key);
    let mut child = common::mount::bladefs_command(&server, &creds, "notify", &mnt)
        .arg("--foreground")
        .env("NOTIFY_SOCKET", &sock_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("READY within 30 s");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg}");
    assert!(is_mounted(&mnt), "ready means mounted");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let n = sock.recv(&mut buf).expect("STOPPING within 30 s");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.lines().any(|l| l == "STOPPING=1"), "{msg}");
    let status = common::mount::wait_exit(&mut child, Duration::from_secs(30)).expect("exits");
    assert!(status.success(), "{status}");
    assert!(!is_mounted(&mnt));
}

/// The metric names (`bladefs_...`) a text mentions.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    text.match_indices("bladefs_")
        .map(|(at, _)| {
            text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect::<String>()
        })
        .filter(|n| n.len() > "bladefs_".len())
        // The CSI plugin's own (csi/tests/plugin_process.rs checks them).
        .filter(|n| !n.starts_with("bladefs_csi_"))
        .collect()
}

/// `--metrics-addr`: the counters move by what a workload costs. A cold
/// read of a 3 MiB file is GetObject requests bringing at least its bytes,
/// and FUSE reads; a lookup of a missing name is a FUSE error.
#[test]
fn metrics_count_what_a_read_costs() {
    let server = common::start(Kind::S3sFs);
    let body = common::data(3 * MIB, 7);
    Store::new(&server, "metrics").put("big.bin", body.clone());
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let m = Mounted::new(&server, "metrics", &["--metrics-addr", &addr]);
    let (head, before) = scrape(port, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        before.contains("# TYPE bladefs_s3_requests counter"),
        "{before}"
    );
    assert!(before.trim_end().ends_with("# EOF"));

    assert_eq!(std::fs::read(m.join("big.bin")).unwrap(), body);
    assert!(!m.join("missing").exists());
    let (_, after) = scrape(port, "/metrics");
    let moved = |series: &str| sample(&after, series) - sample(&before, series);
    let gets = moved("bladefs_s3_requests_total{op=\"GetObject\"}");
    assert!(gets >= 1.0, "{after}");
    assert!(
        moved("bladefs_s3_received_bytes_total{op=\"GetObject\"}") >= body.len() as f64,
        "{after}"
    );
    assert_eq!(
        moved("bladefs_s3_request_duration_seconds_count{op=\"GetObject\"}"),
        gets
    );
    assert!(
        moved("bladefs_fuse_operations_total{op=\"read\"}") >= 1.0,
        "{after}"
    );
    assert!(
        moved("bladefs_fuse_errors_total{op=\"lookup\"}") >= 1.0,
        "{after}"
    );
    assert_eq!(sample(&after, "bladefs_up"), 1.0);
    // Every metric the documentation lists and the Grafana dashboard
    // queries is in the scrape, under that name.
    for (what, text) in [
        (
            "docs/CONFIGURATION.md",
            include_str!("../docs/CONFIGURATION.md"),
        ),
        (
            "the dashboard",
            include_str!("../packaging/grafana/bladefs-dashboard.json"),
        ),
    ] {
        let named = metric_names(text);
        assert!(named.len() >= 15, "{what}: {named:?}");
        for name in named {
            assert!(
                after.contains(&name),
                "{what} names {name}: not in\n{after}"
            );
        }
    }
    let (head, _) = scrape(port, "/nothing");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    m.unmount();
}

/// `/dev/fuse` as distributions set it up, for as long as it lives; then
/// as it was.
struct DevFuseOpen(u32);

impl DevFuseOpen {
    fn new() -> DevFuseOpen {
        use std::os::unix::fs::PermissionsExt;
        let was = std::fs::metadata("/dev/fuse").unwrap().permissions().mode();
        std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(0o666)).unwrap();
        DevFuseOpen(was)
    }
}

impl Drop for DevFuseOpen {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(self.0));
    }
}

/// A user other than root mounts through the set-user-ID fusermount3 (the
/// daemon cannot call mount(2) itself), as `nobody`: the mount table still
/// says `fuse.bladefs` with the bucket as source, the user's files are
/// theirs, a detached mount logs under `$XDG_STATE_HOME/bladefs/` (where no
/// syslog listens) and says so, and `fusermount3 -u` by the same user ends
/// the daemon.
#[test]
fn a_user_other_than_root_mounts_and_unmounts() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the test becomes nobody");
    const NOBODY: u32 = 65534;
    // Distributions open /dev/fuse to everyone (a udev rule: mode 0666);
    // hosts without udev, such as this test's, leave it root's, where no
    // user can mount, through fusermount3 or otherwise.
    let _dev_fuse = DevFuseOpen::new();
    let server = common::start(Kind::S3sFs);
    let store = Store::new(&server, "user");
    store.put("hello.txt", b"for anyone".to_vec());
    // Everything the user touches is theirs: a root-only temp dir, or a
    // binary below a private checkout, would fail for reasons of the test.
    let dir = tempfile::tempdir().unwrap();
    let own = |p: &Path| std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
    own(dir.path());
    let bin = dir.path().join("bladefs");
    std::fs::copy(env!("CARGO_BIN_EXE_bladefs"), &bin).unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    own(&mnt);
    let creds = credentials_file(dir.path(), &server, &server.secret_key);
    own(&creds);
    let state = dir.path().join("state");
    let as_nobody = |program: &Path| {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(program)
            .env("HOME", dir.path())
            .env("XDG_STATE_HOME", &state)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_PROFILE")
            .env_remove("BLADEFS_LOG")
            .stdin(Stdio::null());
        cmd
    };
    let out = as_nobody(&bin)
        .arg("user")
        .arg(&mnt)
        .args(["--endpoint", &server.endpoint, "--no-list-url-encoding"])
        .arg("--credentials-file")
        .arg(&creds)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{said}");
    assert!(is_mounted(&mnt));
    let table = std::fs::read_to_string("/proc/mounts").unwrap();
    let line = table
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(mnt.to_str().unwrap()))
        .expect("in /proc/mounts");
    assert!(
        line.starts_with(&format!("user {} fuse.bladefs ", mnt.display())),
        "{line}"
    );
    assert!(line.contains("user_id=65534"), "{line}");
    // Without allow_other the kernel lets in only the mounting user (not
    // even root), so the work is done as nobody too.
    let work = as_nobody(Path::new("/bin/sh"))
        .arg("-c")
        .arg(format!(
            "set -e; cd '{m}'; cat hello.txt; echo mine > mine.txt; stat -c '%u:%g %a' mine.txt; mkdir d; mv mine.txt d/",
            m = mnt.display()
        ))
        .output()
        .unwrap();
    assert!(
        work.status.success(),
        "{}",
        String::from_utf8_lossy(&work.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&work.stdout),
        "for anyone65534:65534 644\n"
    );
    assert_eq!(
        std::fs::metadata(&mnt).err().map(|e| e.raw_os_error()),
        Some(Some(libc::EACCES)),
        "root is kept out of another user's mount without allow_other"
    );
    let pid = daemon_pid(&mnt).expect("the daemon serving the mount");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("65534")),
        "the daemon runs as the user: {status}"
    );
    let off = as_nobody(Path::new("fusermount3"))
        .arg("-u")
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(
        off.status.success(),
        "{}",
        String::from_utf8_lossy(&off.stderr)
    );
    assert!(!is_mounted(&mnt));
    common::wait_for("the daemon to exit", || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    assert_eq!(store.get("d/mine.txt"), b"mine\n");
    // No syslog here (the test checks which): the log is the user's file,
    // named in what the mount command said.
    if Path::new("/dev/log").exists() {
        assert!(said.contains("syslog"), "{said}");
    } else {
        let log = state.join("bladefs").join(format!(
            "{}.log",
            mnt.to_str().unwrap().trim_matches('/').replace('/', "-")
        ));
        assert!(said.contains(log.to_str().unwrap()), "{said}");
        let meta = std::fs::metadata(&log).unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), NOBODY);
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("mounted"), "{text}");
        assert!(!text.contains(&server.secret_key));
    }
}
