//! The worker's state on disk: its identity (id, broker, MQTT credentials) and its desired
//! instances with their last status. One JSON file, replaced atomically (write to a temporary
//! file, fsync, rename), so a crash at any point leaves either the old or the new state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oakestra_core::status::DeploymentStatus;
use oakestra_net::ipam::{IpamError, Ipv4Subnet, Ipv6Subnet, WorkerSubnets};
use oakestra_proto::mqtt::DeployCommand;
use oakestra_runtime::InstanceId;
use serde::{Deserialize, Serialize};

/// File name inside the data directory.
pub const STATE_FILE: &str = "node-state.json";

/// What the cluster gave the worker at registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The worker id.
    pub id: String,
    /// `host:port` of the cluster it registered with.
    pub cluster: String,
    /// Broker host.
    pub broker_host: String,
    /// Broker port.
    pub broker_port: u16,
    /// MQTT user name (empty: anonymous).
    #[serde(default)]
    pub mqtt_username: String,
    /// MQTT password.
    #[serde(default)]
    pub mqtt_password: String,
    /// The secret that proves this worker's id when it registers again (empty in state
    /// written by older versions: the MQTT password serves then).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub worker_secret: String,
    /// Base of the worker's overlay IPv4 subnet from the root's IPAM (none: no overlay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<std::net::Ipv4Addr>,
    /// Base of the worker's overlay IPv6 subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_v6: Option<std::net::Ipv6Addr>,
    /// IPv4 prefix length of the subnets (the IPv6 one is this + 94); none: a /26 and a /120
    /// (also what a state file from before subnet sizes means).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_prefix_len: Option<u8>,
}

impl Identity {
    /// The worker's overlay subnets, if it has them and they are valid.
    pub fn subnets(&self) -> Option<Result<WorkerSubnets, IpamError>> {
        let (v4, v6) = (self.subnet?, self.subnet_v6?);
        let len = self
            .subnet_prefix_len
            .unwrap_or(oakestra_net::ipam::WORKER_SUBNET_IPV4_PREFIX_LEN);
        Some((|| {
            Ok(WorkerSubnets {
                ipv4: Ipv4Subnet::with_prefix(v4, len)?,
                ipv6: Ipv6Subnet::with_prefix(v6, oakestra_net::ipam::worker_ipv6_prefix_len(len))?,
            })
        })())
    }
}

/// One instance the worker was asked to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredInstance {
    /// The deploy message as received.
    pub deploy: DeployCommand,
    /// Last status reported (or to report).
    pub status: DeploymentStatus,
    /// Its detail.
    #[serde(default)]
    pub status_detail: String,
    /// Which start of it the runtime runs, once started.
    #[serde(default)]
    pub incarnation: Option<u64>,
    /// A delete is in progress: finish it after a restart.
    #[serde(default)]
    pub deleting: bool,
    /// Restarts the worker made under the `restart_policy` (reported to the cluster).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restart_count: u32,
    /// `DEAD` and waiting for its restart (after a worker restart: restart at once).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restart_pending: bool,
    /// When it last started (drives the back-off; not persisted).
    #[serde(skip)]
    pub started_at: Option<tokio::time::Instant>,
    /// Back-off steps since the last stable run (not persisted).
    #[serde(skip)]
    pub backoff_step: u32,
    /// When its recent restarts happened, for the crash-loop limit (not persisted).
    #[serde(skip)]
    pub recent_restarts: Vec<tokio::time::Instant>,
    /// Its readiness probe's verdict for the current run (none: it has no readiness probe;
    /// not persisted: after a worker restart it proves itself again).
    #[serde(skip)]
    pub ready: Option<bool>,
    /// Why its liveness probe stopped the current run, until the exit is handled.
    #[serde(skip)]
    pub liveness_failure: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl DesiredInstance {
    /// A newly asked-for instance: `CREATING`, never started or restarted.
    pub fn new(deploy: DeployCommand) -> Self {
        Self {
            deploy,
            status: DeploymentStatus::Creating,
            status_detail: String::new(),
            incarnation: None,
            deleting: false,
            restart_count: 0,
            restart_pending: false,
            started_at: None,
            backoff_step: 0,
            recent_restarts: Vec::new(),
            ready: None,
            liveness_failure: None,
        }
    }

    /// A run starts: not ready until its readiness probe passes (if it has one), no liveness
    /// failure yet.
    pub fn begin_run(&mut self) {
        self.ready = self.deploy.readiness_probe.as_ref().map(|_| false);
        self.liveness_failure = None;
    }

    /// The runtime id.
    pub fn id(&self) -> InstanceId {
        InstanceId::new(self.deploy.job_name.clone(), self.deploy.instance_number)
    }

    /// Started or starting, i.e. it should be running.
    pub fn wants_running(&self) -> bool {
        !self.deleting
            && matches!(
                self.status,
                DeploymentStatus::Creating | DeploymentStatus::Created | DeploymentStatus::Running
            )
    }
}

/// The whole persisted state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NodeState {
    /// Set after the first successful registration.
    pub identity: Option<Identity>,
    /// Keyed by task id (`<job_name>.instance.<n>`).
    pub instances: BTreeMap<String, DesiredInstance>,
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// I/O on the file or the directory.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file holds something else.
    #[error(
        "state file {path} is not valid: {source}; move it away to start as a new worker (its instances are then forgotten)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The error.
        source: serde_json::Error,
    },
}

/// Reads and writes [`NodeState`] in a data directory.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    /// Writers take this so a newer snapshot is never replaced by an older one.
    write_lock: tokio::sync::Mutex<()>,
}

impl StateFile {
    /// The state file of `data_dir` (created on first write).
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join(STATE_FILE),
            write_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved state, or an empty one when there is no file yet. A temporary file left by
    /// a crash during a write is ignored (the previous state is complete).
    pub fn load(&self) -> Result<NodeState, StateError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt {
                path: self.path.clone(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NodeState::default()),
            Err(source) => Err(StateError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Replaces the saved state with `snapshot()` taken under the write lock, so concurrent
    /// savers end with the newest state on disk.
    pub async fn save_with(&self, snapshot: impl FnOnce() -> NodeState) -> Result<(), StateError> {
        let _guard = self.write_lock.lock().await;
        let bytes = serde_json::to_vec_pretty(&snapshot()).unwrap_or_default();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|e| StateError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(e),
            })?
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        oakestra_daemon::private::dir(dir).map_err(io)?;
    }
    // It holds the worker's MQTT password: owner only.
    oakestra_daemon::private::write(path, bytes).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(n: u32) -> DeployCommand {
        serde_json::from_value(serde_json::json!({
            "_id": "j", "job_name": "a.b.c.d", "instance_number": n, "image": "busybox",
            "virtualization": "docker"
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn round_trip_and_recovery_from_an_interrupted_write() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path());
        assert_eq!(file.load().unwrap(), NodeState::default());
        let mut state = NodeState {
            identity: Some(Identity {
                id: "w1".into(),
                cluster: "127.0.0.1:10100".into(),
                broker_host: "127.0.0.1".into(),
                broker_port: 10003,
                mqtt_username: "w1".into(),
                mqtt_password: "secret".into(),
                worker_secret: String::new(),
                subnet: Some("10.18.0.64".parse().unwrap()),
                subnet_v6: Some("fc00::100".parse().unwrap()),
                subnet_prefix_len: None,
            }),
            instances: BTreeMap::new(),
        };
        let d = DesiredInstance {
            status: DeploymentStatus::Running,
            incarnation: Some(7),
            restart_count: 2,
            ..DesiredInstance::new(deploy(0))
        };
        state.instances.insert(d.id().to_string(), d);
        let saved = state.clone();
        file.save_with(move || saved).await.unwrap();
        assert_eq!(file.load().unwrap(), state);
        // It holds the worker's MQTT password: owner only.
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        // A crash mid-write leaves a partial temporary file: the state is the previous one.
        std::fs::write(
            dir.path().join("node-state.json.tmp"),
            b"{\"identity\": {\"id",
        )
        .unwrap();
        assert_eq!(file.load().unwrap(), state);

        // A damaged state file is an error that says what to do, not an empty state.
        std::fs::write(file.path(), b"{not json").unwrap();
        let err = file.load().unwrap_err().to_string();
        assert!(err.contains("move it away"), "{err}");
    }

    #[test]
    fn identity_subnets_default_to_a_26_and_carry_a_larger_prefix() {
        // A state file from before subnet sizes: no prefix, a /26 and a /120.
        let old: Identity = serde_json::from_str(
            r#"{"id":"w1","cluster":"c:10100","broker_host":"c","broker_port":10003,
                "subnet":"10.18.0.64","subnet_v6":"fc00::100"}"#,
        )
        .unwrap();
        let subnets = old.subnets().unwrap().unwrap();
        assert_eq!(subnets.ipv4.to_string(), "10.18.0.64/26");
        assert_eq!(subnets.ipv6.to_string(), "fc00::100/120");
        assert!(!serde_json::to_string(&old).unwrap().contains("prefix"));
        let larger = Identity {
            subnet: Some("10.18.1.0".parse().unwrap()),
            subnet_v6: Some("fc00::400".parse().unwrap()),
            subnet_prefix_len: Some(24),
            ..old.clone()
        };
        let json = serde_json::to_string(&larger).unwrap();
        let back: Identity = serde_json::from_str(&json).unwrap();
        let subnets = back.subnets().unwrap().unwrap();
        assert_eq!(subnets.ipv4.to_string(), "10.18.1.0/24");
        assert_eq!(subnets.ipv6.to_string(), "fc00::400/118");
        // A base that is not aligned to the prefix is refused, not silently shrunk.
        let bad = Identity {
            subnet_prefix_len: Some(24),
            ..old.clone()
        };
        assert!(bad.subnets().unwrap().is_err());
        let none = Identity {
            subnet: None,
            ..old
        };
        assert!(none.subnets().is_none());
    }

    #[test]
    fn wants_running() {
        let mut d = DesiredInstance::new(deploy(1));
        assert!(d.wants_running());
        d.status = DeploymentStatus::Dead;
        assert!(!d.wants_running());
        d.status = DeploymentStatus::Running;
        d.deleting = true;
        assert!(!d.wants_running());
    }
}
