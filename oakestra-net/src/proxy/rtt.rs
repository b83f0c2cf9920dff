//! RTT measurement between workers for closest IPs, pure: the probe datagrams the tunnel sends
//! over its UDP socket and the bookkeeping that turns answers into smoothed RTTs. The caller
//! does the I/O and passes the time in.
//!
//! A probe is [`PROBE_LEN`] bytes: the magic `00 'O' 'K' 'R'`, a kind byte (`1` ping, `2`
//! pong) and a big-endian 64-bit nonce. Its first byte has IP version 0, so it is never
//! mistaken for the IPv4 (version 4) or IPv6 (version 6) packets the tunnel carries, and an
//! old worker that does not know probes drops it as an unparsable packet.
//!
//! A worker answers a ping with a pong carrying the same nonce, from its tunnel socket. The
//! pinging side accepts a pong only for a nonce it sent and has not seen answered (so stray or
//! forged pongs are ignored), and smooths the samples per endpoint like TCP's SRTT
//! (RFC 6298: the first sample as is, then 7/8 old + 1/8 new).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Length of a probe datagram.
pub const PROBE_LEN: usize = 13;
/// The probe magic; byte 0 is 0 (IP version 0).
pub const PROBE_MAGIC: [u8; 4] = [0x00, b'O', b'K', b'R'];
/// A ping unanswered after this long is forgotten (its pong no longer counts).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

const PING: u8 = 1;
const PONG: u8 = 2;

/// A probe datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Please answer with a pong carrying this nonce.
    Ping(u64),
    /// The answer to the ping with this nonce.
    Pong(u64),
}

impl Probe {
    /// The datagram.
    pub fn encode(self) -> [u8; PROBE_LEN] {
        let (kind, nonce) = match self {
            Self::Ping(n) => (PING, n),
            Self::Pong(n) => (PONG, n),
        };
        let mut out = [0u8; PROBE_LEN];
        out[..4].copy_from_slice(&PROBE_MAGIC);
        out[4] = kind;
        out[5..].copy_from_slice(&nonce.to_be_bytes());
        out
    }

    /// The probe in `datagram`, or `None` when it is not one (e.g. an IP packet).
    pub fn parse(datagram: &[u8]) -> Option<Self> {
        if datagram.len() != PROBE_LEN || datagram[..4] != PROBE_MAGIC {
            return None;
        }
        let nonce = u64::from_be_bytes(datagram[5..].try_into().ok()?);
        match datagram[4] {
            PING => Some(Self::Ping(nonce)),
            PONG => Some(Self::Pong(nonce)),
            _ => None,
        }
    }
}

/// Pings sent and smoothed RTTs, per tunnel endpoint.
#[derive(Debug, Clone)]
pub struct RttProber {
    next_nonce: u64,
    pending: HashMap<u64, (SocketAddr, Instant)>,
    smoothed: BTreeMap<SocketAddr, Duration>,
}

impl RttProber {
    /// Nonces start at `seed` (pick one per start, e.g. from the clock, so that pongs to an
    /// earlier run's pings do not match).
    pub fn new(seed: u64) -> Self {
        Self {
            next_nonce: seed,
            pending: HashMap::new(),
            smoothed: BTreeMap::new(),
        }
    }

    /// A ping for `to`, sent at `now`; pings older than [`PROBE_TIMEOUT`] are forgotten.
    pub fn ping(&mut self, to: SocketAddr, now: Instant) -> [u8; PROBE_LEN] {
        self.pending
            .retain(|_, (_, sent)| now.saturating_duration_since(*sent) < PROBE_TIMEOUT);
        let nonce = self.next_nonce;
        self.next_nonce = self.next_nonce.wrapping_add(1);
        self.pending.insert(nonce, (to, now));
        Probe::Ping(nonce).encode()
    }

    /// A pong with `nonce` arrived at `now`: the endpoint it answers for and its smoothed RTT,
    /// or `None` when no pending ping has that nonce.
    pub fn pong(&mut self, nonce: u64, now: Instant) -> Option<(SocketAddr, Duration)> {
        let (node, sent) = self.pending.remove(&nonce)?;
        let sample = now.saturating_duration_since(sent);
        if sample >= PROBE_TIMEOUT {
            return None;
        }
        let rtt = match self.smoothed.get(&node) {
            None => sample,
            Some(old) => (*old * 7 + sample) / 8,
        };
        self.smoothed.insert(node, rtt);
        Some((node, rtt))
    }

    /// The smoothed RTT of `node`, once one of its pongs arrived.
    pub fn rtt(&self, node: SocketAddr) -> Option<Duration> {
        self.smoothed.get(&node).copied()
    }

    /// Every smoothed RTT, by endpoint.
    pub fn rtts(&self) -> &BTreeMap<SocketAddr, Duration> {
        &self.smoothed
    }

    /// Forgets `node` (it no longer hosts anything this worker talks to).
    pub fn forget(&mut self, node: SocketAddr) {
        self.smoothed.remove(&node);
        self.pending.retain(|_, (to, _)| *to != node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, n], 50103))
    }

    #[test]
    fn probes_round_trip_and_are_never_ip_packets() {
        for probe in [
            Probe::Ping(0),
            Probe::Pong(u64::MAX),
            Probe::Ping(0x0102_0304),
        ] {
            let bytes = probe.encode();
            assert_eq!(Probe::parse(&bytes), Some(probe));
            assert_eq!(bytes[0] >> 4, 0, "IP version 0");
            assert!(
                crate::proxy::packet::flow(&bytes).is_err(),
                "the proxy refuses it as a packet"
            );
        }
        let mut bytes = Probe::Ping(7).encode();
        bytes[4] = 3;
        assert_eq!(Probe::parse(&bytes), None, "unknown kind");
        assert_eq!(Probe::parse(&Probe::Ping(7).encode()[..12]), None, "short");
        // An IPv4 packet of the same length is not a probe.
        let mut ip = [0u8; PROBE_LEN];
        ip[0] = 0x45;
        assert_eq!(Probe::parse(&ip), None);
    }

    #[test]
    fn pongs_give_smoothed_rtts_only_for_pings_sent() {
        let t0 = Instant::now();
        let mut p = RttProber::new(100);
        let Some(Probe::Ping(a)) = Probe::parse(&p.ping(node(1), t0)) else {
            panic!("a ping");
        };
        let Some(Probe::Ping(b)) = Probe::parse(&p.ping(node(2), t0)) else {
            panic!("a ping");
        };
        assert_ne!(a, b);
        // A pong nobody asked for, or answered twice, counts for nothing.
        assert_eq!(p.pong(a.wrapping_add(1000), t0), None);
        let ms = Duration::from_millis;
        assert_eq!(p.pong(a, t0 + ms(8)), Some((node(1), ms(8))));
        assert_eq!(p.pong(a, t0 + ms(9)), None);
        assert_eq!(p.pong(b, t0 + ms(1)), Some((node(2), ms(1))));
        // Later samples are smoothed: 7/8 old + 1/8 new.
        let t1 = t0 + ms(100);
        let Some(Probe::Ping(c)) = Probe::parse(&p.ping(node(1), t1)) else {
            panic!("a ping");
        };
        assert_eq!(p.pong(c, t1 + ms(16)), Some((node(1), ms(9))));
        assert_eq!(p.rtt(node(1)), Some(ms(9)));
        assert_eq!(p.rtts().len(), 2);
        // Pings unanswered for too long are dropped; late pongs do not count.
        let Some(Probe::Ping(d)) = Probe::parse(&p.ping(node(2), t1)) else {
            panic!("a ping");
        };
        let late = t1 + PROBE_TIMEOUT + ms(1);
        p.ping(node(1), late);
        assert_eq!(p.pong(d, late), None);
        p.forget(node(2));
        assert_eq!(p.rtt(node(2)), None);
    }
}
