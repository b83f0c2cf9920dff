//! Workload runtimes of the worker (DESIGN.md §6): the [`Runtime`] trait the NodeEngine drives,
//! and [`fake::FakeRuntime`], an in-memory implementation for tests and the simulator.
//!
//! Implementations: [`containerd::ContainerdRuntime`] (the containerd daemon, with image pulls
//! done client-side), [`unikernel`] (qemu, KVM when usable), [`RoutingRuntime`] (picks one by
//! the deploy's virtualization) and [`FakeRuntime`]. An instance is created and started from an
//! [`InstanceSpec`] (command, environment, ports, memory and CPU limits, one-shot, privileged,
//! virtualization, platform), stopped with a grace period, deleted, listed (so a restarted
//! worker re-adopts what still runs), and observed through a stream of [`ExitEvent`]s,
//! [`InstanceStats`] and a log tail.
//!
//! Every started instance gets an *incarnation* number, unique within one runtime, that its
//! exit event carries: a worker that deletes and redeploys the same task tells a late exit of
//! the old copy from an exit of the new one.
//!
//! # Example
//!
//! Any runtime is driven the same way; here the in-memory fake:
//!
//! ```
//! use std::time::Duration;
//! use oakestra_runtime::{FakeConfig, FakeRuntime, InstanceId, InstanceSpec, InstanceState, Runtime};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), oakestra_runtime::RuntimeError> {
//! let runtime = FakeRuntime::new(FakeConfig::default())?;
//! let spec = InstanceSpec {
//!     id: InstanceId::new("clientsrvr.test.nginx.test", 0),
//!     image: "registry.lan:5000/nginx:1.27".into(),
//!     virtualization: "docker".into(),
//!     cmd: vec![],
//!     env: vec!["PORT=80".into()],
//!     ports: vec![],
//!     memory_limit_mb: 100,
//!     cpu_limit: 1.0,
//!     storage_mb: 0,
//!     one_shot: false,
//!     privileged: false,
//!     arch: vec![],
//!     platform: None,
//! };
//! runtime.ensure_image(&spec).await?;
//! let incarnation = runtime.start(&spec).await?;
//! let listed = runtime.list().await?;
//! assert_eq!((listed[0].state.clone(), listed[0].incarnation), (InstanceState::Running, incarnation));
//! runtime.stop(&spec.id, Duration::from_secs(10)).await?;
//! runtime.delete(&spec.id).await?;
//! assert!(runtime.list().await?.is_empty());
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod containerd;
pub mod fake;
mod logfile;
pub mod router;
pub mod unikernel;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use oakestra_core::sla::PortMapping;
use oakestra_proto::mqtt::DeployCommand;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

pub use containerd::{ContainerdConfig, ContainerdRuntime};
pub use fake::{FakeConfig, FakeRuntime};
pub use router::RoutingRuntime;
pub use unikernel::{UnikernelConfig, UnikernelRuntime, unikernel_available};

/// Which instance: a job and an instance number. Displayed as the NodeEngine task id
/// `<job_name>.instance.<n>`, which is also the name real runtimes give the container.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InstanceId {
    /// `app.appns.service.servicens`.
    pub job_name: String,
    /// Instance number.
    pub instance: u32,
}

impl InstanceId {
    /// The id of instance `instance` of `job_name`.
    pub fn new(job_name: impl Into<String>, instance: u32) -> Self {
        Self {
            job_name: job_name.into(),
            instance,
        }
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&oakestra_core::naming::task_id(
            &self.job_name,
            self.instance,
        ))
    }
}

/// Everything a runtime needs to create and start one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// Which instance.
    pub id: InstanceId,
    /// Image reference (containers) or kernel URLs (unikernels, one per `arch`).
    pub image: String,
    /// Runtime name from the deploy message: `docker`, `unikernel`, `crosvm`, …
    pub virtualization: String,
    /// Command; empty means the image's own entrypoint.
    pub cmd: Vec<String>,
    /// `KEY=VALUE` entries.
    pub env: Vec<String>,
    /// Published ports.
    pub ports: Vec<PortMapping>,
    /// Memory limit in MB (a cgroup limit in real runtimes); 0 means none.
    pub memory_limit_mb: u64,
    /// CPU limit in cores (a cgroup quota in real runtimes); 0 means none.
    pub cpu_limit: f64,
    /// Disk in MiB (VM root disks); 0 means the runtime's default.
    pub storage_mb: u64,
    /// A one-shot task: exit code 0 means it completed, and it is never restarted.
    pub one_shot: bool,
    /// Extended privileges.
    pub privileged: bool,
    /// Architectures parallel to the kernel URLs of `image` (unikernels).
    pub arch: Vec<String>,
    /// Platform of the image to pull (`linux/arm64`, `linux/arm/v7`), from the SLA's
    /// `platform`; `None` is this worker's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

impl InstanceSpec {
    /// The spec of a deploy message. Fails when the port string is invalid (the cluster
    /// should have rejected it; a worker reports it as the `FAILED` reason).
    pub fn from_deploy(cmd: &DeployCommand) -> Result<Self, RuntimeError> {
        let id = InstanceId::new(cmd.job_name.clone(), cmd.instance_number);
        let ports = cmd.port_mappings().map_err(|e| RuntimeError::InvalidSpec {
            id: id.to_string(),
            reason: format!("port: {e}"),
        })?;
        let platform = cmd
            .platform
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty());
        if let Some(p) = platform {
            containerd::reference::PlatformSpec::parse(p).map_err(|e| {
                RuntimeError::InvalidSpec {
                    id: id.to_string(),
                    reason: format!("platform: {e}"),
                }
            })?;
        }
        Ok(Self {
            id,
            image: cmd.image.clone(),
            virtualization: cmd.virtualization.clone(),
            cmd: cmd.cmd.clone(),
            env: cmd.environment.clone(),
            ports,
            memory_limit_mb: cmd.memory,
            cpu_limit: f64::from(cmd.vcpus),
            storage_mb: cmd.storage,
            one_shot: cmd.one_shot,
            privileged: cmd.privileged,
            arch: cmd.arch.clone(),
            platform: platform.map(str::to_owned),
        })
    }

    /// The value of `KEY` in the environment, if set.
    pub fn env_value(&self, key: &str) -> Option<&str> {
        self.env.iter().find_map(|entry| {
            entry
                .split_once('=')
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| v)
        })
    }
}

/// An instance's task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitEvent {
    /// Which instance.
    pub id: InstanceId,
    /// Which start of it (see [`Runtime::start`]).
    pub incarnation: u64,
    /// Exit code; killed tasks report 128 + signal, as shells do.
    pub exit_code: i32,
}

/// Whether a listed instance still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceState {
    /// The task runs.
    Running,
    /// The task ended with this code; the instance exists until deleted.
    Exited {
        /// Exit code.
        code: i32,
    },
}

/// One instance the runtime knows, as [`Runtime::list`] returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    /// How it was started.
    pub spec: InstanceSpec,
    /// Which start of it.
    pub incarnation: u64,
    /// Running or exited.
    pub state: InstanceState,
}

/// Usage of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct InstanceStats {
    /// CPU use in percent of one core.
    pub cpu_percent: f64,
    /// Memory in use, bytes.
    pub memory_bytes: u64,
    /// Disk in use (writable layer, VM disk), bytes.
    pub disk_bytes: u64,
}

/// Why a runtime operation failed. Each message names the instance or image and the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The image could not be fetched or unpacked.
    #[error("image {image}: {reason}")]
    Image {
        /// The image reference.
        image: String,
        /// What went wrong.
        reason: String,
    },
    /// The instance could not be created or started.
    #[error("cannot start {id}: {reason}")]
    Start {
        /// The task id.
        id: String,
        /// What went wrong.
        reason: String,
    },
    /// The spec cannot be run (bad port string, unsupported option).
    #[error("invalid spec for {id}: {reason}")]
    InvalidSpec {
        /// The task id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// This runtime does not run this virtualization.
    #[error(
        "virtualization {virtualization:?} is not supported by the {runtime} runtime (it runs {supported})"
    )]
    Unsupported {
        /// Requested virtualization.
        virtualization: String,
        /// This runtime.
        runtime: &'static str,
        /// What it runs, comma-separated.
        supported: String,
    },
    /// A start for an instance that already exists.
    #[error("{0} already exists; delete it first")]
    AlreadyExists(String),
    /// No such instance.
    #[error("no instance {0}")]
    NotFound(String),
    /// Talking to the runtime daemon or the file system failed.
    #[error("{what}: {reason}")]
    Backend {
        /// The operation.
        what: String,
        /// What went wrong.
        reason: String,
    },
}

/// A workload runtime. Object-safe (`Arc<dyn Runtime>`); every method may be called
/// concurrently, for different instances.
#[async_trait]
pub trait Runtime: Send + Sync + fmt::Debug {
    /// Short name (`fake`, `containerd`, …) for logs.
    fn name(&self) -> &'static str;

    /// The virtualizations the worker advertises for this runtime (`docker`, `unikernel`, …).
    fn virtualizations(&self) -> Vec<String>;

    /// Makes the image available locally (pull and unpack, or a cache hit).
    async fn ensure_image(&self, spec: &InstanceSpec) -> Result<(), RuntimeError>;

    /// Creates and starts the instance; returns its incarnation once the task runs.
    /// Fails with [`RuntimeError::AlreadyExists`] when the id is taken.
    async fn start(&self, spec: &InstanceSpec) -> Result<u64, RuntimeError>;

    /// Asks the task to stop, killing it after `grace`. Stopping an exited instance is a no-op.
    async fn stop(&self, id: &InstanceId, grace: Duration) -> Result<(), RuntimeError>;

    /// Removes the instance and its resources (stopping it first if needed).
    async fn delete(&self, id: &InstanceId) -> Result<(), RuntimeError>;

    /// A new stream of exit events, from now on. Each call gets every event.
    fn exit_events(&self) -> mpsc::UnboundedReceiver<ExitEvent>;

    /// Current usage of a running instance.
    async fn stats(&self, id: &InstanceId) -> Result<InstanceStats, RuntimeError>;

    /// The last `max_bytes` of the instance's output.
    async fn logs_tail(&self, id: &InstanceId, max_bytes: usize) -> Result<String, RuntimeError>;

    /// Every instance the runtime holds (running or exited), for re-adoption after a restart.
    async fn list(&self) -> Result<Vec<InstanceStatus>, RuntimeError>;

    /// Why incarnation `incarnation` of `id` ended, beyond its exit code, when the runtime
    /// knows: `OOMKilled` when its memory limit killed it. Runtimes that cannot tell say `None`.
    async fn exit_reason(&self, _id: &InstanceId, _incarnation: u64) -> Option<String> {
        None
    }

    /// Runs `argv` inside the running instance (its user, environment and working
    /// directory, no input or output) and returns its exit code; an error when it cannot run
    /// or does not finish within `timeout`. Exec probes use it. Runtimes without a way in
    /// (unikernels) refuse.
    async fn exec(
        &self,
        id: &InstanceId,
        _argv: &[String],
        _timeout: Duration,
    ) -> Result<i32, RuntimeError> {
        Err(RuntimeError::Backend {
            what: format!("exec in {id}"),
            reason: format!(
                "the {} runtime cannot run commands in an instance",
                self.name()
            ),
        })
    }
}

/// The last `max_bytes` of `text`, cut at a character boundary.
pub fn tail(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut start = text.len() - max_bytes;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_id_is_the_node_engine_form() {
        assert_eq!(
            InstanceId::new("a.b.c.d", 3).to_string(),
            "a.b.c.d.instance.3"
        );
    }

    #[test]
    fn tail_cuts_at_char_boundaries() {
        assert_eq!(tail("hello", 10), "hello");
        assert_eq!(tail("hello", 3), "llo");
        assert_eq!(tail("aé", 1), "");
        assert_eq!(tail("aéb", 2), "b");
    }

    #[test]
    fn spec_from_deploy_parses_ports_and_limits() {
        let cmd: DeployCommand = serde_json::from_value(serde_json::json!({
            "_id": "j1", "job_name": "a.b.c.d", "instance_number": 2, "image": "busybox",
            "virtualization": "docker", "port": "8080:80;53/udp", "vcpus": 2, "memory": 100,
            "environment": ["A=1", "B=x=y"], "one_shot": true
        }))
        .unwrap();
        let spec = InstanceSpec::from_deploy(&cmd).unwrap();
        assert_eq!(spec.id, InstanceId::new("a.b.c.d", 2));
        assert_eq!(spec.ports.len(), 2);
        assert_eq!(spec.memory_limit_mb, 100);
        assert_eq!(spec.cpu_limit, 2.0);
        assert!(spec.one_shot);
        assert_eq!(spec.env_value("B"), Some("x=y"));
        assert_eq!(spec.env_value("C"), None);

        assert_eq!(spec.platform, None);
        let mut bad = cmd.clone();
        bad.port = "notaport".into();
        let err = InstanceSpec::from_deploy(&bad).unwrap_err();
        assert!(err.to_string().contains("a.b.c.d.instance.2"), "{err}");

        let mut arm = cmd.clone();
        arm.platform = Some("linux/arm64".into());
        assert_eq!(
            InstanceSpec::from_deploy(&arm).unwrap().platform.as_deref(),
            Some("linux/arm64")
        );
        arm.platform = Some("linux//v7".into());
        let err = InstanceSpec::from_deploy(&arm).unwrap_err();
        assert!(err.to_string().contains("platform"), "{err}");
    }
}
