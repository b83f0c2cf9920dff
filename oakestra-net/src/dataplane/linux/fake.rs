//! Recording fakes of the seams in [`super::sys`]: one in-memory kernel ([`FakeKernel`]) with
//! links, addresses and routes per namespace, iptables tables, namespaces and `/proc/sys`. It
//! answers as the kernel and the iptables binaries would (`EEXIST`, `ENODEV`, exit status 1),
//! records every call, and fails the calls a test scripts to fail.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::super::{DataPlaneError, GuestNetwork};
use super::netns;
use super::sys::{
    EEXIST, ENODEV, Family, Firewall, FirewallOutput, Namespaces, Netlink, NetlinkAnswer,
    NetlinkError, NetlinkJob, Sysctl, System,
};

/// A link of the fake kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeLink {
    /// Its name.
    pub name: String,
    /// Its namespace (`None`: the host's).
    pub netns: Option<PathBuf>,
    /// The other end of a veth.
    pub peer: Option<u32>,
    /// Whether it is a bridge.
    pub bridge: bool,
    /// Whether it is up.
    pub up: bool,
    /// The bridge it is in.
    pub controller: Option<u32>,
    /// Its MTU.
    pub mtu: u32,
    /// Its addresses with prefix length.
    pub addresses: Vec<(IpAddr, u8)>,
    /// Gateways of its default routes.
    pub routes: Vec<IpAddr>,
}

#[derive(Debug, Default)]
struct World {
    calls: Vec<String>,
    failures: Vec<(String, NetlinkError)>,
    links: BTreeMap<u32, FakeLink>,
    next_index: u32,
    namespaces: Vec<PathBuf>,
    /// (family, table, chain) → rules.
    chains: BTreeMap<(Family, String, String), Vec<Vec<String>>>,
    no_firewall: Vec<Family>,
    sysctl: BTreeMap<String, String>,
    guests: Vec<PathBuf>,
    /// Route MTUs by destination ([`FakeKernel::set_route_mtu`]).
    route_mtus: BTreeMap<IpAddr, u32>,
}

impl World {
    fn add_link(&mut self, link: FakeLink) -> u32 {
        self.next_index += 1;
        self.links.insert(self.next_index, link);
        self.next_index
    }

    fn remove_link(&mut self, index: u32) {
        if let Some(link) = self.links.remove(&index)
            && let Some(peer) = link.peer
        {
            self.links.remove(&peer);
        }
    }

    fn find(&self, ns: &Option<PathBuf>, name: &str) -> Option<u32> {
        self.links
            .iter()
            .find(|(_, l)| &l.netns == ns && l.name == name)
            .map(|(i, _)| *i)
    }
}

/// The fake kernel; clones share it. [`FakeKernel::system`] hands its seams to a data plane,
/// the other methods script and inspect it.
#[derive(Debug, Clone, Default)]
pub struct FakeKernel(Arc<Mutex<World>>);

impl FakeKernel {
    /// A kernel with `lo` in the host namespace, the built-in iptables chains, and IPv6
    /// forwarding off on `all`, `lo` and `eth0` (whose `accept_ra` is 1).
    pub fn new() -> Self {
        let kernel = Self::default();
        {
            let mut w = kernel.world();
            w.add_link(FakeLink::named("lo", None));
            w.add_link(FakeLink::named("eth0", None));
            for family in [Family::V4, Family::V6] {
                for (table, chain) in [
                    ("nat", "PREROUTING"),
                    ("nat", "INPUT"),
                    ("nat", "OUTPUT"),
                    ("nat", "POSTROUTING"),
                    ("filter", "INPUT"),
                    ("filter", "FORWARD"),
                    ("filter", "OUTPUT"),
                ] {
                    w.chains
                        .insert((family, table.into(), chain.into()), Vec::new());
                }
            }
            for (key, value) in [
                ("net/ipv4/ip_forward", "0"),
                ("net/ipv6/conf/all/forwarding", "0"),
                ("net/ipv6/conf/all/accept_ra", "1"),
                ("net/ipv6/conf/lo/accept_ra", "1"),
                ("net/ipv6/conf/eth0/accept_ra", "1"),
            ] {
                w.sysctl.insert(key.into(), value.into());
            }
        }
        kernel
    }

    /// The seams for a data plane, all backed by this kernel.
    pub fn system(&self) -> System {
        System {
            netlink: Arc::new(FakeNetlink {
                kernel: self.clone(),
                netns: None,
            }),
            firewall: Arc::new(FakeFirewall(self.clone())),
            namespaces: Arc::new(FakeNamespaces(self.clone())),
            sysctl: Arc::new(FakeSysctl(self.clone())),
        }
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every call so far, e.g. `host: add_veth oakrsv2 oakrsp2 1450`,
    /// `iptables -t nat -A OAKRS-DNAT …`, `netns create oakrs-app.0`.
    pub fn calls(&self) -> Vec<String> {
        self.world().calls.clone()
    }

    /// Forgets the calls so far.
    pub fn clear_calls(&self) {
        self.world().calls.clear();
    }

    /// Netlink calls whose record starts with `call` fail with `errno` from now on.
    pub fn fail(&self, call: &str, errno: i32) {
        self.world()
            .failures
            .push((call.to_owned(), NetlinkError::errno(errno)));
    }

    /// `ip6tables` (or `iptables`) is not installed from now on.
    pub fn without_firewall(&self, family: Family) {
        self.world().no_firewall.push(family);
    }

    /// The links of namespace `netns` (`None`: the host's) by name.
    pub fn links(&self, netns: Option<&Path>) -> BTreeMap<String, FakeLink> {
        let ns = netns.map(Path::to_owned);
        self.world()
            .links
            .values()
            .filter(|l| l.netns == ns)
            .map(|l| (l.name.clone(), l.clone()))
            .collect()
    }

    /// Adds a link to namespace `netns` as someone else would (or a crashed worker did).
    pub fn add_link(&self, netns: Option<&Path>, name: &str) -> u32 {
        self.world()
            .add_link(FakeLink::named(name, netns.map(Path::to_owned)))
    }

    /// The namespaces that exist.
    pub fn namespaces(&self) -> Vec<PathBuf> {
        self.world().namespaces.clone()
    }

    /// The rules of `chain` in `table`, `None` when the chain does not exist.
    pub fn rules(&self, family: Family, table: &str, chain: &str) -> Option<Vec<String>> {
        self.world()
            .chains
            .get(&(family, table.into(), chain.into()))
            .map(|rules| rules.iter().map(|r| r.join(" ")).collect())
    }

    /// The user-defined chains of `family` as `table/chain`.
    pub fn user_chains(&self, family: Family) -> Vec<String> {
        self.world()
            .chains
            .keys()
            .filter(|(f, _, c)| *f == family && c.chars().any(|c| c == '-'))
            .map(|(_, t, c)| format!("{t}/{c}"))
            .collect()
    }

    /// Adds link `name` to the host namespace with `mtu` and `address/prefix_len`, up (an
    /// underlay interface).
    pub fn add_host_link(&self, name: &str, mtu: u32, address: IpAddr, prefix_len: u8) {
        let mut link = FakeLink::named(name, None);
        link.mtu = mtu;
        link.up = true;
        link.addresses.push((address, prefix_len));
        self.world().add_link(link);
    }

    /// Adds a default route via `gateway` out of host link `name`.
    pub fn add_host_default_route(&self, name: &str, gateway: IpAddr) {
        let mut w = self.world();
        let index = w.find(&None, name).expect("the link exists");
        w.links.get_mut(&index).expect("found").routes.push(gateway);
    }

    /// The route to `to` has its own MTU `mtu` (`ip route add … mtu`).
    pub fn set_route_mtu(&self, to: IpAddr, mtu: u32) {
        self.world().route_mtus.insert(to, mtu);
    }

    /// A value under `/proc/sys`.
    pub fn sysctl(&self, key: &str) -> Option<String> {
        self.world().sysctl.get(key).cloned()
    }

    /// The namespaces that got a guest network.
    pub fn guests(&self) -> Vec<PathBuf> {
        self.world().guests.clone()
    }
}

impl FakeLink {
    fn named(name: &str, netns: Option<PathBuf>) -> Self {
        Self {
            name: name.to_owned(),
            netns,
            peer: None,
            bridge: false,
            up: false,
            controller: None,
            mtu: 1500,
            addresses: Vec::new(),
            routes: Vec::new(),
        }
    }
}

/// [`Netlink`] in one namespace of a [`FakeKernel`].
#[derive(Debug, Clone)]
pub struct FakeNetlink {
    kernel: FakeKernel,
    netns: Option<PathBuf>,
}

impl FakeNetlink {
    /// Records `call` and answers the scripted failure for it, if any.
    fn call(&self, call: String) -> Result<MutexGuard<'_, World>, NetlinkError> {
        let mut w = self.kernel.world();
        let ns = match &self.netns {
            None => "host".to_owned(),
            Some(p) => p.file_name().unwrap_or_default().to_string_lossy().into(),
        };
        let record = format!("{ns}: {call}");
        let failure = w
            .failures
            .iter()
            .find(|(prefix, _)| record.starts_with(prefix.as_str()) || call.starts_with(prefix))
            .map(|(_, e)| e.clone());
        w.calls.push(record);
        match failure {
            Some(e) => Err(e),
            None => Ok(w),
        }
    }

    fn link<'w>(
        w: &'w mut World,
        index: u32,
        ns: &Option<PathBuf>,
    ) -> Result<&'w mut FakeLink, NetlinkError> {
        w.links
            .get_mut(&index)
            .filter(|l| &l.netns == ns)
            .ok_or_else(|| NetlinkError::errno(ENODEV))
    }
}

#[async_trait]
impl Netlink for FakeNetlink {
    async fn link_index(&self, name: &str) -> Result<Option<u32>, NetlinkError> {
        let w = self.call(format!("link_index {name}"))?;
        Ok(w.find(&self.netns, name))
    }

    async fn links(&self) -> Result<Vec<(u32, String)>, NetlinkError> {
        let w = self.call("links".into())?;
        Ok(w.links
            .iter()
            .filter(|(_, l)| l.netns == self.netns)
            .map(|(i, l)| (*i, l.name.clone()))
            .collect())
    }

    async fn add_bridge(&self, name: &str, mtu: u32) -> Result<(), NetlinkError> {
        let mut w = self.call(format!("add_bridge {name} {mtu}"))?;
        if w.find(&self.netns, name).is_some() {
            return Err(NetlinkError::errno(EEXIST));
        }
        let mut link = FakeLink::named(name, self.netns.clone());
        link.bridge = true;
        link.mtu = mtu;
        w.add_link(link);
        Ok(())
    }

    async fn add_veth(&self, name: &str, peer: &str, mtu: u32) -> Result<(), NetlinkError> {
        let mut w = self.call(format!("add_veth {name} {peer} {mtu}"))?;
        if w.find(&self.netns, name).is_some() || w.find(&self.netns, peer).is_some() {
            return Err(NetlinkError::errno(EEXIST));
        }
        let mut one = FakeLink::named(name, self.netns.clone());
        one.mtu = mtu;
        let mut two = FakeLink::named(peer, self.netns.clone());
        two.mtu = mtu;
        let a = w.add_link(one);
        let b = w.add_link(two);
        w.links.get_mut(&a).expect("just added").peer = Some(b);
        w.links.get_mut(&b).expect("just added").peer = Some(a);
        Ok(())
    }

    async fn delete_link(&self, index: u32) -> Result<(), NetlinkError> {
        let mut w = self.call(format!("delete_link {index}"))?;
        Self::link(&mut w, index, &self.netns)?;
        w.remove_link(index);
        Ok(())
    }

    async fn move_to_netns(&self, index: u32, netns: &Path) -> Result<(), NetlinkError> {
        let mut w = self.call(format!("move_to_netns {index} {}", netns.display()))?;
        if !w.namespaces.iter().any(|n| n == netns) {
            return Err(NetlinkError::errno(super::sys::ENOENT));
        }
        Self::link(&mut w, index, &self.netns)?.netns = Some(netns.to_owned());
        Ok(())
    }

    async fn set_up(
        &self,
        index: u32,
        rename: Option<&str>,
        mtu: Option<u32>,
        controller: Option<u32>,
    ) -> Result<(), NetlinkError> {
        let mut w = self.call(format!(
            "set_up {index} rename={rename:?} mtu={mtu:?} controller={controller:?}"
        ))?;
        let link = Self::link(&mut w, index, &self.netns)?;
        link.up = true;
        if let Some(name) = rename {
            link.name = name.to_owned();
        }
        if let Some(mtu) = mtu {
            link.mtu = mtu;
        }
        if controller.is_some() {
            link.controller = controller;
        }
        Ok(())
    }

    async fn add_address(
        &self,
        index: u32,
        address: IpAddr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        let mut w = self.call(format!("add_address {index} {address}/{prefix_len}"))?;
        let link = Self::link(&mut w, index, &self.netns)?;
        if link.addresses.iter().any(|(a, _)| *a == address) {
            return Err(NetlinkError::errno(EEXIST));
        }
        link.addresses.push((address, prefix_len));
        Ok(())
    }

    async fn addresses(&self, index: u32) -> Result<Vec<IpAddr>, NetlinkError> {
        let mut w = self.call(format!("addresses {index}"))?;
        Ok(Self::link(&mut w, index, &self.netns)?
            .addresses
            .iter()
            .map(|(a, _)| *a)
            .collect())
    }

    async fn add_default_route(&self, index: u32, gateway: IpAddr) -> Result<(), NetlinkError> {
        let mut w = self.call(format!("add_default_route {index} via {gateway}"))?;
        let link = Self::link(&mut w, index, &self.netns)?;
        if link.routes.contains(&gateway) {
            return Err(NetlinkError::errno(EEXIST));
        }
        link.routes.push(gateway);
        Ok(())
    }

    async fn link_mtu(&self, index: u32) -> Result<Option<u32>, NetlinkError> {
        let w = self.call(format!("link_mtu {index}"))?;
        Ok(w.links
            .get(&index)
            .filter(|l| l.netns == self.netns)
            .map(|l| l.mtu))
    }

    /// The link with an address whose prefix holds `to`, else one with a default route of
    /// `to`'s IP version; the route MTU scripted with [`FakeKernel::set_route_mtu`].
    async fn route_to(&self, to: IpAddr) -> Result<Option<(u32, Option<u32>)>, NetlinkError> {
        let w = self.call(format!("route_to {to}"))?;
        let mine = || w.links.iter().filter(|(_, l)| l.netns == self.netns);
        let on_link =
            mine().find(|(_, l)| l.addresses.iter().any(|(a, len)| same_prefix(*a, to, *len)));
        let via_gateway =
            || mine().find(|(_, l)| l.routes.iter().any(|g| g.is_ipv4() == to.is_ipv4()));
        Ok(on_link
            .or_else(via_gateway)
            .map(|(i, _)| (*i, w.route_mtus.get(&to).copied())))
    }
}

/// Whether `a` and `b` agree in their first `len` bits (and are of one IP version).
fn same_prefix(a: IpAddr, b: IpAddr, len: u8) -> bool {
    let bits = |x: IpAddr| match x {
        IpAddr::V4(v) => (u128::from(u32::from(v)) << 96, 32u8),
        IpAddr::V6(v) => (u128::from(v), 128u8),
    };
    let ((a, width_a), (b, width_b)) = (bits(a), bits(b));
    if width_a != width_b || len > width_a {
        return false;
    }
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    };
    a & mask == b & mask
}

/// [`Firewall`] of a [`FakeKernel`]: an iptables that keeps its chains in memory and knows
/// `-N -L -F -X -C -A -I -D -S` (with `-t`, `-n`).
#[derive(Debug, Clone)]
pub struct FakeFirewall(FakeKernel);

fn answer(success: bool, stdout: String) -> io::Result<FirewallOutput> {
    Ok(FirewallOutput {
        success,
        stdout,
        stderr: if success {
            String::new()
        } else {
            "iptables: fake says no.".into()
        },
    })
}

#[async_trait]
impl Firewall for FakeFirewall {
    async fn run(&self, family: Family, args: &[&str]) -> io::Result<FirewallOutput> {
        let mut w = self.0.world();
        w.calls
            .push(format!("{} {}", family.binary(), args.join(" ")));
        if w.no_firewall.contains(&family) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "not installed"));
        }
        let mut table = "filter".to_owned();
        let mut rest: Vec<&str> = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match *a {
                "-t" => table = it.next().copied().unwrap_or_default().to_owned(),
                "-n" => {}
                other => rest.push(other),
            }
        }
        let (op, chain, rule) = match rest.as_slice() {
            [op, chain, rule @ ..] => (*op, chain.to_string(), rule),
            _ => return answer(false, String::new()),
        };
        let key = (family, table, chain.clone());
        let spec: Vec<String> = rule.iter().map(|s| s.to_string()).collect();
        let exists = w.chains.contains_key(&key);
        match op {
            "-N" if !exists => {
                w.chains.insert(key, Vec::new());
                answer(true, String::new())
            }
            "-L" | "-F" | "-X" | "-C" | "-A" | "-I" | "-D" | "-S" if !exists => {
                answer(false, String::new())
            }
            "-L" => answer(true, String::new()),
            "-F" => {
                w.chains.insert(key, Vec::new());
                answer(true, String::new())
            }
            "-X" => {
                let empty = w.chains[&key].is_empty();
                if empty {
                    w.chains.remove(&key);
                }
                answer(empty, String::new())
            }
            "-C" => answer(w.chains[&key].contains(&spec), String::new()),
            "-A" => {
                w.chains.get_mut(&key).expect("exists").push(spec);
                answer(true, String::new())
            }
            "-I" => {
                let (at, spec) = match spec.split_first() {
                    Some((n, r)) if n.parse::<usize>().is_ok() => {
                        (n.parse::<usize>().unwrap_or(1), r.to_vec())
                    }
                    _ => (1, spec),
                };
                let rules = w.chains.get_mut(&key).expect("exists");
                rules.insert((at - 1).min(rules.len()), spec);
                answer(true, String::new())
            }
            "-D" => {
                let rules = w.chains.get_mut(&key).expect("exists");
                match rules.iter().position(|r| *r == spec) {
                    Some(i) => {
                        rules.remove(i);
                        answer(true, String::new())
                    }
                    None => answer(false, String::new()),
                }
            }
            "-S" => {
                let mut out = format!("-N {chain}\n");
                for r in &w.chains[&key] {
                    // As iptables -S prints it: the comment in quotes.
                    let shown: Vec<String> = r
                        .iter()
                        .enumerate()
                        .map(|(i, t)| match i.checked_sub(1).map(|p| r[p].as_str()) {
                            Some("--comment") => format!("\"{t}\""),
                            _ => t.clone(),
                        })
                        .collect();
                    out.push_str(&format!("-A {chain} {}\n", shown.join(" ")));
                }
                answer(true, out)
            }
            _ => answer(false, String::new()),
        }
    }
}

/// [`Namespaces`] of a [`FakeKernel`]: a namespace is a name; inside it, a [`FakeNetlink`].
#[derive(Debug, Clone)]
pub struct FakeNamespaces(FakeKernel);

#[async_trait]
impl Namespaces for FakeNamespaces {
    async fn create(&self, name: &str) -> io::Result<PathBuf> {
        let path = netns::path_of(name);
        let mut w = self.0.world();
        w.calls.push(format!("netns create {name}"));
        if !w.namespaces.contains(&path) {
            w.namespaces.push(path.clone());
            w.add_link(FakeLink::named("lo", Some(path.clone())));
        }
        Ok(path)
    }

    async fn delete(&self, path: &Path) -> io::Result<()> {
        let mut w = self.0.world();
        w.calls.push(format!("netns delete {}", path.display()));
        w.namespaces.retain(|n| n != path);
        let inside: Vec<u32> = w
            .links
            .iter()
            .filter(|(_, l)| l.netns.as_deref() == Some(path))
            .map(|(i, _)| *i)
            .collect();
        // The kernel frees the namespace's links, and with a veth its peer.
        for index in inside {
            w.remove_link(index);
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        let mut w = self.0.world();
        w.calls.push(format!("netns list {prefix}"));
        let mut names: Vec<String> = w
            .namespaces
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .filter(|n| n.starts_with(prefix))
            .collect();
        names.sort();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> bool {
        self.0.world().namespaces.iter().any(|n| n == path)
    }

    async fn with_netlink(
        &self,
        path: &Path,
        job: NetlinkJob,
    ) -> io::Result<Result<NetlinkAnswer, DataPlaneError>> {
        if !self.exists(path) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such namespace"));
        }
        let netlink = FakeNetlink {
            kernel: self.0.clone(),
            netns: Some(path.to_owned()),
        };
        Ok(job(&netlink).await)
    }

    async fn add_guest(
        &self,
        path: &Path,
        guest: &GuestNetwork,
        _mtu: u32,
    ) -> io::Result<Result<(), DataPlaneError>> {
        let mut w = self.0.world();
        w.calls
            .push(format!("netns {} add_guest {}", path.display(), guest.tap));
        w.guests.push(path.to_owned());
        Ok(Ok(()))
    }
}

/// [`Sysctl`] of a [`FakeKernel`].
#[derive(Debug, Clone)]
pub struct FakeSysctl(FakeKernel);

impl Sysctl for FakeSysctl {
    fn read(&self, key: &str) -> Option<String> {
        self.0.world().sysctl.get(key).cloned()
    }

    fn write(&self, key: &str, value: &str) -> io::Result<()> {
        let mut w = self.0.world();
        w.calls.push(format!("sysctl {key}={value}"));
        w.sysctl.insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    fn list(&self, key: &str) -> Vec<String> {
        let prefix = format!("{key}/");
        let mut names: Vec<String> = self
            .0
            .world()
            .sysctl
            .keys()
            .filter_map(|k| {
                k.strip_prefix(&prefix)?
                    .split('/')
                    .next()
                    .map(str::to_owned)
            })
            .collect();
        names.dedup();
        names
    }
}
