//! The plugin as a process, killed with `kill -9` while a volume is
//! published and a file on it is open: the file keeps working (the
//! bladefs daemon is not the plugin's), and a plugin started afresh
//! unpublishes the volume. The store is s3s-fs, which keeps each object
//! as a file, so what the pod wrote is checked on disk. Needs the bladefs
//! binary built beside this one (`cargo test --workspace` builds it) and
//! s3s-fs (`scripts/install-test-servers`).

use std::collections::HashMap;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bladefs_csi::cgroup::DaemonCgroup;
use bladefs_csi::mounts::mounted_type;
use bladefs_csi::proto::node_client::NodeClient;
use bladefs_csi::proto::volume_capability::{AccessType, MountVolume};
use bladefs_csi::proto::*;

fn binary(env: &str, candidates: &[PathBuf]) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    candidates
        .iter()
        .find(|c| c.is_file())
        .cloned()
        .unwrap_or_else(|| panic!("none of ${env}, {candidates:?} exists"))
}

/// Polls `cond` (a process coming up has no other way to tell) for 30 s.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn plugin(socket: &Path, state: &Path, bladefs: &Path) -> Killed {
    plugin_in(socket, state, bladefs, None, &[])
}

/// The plugin, started in cgroup `container` (as its container would be),
/// with `extra` arguments.
fn plugin_in(
    socket: &Path,
    state: &Path,
    bladefs: &Path,
    container: Option<&Path>,
    extra: &[&str],
) -> Killed {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bladefs-csi"));
    if let Some(dir) = container {
        DaemonCgroup::new(dir)
            .unwrap()
            .enter_on_spawn(&mut cmd)
            .unwrap();
    }
    cmd.args(extra);
    let child = cmd
        .arg(format!("--endpoint=unix://{}", socket.display()))
        .args(["--node-id", "n1", "--bladefs"])
        .arg(bladefs)
        .arg("--state-dir")
        .arg(state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the plugin's socket", || {
        std::os::unix::net::UnixStream::connect(socket).is_ok()
    });
    Killed(child)
}

fn node(rt: &tokio::runtime::Runtime, socket: &Path) -> NodeClient<tonic::transport::Channel> {
    NodeClient::new(rt.block_on(bladefs_csi::connect(socket)).unwrap())
}

/// A pod's process opens `log.txt` on the volume and writes a line.
fn pod_opens(target: &Path) -> std::fs::File {
    let mut f = std::fs::File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(target.join("log.txt"))
        .unwrap();
    f.write_all(b"before\n").unwrap();
    f
}

/// ... and, after the plugin's end, writes on, reads back, and syncs: the
/// bytes are in the bucket (s3s-fs's file).
fn pod_goes_on(mut f: std::fs::File, data: &Path) {
    f.write_all(b"after\n").unwrap();
    f.rewind().unwrap();
    let mut back = String::new();
    f.read_to_string(&mut back).unwrap();
    assert_eq!(back, "before\nafter\n");
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(
        std::fs::read(data.join("pvbucket/log.txt")).unwrap(),
        b"before\nafter\n",
        "stored in the bucket"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The body of `GET /metrics` on the plugin's metrics port.
fn scrape(port: u16) -> String {
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// s3s-fs with bucket `pvbucket`, a plugin, and a kubelet's client.
struct Setup {
    work: tempfile::TempDir,
    data: PathBuf,
    port: u16,
    bladefs: PathBuf,
    socket: PathBuf,
    state: PathBuf,
    rt: tokio::runtime::Runtime,
    _store: Killed,
}

fn setup() -> Setup {
    let home = PathBuf::from(std::env::var_os("HOME").unwrap());
    let s3s = binary(
        "BLADEFS_S3S_FS",
        &[
            home.join(".cargo/bin/s3s-fs"),
            "/usr/local/bin/s3s-fs".into(),
        ],
    );
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bladefs = binary(
        "BLADEFS_BIN",
        &[
            here.join("../target/debug/bladefs"),
            here.join("../target/release/bladefs"),
        ],
    );
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    std::fs::create_dir_all(data.join("pvbucket")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = Killed(
        Command::new(s3s)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--access-key",
                "AKPLUGINTEST",
                "--secret-key",
                "plugin-test-secret",
            ])
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("s3s-fs", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let (socket, state) = (work.path().join("csi.sock"), work.path().join("state"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    Setup {
        data,
        port,
        bladefs,
        socket,
        state,
        rt,
        work,
        _store: store,
    }
}

fn publish_request(port: u16, target: &Path) -> NodePublishVolumeRequest {
    NodePublishVolumeRequest {
        volume_id: "pv-1".to_string(),
        target_path: target.to_string_lossy().into_owned(),
        volume_capability: Some(VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume::default())),
            ..Default::default()
        }),
        volume_context: HashMap::from([
            ("bucket".to_string(), "pvbucket".to_string()),
            ("endpoint".to_string(), format!("http://127.0.0.1:{port}")),
        ]),
        secrets: HashMap::from([
            ("access_key_id".to_string(), "AKPLUGINTEST".to_string()),
            (
                "secret_access_key".to_string(),
                "plugin-test-secret".to_string(),
            ),
        ]),
        ..Default::default()
    }
}

fn unpublish_request(target: &Path) -> NodeUnpublishVolumeRequest {
    NodeUnpublishVolumeRequest {
        volume_id: "pv-1".to_string(),
        target_path: target.to_string_lossy().into_owned(),
    }
}

#[test]
fn a_plugin_killed_leaves_its_volumes_working() {
    let Setup {
        work,
        data,
        port,
        bladefs,
        socket,
        state,
        rt,
        _store,
    } = setup();
    let target = work.path().join("pods/p/mount");
    let first = plugin(&socket, &state, &bladefs);
    let mut n = node(&rt, &socket);
    rt.block_on(n.node_publish_volume(publish_request(port, &target)))
        .unwrap();
    assert_eq!(mounted_type(&target).as_deref(), Some("fuse.bladefs"));
    let f = pod_opens(&target);

    drop(n);
    drop(first); // kill -9
    pod_goes_on(f, &data);

    let _second = plugin(&socket, &state, &bladefs);
    let mut n = node(&rt, &socket);
    rt.block_on(n.node_unpublish_volume(unpublish_request(&target)))
        .unwrap();
    assert_eq!(mounted_type(&target), None);
    assert!(
        std::fs::read_dir(&state).unwrap().next().is_none(),
        "no credentials left"
    );
}

/// The bladefs daemon itself dies: the volume fails at once (loudly, not a
/// hang), and unpublish still takes it down.
#[test]
fn a_dead_daemon_fails_loudly_and_is_unpublished() {
    let Setup {
        work,
        port,
        bladefs,
        socket,
        state,
        rt,
        _store,
        ..
    } = setup();
    let target = work.path().join("pods/q/mount");
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let _plugin = plugin_in(
        &socket,
        &state,
        &bladefs,
        None,
        &["--metrics-addr", &metrics_addr],
    );
    let mut n = node(&rt, &socket);
    rt.block_on(n.node_publish_volume(publish_request(port, &target)))
        .unwrap();
    std::fs::write(target.join("f"), b"x").unwrap();
    // The node's one endpoint: the volume's own counters, labelled.
    let labels = format!("volume=\"pv-1\",target=\"{}\"", target.display());
    let text = scrape(metrics_port);
    assert!(
        text.contains(&format!("bladefs_csi_volume_up{{{labels}}} 1")),
        "{text}"
    );
    let puts = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!(
                "bladefs_s3_requests_total{{{labels},op=\"PutObject\"}} "
            ))
        })
        .unwrap_or_else(|| panic!("no PutObject count in {text}"));
    assert!(puts.parse::<f64>().unwrap() >= 1.0, "{puts}");
    assert_eq!(text.matches("# TYPE bladefs_up ").count(), 1);
    assert!(text.ends_with("# EOF\n"));
    let pid = bladefs::mount::daemon_pid(&target).expect("the volume's daemon") as i32;
    // SAFETY: a signal to a process this test started (through the plugin).
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_for("the daemon to die", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit(')').next().unwrap().trim_start().starts_with('Z')
        })
    });
    let started = Instant::now();
    // The kernel aborts the first call that finds the daemon gone
    // (ECONNABORTED), and refuses every later one (ENOTCONN).
    let e = std::fs::read(target.join("f")).unwrap_err();
    assert!(
        [Some(libc::ECONNABORTED), Some(libc::ENOTCONN)].contains(&e.raw_os_error()),
        "{e}"
    );
    let e = std::fs::read(target.join("f")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // A dead daemon is a 0, not missing series.
    let text = scrape(metrics_port);
    assert!(
        text.contains(&format!("bladefs_csi_volume_up{{{labels}}} 0")),
        "{text}"
    );
    rt.block_on(n.node_unpublish_volume(unpublish_request(&target)))
        .unwrap();
    assert_eq!(mounted_type(&target), None);
}

/// Two cgroups in the machine's cgroup v2 tree: one stands for the
/// plugin's container, one for `--daemon-cgroup`. Removed at the end, and
/// whatever is left in them killed.
struct Cgroups {
    root: PathBuf,
}

impl Cgroups {
    fn new(name: &str) -> Cgroups {
        let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mount = table
            .lines()
            .find_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                (right.split(' ').next() == Some("cgroup2")).then(|| left.split(' ').nth(4))?
            })
            .expect("a cgroup v2 file system mounted (this test needs one)");
        let root = Path::new(mount).join(format!("bladefs-csi-{name}-{}", std::process::id()));
        std::fs::create_dir_all(root.join("container")).unwrap();
        std::fs::create_dir_all(root.join("daemons")).unwrap();
        Cgroups { root }
    }

    fn container(&self) -> PathBuf {
        self.root.join("container")
    }

    fn daemons(&self) -> PathBuf {
        self.root.join("daemons")
    }

    fn pids(dir: &Path) -> Vec<u32> {
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect()
    }

    /// What a container runtime does when a container ends.
    fn kill(dir: &Path) {
        std::fs::write(dir.join("cgroup.kill"), "1").unwrap();
        wait_for("the cgroup to empty", || Cgroups::pids(dir).is_empty());
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for dir in [self.container(), self.daemons()] {
            let _ = std::fs::write(dir.join("cgroup.kill"), "1");
            let start = Instant::now();
            while std::fs::remove_dir(&dir).is_err() && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = std::fs::remove_dir(&self.root);
    }
}

/// The end of the plugin's container (a crash, an upgrade, an eviction)
/// kills every process in its cgroup. With `--daemon-cgroup` the volume's
/// daemon is not among them: a pod's open file goes on, and a new plugin
/// unpublishes the volume. Without it, the same end takes the volume down
/// (ENOTCONN): the case the option exists for.
#[test]
fn the_end_of_the_plugin_s_container_spares_daemons_in_their_cgroup() {
    let Setup {
        work,
        data,
        port,
        bladefs,
        socket,
        state,
        rt,
        _store,
    } = setup();
    let cg = Cgroups::new("spared");
    let daemons_dir = cg.daemons().to_string_lossy().into_owned();
    let daemons_arg = ["--daemon-cgroup", daemons_dir.as_str()];
    let target = work.path().join("pods/c/mount");
    let first = plugin_in(
        &socket,
        &state,
        &bladefs,
        Some(&cg.container()),
        &daemons_arg,
    );
    let mut n = node(&rt, &socket);
    rt.block_on(n.node_publish_volume(publish_request(port, &target)))
        .unwrap();
    let daemons = Cgroups::pids(&cg.daemons());
    assert_eq!(
        daemons.len(),
        1,
        "the volume's daemon, in its cgroup: {daemons:?}"
    );
    assert_eq!(Cgroups::pids(&cg.container()), vec![first.0.id()]);
    let f = pod_opens(&target);
    drop(n);

    Cgroups::kill(&cg.container());
    pod_goes_on(f, &data);
    assert_eq!(Cgroups::pids(&cg.daemons()), daemons);

    let second = plugin_in(
        &socket,
        &state,
        &bladefs,
        Some(&cg.container()),
        &daemons_arg,
    );
    let mut n = node(&rt, &socket);
    rt.block_on(n.node_unpublish_volume(unpublish_request(&target)))
        .unwrap();
    assert_eq!(mounted_type(&target), None);
    wait_for("the daemon to end", || {
        Cgroups::pids(&cg.daemons()).is_empty()
    });

    // The same end, with the daemon left in the container's cgroup (one
    // plugin at a time: a new one must not find the old one's socket).
    drop(second);
    let target = work.path().join("pods/d/mount");
    let _third = plugin_in(&socket, &state, &bladefs, Some(&cg.container()), &[]);
    let mut n = node(&rt, &socket);
    rt.block_on(n.node_publish_volume(publish_request(port, &target)))
        .unwrap();
    std::fs::write(target.join("f"), b"x").unwrap();
    drop(n);
    let held = Cgroups::pids(&cg.container());
    assert_eq!(held.len(), 2, "the plugin and the daemon: {held:?}");
    Cgroups::kill(&cg.container());
    let e = std::fs::read(target.join("f")).unwrap_err();
    assert!(
        [Some(libc::ECONNABORTED), Some(libc::ENOTCONN)].contains(&e.raw_os_error()),
        "{e}"
    );
    let _fourth = plugin(&socket, &state, &bladefs);
    let mut n = node(&rt, &socket);
    rt.block_on(n.node_unpublish_volume(unpublish_request(&target)))
        .unwrap();
    assert_eq!(mounted_type(&target), None);
}
