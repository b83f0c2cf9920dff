//! The real implementations of the seams in [`super::sys`]: `rtnetlink`, the iptables
//! binaries, `/run/netns` and `/proc/sys`. No decisions here; those are in the data plane.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::route::{RouteAttribute, RouteMetric};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::super::{DataPlaneError, GuestNetwork};
use super::netns;
use super::sys::{
    ENODEV, ENOENT, Family, Firewall, FirewallOutput, Namespaces, Netlink, NetlinkAnswer,
    NetlinkError, NetlinkJob, Sysctl,
};

/// The errno of a netlink error, if the kernel sent one.
pub(super) fn errno_of(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

fn convert(e: rtnetlink::Error) -> NetlinkError {
    NetlinkError {
        errno: errno_of(&e),
        reason: e.to_string(),
    }
}

/// Index of link `name` through `handle`, if it exists.
pub(super) async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, NetlinkError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        Err(e) if matches!(errno_of(&e), Some(ENODEV) | Some(ENOENT)) => Ok(None),
        Err(e) => Err(convert(e)),
    }
}

/// A netlink connection (`rtnetlink`) in the namespace it was opened in.
#[derive(Debug, Clone)]
pub struct RtNetlink {
    handle: Handle,
}

impl RtNetlink {
    /// Opens a connection in the calling thread's network namespace; its task runs on the
    /// current tokio runtime.
    pub fn connect() -> io::Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }
}

#[async_trait]
impl Netlink for RtNetlink {
    async fn link_index(&self, name: &str) -> Result<Option<u32>, NetlinkError> {
        link_index(&self.handle, name).await
    }

    async fn links(&self) -> Result<Vec<(u32, String)>, NetlinkError> {
        let mut links = self.handle.link().get().execute();
        let mut out = Vec::new();
        while let Some(link) = links.try_next().await.map_err(convert)? {
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

    async fn add_bridge(&self, name: &str, mtu: u32) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .add(LinkBridge::new(name).mtu(mtu).build())
            .execute()
            .await
            .map_err(convert)
    }

    async fn add_veth(&self, name: &str, peer: &str, mtu: u32) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .add(LinkVeth::new(name, peer).mtu(mtu).build())
            .execute()
            .await
            .map_err(convert)
    }

    async fn delete_link(&self, index: u32) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(convert)
    }

    async fn move_to_netns(&self, index: u32, netns: &Path) -> Result<(), NetlinkError> {
        let file = std::fs::File::open(netns).map_err(|e| NetlinkError {
            errno: e.raw_os_error(),
            reason: format!("open {}: {e}", netns.display()),
        })?;
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .setns_by_fd(file.as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .map_err(convert)
    }

    async fn set_up(
        &self,
        index: u32,
        rename: Option<&str>,
        mtu: Option<u32>,
        controller: Option<u32>,
    ) -> Result<(), NetlinkError> {
        let mut link = LinkUnspec::new_with_index(index);
        if let Some(name) = rename {
            link = link.name(name);
        }
        if let Some(mtu) = mtu {
            link = link.mtu(mtu);
        }
        if let Some(controller) = controller {
            link = link.controller(controller);
        }
        self.handle
            .link()
            .set(link.up().build())
            .execute()
            .await
            .map_err(convert)
    }

    async fn add_address(
        &self,
        index: u32,
        address: IpAddr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        let mut request = self.handle.address().add(index, address, prefix_len);
        if address.is_ipv6() {
            // No duplicate address detection: the address is ours by construction, and a
            // tentative address could not be used for the first seconds.
            request
                .message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        request.execute().await.map_err(convert)
    }

    async fn addresses(&self, index: u32) -> Result<Vec<IpAddr>, NetlinkError> {
        let mut found = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut out = Vec::new();
        while let Some(message) = found.try_next().await.map_err(convert)? {
            for attribute in &message.attributes {
                if let AddressAttribute::Address(a) = attribute {
                    out.push(*a);
                }
            }
        }
        Ok(out)
    }

    async fn add_default_route(&self, index: u32, gateway: IpAddr) -> Result<(), NetlinkError> {
        let route = match gateway {
            IpAddr::V4(g) => RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(g)
                .output_interface(index)
                .build(),
            IpAddr::V6(g) => RouteMessageBuilder::<Ipv6Addr>::new()
                .gateway(g)
                .output_interface(index)
                .build(),
        };
        self.handle
            .route()
            .add(route)
            .execute()
            .await
            .map_err(convert)
    }

    async fn link_mtu(&self, index: u32) -> Result<Option<u32>, NetlinkError> {
        let mut links = self.handle.link().get().match_index(index).execute();
        match links.try_next().await {
            Ok(link) => Ok(link.and_then(|l| {
                l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::Mtu(m) => Some(*m),
                    _ => None,
                })
            })),
            Err(e) if matches!(errno_of(&e), Some(ENODEV) | Some(ENOENT)) => Ok(None),
            Err(e) => Err(convert(e)),
        }
    }

    async fn route_to(&self, to: IpAddr) -> Result<Option<(u32, Option<u32>)>, NetlinkError> {
        let message = match to {
            IpAddr::V4(a) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(a, 32)
                .build(),
            IpAddr::V6(a) => RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(a, 128)
                .build(),
        };
        let mut routes = self.handle.route().get(message).execute();
        let route = match routes.try_next().await {
            Ok(route) => route,
            // ENETUNREACH, EHOSTUNREACH: no route.
            Err(e) if matches!(errno_of(&e), Some(101 | 113)) => None,
            Err(e) => return Err(convert(e)),
        };
        Ok(route.and_then(|r| {
            let oif = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            })?;
            let mtu = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Metrics(m) => m.iter().find_map(|m| match m {
                    RouteMetric::Mtu(v) if *v > 0 => Some(*v),
                    _ => None,
                }),
                _ => None,
            });
            Some((oif, mtu))
        }))
    }
}

/// The `iptables` and `ip6tables` binaries, run with `-w 10` (wait for the xtables lock).
#[derive(Debug, Clone, Copy, Default)]
pub struct IptablesBinary;

#[async_trait]
impl Firewall for IptablesBinary {
    async fn run(&self, family: Family, args: &[&str]) -> io::Result<FirewallOutput> {
        let output = tokio::process::Command::new(family.binary())
            .arg("-w")
            .arg("10")
            .args(args)
            .kill_on_drop(true)
            .output()
            .await?;
        Ok(FirewallOutput {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

fn joined(e: tokio::task::JoinError) -> io::Error {
    io::Error::other(e)
}

/// Namespaces under `/run/netns` ([`netns`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct RunNetns;

#[async_trait]
impl Namespaces for RunNetns {
    async fn create(&self, name: &str) -> io::Result<PathBuf> {
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || netns::create(&name))
            .await
            .map_err(joined)?
    }

    async fn delete(&self, path: &Path) -> io::Result<()> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || netns::delete(&path))
            .await
            .map_err(joined)?
    }

    async fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || netns::list(&prefix))
            .await
            .map_err(joined)?
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    async fn with_netlink(
        &self,
        path: &Path,
        job: NetlinkJob,
    ) -> io::Result<Result<NetlinkAnswer, DataPlaneError>> {
        netns::run_async_in(path, move || async move {
            let netlink = RtNetlink::connect().map_err(|source| DataPlaneError::Io {
                what: "open a netlink socket in the namespace".into(),
                source,
            })?;
            job(&netlink).await
        })
        .await
    }

    async fn add_guest(
        &self,
        path: &Path,
        guest: &GuestNetwork,
        mtu: u32,
    ) -> io::Result<Result<(), DataPlaneError>> {
        let guest = guest.clone();
        netns::run_async_in(path, move || super::guest::inside(guest, mtu)).await
    }
}

/// `/proc/sys` of the calling thread's namespace.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSys;

fn proc_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key)
}

impl Sysctl for ProcSys {
    fn read(&self, key: &str) -> Option<String> {
        std::fs::read_to_string(proc_path(key))
            .ok()
            .map(|v| v.trim().to_owned())
    }

    fn write(&self, key: &str, value: &str) -> io::Result<()> {
        std::fs::write(proc_path(key), value)
    }

    fn list(&self, key: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(proc_path(key)) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }
}
