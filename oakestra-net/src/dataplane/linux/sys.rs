//! The lowest seams of the Linux data plane: everything [`super::LinuxDataPlane`] asks of the
//! kernel goes through one of four traits, so its decisions (which links, addresses, rules and
//! namespaces it creates, adopts and removes) are unit-tested with the recording fakes of
//! `fake.rs` beside them, without root:
//!
//! * [`Netlink`]: links and addresses of one network namespace (`rtnetlink` for real);
//! * [`Firewall`]: one `iptables`/`ip6tables` command;
//! * [`Namespaces`]: named network namespaces and a [`Netlink`] inside one of them, plus the
//!   guest set-up run inside a namespace;
//! * [`Sysctl`]: the files under `/proc/sys`.
//!
//! [`System`] bundles them; [`System::real`] is the host's.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use super::super::{DataPlaneError, GuestNetwork};

/// A failed netlink request: the kernel's errno (when it answered with one) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetlinkError {
    /// The positive errno (`EEXIST` = 17, `ENODEV` = 19, …), if the kernel sent one.
    pub errno: Option<i32>,
    /// The error as text.
    pub reason: String,
}

impl NetlinkError {
    /// An error with errno `errno`.
    pub fn errno(errno: i32) -> Self {
        Self {
            errno: Some(errno),
            reason: io::Error::from_raw_os_error(errno).to_string(),
        }
    }
}

impl fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// `EEXIST`: the link, address or route is there already.
pub const EEXIST: i32 = 17;
/// `ENODEV`: no such link.
pub const ENODEV: i32 = 19;
/// `ENOENT`: no such entry.
pub const ENOENT: i32 = 2;

/// Links and addresses of one network namespace, one netlink request per call, with the
/// kernel's answer unchanged (an existing address is `EEXIST`, a missing link `ENODEV`).
#[async_trait]
pub trait Netlink: Send + Sync + fmt::Debug {
    /// Index of link `name`, `None` when there is none.
    async fn link_index(&self, name: &str) -> Result<Option<u32>, NetlinkError>;
    /// Every link as `(index, name)`.
    async fn links(&self) -> Result<Vec<(u32, String)>, NetlinkError>;
    /// Creates bridge `name`.
    async fn add_bridge(&self, name: &str, mtu: u32) -> Result<(), NetlinkError>;
    /// Creates the veth pair `name` – `peer`.
    async fn add_veth(&self, name: &str, peer: &str, mtu: u32) -> Result<(), NetlinkError>;
    /// Deletes link `index`.
    async fn delete_link(&self, index: u32) -> Result<(), NetlinkError>;
    /// Moves link `index` into the network namespace at `netns`.
    async fn move_to_netns(&self, index: u32, netns: &Path) -> Result<(), NetlinkError>;
    /// Sets link `index` up: renamed to `rename` and given `mtu` when set, and put into the
    /// bridge `controller` when set.
    async fn set_up(
        &self,
        index: u32,
        rename: Option<&str>,
        mtu: Option<u32>,
        controller: Option<u32>,
    ) -> Result<(), NetlinkError>;
    /// Adds `address/prefix_len` to link `index` (IPv6 without duplicate address detection).
    async fn add_address(
        &self,
        index: u32,
        address: IpAddr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError>;
    /// The addresses of link `index`.
    async fn addresses(&self, index: u32) -> Result<Vec<IpAddr>, NetlinkError>;
    /// Adds the default route of `gateway`'s IP version via `gateway` out of link `index`.
    async fn add_default_route(&self, index: u32, gateway: IpAddr) -> Result<(), NetlinkError>;
    /// The MTU of link `index`, `None` when there is no such link.
    async fn link_mtu(&self, index: u32) -> Result<Option<u32>, NetlinkError>;
    /// The kernel's route to `to` (`ip route get`): the link it leaves through and the
    /// route's own MTU when it sets one; `None` when there is no route.
    async fn route_to(&self, to: IpAddr) -> Result<Option<(u32, Option<u32>)>, NetlinkError>;
}

/// `iptables` (IPv4) or `ip6tables` (IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// `iptables`.
    V4,
    /// `ip6tables`.
    V6,
}

impl Family {
    /// The binary.
    pub fn binary(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

/// What a firewall command answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirewallOutput {
    /// Whether it exited with status 0.
    pub success: bool,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// One firewall command: `iptables -w 10 <args>` (or `ip6tables`). `Err` only when it could
/// not be run at all.
#[async_trait]
pub trait Firewall: Send + Sync + fmt::Debug {
    /// Runs the command of `family` with `args` (after `-w 10`).
    async fn run(&self, family: Family, args: &[&str]) -> io::Result<FirewallOutput>;
}

/// Named network namespaces (`/run/netns/<name>`, see [`super::netns`]) and what runs inside.
#[async_trait]
pub trait Namespaces: Send + Sync + fmt::Debug {
    /// Creates namespace `name` unless it exists; its path.
    async fn create(&self, name: &str) -> io::Result<PathBuf>;
    /// Removes the namespace at `path`; missing is fine.
    async fn delete(&self, path: &Path) -> io::Result<()>;
    /// Names of the namespaces that start with `prefix`, sorted.
    async fn list(&self, prefix: &str) -> io::Result<Vec<String>>;
    /// Whether the namespace at `path` exists.
    fn exists(&self, path: &Path) -> bool;
    /// Runs `job` with a netlink connection opened inside the namespace at `path`.
    async fn with_netlink(
        &self,
        path: &Path,
        job: NetlinkJob,
    ) -> io::Result<Result<NetlinkAnswer, DataPlaneError>>;
    /// Inside the namespace at `path`: the guest's TAP device (persistent, `mtu`) with the
    /// gateway address, forwarding on, and the NAT rules that make the guest the instance
    /// (see [`super::LinuxDataPlane`]'s `add_guest`).
    async fn add_guest(
        &self,
        path: &Path,
        guest: &GuestNetwork,
        mtu: u32,
    ) -> io::Result<Result<(), DataPlaneError>>;
}

/// Work done with a netlink connection inside a namespace ([`Namespaces::with_netlink`]).
pub type NetlinkJob = Box<
    dyn for<'a> FnOnce(
            &'a dyn Netlink,
        )
            -> futures_util::future::BoxFuture<'a, Result<NetlinkAnswer, DataPlaneError>>
        + Send,
>;

/// What a [`NetlinkJob`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetlinkAnswer {
    /// Addresses it read.
    pub addresses: Vec<IpAddr>,
}

/// Kernel settings under `/proc/sys` of the namespace of the caller, by relative path
/// (`net/ipv4/ip_forward`).
pub trait Sysctl: Send + Sync + fmt::Debug {
    /// The value, trimmed; `None` when it cannot be read.
    fn read(&self, key: &str) -> Option<String>;
    /// Writes `value`.
    fn write(&self, key: &str, value: &str) -> io::Result<()>;
    /// The entries of directory `key` (e.g. the interfaces of `net/ipv6/conf`).
    fn list(&self, key: &str) -> Vec<String>;
}

/// Everything the Linux data plane uses of the kernel.
#[derive(Debug, Clone)]
pub struct System {
    /// Links and addresses of the host namespace.
    pub netlink: Arc<dyn Netlink>,
    /// iptables and ip6tables.
    pub firewall: Arc<dyn Firewall>,
    /// Network namespaces.
    pub namespaces: Arc<dyn Namespaces>,
    /// `/proc/sys`.
    pub sysctl: Arc<dyn Sysctl>,
}

impl System {
    /// The host's: a netlink connection in the current network namespace (spawned on the
    /// current tokio runtime), the iptables binaries, `/run/netns` and `/proc/sys`.
    pub fn real() -> io::Result<Self> {
        Ok(Self {
            netlink: Arc::new(super::real::RtNetlink::connect()?),
            firewall: Arc::new(super::real::IptablesBinary),
            namespaces: Arc::new(super::real::RunNetns),
            sysctl: Arc::new(super::real::ProcSys),
        })
    }
}
