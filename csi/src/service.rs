//! The CSI Identity and Node services. Calls that touch mounts run on the
//! blocking pool, one at a time per target path (kubelet may retry a call
//! while the first is still running).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tonic::{Request, Response, Status};

use crate::mounts::{Failure, Mounter};
use crate::options;
use crate::proto::identity_server::Identity;
use crate::proto::node_server::Node;
use crate::proto::volume_capability::AccessType;
use crate::proto::*;

pub struct Plugin {
    pub node_id: String,
    pub mounter: Arc<Mounter>,
    /// Target paths with a call in progress.
    busy: Arc<Mutex<HashSet<PathBuf>>>,
}

impl Plugin {
    pub fn new(node_id: String, mounter: Mounter) -> Self {
        Plugin {
            node_id,
            mounter: Arc::new(mounter),
            busy: Arc::default(),
        }
    }

    /// Runs `f` for `target` on the blocking pool, unless a call for that
    /// target is in progress (then `Aborted`, which kubelet retries).
    async fn exclusive<T: Send + 'static>(
        &self,
        target: PathBuf,
        f: impl FnOnce(&Mounter) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, Status> {
        if !self.busy.lock().expect("busy lock").insert(target.clone()) {
            return Err(Status::aborted(format!(
                "an operation on {} is in progress",
                target.display()
            )));
        }
        // Freed however the call ends, a panic included.
        struct Release(Arc<Mutex<HashSet<PathBuf>>>, PathBuf);
        impl Drop for Release {
            fn drop(&mut self) {
                self.0.lock().expect("busy lock").remove(&self.1);
            }
        }
        let release = Release(self.busy.clone(), target);
        let mounter = self.mounter.clone();
        let out = tokio::task::spawn_blocking(move || {
            let _release = release;
            f(&mounter)
        })
        .await
        .map_err(|e| Status::internal(format!("plugin task failed: {e}")))?;
        out.map_err(status)
    }
}

fn status(f: Failure) -> Status {
    match f {
        Failure::Invalid(m) => Status::invalid_argument(m),
        Failure::Denied(m) => Status::permission_denied(m),
        Failure::NotFound(m) => Status::not_found(m),
        Failure::Unavailable(m) => Status::unavailable(m),
        Failure::Timeout(m) => Status::deadline_exceeded(m),
        Failure::Internal(m) => Status::internal(m),
    }
}

#[tonic::async_trait]
impl Identity for Plugin {
    async fn get_plugin_info(
        &self,
        _: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: crate::DRIVER_NAME.to_string(),
            vendor_version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        // A node plugin only: no controller service.
        Ok(Response::new(GetPluginCapabilitiesResponse::default()))
    }

    async fn probe(&self, _: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        Ok(Response::new(ProbeResponse { ready: Some(true) }))
    }
}

#[tonic::async_trait]
impl Node for Plugin {
    async fn node_stage_volume(
        &self,
        _: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        Err(Status::unimplemented("no STAGE_UNSTAGE_VOLUME capability"))
    }

    async fn node_unstage_volume(
        &self,
        _: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        Err(Status::unimplemented("no STAGE_UNSTAGE_VOLUME capability"))
    }

    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let r = request.into_inner();
        if r.volume_id.is_empty() {
            return Err(Status::invalid_argument("volume_id is missing"));
        }
        if r.target_path.is_empty() {
            return Err(Status::invalid_argument("target_path is missing"));
        }
        let mount = match r.volume_capability.and_then(|c| c.access_type) {
            Some(AccessType::Mount(m)) => m,
            Some(AccessType::Block(_)) => {
                return Err(Status::invalid_argument(
                    "block volumes are not supported: a bucket is a file system",
                ));
            }
            None => return Err(Status::invalid_argument("volume_capability is missing")),
        };
        let group = Some(mount.volume_mount_group.as_str()).filter(|g| !g.is_empty());
        let vol = options::volume(&r.volume_context, &mount.mount_flags, r.readonly, group)
            .map_err(Status::invalid_argument)?;
        let (id, secrets) = (r.volume_id, r.secrets);
        let target = PathBuf::from(r.target_path);
        tracing::info!(volume = %id, target = %target.display(), source = %vol.source, endpoint = %vol.endpoint, "publishing");
        let t = target.clone();
        let out = self
            .exclusive(target, move |m| m.publish(&id, &t, &vol, &secrets))
            .await;
        if let Err(e) = &out {
            tracing::warn!(error = %e.message(), "publish failed");
        }
        out.map(|()| Response::new(NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let r = request.into_inner();
        if r.volume_id.is_empty() || r.target_path.is_empty() {
            return Err(Status::invalid_argument(
                "volume_id and target_path are required",
            ));
        }
        let target = PathBuf::from(r.target_path);
        tracing::info!(volume = %r.volume_id, target = %target.display(), "unpublishing");
        let (id, t) = (r.volume_id, target.clone());
        self.exclusive(target, move |m| m.unpublish(&id, &t))
            .await
            .map(|()| Response::new(NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        _: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        Err(Status::unimplemented("no GET_VOLUME_STATS capability"))
    }

    async fn node_expand_volume(
        &self,
        _: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        Err(Status::unimplemented("no EXPAND_VOLUME capability"))
    }

    async fn node_get_capabilities(
        &self,
        _: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        use node_service_capability::{Rpc, Type, rpc};
        // Kubelet passes the pod's fsGroup as volume_mount_group.
        Ok(Response::new(NodeGetCapabilitiesResponse {
            capabilities: vec![NodeServiceCapability {
                r#type: Some(Type::Rpc(Rpc {
                    r#type: rpc::Type::VolumeMountGroup as i32,
                })),
            }],
        }))
    }

    async fn node_get_info(
        &self,
        _: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.node_id.clone(),
            ..Default::default()
        }))
    }
}
