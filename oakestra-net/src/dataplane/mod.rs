//! The worker data plane (DESIGN.md §4.6, reference `oakestra-net.md` §3.1–3.2), behind the
//! [`DataPlane`] trait:
//!
//! * **host set-up** ([`DataPlane::setup_host`]): a bridge holding the worker subnet's first
//!   address with the subnet's prefix (`S+1/26`, `S6+1/120` by default), IP forwarding, and our
//!   own firewall chains (outbound NAT, forwarding through the bridge, port mappings), created
//!   and removed idempotently;
//! * **per instance** ([`DataPlane::attach`]): a network namespace with a veth into the bridge,
//!   an address from the worker subnet (`S+2` upward), default routes via the bridge, and one
//!   DNAT rule per port mapping; [`DataPlane::detach`] removes all of it;
//! * **after a crash** ([`DataPlane::reconcile`]): the kernel state is the record. Namespaces,
//!   veths and rules of instances that should run are adopted (their addresses are reserved
//!   again); everything else of ours is removed.
//!
//! [`LinuxDataPlane`] does it for real (netlink through `rtnetlink`, namespaces with `setns`,
//! the `iptables` binary for the rules); [`FakeDataPlane`] keeps the same bookkeeping in memory
//! for tests of its users.

mod fake;
#[cfg(target_os = "linux")]
mod linux;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use crate::ipam::{ContainerAddresses, Holder, IpamError, WorkerAddresses, WorkerSubnets};

pub use fake::FakeDataPlane;
#[cfg(target_os = "linux")]
pub use linux::LinuxDataPlane;
/// Named network namespaces (`/run/netns/<name>`): create, delete, list, run code inside.
#[cfg(target_os = "linux")]
pub use linux::netns;
/// The service-IP proxy's TUN device and UDP tunnel.
#[cfg(target_os = "linux")]
pub use linux::tunnel;

/// Which instance a namespace belongs to: a service (its id or job name) and an instance
/// number. Written `service.number` in namespace names and rule comments.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceKey {
    service: String,
    number: u32,
}

impl InstanceKey {
    /// Longest service part: namespace names are file names under `/run/netns`.
    pub const MAX_SERVICE_LEN: usize = 160;

    /// A key; the service may hold ASCII letters, digits, `.`, `_` and `-`.
    pub fn new(service: impl Into<String>, number: u32) -> Result<Self, DataPlaneError> {
        let service = service.into();
        let ok = !service.is_empty()
            && service.len() <= Self::MAX_SERVICE_LEN
            && service
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return Err(DataPlaneError::InvalidInstance(format!(
                "service {service:?} must be 1–{} characters of letters, digits, '.', '_', '-'",
                Self::MAX_SERVICE_LEN
            )));
        }
        Ok(Self { service, number })
    }

    /// The service part.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The instance number.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// Parses `service.number`.
    pub fn parse(text: &str) -> Option<Self> {
        let (service, number) = text.rsplit_once('.')?;
        Self::new(service, number.parse().ok()?).ok()
    }

    fn holder(&self) -> Holder {
        Holder::instance(self.service.clone(), self.number)
    }
}

impl fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.service, self.number)
    }
}

/// One published port (the SLA's `port` entries): traffic to `host` on the worker goes to
/// `container` in the instance. The same type as `oakestra_core::sla::PortMapping`.
pub use oakestra_core::sla::{PortMapping as PortForward, Protocol};

/// The network of one attached instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The instance.
    pub key: InstanceKey,
    /// Its network namespace (`/run/netns/<name>`), for the container runtime.
    pub netns: PathBuf,
    /// Its address in the worker's IPv4 subnet.
    pub ipv4: Ipv4Addr,
    /// Its address in the worker's IPv6 subnet.
    pub ipv6: Ipv6Addr,
    /// Host side of its veth (in the bridge).
    pub host_veth: String,
    /// Its port mappings.
    pub ports: Vec<PortForward>,
}

/// The network of a virtual machine (a unikernel) inside an instance's namespace: qemu, run in
/// the namespace, attaches its virtio-net device to the TAP device `tap`; the guest has the
/// fixed private address `guest` with `gateway` (the TAP's own address) as its default route.
/// Everything that reaches the instance address is forwarded to the guest, and the guest's own
/// traffic leaves from the instance address, so the guest is the instance to the rest of the
/// overlay (service IPs, port mappings) without knowing its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestNetwork {
    /// TAP device in the namespace.
    pub tap: String,
    /// The guest's address.
    pub guest: Ipv4Addr,
    /// The TAP's address, the guest's gateway.
    pub gateway: Ipv4Addr,
    /// Prefix length of the guest link.
    pub prefix_len: u8,
}

impl GuestNetwork {
    /// The one guest link of every instance namespace (namespaces are apart, so one suffices).
    pub fn standard() -> Self {
        Self {
            tap: "tap0".into(),
            guest: Ipv4Addr::new(192, 168, 127, 2),
            gateway: Ipv4Addr::new(192, 168, 127, 1),
            prefix_len: 30,
        }
    }

    /// Netmask of the guest link.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::MAX << (32 - u32::from(self.prefix_len)))
    }

    /// The guest's configuration in the Linux kernel's `ip=` syntax
    /// (`ip=<client>::<gateway>:<netmask>::eth0:off`), appended to the kernel command line.
    ///
    /// ```
    /// use oakestra_net::dataplane::GuestNetwork;
    /// assert_eq!(
    ///     GuestNetwork::standard().kernel_arg(),
    ///     "ip=192.168.127.2::192.168.127.1:255.255.255.252::eth0:off"
    /// );
    /// ```
    pub fn kernel_arg(&self) -> String {
        format!(
            "ip={}::{}:{}::eth0:off",
            self.guest,
            self.gateway,
            self.netmask()
        )
    }
}

/// Names of everything the data plane creates, all derived from one short tag so that several
/// data planes (tests) can live on one host side by side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    tag: String,
}

impl Naming {
    /// The tag of a production worker.
    pub const DEFAULT_TAG: &'static str = "oakrs";

    /// Names from `tag`: 1–8 lowercase ASCII letters or digits, starting with a letter.
    pub fn new(tag: &str) -> Result<Self, DataPlaneError> {
        let ok = (1..=8).contains(&tag.len())
            && tag.starts_with(|c: char| c.is_ascii_lowercase())
            && tag
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !ok {
            return Err(DataPlaneError::InvalidConfig(format!(
                "network tag {tag:?} must be 1–8 lowercase letters or digits, starting with a letter"
            )));
        }
        Ok(Self {
            tag: tag.to_owned(),
        })
    }

    /// The tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The bridge, e.g. `oakrsbr`.
    pub fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }

    /// Prefix of namespace names, e.g. `oakrs-`.
    pub fn netns_prefix(&self) -> String {
        format!("{}-", self.tag)
    }

    /// Namespace name of an instance, e.g. `oakrs-app.ns.svc.ns.0`.
    pub fn netns(&self, key: &InstanceKey) -> String {
        format!("{}{key}", self.netns_prefix())
    }

    /// Host veth of the container with IPv4 offset `offset` in the worker subnet (2–62 in a /26,
    /// up to 1022 in a /22), e.g. `oakrsv2`.
    /// The address is unique on the worker, so the name is too, and stays within the kernel's
    /// 15 characters.
    pub fn host_veth(&self, offset: u16) -> String {
        format!("{}v{offset}", self.tag)
    }

    /// The container side before it moves into the namespace (renamed `eth0` there).
    pub fn peer_veth(&self, offset: u16) -> String {
        format!("{}p{offset}", self.tag)
    }

    /// Prefix of our iptables chains, e.g. `OAKRS`.
    pub fn chain_prefix(&self) -> String {
        self.tag.to_ascii_uppercase()
    }

    /// Comment on an instance's rules, e.g. `oakrs:app.ns.svc.ns.0`.
    pub fn rule_comment(&self, key: &InstanceKey) -> String {
        format!("{}:{key}", self.tag)
    }
}

impl Default for Naming {
    fn default() -> Self {
        Self {
            tag: Self::DEFAULT_TAG.to_owned(),
        }
    }
}

/// Length of a UDP header.
pub const UDP_HEADER_LEN: u32 = 8;

/// What the tunnel adds to an overlay packet on the underlay: the underlay's IP header (20
/// bytes over IPv4, 40 over IPv6), the UDP header (8) and our frame header
/// ([`crate::proxy::frame::FRAME_HEADER_LEN`], 12; a chunk's header is 10, a plain packet has
/// none). 40 bytes over IPv4, 60 over IPv6.
///
/// ```
/// use oakestra_net::dataplane::tunnel_overhead;
/// assert_eq!(tunnel_overhead(false), 40);
/// assert_eq!(tunnel_overhead(true), 60);
/// ```
pub fn tunnel_overhead(underlay_ipv6: bool) -> u32 {
    let ip = if underlay_ipv6 { 40 } else { 20 };
    ip + UDP_HEADER_LEN + crate::proxy::frame::FRAME_HEADER_LEN as u32
}

/// The overlay MTU (bridge, veths, TUN device) that an underlay link of `underlay_mtu` bytes
/// carries without fragmenting: the underlay's MTU minus [`tunnel_overhead`], at least
/// [`DataPlaneConfig::MIN_MTU`].
///
/// ```
/// use oakestra_net::dataplane::overlay_mtu;
/// assert_eq!(overlay_mtu(1500, false), 1460);
/// assert_eq!(overlay_mtu(1400, false), 1360); // LTE
/// assert_eq!(overlay_mtu(1500, true), 1440);
/// ```
pub fn overlay_mtu(underlay_mtu: u32, underlay_ipv6: bool) -> u32 {
    underlay_mtu
        .saturating_sub(tunnel_overhead(underlay_ipv6))
        .max(DataPlaneConfig::MIN_MTU)
}

/// The link that carries a worker's tunnel, and the overlay MTU that follows from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Underlay {
    /// The link's name, e.g. `eth0`.
    pub link: String,
    /// Its MTU (or the route's, when the route to the peer sets a smaller one).
    pub mtu: u32,
    /// Whether the tunnel runs over IPv6 (40 bytes of IP header instead of 20).
    pub ipv6: bool,
}

impl Underlay {
    /// The overlay MTU this underlay carries: [`overlay_mtu`].
    pub fn overlay_mtu(&self) -> u32 {
        overlay_mtu(self.mtu, self.ipv6)
    }
}

/// What a data plane is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPlaneConfig {
    /// The worker's subnets (from the root's IPAM, via the registration).
    pub subnets: WorkerSubnets,
    /// Names of bridge, namespaces, veths and chains.
    pub naming: Naming,
    /// MTU of the bridge and the veths: the worker's overlay MTU ([`overlay_mtu`] of its
    /// underlay, or the worker's `--overlay-mtu`), which leaves room for the tunnel's headers.
    pub mtu: u32,
}

impl DataPlaneConfig {
    /// MTU when the underlay is unknown (Oakestra's fixed value; a 1,500-byte underlay
    /// carries 1,460).
    pub const DEFAULT_MTU: u32 = 1450;
    /// The smallest overlay MTU: IPv6 needs 1,280 on every link.
    pub const MIN_MTU: u32 = 1280;

    /// The defaults for `subnets`.
    pub fn new(subnets: WorkerSubnets) -> Self {
        Self {
            subnets,
            naming: Naming::default(),
            mtu: Self::DEFAULT_MTU,
        }
    }
}

/// A data plane operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    /// A netlink request failed.
    #[error("netlink: {what}: {reason}")]
    Netlink {
        /// What was being done.
        what: String,
        /// The kernel's answer.
        reason: String,
    },
    /// A system call or file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// An iptables command failed.
    #[error("iptables {args} failed: {reason}; is the iptables package installed and are we root?")]
    Firewall {
        /// The arguments.
        args: String,
        /// Its stderr or why it did not run.
        reason: String,
    },
    /// No container address is free, or the state is inconsistent.
    #[error(transparent)]
    Addresses(#[from] IpamError),
    /// A host port is mapped by another instance already.
    #[error(
        "host port {port} is already mapped to instance {holder}; choose another host port in the SLA's `port` field"
    )]
    PortInUse {
        /// The mapping.
        port: PortForward,
        /// Who has it.
        holder: InstanceKey,
    },
    /// A bad instance key.
    #[error("invalid instance: {0}")]
    InvalidInstance(String),
    /// A bad configuration.
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
}

/// The worker data plane: host set-up and one network namespace per instance.
#[async_trait::async_trait]
pub trait DataPlane: Send + Sync + fmt::Debug {
    /// The worker's subnets.
    fn subnets(&self) -> WorkerSubnets;

    /// Creates (or repairs) the bridge, forwarding and our firewall chains. Idempotent.
    async fn setup_host(&self) -> Result<(), DataPlaneError>;

    /// Removes every instance network and the host set-up. Idempotent.
    async fn teardown_host(&self) -> Result<(), DataPlaneError>;

    /// Gives an instance its namespace, veth, address, routes and port mappings. Attaching an
    /// attached instance returns its attachment unchanged. On failure nothing is left behind.
    async fn attach(
        &self,
        key: &InstanceKey,
        ports: &[PortForward],
    ) -> Result<Attachment, DataPlaneError>;

    /// Removes an instance's namespace, veth, rules and address. Detaching an unknown instance
    /// is harmless.
    async fn detach(&self, key: &InstanceKey) -> Result<(), DataPlaneError>;

    /// After a restart: adopts what the host holds for the instances in `keep` and removes
    /// everything else of ours. Returns the adopted attachments.
    async fn reconcile(&self, keep: &[InstanceKey]) -> Result<Vec<Attachment>, DataPlaneError>;

    /// The attached instances.
    fn attachments(&self) -> Vec<Attachment>;

    /// Gives an attached instance's namespace the [`GuestNetwork`] a virtual machine (a
    /// unikernel) runs on. Idempotent; goes with the namespace on [`DataPlane::detach`].
    async fn add_guest(&self, key: &InstanceKey) -> Result<GuestNetwork, DataPlaneError>;
}

/// The pure bookkeeping both data planes share: container addresses and port mappings.
#[derive(Debug, Clone)]
pub(crate) struct Bookkeeping {
    addresses: WorkerAddresses,
    attached: BTreeMap<InstanceKey, Attachment>,
}

impl Bookkeeping {
    pub(crate) fn new(subnets: WorkerSubnets) -> Self {
        Self {
            addresses: WorkerAddresses::new(subnets),
            attached: BTreeMap::new(),
        }
    }

    pub(crate) fn subnets(&self) -> WorkerSubnets {
        self.addresses.subnets()
    }

    pub(crate) fn get(&self, key: &InstanceKey) -> Option<&Attachment> {
        self.attached.get(key)
    }

    pub(crate) fn all(&self) -> Vec<Attachment> {
        self.attached.values().cloned().collect()
    }

    /// Checks the ports and takes addresses for a new attachment (not yet recorded).
    pub(crate) fn plan(
        &mut self,
        key: &InstanceKey,
        ports: &[PortForward],
    ) -> Result<ContainerAddresses, DataPlaneError> {
        self.check_ports(key, ports)?;
        Ok(self.addresses.assign(&key.holder())?)
    }

    fn check_ports(&self, key: &InstanceKey, ports: &[PortForward]) -> Result<(), DataPlaneError> {
        for (i, p) in ports.iter().enumerate() {
            let clash = |q: &PortForward| q.host == p.host && q.protocol == p.protocol;
            if ports[..i].iter().any(clash) {
                return Err(DataPlaneError::PortInUse {
                    port: *p,
                    holder: key.clone(),
                });
            }
            if let Some(other) = self
                .attached
                .values()
                .find(|a| a.key != *key && a.ports.iter().any(clash))
            {
                return Err(DataPlaneError::PortInUse {
                    port: *p,
                    holder: other.key.clone(),
                });
            }
        }
        Ok(())
    }

    /// Gives back what [`Bookkeeping::plan`] took, after a failure.
    pub(crate) fn unplan(&mut self, key: &InstanceKey) {
        self.addresses.release(&key.holder());
    }

    pub(crate) fn record(&mut self, attachment: Attachment) {
        self.attached.insert(attachment.key.clone(), attachment);
    }

    /// Adopts an attachment found on the host: reserves its addresses.
    pub(crate) fn adopt(&mut self, attachment: Attachment) -> Result<(), DataPlaneError> {
        let holder = attachment.key.holder();
        self.check_ports(&attachment.key, &attachment.ports)?;
        self.addresses
            .ipv4_pool_mut()
            .reserve(holder.clone(), attachment.ipv4.into())?;
        if let Err(e) = self
            .addresses
            .ipv6_pool_mut()
            .reserve(holder.clone(), attachment.ipv6.into())
        {
            self.addresses.release(&holder);
            return Err(e.into());
        }
        self.record(attachment);
        Ok(())
    }

    pub(crate) fn remove(&mut self, key: &InstanceKey) -> Option<Attachment> {
        self.addresses.release(&key.holder());
        self.attached.remove(key)
    }
}

/// Offset of `address` in the worker subnet that starts at `base` (0–63 in a /26, up to 1023
/// in the largest, a /22).
pub(crate) fn ipv4_offset(base: Ipv4Addr, address: Ipv4Addr) -> u16 {
    (u32::from(address).wrapping_sub(u32::from(base)) & 0x3ff) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::{Ipv4Subnet, Ipv6Subnet};

    fn subnets() -> WorkerSubnets {
        WorkerSubnets {
            ipv4: Ipv4Subnet::new("10.18.0.64".parse().unwrap()).unwrap(),
            ipv6: Ipv6Subnet::new("fc00::100".parse().unwrap()).unwrap(),
        }
    }

    fn tcp(host: u16, container: u16) -> PortForward {
        PortForward {
            host,
            container,
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn keys_round_trip_and_refuse_path_characters() {
        let k = InstanceKey::new("app.ns.svc.ns", 3).unwrap();
        assert_eq!(k.to_string(), "app.ns.svc.ns.3");
        assert_eq!(InstanceKey::parse("app.ns.svc.ns.3"), Some(k));
        assert!(InstanceKey::new("../etc", 0).is_err());
        assert!(InstanceKey::new("a b", 0).is_err());
        assert!(InstanceKey::new("", 0).is_err());
        assert_eq!(InstanceKey::parse("noNumber"), None);
    }

    #[test]
    fn names_fit_the_kernel_limits() {
        let n = Naming::new("t1234567").unwrap();
        assert!(n.host_veth(1022).len() <= 15);
        assert!(n.peer_veth(1022).len() <= 15);
        assert!(n.bridge().len() <= 15);
        assert!(format!("{}-DNAT", n.chain_prefix()).len() <= 28);
        assert!(Naming::new("Upper").is_err());
        assert!(Naming::new("123").is_err());
        assert!(Naming::new("waytoolong").is_err());
    }

    #[test]
    fn bookkeeping_addresses_start_at_base_plus_two_and_ports_do_not_clash() {
        let mut b = Bookkeeping::new(subnets());
        let k0 = InstanceKey::new("s", 0).unwrap();
        let k1 = InstanceKey::new("s", 1).unwrap();
        let a = b.plan(&k0, &[tcp(8080, 80)]).unwrap();
        assert_eq!(a.ipv4, "10.18.0.66".parse::<Ipv4Addr>().unwrap());
        assert_eq!(a.ipv6, "fc00::102".parse::<Ipv6Addr>().unwrap());
        assert_eq!(ipv4_offset(subnets().ipv4.base(), a.ipv4), 2);
        b.record(Attachment {
            key: k0.clone(),
            netns: "/run/netns/x".into(),
            ipv4: a.ipv4,
            ipv6: a.ipv6,
            host_veth: "v2".into(),
            ports: vec![tcp(8080, 80)],
        });
        let clash = b.plan(&k1, &[tcp(8080, 81)]).unwrap_err();
        assert!(matches!(clash, DataPlaneError::PortInUse { ref holder, .. } if *holder == k0));
        assert!(clash.to_string().contains("s.0"), "{clash}");
        // Same port, other protocol: fine.
        let udp = PortForward {
            protocol: Protocol::Udp,
            ..tcp(8080, 80)
        };
        let c = b.plan(&k1, &[udp]).unwrap();
        assert_eq!(c.ipv4, "10.18.0.67".parse::<Ipv4Addr>().unwrap());
        // Duplicates within one request.
        let k2 = InstanceKey::new("s", 2).unwrap();
        assert!(b.plan(&k2, &[tcp(1, 1), tcp(1, 2)]).is_err());
        // Release and adopt.
        let gone = b.remove(&k0).unwrap();
        assert_eq!(gone.ipv4, a.ipv4);
        b.adopt(gone.clone()).unwrap();
        assert_eq!(b.get(&k0), Some(&gone));
        assert!(
            b.adopt(Attachment { key: k2, ..gone }).is_err(),
            "address held"
        );
    }
}
