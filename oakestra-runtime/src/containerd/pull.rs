//! Client-side image pulls into containerd (1.6 has no transfer service): manifest and blobs
//! from the registry into the content store, the image record, and the layers unpacked into
//! snapshots by containerd's diff service.

use std::collections::HashMap;

use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, Image, InfoRequest, UpdateImageRequest, WriteAction,
    WriteContentRequest,
};
use containerd_client::tonic::Code;
use containerd_client::types::Descriptor;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::reference::{ImageRef, PlatformSpec};
use super::registry::{FetchedManifest, Registry, error_chain, sha256_digest};
use super::spec::ImageConfig;
use super::{Connection, rpc_error};

/// Size of one content write message (containerd accepts up to 16 MiB per gRPC message).
const CHUNK: usize = 1 << 20;

/// Chain ids of `diff_ids` per the OCI image spec: chain(0) = diff(0),
/// chain(n) = sha256(chain(n-1) + " " + diff(n)).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match out.last() {
            None => diff.clone(),
            Some(parent) => sha256_digest(format!("{parent} {diff}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// What a pull leaves behind, and what a start needs.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The image configuration.
    pub config: ImageConfig,
    /// The chain id of the top layer: the parent snapshot of a container.
    pub top_chain_id: String,
}

impl Connection {
    /// Whether content `digest` is in the store.
    async fn has_content(&self, digest: &str) -> Result<bool, String> {
        let mut content = self.client.content();
        match content
            .info(self.request(InfoRequest {
                digest: digest.to_string(),
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(rpc_error("content info", &s)),
        }
    }

    /// Writes `data` (already in memory) as content `digest`.
    async fn write_bytes(
        &self,
        lease: &str,
        digest: &str,
        data: Vec<u8>,
        labels: HashMap<String, String>,
    ) -> Result<(), String> {
        let (tx, rx) = mpsc::channel(4);
        let reference = format!("oakestra-{}-{digest}", super::unique_suffix());
        let total = data.len() as i64;
        let writer = self.write_stream(lease, digest, rx);
        let feed = async move {
            let mut offset = 0usize;
            for chunk in data.chunks(CHUNK) {
                let _ = tx
                    .send(write_request(
                        &reference,
                        digest,
                        total,
                        offset,
                        chunk.to_vec(),
                        WriteAction::Write,
                    ))
                    .await;
                offset += chunk.len();
            }
            let mut commit = write_request(
                &reference,
                digest,
                total,
                offset,
                Vec::new(),
                WriteAction::Commit,
            );
            commit.labels = labels;
            let _ = tx.send(commit).await;
            Ok::<(), String>(())
        };
        let (w, f) = tokio::join!(writer, feed);
        f?;
        w
    }

    /// Streams blob `desc` from the registry into the content store.
    async fn write_blob(
        &self,
        registry: &Registry,
        image: &ImageRef,
        lease: &str,
        digest: &str,
        size: i64,
        labels: HashMap<String, String>,
    ) -> Result<(), String> {
        let mut response = registry.blob(image, digest).await?;
        let (tx, rx) = mpsc::channel(4);
        let reference = format!("oakestra-{}-{digest}", super::unique_suffix());
        let writer = self.write_stream(lease, digest, rx);
        let feed = async move {
            let mut offset = 0usize;
            loop {
                let chunk = response.chunk().await.map_err(|e| {
                    format!("downloading blob {digest} of {image}: {}", error_chain(&e))
                })?;
                let Some(chunk) = chunk else { break };
                if tx
                    .send(write_request(
                        &reference,
                        digest,
                        size,
                        offset,
                        chunk.to_vec(),
                        WriteAction::Write,
                    ))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
                offset += chunk.len();
            }
            if offset as i64 != size {
                return Err(format!(
                    "blob {digest} of {image}: got {offset} bytes, the manifest says {size}"
                ));
            }
            let mut commit = write_request(
                &reference,
                digest,
                size,
                offset,
                Vec::new(),
                WriteAction::Commit,
            );
            commit.labels = labels;
            let _ = tx.send(commit).await;
            Ok(())
        };
        let (w, f) = tokio::join!(writer, feed);
        f?;
        w
    }

    async fn write_stream(
        &self,
        lease: &str,
        digest: &str,
        rx: mpsc::Receiver<WriteContentRequest>,
    ) -> Result<(), String> {
        let mut content = self.client.content();
        let request = self.leased(ReceiverStream::new(rx), lease);
        match content.write(request).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(_)) => {}
                        Ok(None) => return Ok(()),
                        Err(s) if s.code() == Code::AlreadyExists => return Ok(()),
                        Err(s) => return Err(rpc_error(&format!("writing {digest}"), &s)),
                    }
                }
            }
            Err(s) if s.code() == Code::AlreadyExists => Ok(()),
            Err(s) => Err(rpc_error(&format!("writing {digest}"), &s)),
        }
    }

    /// Whether snapshot `key` exists.
    pub(crate) async fn has_snapshot(&self, key: &str) -> Result<bool, String> {
        let mut snapshots = self.client.snapshots();
        match snapshots
            .stat(self.request(StatSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: key.to_string(),
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(rpc_error("snapshot stat", &s)),
        }
    }

    /// Pulls `image` into containerd and unpacks it. Idempotent: present content and
    /// snapshots are reused.
    /// Pulls `image` for `platform` and records it as image `record` (the reference itself
    /// for this worker's platform; see `ContainerdRuntime::image`).
    pub(crate) async fn pull(
        &self,
        registry: &Registry,
        image: &ImageRef,
        platform: &PlatformSpec,
        record: &str,
    ) -> Result<PulledImage, String> {
        let fetched = registry.manifest(image, platform).await?;
        let lease = self.create_lease().await?;
        let result = self
            .pull_leased(registry, image, &fetched, &lease, record)
            .await;
        self.delete_lease(&lease).await;
        result
    }

    async fn pull_leased(
        &self,
        registry: &Registry,
        image: &ImageRef,
        fetched: &FetchedManifest,
        lease: &str,
        record: &str,
    ) -> Result<PulledImage, String> {
        let manifest = &fetched.manifest;
        // The configuration first: it names the diff ids, hence the snapshots the image needs.
        let config_bytes =
            {
                let mut response = registry.blob(image, &manifest.config.digest).await?;
                let mut bytes = Vec::new();
                while let Some(chunk) = response.chunk().await.map_err(|e| {
                    format!("downloading the config of {image}: {}", error_chain(&e))
                })? {
                    bytes.extend_from_slice(&chunk);
                }
                bytes
            };
        if sha256_digest(&config_bytes) != manifest.config.digest {
            return Err(format!(
                "config of {image} does not match its digest {}",
                manifest.config.digest
            ));
        }
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| format!("config of {image} is malformed: {e}"))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(format!(
                "{image}: the config lists {} layers, the manifest {}",
                config.rootfs.diff_ids.len(),
                manifest.layers.len()
            ));
        }
        let chains = chain_ids(&config.rootfs.diff_ids);
        let top_chain_id = chains
            .last()
            .cloned()
            .ok_or_else(|| format!("{image} has no layers"))?;

        // Garbage-collection references: image → manifest → config + layers, config → snapshot.
        let mut config_labels = HashMap::new();
        config_labels.insert(
            format!("containerd.io/gc.ref.snapshot.{}", self.snapshotter),
            top_chain_id.clone(),
        );
        if !self.has_content(&manifest.config.digest).await? {
            self.write_bytes(lease, &manifest.config.digest, config_bytes, config_labels)
                .await?;
        }
        for layer in &manifest.layers {
            if !self.has_content(&layer.digest).await? {
                self.write_blob(
                    registry,
                    image,
                    lease,
                    &layer.digest,
                    layer.size,
                    HashMap::new(),
                )
                .await?;
            }
        }
        let mut manifest_labels = HashMap::new();
        manifest_labels.insert(
            "containerd.io/gc.ref.content.config".to_string(),
            manifest.config.digest.clone(),
        );
        for (i, layer) in manifest.layers.iter().enumerate() {
            manifest_labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                layer.digest.clone(),
            );
        }
        if !self.has_content(&fetched.digest).await? {
            self.write_bytes(
                lease,
                &fetched.digest,
                fetched.bytes.clone(),
                manifest_labels,
            )
            .await?;
        }

        // Unpack: one snapshot per layer, named by its chain id.
        let mut parent = String::new();
        for (layer, chain) in manifest.layers.iter().zip(&chains) {
            if !self.has_snapshot(chain).await? {
                self.apply_layer(lease, layer, &parent, chain).await?;
            }
            parent = chain.clone();
        }

        let record = Image {
            name: record.to_string(),
            labels: HashMap::new(),
            target: Some(Descriptor {
                media_type: fetched.media_type.clone(),
                digest: fetched.digest.clone(),
                size: fetched.bytes.len() as i64,
                annotations: HashMap::new(),
            }),
            created_at: None,
            updated_at: None,
        };
        let mut images = self.client.images();
        match images
            .create(self.leased(
                CreateImageRequest {
                    image: Some(record.clone()),
                    source_date_epoch: None,
                },
                lease,
            ))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::AlreadyExists => {
                images
                    .update(self.request(UpdateImageRequest {
                        image: Some(record),
                        update_mask: None,
                        source_date_epoch: None,
                    }))
                    .await
                    .map_err(|s| rpc_error("image update", &s))?;
            }
            Err(s) => return Err(rpc_error("image create", &s)),
        }
        Ok(PulledImage {
            config,
            top_chain_id,
        })
    }

    async fn apply_layer(
        &self,
        lease: &str,
        layer: &super::registry::Descriptor,
        parent: &str,
        chain: &str,
    ) -> Result<(), String> {
        let key = format!("extract-{}-{chain}", super::unique_suffix());
        let mut snapshots = self.client.snapshots();
        let mounts = snapshots
            .prepare(self.leased(
                PrepareSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: key.clone(),
                    parent: parent.to_string(),
                    labels: HashMap::new(),
                },
                lease,
            ))
            .await
            .map_err(|s| {
                rpc_error(
                    &format!("preparing a snapshot for layer {}", layer.digest),
                    &s,
                )
            })?
            .into_inner()
            .mounts;
        let media_type = if layer.media_type.is_empty() {
            "application/vnd.oci.image.layer.v1.tar+gzip".to_string()
        } else {
            layer.media_type.clone()
        };
        let applied = self
            .client
            .diff()
            .apply(self.leased(
                ApplyRequest {
                    diff: Some(Descriptor {
                        media_type,
                        digest: layer.digest.clone(),
                        size: layer.size,
                        annotations: HashMap::new(),
                    }),
                    mounts,
                    payloads: HashMap::new(),
                    sync_fs: false,
                },
                lease,
            ))
            .await;
        if let Err(s) = applied {
            self.remove_snapshot(&key).await;
            return Err(rpc_error(&format!("unpacking layer {}", layer.digest), &s));
        }
        let committed = snapshots
            .commit(self.leased(
                CommitSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    name: chain.to_string(),
                    key: key.clone(),
                    labels: HashMap::new(),
                },
                lease,
            ))
            .await;
        match committed {
            Ok(_) => Ok(()),
            // Another pull of an image sharing this layer committed it first.
            Err(s) if s.code() == Code::AlreadyExists => {
                self.remove_snapshot(&key).await;
                Ok(())
            }
            Err(s) => {
                self.remove_snapshot(&key).await;
                Err(rpc_error(&format!("committing layer {}", layer.digest), &s))
            }
        }
    }

    pub(crate) async fn remove_snapshot(&self, key: &str) {
        let _ = self
            .client
            .snapshots()
            .remove(self.request(RemoveSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: key.to_string(),
            }))
            .await;
    }
}

fn write_request(
    reference: &str,
    digest: &str,
    total: i64,
    offset: usize,
    data: Vec<u8>,
    action: WriteAction,
) -> WriteContentRequest {
    WriteContentRequest {
        action: action as i32,
        r#ref: reference.to_string(),
        total,
        expected: digest.to_string(),
        offset: offset as i64,
        data,
        labels: HashMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_spec() {
        let diffs = vec!["sha256:a".to_string(), "sha256:b".to_string()];
        let chains = chain_ids(&diffs);
        assert_eq!(chains[0], "sha256:a");
        assert_eq!(chains[1], sha256_digest(b"sha256:a sha256:b"));
        assert!(chain_ids(&[]).is_empty());
    }
}
