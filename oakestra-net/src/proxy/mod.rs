//! The service-IP proxy's translation logic (DESIGN.md §4.6, reference `oakestra-net.md`
//! §3.3–3.6), pure: no sockets, no TUN. The worker feeds it the packets its TUN device reads
//! ([`Proxy::outgoing`]) and the packets that arrive through the UDP tunnel
//! ([`Proxy::incoming`]), and does what the verdict says.
//!
//! * **Outgoing** (a local instance sends to a service IP — a service's `rr_ip` or an instance
//!   IP): the destination becomes the chosen instance's namespace IP, the source becomes the
//!   sender's own instance IP, and the packet goes to the worker that hosts the target (or is
//!   delivered locally). A flow stays on its instance while that instance lives; a new flow on
//!   an `rr_ip` takes the next instance in **round robin** (Oakestra picked at random); a new
//!   flow on a service's **closest IP** takes the instance whose worker has the lowest RTT from
//!   this worker ([`Proxy::set_rtt`]; Oakestra documented it and never built it). A service IP
//!   the table does not know yields [`Verdict::Unknown`], so the caller can ask the cluster
//!   without holding up other traffic.
//! * **Incoming**: a reply to a local client's flow gets its source set back to the service IP
//!   the client dialled, so the client only ever sees the service IP; a request for a local
//!   instance is delivered as it is (the server sees the client's instance IP). A packet for an
//!   address that is not a local instance is dropped (the tunnel is not an open relay).
//! * **IPv4 and IPv6** alike: a service's `rr_ip_v6` / `closest_ip_v6` / `instance_ip_v6`
//!   (fdff::/16) lead to the instances' IPv6 namespace addresses. A flow is IPv4 or IPv6
//!   throughout; an IPv6 flow picks only among instances that have IPv6 addresses, with the
//!   same round robin, closest choice, stickiness and failover as IPv4.
//! * TCP, UDP and ICMP / ICMPv6 echo (Oakestra dropped ICMP), with checksums updated
//!   incrementally; [`Proxy::outgoing_offloaded`] and [`Proxy::incoming_offloaded`] take
//!   packets whose TCP/UDP checksum is still partial (checksum offload through the TUN).

pub mod frame;
pub mod packet;
pub mod rtt;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

pub use packet::{Checksum, Flow, FragmentOf, PacketError};

/// One instance as the proxy knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRoute {
    /// Instance number.
    pub number: u32,
    /// Its service-level address (10.30.0.0/16).
    pub instance_ip: Ipv4Addr,
    /// Its namespace address on its worker.
    pub nsip: Ipv4Addr,
    /// Its service-level IPv6 address (fdff::/16), if it has one.
    pub instance_ip_v6: Option<Ipv6Addr>,
    /// Its IPv6 namespace address on its worker (in the worker's /120), if it has one.
    pub nsip_v6: Option<Ipv6Addr>,
    /// Tunnel endpoint of its worker (`host_ip:50103`).
    pub node: SocketAddr,
}

impl InstanceRoute {
    /// Its (instance IP, namespace IP) in IP version `v6`: IPv6 only when it has both.
    fn addresses(&self, v6: bool) -> Option<(IpAddr, IpAddr)> {
        if v6 {
            Some((self.instance_ip_v6?.into(), self.nsip_v6?.into()))
        } else {
            Some((self.instance_ip.into(), self.nsip.into()))
        }
    }
}

/// A service and its instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRoutes {
    /// `app.appns.service.servicens`.
    pub job_name: String,
    /// Round-robin address of the service.
    pub rr_ip: Option<Ipv4Addr>,
    /// Closest address of the service: new flows go to the instance nearest to this worker.
    pub closest_ip: Option<Ipv4Addr>,
    /// Round-robin IPv6 address of the service (fdff:2000::/21).
    pub rr_ip_v6: Option<Ipv6Addr>,
    /// Closest IPv6 address of the service.
    pub closest_ip_v6: Option<Ipv6Addr>,
    /// The live instances.
    pub instances: Vec<InstanceRoute>,
}

impl ServiceRoutes {
    /// The service's round-robin and closest addresses (both versions), with their meaning.
    fn service_ips(&self) -> Vec<(IpAddr, ServiceIp)> {
        let job = &self.job_name;
        let rr = [
            self.rr_ip.map(IpAddr::from),
            self.rr_ip_v6.map(IpAddr::from),
        ];
        let closest = [
            self.closest_ip.map(IpAddr::from),
            self.closest_ip_v6.map(IpAddr::from),
        ];
        let rr = rr
            .into_iter()
            .flatten()
            .map(|a| (a, ServiceIp::RoundRobin(job.clone())));
        let closest = closest
            .into_iter()
            .flatten()
            .map(|a| (a, ServiceIp::Closest(job.clone())));
        rr.chain(closest).collect()
    }
}

/// What to do with a packet (already rewritten in place where that applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send it through the tunnel to this worker.
    Tunnel(SocketAddr),
    /// Write it to the local TUN device (the target is on this worker).
    Deliver,
    /// The destination is a service IP (IPv4 or IPv6) the table does not know: ask the
    /// cluster (table query). The packet is unchanged.
    Unknown(IpAddr),
    /// Drop it, for this reason.
    Drop(String),
}

/// What an address means to the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ServiceIp {
    /// A service's round-robin IP.
    RoundRobin(String),
    /// A service's closest IP.
    Closest(String),
    /// One instance's IP.
    Instance(String, u32),
}

/// Which instance a flow (protocol, client nsip, client port, service ip, service port) uses.
type FlowKey = (u8, IpAddr, u16, IpAddr, u16);
/// A reply (protocol, local nsip, local port, remote instance ip, remote port) → the service
/// IP the local side dialled.
type ReplyKey = (u8, IpAddr, u16, IpAddr, u16);

/// Flow and reply entries kept at most; beyond that the oldest generation is dropped (its
/// flows pick an instance again, replies of very old flows keep their instance source).
const MAX_FLOWS: usize = 1 << 16;

/// The proxy of one worker.
#[derive(Debug, Clone)]
pub struct Proxy {
    /// This worker's tunnel endpoint.
    local: SocketAddr,
    services: BTreeMap<String, ServiceRoutes>,
    by_ip: HashMap<IpAddr, ServiceIp>,
    /// Namespace IP (either version) → (job name, instance number), every known instance.
    by_nsip: HashMap<IpAddr, (String, u32)>,
    flows: HashMap<FlowKey, (String, u32)>,
    replies: HashMap<ReplyKey, IpAddr>,
    /// IPv4 datagrams sent in fragments: what their first fragment became (new source, new
    /// destination, target worker), so that the rest, which carry no ports, follow it.
    out_fragments: HashMap<FragmentOf, (IpAddr, IpAddr, SocketAddr)>,
    /// The same for fragments from the tunnel: the source their first fragment got, if any.
    in_fragments: HashMap<FragmentOf, Option<IpAddr>>,
    /// Round-robin counters per (service, IPv6?).
    round_robin: HashMap<(String, bool), usize>,
    /// Tie-break counters of closest IPs, per (service, IPv6?).
    closest_turn: HashMap<(String, bool), usize>,
    /// RTT from this worker to other workers' tunnel endpoints (and to itself, if set).
    rtt: HashMap<SocketAddr, Duration>,
}

impl Proxy {
    /// A proxy for the worker whose tunnel endpoint is `local`.
    pub fn new(local: SocketAddr) -> Self {
        Self {
            local,
            services: BTreeMap::new(),
            by_ip: HashMap::new(),
            by_nsip: HashMap::new(),
            flows: HashMap::new(),
            replies: HashMap::new(),
            out_fragments: HashMap::new(),
            in_fragments: HashMap::new(),
            round_robin: HashMap::new(),
            closest_turn: HashMap::new(),
            rtt: HashMap::new(),
        }
    }

    /// This worker's tunnel endpoint.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// Sets the RTT from this worker to the worker whose tunnel endpoint is `node` (a
    /// measurement or an override). Setting one for this worker's own endpoint replaces the 0
    /// its local instances count as. Used by new flows on closest IPs; existing flows stay.
    pub fn set_rtt(&mut self, node: SocketAddr, rtt: Duration) {
        self.rtt.insert(node, rtt);
    }

    /// Forgets the RTT of `node`: remote workers rank after measured ones again, this worker
    /// counts as 0 again.
    pub fn clear_rtt(&mut self, node: SocketAddr) {
        self.rtt.remove(&node);
    }

    /// The RTT set for `node`, if any.
    pub fn rtt(&self, node: SocketAddr) -> Option<Duration> {
        self.rtt.get(&node).copied()
    }

    /// Every RTT set, by tunnel endpoint, in address order.
    pub fn rtts(&self) -> BTreeMap<SocketAddr, Duration> {
        self.rtt.iter().map(|(n, d)| (*n, *d)).collect()
    }

    /// The tunnel endpoints of every worker that hosts a known instance (this one included
    /// when it hosts one), in address order.
    pub fn nodes(&self) -> BTreeSet<SocketAddr> {
        self.services
            .values()
            .flat_map(|s| s.instances.iter().map(|i| i.node))
            .collect()
    }

    /// How near `node` is, for the closest choice: measured (or set) RTTs first, by RTT, this
    /// worker counting as 0 unless set; unmeasured remote workers after every measured one.
    fn distance(&self, node: SocketAddr) -> (bool, Duration) {
        match self.rtt.get(&node) {
            Some(d) => (false, *d),
            None if node == self.local => (false, Duration::ZERO),
            None => (true, Duration::ZERO),
        }
    }

    /// The instances of `job` a new flow of IP version `v6` can take.
    fn candidates(&self, job: &str, v6: bool) -> Vec<&InstanceRoute> {
        self.services.get(job).map_or_else(Vec::new, |s| {
            s.instances
                .iter()
                .filter(|i| i.addresses(v6).is_some())
                .collect()
        })
    }

    /// The instance of `job` a new flow to its closest IP takes: the nearest; among equally
    /// near ones, each in turn (ordered by number).
    fn closest_instance(&mut self, job: &str, v6: bool) -> Option<u32> {
        let instances = self.candidates(job, v6);
        let best = instances.iter().map(|i| self.distance(i.node)).min()?;
        let nearest: Vec<u32> = instances
            .iter()
            .filter(|i| self.distance(i.node) == best)
            .map(|i| i.number)
            .collect();
        let turn = self.closest_turn.entry((job.to_owned(), v6)).or_insert(0);
        let pick = nearest[*turn % nearest.len()];
        *turn = turn.wrapping_add(1);
        Some(pick)
    }

    /// The instance of `job` a new flow to its round-robin IP takes: the next in turn.
    fn next_instance(&mut self, job: &str, v6: bool) -> Option<u32> {
        let instances: Vec<u32> = self.candidates(job, v6).iter().map(|i| i.number).collect();
        if instances.is_empty() {
            return None;
        }
        let next = self.round_robin.entry((job.to_owned(), v6)).or_insert(0);
        let pick = instances[*next % instances.len()];
        *next = next.wrapping_add(1);
        Some(pick)
    }

    /// Adds or replaces a service (e.g. from a table query answer or an update).
    pub fn set_service(&mut self, mut service: ServiceRoutes) {
        self.remove_service(&service.job_name.clone());
        service.instances.sort_by_key(|i| i.number);
        let job = service.job_name.clone();
        for (address, meaning) in service.service_ips() {
            self.by_ip.insert(address, meaning);
        }
        for i in &service.instances {
            for v6 in [false, true] {
                if let Some((instance_ip, nsip)) = i.addresses(v6) {
                    self.by_ip
                        .insert(instance_ip, ServiceIp::Instance(job.clone(), i.number));
                    self.by_nsip.insert(nsip, (job.clone(), i.number));
                }
            }
        }
        self.services.insert(job, service);
    }

    /// Forgets a service; its flows pick again (and fail) on their next packet.
    pub fn remove_service(&mut self, job_name: &str) {
        if let Some(old) = self.services.remove(job_name) {
            for (address, _) in old.service_ips() {
                self.by_ip.remove(&address);
            }
            for i in &old.instances {
                for v6 in [false, true] {
                    if let Some((instance_ip, nsip)) = i.addresses(v6) {
                        self.by_ip.remove(&instance_ip);
                        self.by_nsip.remove(&nsip);
                    }
                }
            }
        }
    }

    /// The job names of every known service.
    pub fn job_names(&self) -> Vec<String> {
        self.services.keys().cloned().collect()
    }

    /// The service named `job_name`, if known.
    pub fn service(&self, job_name: &str) -> Option<&ServiceRoutes> {
        self.services.get(job_name)
    }

    fn instance(&self, job: &str, number: u32) -> Option<&InstanceRoute> {
        self.services
            .get(job)?
            .instances
            .iter()
            .find(|i| i.number == number)
    }

    fn remember<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, key: K, value: V) {
        if map.len() >= MAX_FLOWS && !map.contains_key(&key) {
            map.clear();
        }
        map.insert(key, value);
    }

    /// A packet a local instance sent towards a service IP (read from the TUN device), with
    /// complete checksums.
    pub fn outgoing(&mut self, packet: &mut [u8]) -> Verdict {
        self.outgoing_offloaded(packet, false)
    }

    /// [`Proxy::outgoing`] for a packet whose TCP/UDP checksum may be partial: `partial`
    /// means it holds only the uncomplemented pseudo-header sum (a TUN with `IFF_VNET_HDR`
    /// and `VIRTIO_NET_HDR_F_NEEDS_CSUM`), and it stays partial, updated for the new
    /// addresses. Packets may be GSO super-packets of up to 64 KiB.
    pub fn outgoing_offloaded(&mut self, packet: &mut [u8], partial: bool) -> Verdict {
        let fragment = packet::fragment(packet);
        if let Some((of, false)) = fragment {
            return self.outgoing_fragment(packet, of, partial);
        }
        let flow = match packet::flow(packet) {
            Ok(f) => f,
            Err(e) => return Verdict::Drop(e.to_string()),
        };
        let v6 = flow.dst.is_ipv6();
        let Some(meaning) = self.by_ip.get(&flow.dst).cloned() else {
            return Verdict::Unknown(flow.dst);
        };
        let Some(sender) = self
            .by_nsip
            .get(&flow.src)
            .and_then(|(job, n)| self.instance(job, *n))
            .filter(|i| i.node == self.local)
            .and_then(|i| i.addresses(v6))
        else {
            return Verdict::Drop(format!(
                "sender {} is not an instance on this worker the proxy knows",
                flow.src
            ));
        };
        let key: FlowKey = (
            flow.protocol,
            flow.src,
            flow.src_port,
            flow.dst,
            flow.dst_port,
        );
        let sticky = self
            .flows
            .get(&key)
            .filter(|(job, n)| {
                self.instance(job, *n)
                    .is_some_and(|i| i.addresses(v6).is_some())
            })
            .cloned();
        let (job, number) = match sticky {
            Some(t) => t,
            None => {
                let chosen = match &meaning {
                    ServiceIp::Instance(job, n) => Some((job.clone(), *n)),
                    ServiceIp::RoundRobin(job) => {
                        self.next_instance(job, v6).map(|n| (job.clone(), n))
                    }
                    ServiceIp::Closest(job) => {
                        self.closest_instance(job, v6).map(|n| (job.clone(), n))
                    }
                };
                let Some(chosen) = chosen else {
                    let family = if v6 { " with IPv6" } else { "" };
                    return Verdict::Drop(format!(
                        "service IP {} has no instance{family}",
                        flow.dst
                    ));
                };
                Self::remember(&mut self.flows, key, chosen.clone());
                chosen
            }
        };
        let Some((target_node, (target_ip, target_nsip))) = self
            .instance(&job, number)
            .and_then(|i| Some((i.node, i.addresses(v6)?)))
        else {
            return Verdict::Drop(format!("instance {number} of {job} is gone"));
        };
        let mode = Checksum::partial_if(partial);
        if let Err(e) = packet::set_dst_with(packet, target_nsip, mode)
            .and_then(|()| packet::set_src_with(packet, sender.0, mode))
        {
            return Verdict::Drop(e.to_string());
        }
        Self::remember(
            &mut self.replies,
            (
                flow.protocol,
                flow.src,
                flow.src_port,
                target_ip,
                flow.dst_port,
            ),
            flow.dst,
        );
        if let Some((of, true)) = fragment {
            Self::remember(
                &mut self.out_fragments,
                of,
                (sender.0, target_nsip, target_node),
            );
        }
        if target_node == self.local {
            // Local target: the reply handling of `incoming` applies to it as well.
            self.incoming_offloaded(packet, partial)
        } else {
            Verdict::Tunnel(target_node)
        }
    }

    /// A packet that arrived through the tunnel (or a local target's, from `outgoing`), with
    /// complete checksums.
    pub fn incoming(&mut self, packet: &mut [u8]) -> Verdict {
        self.incoming_offloaded(packet, false)
    }

    /// [`Proxy::incoming`] for a packet whose TCP/UDP checksum may be partial (see
    /// [`Proxy::outgoing_offloaded`]).
    pub fn incoming_offloaded(&mut self, packet: &mut [u8], partial: bool) -> Verdict {
        let fragment = packet::fragment(packet);
        if let Some((of, false)) = fragment {
            return match self.in_fragments.get(&of).copied() {
                Some(source) => {
                    if let Some(Err(e)) = source.map(|s| packet::set_src(packet, s)) {
                        return Verdict::Drop(e.to_string());
                    }
                    Verdict::Deliver
                }
                None => Verdict::Drop(format!(
                    "fragment of datagram {} from {} whose first fragment did not come",
                    of.id, of.src
                )),
            };
        }
        let flow = match packet::flow(packet) {
            Ok(f) => f,
            Err(e) => return Verdict::Drop(e.to_string()),
        };
        let local_target = self
            .by_nsip
            .get(&flow.dst)
            .and_then(|(job, n)| self.instance(job, *n))
            .is_some_and(|i| i.node == self.local);
        if !local_target {
            return Verdict::Drop(format!("{} is not an instance on this worker", flow.dst));
        }
        let reply: ReplyKey = (
            flow.protocol,
            flow.dst,
            flow.dst_port,
            flow.src,
            flow.src_port,
        );
        let service_ip = self.replies.get(&reply).copied();
        if let Some(service_ip) = service_ip
            && let Err(e) = packet::set_src_with(packet, service_ip, Checksum::partial_if(partial))
        {
            return Verdict::Drop(e.to_string());
        }
        if let Some((of, true)) = fragment {
            Self::remember(&mut self.in_fragments, of, service_ip);
        }
        Verdict::Deliver
    }

    /// A non-first fragment of an IPv4 datagram from a local instance: it goes where its first
    /// fragment went, with the same addresses (it has no transport header to look at).
    fn outgoing_fragment(&mut self, packet: &mut [u8], of: FragmentOf, partial: bool) -> Verdict {
        let Some((source, destination, node)) = self.out_fragments.get(&of).copied() else {
            return Verdict::Drop(format!(
                "fragment of datagram {} from {} whose first fragment did not pass",
                of.id, of.src
            ));
        };
        if let Err(e) =
            packet::set_dst(packet, destination).and_then(|()| packet::set_src(packet, source))
        {
            return Verdict::Drop(e.to_string());
        }
        if node == self.local {
            self.incoming_offloaded(packet, partial)
        } else {
            Verdict::Tunnel(node)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::packet::tests::{assert_checksums, checksum, packet, packet6};
    use super::packet::{ICMP, ICMPV6, TCP, UDP};
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn ip6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn node(n: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, n], 50103))
    }

    const CLIENT: &str = "app.ns.curl.ns";
    const SERVER: &str = "app.ns.nginx.ns";

    /// A client instance on worker 1 (10.18.0.0/26, fc00::100/120) and two server instances,
    /// one on each of workers 1 and 2 (10.18.0.64/26, fc00::200/120).
    fn table() -> Vec<ServiceRoutes> {
        vec![
            ServiceRoutes {
                job_name: CLIENT.into(),
                rr_ip: Some(ip("10.30.0.1")),
                closest_ip: None,
                rr_ip_v6: Some(ip6("fdff:2000::1")),
                closest_ip_v6: None,
                instances: vec![InstanceRoute {
                    number: 0,
                    instance_ip: ip("10.30.0.2"),
                    nsip: ip("10.18.0.2"),
                    instance_ip_v6: Some(ip6("fdff::2")),
                    nsip_v6: Some(ip6("fc00::102")),
                    node: node(1),
                }],
            },
            ServiceRoutes {
                job_name: SERVER.into(),
                rr_ip: Some(ip("10.30.55.55")),
                closest_ip: Some(ip("10.30.66.66")),
                rr_ip_v6: Some(ip6("fdff:2000::55")),
                closest_ip_v6: Some(ip6("fdff:2000::66")),
                instances: vec![
                    InstanceRoute {
                        number: 1,
                        instance_ip: ip("10.30.0.4"),
                        nsip: ip("10.18.0.3"),
                        instance_ip_v6: Some(ip6("fdff::4")),
                        nsip_v6: Some(ip6("fc00::103")),
                        node: node(1),
                    },
                    InstanceRoute {
                        number: 0,
                        instance_ip: ip("10.30.0.3"),
                        nsip: ip("10.18.0.66"),
                        instance_ip_v6: Some(ip6("fdff::3")),
                        nsip_v6: Some(ip6("fc00::202")),
                        node: node(2),
                    },
                ],
            },
        ]
    }

    fn proxies() -> (Proxy, Proxy) {
        let mut one = Proxy::new(node(1));
        let mut two = Proxy::new(node(2));
        for s in table() {
            one.set_service(s.clone());
            two.set_service(s);
        }
        (one, two)
    }

    fn addresses(p: &[u8]) -> (Ipv4Addr, Ipv4Addr) {
        match packet::flow(p).unwrap() {
            Flow {
                src: IpAddr::V4(s),
                dst: IpAddr::V4(d),
                ..
            } => (s, d),
            other => panic!("not IPv4: {other:?}"),
        }
    }

    fn addresses6(p: &[u8]) -> (Ipv6Addr, Ipv6Addr) {
        match packet::flow(p).unwrap() {
            Flow {
                src: IpAddr::V6(s),
                dst: IpAddr::V6(d),
                ..
            } => (s, d),
            other => panic!("not IPv6: {other:?}"),
        }
    }

    #[test]
    fn a_round_trip_through_the_tunnel_shows_the_client_only_the_service_ip() {
        for protocol in [TCP, UDP, ICMP] {
            let (mut one, mut two) = proxies();
            // The first new flow on the RR IP goes to instance 0 (on worker 2).
            let mut request = packet(
                protocol,
                ip("10.18.0.2"),
                ip("10.30.55.55"),
                40000,
                80,
                b"GET /",
            );
            assert_eq!(one.outgoing(&mut request), Verdict::Tunnel(node(2)));
            assert_eq!(
                addresses(&request),
                (ip("10.30.0.2"), ip("10.18.0.66")),
                "src: client instance IP, dst: server namespace IP"
            );
            assert_checksums(&request);
            assert_eq!(two.incoming(&mut request), Verdict::Deliver);
            assert_eq!(addresses(&request), (ip("10.30.0.2"), ip("10.18.0.66")));

            // The server answers its peer, the client's instance IP.
            let (sport, dport) = if protocol == ICMP {
                (40000, 40000)
            } else {
                (80, 40000)
            };
            let mut reply = packet(
                protocol,
                ip("10.18.0.66"),
                ip("10.30.0.2"),
                sport,
                dport,
                b"200 OK",
            );
            if protocol == ICMP {
                reply[20] = 0; // echo reply
                let sum = super::packet::tests::l4_checksum(&reply);
                reply[22..24].copy_from_slice(&sum.to_be_bytes());
            }
            assert_eq!(two.outgoing(&mut reply), Verdict::Tunnel(node(1)));
            assert_eq!(addresses(&reply), (ip("10.30.0.3"), ip("10.18.0.2")));
            assert_eq!(one.incoming(&mut reply), Verdict::Deliver);
            assert_eq!(
                addresses(&reply),
                (ip("10.30.55.55"), ip("10.18.0.2")),
                "the client sees the RR IP it dialled"
            );
            assert_checksums(&reply);
        }
    }

    /// Gives an IPv4 packet its total length and header checksum again.
    fn reseal(p: &mut [u8]) {
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p[10..12].copy_from_slice(&[0, 0]);
        let sum = checksum(&p[..20]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
    }

    /// Splits an IPv4 packet (20-byte header) into two fragments, the first carrying `at`
    /// bytes (a multiple of 8) of what follows the IP header; `id` is the datagram's IP id.
    fn fragments(p: &[u8], at: usize, id: u16) -> (Vec<u8>, Vec<u8>) {
        let mut first = p[..20 + at].to_vec();
        let mut rest = [&p[..20], &p[20 + at..]].concat();
        first[6..8].copy_from_slice(&0x2000u16.to_be_bytes()); // more fragments
        rest[6..8].copy_from_slice(&((at / 8) as u16).to_be_bytes());
        for f in [&mut first, &mut rest] {
            f[4..6].copy_from_slice(&id.to_be_bytes());
            reseal(f);
        }
        (first, rest)
    }

    /// The datagram the two fragments make (what the receiving kernel reassembles).
    fn reassembled(first: &[u8], rest: &[u8]) -> Vec<u8> {
        assert_eq!(
            first[12..20],
            rest[12..20],
            "both fragments carry the same addresses"
        );
        let mut p = [first, &rest[20..]].concat();
        p[6..8].copy_from_slice(&[0, 0]);
        reseal(&mut p);
        p
    }

    #[test]
    fn udp_datagrams_in_fragments_follow_their_first_fragment_both_ways() {
        let (mut one, mut two) = proxies();
        let payload: Vec<u8> = (0..64u8).collect();
        let request = packet(UDP, ip("10.18.0.2"), ip("10.30.55.55"), 40000, 53, &payload);
        let (mut first, mut rest) = fragments(&request, 24, 0x1234);
        // The rest before the first fragment: nowhere to go.
        let mut early = rest.clone();
        assert!(matches!(one.outgoing(&mut early), Verdict::Drop(_)));
        assert_eq!(one.outgoing(&mut first), Verdict::Tunnel(node(2)));
        assert_eq!(one.outgoing(&mut rest), Verdict::Tunnel(node(2)));
        assert_eq!(two.incoming(&mut first), Verdict::Deliver);
        assert_eq!(two.incoming(&mut rest), Verdict::Deliver);
        let whole = reassembled(&first, &rest);
        assert_eq!(addresses(&whole), (ip("10.30.0.2"), ip("10.18.0.66")));
        assert_checksums(&whole);

        // The server's reply, in fragments too, reaches the client from the rr_ip.
        let reply = packet(UDP, ip("10.18.0.66"), ip("10.30.0.2"), 53, 40000, &payload);
        let (mut first, mut rest) = fragments(&reply, 16, 0x4321);
        assert_eq!(two.outgoing(&mut first), Verdict::Tunnel(node(1)));
        assert_eq!(two.outgoing(&mut rest), Verdict::Tunnel(node(1)));
        assert_eq!(one.incoming(&mut first), Verdict::Deliver);
        assert_eq!(one.incoming(&mut rest), Verdict::Deliver);
        let whole = reassembled(&first, &rest);
        assert_eq!(addresses(&whole), (ip("10.30.55.55"), ip("10.18.0.2")));
        assert_checksums(&whole);
        // A fragment of a datagram the tunnel never brought the start of.
        let (_, mut stray) = fragments(&reply, 16, 0x9999);
        assert!(matches!(one.incoming(&mut stray), Verdict::Drop(_)));
    }

    /// Splits an IPv6 packet (40-byte header, no extension headers) into two fragments with a
    /// Fragment header each, the first carrying `at` bytes (a multiple of 8) of the payload.
    fn fragments6(p: &[u8], at: usize, id: u32) -> (Vec<u8>, Vec<u8>) {
        let piece = |offset: usize, bytes: &[u8], more: bool| {
            let mut f = p[..40].to_vec();
            f[4..6].copy_from_slice(&((8 + bytes.len()) as u16).to_be_bytes());
            f[6] = 44; // Fragment
            let offset_more = ((offset / 8) as u16) << 3 | u16::from(more);
            f.extend_from_slice(&[p[6], 0]);
            f.extend_from_slice(&offset_more.to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
            f.extend_from_slice(bytes);
            f
        };
        (
            piece(0, &p[40..40 + at], true),
            piece(at, &p[40 + at..], false),
        )
    }

    /// The IPv6 datagram two fragments make.
    fn reassembled6(first: &[u8], rest: &[u8]) -> Vec<u8> {
        assert_eq!(
            first[8..40],
            rest[8..40],
            "both fragments carry the same addresses"
        );
        let mut p = first[..40].to_vec();
        p[6] = first[40];
        p.extend_from_slice(&first[48..]);
        p.extend_from_slice(&rest[48..]);
        let len = (p.len() - 40) as u16;
        p[4..6].copy_from_slice(&len.to_be_bytes());
        p
    }

    #[test]
    fn ipv6_udp_datagrams_in_fragments_follow_their_first_fragment_both_ways() {
        let (mut one, mut two) = proxies();
        let payload: Vec<u8> = (0..64u8).collect();
        let request = packet6(
            UDP,
            ip6("fc00::102"),
            ip6("fdff:2000::55"),
            40000,
            53,
            &payload,
        );
        let (mut first, mut rest) = fragments6(&request, 24, 0xdead_beef);
        let mut early = rest.clone();
        assert!(matches!(one.outgoing(&mut early), Verdict::Drop(_)));
        assert_eq!(one.outgoing(&mut first), Verdict::Tunnel(node(2)));
        assert_eq!(one.outgoing(&mut rest), Verdict::Tunnel(node(2)));
        assert_eq!(two.incoming(&mut first), Verdict::Deliver);
        assert_eq!(two.incoming(&mut rest), Verdict::Deliver);
        let whole = reassembled6(&first, &rest);
        assert_eq!(addresses6(&whole), (ip6("fdff::2"), ip6("fc00::202")));
        assert_checksums(&whole);

        let reply = packet6(UDP, ip6("fc00::202"), ip6("fdff::2"), 53, 40000, &payload);
        let (mut first, mut rest) = fragments6(&reply, 16, 7);
        assert_eq!(two.outgoing(&mut first), Verdict::Tunnel(node(1)));
        assert_eq!(two.outgoing(&mut rest), Verdict::Tunnel(node(1)));
        assert_eq!(one.incoming(&mut first), Verdict::Deliver);
        assert_eq!(one.incoming(&mut rest), Verdict::Deliver);
        let whole = reassembled6(&first, &rest);
        assert_eq!(addresses6(&whole), (ip6("fdff:2000::55"), ip6("fc00::102")));
        assert_checksums(&whole);
    }

    #[test]
    fn new_flows_go_round_robin_and_a_flow_stays_on_its_instance() {
        let (mut one, _) = proxies();
        let mut targets = Vec::new();
        for port in 40000..40004 {
            let mut p = packet(TCP, ip("10.18.0.2"), ip("10.30.55.55"), port, 80, b"");
            let verdict = one.outgoing(&mut p);
            targets.push((verdict, addresses(&p).1));
        }
        let remote = (Verdict::Tunnel(node(2)), ip("10.18.0.66"));
        let local = (Verdict::Deliver, ip("10.18.0.3"));
        assert_eq!(
            targets,
            vec![remote.clone(), local.clone(), remote.clone(), local.clone()]
        );
        // More packets of the first flow: same instance.
        for _ in 0..3 {
            let mut p = packet(TCP, ip("10.18.0.2"), ip("10.30.55.55"), 40000, 80, b"");
            assert_eq!(one.outgoing(&mut p), Verdict::Tunnel(node(2)));
        }
    }

    #[test]
    fn flows_move_to_a_live_instance_when_theirs_is_gone() {
        let (mut one, _) = proxies();
        let mut p = packet(TCP, ip("10.18.0.2"), ip("10.30.55.55"), 40000, 80, b"");
        assert_eq!(one.outgoing(&mut p), Verdict::Tunnel(node(2)));
        // Worker 2 died: the update lists only the instance on worker 1.
        let mut server = table().remove(1);
        server.instances.retain(|i| i.node == node(1));
        one.set_service(server);
        let mut p = packet(TCP, ip("10.18.0.2"), ip("10.30.55.55"), 40000, 80, b"");
        assert_eq!(one.outgoing(&mut p), Verdict::Deliver);
        assert_eq!(addresses(&p).1, ip("10.18.0.3"));
    }

    #[test]
    fn instance_ips_reach_exactly_their_instance() {
        let (mut one, _) = proxies();
        for port in 1..5 {
            let mut p = packet(UDP, ip("10.18.0.2"), ip("10.30.0.3"), port, 53, b"");
            assert_eq!(one.outgoing(&mut p), Verdict::Tunnel(node(2)));
            assert_eq!(addresses(&p).1, ip("10.18.0.66"));
        }
    }

    #[test]
    fn unknown_senders_destinations_and_strangers_are_refused() {
        let (mut one, mut two) = proxies();
        let mut p = packet(TCP, ip("10.18.0.2"), ip("10.30.9.9"), 1, 80, b"");
        let before = p.clone();
        assert_eq!(
            one.outgoing(&mut p),
            Verdict::Unknown(ip("10.30.9.9").into())
        );
        assert_eq!(p, before, "unchanged for the table query");
        // A sender that is not a local instance (e.g. worker 2's instance via worker 1).
        let mut p = packet(TCP, ip("10.18.0.66"), ip("10.30.55.55"), 1, 80, b"");
        assert!(matches!(one.outgoing(&mut p), Verdict::Drop(_)));
        // The tunnel delivers only to local instances.
        let mut p = packet(TCP, ip("10.30.0.2"), ip("10.18.0.2"), 1, 80, b"");
        assert!(matches!(two.incoming(&mut p), Verdict::Drop(_)));
        let mut p = packet(TCP, ip("10.30.0.2"), ip("8.8.8.8"), 1, 80, b"");
        assert!(matches!(two.incoming(&mut p), Verdict::Drop(_)));
        // A service without instances.
        one.set_service(ServiceRoutes {
            job_name: "app.ns.empty.ns".into(),
            rr_ip: Some(ip("10.30.7.7")),
            closest_ip: Some(ip("10.30.7.8")),
            rr_ip_v6: None,
            closest_ip_v6: None,
            instances: vec![],
        });
        for to in ["10.30.7.7", "10.30.7.8"] {
            let mut p = packet(TCP, ip("10.18.0.2"), ip(to), 1, 80, b"");
            assert!(matches!(one.outgoing(&mut p), Verdict::Drop(_)), "{to}");
        }
        one.remove_service("app.ns.empty.ns");
        let mut p = packet(TCP, ip("10.18.0.2"), ip("10.30.7.8"), 1, 80, b"");
        assert_eq!(
            one.outgoing(&mut p),
            Verdict::Unknown(ip("10.30.7.8").into())
        );
        let mut p = packet(TCP, ip("10.18.0.2"), ip("10.30.7.7"), 1, 80, b"");
        assert_eq!(
            one.outgoing(&mut p),
            Verdict::Unknown(ip("10.30.7.7").into())
        );
    }

    /// New flows from the client on worker 1 to the closest IP: where each one went.
    fn closest_targets(p: &mut Proxy, ports: std::ops::Range<u16>) -> Vec<(Verdict, Ipv4Addr)> {
        ports
            .map(|port| {
                let mut pk = packet(TCP, ip("10.18.0.2"), ip("10.30.66.66"), port, 80, b"");
                let verdict = p.outgoing(&mut pk);
                (verdict, addresses(&pk).1)
            })
            .collect()
    }

    #[test]
    fn the_closest_ip_picks_the_local_instance_unless_rtts_say_otherwise() {
        let (mut one, _) = proxies();
        let local = (Verdict::Deliver, ip("10.18.0.3"));
        let remote = (Verdict::Tunnel(node(2)), ip("10.18.0.66"));
        // Nothing measured: the local instance counts as 0, the unmeasured remote one after it.
        assert_eq!(
            closest_targets(&mut one, 40000..40003),
            vec![local.clone(); 3]
        );
        // A measured remote worker still loses to this worker's 0.
        one.set_rtt(node(2), Duration::from_millis(3));
        assert_eq!(
            closest_targets(&mut one, 40003..40005),
            vec![local.clone(); 2]
        );
        assert_eq!(one.rtt(node(2)), Some(Duration::from_millis(3)));
        // An RTT set for this worker itself that is higher: the remote one wins.
        one.set_rtt(node(1), Duration::from_millis(10));
        assert_eq!(
            closest_targets(&mut one, 40005..40007),
            vec![remote.clone(); 2]
        );
        assert_eq!(
            one.rtts().into_iter().collect::<Vec<_>>(),
            vec![
                (node(1), Duration::from_millis(10)),
                (node(2), Duration::from_millis(3))
            ]
        );
        // Cleared again: back to the local one.
        one.clear_rtt(node(1));
        assert_eq!(closest_targets(&mut one, 40007..40008), vec![local]);
        assert_eq!(
            one.nodes().into_iter().collect::<Vec<_>>(),
            vec![node(1), node(2)]
        );
    }

    #[test]
    fn measured_workers_rank_before_unmeasured_ones_and_ties_take_turns() {
        // A client on worker 3, which hosts no server: both servers are remote.
        let mut three = Proxy::new(node(3));
        let mut services = table();
        services[0].instances[0].node = node(3);
        for s in services {
            three.set_service(s);
        }
        let on_1 = (Verdict::Tunnel(node(1)), ip("10.18.0.3"));
        let on_2 = (Verdict::Tunnel(node(2)), ip("10.18.0.66"));
        // Neither measured: equally unknown, so they take turns (instance 0 first).
        assert_eq!(
            closest_targets(&mut three, 40000..40004),
            vec![on_2.clone(), on_1.clone(), on_2.clone(), on_1.clone()]
        );
        // Only worker 1 measured, however slow: it ranks before the unmeasured worker 2.
        three.set_rtt(node(1), Duration::from_secs(2));
        assert_eq!(
            closest_targets(&mut three, 40004..40007),
            vec![on_1.clone(); 3]
        );
        // Both measured: the lower RTT wins; equal RTTs take turns.
        three.set_rtt(node(2), Duration::from_millis(1));
        assert_eq!(
            closest_targets(&mut three, 40007..40009),
            vec![on_2.clone(); 2]
        );
        three.set_rtt(node(1), Duration::from_millis(1));
        let mut tied = closest_targets(&mut three, 40009..40013);
        tied.sort_by_key(|t| t.1);
        assert_eq!(tied, vec![on_1.clone(), on_1, on_2.clone(), on_2]);
    }

    #[test]
    fn closest_flows_stay_on_their_instance_and_replies_show_the_closest_ip() {
        let (mut one, mut two) = proxies();
        one.set_rtt(node(1), Duration::from_millis(10));
        one.set_rtt(node(2), Duration::from_millis(1));
        let mut request = packet(UDP, ip("10.18.0.2"), ip("10.30.66.66"), 40000, 53, b"q");
        assert_eq!(one.outgoing(&mut request), Verdict::Tunnel(node(2)));
        assert_eq!(addresses(&request), (ip("10.30.0.2"), ip("10.18.0.66")));
        assert_checksums(&request);
        assert_eq!(two.incoming(&mut request), Verdict::Deliver);
        // The RTTs change: the running flow stays where it is, a new one follows them.
        one.set_rtt(node(2), Duration::from_millis(50));
        let mut again = packet(UDP, ip("10.18.0.2"), ip("10.30.66.66"), 40000, 53, b"q");
        assert_eq!(one.outgoing(&mut again), Verdict::Tunnel(node(2)));
        let mut other = packet(UDP, ip("10.18.0.2"), ip("10.30.66.66"), 40001, 53, b"q");
        assert_eq!(one.outgoing(&mut other), Verdict::Deliver);
        // The server's reply reaches the client from the closest IP it dialled.
        let mut reply = packet(UDP, ip("10.18.0.66"), ip("10.30.0.2"), 53, 40000, b"a");
        assert_eq!(two.outgoing(&mut reply), Verdict::Tunnel(node(1)));
        assert_eq!(one.incoming(&mut reply), Verdict::Deliver);
        assert_eq!(addresses(&reply), (ip("10.30.66.66"), ip("10.18.0.2")));
        assert_checksums(&reply);
        // Its instance gone (worker 2 died): the flow moves to the survivor.
        let mut server = table().remove(1);
        server.instances.retain(|i| i.node == node(1));
        one.set_service(server);
        let mut after = packet(UDP, ip("10.18.0.2"), ip("10.30.66.66"), 40000, 53, b"q");
        assert_eq!(one.outgoing(&mut after), Verdict::Deliver);
        assert_eq!(addresses(&after).1, ip("10.18.0.3"));
    }

    #[test]
    fn an_ipv6_round_trip_shows_the_client_only_the_rr_ip_v6() {
        for protocol in [TCP, UDP, ICMPV6] {
            let (mut one, mut two) = proxies();
            let mut request = packet6(
                protocol,
                ip6("fc00::102"),
                ip6("fdff:2000::55"),
                40000,
                80,
                b"GET /",
            );
            assert_eq!(one.outgoing(&mut request), Verdict::Tunnel(node(2)));
            assert_eq!(
                addresses6(&request),
                (ip6("fdff::2"), ip6("fc00::202")),
                "src: client instance IPv6, dst: server IPv6 namespace IP"
            );
            assert_checksums(&request);
            assert_eq!(two.incoming(&mut request), Verdict::Deliver);
            assert_eq!(addresses6(&request), (ip6("fdff::2"), ip6("fc00::202")));

            let (sport, dport) = if protocol == ICMPV6 {
                (40000, 40000)
            } else {
                (80, 40000)
            };
            let mut reply = packet6(
                protocol,
                ip6("fc00::202"),
                ip6("fdff::2"),
                sport,
                dport,
                b"200 OK",
            );
            if protocol == ICMPV6 {
                reply[40] = 129; // echo reply
                let sum = super::packet::tests::l4_checksum(&reply);
                reply[42..44].copy_from_slice(&sum.to_be_bytes());
            }
            assert_eq!(two.outgoing(&mut reply), Verdict::Tunnel(node(1)));
            assert_eq!(addresses6(&reply), (ip6("fdff::3"), ip6("fc00::102")));
            assert_eq!(one.incoming(&mut reply), Verdict::Deliver);
            assert_eq!(
                addresses6(&reply),
                (ip6("fdff:2000::55"), ip6("fc00::102")),
                "the client sees the rr_ip_v6 it dialled"
            );
            assert_checksums(&reply);
        }
    }

    #[test]
    fn ipv6_flows_go_round_robin_among_instances_with_ipv6_and_stay() {
        let (mut one, _) = proxies();
        // A third instance without IPv6 (its worker has none): IPv4 flows use it, IPv6 not.
        let mut server = table().remove(1);
        server.instances.push(InstanceRoute {
            number: 2,
            instance_ip: ip("10.30.0.5"),
            nsip: ip("10.18.0.67"),
            instance_ip_v6: None,
            nsip_v6: None,
            node: node(2),
        });
        one.set_service(server);
        let mut v6 = Vec::new();
        for port in 40000..40004 {
            let mut p = packet6(TCP, ip6("fc00::102"), ip6("fdff:2000::55"), port, 80, b"");
            let verdict = one.outgoing(&mut p);
            v6.push((verdict, addresses6(&p).1));
        }
        let remote = (Verdict::Tunnel(node(2)), ip6("fc00::202"));
        let local = (Verdict::Deliver, ip6("fc00::103"));
        assert_eq!(
            v6,
            vec![remote.clone(), local.clone(), remote.clone(), local.clone()]
        );
        // IPv4 keeps its own turn, over all three.
        let v4: Vec<Ipv4Addr> = (40000..40003)
            .map(|port| {
                let mut p = packet(TCP, ip("10.18.0.2"), ip("10.30.55.55"), port, 80, b"");
                one.outgoing(&mut p);
                addresses(&p).1
            })
            .collect();
        assert_eq!(v4, [ip("10.18.0.66"), ip("10.18.0.3"), ip("10.18.0.67")]);
        // More packets of the first IPv6 flow: same instance.
        for _ in 0..3 {
            let mut p = packet6(TCP, ip6("fc00::102"), ip6("fdff:2000::55"), 40000, 80, b"");
            assert_eq!(one.outgoing(&mut p), Verdict::Tunnel(node(2)));
        }
        // The instance IPv6 reaches exactly its instance.
        let mut p = packet6(UDP, ip6("fc00::102"), ip6("fdff::4"), 1, 53, b"");
        assert_eq!(one.outgoing(&mut p), Verdict::Deliver);
        assert_eq!(addresses6(&p), (ip6("fdff::2"), ip6("fc00::103")));
    }

    #[test]
    fn ipv6_flows_fail_over_and_unknown_ipv6_addresses_are_asked_about() {
        let (mut one, _) = proxies();
        let mut p = packet6(TCP, ip6("fc00::102"), ip6("fdff:2000::55"), 40000, 80, b"");
        assert_eq!(one.outgoing(&mut p), Verdict::Tunnel(node(2)));
        // Worker 2 died.
        let mut server = table().remove(1);
        server.instances.retain(|i| i.node == node(1));
        one.set_service(server.clone());
        let mut p = packet6(TCP, ip6("fc00::102"), ip6("fdff:2000::55"), 40000, 80, b"");
        assert_eq!(one.outgoing(&mut p), Verdict::Deliver);
        assert_eq!(addresses6(&p).1, ip6("fc00::103"));
        // The survivor loses its IPv6: IPv6 flows have nowhere to go, IPv4 ones still do.
        server.instances[0].nsip_v6 = None;
        one.set_service(server);
        let mut p = packet6(TCP, ip6("fc00::102"), ip6("fdff:2000::55"), 40000, 80, b"");
        assert!(matches!(one.outgoing(&mut p), Verdict::Drop(_)));
        let mut p = packet(TCP, ip("10.18.0.2"), ip("10.30.55.55"), 40000, 80, b"");
        assert_eq!(one.outgoing(&mut p), Verdict::Deliver);
        // An IPv6 service address the table lacks.
        let mut p = packet6(TCP, ip6("fc00::102"), ip6("fdff:2000::99"), 1, 80, b"");
        let before = p.clone();
        assert_eq!(
            one.outgoing(&mut p),
            Verdict::Unknown(ip6("fdff:2000::99").into())
        );
        assert_eq!(p, before);
        // A sender without an IPv6 instance address cannot use IPv6 service IPs.
        let mut client = table().remove(0);
        client.instances[0].instance_ip_v6 = None;
        one.set_service(client);
        let mut p = packet6(TCP, ip6("fc00::102"), ip6("fdff:2000::66"), 1, 80, b"");
        assert!(matches!(one.outgoing(&mut p), Verdict::Drop(_)));
        // Removing the service forgets its IPv6 addresses too.
        one.remove_service(SERVER);
        let mut p = packet6(TCP, ip6("fc00::102"), ip6("fdff:2000::66"), 1, 80, b"");
        assert_eq!(
            one.outgoing(&mut p),
            Verdict::Unknown(ip6("fdff:2000::66").into())
        );
    }

    #[test]
    fn the_closest_ip_v6_follows_the_rtts() {
        let (mut one, _) = proxies();
        let targets = |p: &mut Proxy, ports: std::ops::Range<u16>| -> Vec<Ipv6Addr> {
            ports
                .map(|port| {
                    let mut pk =
                        packet6(UDP, ip6("fc00::102"), ip6("fdff:2000::66"), port, 53, b"q");
                    p.outgoing(&mut pk);
                    addresses6(&pk).1
                })
                .collect()
        };
        assert_eq!(targets(&mut one, 1..3), vec![ip6("fc00::103"); 2]);
        one.set_rtt(node(1), Duration::from_millis(10));
        one.set_rtt(node(2), Duration::from_millis(1));
        assert_eq!(targets(&mut one, 3..5), vec![ip6("fc00::202"); 2]);
        // The running flow stays.
        assert_eq!(targets(&mut one, 1..2), vec![ip6("fc00::103")]);
    }

    #[test]
    fn offloaded_packets_keep_a_partial_checksum_that_finishes_right() {
        use super::packet::tests::{finish, make_partial, pseudo_sum};
        let fold = |mut s: u64| {
            while s > 0xffff {
                s = (s & 0xffff) + (s >> 16);
            }
            s as u16
        };
        let payload = vec![0x5a; 30_000];
        for protocol in [TCP, UDP] {
            for v6 in [false, true] {
                let (mut one, mut two) = proxies();
                let mut p = if v6 {
                    packet6(
                        protocol,
                        ip6("fc00::102"),
                        ip6("fdff:2000::55"),
                        4000,
                        80,
                        &payload,
                    )
                } else {
                    packet(
                        protocol,
                        ip("10.18.0.2"),
                        ip("10.30.55.55"),
                        4000,
                        80,
                        &payload,
                    )
                };
                make_partial(&mut p);
                assert_eq!(
                    one.outgoing_offloaded(&mut p, true),
                    Verdict::Tunnel(node(2))
                );
                let at = super::packet::tests::checksum_at(&p);
                assert_eq!(
                    u16::from_be_bytes([p[at], p[at + 1]]),
                    fold(pseudo_sum(&p)),
                    "still partial, for the new addresses"
                );
                assert_eq!(two.incoming_offloaded(&mut p, true), Verdict::Deliver);
                finish(&mut p);
                assert_checksums(&p);
            }
        }
    }
}
