//! The worker's side of the overlay network (issue 8): every container instance gets its own
//! network namespace from `oakestra_net`'s data plane before it starts (containerd joins it
//! through [`Overlay::resolver`]), and loses it when it is removed.
//!
//! The data plane comes up once the worker knows its subnet: at start when the saved identity
//! has one (after a restart), else right after the registration that brings it. Coming up
//! reconciles with what the host holds (namespaces of instances that should still run are
//! adopted, everything else of ours is removed), before any instance starts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use oakestra_core::sla::Protocol as SlaProtocol;
use oakestra_core::wire::DeployCommand;
use oakestra_net::dataplane::{
    DataPlane, DataPlaneConfig, DataPlaneError, FakeDataPlane, InstanceKey, LinuxDataPlane, Naming,
    PortForward, Protocol,
};
use oakestra_net::ipam::{Ipv4Subnet, Ipv6Subnet, WorkerSubnets};
use oakestra_runtime::InstanceId;

/// Which data plane the overlay uses once it has a subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaneKind {
    /// The real one (netlink, namespaces, iptables; needs root).
    Linux {
        /// Names of bridge, namespaces, veths and chains.
        naming: Naming,
        /// MTU of bridge and veths.
        mtu: u32,
    },
    /// In memory (tests).
    Fake,
}

/// The overlay of one worker. Share it as `Arc<Overlay>`.
#[derive(Debug)]
pub struct Overlay {
    kind: PlaneKind,
    plane: OnceLock<Arc<dyn DataPlane>>,
    /// Instance id (`job.n`) → namespace path, read synchronously by the runtime.
    paths: Arc<Mutex<HashMap<String, String>>>,
}

/// Does an instance of this virtualization run in a namespace of ours? (Unikernels do not
/// use the overlay yet.)
fn uses_overlay(deploy: &DeployCommand) -> bool {
    matches!(
        deploy.virtualization.to_ascii_lowercase().as_str(),
        "container" | "docker" | "containerd" | ""
    )
}

fn key_of(id: &InstanceId) -> Result<InstanceKey, DataPlaneError> {
    InstanceKey::new(id.job_name.clone(), id.instance)
}

impl Overlay {
    /// An overlay that comes up with [`Overlay::enable`].
    pub fn new(kind: PlaneKind) -> Arc<Self> {
        Arc::new(Self {
            kind,
            plane: OnceLock::new(),
            paths: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    fn paths(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.paths.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the container runtime asks for an instance's namespace.
    pub fn resolver(&self) -> oakestra_runtime::containerd::NetnsResolver {
        let paths = Arc::clone(&self.paths);
        Arc::new(move |id: &InstanceId| {
            paths
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&id.to_string())
                .cloned()
        })
    }

    /// The data plane, once enabled.
    pub fn plane(&self) -> Option<&Arc<dyn DataPlane>> {
        self.plane.get()
    }

    /// Namespace path of an instance, if it has one.
    pub fn netns_of(&self, id: &InstanceId) -> Option<String> {
        self.paths().get(&id.to_string()).cloned()
    }

    /// Brings the data plane up on `subnets` (once; later calls do nothing) and reconciles
    /// with the host: the namespaces of `keep` stay, everything else of ours goes.
    pub async fn enable(
        &self,
        subnet: std::net::Ipv4Addr,
        subnet_v6: std::net::Ipv6Addr,
        keep: &[InstanceId],
    ) -> Result<(), DataPlaneError> {
        if self.plane.get().is_some() {
            return Ok(());
        }
        let subnets = WorkerSubnets {
            ipv4: Ipv4Subnet::new(subnet)?,
            ipv6: Ipv6Subnet::new(subnet_v6)?,
        };
        let plane: Arc<dyn DataPlane> = match &self.kind {
            PlaneKind::Fake => Arc::new(FakeDataPlane::new(subnets)),
            PlaneKind::Linux { naming, mtu } => {
                let mut config = DataPlaneConfig::new(subnets);
                config.naming = naming.clone();
                config.mtu = *mtu;
                Arc::new(LinuxDataPlane::new(config)?)
            }
        };
        plane.setup_host().await?;
        let keep: Vec<InstanceKey> = keep.iter().filter_map(|id| key_of(id).ok()).collect();
        let adopted = plane.reconcile(&keep).await?;
        {
            let mut paths = self.paths();
            for a in &adopted {
                let id = InstanceId::new(a.key.service(), a.key.number());
                paths.insert(id.to_string(), a.netns.display().to_string());
            }
        }
        tracing::info!(
            subnet = %format!("{subnet}/26"),
            adopted = adopted.len(),
            "overlay network up"
        );
        // Another caller may have won the race; its plane is equivalent.
        let _ = self.plane.set(plane);
        Ok(())
    }

    /// Before an instance starts: its namespace, address and port mappings. Nothing to do
    /// when the overlay is not up (no subnet yet) or the instance is not a container.
    pub async fn attach(&self, deploy: &DeployCommand) -> Result<(), String> {
        let Some(plane) = self.plane.get() else {
            return Ok(());
        };
        if !uses_overlay(deploy) {
            return Ok(());
        }
        let id = InstanceId::new(deploy.job_name.clone(), deploy.instance_number);
        let ports: Vec<PortForward> = deploy
            .port_mappings()
            .map_err(|e| format!("port mappings of {id}: {e}"))?
            .into_iter()
            .map(|m| PortForward {
                host: m.host,
                container: m.container,
                protocol: match m.protocol {
                    SlaProtocol::Udp => Protocol::Udp,
                    _ => Protocol::Tcp,
                },
            })
            .collect();
        let key = key_of(&id).map_err(|e| e.to_string())?;
        let attachment = plane
            .attach(&key, &ports)
            .await
            .map_err(|e| format!("network of {id}: {e}"))?;
        tracing::info!(instance = %id, ipv4 = %attachment.ipv4, "instance network ready");
        self.paths()
            .insert(id.to_string(), attachment.netns.display().to_string());
        Ok(())
    }

    /// After an instance was removed: its network goes too.
    pub async fn detach(&self, id: &InstanceId) {
        self.paths().remove(&id.to_string());
        let Some(plane) = self.plane.get() else {
            return;
        };
        let Ok(key) = key_of(id) else {
            return;
        };
        if let Err(e) = plane.detach(&key).await {
            tracing::warn!(instance = %id, "removing its network: {e}");
        }
    }
}

#[async_trait::async_trait]
impl crate::engine::NetworkHook for Overlay {
    async fn before_start(&self, deploy: &DeployCommand) -> Result<(), String> {
        self.attach(deploy).await
    }

    async fn after_remove(&self, id: &InstanceId) {
        self.detach(id).await;
    }
}
