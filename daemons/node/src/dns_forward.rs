//! The overlay DNS responder's way out: names that are not services are forwarded to the
//! host's resolvers and their answers cached (the pure rules are
//! [`oakestra_net::dns::forward`]; this is the I/O).
//!
//! The responder runs in the host's network namespace, so the host's `resolv.conf` is usable
//! as it is — a systemd-resolved stub on `127.0.0.53` included, which an instance could not
//! reach itself. The file is read again on every cache miss, so a change of the host's
//! resolvers (DHCP, a VPN) takes effect at once.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use oakestra_net::dns::{self, forward};
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// The host's resolver file read by default.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
/// How long one upstream resolver has to answer before the next is asked.
pub const UPSTREAM_WAIT: Duration = Duration::from_secs(2);

/// Forwards queries to the host's resolvers, with a bounded cache.
#[derive(Debug)]
pub struct Forwarder {
    resolv_conf: PathBuf,
    cache: Mutex<forward::ForwardCache>,
    epoch: Instant,
}

impl Forwarder {
    /// Forwards to the resolvers listed in `resolv_conf` (normally [`HOST_RESOLV_CONF`]).
    pub fn new(resolv_conf: PathBuf) -> Self {
        Forwarder {
            resolv_conf,
            cache: Mutex::new(forward::ForwardCache::default()),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// The host resolvers' answer to `query` (whose message is `raw`), from the cache or
    /// asked of each resolver in turn until one answers; `None` when none is listed or none
    /// answered in time. `bridge` (the responder's own address) is never asked.
    pub async fn forward(
        &self,
        query: &dns::Query,
        raw: &[u8],
        bridge: Ipv4Addr,
    ) -> Option<Vec<u8>> {
        if let Some(hit) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(query, self.now())
        {
            return Some(hit);
        }
        let host = tokio::fs::read_to_string(&self.resolv_conf)
            .await
            .unwrap_or_default();
        for upstream in forward::upstreams(&host, bridge) {
            match ask(upstream, query, raw).await {
                Ok(reply) => {
                    self.cache.lock().unwrap_or_else(|p| p.into_inner()).put(
                        query,
                        &reply,
                        self.now(),
                    );
                    return Some(reply);
                }
                Err(e) => tracing::debug!(%upstream, name = %query.name, "DNS forward: {e}"),
            }
        }
        None
    }
}

/// Sends `raw` to `upstream` port 53 from a fresh socket (a random source port, so answers
/// cannot be guessed) and waits for the reply that answers `query`.
async fn ask(upstream: IpAddr, query: &dns::Query, raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = match upstream {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect((upstream, 53)).await?;
    socket.send(raw).await?;
    let mut buf = vec![0u8; 4096];
    tokio::time::timeout(UPSTREAM_WAIT, async {
        loop {
            let n = socket.recv(&mut buf).await?;
            if forward::answers(query, &buf[..n]) {
                return Ok(buf[..n].to_vec());
            }
        }
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"))?
}
