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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtnetlink::RouteMessageBuilder;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tun::Tun;

use super::{EEXIST, io, link_index, netlink, write_sysctl};
use crate::dataplane::DataPlaneError;
use crate::proxy::rtt::{Probe, RttProber};
use crate::proxy::{Proxy, Verdict};

/// Default UDP port of the tunnel (Oakestra's).
pub const DEFAULT_TUNNEL_PORT: u16 = 50103;
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
    match handle
        .route()
        .add(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(SERVICE_RANGE.0, SERVICE_RANGE.1)
                .output_interface(index)
                .build(),
        )
        .execute()
        .await
    {
        Err(e) if super::errno_of(&e) != Some(EEXIST) => {
            return Err(netlink(format!(
                "route {}/{} to {device}",
                SERVICE_RANGE.0, SERVICE_RANGE.1
            ))(e));
        }
        _ => {}
    }
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
    let conf = format!("/proc/sys/net/ipv6/conf/{device}");
    write_sysctl(&format!("{conf}/disable_ipv6"), "0")?;
    let _ = std::fs::write(format!("{conf}/accept_ra"), "0");
    match handle
        .route()
        .add(
            RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(SERVICE_RANGE_V6.0, SERVICE_RANGE_V6.1)
                .output_interface(index)
                .build(),
        )
        .execute()
        .await
    {
        Err(e) if super::errno_of(&e) != Some(EEXIST) => Err(netlink(format!(
            "route {}/{} to {device}",
            SERVICE_RANGE_V6.0, SERVICE_RANGE_V6.1
        ))(e)),
        _ => Ok(()),
    }
}

fn lock(proxy: &Mutex<Proxy>) -> std::sync::MutexGuard<'_, Proxy> {
    proxy.lock().unwrap_or_else(|p| p.into_inner())
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
        let mtu = i32::try_from(config.mtu).unwrap_or(1450);
        let tun = Tun::builder()
            .name(&config.device)
            .mtu(mtu)
            .up()
            .build()
            .map_err(|e| DataPlaneError::Io {
                what: format!("create TUN device {}", config.device),
                source: std::io::Error::other(e.to_string()),
            })?
            .pop()
            .ok_or_else(|| DataPlaneError::Io {
                what: format!("create TUN device {}", config.device),
                source: std::io::Error::other("no queue"),
            })?;
        let tun = Arc::new(tun);

        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(io("open a netlink socket"))?;
        tokio::spawn(connection);
        let index =
            link_index(&handle, &config.device)
                .await?
                .ok_or_else(|| DataPlaneError::Netlink {
                    what: format!("TUN device {}", config.device),
                    reason: "missing right after its creation".into(),
                })?;
        route_service_range(&handle, index, &config.device).await?;
        // IPv6 is best effort: a host without IPv6 still proxies IPv4.
        if let Err(e) = route_service_range_v6(&handle, index, &config.device).await {
            tracing::warn!(device = %config.device, "IPv6 service IPs not routed: {e}");
        }

        let socket = Arc::new(
            UdpSocket::bind(config.listen)
                .await
                .map_err(io(format!("bind the tunnel socket {}", config.listen)))?,
        );
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

        let outgoing = {
            let (tun, socket, proxy) = (Arc::clone(&tun), Arc::clone(&socket), Arc::clone(&proxy));
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                loop {
                    let n = match tun.recv(&mut buf).await {
                        Ok(n) => n,
                        Err(e) => {
                            tracing::warn!("TUN read failed, the proxy stops: {e}");
                            return;
                        }
                    };
                    let packet = &mut buf[..n];
                    let verdict = lock(&proxy).outgoing(packet);
                    match verdict {
                        Verdict::Tunnel(to) => {
                            if let Err(e) = socket.send_to(packet, to).await {
                                tracing::debug!(%to, "tunnel send failed: {e}");
                            }
                        }
                        Verdict::Deliver => {
                            let _ = tun.send(packet).await;
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
            let prober = Arc::clone(&probes.prober);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                loop {
                    let (n, from) = match socket.recv_from(&mut buf).await {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::debug!("tunnel receive failed: {e}");
                            continue;
                        }
                    };
                    let packet = &mut buf[..n];
                    match Probe::parse(packet) {
                        Some(Probe::Ping(nonce)) => {
                            let _ = socket.send_to(&Probe::Pong(nonce).encode(), from).await;
                            continue;
                        }
                        Some(Probe::Pong(nonce)) => {
                            let measured = prober
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .pong(nonce, Instant::now());
                            if let Some((node, rtt)) = measured {
                                tracing::trace!(%node, ?rtt, "RTT");
                            }
                            continue;
                        }
                        None => {}
                    }
                    let verdict = lock(&proxy).incoming(packet);
                    match verdict {
                        Verdict::Deliver => {
                            let _ = tun.send(packet).await;
                        }
                        other => tracing::trace!("tunnel packet not delivered: {other:?}"),
                    }
                }
            })
        };
        tracing::info!(device = %config.device, %local, "service-IP proxy and tunnel up");
        Ok(Self {
            local,
            tasks: vec![outgoing, incoming],
            probes,
        })
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
