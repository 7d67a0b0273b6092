//! bladefs-csi: the Kubernetes CSI node plugin of bladefs. It serves the
//! CSI Identity and Node services on a unix socket, as kubelet expects of
//! a node plugin, and publishes each volume as a bladefs mount at the
//! pod's target path (static provisioning: the PersistentVolume names the
//! bucket).
//!
//! - `proto`: the CSI v1 messages and services, generated at build time
//! - `options`: a volume's attributes and mount options as a bladefs
//!   command line (an allow-list)
//! - `mounts`: publishing and unpublishing (the daemons, their private
//!   credentials files, the plugin's state directory)
//! - `service`: the gRPC services over the above

pub mod cgroup;
pub mod metrics;
pub mod mounts;
pub mod options;
pub mod service;

#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("csi.v1");
}

/// The driver's name, as `CSIDriver` objects and PersistentVolumes name it.
pub const DRIVER_NAME: &str = "csi.bladefs.io";

use std::path::Path;
use std::sync::Arc;

/// Serves `plugin`'s Identity and Node services on `listener` until
/// `shutdown` completes.
pub async fn serve(
    listener: tokio::net::UnixListener,
    plugin: Arc<service::Plugin>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(proto::identity_server::IdentityServer::from_arc(
            plugin.clone(),
        ))
        .add_service(proto::node_server::NodeServer::from_arc(plugin))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            shutdown,
        )
        .await
}

/// A gRPC channel to a plugin's unix socket, as kubelet opens one.
pub async fn connect(socket: &Path) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let path = socket.to_path_buf();
    // The URI is required by the API and unused: the connector dials the
    // socket.
    tonic::transport::Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
}
