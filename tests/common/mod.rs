//! Test harness: real third-party S3 servers started on free ports of
//! 127.0.0.1 with their data in temp dirs, stopped when dropped; and a
//! fault-injecting TCP proxy to put in front of them.
//!
//! A missing server binary fails the test with the command that installs
//! it: a test that cannot run must not pass.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bladefs::s3::config::S3Config;
use bladefs::s3::{Credentials, ObjectClient, S3Client};

pub mod mount;
pub mod proxy;
pub mod store;
pub mod writeback;

/// [`on_servers!`] for test bodies that block (mounts driven from the
/// test's own thread).
#[allow(unused_macros)]
macro_rules! on_servers_blocking {
    ($body:ident: $($name:ident => $kind:expr),+ $(,)?) => {
        mod $body {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $name() {
                    super::$body($kind)
                }
            )+
        }
    };
}

/// One test per server for a test body taking the server's kind:
/// `on_servers!(body: moto => Kind::Moto, rgw => Kind::CephRgw);` makes
/// the tests `body::moto` and `body::rgw` (`#[macro_use] mod common;`).
#[allow(unused_macros)]
macro_rules! on_servers {
    ($body:ident: $($name:ident => $kind:expr),+ $(,)?) => {
        mod $body {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$body($kind).await
                }
            )+
        }
    };
}

/// How long a server may take to start listening.
const STARTUP_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Verifies SigV4/SigV2 and Content-MD5; no versioning, no
    /// ListMultipartUploads, ignores If-Match on GET, keys are file paths.
    S3sFs,
    /// Versioning and multipart listing; accepts any signature.
    Moto,
    /// A real store: checks signatures, digests, If-Match; URL-encoded
    /// listings done right; keys are not file paths.
    Garage,
    /// Ceph's RADOS Gateway (one monitor, one in-memory OSD): verifies
    /// SigV2 and SigV4, has versioning, ListObjectVersions, If-Match,
    /// UploadPartCopy with ranges; bucket names of 3 characters or more.
    CephRgw,
}

pub struct Server {
    pub kind: Kind,
    pub endpoint: String,
    pub addr: SocketAddr,
    pub access_key: String,
    pub secret_key: String,
    process: Process,
    _data: tempfile::TempDir,
}

/// What stops a server: its one process, or a Ceph cluster's daemons.
enum Process {
    Child(Child),
    /// The directory `scripts/lib/ceph-rgw` started the cluster in.
    Ceph(PathBuf),
}

impl Drop for Server {
    fn drop(&mut self) {
        match &mut self.process {
            Process::Child(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Process::Ceph(dir) => {
                let _ = Command::new(ceph_rgw_script())
                    .arg("stop")
                    .arg(dir)
                    .status();
            }
        }
    }
}

fn ceph_rgw_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/lib/ceph-rgw")
}

/// A free loopback port outside 6800-7300, where Ceph's OSDs bind.
fn free_port_for_ceph() -> u16 {
    loop {
        let p = free_port();
        if !(6800..=7300).contains(&p) {
            return p;
        }
    }
}

/// Starts a one-node Ceph cluster with radosgw in `dir` (see the script);
/// returns once S3 answers.
fn start_ceph(dir: &std::path::Path, port: u16, key: &str, secret: &str) -> Process {
    let cluster = dir.join("c");
    assert!(
        std::path::Path::new("/usr/bin/radosgw").exists(),
        "radosgw not found: run scripts/install-test-servers"
    );
    let out = Command::new(ceph_rgw_script())
        .arg("start")
        .arg(&cluster)
        .args([&port.to_string(), key, secret])
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/lib/ceph-rgw");
    if !out.status.success() {
        let logs = std::fs::read_dir(cluster.join("log"))
            .map(|d| {
                d.flatten()
                    .map(|e| {
                        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                        let tail: Vec<&str> = text.lines().rev().take(20).collect();
                        format!(
                            "--- {}\n{}",
                            e.path().display(),
                            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default();
        panic!(
            "Ceph RGW did not start: {}{}\n{logs}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Process::Ceph(cluster)
}

/// Where scripts/install-test-servers puts the servers and venvs.
pub fn tools_dir() -> PathBuf {
    std::env::var_os("BLADEFS_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cache/bladefs/tools"))
}

fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
}

fn find_binary(env_var: &str, candidates: &[PathBuf]) -> PathBuf {
    if let Some(p) = std::env::var_os(env_var) {
        return PathBuf::from(p);
    }
    for c in candidates {
        if c.is_file() {
            return c.clone();
        }
    }
    panic!(
        "test server binary not found (looked at ${env_var} and {candidates:?}); run scripts/install-test-servers"
    );
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn wait_listening(addr: SocketAddr, child: &mut Child, what: &str) {
    if let Err(e) = listening(addr, child, what) {
        panic!("{e}");
    }
}

/// Waits until something listens on `addr`, or `child` exits, or the
/// startup deadline passes.
fn listening(addr: SocketAddr, child: &mut Child, what: &str) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "{what} exited before listening on {addr}: {status}"
            ));
        }
        if start.elapsed() >= STARTUP_DEADLINE {
            return Err(format!(
                "{what} did not listen on {addr} within {STARTUP_DEADLINE:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

static SERIAL: AtomicUsize = AtomicUsize::new(0);

/// A key pair unique to this test process, so no test passes on a
/// hard-coded secret.
fn fresh_keys() -> (String, String) {
    let n = SERIAL.fetch_add(1, Ordering::Relaxed);
    let seed = format!("{}-{n}-{:?}", std::process::id(), Instant::now());
    let hex = format!("{:032x}", md5_of(seed.as_bytes()));
    let hex2 = format!("{:032x}", md5_of(hex.as_bytes()));
    // Garage wants GK + 24 hex digits and a 64-digit hex secret.
    (format!("GK{}", &hex[..24]), format!("{hex}{hex2}"))
}

fn md5_of(data: &[u8]) -> u128 {
    use md5::Digest;
    u128::from_be_bytes(md5::Md5::digest(data).into())
}

pub fn start(kind: Kind) -> Server {
    start_with(kind, &[])
}

/// A server started with extra command-line arguments; `{port}` in them
/// stands for the port it listens on.
pub fn start_with(kind: Kind, extra: &[&str]) -> Server {
    let data = tempfile::tempdir().expect("temp dir");
    let (access_key, secret_key) = fresh_keys();
    let (port, process) = match kind {
        Kind::Garage => {
            let (child, port) = start_garage(data.path(), &access_key, &secret_key);
            (port, Process::Child(child))
        }
        Kind::CephRgw => {
            let port = free_port_for_ceph();
            let process = start_ceph(data.path(), port, &access_key, &secret_key);
            (port, process)
        }
        Kind::S3sFs | Kind::Moto => {
            let port = free_port_for_ceph();
            let extra: Vec<String> = extra
                .iter()
                .map(|a| a.replace("{port}", &port.to_string()))
                .collect();
            let child = start_light(kind, data.path(), port, &access_key, &secret_key, &extra);
            (port, Process::Child(child))
        }
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = Server {
        kind,
        endpoint: format!("http://{addr}"),
        addr,
        access_key,
        secret_key,
        process,
        _data: data,
    };
    if kind == Kind::Garage {
        server.wait_ready();
    }
    server
}

/// Starts s3s-fs or moto on `port`, returning once it listens.
fn start_light(
    kind: Kind,
    dir: &std::path::Path,
    port: u16,
    access_key: &str,
    secret_key: &str,
    extra: &[String],
) -> Child {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (mut child, what) = match kind {
        Kind::S3sFs => {
            let bin = find_binary(
                "BLADEFS_S3S_FS",
                &[
                    home().join(".cargo/bin/s3s-fs"),
                    PathBuf::from("/usr/local/bin/s3s-fs"),
                ],
            );
            let child = Command::new(bin)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", access_key, "--secret-key", secret_key])
                .args(extra)
                .arg(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start s3s-fs");
            (child, "s3s-fs")
        }
        Kind::Moto => {
            let bin = find_binary(
                "BLADEFS_MOTO_SERVER",
                &[tools_dir().join("venv/bin/moto_server")],
            );
            let child = Command::new(bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .args(extra)
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start moto_server");
            (child, "moto_server")
        }
        Kind::Garage | Kind::CephRgw => unreachable!("not a light server"),
    };
    wait_listening(addr, &mut child, what);
    child
}

fn garage_bin() -> PathBuf {
    find_binary(
        "BLADEFS_GARAGE",
        &[
            home().join(".cargo/bin/garage"),
            PathBuf::from("/usr/local/bin/garage"),
        ],
    )
}

/// Starts a one-node Garage with its layout applied and our key allowed
/// to create buckets; returns it and its S3 port. Its ports are picked
/// free, but another test's server may take one before Garage binds it
/// (Garage then exits, or never answers its CLI): such a node is stopped
/// and a new one started, in a new directory on new ports, up to three
/// times.
fn start_garage(dir: &std::path::Path, key: &str, secret: &str) -> (Child, u16) {
    let mut attempt = 0;
    loop {
        let node = dir.join(format!("node{attempt}"));
        std::fs::create_dir_all(&node).unwrap();
        let port = free_port_for_ceph();
        let mut child = spawn_garage(&node, port, secret);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let up = listening(addr, &mut child, "garage")
            .and_then(|()| configure_garage(&node, &mut child, key, secret));
        match up {
            Ok(()) => return (child, port),
            Err(why) if attempt < 2 => {
                eprintln!("garage failed to start ({why}); starting another");
                let _ = child.kill();
                let _ = child.wait();
                attempt += 1;
            }
            Err(why) => panic!("garage did not start: {why}"),
        }
    }
}

fn spawn_garage(dir: &std::path::Path, port: u16, secret: &str) -> Child {
    let rpc = free_port();
    let admin = free_port();
    let config = format!(
        "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
         replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
         rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
         [s3_api]\ns3_region = \"us-east-1\"\napi_bind_addr = \"127.0.0.1:{port}\"\n\
         root_domain = \".s3.garage.localhost\"\n\
         [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\nadmin_token = \"{secret}\"\n",
        d = dir.display()
    );
    std::fs::write(dir.join("garage.toml"), config).unwrap();
    Command::new(garage_bin())
        .arg("-c")
        .arg(dir.join("garage.toml"))
        .arg("server")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start garage")
}

/// How long the CLI may fail against a running node before the node is
/// taken for one that will never answer.
const GARAGE_CLI_DEADLINE: Duration = Duration::from_secs(30);

/// Runs the garage CLI against the node in `dir`. Right after the node
/// starts, its RPC may not take connections yet: the command is tried
/// again until it succeeds, the node exits, or the deadline passes.
fn garage_cli(dir: &std::path::Path, child: &mut Child, args: &[&str]) -> Result<String, String> {
    let start = Instant::now();
    loop {
        let out = Command::new(garage_bin())
            .arg("-c")
            .arg(dir.join("garage.toml"))
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run garage");
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let why = || format!("garage {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the node exited ({status}); {}", why()));
        }
        if start.elapsed() >= GARAGE_CLI_DEADLINE {
            return Err(why());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One node holding everything, and our key allowed to create buckets.
fn configure_garage(
    dir: &std::path::Path,
    child: &mut Child,
    key: &str,
    secret: &str,
) -> Result<(), String> {
    let id = garage_cli(dir, child, &["node", "id", "-q"])?;
    let id = id.trim().split('@').next().expect("node id").to_string();
    garage_cli(
        dir,
        child,
        &["layout", "assign", "-z", "dc1", "-c", "1G", &id],
    )?;
    garage_cli(dir, child, &["layout", "apply", "--version", "1"])?;
    garage_cli(
        dir,
        child,
        &["key", "import", "--yes", key, secret, "-n", "test"],
    )?;
    garage_cli(dir, child, &["key", "allow", "--create-bucket", "test"])?;
    Ok(())
}

impl Server {
    /// Waits until the store answers requests (Garage needs a moment after
    /// its layout is applied).
    fn wait_ready(&self) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = self.client();
        let start = Instant::now();
        loop {
            match rt.block_on(client.list_buckets()) {
                Ok(_) => return,
                Err(e) => assert!(
                    start.elapsed() < STARTUP_DEADLINE,
                    "{:?} not ready: {e}",
                    self.kind
                ),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn credentials(&self) -> Credentials {
        Credentials::new(&self.access_key, &self.secret_key)
    }

    /// The client configuration fit for this server: quick retries (tests
    /// must not wait out production backoff), and no URL-encoded listings on
    /// s3s-fs, which echoes `encoding-type=url` but sends keys raw.
    pub fn config(&self) -> S3Config {
        let mut cfg = S3Config::new(&self.endpoint);
        cfg.retry.initial_backoff = Duration::from_millis(5);
        cfg.retry.max_backoff = Duration::from_millis(50);
        cfg.list_url_encoding = self.kind != Kind::S3sFs;
        cfg
    }

    pub fn client(&self) -> Arc<S3Client> {
        self.client_with(self.config())
    }

    pub fn client_with(&self, cfg: S3Config) -> Arc<S3Client> {
        Arc::new(S3Client::new(cfg, self.credentials()).expect("client"))
    }

    /// A client with a fresh bucket of its own.
    pub async fn client_and_bucket(&self, name: &str) -> (Arc<S3Client>, String) {
        let client = self.client();
        client.create_bucket(name).await.expect("create bucket");
        (client, name.to_string())
    }
}

/// A runtime whose own threads drive what it runs (proxies, seeding), so
/// that it keeps serving while the test blocks in file system calls.
pub fn background_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Polls `cond` until it holds; fails the test naming `what` if it has not
/// within 30 s. For conditions no event announces (a process gone, a
/// request reaching a proxy), checked often and bounded in time.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Deterministic test data: `len` bytes that differ with `seed`.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

pub fn md5_hex(data: &[u8]) -> String {
    format!("{:032x}", md5_of(data))
}
