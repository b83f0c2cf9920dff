//! The real data plane on Linux: links, addresses and routes through netlink (`rtnetlink`),
//! namespaces with `unshare`/`setns`, firewall rules with the `iptables` binary. The kernel is
//! reached only through the seams of [`sys`] (real implementations in `real.rs`, recording
//! fakes in `fake.rs` for the unit tests of this module's decisions).

#[cfg(test)]
mod fake;
pub mod firewall;
mod guest;
pub mod netns;
mod real;
pub mod sys;
#[cfg(test)]
mod tests;
pub mod tun;
pub mod tunnel;

use std::fmt::Display;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use super::{
    Attachment, Bookkeeping, DataPlane, DataPlaneConfig, DataPlaneError, GuestNetwork, InstanceKey,
    Naming, PortForward, ipv4_offset,
};
use crate::ipam::{ContainerAddresses, WorkerSubnets};
use sys::{EEXIST, ENODEV, Netlink, NetlinkAnswer, NetlinkError, Sysctl, System};

fn netlink<E: Display>(what: impl Into<String>) -> impl FnOnce(E) -> DataPlaneError {
    let what = what.into();
    move |e| DataPlaneError::Netlink {
        what,
        reason: e.to_string(),
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DataPlaneError {
    let what = what.into();
    move |source| DataPlaneError::Io { what, source }
}

/// Index of link `name`, if it exists.
async fn link_index(nl: &dyn Netlink, name: &str) -> Result<Option<u32>, DataPlaneError> {
    nl.link_index(name)
        .await
        .map_err(netlink(format!("look up link {name}")))
}

async fn delete_link(nl: &dyn Netlink, name: &str) -> Result<(), DataPlaneError> {
    if let Some(index) = link_index(nl, name).await? {
        match nl.delete_link(index).await {
            Ok(()) => {}
            Err(e) if e.errno == Some(ENODEV) => {}
            Err(e) => return Err(netlink(format!("delete link {name}"))(e)),
        }
    }
    Ok(())
}

/// Adds an address; one that is there already is fine.
async fn add_address(
    nl: &dyn Netlink,
    index: u32,
    address: IpAddr,
    prefix_len: u8,
) -> Result<(), NetlinkError> {
    match nl.add_address(index, address, prefix_len).await {
        Err(e) if e.errno == Some(EEXIST) => Ok(()),
        other => other,
    }
}

/// Writes `value` to `/proc/sys/<key>`.
fn write_sysctl(sysctl: &dyn Sysctl, key: &str, value: &str) -> Result<(), DataPlaneError> {
    sysctl
        .write(key, value)
        .map_err(io(format!("write {value} to /proc/sys/{key}")))
}

/// The link that carries this worker's tunnel, through `nl`: the link holding `local` (the
/// address other workers reach the tunnel at), else the link the route to `toward` (the
/// cluster) leaves through, with that route's own MTU when smaller. `None` when neither is
/// found or the link is the loopback (a worker that reaches everything on this host: no
/// underlay to follow).
pub async fn detect_underlay(
    nl: &dyn Netlink,
    local: Option<IpAddr>,
    toward: Option<IpAddr>,
) -> Result<Option<super::Underlay>, DataPlaneError> {
    let links = nl.links().await.map_err(netlink("list links"))?;
    let mut found = None;
    if let Some(local) = local.filter(|a| !a.is_unspecified()) {
        for (index, _) in &links {
            let addresses = nl
                .addresses(*index)
                .await
                .map_err(netlink(format!("read the addresses of link {index}")))?;
            if addresses.contains(&local) {
                found = Some((*index, None));
                break;
            }
        }
    }
    if found.is_none()
        && let Some(to) = toward
    {
        found = nl
            .route_to(to)
            .await
            .map_err(netlink(format!("look up the route to {to}")))?;
    }
    let Some((index, route_mtu)) = found else {
        return Ok(None);
    };
    let Some(name) = links.iter().find(|(i, _)| *i == index).map(|(_, n)| n) else {
        return Ok(None);
    };
    if name == "lo" {
        return Ok(None);
    }
    let Some(link_mtu) = nl
        .link_mtu(index)
        .await
        .map_err(netlink(format!("read the MTU of {name}")))?
    else {
        return Ok(None);
    };
    let ipv6 = local
        .filter(|a| !a.is_unspecified())
        .or(toward)
        .is_some_and(|a| a.is_ipv6());
    Ok(Some(super::Underlay {
        link: name.clone(),
        mtu: route_mtu.map_or(link_mtu, |r| r.min(link_mtu)),
        ipv6,
    }))
}

/// The real data plane. Create it inside a tokio runtime (its netlink connection runs there).
#[derive(Debug)]
pub struct LinuxDataPlane {
    config: DataPlaneConfig,
    sys: System,
    book: tokio::sync::Mutex<Bookkeeping>,
}

impl LinuxDataPlane {
    /// Opens a netlink connection in the current network namespace.
    pub fn new(config: DataPlaneConfig) -> Result<Self, DataPlaneError> {
        let sys = System::real().map_err(io("open a netlink socket"))?;
        Ok(Self::with_system(config, sys))
    }

    /// The module's `detect_underlay` on the current network namespace's netlink. Inside a tokio
    /// runtime.
    pub async fn detect_underlay(
        local: Option<IpAddr>,
        toward: Option<IpAddr>,
    ) -> Result<Option<super::Underlay>, DataPlaneError> {
        let nl = real::RtNetlink::connect().map_err(io("open a netlink socket"))?;
        detect_underlay(&nl, local, toward).await
    }

    /// A data plane that reaches the kernel through `sys` (fakes in tests).
    pub fn with_system(config: DataPlaneConfig, sys: System) -> Self {
        let book = tokio::sync::Mutex::new(Bookkeeping::new(config.subnets));
        Self { config, sys, book }
    }

    fn nl(&self) -> &dyn Netlink {
        &*self.sys.netlink
    }

    fn fw(&self) -> &dyn sys::Firewall {
        &*self.sys.firewall
    }

    /// The host side of IPv6: forwarding on (between the bridge and the TUN device, and out),
    /// and the ip6tables counterparts of the IPv4 rules.
    ///
    /// Turning forwarding on makes the kernel ignore router advertisements on interfaces with
    /// `accept_ra = 1` (a router does not take them), which would let an autoconfigured default
    /// route of this host expire; such interfaces get `accept_ra = 2` (take them also when
    /// forwarding) first, so the host keeps its IPv6 connectivity.
    async fn setup_host_v6(
        &self,
        bridge: &str,
        subnet: crate::ipam::Ipv6Subnet,
    ) -> Result<(), DataPlaneError> {
        let forwarding = "net/ipv6/conf/all/forwarding";
        if self.sys.sysctl.read(forwarding).as_deref() != Some("1") {
            self.keep_router_advertisements();
            write_sysctl(&*self.sys.sysctl, forwarding, "1")?;
        }
        firewall::setup_v6(self.fw(), self.naming(), bridge, subnet).await
    }

    /// `accept_ra` 1 → 2 on every interface (see [`Self::setup_host_v6`]).
    fn keep_router_advertisements(&self) {
        let sysctl = &*self.sys.sysctl;
        for name in sysctl.list("net/ipv6/conf") {
            if name == "all" || name == "lo" {
                continue;
            }
            let key = format!("net/ipv6/conf/{name}/accept_ra");
            if sysctl.read(&key).as_deref() == Some("1") {
                match sysctl.write(&key, "2") {
                    Ok(()) => tracing::info!(
                        interface = name,
                        "accept_ra 2: keeps taking router advertisements with IPv6 forwarding on"
                    ),
                    Err(e) => tracing::warn!(interface = name, "accept_ra stays 1: {e}"),
                }
            }
        }
    }

    fn naming(&self) -> &Naming {
        &self.config.naming
    }

    fn netns_path(&self, key: &InstanceKey) -> PathBuf {
        netns::path_of(&self.naming().netns(key))
    }

    /// Builds an instance's network; on error the caller removes the pieces.
    async fn build(
        &self,
        key: &InstanceKey,
        addresses: ContainerAddresses,
        ports: &[PortForward],
    ) -> Result<Attachment, DataPlaneError> {
        let nl = self.nl();
        let naming = self.naming();
        let bridge = naming.bridge();
        let bridge_index = link_index(nl, &bridge).await?.ok_or_else(|| {
            DataPlaneError::InvalidConfig(format!(
                "bridge {bridge} does not exist; set up the host network first"
            ))
        })?;
        let offset = ipv4_offset(self.config.subnets.ipv4.base(), addresses.ipv4);
        let host_veth = naming.host_veth(offset);
        let peer_veth = naming.peer_veth(offset);
        // Leftovers of an interrupted attempt with this address.
        delete_link(nl, &host_veth).await?;
        delete_link(nl, &peer_veth).await?;

        let path = self
            .sys
            .namespaces
            .create(&naming.netns(key))
            .await
            .map_err(io(format!(
                "create network namespace {}",
                naming.netns(key)
            )))?;

        nl.add_veth(&host_veth, &peer_veth, self.config.mtu)
            .await
            .map_err(netlink(format!("create veth {host_veth}")))?;
        let peer_index =
            link_index(nl, &peer_veth)
                .await?
                .ok_or_else(|| DataPlaneError::Netlink {
                    what: format!("veth peer {peer_veth}"),
                    reason: "missing right after its creation".into(),
                })?;
        nl.move_to_netns(peer_index, &path)
            .await
            .map_err(netlink(format!("move {peer_veth} into {}", path.display())))?;
        let host_index =
            link_index(nl, &host_veth)
                .await?
                .ok_or_else(|| DataPlaneError::Netlink {
                    what: format!("veth {host_veth}"),
                    reason: "missing right after its creation".into(),
                })?;
        nl.set_up(host_index, None, None, Some(bridge_index))
            .await
            .map_err(netlink(format!("put {host_veth} into {bridge}")))?;

        let subnets = self.config.subnets;
        let mtu = self.config.mtu;
        let peer = peer_veth.clone();
        self.sys
            .namespaces
            .with_netlink(
                &path,
                Box::new(move |nl| {
                    Box::pin(async move {
                        configure_inside(nl, &peer, addresses, subnets, mtu).await?;
                        Ok(NetlinkAnswer::default())
                    })
                }),
            )
            .await
            .map_err(io(format!("enter {}", path.display())))??;

        firewall::add_ports(
            self.fw(),
            naming,
            key,
            addresses.ipv4,
            addresses.ipv6,
            ports,
        )
        .await?;
        Ok(Attachment {
            key: key.clone(),
            netns: path,
            ipv4: addresses.ipv4,
            ipv6: addresses.ipv6,
            host_veth,
            ports: ports.to_vec(),
        })
    }

    /// Removes an instance's rules, veth and namespace (whatever of it exists).
    async fn remove_network(
        &self,
        key: &InstanceKey,
        offset: Option<u16>,
    ) -> Result<(), DataPlaneError> {
        let naming = self.naming();
        firewall::remove_ports(self.fw(), naming, key).await?;
        if let Some(offset) = offset {
            delete_link(self.nl(), &naming.host_veth(offset)).await?;
            delete_link(self.nl(), &naming.peer_veth(offset)).await?;
        }
        let path = self.netns_path(key);
        self.sys
            .namespaces
            .delete(&path)
            .await
            .map_err(io(format!("delete network namespace {}", path.display())))
    }

    /// Host veths and not-yet-moved peers of ours (`<tag>v<n>`, `<tag>p<n>`), with their offset.
    async fn our_links(&self) -> Result<Vec<(String, u16)>, DataPlaneError> {
        let tag = self.naming().tag().to_owned();
        Ok(self
            .nl()
            .links()
            .await
            .map_err(netlink("list links"))?
            .into_iter()
            .filter_map(|(_, name)| {
                let rest = name.strip_prefix(&tag)?;
                let digits = rest.strip_prefix('v').or_else(|| rest.strip_prefix('p'))?;
                let offset = digits.parse().ok()?;
                Some((name, offset))
            })
            .collect())
    }

    /// The IPv4 and IPv6 (not link-local) of `eth0` in the namespace at `path`.
    async fn addresses_inside(
        &self,
        path: &Path,
    ) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), DataPlaneError> {
        let answer = self
            .sys
            .namespaces
            .with_netlink(
                path,
                Box::new(|nl| {
                    Box::pin(async move {
                        let Some(index) = link_index(nl, "eth0").await? else {
                            return Ok(NetlinkAnswer::default());
                        };
                        let addresses = nl
                            .addresses(index)
                            .await
                            .map_err(netlink("list addresses"))?;
                        Ok(NetlinkAnswer { addresses })
                    })
                }),
            )
            .await
            .map_err(io(format!("enter {}", path.display())))??;
        let (mut v4, mut v6) = (None, None);
        for address in answer.addresses {
            match address {
                IpAddr::V4(a) => v4 = Some(a),
                IpAddr::V6(a) if (a.segments()[0] & 0xffc0) != 0xfe80 => v6 = Some(a),
                IpAddr::V6(_) => {}
            }
        }
        Ok((v4, v6))
    }
}

/// Inside the instance's namespace: loopback up, the veth renamed `eth0` with its addresses,
/// default routes through the bridge.
async fn configure_inside(
    nl: &dyn Netlink,
    peer: &str,
    addresses: ContainerAddresses,
    subnets: WorkerSubnets,
    mtu: u32,
) -> Result<(), DataPlaneError> {
    if let Some(lo) = link_index(nl, "lo").await? {
        nl.set_up(lo, None, None, None)
            .await
            .map_err(netlink("set lo up"))?;
    }
    let index = link_index(nl, peer)
        .await?
        .ok_or_else(|| DataPlaneError::Netlink {
            what: format!("veth {peer} in the namespace"),
            reason: "missing after the move".into(),
        })?;
    nl.set_up(index, Some("eth0"), Some(mtu), None)
        .await
        .map_err(netlink(format!("rename {peer} to eth0 and set it up")))?;
    add_address(nl, index, addresses.ipv4.into(), subnets.ipv4.prefix_len())
        .await
        .map_err(netlink(format!("add {} to eth0", addresses.ipv4)))?;
    nl.add_default_route(index, subnets.ipv4.bridge().into())
        .await
        .map_err(netlink(format!(
            "default route via {}",
            subnets.ipv4.bridge()
        )))?;
    // IPv6 is best effort: a host without IPv6 still runs IPv4 instances (Oakestra aborted).
    let v6 = async {
        add_address(nl, index, addresses.ipv6.into(), subnets.ipv6.prefix_len()).await?;
        nl.add_default_route(index, subnets.ipv6.bridge().into())
            .await
    };
    if let Err(e) = v6.await {
        tracing::warn!(address = %addresses.ipv6, "instance runs without IPv6: {e}");
    }
    Ok(())
}

#[async_trait::async_trait]
impl DataPlane for LinuxDataPlane {
    fn subnets(&self) -> WorkerSubnets {
        self.config.subnets
    }

    async fn setup_host(&self) -> Result<(), DataPlaneError> {
        let nl = self.nl();
        let bridge = self.naming().bridge();
        let index = match link_index(nl, &bridge).await? {
            Some(i) => i,
            None => {
                match nl.add_bridge(&bridge, self.config.mtu).await {
                    Err(e) if e.errno != Some(EEXIST) => {
                        return Err(netlink(format!("create bridge {bridge}"))(e));
                    }
                    _ => {}
                }
                link_index(nl, &bridge)
                    .await?
                    .ok_or_else(|| DataPlaneError::Netlink {
                        what: format!("bridge {bridge}"),
                        reason: "missing right after its creation".into(),
                    })?
            }
        };
        let subnets = self.config.subnets;
        add_address(
            nl,
            index,
            subnets.ipv4.bridge().into(),
            subnets.ipv4.prefix_len(),
        )
        .await
        .map_err(netlink(format!(
            "add {} to {bridge}",
            subnets.ipv4.bridge()
        )))?;
        if let Err(e) = add_address(
            nl,
            index,
            subnets.ipv6.bridge().into(),
            subnets.ipv6.prefix_len(),
        )
        .await
        {
            tracing::warn!(bridge, "bridge without IPv6: {e}");
        }
        nl.set_up(index, None, None, None)
            .await
            .map_err(netlink(format!("set {bridge} up")))?;
        write_sysctl(&*self.sys.sysctl, "net/ipv4/ip_forward", "1")?;
        firewall::setup(self.fw(), self.naming(), &bridge, subnets.ipv4).await?;
        // IPv6 is best effort: a host without IPv6 still runs IPv4 instances.
        if let Err(e) = self.setup_host_v6(&bridge, subnets.ipv6).await {
            tracing::warn!(bridge, "IPv6 service traffic not forwarded: {e}");
        }
        Ok(())
    }

    async fn teardown_host(&self) -> Result<(), DataPlaneError> {
        let mut book = self.book.lock().await;
        self.clean(&mut book, &[]).await?;
        firewall::teardown(self.fw(), self.naming()).await?;
        if let Err(e) = firewall::teardown_v6(self.fw(), self.naming()).await {
            tracing::warn!("removing the IPv6 firewall rules: {e}");
        }
        delete_link(self.nl(), &self.naming().bridge()).await?;
        Ok(())
    }

    async fn attach(
        &self,
        key: &InstanceKey,
        ports: &[PortForward],
    ) -> Result<Attachment, DataPlaneError> {
        let mut book = self.book.lock().await;
        if let Some(a) = book.get(key) {
            return Ok(a.clone());
        }
        let addresses = book.plan(key, ports)?;
        match self.build(key, addresses, ports).await {
            Ok(attachment) => {
                tracing::info!(instance = %key, ipv4 = %attachment.ipv4, netns = %attachment.netns.display(), "instance network attached");
                book.record(attachment.clone());
                Ok(attachment)
            }
            Err(e) => {
                let offset = ipv4_offset(self.config.subnets.ipv4.base(), addresses.ipv4);
                if let Err(cleanup) = self.remove_network(key, Some(offset)).await {
                    tracing::warn!(instance = %key, "cleaning up a failed attach: {cleanup}");
                }
                book.unplan(key);
                Err(e)
            }
        }
    }

    async fn detach(&self, key: &InstanceKey) -> Result<(), DataPlaneError> {
        let mut book = self.book.lock().await;
        let offset = match book.get(key) {
            Some(a) => Some(ipv4_offset(self.config.subnets.ipv4.base(), a.ipv4)),
            None => {
                // Not attached by this process: find the address in the namespace, if any.
                let path = self.netns_path(key);
                if self.sys.namespaces.exists(&path) {
                    self.addresses_inside(&path)
                        .await
                        .ok()
                        .and_then(|(v4, _)| v4)
                        .map(|a| ipv4_offset(self.config.subnets.ipv4.base(), a))
                } else {
                    None
                }
            }
        };
        self.remove_network(key, offset).await?;
        book.remove(key);
        tracing::info!(instance = %key, "instance network detached");
        Ok(())
    }

    async fn reconcile(&self, keep: &[InstanceKey]) -> Result<Vec<Attachment>, DataPlaneError> {
        let mut book = self.book.lock().await;
        self.clean(&mut book, keep).await
    }

    fn attachments(&self) -> Vec<Attachment> {
        self.book.try_lock().map(|b| b.all()).unwrap_or_default()
    }

    async fn add_guest(&self, key: &InstanceKey) -> Result<GuestNetwork, DataPlaneError> {
        let path = self.netns_path(key);
        if !self.sys.namespaces.exists(&path) {
            return Err(DataPlaneError::InvalidInstance(format!(
                "{key} has no network namespace to add a guest to"
            )));
        }
        let guest = GuestNetwork::standard();
        self.sys
            .namespaces
            .add_guest(&path, &guest, self.config.mtu)
            .await
            .map_err(io(format!("enter {}", path.display())))??;
        tracing::info!(instance = %key, tap = %guest.tap, guest = %guest.guest, "guest network ready");
        Ok(guest)
    }
}

impl LinuxDataPlane {
    /// Adopts the instances of `keep` found on the host and removes everything else of ours.
    async fn clean(
        &self,
        book: &mut Bookkeeping,
        keep: &[InstanceKey],
    ) -> Result<Vec<Attachment>, DataPlaneError> {
        let naming = self.naming().clone();
        let prefix = naming.netns_prefix();
        let base = self.config.subnets.ipv4.base();
        let rules = firewall::list_ports(self.fw(), &naming).await?;
        let names = self
            .sys
            .namespaces
            .list(&prefix)
            .await
            .map_err(io("list network namespaces"))?;
        let mut adopted: Vec<Attachment> = Vec::new();
        let mut kept_offsets = Vec::new();
        for name in names {
            let Some(key) = name.strip_prefix(&prefix).and_then(InstanceKey::parse) else {
                continue;
            };
            let path = netns::path_of(&name);
            let (v4, v6) = self.addresses_inside(&path).await.unwrap_or((None, None));
            let offset = v4
                .filter(|a| self.config.subnets.ipv4.contains(*a))
                .map(|a| ipv4_offset(base, a));
            if keep.contains(&key) {
                if let Some(a) = book.get(&key) {
                    adopted.push(a.clone());
                    kept_offsets.extend(offset);
                    continue;
                }
                if let (Some(ipv4), Some(ipv6), Some(offset)) = (v4, v6, offset) {
                    let attachment = Attachment {
                        key: key.clone(),
                        netns: path.clone(),
                        ipv4,
                        ipv6,
                        host_veth: naming.host_veth(offset),
                        // Each mapping has an IPv4 rule (and maybe an IPv6 twin).
                        ports: rules
                            .iter()
                            .filter(|r| r.key == key && r.address.is_ipv4())
                            .map(|r| r.port)
                            .collect(),
                    };
                    let veth_there = link_index(self.nl(), &attachment.host_veth)
                        .await?
                        .is_some();
                    if veth_there && book.adopt(attachment.clone()).is_ok() {
                        tracing::info!(instance = %key, ipv4 = %ipv4, "instance network adopted");
                        kept_offsets.push(offset);
                        adopted.push(attachment);
                        continue;
                    }
                }
                tracing::warn!(instance = %key, "instance network incomplete; removing it");
            }
            self.remove_network(&key, offset).await?;
            book.remove(&key);
        }
        // Rules and links that belong to no adopted instance.
        for rule in &rules {
            if !adopted.iter().any(|a| a.key == rule.key) {
                firewall::remove_ports(self.fw(), &naming, &rule.key).await?;
            }
        }
        for (name, offset) in self.our_links().await? {
            if !kept_offsets.contains(&offset) {
                delete_link(self.nl(), &name).await?;
            }
        }
        for a in book.all() {
            if !adopted.iter().any(|b| b.key == a.key) {
                book.remove(&a.key);
            }
        }
        Ok(adopted)
    }
}
