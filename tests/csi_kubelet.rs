//! The CSI node plugin (`csi/`, bladefs-csi) driven as kubelet drives it:
//! gRPC over its unix socket, NodePublishVolume with a target path,
//! attributes, mount options and secrets, then NodeUnpublishVolume. Each
//! publish is a real bladefs mount on a real Ceph RGW (it verifies
//! signatures: a wrong secret is refused for real), read and written with
//! ordinary file calls and checked through the S3 API. The plugin runs
//! in-process here (its library, on a socket of its own), so that a test
//! can stop it and start another while volumes stay published.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bladefs_csi::mounts::Mounter;
use bladefs_csi::proto::identity_client::IdentityClient;
use bladefs_csi::proto::node_client::NodeClient;
use bladefs_csi::proto::volume_capability::{AccessType, MountVolume};
use bladefs_csi::proto::*;
use bladefs_csi::service::Plugin;
use common::Kind;
use common::mount::{daemon_pid, is_mounted};
use common::store::Store;
use tonic::Code;
use tonic::transport::Channel;

/// A plugin serving on `socket` until dropped.
struct Running {
    runtime: Option<tokio::runtime::Runtime>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

fn start_plugin(socket: &Path, state: &Path, timeout: Duration) -> Running {
    let runtime = common::background_runtime();
    let _ = std::fs::remove_file(socket);
    let listener = {
        let _guard = runtime.enter();
        tokio::net::UnixListener::bind(socket).unwrap()
    };
    let plugin = std::sync::Arc::new(Plugin::new(
        "node-1".to_string(),
        Mounter {
            bladefs: PathBuf::from(env!("CARGO_BIN_EXE_bladefs")),
            state: state.to_path_buf(),
            timeout,
            cgroup: None,
        },
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    runtime.spawn(bladefs_csi::serve(listener, plugin, async {
        let _ = stopped.await;
    }));
    Running {
        runtime: Some(runtime),
        stop: Some(stop),
    }
}

/// kubelet's side: a gRPC channel over the plugin's socket.
struct Kubelet {
    rt: tokio::runtime::Runtime,
    channel: Channel,
}

impl Kubelet {
    fn connect(socket: &Path) -> Kubelet {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let channel = rt.block_on(bladefs_csi::connect(socket)).unwrap();
        Kubelet { rt, channel }
    }

    fn publish(&self, r: NodePublishVolumeRequest) -> Result<(), tonic::Status> {
        let mut node = NodeClient::new(self.channel.clone());
        self.rt.block_on(node.node_publish_volume(r)).map(|_| ())
    }

    fn unpublish(&self, volume: &str, target: &Path) -> Result<(), tonic::Status> {
        let mut node = NodeClient::new(self.channel.clone());
        self.rt
            .block_on(node.node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: volume.to_string(),
                target_path: target.to_string_lossy().into_owned(),
            }))
            .map(|_| ())
    }
}

fn request(
    server: &common::Server,
    bucket: &str,
    target: &Path,
    flags: &[&str],
) -> NodePublishVolumeRequest {
    NodePublishVolumeRequest {
        volume_id: format!("pv-{bucket}"),
        target_path: target.to_string_lossy().into_owned(),
        volume_capability: Some(VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume {
                mount_flags: flags.iter().map(|f| f.to_string()).collect(),
                ..Default::default()
            })),
            ..Default::default()
        }),
        volume_context: HashMap::from([
            ("bucket".to_string(), bucket.to_string()),
            ("endpoint".to_string(), server.endpoint.clone()),
        ]),
        secrets: HashMap::from([
            ("access_key_id".to_string(), server.access_key.clone()),
            ("secret_access_key".to_string(), server.secret_key.clone()),
        ]),
        ..Default::default()
    }
}

/// Every process's command line and environment, and the mount table:
/// where a secret must never be.
fn public_places() -> String {
    let mut all = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if e.file_name()
            .to_str()
            .is_some_and(|n| n.parse::<u32>().is_ok())
        {
            for f in ["cmdline", "environ"] {
                if let Ok(b) = std::fs::read(e.path().join(f)) {
                    all.push_str(&String::from_utf8_lossy(&b));
                }
            }
        }
    }
    all
}

fn dir_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

#[test]
fn kubelet_publishes_and_unpublishes_a_bucket() {
    let server = common::start(Kind::CephRgw);
    let store = Store::new(&server, "csivol");
    let work = tempfile::tempdir().unwrap();
    let (socket, state) = (work.path().join("csi.sock"), work.path().join("state"));
    let _plugin = start_plugin(&socket, &state, Duration::from_secs(60));
    let k = Kubelet::connect(&socket);

    let mut identity = IdentityClient::new(k.channel.clone());
    let info =
        k.rt.block_on(identity.get_plugin_info(GetPluginInfoRequest {}))
            .unwrap()
            .into_inner();
    assert_eq!(info.name, bladefs_csi::DRIVER_NAME);
    let probe = k.rt.block_on(identity.probe(ProbeRequest {})).unwrap();
    assert_eq!(probe.into_inner().ready, Some(true));
    let mut node = NodeClient::new(k.channel.clone());
    let id =
        k.rt.block_on(node.node_get_info(NodeGetInfoRequest {}))
            .unwrap();
    assert_eq!(id.into_inner().node_id, "node-1");

    let a = work.path().join("pods/a/volumes/mount");
    let b = work.path().join("pods/b/volumes/mount");
    k.publish(request(&server, "csivol", &a, &["metadata-ttl=0"]))
        .unwrap();
    assert!(is_mounted(&a));
    std::fs::write(a.join("hello.txt"), b"from pod a\n").unwrap();
    assert_eq!(store.get("hello.txt"), b"from pod a\n");
    // kubelet retries: the same publish again is a success.
    k.publish(request(&server, "csivol", &a, &["metadata-ttl=0"]))
        .unwrap();
    // Another volume onto that target is refused, not taken for a retry.
    let mut other = request(&server, "csivol", &a, &[]);
    other.volume_id = "pv-other".to_string();
    let e = k.publish(other).unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("another bladefs volume"), "{e:?}");
    assert!(is_mounted(&a));
    // The same volume in a second pod, whose fsGroup owns its files,
    // with an option the group also sets (given once to bladefs).
    let mut second = request(&server, "csivol", &b, &["allow-other"]);
    if let Some(AccessType::Mount(m)) = second
        .volume_capability
        .as_mut()
        .and_then(|c| c.access_type.as_mut())
    {
        m.volume_mount_group = "2000".to_string();
    }
    k.publish(second).unwrap();
    assert_eq!(std::fs::read(b.join("hello.txt")).unwrap(), b"from pod a\n");
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(b.join("hello.txt")).unwrap();
        assert_eq!(meta.gid(), 2000, "the pod's fsGroup");
        assert_eq!(meta.mode() & 0o777, 0o664);
    }
    let places = public_places();
    assert!(
        !places.contains(&server.secret_key),
        "the secret shows in ps, an environment or the mount table"
    );
    let creds: Vec<PathBuf> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().path().join("credentials"))
        .collect();
    assert_eq!(creds.len(), 2);
    for c in &creds {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(c).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", c.display());
    }

    let daemon = daemon_pid(&a).expect("a's daemon");
    k.unpublish("pv-csivol", &a).unwrap();
    assert!(!is_mounted(&a));
    assert!(!a.exists(), "the target made by the plugin is removed");
    assert!(
        !Path::new(&format!("/proc/{daemon}")).exists()
            || std::fs::read_to_string(format!("/proc/{daemon}/stat")).is_ok_and(|s| s
                .rsplit(')')
                .next()
                .unwrap()
                .trim_start()
                .starts_with('Z')),
        "the daemon ended"
    );
    k.unpublish("pv-csivol", &a).unwrap();
    assert_eq!(std::fs::read(b.join("hello.txt")).unwrap(), b"from pod a\n");
    k.unpublish("pv-csivol", &b).unwrap();
    assert!(!is_mounted(&b));
    assert!(dir_is_empty(&state), "no credentials left");
}

#[test]
fn bad_input_is_refused_with_a_reason_and_leaves_nothing_mounted() {
    let server = common::start(Kind::CephRgw);
    let _store = Store::new(&server, "csibad");
    let work = tempfile::tempdir().unwrap();
    let (socket, state) = (work.path().join("csi.sock"), work.path().join("state"));
    let _plugin = start_plugin(&socket, &state, Duration::from_secs(30));
    let k = Kubelet::connect(&socket);
    let target = work.path().join("pods/x/mount");
    let refused = |r: NodePublishVolumeRequest, code: Code, says: &str| {
        let t = PathBuf::from(&r.target_path);
        let started = Instant::now();
        let e = k.publish(r).expect_err(says);
        assert_eq!(e.code(), code, "{}: {}", says, e.message());
        assert!(
            e.message().contains(says),
            "{:?} does not say {says:?}",
            e.message()
        );
        assert!(started.elapsed() < Duration::from_secs(45));
        assert!(!is_mounted(&t));
        assert!(dir_is_empty(&state), "state left after {says}");
    };
    let mut r = request(&server, "csibad", &target, &[]);
    r.volume_context.remove("bucket");
    refused(r, Code::InvalidArgument, "\"bucket\" is missing");
    refused(
        request(&server, "csibad", &target, &["log-file=/etc/x"]),
        Code::InvalidArgument,
        "not allowed",
    );
    refused(
        request(&server, "csibad", Path::new("relative/mount"), &[]),
        Code::InvalidArgument,
        "must be absolute",
    );
    let full = work.path().join("full");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::write(full.join("f"), b"x").unwrap();
    refused(
        request(&server, "csibad", &full, &[]),
        Code::InvalidArgument,
        "not an empty directory",
    );
    let mut r = request(&server, "csibad", &target, &[]);
    r.secrets
        .insert("secret_access_key".to_string(), "wrong".to_string());
    refused(r, Code::PermissionDenied, "could not mount");
    let mut r = request(&server, "csibad", &target, &[]);
    r.volume_context
        .insert("endpoint".to_string(), "http://127.0.0.1:1".to_string());
    refused(r, Code::Unavailable, "could not mount");
    refused(
        request(&server, "nosuchbucket", &target, &[]),
        Code::NotFound,
        "could not mount",
    );
    assert!(!target.exists(), "a target the plugin made is removed");
}

#[test]
fn published_volumes_outlive_the_plugin() {
    let server = common::start(Kind::CephRgw);
    let store = Store::new(&server, "csilive");
    let work = tempfile::tempdir().unwrap();
    let (socket, state) = (work.path().join("csi.sock"), work.path().join("state"));
    let target = work.path().join("pods/p/mount");
    let plugin = start_plugin(&socket, &state, Duration::from_secs(60));
    let k = Kubelet::connect(&socket);
    k.publish(request(&server, "csilive", &target, &[]))
        .unwrap();
    let mut f = std::fs::File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(target.join("log.txt"))
        .unwrap();
    f.write_all(b"before\n").unwrap();
    drop(k);
    drop(plugin);
    // The plugin is gone; the pod's process goes on with its file.
    f.write_all(b"after\n").unwrap();
    f.rewind().unwrap();
    let mut back = String::new();
    f.read_to_string(&mut back).unwrap();
    assert_eq!(back, "before\nafter\n");
    drop(f);
    assert_eq!(store.get("log.txt"), b"before\nafter\n");
    // A new plugin, knowing nothing of the old one, unpublishes it.
    let _plugin = start_plugin(&socket, &state, Duration::from_secs(60));
    let k = Kubelet::connect(&socket);
    k.unpublish("pv-csilive", &target).unwrap();
    assert!(!is_mounted(&target));
    assert!(dir_is_empty(&state));
}
