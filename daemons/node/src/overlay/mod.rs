//! The worker's side of the overlay network (issue 8): every container instance gets its own
//! network namespace from `oakestra_net`'s data plane before it starts (containerd joins it
//! through [`Overlay::resolver`]), and loses it when it is removed.
//!
//! The data plane comes up once the worker knows its subnet: at start when the saved identity
//! has one (after a restart), else right after the registration that brings it. Coming up
//! reconciles with what the host holds (namespaces of instances that should still run are
//! adopted, everything else of ours is removed), before any instance starts.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use oakestra_net::dataplane::{
    DataPlane, DataPlaneConfig, DataPlaneError, FakeDataPlane, InstanceKey, LinuxDataPlane, Naming,
    PortForward,
};
use oakestra_net::dns;
use oakestra_net::ipam::{Ipv4Subnet, Ipv6Subnet, WorkerSubnets};
use oakestra_net::proxy::{InstanceRoute, Proxy, ServiceRoutes};
use oakestra_proto::mqtt::{
    DeployCommand, InterestRemove, IpType, NodeTopic, Payload, ServiceDeployed, TableQueryRequest,
    TableQueryResult, WireVersion,
};
use oakestra_runtime::InstanceId;

mod instances;
mod tables;

pub use tables::routes_of;

/// How often every service in the proxy's table is asked for again. Only a safety net: the
/// cluster pushes a service's new table to every interested worker as soon as its instances
/// change (a lost push, e.g. during a broker reconnect, is repaired by this refresh).
pub const TABLE_REFRESH: Duration = Duration::from_secs(30);
/// After how long an unanswered table query is asked again.
pub const QUERY_RETRY: Duration = Duration::from_secs(3);
/// The DNS responder's port on the bridge address.
pub const DEFAULT_DNS_PORT: u16 = 53;
/// How often the tunnel endpoints of the workers in the table are probed for their RTT.
pub const RTT_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long the DNS responder waits for the cluster's answer about a name it does not know
/// before it answers NXDOMAIN.
pub const DNS_WAIT: Duration = Duration::from_secs(1);

/// Where the overlay's DNS responder listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsListen {
    /// On the bridge address (the instances' gateway), this port; needs the real data plane.
    Bridge(u16),
    /// At this address (tests; port 0 picks a free one, see [`Overlay::dns_addr`]).
    At(SocketAddr),
}

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

/// Publishes on this worker's `nodes/<id>/…` topics (the MQTT session; a recorder in tests).
pub trait NetPublisher: Send + Sync + std::fmt::Debug {
    /// Publishes `payload` on `nodes/<this worker>/<topic>`; dropped while disconnected.
    fn publish(&self, topic: NodeTopic, payload: Vec<u8>);
}

/// The overlay of one worker. Share it as `Arc<Overlay>`.
#[derive(Debug)]
pub struct Overlay {
    kind: PlaneKind,
    plane: OnceLock<Arc<dyn DataPlane>>,
    /// Instance id (`job.n`) → namespace path, read synchronously by the runtime.
    paths: Arc<Mutex<HashMap<String, String>>>,
    /// Instance id → the network of its virtual machine (unikernels), read by their runtime.
    guests: Arc<Mutex<HashMap<String, oakestra_runtime::unikernel::GuestNet>>>,
    /// The service-IP proxy's table and flows.
    proxy: OnceLock<Arc<Mutex<Proxy>>>,
    /// `(listen, advertised)` tunnel endpoints; the tunnel starts with the data plane.
    tunnel_at: Mutex<Option<(SocketAddr, SocketAddr)>>,
    tunnel: Mutex<Option<oakestra_net::dataplane::tunnel::Tunnel>>,
    publisher: Mutex<Option<Arc<dyn NetPublisher>>>,
    /// Table queries asked and not answered yet (by query key), with when they were asked.
    pending: Mutex<HashMap<String, tokio::time::Instant>>,
    /// Signalled when a table query answer changed the table (DNS lookups wait on it).
    table_changed: tokio::sync::Notify,
    dns_listen: Mutex<Option<DnsListen>>,
    dns_addr: OnceLock<SocketAddr>,
    /// The host's resolver file: where names that are not services are forwarded.
    host_resolv_conf: Mutex<std::path::PathBuf>,
    /// RTTs that replace the measurements of these hosts (`--rtt-override`).
    rtt_override: Mutex<BTreeMap<IpAddr, Duration>>,
    /// The tunnel's RTT probes, once it runs.
    probes: OnceLock<oakestra_net::dataplane::tunnel::Probes>,
    /// The tunnel's packet counters, once it runs.
    tunnel_stats: OnceLock<oakestra_net::dataplane::tunnel::TunnelStats>,
    this: std::sync::Weak<Overlay>,
}

/// Does an instance of this virtualization run in a namespace of ours?
fn uses_overlay(deploy: &DeployCommand) -> bool {
    matches!(
        deploy.virtualization.to_ascii_lowercase().as_str(),
        "container" | "docker" | "containerd" | "" | "unikernel"
    )
}

/// Is it a virtual machine (a unikernel), which gets a TAP in its namespace?
fn is_guest(deploy: &DeployCommand) -> bool {
    deploy.virtualization.eq_ignore_ascii_case("unikernel")
}

fn key_of(id: &InstanceId) -> Result<InstanceKey, DataPlaneError> {
    InstanceKey::new(id.job_name.clone(), id.instance)
}

impl Overlay {
    /// An overlay that comes up with [`Overlay::enable`].
    pub fn new(kind: PlaneKind) -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            this: this.clone(),
            kind,
            plane: OnceLock::new(),
            paths: Arc::new(Mutex::new(HashMap::new())),
            guests: Arc::new(Mutex::new(HashMap::new())),
            proxy: OnceLock::new(),
            tunnel_at: Mutex::new(None),
            tunnel: Mutex::new(None),
            publisher: Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            table_changed: tokio::sync::Notify::new(),
            dns_listen: Mutex::new(None),
            dns_addr: OnceLock::new(),
            host_resolv_conf: Mutex::new(crate::dns_forward::HOST_RESOLV_CONF.into()),
            rtt_override: Mutex::new(BTreeMap::new()),
            probes: OnceLock::new(),
            tunnel_stats: OnceLock::new(),
        })
    }

    /// RTTs to use instead of measuring, by worker host address (this worker's own address
    /// included: it replaces the 0 its local instances count as). A test and diagnostic hook
    /// (`--rtt-override`), since network emulation is not always at hand.
    pub fn set_rtt_overrides(&self, overrides: BTreeMap<IpAddr, Duration>) {
        *self.rtt_override.lock().unwrap_or_else(|p| p.into_inner()) = overrides;
        if let Some(proxy) = self.proxy.get() {
            self.apply_rtts(&mut proxy.lock().unwrap_or_else(|p| p.into_inner()));
        }
    }

    /// The RTT the proxy uses per tunnel endpoint, and whether it is an override.
    pub fn rtts(&self) -> BTreeMap<SocketAddr, (Duration, bool)> {
        let Some(proxy) = self.proxy.get() else {
            return BTreeMap::new();
        };
        let overrides = self
            .rtt_override
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        proxy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rtts()
            .into_iter()
            .map(|(node, rtt)| (node, (rtt, overrides.contains_key(&node.ip()))))
            .collect()
    }

    /// Where the UDP tunnel listens and the address other workers reach it at (the worker's
    /// `host_ip:port`). Set before [`Overlay::enable`]; without it there is no tunnel.
    pub fn set_tunnel(&self, listen: SocketAddr, advertised: SocketAddr) {
        *self.tunnel_at.lock().unwrap_or_else(|p| p.into_inner()) = Some((listen, advertised));
    }

    /// Where the DNS responder listens; set before [`Overlay::enable`], which starts it.
    /// Without it there is none.
    pub fn set_dns(&self, listen: DnsListen) {
        *self.dns_listen.lock().unwrap_or_else(|p| p.into_inner()) = Some(listen);
    }

    /// The host's resolver file (default `/etc/resolv.conf`): the responder forwards names
    /// that are not services to its `nameserver`s, and instances' files list its reachable
    /// ones after the responder. Before [`Overlay::enable`].
    pub fn set_host_resolv_conf(&self, path: impl Into<std::path::PathBuf>) {
        *self
            .host_resolv_conf
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = path.into();
    }

    fn host_resolv_conf(&self) -> std::path::PathBuf {
        self.host_resolv_conf
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Where the DNS responder is bound, once it is.
    pub fn dns_addr(&self) -> Option<SocketAddr> {
        self.dns_addr.get().copied()
    }

    /// Where network reports and table queries go.
    pub fn set_publisher(&self, publisher: Arc<dyn NetPublisher>) {
        *self.publisher.lock().unwrap_or_else(|p| p.into_inner()) = Some(publisher);
    }

    fn publish(&self, topic: NodeTopic, payload: Vec<u8>) {
        let publisher = self
            .publisher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(p) = publisher {
            p.publish(topic, payload);
        }
    }

    /// The proxy (once the overlay is up).
    pub fn proxy(&self) -> Option<&Arc<Mutex<Proxy>>> {
        self.proxy.get()
    }

    fn advertised(&self) -> Option<SocketAddr> {
        self.tunnel_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|(_, a)| a)
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

    /// What the unikernel runtime asks for an instance's network (namespace, TAP, guest
    /// address).
    pub fn guest_resolver(&self) -> oakestra_runtime::unikernel::GuestNetResolver {
        let guests = Arc::clone(&self.guests);
        Arc::new(move |id: &InstanceId| {
            guests
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
}

#[async_trait::async_trait]
impl crate::engine::NetworkHook for Overlay {
    async fn before_start(&self, deploy: &DeployCommand) -> Result<(), String> {
        self.attach(deploy).await
    }

    async fn after_remove(&self, id: &InstanceId) {
        self.detach(id).await;
    }

    fn instance_address(&self, id: &InstanceId) -> Option<IpAddr> {
        let key = key_of(id).ok()?;
        self.plane
            .get()?
            .attachments()
            .into_iter()
            .find(|a| a.key == key)
            .map(|a| IpAddr::V4(a.ipv4))
    }

    fn metrics(&self) -> String {
        use std::fmt::Write;
        let mut out = String::from(
            "# HELP oakestra_node_overlay_rtt_seconds RTT to each worker's tunnel endpoint used \
             for closest IPs (source: measured, or override from --rtt-override).\n\
             # TYPE oakestra_node_overlay_rtt_seconds gauge\n",
        );
        for (node, (rtt, overridden)) in self.rtts() {
            let source = if overridden { "override" } else { "measured" };
            let _ = writeln!(
                out,
                "oakestra_node_overlay_rtt_seconds{{node=\"{node}\",source=\"{source}\"}} {}",
                rtt.as_secs_f64()
            );
        }
        if let Some(stats) = self.tunnel_stats.get() {
            use oakestra_net::dataplane::tunnel::Carried;
            out.push_str(
                "# HELP oakestra_node_overlay_tunnel_packets_total Packets through the UDP tunnel: \
                 plain (Oakestra's format), frame (with offload metadata) or chunked (a super-packet \
                 in UDP-segmented chunks).\n\
                 # TYPE oakestra_node_overlay_tunnel_packets_total counter\n",
            );
            for (kind, carried) in [
                ("plain", Carried::Plain),
                ("frame", Carried::Frame),
                ("chunked", Carried::Chunked),
            ] {
                for (direction, n) in [
                    ("sent", stats.sent(carried)),
                    ("received", stats.received(carried)),
                ] {
                    let _ = writeln!(
                        out,
                        "oakestra_node_overlay_tunnel_packets_total{{direction=\"{direction}\",kind=\"{kind}\"}} {n}"
                    );
                }
            }
        }
        out
    }
}
