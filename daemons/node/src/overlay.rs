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

    /// Gives the proxy the RTT of every worker in its table (and of this one): the override of
    /// its host if there is one, else the smoothed measurement, else none (unmeasured).
    fn apply_rtts(&self, proxy: &mut Proxy) {
        let overrides = self
            .rtt_override
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let measured = self.probes.get().map(|p| p.rtts()).unwrap_or_default();
        let mut nodes = proxy.nodes();
        nodes.insert(proxy.local());
        nodes.extend(proxy.rtts().into_keys());
        for node in nodes {
            match overrides
                .get(&node.ip())
                .or_else(|| measured.get(&node))
                .copied()
            {
                Some(rtt) => proxy.set_rtt(node, rtt),
                None => proxy.clear_rtt(node),
            }
        }
    }

    /// Probes every other worker in the table once, then updates the proxy's RTTs (pongs of
    /// this round count from the next one on).
    async fn probe_round(&self) {
        let Some(proxy) = self.proxy.get() else {
            return;
        };
        let (local, nodes) = {
            let p = proxy.lock().unwrap_or_else(|p| p.into_inner());
            (p.local(), p.nodes())
        };
        if let Some(probes) = self.probes.get() {
            for node in nodes.iter().filter(|n| **n != local) {
                probes.ping(*node).await;
            }
            // Workers no longer in the table are forgotten.
            for node in probes.rtts().into_keys() {
                if !nodes.contains(&node) {
                    probes.forget(node);
                }
            }
        }
        self.apply_rtts(&mut proxy.lock().unwrap_or_else(|p| p.into_inner()));
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

    /// Asks the cluster for a service by name or IP (`net/tablequery/request`), once while
    /// the answer is pending (again after [`QUERY_RETRY`] without one).
    pub fn query(&self, request: TableQueryRequest) {
        let key = request.query_key().to_owned();
        let now = tokio::time::Instant::now();
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending
                .get(&key)
                .is_some_and(|asked| now.duration_since(*asked) < QUERY_RETRY)
            {
                return;
            }
            pending.insert(key, now);
        }
        self.publish(NodeTopic::NetTableQueryRequest, request.to_bytes());
    }

    /// Asks again for every service in the table, so that instances that moved or died are
    /// followed (the cluster's answer lists only instances with a live network).
    pub fn refresh(&self) {
        let Some(proxy) = self.proxy.get() else {
            return;
        };
        let names = proxy.lock().unwrap_or_else(|p| p.into_inner()).job_names();
        for name in names {
            self.query(TableQueryRequest {
                wire_version: WireVersion::CURRENT,
                sname: name,
                sip: String::new(),
            });
        }
    }

    /// A table query answer or an update the cluster pushed (`net/tablequery/result`; a worker
    /// that asked about a service, or hosts one of its instances, gets the service's new table
    /// whenever its instances change): the service's instances replace what the proxy had.
    /// When the cluster says a service in the table no longer exists, it leaves the table and
    /// the cluster is told the worker no longer follows it (`net/interest/remove`).
    pub fn on_table_result(&self, result: TableQueryResult) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&result.query_key);
        let Some(proxy) = self.proxy.get() else {
            return;
        };
        let Some(mut routes) = routes_of(&result) else {
            let dropped = {
                let mut proxy = proxy.lock().unwrap_or_else(|p| p.into_inner());
                let known = proxy.service(&result.query_key).is_some();
                if known {
                    proxy.remove_service(&result.query_key);
                }
                known
            };
            if dropped {
                tracing::debug!(service = %result.query_key, "service gone: dropped from the table");
                let remove = InterestRemove {
                    wire_version: WireVersion::CURRENT,
                    appname: result.query_key.clone(),
                };
                self.publish(NodeTopic::NetInterestRemove, remove.to_bytes());
                self.table_changed.notify_waiters();
            }
            return;
        };
        tracing::debug!(service = %routes.job_name, instances = routes.instances.len(), "table entry");
        {
            let mut proxy = proxy.lock().unwrap_or_else(|p| p.into_inner());
            // An update without instances carries no addresses: the service keeps its rr_ip
            // and closest IP, so packets to them are refused rather than asked about again
            // and again.
            if let Some(known) = proxy.service(&routes.job_name) {
                routes.rr_ip = routes.rr_ip.or(known.rr_ip);
                routes.closest_ip = routes.closest_ip.or(known.closest_ip);
                routes.rr_ip_v6 = routes.rr_ip_v6.or(known.rr_ip_v6);
                routes.closest_ip_v6 = routes.closest_ip_v6.or(known.closest_ip_v6);
            }
            proxy.set_service(routes);
            // New workers get their override (or count as unmeasured) before any flow picks.
            self.apply_rtts(&mut proxy);
        }
        self.table_changed.notify_waiters();
    }

    /// The rr_ip and rr_ip_v6 of the first of `names` (job names) the table knows with
    /// either.
    fn rr_ips_of(&self, names: &[String]) -> Option<(Option<Ipv4Addr>, Option<Ipv6Addr>)> {
        let proxy = self.proxy.get()?.lock().unwrap_or_else(|p| p.into_inner());
        names.iter().find_map(|n| {
            let s = proxy.service(n)?;
            (s.rr_ip.is_some() || s.rr_ip_v6.is_some()).then_some((s.rr_ip, s.rr_ip_v6))
        })
    }

    /// The answer to a DNS query: from the table, else after asking the cluster for every
    /// job name the queried name may stand for and waiting up to [`DNS_WAIT`]; REFUSED for a
    /// name that cannot be a service's (not four labels), so a second `nameserver` answers it.
    /// A gets the service's rr_ip, AAAA its rr_ip_v6.
    pub async fn dns_answer(&self, query: &dns::Query) -> dns::Answer {
        if let Some(answer) = dns::unsupported(query) {
            return answer;
        }
        let names = dns::job_names_for(&query.name);
        if names.is_empty() {
            return dns::Answer::Refused;
        }
        let mut found = self.rr_ips_of(&names);
        if found.is_none() {
            for name in &names {
                self.query(TableQueryRequest {
                    wire_version: WireVersion::CURRENT,
                    sname: name.clone(),
                    sip: String::new(),
                });
            }
            found = tokio::time::timeout(DNS_WAIT, async {
                loop {
                    let changed = self.table_changed.notified();
                    tokio::pin!(changed);
                    changed.as_mut().enable();
                    if let Some(ips) = self.rr_ips_of(&names) {
                        return ips;
                    }
                    changed.await;
                }
            })
            .await
            .ok();
        }
        match (found, query.qtype) {
            (Some((Some(ip), _)), dns::TYPE_A) => dns::Answer::A(ip),
            (Some((_, Some(ip))), dns::TYPE_AAAA) => dns::Answer::Aaaa(ip),
            (Some(_), _) => dns::Answer::NoData,
            (None, _) => dns::Answer::NxDomain,
        }
    }

    /// Binds the DNS responder (when one is configured) and answers every query in a task of
    /// its own, so that a slow lookup holds up no other.
    async fn start_dns(&self, bridge: Ipv4Addr) -> std::io::Result<()> {
        let listen = *self.dns_listen.lock().unwrap_or_else(|p| p.into_inner());
        let at = match (listen, &self.kind) {
            (None, _) => return Ok(()),
            (Some(DnsListen::At(at)), _) => at,
            (Some(DnsListen::Bridge(port)), PlaneKind::Linux { .. }) => {
                SocketAddr::from((bridge, port))
            }
            // The fake plane has no bridge to listen on.
            (Some(DnsListen::Bridge(_)), PlaneKind::Fake) => return Ok(()),
        };
        let socket = Arc::new(tokio::net::UdpSocket::bind(at).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("DNS responder on udp {at}: {e}"))
        })?);
        let bound = socket.local_addr()?;
        let _ = self.dns_addr.set(bound);
        tracing::info!(listen = %bound, "overlay DNS responder up");
        let me = self.this.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1500];
            loop {
                let (n, from) = match socket.recv_from(&mut buf).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!("DNS responder: {e}");
                        continue;
                    }
                };
                let Some(overlay) = me.upgrade() else { return };
                let query = match dns::parse_query(&buf[..n]) {
                    Ok(q) => q,
                    Err(e) => {
                        tracing::debug!(%from, "DNS: {e}");
                        if let Some(reply) = dns::format_error(&buf[..n]) {
                            let _ = socket.send_to(&reply, from).await;
                        }
                        continue;
                    }
                };
                let socket = Arc::clone(&socket);
                tokio::spawn(async move {
                    let answer = overlay.dns_answer(&query).await;
                    tracing::debug!(name = %query.name, ?answer, "DNS");
                    let _ = socket.send_to(&dns::response(&query, answer), from).await;
                });
            }
        });
        Ok(())
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
        let tunnel_at = *self.tunnel_at.lock().unwrap_or_else(|p| p.into_inner());
        let local = tunnel_at.map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |(_, a)| a);
        let proxy = Arc::clone(
            self.proxy
                .get_or_init(|| Arc::new(Mutex::new(Proxy::new(local)))),
        );
        if let (PlaneKind::Linux { naming, mtu }, Some((listen, _))) = (&self.kind, tunnel_at) {
            let (misses_tx, mut misses) = tokio::sync::mpsc::unbounded_channel::<IpAddr>();
            let tunnel = oakestra_net::dataplane::tunnel::Tunnel::start(
                oakestra_net::dataplane::tunnel::TunnelConfig {
                    device: format!("{}tun", naming.tag()),
                    listen,
                    mtu: *mtu,
                },
                proxy,
                Some(misses_tx),
            )
            .await?;
            let _ = self.probes.set(tunnel.probes());
            let _ = self.tunnel_stats.set(tunnel.stats());
            *self.tunnel.lock().unwrap_or_else(|p| p.into_inner()) = Some(tunnel);
            // Service IPs the table lacks: ask the cluster; the packet that missed is lost,
            // its retransmission finds the entry (no other traffic waits meanwhile).
            let me = self.this.clone();
            tokio::spawn(async move {
                while let Some(ip) = misses.recv().await {
                    let Some(overlay) = me.upgrade() else {
                        return;
                    };
                    overlay.query(TableQueryRequest {
                        wire_version: WireVersion::CURRENT,
                        sname: String::new(),
                        sip: ip.to_string(),
                    });
                }
            });
        }
        // The cluster pushes changes to the services this worker follows; asking for every
        // entry again now and then repairs a push lost while the broker link was down.
        let me = self.this.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(TABLE_REFRESH);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(overlay) = me.upgrade() else { return };
                overlay.refresh();
            }
        });
        // RTTs for closest IPs: the workers in the table are probed periodically.
        let me = self.this.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(RTT_PROBE_INTERVAL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(overlay) = me.upgrade() else { return };
                overlay.probe_round().await;
            }
        });
        // Another caller may have won the race; its plane is equivalent.
        let _ = self.plane.set(plane);
        if let Err(e) = self.start_dns(subnets.ipv4.bridge()).await {
            tracing::warn!(
                "{e}; instances resolve no service names (free the port or choose another with --dns-port, 0 for none)"
            );
        }
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
            .map_err(|e| format!("port mappings of {id}: {e}"))?;
        let key = key_of(&id).map_err(|e| e.to_string())?;
        let attachment = plane
            .attach(&key, &ports)
            .await
            .map_err(|e| format!("network of {id}: {e}"))?;
        tracing::info!(instance = %id, ipv4 = %attachment.ipv4, "instance network ready");
        if is_guest(deploy) {
            let guest = plane
                .add_guest(&key)
                .await
                .map_err(|e| format!("network of {id}'s virtual machine: {e}"))?;
            self.guests
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(
                    id.to_string(),
                    oakestra_runtime::unikernel::GuestNet {
                        netns: attachment.netns.clone(),
                        tap: guest.tap.clone(),
                        kernel_arg: guest.kernel_arg(),
                    },
                );
        } else {
            self.write_resolv_conf(&id, &attachment.netns);
        }
        self.paths()
            .insert(id.to_string(), attachment.netns.display().to_string());
        // Tell the cluster where the instance is, and load the service's own entries (the
        // proxy needs the sender's instance IP).
        if let Some(endpoint) = self.advertised() {
            let report = ServiceDeployed {
                wire_version: WireVersion::CURRENT,
                appname: deploy.job_name.clone(),
                status: "DEPLOYED".into(),
                instance_number: deploy.instance_number,
                nsip: attachment.ipv4.to_string(),
                nsipv6: attachment.ipv6.to_string(),
                host_port: endpoint.port(),
                host_ip: endpoint.ip().to_string(),
            };
            self.publish(NodeTopic::NetServiceDeployed, report.to_bytes());
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&deploy.job_name);
            self.query(TableQueryRequest {
                wire_version: WireVersion::CURRENT,
                sname: deploy.job_name.clone(),
                sip: String::new(),
            });
        }
        Ok(())
    }

    /// Points the instance's resolver at the DNS responder: `/etc/netns/<namespace>/
    /// resolv.conf`, which the container runtime mounts as the container's
    /// `/etc/resolv.conf` (and `ip netns exec` uses too). Only when the responder listens on
    /// the bridge at port 53, since `resolv.conf` cannot name a port; otherwise the container
    /// keeps the host's file. Removed with the namespace.
    fn write_resolv_conf(&self, id: &InstanceId, netns: &std::path::Path) {
        let Some(at) = self.dns_addr() else { return };
        let (std::net::IpAddr::V4(bridge), 53, PlaneKind::Linux { .. }) =
            (at.ip(), at.port(), &self.kind)
        else {
            return;
        };
        let Some(name) = netns.file_name().and_then(|n| n.to_str()) else {
            return;
        };
        let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let contents = dns::resolv_conf(bridge, &host, &id.to_string());
        match oakestra_net::dataplane::netns::write_resolv_conf(name, &contents) {
            Ok(path) => tracing::debug!(instance = %id, path = %path.display(), "resolv.conf"),
            Err(e) => {
                tracing::warn!(instance = %id, "writing its resolv.conf: {e}; it uses the host's")
            }
        }
    }

    /// After an instance was removed: its network goes too.
    pub async fn detach(&self, id: &InstanceId) {
        self.paths().remove(&id.to_string());
        self.guests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id.to_string());
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

/// The proxy's view of a table query answer: `None` when it names no service. IPv6 addresses
/// (`Address_v6`, `namespace_ip_v6`) are taken where present and valid; an instance without
/// them is reached over IPv4 only.
pub fn routes_of(result: &TableQueryResult) -> Option<ServiceRoutes> {
    let job_name = result.app_name.clone()?;
    let (mut rr_ip, mut closest_ip) = (None, None);
    let (mut rr_ip_v6, mut closest_ip_v6) = (None, None);
    let instances = result
        .instance_list
        .iter()
        .filter_map(|i| {
            let (mut instance_ip, mut instance_ip_v6) = (None, None);
            for a in &i.service_ip {
                let (to, to_v6) = match a.ip_type {
                    IpType::RoundRobin => (&mut rr_ip, &mut rr_ip_v6),
                    IpType::Closest => (&mut closest_ip, &mut closest_ip_v6),
                    IpType::Instance => (&mut instance_ip, &mut instance_ip_v6),
                    IpType::Other(_) => continue,
                };
                *to = a.address.or(*to);
                *to_v6 = a.address_v6.or(*to_v6);
            }
            Some(InstanceRoute {
                number: i.instance_number,
                instance_ip: instance_ip?,
                nsip: i.namespace_ip.parse().ok()?,
                instance_ip_v6,
                nsip_v6: i.namespace_ip_v6.parse().ok(),
                node: SocketAddr::new(i.host_ip.parse().ok()?, i.host_port),
            })
        })
        .collect();
    Some(ServiceRoutes {
        job_name,
        rr_ip,
        closest_ip,
        rr_ip_v6,
        closest_ip_v6,
        instances,
    })
}
