//! What happens when things go wrong: a daemon killed mid-write, and
//! secrets kept out of every log line even at debug level.

mod common;

use std::process::Stdio;

use bladefs::s3::{GetObjectParams, ListUploadsParams, ObjectClient};
use common::mount::{Mounted, bladefs_command, credentials_file, is_mounted, run, wait_exit};
use common::{Kind, data};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

const MIB: usize = 1024 * 1024;

#[test]
fn kill_9_mid_write_loses_nothing_that_was_closed() {
    let server = common::start(Kind::Garage);
    let client = server.client();
    let rt = runtime();
    rt.block_on(client.create_bucket("crash")).unwrap();
    let old = data(3 * MIB, 1);
    rt.block_on(client.put_object("crash", "big.bin", old.clone().into()))
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let creds = credentials_file(dir.path(), &server, &server.secret_key);
    let mut daemon = bladefs_command(&server, &creds, "crash", &mnt)
        .args(["--foreground", "--abort-uploads-after", "-1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::wait_for("the mount", || is_mounted(&mnt));

    // Closed before the crash: must be complete afterwards.
    std::fs::write(mnt.join("closed.txt"), b"closed before the kill").unwrap();
    // Being rewritten at the crash: parts already streaming. A process of
    // its own holds the descriptor: held here, it would be inherited for an
    // instant by every process another test of this file spawns, and that
    // copy's close (at exec) is a FUSE flush, which saves the file (seen in
    // CI: the old content replaced before the kill).
    let mut writer = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import os, sys, time\n\
             fd = os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC)\n\
             for _ in range(40): os.write(fd, os.urandom(1 << 20))\n\
             print('written', flush=True)\n\
             time.sleep(600)\n",
        )
        .arg(mnt.join("big.bin"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(writer.stdout.take().unwrap()),
        &mut said,
    )
    .unwrap();
    assert_eq!(said.trim(), "written");
    common::wait_for("a multipart upload in progress", || {
        rt.block_on(client.list_multipart_uploads("crash", &ListUploadsParams::default()))
            .map(|l| !l.uploads.is_empty())
            .unwrap_or(false)
    });
    daemon.kill().unwrap(); // SIGKILL
    wait_exit(&mut daemon, std::time::Duration::from_secs(10)).expect("killed");
    // Its close fails: the daemon is gone.
    writer.kill().unwrap();
    writer.wait().unwrap();
    run("fusermount3", &["-u", mnt.to_str().unwrap()]);
    assert!(!is_mounted(&mnt));

    let get = |key: &str| {
        rt.block_on(client.get_object("crash", key, &GetObjectParams::default()))
            .unwrap()
            .body
    };
    assert!(get("big.bin") == old, "the previous content is intact");
    assert_eq!(&get("closed.txt")[..], b"closed before the kill");

    // The next mount aborts the orphaned upload (any age, for the test).
    let m = Mounted::new(&server, "crash", &["--abort-uploads-after", "0"]);
    let left = rt
        .block_on(client.list_multipart_uploads("crash", &ListUploadsParams::default()))
        .unwrap();
    assert!(left.uploads.is_empty(), "{:?}", left.uploads);
    assert!(std::fs::read(m.join("big.bin")).unwrap() == old);
    m.unmount();
}

#[test]
fn a_debug_mount_never_logs_the_secret() {
    let server = common::start(Kind::Garage);
    let rt = runtime();
    rt.block_on(server.client().create_bucket("secrets"))
        .unwrap();
    let m = Mounted::new(&server, "secrets", &[]);
    std::fs::write(m.join("a.txt"), b"some data").unwrap();
    std::fs::create_dir(m.join("d")).unwrap();
    std::fs::rename(m.join("a.txt"), m.join("d/b.txt")).unwrap();
    assert_eq!(std::fs::read(m.join("d/b.txt")).unwrap(), b"some data");
    let _ = std::fs::read(m.join("missing"));
    let log = m.unmount();
    assert!(log.contains("DEBUG"), "debug logging was on");
    assert!(log.contains("s3 request"));
    assert!(
        !log.contains(&server.secret_key),
        "the secret is in the log"
    );

    // Failing to start prints no secret either, at trace level.
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let wrong = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let creds = credentials_file(dir.path(), &server, wrong);
    let out = bladefs_command(&server, &creds, "secrets", &mnt)
        .args(["--foreground", "--debug"])
        .env("BLADEFS_LOG", "trace")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("refused"), "{all}");
    assert!(
        !all.contains(wrong) && !all.contains(&server.secret_key),
        "{all}"
    );
}

/// Runs `cmd` as the unprivileged user nobody; true if it succeeded.
fn as_nobody(cmd: &str) -> bool {
    std::process::Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "sh",
            "-c",
            cmd,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Without `--allow-other` only the mounting user gets in; with it, others
/// do, and the kernel enforces the mode bits (default_permissions),
/// including ones changed by chmod for the inode's life.
#[test]
fn allow_other_is_off_by_default_and_mode_bits_hold_with_it() {
    use std::os::unix::fs::PermissionsExt;
    let server = common::start(Kind::Garage);
    let rt = runtime();
    let client = server.client();
    rt.block_on(client.create_bucket("shared")).unwrap();
    rt.block_on(client.put_object("shared", "f.txt", b"shared data".to_vec().into()))
        .unwrap();
    let open_up = |m: &Mounted| {
        // The mount point's parent is a private temp dir.
        let parent = m.path.parent().unwrap();
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
        m.join("f.txt").to_str().unwrap().to_string()
    };

    let m = Mounted::new(&server, "shared", &[]);
    let f = open_up(&m);
    assert!(std::fs::read(&f).is_ok(), "the owner reads");
    assert!(!as_nobody(&format!("cat '{f}'")), "others are kept out");
    m.unmount();

    let m = Mounted::new(&server, "shared", &["--allow-other"]);
    let f = open_up(&m);
    let dir = m.path.to_str().unwrap().to_string();
    assert!(as_nobody(&format!("cat '{f}'")), "0644: others read");
    assert!(
        !as_nobody(&format!("echo x >> '{f}'")),
        "0644: others do not write"
    );
    assert!(
        !as_nobody(&format!("touch '{dir}/new.txt'")),
        "0755 root dir"
    );
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert!(
        as_nobody(&format!("printf ' and more' >> '{f}'")),
        "0666: others write"
    );
    assert_eq!(std::fs::read(&f).unwrap(), b"shared data and more");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(
        !as_nobody(&format!("cat '{f}'")),
        "0600: others do not read"
    );
    m.unmount();
}

/// A detached mount without `--log-file` still logs: to syslog where
/// `/dev/log` exists, else to `/var/log/bladefs/MOUNTPOINT.log` (root), and
/// the mount command says where. A read the store refuses (500 until the
/// retries give up) is logged once, with the path and the S3 cause.
#[test]
fn a_detached_mount_logs_failures_where_it_said() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the default place is root's");
    let server = common::start(Kind::S3sFs);
    let rt = common::background_runtime();
    let client = server.client();
    rt.block_on(client.create_bucket("detached")).unwrap();
    rt.block_on(client.put_object("detached", "broken.bin", data(4096, 3).into()))
        .unwrap();
    let proxy = rt.block_on(common::proxy::start_rules(server.addr, vec![]));
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let creds = credentials_file(dir.path(), &server, &server.secret_key);
    let out =
        common::mount::bladefs_command_at(&proxy.endpoint, server.kind, &creds, "detached", &mnt)
            .args([
                "--retries",
                "2",
                "--retry-deadline",
                "2",
                "--metadata-ttl",
                "never",
            ])
            .output()
            .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    let log = if said.contains("syslog") {
        None
    } else {
        let name = mnt.to_str().unwrap().trim_matches('/').replace('/', "-");
        let path = std::path::PathBuf::from(format!("/var/log/bladefs/{name}.log"));
        assert!(said.contains(path.to_str().unwrap()), "{said}");
        Some(path)
    };
    // Looked up while the store answers: only the read meets the outage.
    assert_eq!(
        std::fs::metadata(mnt.join("broken.bin")).unwrap().len(),
        4096
    );
    proxy.set_outage(Some(common::proxy::Fault::InternalError));
    let err = std::fs::read(mnt.join("broken.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    proxy.set_outage(None);
    run("umount", &[mnt.to_str().unwrap()]);
    let Some(path) = log else {
        // Syslog: the daemon said so; reading it back needs the journal.
        return;
    };
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let failures: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("operation failed") && l.contains("detached/broken.bin"))
        .collect();
    assert!(!failures.is_empty(), "{text}");
    assert!(
        failures
            .iter()
            .all(|l| l.contains("WARN") && l.contains("InternalError")),
        "{failures:?}"
    );
    assert!(!text.contains(&server.secret_key));
}
