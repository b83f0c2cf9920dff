//! The real data plane on Linux: links, addresses and routes through netlink (`rtnetlink`),
//! namespaces with `unshare`/`setns`, firewall rules with the `iptables` binary.

pub mod firewall;
pub mod netns;
pub mod tun;
pub mod tunnel;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::{
    Attachment, Bookkeeping, DataPlane, DataPlaneConfig, DataPlaneError, GuestNetwork, InstanceKey,
    Naming, PortForward, ipv4_offset,
};
use crate::ipam::{
    ContainerAddresses, WORKER_SUBNET_IPV4_PREFIX_LEN, WORKER_SUBNET_IPV6_PREFIX_LEN, WorkerSubnets,
};

const EEXIST: i32 = 17;
const ENODEV: i32 = 19;
const ENOENT: i32 = 2;

fn errno_of(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

fn netlink(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> DataPlaneError {
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
async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, DataPlaneError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        Err(e) if matches!(errno_of(&e), Some(ENODEV) | Some(ENOENT)) => Ok(None),
        Err(e) => Err(netlink(format!("look up link {name}"))(e)),
    }
}

/// Every link as `(index, name)`.
async fn all_links(handle: &Handle) -> Result<Vec<(u32, String)>, DataPlaneError> {
    let mut links = handle.link().get().execute();
    let mut out = Vec::new();
    while let Some(link) = links.try_next().await.map_err(netlink("list links"))? {
        let name = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        });
        if let Some(name) = name {
            out.push((link.header.index, name));
        }
    }
    Ok(out)
}

async fn delete_link(handle: &Handle, name: &str) -> Result<(), DataPlaneError> {
    if let Some(index) = link_index(handle, name).await? {
        match handle.link().del(index).execute().await {
            Ok(()) => {}
            Err(e) if matches!(errno_of(&e), Some(ENODEV)) => {}
            Err(e) => return Err(netlink(format!("delete link {name}"))(e)),
        }
    }
    Ok(())
}

async fn add_address(
    handle: &Handle,
    index: u32,
    address: IpAddr,
    prefix_len: u8,
) -> Result<(), rtnetlink::Error> {
    let mut request = handle.address().add(index, address, prefix_len);
    if address.is_ipv6() {
        // No duplicate address detection: the address is ours by construction, and a
        // tentative address could not be used for the first seconds.
        request
            .message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    match request.execute().await {
        Err(e) if errno_of(&e) == Some(EEXIST) => Ok(()),
        other => other,
    }
}

fn write_sysctl(path: &str, value: &str) -> Result<(), DataPlaneError> {
    std::fs::write(path, value).map_err(io(format!("write {value} to {path}")))
}

/// The host side of IPv6: forwarding on (between the bridge and the TUN device, and out), and
/// the ip6tables counterparts of the IPv4 rules.
///
/// Turning forwarding on makes the kernel ignore router advertisements on interfaces with
/// `accept_ra = 1` (a router does not take them), which would let an autoconfigured default
/// route of this host expire; such interfaces get `accept_ra = 2` (take them also when
/// forwarding) first, so the host keeps its IPv6 connectivity.
async fn setup_host_v6(
    naming: &Naming,
    bridge: &str,
    subnet: crate::ipam::Ipv6Subnet,
) -> Result<(), DataPlaneError> {
    let forwarding = "/proc/sys/net/ipv6/conf/all/forwarding";
    if !std::fs::read_to_string(forwarding).is_ok_and(|v| v.trim() == "1") {
        keep_router_advertisements();
        write_sysctl(forwarding, "1")?;
    }
    firewall::setup_v6(naming, bridge, subnet).await
}

/// `accept_ra` 1 → 2 on every interface (see [`setup_host_v6`]).
fn keep_router_advertisements() {
    let Ok(interfaces) = std::fs::read_dir("/proc/sys/net/ipv6/conf") else {
        return;
    };
    for entry in interfaces.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "all" || name == "lo" {
            continue;
        }
        let path = entry.path().join("accept_ra");
        if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "1") {
            match std::fs::write(&path, "2") {
                Ok(()) => tracing::info!(
                    interface = name,
                    "accept_ra 2: keeps taking router advertisements with IPv6 forwarding on"
                ),
                Err(e) => tracing::warn!(interface = name, "accept_ra stays 1: {e}"),
            }
        }
    }
}

/// The real data plane. Create it inside a tokio runtime (its netlink connection runs there).
#[derive(Debug)]
pub struct LinuxDataPlane {
    config: DataPlaneConfig,
    handle: Handle,
    book: tokio::sync::Mutex<Bookkeeping>,
}

impl LinuxDataPlane {
    /// Opens a netlink connection in the current network namespace.
    pub fn new(config: DataPlaneConfig) -> Result<Self, DataPlaneError> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(io("open a netlink socket"))?;
        tokio::spawn(connection);
        let book = tokio::sync::Mutex::new(Bookkeeping::new(config.subnets));
        Ok(Self {
            config,
            handle,
            book,
        })
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
        let naming = self.naming();
        let bridge = naming.bridge();
        let bridge_index = link_index(&self.handle, &bridge).await?.ok_or_else(|| {
            DataPlaneError::InvalidConfig(format!(
                "bridge {bridge} does not exist; set up the host network first"
            ))
        })?;
        let offset = ipv4_offset(self.config.subnets.ipv4.base(), addresses.ipv4);
        let host_veth = naming.host_veth(offset);
        let peer_veth = naming.peer_veth(offset);
        // Leftovers of an interrupted attempt with this address.
        delete_link(&self.handle, &host_veth).await?;
        delete_link(&self.handle, &peer_veth).await?;

        let name = naming.netns(key);
        let path = tokio::task::spawn_blocking(move || netns::create(&name))
            .await
            .map_err(|e| io("create a network namespace")(std::io::Error::other(e)))?
            .map_err(io(format!(
                "create network namespace {}",
                naming.netns(key)
            )))?;

        self.handle
            .link()
            .add(
                LinkVeth::new(&host_veth, &peer_veth)
                    .mtu(self.config.mtu)
                    .build(),
            )
            .execute()
            .await
            .map_err(netlink(format!("create veth {host_veth}")))?;
        let peer_index =
            link_index(&self.handle, &peer_veth)
                .await?
                .ok_or_else(|| DataPlaneError::Netlink {
                    what: format!("veth peer {peer_veth}"),
                    reason: "missing right after its creation".into(),
                })?;
        let ns_file = std::fs::File::open(&path).map_err(io(format!("open {}", path.display())))?;
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(peer_index)
                    .setns_by_fd(ns_file.as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .map_err(netlink(format!("move {peer_veth} into {}", path.display())))?;
        drop(ns_file);
        let host_index =
            link_index(&self.handle, &host_veth)
                .await?
                .ok_or_else(|| DataPlaneError::Netlink {
                    what: format!("veth {host_veth}"),
                    reason: "missing right after its creation".into(),
                })?;
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(host_index)
                    .controller(bridge_index)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(netlink(format!("put {host_veth} into {bridge}")))?;

        let subnets = self.config.subnets;
        let mtu = self.config.mtu;
        let peer = peer_veth.clone();
        netns::run_async_in(&path, move || {
            configure_inside(peer, addresses, subnets, mtu)
        })
        .await
        .map_err(io(format!("enter {}", path.display())))??;

        firewall::add_ports(naming, key, addresses.ipv4, addresses.ipv6, ports).await?;
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
        offset: Option<u8>,
    ) -> Result<(), DataPlaneError> {
        let naming = self.naming();
        firewall::remove_ports(naming, key).await?;
        if let Some(offset) = offset {
            delete_link(&self.handle, &naming.host_veth(offset)).await?;
            delete_link(&self.handle, &naming.peer_veth(offset)).await?;
        }
        let path = self.netns_path(key);
        let shown = path.display().to_string();
        tokio::task::spawn_blocking(move || netns::delete(&path))
            .await
            .map_err(|e| io("delete a network namespace")(std::io::Error::other(e)))?
            .map_err(io(format!("delete network namespace {shown}")))
    }

    /// Host veths and not-yet-moved peers of ours (`<tag>v<n>`, `<tag>p<n>`), with their offset.
    async fn our_links(&self) -> Result<Vec<(String, u8)>, DataPlaneError> {
        let tag = self.naming().tag().to_owned();
        Ok(all_links(&self.handle)
            .await?
            .into_iter()
            .filter_map(|(_, name)| {
                let rest = name.strip_prefix(&tag)?;
                let digits = rest.strip_prefix('v').or_else(|| rest.strip_prefix('p'))?;
                let offset = digits.parse().ok()?;
                Some((name, offset))
            })
            .collect())
    }
}

/// Inside the instance's namespace: loopback up, the veth renamed `eth0` with its addresses,
/// default routes through the bridge.
async fn configure_inside(
    peer: String,
    addresses: ContainerAddresses,
    subnets: WorkerSubnets,
    mtu: u32,
) -> Result<(), DataPlaneError> {
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(io("open a netlink socket in the namespace"))?;
    tokio::spawn(connection);
    if let Some(lo) = link_index(&handle, "lo").await? {
        handle
            .link()
            .set(LinkUnspec::new_with_index(lo).up().build())
            .execute()
            .await
            .map_err(netlink("set lo up"))?;
    }
    let index = link_index(&handle, &peer)
        .await?
        .ok_or_else(|| DataPlaneError::Netlink {
            what: format!("veth {peer} in the namespace"),
            reason: "missing after the move".into(),
        })?;
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .name("eth0")
                .mtu(mtu)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(netlink(format!("rename {peer} to eth0 and set it up")))?;
    add_address(
        &handle,
        index,
        addresses.ipv4.into(),
        WORKER_SUBNET_IPV4_PREFIX_LEN,
    )
    .await
    .map_err(netlink(format!("add {} to eth0", addresses.ipv4)))?;
    handle
        .route()
        .add(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(subnets.ipv4.bridge())
                .output_interface(index)
                .build(),
        )
        .execute()
        .await
        .map_err(netlink(format!(
            "default route via {}",
            subnets.ipv4.bridge()
        )))?;
    // IPv6 is best effort: a host without IPv6 still runs IPv4 instances (Oakestra aborted).
    let v6 = async {
        add_address(
            &handle,
            index,
            addresses.ipv6.into(),
            WORKER_SUBNET_IPV6_PREFIX_LEN,
        )
        .await?;
        handle
            .route()
            .add(
                RouteMessageBuilder::<Ipv6Addr>::new()
                    .gateway(subnets.ipv6.bridge())
                    .output_interface(index)
                    .build(),
            )
            .execute()
            .await
    };
    if let Err(e) = v6.await {
        tracing::warn!(address = %addresses.ipv6, "instance runs without IPv6: {e}");
    }
    Ok(())
}

/// The IPv4 and IPv6 (not link-local) of `eth0` in the namespace at `path`.
async fn addresses_inside(
    path: &Path,
) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), DataPlaneError> {
    let shown = path.display().to_string();
    netns::run_async_in(path, || async {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(io("open a netlink socket in the namespace"))?;
        tokio::spawn(connection);
        let Some(index) = link_index(&handle, "eth0").await? else {
            return Ok((None, None));
        };
        let mut found = handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let (mut v4, mut v6) = (None, None);
        while let Some(message) = found.try_next().await.map_err(netlink("list addresses"))? {
            for attribute in &message.attributes {
                match attribute {
                    AddressAttribute::Address(IpAddr::V4(a)) => v4 = Some(*a),
                    AddressAttribute::Address(IpAddr::V6(a))
                        if (a.segments()[0] & 0xffc0) != 0xfe80 =>
                    {
                        v6 = Some(*a)
                    }
                    _ => {}
                }
            }
        }
        Ok((v4, v6))
    })
    .await
    .map_err(io(format!("enter {shown}")))?
}

#[async_trait::async_trait]
impl DataPlane for LinuxDataPlane {
    fn subnets(&self) -> WorkerSubnets {
        self.config.subnets
    }

    async fn setup_host(&self) -> Result<(), DataPlaneError> {
        let bridge = self.naming().bridge();
        let index = match link_index(&self.handle, &bridge).await? {
            Some(i) => i,
            None => {
                match self
                    .handle
                    .link()
                    .add(LinkBridge::new(&bridge).mtu(self.config.mtu).build())
                    .execute()
                    .await
                {
                    Err(e) if errno_of(&e) != Some(EEXIST) => {
                        return Err(netlink(format!("create bridge {bridge}"))(e));
                    }
                    _ => {}
                }
                link_index(&self.handle, &bridge)
                    .await?
                    .ok_or_else(|| DataPlaneError::Netlink {
                        what: format!("bridge {bridge}"),
                        reason: "missing right after its creation".into(),
                    })?
            }
        };
        let subnets = self.config.subnets;
        add_address(
            &self.handle,
            index,
            subnets.ipv4.bridge().into(),
            WORKER_SUBNET_IPV4_PREFIX_LEN,
        )
        .await
        .map_err(netlink(format!(
            "add {} to {bridge}",
            subnets.ipv4.bridge()
        )))?;
        if let Err(e) = add_address(
            &self.handle,
            index,
            subnets.ipv6.bridge().into(),
            WORKER_SUBNET_IPV6_PREFIX_LEN,
        )
        .await
        {
            tracing::warn!(bridge, "bridge without IPv6: {e}");
        }
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(netlink(format!("set {bridge} up")))?;
        write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
        firewall::setup(self.naming(), &bridge, subnets.ipv4).await?;
        // IPv6 is best effort: a host without IPv6 still runs IPv4 instances.
        if let Err(e) = setup_host_v6(self.naming(), &bridge, subnets.ipv6).await {
            tracing::warn!(bridge, "IPv6 service traffic not forwarded: {e}");
        }
        Ok(())
    }

    async fn teardown_host(&self) -> Result<(), DataPlaneError> {
        let mut book = self.book.lock().await;
        self.clean(&mut book, &[]).await?;
        firewall::teardown(self.naming()).await?;
        if let Err(e) = firewall::teardown_v6(self.naming()).await {
            tracing::warn!("removing the IPv6 firewall rules: {e}");
        }
        delete_link(&self.handle, &self.naming().bridge()).await?;
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
                if path.exists() {
                    addresses_inside(&path)
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
        if !path.exists() {
            return Err(DataPlaneError::InvalidInstance(format!(
                "{key} has no network namespace to add a guest to"
            )));
        }
        let guest = GuestNetwork::standard();
        let (inside, mtu) = (guest.clone(), self.config.mtu);
        netns::run_async_in(&path, move || guest_inside(inside, mtu))
            .await
            .map_err(io(format!("enter {}", path.display())))??;
        tracing::info!(instance = %key, tap = %guest.tap, guest = %guest.guest, "guest network ready");
        Ok(guest)
    }
}

/// Inside an instance's namespace (on a thread that joined it): the persistent TAP with the
/// gateway address, forwarding on, every connection to the instance address (arriving on
/// `eth0`) sent on to the guest, and the guest's traffic leaving from the instance address.
/// Each step is skipped when already done.
async fn guest_inside(guest: GuestNetwork, mtu: u32) -> Result<(), DataPlaneError> {
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(io("open a netlink socket in the namespace"))?;
    tokio::spawn(connection);
    if link_index(&handle, &guest.tap).await?.is_none() {
        // Persistent: it outlives this descriptor, and qemu opens it by name.
        let tap = tokio_tun::Tun::builder()
            .name(&guest.tap)
            .tap()
            .persist()
            .mtu(mtu as i32)
            .build()
            .map_err(|e| io(format!("create TAP {}", guest.tap))(std::io::Error::other(e)))?;
        drop(tap);
    }
    let index = link_index(&handle, &guest.tap)
        .await?
        .ok_or_else(|| DataPlaneError::Netlink {
            what: format!("TAP {}", guest.tap),
            reason: "missing after its creation".into(),
        })?;
    match add_address(&handle, index, guest.gateway.into(), guest.prefix_len).await {
        Ok(()) => {}
        Err(e) if errno_of(&e) == Some(EEXIST) => {}
        Err(e) => {
            return Err(netlink(format!("add {} to {}", guest.gateway, guest.tap))(
                e,
            ));
        }
    }
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(netlink(format!("set {} up", guest.tap)))?;
    // Per namespace: this thread's namespace is the one /proc/sys/net shows it.
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(io("enable forwarding in the namespace"))?;
    let guest_ip = guest.guest.to_string();
    let rules: [&[&str]; 2] = [
        &[
            "PREROUTING",
            "-i",
            "eth0",
            "-j",
            "DNAT",
            "--to-destination",
            &guest_ip,
        ],
        &[
            "POSTROUTING",
            "-o",
            "eth0",
            "-s",
            &guest_ip,
            "-j",
            "MASQUERADE",
        ],
    ];
    for rule in rules {
        let run = |op: &str| {
            std::process::Command::new("iptables")
                .args(["-w", "10", "-t", "nat", op])
                .args(rule)
                .output()
        };
        let present = run("-C").map_err(io("run iptables"))?.status.success();
        if !present {
            let out = run("-A").map_err(io("run iptables"))?;
            if !out.status.success() {
                return Err(DataPlaneError::Firewall {
                    args: format!("-t nat -A {} (in the instance namespace)", rule.join(" ")),
                    reason: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                });
            }
        }
    }
    Ok(())
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
        let rules = firewall::list_ports(&naming).await?;
        let names = tokio::task::spawn_blocking(move || netns::list(&prefix))
            .await
            .map_err(|e| io("list network namespaces")(std::io::Error::other(e)))?
            .map_err(io("list network namespaces"))?;
        let mut adopted: Vec<Attachment> = Vec::new();
        let mut kept_offsets = Vec::new();
        for name in names {
            let Some(key) = name
                .strip_prefix(&naming.netns_prefix())
                .and_then(InstanceKey::parse)
            else {
                continue;
            };
            let path = netns::path_of(&name);
            let (v4, v6) = addresses_inside(&path).await.unwrap_or((None, None));
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
                    let veth_there = link_index(&self.handle, &attachment.host_veth)
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
                firewall::remove_ports(&naming, &rule.key).await?;
            }
        }
        for (name, offset) in self.our_links().await? {
            if !kept_offsets.contains(&offset) {
                delete_link(&self.handle, &name).await?;
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
