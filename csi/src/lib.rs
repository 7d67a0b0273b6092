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

pub mod mounts;
pub mod options;
pub mod service;

#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("csi.v1");
}

/// The driver's name, as `CSIDriver` objects and PersistentVolumes name it.
pub const DRIVER_NAME: &str = "csi.bladefs.io";
