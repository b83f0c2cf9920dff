//! In-place IPv4 address rewriting with incremental checksum updates (RFC 1624), for TCP, UDP
//! and ICMP echo. Only what the proxy needs: read the addresses, the transport ports (the echo
//! identifier for ICMP) and rewrite source and destination.

use std::net::Ipv4Addr;

/// IP protocol numbers the proxy handles.
pub const ICMP: u8 = 1;
/// TCP.
pub const TCP: u8 = 6;
/// UDP.
pub const UDP: u8 = 17;

/// Why a packet cannot be handled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Shorter than its headers say.
    #[error("truncated packet ({0} bytes)")]
    Truncated(usize),
    /// Not IPv4.
    #[error("not an IPv4 packet (version {0})")]
    NotIpv4(u8),
    /// A protocol other than TCP, UDP and ICMP echo.
    #[error("protocol {0} is not proxied (TCP, UDP and ICMP echo are)")]
    Unsupported(u8),
    /// A fragment after the first: it has no transport header to rewrite.
    #[error("non-first IPv4 fragment")]
    Fragment,
}

/// The flow-relevant fields of an IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    /// IP protocol (TCP, UDP or ICMP).
    pub protocol: u8,
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Source port (ICMP: the echo identifier).
    pub src_port: u16,
    /// Destination port (ICMP: the echo identifier).
    pub dst_port: u16,
}

fn header_len(packet: &[u8]) -> Result<usize, PacketError> {
    let first = *packet.first().ok_or(PacketError::Truncated(0))?;
    if first >> 4 != 4 {
        return Err(PacketError::NotIpv4(first >> 4));
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 || packet.len() < ihl {
        return Err(PacketError::Truncated(packet.len()));
    }
    Ok(ihl)
}

fn word(packet: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([packet[at], packet[at + 1]])
}

fn addr(packet: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(packet[at], packet[at + 1], packet[at + 2], packet[at + 3])
}

/// Where the transport checksum sits, if the packet has one to update.
fn l4_checksum_at(protocol: u8, ihl: usize) -> Option<usize> {
    match protocol {
        TCP => Some(ihl + 16),
        UDP => Some(ihl + 6),
        _ => None,
    }
}

/// Reads the flow of an IPv4 TCP, UDP or ICMP echo packet.
pub fn flow(packet: &[u8]) -> Result<Flow, PacketError> {
    let ihl = header_len(packet)?;
    let protocol = packet[9];
    let fragment_offset = word(packet, 6) & 0x1fff;
    if fragment_offset != 0 {
        return Err(PacketError::Fragment);
    }
    let (src_port, dst_port) = match protocol {
        TCP | UDP => {
            if packet.len() < ihl + if protocol == TCP { 20 } else { 8 } {
                return Err(PacketError::Truncated(packet.len()));
            }
            (word(packet, ihl), word(packet, ihl + 2))
        }
        ICMP => {
            if packet.len() < ihl + 8 {
                return Err(PacketError::Truncated(packet.len()));
            }
            // Echo request (8) and reply (0) carry an identifier; other ICMP is not proxied.
            if !matches!(packet[ihl], 0 | 8) {
                return Err(PacketError::Unsupported(ICMP));
            }
            let id = word(packet, ihl + 4);
            (id, id)
        }
        other => return Err(PacketError::Unsupported(other)),
    };
    Ok(Flow {
        protocol,
        src: addr(packet, 12),
        dst: addr(packet, 16),
        src_port,
        dst_port,
    })
}

/// One's complement checksum update for a 16-bit field changing from `old` to `new`
/// (RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')).
fn update(checksum: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!checksum) + u32::from(!old) + u32::from(new);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn set_addr(packet: &mut [u8], at: usize, new: Ipv4Addr) -> Result<(), PacketError> {
    let ihl = header_len(packet)?;
    let protocol = packet[9];
    let old = addr(packet, at);
    let (old_hi, old_lo) = (word(packet, at), word(packet, at + 2));
    let o = new.octets();
    let (new_hi, new_lo) = (
        u16::from_be_bytes([o[0], o[1]]),
        u16::from_be_bytes([o[2], o[3]]),
    );
    if old == new {
        return Ok(());
    }
    packet[at..at + 4].copy_from_slice(&o);
    let ip_sum = update(update(word(packet, 10), old_hi, new_hi), old_lo, new_lo);
    packet[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    // TCP and UDP checksums cover the addresses through the pseudo-header; ICMP's does not.
    let first_fragment = word(packet, 6) & 0x1fff == 0;
    if let Some(c) = l4_checksum_at(protocol, ihl)
        && first_fragment
        && packet.len() >= c + 2
    {
        let current = word(packet, c);
        if protocol == UDP && current == 0 {
            // UDP over IPv4 without a checksum: stays without.
            return Ok(());
        }
        let mut sum = update(update(current, old_hi, new_hi), old_lo, new_lo);
        if protocol == UDP && sum == 0 {
            sum = 0xffff;
        }
        packet[c..c + 2].copy_from_slice(&sum.to_be_bytes());
    }
    Ok(())
}

/// Rewrites the source address, updating the checksums.
pub fn set_src(packet: &mut [u8], new: Ipv4Addr) -> Result<(), PacketError> {
    set_addr(packet, 12, new)
}

/// Rewrites the destination address, updating the checksums.
pub fn set_dst(packet: &mut [u8], new: Ipv4Addr) -> Result<(), PacketError> {
    set_addr(packet, 16, new)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Full one's complement checksum over `data` (for checking the incremental updates).
    pub(crate) fn checksum(data: &[u8]) -> u16 {
        let mut sum = 0u32;
        for chunk in data.chunks(2) {
            let w = if chunk.len() == 2 {
                u16::from_be_bytes([chunk[0], chunk[1]])
            } else {
                u16::from_be_bytes([chunk[0], 0])
            };
            sum += u32::from(w);
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// Builds an IPv4 packet with correct checksums.
    pub(crate) fn packet(
        protocol: u8,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        sport: u16,
        dport: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let l4_len = match protocol {
            TCP => 20,
            UDP | ICMP => 8,
            _ => 0,
        };
        let total = 20 + l4_len + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[8] = 64;
        p[9] = protocol;
        p[12..16].copy_from_slice(&src.octets());
        p[16..20].copy_from_slice(&dst.octets());
        let ip = checksum(&p[..20]);
        p[10..12].copy_from_slice(&ip.to_be_bytes());
        match protocol {
            TCP | UDP => {
                p[20..22].copy_from_slice(&sport.to_be_bytes());
                p[22..24].copy_from_slice(&dport.to_be_bytes());
                if protocol == TCP {
                    p[32] = 0x50; // data offset 5
                    p[33] = 0x02; // SYN
                } else {
                    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
                }
            }
            ICMP => {
                p[20] = 8; // echo request
                p[24..26].copy_from_slice(&sport.to_be_bytes());
            }
            _ => {}
        }
        p[20 + l4_len..].copy_from_slice(payload);
        let sum = l4_checksum(&p);
        if let Some(at) = l4_checksum_at(protocol, 20) {
            p[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        } else if protocol == ICMP {
            p[22..24].copy_from_slice(&sum.to_be_bytes());
        }
        p
    }

    /// The transport checksum `p` should carry (computed from scratch, field zeroed).
    pub(crate) fn l4_checksum(p: &[u8]) -> u16 {
        let protocol = p[9];
        let mut body = p[20..].to_vec();
        let at = match protocol {
            TCP => 16,
            UDP => 6,
            _ => 2,
        };
        body[at] = 0;
        body[at + 1] = 0;
        if protocol == ICMP {
            return checksum(&body);
        }
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[12..20]);
        pseudo.extend_from_slice(&[0, protocol]);
        pseudo.extend_from_slice(&(body.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(&body);
        let sum = checksum(&pseudo);
        if protocol == UDP && sum == 0 {
            0xffff
        } else {
            sum
        }
    }

    /// Checks both checksums of `p` against a computation from scratch.
    pub(crate) fn assert_checksums(p: &[u8]) {
        let mut header = p[..20].to_vec();
        header[10] = 0;
        header[11] = 0;
        assert_eq!(word(p, 10), checksum(&header), "IPv4 header checksum");
        let at = match p[9] {
            TCP => 36,
            UDP => 26,
            _ => 22,
        };
        assert_eq!(word(p, at), l4_checksum(p), "transport checksum");
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn rewrites_keep_every_checksum_right() {
        for protocol in [TCP, UDP, ICMP] {
            let mut p = packet(
                protocol,
                ip("10.18.0.2"),
                ip("10.30.55.55"),
                40000,
                80,
                b"hello overlay",
            );
            assert_checksums(&p);
            let f = flow(&p).unwrap();
            assert_eq!((f.src, f.dst), (ip("10.18.0.2"), ip("10.30.55.55")));
            set_dst(&mut p, ip("10.18.0.67")).unwrap();
            set_src(&mut p, ip("10.30.0.7")).unwrap();
            assert_checksums(&p);
            let f = flow(&p).unwrap();
            assert_eq!((f.src, f.dst), (ip("10.30.0.7"), ip("10.18.0.67")));
            if protocol == ICMP {
                assert_eq!((f.src_port, f.dst_port), (40000, 40000), "echo identifier");
            } else {
                assert_eq!((f.src_port, f.dst_port), (40000, 80));
            }
        }
    }

    #[test]
    fn udp_without_checksum_stays_without() {
        let mut p = packet(UDP, ip("10.18.0.2"), ip("10.30.0.1"), 1, 2, b"x");
        p[26] = 0;
        p[27] = 0;
        set_dst(&mut p, ip("10.18.0.9")).unwrap();
        assert_eq!(word(&p, 26), 0);
    }

    #[test]
    fn refuses_what_it_cannot_proxy() {
        assert_eq!(flow(&[]), Err(PacketError::Truncated(0)));
        assert_eq!(flow(&[0x60; 40]), Err(PacketError::NotIpv4(6)));
        let mut gre = packet(TCP, ip("10.0.0.1"), ip("10.0.0.2"), 1, 2, b"");
        gre[9] = 47;
        assert_eq!(flow(&gre), Err(PacketError::Unsupported(47)));
        let mut frag = packet(UDP, ip("10.0.0.1"), ip("10.0.0.2"), 1, 2, b"");
        frag[7] = 10;
        assert_eq!(flow(&frag), Err(PacketError::Fragment));
        let short = packet(TCP, ip("10.0.0.1"), ip("10.0.0.2"), 1, 2, b"");
        assert_eq!(flow(&short[..30]), Err(PacketError::Truncated(30)));
    }
}
