//! `bladefs-csi --endpoint unix:///csi/csi.sock --node-id NODE`: the CSI
//! node plugin (see the crate's documentation and docs/CONFIGURATION.md,
//! "Kubernetes").

use std::path::PathBuf;
use std::time::Duration;

use bladefs_csi::cgroup::DaemonCgroup;
use bladefs_csi::mounts::Mounter;
use bladefs_csi::service::Plugin;
use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "Kubernetes CSI node plugin: mounts buckets with bladefs"
)]
struct Args {
    /// Where to serve: unix:///PATH (the convention of CSI drivers).
    #[arg(long, env = "CSI_ENDPOINT")]
    endpoint: String,
    /// This node's name, as Kubernetes knows it.
    #[arg(long, env = "NODE_ID")]
    node_id: String,
    /// The bladefs program.
    #[arg(long, default_value = "bladefs")]
    bladefs: PathBuf,
    /// The plugin's own state: each volume's credentials file and log.
    #[arg(long, default_value = "/var/lib/bladefs-csi")]
    state_dir: PathBuf,
    /// How long a mount may take before the publish fails.
    #[arg(long, default_value_t = 60)]
    mount_timeout: u64,
    /// A cgroup v2 directory of the host (its /sys/fs/cgroup mounted into
    /// the container) that bladefs daemons are moved into, so that the end
    /// of this container does not end them. Without it they stay in the
    /// plugin's cgroup, and a restart of its container fails their volumes.
    #[arg(long, env = "BLADEFS_DAEMON_CGROUP")]
    daemon_cgroup: Option<PathBuf>,
    /// Serve every volume's metrics at http://HOST:PORT/metrics, labelled
    /// by volume and target path.
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<std::net::SocketAddr>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BLADEFS_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let path = args
        .endpoint
        .strip_prefix("unix://")
        .ok_or("--endpoint must be unix:///PATH")?;
    let path = PathBuf::from(path);
    // A socket left by an earlier plugin (crash, upgrade) is replaced.
    let _ = std::fs::remove_file(&path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::create_dir_all(&args.state_dir)?;
    // Metrics first: once the socket answers, everything does.
    if let Some(addr) = args.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
        bladefs_csi::metrics::serve(listener, args.state_dir.clone());
    }
    let listener = tokio::net::UnixListener::bind(&path)?;
    let cgroup = args
        .daemon_cgroup
        .as_deref()
        .map(DaemonCgroup::new)
        .transpose()?;
    let mounter = Mounter {
        bladefs: args.bladefs,
        state: args.state_dir,
        timeout: Duration::from_secs(args.mount_timeout),
        cgroup,
    };
    let plugin = std::sync::Arc::new(Plugin::new(args.node_id, mounter));
    tracing::info!(endpoint = %path.display(), driver = bladefs_csi::DRIVER_NAME, "serving");
    bladefs_csi::serve(listener, plugin, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
