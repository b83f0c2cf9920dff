//! The gRPC connection to containerd: requests in our namespace (and lease), content and
//! image reads, and the choice of snapshotter.

use std::collections::HashMap;
use std::fmt;

use containerd_client::Client;
use containerd_client::services::v1::{
    CreateRequest as CreateLeaseRequest, DeleteRequest as DeleteLeaseRequest, GetImageRequest,
    PluginsRequest, ReadContentRequest,
};
use containerd_client::tonic::{self, Code};

use super::pull::{PulledImage, chain_ids};
use super::registry;
use super::spec::ImageConfig;
use super::{backend, rpc_error, unique_suffix};
use crate::RuntimeError;

/// A connection to containerd in one namespace with one snapshotter.
pub(crate) struct Connection {
    pub(super) client: Client,
    pub(super) namespace: String,
    pub(super) snapshotter: String,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("namespace", &self.namespace)
            .field("snapshotter", &self.snapshotter)
            .finish()
    }
}

impl Connection {
    pub(super) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Ok(ns) = self.namespace.parse() {
            request.metadata_mut().insert("containerd-namespace", ns);
        }
        request
    }

    pub(super) fn leased<T>(&self, message: T, lease: &str) -> tonic::Request<T> {
        let mut request = self.request(message);
        if let Ok(lease) = lease.parse() {
            request.metadata_mut().insert("containerd-lease", lease);
        }
        request
    }

    /// A lease that keeps what a pull writes from the garbage collector until the image record
    /// references it.
    pub(super) async fn create_lease(&self) -> Result<String, String> {
        let id = format!("oakestra-pull-{}", unique_suffix());
        self.client
            .leases()
            .create(self.request(CreateLeaseRequest {
                id: id.clone(),
                labels: HashMap::new(),
            }))
            .await
            .map_err(|s| rpc_error("lease create", &s))?;
        Ok(id)
    }

    pub(super) async fn delete_lease(&self, id: &str) {
        if let Err(s) = self
            .client
            .leases()
            .delete(self.request(DeleteLeaseRequest {
                id: id.to_string(),
                sync: false,
            }))
            .await
        {
            tracing::warn!("containerd: deleting lease {id}: {}", s.message());
        }
    }

    pub(super) async fn read_content(&self, digest: &str) -> Result<Vec<u8>, tonic::Status> {
        let mut stream = self
            .client
            .content()
            .read(self.request(ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            }))
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.message().await? {
            out.extend_from_slice(&chunk.data);
        }
        Ok(out)
    }

    /// The image `name` as stored, if it is complete (record, manifest, config, snapshots).
    pub(super) async fn stored_image(&self, name: &str) -> Result<Option<PulledImage>, String> {
        let image = match self
            .client
            .images()
            .get(self.request(GetImageRequest {
                name: name.to_string(),
            }))
            .await
        {
            Ok(r) => r.into_inner().image,
            Err(s) if s.code() == Code::NotFound => return Ok(None),
            Err(s) => return Err(rpc_error("image get", &s)),
        };
        let Some(target) = image.and_then(|i| i.target) else {
            return Ok(None);
        };
        let manifest = match self.read_content(&target.digest).await {
            Ok(bytes) => bytes,
            Err(s) if s.code() == Code::NotFound => return Ok(None),
            Err(s) => return Err(rpc_error("content read", &s)),
        };
        let Ok(manifest) = serde_json::from_slice::<registry::Manifest>(&manifest) else {
            return Ok(None);
        };
        let config = match self.read_content(&manifest.config.digest).await {
            Ok(bytes) => bytes,
            Err(s) if s.code() == Code::NotFound => return Ok(None),
            Err(s) => return Err(rpc_error("content read", &s)),
        };
        let Ok(config) = serde_json::from_slice::<ImageConfig>(&config) else {
            return Ok(None);
        };
        let Some(top_chain_id) = chain_ids(&config.rootfs.diff_ids).pop() else {
            return Ok(None);
        };
        if !self.has_snapshot(&top_chain_id).await? {
            return Ok(None);
        }
        Ok(Some(PulledImage {
            config,
            top_chain_id,
        }))
    }
}

pub(super) async fn pick_snapshotter(client: &Client) -> Result<String, RuntimeError> {
    let plugins = client
        .introspection()
        .plugins(PluginsRequest {
            filters: vec!["type==io.containerd.snapshotter.v1".into()],
        })
        .await
        .map_err(|s| backend("listing containerd plugins", rpc_error("introspection", &s)))?
        .into_inner()
        .plugins;
    let usable = |id: &str| plugins.iter().any(|p| p.id == id && p.init_err.is_none());
    if usable("overlayfs") {
        Ok("overlayfs".into())
    } else if usable("native") {
        tracing::info!("containerd has no usable overlayfs snapshotter; using native");
        Ok("native".into())
    } else {
        Err(backend(
            "choosing a snapshotter",
            "containerd has neither overlayfs nor native loaded; check its config",
        ))
    }
}
