//! Containers and their tasks: look-ups, the image of a spec, start, signals, waits and the
//! clean-up of a failed start.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use containerd_client::services::v1::container::Runtime as ContainerRuntimeInfo;
use containerd_client::services::v1::snapshots::PrepareSnapshotRequest;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, GetContainerRequest, GetRequest, KillRequest, ListContainersRequest,
    StartRequest, WaitRequest,
};
use containerd_client::tonic::Code;
use containerd_client::types::v1::Status as ProcessStatus;

use super::pull::PulledImage;
use super::{
    ContainerdRuntime, EXTENSION_SPEC, ImageRef, LABEL_INCARNATION, LABEL_MANAGED, NetworkSetup,
    PlatformSpec, SPEC_TYPE_URL, Tracked, backend, rpc_error, spec,
};
use crate::logfile::LogFile;
use crate::{InstanceSpec, Runtime, RuntimeError};

impl ContainerdRuntime {
    pub(super) async fn our_containers(&self) -> Result<Vec<Container>, RuntimeError> {
        let conn = self.conn();
        conn.client
            .containers()
            .list(conn.request(ListContainersRequest {
                filters: vec![format!("labels.\"{LABEL_MANAGED}\"==true")],
            }))
            .await
            .map(|r| r.into_inner().containers)
            .map_err(|s| backend("listing containers", rpc_error("container list", &s)))
    }

    pub(super) async fn get_container(&self, id: &str) -> Result<Option<Container>, RuntimeError> {
        let conn = self.conn();
        match conn
            .client
            .containers()
            .get(conn.request(GetContainerRequest { id: id.to_string() }))
            .await
        {
            Ok(r) => Ok(r.into_inner().container),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(backend(
                format!("getting container {id}"),
                rpc_error("container get", &s),
            )),
        }
    }

    /// The task's status and exit code, `None` when there is no task.
    pub(super) async fn task_status(
        &self,
        id: &str,
    ) -> Result<Option<(ProcessStatus, u32)>, RuntimeError> {
        let conn = self.conn();
        match conn
            .client
            .tasks()
            .get(conn.request(GetRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().process.map(|p| {
                (
                    ProcessStatus::try_from(p.status).unwrap_or(ProcessStatus::Unknown),
                    p.exit_status,
                )
            })),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(backend(
                format!("getting task {id}"),
                rpc_error("task get", &s),
            )),
        }
    }

    /// Where the image of `spec` is recorded and cached, and for which platform it is pulled:
    /// the reference for this worker's platform; `<reference>#<platform>` for another one
    /// asked by the SLA's `platform`, so both can be held side by side.
    pub(super) fn image_key(
        &self,
        spec: &InstanceSpec,
    ) -> Result<(ImageRef, PlatformSpec, String), String> {
        let image = ImageRef::parse(&spec.image)?;
        let native = PlatformSpec::linux(&self.inner.arch);
        let platform = match spec.platform.as_deref().map(str::trim) {
            Some(p) if !p.is_empty() => PlatformSpec::parse(p)?,
            _ => native.clone(),
        };
        let name = if platform == native {
            image.to_string()
        } else {
            format!("{image}#{platform}")
        };
        Ok((image, platform, name))
    }

    /// The image of `spec`, pulled when missing; one pull per image at a time.
    pub(super) async fn image(
        &self,
        spec: &InstanceSpec,
    ) -> Result<Arc<PulledImage>, RuntimeError> {
        let image_err = |reason: String| RuntimeError::Image {
            image: spec.image.clone(),
            reason,
        };
        let (image, platform, name) = self.image_key(spec).map_err(image_err)?;
        let lock = {
            let mut state = self.state();
            if let Some(found) = state.images.get(&name) {
                return Ok(found.clone());
            }
            state.pull_locks.entry(name.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        if let Some(found) = self.state().images.get(&name) {
            return Ok(found.clone());
        }
        let fetched = match self.conn().stored_image(&name).await {
            Ok(Some(stored)) => Ok(stored),
            Ok(None) => {
                self.inner.pulls.fetch_add(1, Ordering::SeqCst);
                let started = tokio::time::Instant::now();
                let pulled = self
                    .conn()
                    .pull(&self.inner.registry, &image, &platform, &name)
                    .await;
                if pulled.is_ok() {
                    tracing::info!("pulled {name} in {:?}", started.elapsed());
                }
                pulled
            }
            Err(e) => Err(e),
        };
        let mut state = self.state();
        state.pull_locks.remove(&name);
        let pulled = Arc::new(fetched.map_err(image_err)?);
        state.images.insert(name, pulled.clone());
        Ok(pulled)
    }

    pub(super) fn check_virtualization(&self, spec: &InstanceSpec) -> Result<(), RuntimeError> {
        if self.virtualizations().contains(&spec.virtualization) {
            return Ok(());
        }
        Err(RuntimeError::Unsupported {
            virtualization: spec.virtualization.clone(),
            runtime: "containerd",
            supported: self.virtualizations().join(", "),
        })
    }

    /// Removes what a failed start left behind.
    pub(super) async fn cleanup(&self, id: &str) {
        let conn = self.conn();
        let _ = conn
            .client
            .tasks()
            .kill(conn.request(KillRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal: 9,
                all: true,
            }))
            .await;
        let _ = conn
            .client
            .tasks()
            .delete(conn.request(DeleteTaskRequest {
                container_id: id.to_string(),
            }))
            .await;
        let _ = conn
            .client
            .containers()
            .delete(conn.request(DeleteContainerRequest { id: id.to_string() }))
            .await;
        conn.remove_snapshot(id).await;
        self.state().tracked.remove(id);
    }

    pub(super) async fn kill(&self, id: &str, signal: u32) -> Result<(), RuntimeError> {
        let conn = self.conn();
        match conn
            .client
            .tasks()
            .kill(conn.request(KillRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal,
                all: signal == 9,
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => Ok(()),
            Err(s) => Err(backend(
                format!("signalling {id}"),
                rpc_error("task kill", &s),
            )),
        }
    }

    /// Waits until the task exited, at most `limit`; true when it did.
    pub(super) async fn wait_exit(&self, id: &str, limit: Duration) -> Result<bool, RuntimeError> {
        let conn = self.conn();
        let mut tasks = conn.client.tasks();
        let wait = tasks.wait(conn.request(WaitRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        }));
        match tokio::time::timeout(limit, wait).await {
            Err(_) => Ok(false),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(s)) if s.code() == Code::NotFound => Ok(true),
            Ok(Err(s)) => Err(backend(
                format!("waiting for {id}"),
                rpc_error("task wait", &s),
            )),
        }
    }

    pub(super) async fn start_inner(
        &self,
        spec: &InstanceSpec,
        image: &PulledImage,
        cid: &str,
        incarnation: u64,
    ) -> Result<(), String> {
        let conn = self.conn();
        let network = {
            let state = self.state();
            state
                .netns
                .as_ref()
                .and_then(|resolve| resolve(&spec.id))
                .map(NetworkSetup::Join)
        }
        .unwrap_or_else(|| self.inner.config.default_network.clone());
        let oci = spec::runtime_spec(spec, &image.config, &network, &self.cgroup_path(cid))?;
        let oci = serde_json::to_vec(&oci).map_err(|e| format!("encoding the OCI spec: {e}"))?;
        let spec_json =
            serde_json::to_vec(spec).map_err(|e| format!("encoding the instance spec: {e}"))?;

        // The container record first: it references the snapshot key, so containerd's
        // garbage collector (run after any delete) cannot take the snapshot in between.
        let mut labels = HashMap::new();
        labels.insert(LABEL_MANAGED.to_string(), "true".to_string());
        labels.insert(LABEL_INCARNATION.to_string(), incarnation.to_string());
        let mut extensions = HashMap::new();
        extensions.insert(
            EXTENSION_SPEC.to_string(),
            prost_types::Any {
                type_url: "oakestra.io/InstanceSpec".into(),
                value: spec_json,
            },
        );
        conn.client
            .containers()
            .create(
                conn.request(CreateContainerRequest {
                    container: Some(Container {
                        id: cid.to_string(),
                        labels,
                        image: ImageRef::parse(&spec.image)
                            .map(|r| r.to_string())
                            .unwrap_or_default(),
                        runtime: Some(ContainerRuntimeInfo {
                            name: self.inner.config.runtime.clone(),
                            options: None,
                        }),
                        spec: Some(prost_types::Any {
                            type_url: SPEC_TYPE_URL.into(),
                            value: oci,
                        }),
                        snapshotter: conn.snapshotter.clone(),
                        snapshot_key: cid.to_string(),
                        created_at: None,
                        updated_at: None,
                        extensions,
                        sandbox: String::new(),
                    }),
                }),
            )
            .await
            .map_err(|s| rpc_error("container create", &s))?;

        let prepare = || async {
            conn.client
                .snapshots()
                .prepare(conn.request(PrepareSnapshotRequest {
                    snapshotter: conn.snapshotter.clone(),
                    key: cid.to_string(),
                    parent: image.top_chain_id.clone(),
                    labels: HashMap::new(),
                }))
                .await
        };
        let mounts = match prepare().await {
            Ok(r) => r.into_inner().mounts,
            Err(s) if s.code() == Code::AlreadyExists => {
                // A leftover of an earlier copy that was not cleaned up.
                conn.remove_snapshot(cid).await;
                prepare()
                    .await
                    .map_err(|s| rpc_error("snapshot prepare", &s))?
                    .into_inner()
                    .mounts
            }
            Err(s) => return Err(rpc_error("snapshot prepare", &s)),
        };

        let log = self.log_path(&spec.id);
        tokio::fs::create_dir_all(&self.inner.config.log_dir)
            .await
            .map_err(|e| format!("creating {}: {e}", self.inner.config.log_dir.display()))?;
        let file = LogFile::new(log.clone());
        tokio::task::spawn_blocking(move || file.reset())
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|e| format!("creating {}: {e}", log.display()))?;
        let uri = self.logger_uri(&log);

        self.state().tracked.insert(
            cid.to_string(),
            Tracked {
                id: spec.id.clone(),
                incarnation,
                oom: false,
                exited: false,
            },
        );
        conn.client
            .tasks()
            .create(conn.request(CreateTaskRequest {
                container_id: cid.to_string(),
                rootfs: mounts,
                stdin: String::new(),
                // The shim runs the logger with both streams; it reads only stdout's URI.
                stdout: uri.clone(),
                stderr: uri,
                terminal: false,
                checkpoint: None,
                options: None,
                runtime_path: String::new(),
            }))
            .await
            .map_err(|s| rpc_error("task create", &s))?;
        conn.client
            .tasks()
            .start(conn.request(StartRequest {
                container_id: cid.to_string(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|s| rpc_error("task start", &s))?;
        Ok(())
    }
}
