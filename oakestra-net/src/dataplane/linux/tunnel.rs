//! The proxy's I/O: a TUN device that the service IPs (10.30.0.0/16 and fdff::/16) are routed
//! to, and the UDP tunnel socket (default port 50103) that carries translated packets between
//! workers, one raw IPv4 or IPv6 packet per datagram (Oakestra's wire format). Two tasks move
//! packets:
//!
//! * TUN → [`Proxy::outgoing`] → UDP to the target's worker, or back into the TUN when the
//!   target is local; a service IP the table lacks is reported on the `misses` channel (the
//!   packet is dropped, nothing else waits);
//! * UDP → [`Proxy::incoming`] → TUN, from where the kernel routes the packet to the bridge.
//!
//! The same UDP socket carries the RTT probes of closest IPs ([`crate::proxy::rtt`]): a ping is
//! answered with a pong at once, a pong updates the smoothed RTTs that [`Probes`] reads. Probes
//! have IP version 0, so they never reach the proxy or the TUN.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtnetlink::RouteMessageBuilder;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::AsRawFd;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use nix::libc;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, sendmsg, setsockopt,
    sockopt,
};
use rtnetlink::LinkUnspec;
use rtnetlink::packet_route::link::LinkAttribute;
use tokio::io::Interest;

use super::real::{ProcSys, errno_of, link_index};
use super::sys::EEXIST;
use super::tun::OffloadTun;
use super::{io, netlink, write_sysctl};
use crate::dataplane::DataPlaneError;
use crate::proxy::frame::{
    CHUNK_HEADER_LEN, Chunk, Datagram, FRAME_HEADER_LEN, MAX_CHUNKS, Offload, Reassembly,
    VNET_HDR_LEN,
};
use crate::proxy::rtt::{Probe, RttProber};
use crate::proxy::{Proxy, Verdict};

/// Default UDP port of the tunnel (Oakestra's).
pub const DEFAULT_TUNNEL_PORT: u16 = 50103;
/// Largest packet the TUN device hands over: with its frame header it still fits one UDP
/// datagram (65,507 bytes of payload over IPv4).
const MAX_SUPER_PACKET: u32 = 65_000;
/// Senders whose unfinished chunked frames are kept.
const MAX_SENDERS: usize = 1024;
/// Receive and send buffer of the tunnel socket.
const SOCKET_BUFFER: usize = 8 << 20;

/// The service IPs routed to the TUN device.
pub const SERVICE_RANGE: (Ipv4Addr, u8) = (
    crate::ipam::SERVICE_IPV4_NET,
    crate::ipam::SERVICE_IPV4_PREFIX_LEN,
);
/// The IPv6 service IPs routed to the TUN device: instance, round-robin and closest IPv6
/// addresses are all in fdff::/16.
pub const SERVICE_RANGE_V6: (Ipv6Addr, u8) = (
    crate::ipam::SERVICE_IPV6_NET,
    crate::ipam::SERVICE_IPV6_PREFIX_LEN,
);

/// What the tunnel is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelConfig {
    /// Name of the TUN device (≤ 15 characters), e.g. `oakrstun`.
    pub device: String,
    /// Where the UDP tunnel listens (the worker's `host_ip:50103`).
    pub listen: SocketAddr,
    /// MTU of the TUN device.
    pub mtu: u32,
}

/// The running tunnel; stops (and its TUN device goes) when dropped.
#[derive(Debug)]
pub struct Tunnel {
    local: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
    probes: Probes,
    stats: TunnelStats,
}

/// How a tunnel's datagrams went out and came in; cheap to clone, counts as it runs.
#[derive(Debug, Clone, Default)]
pub struct TunnelStats(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    sent: [AtomicU64; 3],
    received: [AtomicU64; 3],
    coalesced_reads: AtomicU64,
}

/// The kinds of packets the tunnel carries, for [`TunnelStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried {
    /// A packet with complete checksums and no segmentation, as Oakestra sends it.
    Plain = 0,
    /// A packet behind a frame header, in one datagram.
    Frame = 1,
    /// A frame in several chunks.
    Chunked = 2,
}

impl TunnelStats {
    fn count(&self, sent: bool, kind: Carried) {
        let counters = if sent { &self.0.sent } else { &self.0.received };
        counters[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Packets sent through the tunnel as `kind`.
    pub fn sent(&self, kind: Carried) -> u64 {
        self.0.sent[kind as usize].load(Ordering::Relaxed)
    }

    /// Packets received from the tunnel as `kind` (and delivered to the TUN device).
    pub fn received(&self, kind: Carried) -> u64 {
        self.0.received[kind as usize].load(Ordering::Relaxed)
    }

    /// Reads that brought several datagrams at once (UDP GRO).
    pub fn coalesced_reads(&self) -> u64 {
        self.0.coalesced_reads.load(Ordering::Relaxed)
    }
}

/// Sends RTT probes over the tunnel socket and reads the smoothed RTTs; cheap to clone.
#[derive(Debug, Clone)]
pub struct Probes {
    socket: Arc<UdpSocket>,
    prober: Arc<Mutex<RttProber>>,
}

impl Probes {
    /// Pings the tunnel endpoint `to`; its pong (if any) updates [`Probes::rtts`].
    pub async fn ping(&self, to: SocketAddr) {
        let datagram = self
            .prober
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ping(to, Instant::now());
        if let Err(e) = self.socket.send_to(&datagram, to).await {
            tracing::debug!(%to, "RTT probe not sent: {e}");
        }
    }

    /// The smoothed RTT of every endpoint that answered.
    pub fn rtts(&self) -> BTreeMap<SocketAddr, Duration> {
        self.prober
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rtts()
            .clone()
    }

    /// Forgets `node`'s RTT.
    pub fn forget(&self, node: SocketAddr) {
        self.prober
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forget(node);
    }
}

/// Routes the IPv4 service IPs ([`SERVICE_RANGE`]) to the TUN device `index`, and turns off
/// its reverse-path filter.
async fn route_service_range(
    handle: &rtnetlink::Handle,
    index: u32,
    device: &str,
) -> Result<(), DataPlaneError> {
    add_route(
        handle,
        RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(SERVICE_RANGE.0, SERVICE_RANGE.1)
            .output_interface(index)
            .build(),
        format!("route {}/{} to {device}", SERVICE_RANGE.0, SERVICE_RANGE.1),
    )
    .await?;
    // Replies come back through the TUN with sources a strict reverse-path check would
    // not expect there.
    let _ = std::fs::write(format!("/proc/sys/net/ipv4/conf/{device}/rp_filter"), "0");
    Ok(())
}

/// Routes the IPv6 service IPs ([`SERVICE_RANGE_V6`]) to the TUN device `index`. The device
/// needs IPv6 on (`disable_ipv6` 0; a host may default to 1) and takes no router
/// advertisements (it has no router behind it). IPv6 has no `rp_filter`.
async fn route_service_range_v6(
    handle: &rtnetlink::Handle,
    index: u32,
    device: &str,
) -> Result<(), DataPlaneError> {
    let conf = format!("net/ipv6/conf/{device}");
    write_sysctl(&ProcSys, &format!("{conf}/disable_ipv6"), "0")?;
    let _ = std::fs::write(format!("/proc/sys/{conf}/accept_ra"), "0");
    add_route(
        handle,
        RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(SERVICE_RANGE_V6.0, SERVICE_RANGE_V6.1)
            .output_interface(index)
            .build(),
        format!(
            "route {}/{} to {device}",
            SERVICE_RANGE_V6.0, SERVICE_RANGE_V6.1
        ),
    )
    .await
}

/// Adds a route; one that exists already is fine.
async fn add_route(
    handle: &rtnetlink::Handle,
    route: rtnetlink::packet_route::route::RouteMessage,
    what: String,
) -> Result<(), DataPlaneError> {
    match handle.route().add(route).execute().await {
        Err(e) if errno_of(&e) != Some(EEXIST) => Err(netlink(what)(e)),
        _ => Ok(()),
    }
}

fn lock(proxy: &Mutex<Proxy>) -> std::sync::MutexGuard<'_, Proxy> {
    proxy.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the proxy's incoming translation on the packet in `region` (behind room for its
/// virtio_net_hdr) and writes what it lets through into the TUN device.
async fn deliver(
    tun: &OffloadTun,
    proxy: &Mutex<Proxy>,
    region: &mut [u8],
    offload: Offload,
    stats: (&TunnelStats, Carried),
) {
    let (vnet, packet) = region.split_at_mut(VNET_HDR_LEN);
    match translate(proxy, packet, offload, Proxy::incoming_offloaded) {
        Verdict::Deliver => {
            vnet.copy_from_slice(&offload.to_vnet());
            match tun.send(region).await {
                Ok(_) => stats.0.count(false, stats.1),
                Err(e) => tracing::debug!("TUN write failed: {e}"),
            }
        }
        other => tracing::trace!("tunnel packet not delivered: {other:?}"),
    }
}

/// Delivers the packet of a frame (a datagram or a reassembled chunked one): its header
/// becomes the packet's virtio_net_hdr, in place.
async fn deliver_frame(
    tun: &OffloadTun,
    proxy: &Mutex<Proxy>,
    frame: &mut [u8],
    stats: (&TunnelStats, Carried),
) {
    match Offload::decode_frame(frame) {
        Ok(offload) => {
            let region = &mut frame[FRAME_HEADER_LEN - VNET_HDR_LEN..];
            deliver(tun, proxy, region, offload, stats).await;
        }
        Err(e) => tracing::trace!("tunnel frame dropped: {e}"),
    }
}

/// Receives what one read brings: its length, the sender and, when UDP GRO coalesced several
/// datagrams, their size.
async fn recv_gro(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, Option<usize>)> {
    socket
        .async_io(Interest::READABLE, || {
            let mut iov = [IoSliceMut::new(buf)];
            let mut control = nix::cmsg_space!(i32);
            let msg = recvmsg::<SockaddrStorage>(
                socket.as_raw_fd(),
                &mut iov,
                Some(&mut control),
                MsgFlags::empty(),
            )?;
            let segment = msg.cmsgs()?.find_map(|c| match c {
                ControlMessageOwned::UdpGroSegments(s) => usize::try_from(s).ok(),
                _ => None,
            });
            let from = msg
                .address
                .and_then(|a| {
                    a.as_sockaddr_in()
                        .map(|v4| SocketAddr::from(std::net::SocketAddrV4::from(*v4)))
                        .or_else(|| {
                            a.as_sockaddr_in6()
                                .map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6)))
                        })
                })
                .ok_or_else(|| std::io::Error::other("datagram without a sender address"))?;
            Ok((msg.bytes, from, segment))
        })
        .await
}

/// Sends tunnel datagrams; a frame longer than one underlay packet goes in chunks, all handed
/// to the kernel at once with UDP segmentation offload (or one by one where that is refused).
#[derive(Debug)]
struct Sender {
    /// Largest datagram payload that fits one underlay packet.
    segment: usize,
    /// Whether the kernel takes `UDP_SEGMENT` sends.
    gso: bool,
    scratch: Vec<u8>,
}

impl Sender {
    fn new(segment: usize) -> Self {
        Self {
            segment,
            gso: true,
            scratch: Vec::with_capacity(segment),
        }
    }

    /// Sends `datagram` whole when it fits one underlay packet, else in chunks. `limit` is
    /// the longest datagram the frame's packets need once the receiving kernel segments them
    /// (see [`Offload::segment_len`]): chunks are no longer than that, so a peer whose underlay
    /// (and so whose MSS) is smaller than ours still gets datagrams its underlay carries.
    async fn send(
        &mut self,
        socket: &UdpSocket,
        datagram: &[u8],
        to: SocketAddr,
        frame: u32,
        limit: Option<usize>,
    ) -> std::io::Result<bool> {
        let segment = chunk_size(self.segment, limit, datagram.len());
        if datagram.len() <= segment {
            return socket.send_to(datagram, to).await.map(|_| false);
        }
        let chunks = Chunk::split(datagram.len(), segment - CHUNK_HEADER_LEN, frame)
            .ok_or_else(|| std::io::Error::other("frame too long for the tunnel"))?;
        if self.gso {
            let headers: Vec<_> = chunks.iter().map(|(c, _)| c.encode()).collect();
            let iov: Vec<IoSlice<'_>> = chunks
                .iter()
                .zip(&headers)
                .flat_map(|((_, range), h)| {
                    [IoSlice::new(h), IoSlice::new(&datagram[range.clone()])]
                })
                .collect();
            let size = u16::try_from(segment).unwrap_or(u16::MAX);
            let address = SockaddrStorage::from(to);
            let sent = socket
                .async_io(Interest::WRITABLE, || {
                    sendmsg(
                        socket.as_raw_fd(),
                        &iov,
                        &[ControlMessage::UdpGsoSegments(&size)],
                        MsgFlags::empty(),
                        Some(&address),
                    )
                    .map_err(std::io::Error::from)
                })
                .await;
            match sent {
                Ok(_) => return Ok(true),
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EIO | libc::EINVAL | libc::EOPNOTSUPP)
                    ) =>
                {
                    tracing::info!(
                        "no UDP segmentation offload on the tunnel ({e}): chunks go one by one"
                    );
                    self.gso = false;
                }
                Err(e) => return Err(e),
            }
        }
        for (chunk, range) in chunks {
            self.scratch.clear();
            self.scratch.extend_from_slice(&chunk.encode());
            self.scratch.extend_from_slice(&datagram[range]);
            socket.send_to(&self.scratch, to).await?;
        }
        Ok(true)
    }
}

/// The longest datagram of a `len`-byte frame: this worker's `segment`, or less when the
/// frame's own packets are shorter (`limit`), but never so short that the frame needs more
/// than [`MAX_CHUNKS`] chunks.
fn chunk_size(segment: usize, limit: Option<usize>, len: usize) -> usize {
    let wanted = limit.map_or(segment, |l| l.min(segment));
    wanted.max(len.div_ceil(MAX_CHUNKS) + CHUNK_HEADER_LEN)
}

/// Runs `step` (the proxy's outgoing or incoming translation) on `packet`, whose transport
/// checksum is partial when `offload` says so.
fn translate(
    proxy: &Mutex<Proxy>,
    packet: &mut [u8],
    offload: Offload,
    step: fn(&mut Proxy, &mut [u8], bool) -> Verdict,
) -> Verdict {
    step(&mut lock(proxy), packet, offload.needs_csum())
}

impl Tunnel {
    /// Creates the TUN device, routes the service IPs to it, binds the UDP socket and starts
    /// moving packets through `proxy`. Must run inside a tokio runtime, in the network
    /// namespace of the worker's host side.
    pub async fn start(
        config: TunnelConfig,
        proxy: Arc<Mutex<Proxy>>,
        misses: Option<mpsc::UnboundedSender<IpAddr>>,
    ) -> Result<Self, DataPlaneError> {
        let tun = OffloadTun::open(&config.device)
            .map_err(io(format!("create TUN device {}", config.device)))?;
        let tun = Arc::new(tun);

        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(io("open a netlink socket"))?;
        tokio::spawn(connection);
        let index = link_index(&handle, &config.device)
            .await
            .map_err(netlink(format!("look up link {}", config.device)))?
            .ok_or_else(|| DataPlaneError::Netlink {
                what: format!("TUN device {}", config.device),
                reason: "missing right after its creation".into(),
            })?;
        handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .mtu(config.mtu)
                    // A super-packet and its frame header must fit one UDP datagram.
                    .append_extra_attribute(LinkAttribute::GsoMaxSize(MAX_SUPER_PACKET))
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(netlink(format!("bring {} up", config.device)))?;
        route_service_range(&handle, index, &config.device).await?;
        // IPv6 is best effort: a host without IPv6 still proxies IPv4.
        if let Err(e) = route_service_range_v6(&handle, index, &config.device).await {
            tracing::warn!(device = %config.device, "IPv6 service IPs not routed: {e}");
        }

        let socket = UdpSocket::bind(config.listen)
            .await
            .map_err(io(format!("bind the tunnel socket {}", config.listen)))?;
        // A few hundred super-packets in flight per direction, not the default's three.
        for (what, result) in [
            (
                "receive",
                setsockopt(&socket, sockopt::RcvBufForce, &SOCKET_BUFFER),
            ),
            (
                "send",
                setsockopt(&socket, sockopt::SndBufForce, &SOCKET_BUFFER),
            ),
            (
                "coalesced (GRO)",
                setsockopt(&socket, sockopt::UdpGroSegment, &true),
            ),
        ] {
            if let Err(e) = result {
                tracing::warn!("tunnel socket: no {what} setting: {e}");
            }
        }
        let socket = Arc::new(socket);
        // A datagram of a TUN-sized packet behind a frame header fits one underlay packet
        // (the TUN's MTU leaves room for that); longer frames go in chunks of this size.
        let segment = usize::try_from(config.mtu).unwrap_or(1450) + FRAME_HEADER_LEN;
        let local = socket
            .local_addr()
            .map_err(io("read the tunnel socket's address"))?;
        // Nonces of this run start somewhere else than a previous run's.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let probes = Probes {
            socket: Arc::clone(&socket),
            prober: Arc::new(Mutex::new(RttProber::new(seed))),
        };

        let stats = TunnelStats::default();
        let outgoing = {
            let (tun, socket, proxy) = (Arc::clone(&tun), Arc::clone(&socket), Arc::clone(&proxy));
            let stats = stats.clone();
            tokio::spawn(async move {
                // [frame header room | virtio_net_hdr | packet]: the frame header is written
                // over the two spare bytes and the virtio_net_hdr, so nothing is copied.
                const PACKET: usize = FRAME_HEADER_LEN;
                const VNET: usize = PACKET - VNET_HDR_LEN;
                let mut buf = vec![0u8; PACKET + usize::from(u16::MAX)];
                let mut frame_id = 0u32;
                let mut sender = Sender::new(segment);
                loop {
                    let n = match tun.recv(&mut buf[VNET..]).await {
                        Ok(n) if n >= VNET_HDR_LEN => VNET + n,
                        Ok(_) => continue,
                        Err(e) => {
                            tracing::warn!("TUN read failed, the proxy stops: {e}");
                            return;
                        }
                    };
                    let mut header = [0u8; VNET_HDR_LEN];
                    header.copy_from_slice(&buf[VNET..PACKET]);
                    let offload = Offload::from_vnet(&header);
                    let verdict = translate(
                        &proxy,
                        &mut buf[PACKET..n],
                        offload,
                        Proxy::outgoing_offloaded,
                    );
                    match verdict {
                        Verdict::Tunnel(to) => {
                            let datagram = if offload.is_none() {
                                &buf[PACKET..n]
                            } else {
                                buf[..PACKET].copy_from_slice(&offload.encode_frame());
                                &buf[..n]
                            };
                            frame_id = frame_id.wrapping_add(1);
                            let kind = if offload.is_none() {
                                Carried::Plain
                            } else {
                                Carried::Frame
                            };
                            let limit = offload
                                .segment_len(&buf[PACKET..n])
                                .map(|l| l + FRAME_HEADER_LEN);
                            match sender.send(&socket, datagram, to, frame_id, limit).await {
                                Ok(chunked) => {
                                    stats.count(true, if chunked { Carried::Chunked } else { kind })
                                }
                                Err(e) => {
                                    tracing::debug!(%to, len = datagram.len(), "tunnel send failed: {e}");
                                }
                            }
                        }
                        Verdict::Deliver => {
                            let _ = tun.send(&buf[VNET..n]).await;
                        }
                        Verdict::Unknown(ip) => {
                            if let Some(m) = &misses {
                                let _ = m.send(ip);
                            }
                        }
                        Verdict::Drop(why) => tracing::trace!("dropped: {why}"),
                    }
                }
            })
        };
        let incoming = {
            let (tun, socket, proxy) = (Arc::clone(&tun), Arc::clone(&socket), Arc::clone(&proxy));
            let stats = stats.clone();
            let prober = Arc::clone(&probes.prober);
            tokio::spawn(async move {
                // Datagrams land at FRAME_HEADER_LEN, so that a plain packet gets its (empty)
                // virtio_net_hdr in front of it and a frame's header becomes one, in place.
                const AT: usize = FRAME_HEADER_LEN;
                let mut buf = vec![0u8; AT + usize::from(u16::MAX)];
                let mut reassembly = Reassembly::new(MAX_SENDERS);
                loop {
                    // One read may bring several datagrams of one sender (UDP GRO), each
                    // `segment` bytes but the last.
                    let (n, from, segment) = match recv_gro(&socket, &mut buf[AT..]).await {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::debug!("tunnel receive failed: {e}");
                            continue;
                        }
                    };
                    let (end, step) = (AT + n, segment.unwrap_or(n).max(1));
                    if step < n {
                        stats.0.coalesced_reads.fetch_add(1, Ordering::Relaxed);
                    }
                    let mut start = AT;
                    while start < end {
                        let stop = end.min(start + step);
                        // Every datagram before this one is done with, so the bytes in front
                        // of it are free for its virtio_net_hdr.
                        match Datagram::classify(&buf[start..stop]) {
                            Datagram::Packet => {
                                let region = &mut buf[start - VNET_HDR_LEN..stop];
                                deliver(
                                    &tun,
                                    &proxy,
                                    region,
                                    Offload::default(),
                                    (&stats, Carried::Plain),
                                )
                                .await;
                            }
                            Datagram::Frame => {
                                let frame = &mut buf[start..stop];
                                deliver_frame(&tun, &proxy, frame, (&stats, Carried::Frame)).await;
                            }
                            Datagram::Chunk => match reassembly.add(&from, &buf[start..stop]) {
                                Ok(Some(frame)) => {
                                    let kind = (&stats, Carried::Chunked);
                                    deliver_frame(&tun, &proxy, frame, kind).await;
                                }
                                Ok(None) => {}
                                Err(e) => tracing::trace!(%from, "tunnel chunk dropped: {e}"),
                            },
                            Datagram::Probe => match Probe::parse(&buf[start..stop]) {
                                Some(Probe::Ping(nonce)) => {
                                    let _ =
                                        socket.send_to(&Probe::Pong(nonce).encode(), from).await;
                                }
                                Some(Probe::Pong(nonce)) => {
                                    let measured = prober
                                        .lock()
                                        .unwrap_or_else(|p| p.into_inner())
                                        .pong(nonce, Instant::now());
                                    if let Some((node, rtt)) = measured {
                                        tracing::trace!(%node, ?rtt, "RTT");
                                    }
                                }
                                None => {}
                            },
                            Datagram::Other => {}
                        }
                        start = stop;
                    }
                }
            })
        };
        tracing::info!(device = %config.device, %local, "service-IP proxy and tunnel up");
        Ok(Self {
            local,
            tasks: vec![outgoing, incoming],
            probes,
            stats,
        })
    }

    /// How this tunnel's datagrams went out and came in.
    pub fn stats(&self) -> TunnelStats {
        self.stats.clone()
    }

    /// The RTT probes over this tunnel's socket.
    pub fn probes(&self) -> Probes {
        self.probes.clone()
    }

    /// Where the tunnel listens (the port is the real one when 0 was asked for).
    pub fn local(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sender's socket and a receiver's with UDP GRO, on loopback.
    async fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        setsockopt(&b, sockopt::UdpGroSegment, &true).unwrap();
        (a, b)
    }

    /// Receives on `b` until one frame is whole again: the frame and the reads it took.
    async fn receive_frame(b: &UdpSocket) -> (Vec<u8>, usize) {
        let mut reassembly = Reassembly::new(4);
        let mut buf = vec![0u8; usize::from(u16::MAX)];
        for reads in 1.. {
            let (n, from, segment) =
                tokio::time::timeout(Duration::from_secs(5), recv_gro(b, &mut buf))
                    .await
                    .expect("chunks within 5 s")
                    .unwrap();
            for datagram in buf[..n].chunks(segment.unwrap_or(n)) {
                assert_eq!(Datagram::classify(datagram), Datagram::Chunk);
                if let Some(frame) = reassembly.add(&from, datagram).unwrap() {
                    return (frame.to_vec(), reads);
                }
            }
        }
        unreachable!()
    }

    #[tokio::test]
    async fn frames_go_in_chunks_with_and_without_segmentation_offload() {
        let (a, b) = pair().await;
        let to = b.local_addr().unwrap();
        let frame: Vec<u8> = (0..60_000u32).map(|i| (i % 253) as u8).collect();
        for (gso, id) in [(true, 1), (false, 2)] {
            let mut sender = Sender::new(1462);
            sender.gso = gso;
            assert!(
                sender.send(&a, &frame, to, id, None).await.unwrap(),
                "sent in chunks"
            );
            let (received, reads) = receive_frame(&b).await;
            assert!(received == frame, "the frame came back whole (gso {gso})");
            if gso {
                // One send of 42 chunks, taken whole by one GRO read.
                assert_eq!(reads, 1, "one read for the frame");
            } else {
                assert_eq!(reads, frame.len().div_ceil(1462 - CHUNK_HEADER_LEN));
            }
        }
        // What fits one datagram goes as it is.
        let mut sender = Sender::new(1462);
        assert!(!sender.send(&a, &frame[..1462], to, 3, None).await.unwrap());
        let mut buf = vec![0u8; 2000];
        let (n, _, segment) = recv_gro(&b, &mut buf).await.unwrap();
        assert_eq!((n, segment), (1462, None));
        assert_eq!(buf[..n], frame[..1462]);
    }

    #[tokio::test]
    async fn frames_for_a_smaller_peer_go_in_chunks_its_underlay_carries() {
        // Our underlay carries 1,472-byte datagrams, the frame's packets are 1,372 bytes
        // (a peer with a 1,400-byte underlay): chunks of at most 1,372 + 12.
        assert_eq!(chunk_size(1472, Some(1384), 60_000), 1384);
        assert_eq!(chunk_size(1472, None, 60_000), 1472);
        assert_eq!(chunk_size(1472, Some(2000), 60_000), 1472);
        // Tiny segments would need more than 64 chunks: as few as 64 can take.
        assert_eq!(
            chunk_size(1472, Some(300), 60_000),
            60_000usize.div_ceil(MAX_CHUNKS) + CHUNK_HEADER_LEN
        );

        let (a, b) = pair().await;
        let to = b.local_addr().unwrap();
        let frame: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
        let mut sender = Sender::new(1472);
        assert!(sender.send(&a, &frame, to, 7, Some(1384)).await.unwrap());
        let mut reassembly = Reassembly::new(4);
        let mut buf = vec![0u8; usize::from(u16::MAX)];
        let mut longest = 0;
        let whole = loop {
            let (n, from, segment) =
                tokio::time::timeout(Duration::from_secs(5), recv_gro(&b, &mut buf))
                    .await
                    .expect("chunks within 5 s")
                    .unwrap();
            let mut done = None;
            for datagram in buf[..n].chunks(segment.unwrap_or(n)) {
                longest = longest.max(datagram.len());
                if let Some(f) = reassembly.add(&from, datagram).unwrap() {
                    done = Some(f.to_vec());
                }
            }
            if let Some(f) = done {
                break f;
            }
        };
        assert!(whole == frame, "the frame came back whole");
        assert_eq!(longest, 1384, "no chunk longer than the peer's datagrams");
        // A short frame that our underlay would carry whole is cut for the peer as well.
        assert!(
            sender
                .send(&a, &frame[..1460], to, 8, Some(1384))
                .await
                .unwrap()
        );
    }
}
