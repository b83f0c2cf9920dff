//! In-place IPv4 and IPv6 address rewriting with incremental checksum updates (RFC 1624), for
//! TCP, UDP and ICMP / ICMPv6 echo. Only what the proxy needs: read the addresses, the
//! transport ports (the echo identifier for ICMP) and rewrite source and destination.
//!
//! Checksums are updated, never recomputed, so the cost does not grow with the payload (GSO
//! super-packets of up to 64 KiB included). Two states of the TCP/UDP checksum field are
//! handled ([`Checksum`]): complete (what a wire packet carries) and partial (what the kernel
//! hands a TUN device with `IFF_VNET_HDR` when it left the checksum to "hardware":
//! `VIRTIO_NET_HDR_F_NEEDS_CSUM`, Linux's `CHECKSUM_PARTIAL`).
//!
//! IPv6: the fixed header, then optionally Hop-by-Hop and Destination Options headers (skipped;
//! they do not change the pseudo-header), then TCP, UDP or ICMPv6. Routing headers (which would
//! change the pseudo-header's destination), fragments and AH/ESP are refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol numbers the proxy handles.
pub const ICMP: u8 = 1;
/// TCP.
pub const TCP: u8 = 6;
/// UDP.
pub const UDP: u8 = 17;
/// ICMPv6.
pub const ICMPV6: u8 = 58;

/// IPv6 extension headers that are skipped (they leave the pseudo-header alone).
const HOP_BY_HOP: u8 = 0;
const DESTINATION_OPTIONS: u8 = 60;
/// IPv6 fragment header.
const FRAGMENT: u8 = 44;
/// Further IPv6 extension headers (routing, ESP, AH, mobility, HIP, shim6, experimental).
const OTHER_EXTENSIONS: [u8; 8] = [43, 50, 51, 135, 139, 140, 253, 254];
/// At most this many skipped extension headers (a packet chaining more is refused).
const MAX_EXTENSIONS: usize = 4;

/// Why a packet cannot be handled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Shorter than its headers say.
    #[error("truncated packet ({0} bytes)")]
    Truncated(usize),
    /// Neither IPv4 nor IPv6.
    #[error("not an IPv4 or IPv6 packet (version {0})")]
    NotIp(u8),
    /// A protocol other than TCP, UDP and ICMP / ICMPv6 echo.
    #[error("protocol {0} is not proxied (TCP, UDP and ICMP echo are)")]
    Unsupported(u8),
    /// A fragment: an IPv4 fragment after the first (it has no transport header to rewrite),
    /// or any IPv6 fragment.
    #[error("fragment (only unfragmented IPv6 and first IPv4 fragments are proxied)")]
    Fragment,
    /// An IPv6 extension header the proxy does not walk (only Hop-by-Hop and Destination
    /// Options are skipped).
    #[error(
        "IPv6 extension header {0} is not proxied (only Hop-by-Hop and Destination Options are skipped)"
    )]
    ExtensionHeader(u8),
    /// UDP over IPv6 with checksum 0, which IPv6 forbids (RFC 8200 §8.1).
    #[error("UDP over IPv6 without a checksum")]
    UdpWithoutChecksum,
    /// An address of the other IP version than the packet's.
    #[error("cannot put {0} into a packet of the other IP version")]
    WrongFamily(IpAddr),
}

/// The state of a packet's TCP/UDP checksum field. ICMP's and the IPv4 header's are always
/// complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// The ones' complement of the sum over pseudo-header, header and payload (a wire packet).
    Complete,
    /// Only the folded, *not* complemented, sum of the pseudo-header: the sender left the rest
    /// to whoever finishes it (Linux `CHECKSUM_PARTIAL`, `th->check =
    /// ~tcp_v4_check(len, saddr, daddr, 0)`; virtio `VIRTIO_NET_HDR_F_NEEDS_CSUM`).
    Partial,
}

impl Checksum {
    /// `Partial` when `partial` is set.
    pub fn partial_if(partial: bool) -> Self {
        if partial {
            Checksum::Partial
        } else {
            Checksum::Complete
        }
    }
}

/// The flow-relevant fields of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    /// IP protocol (TCP, UDP, ICMP or ICMPv6).
    pub protocol: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (ICMP: the echo identifier).
    pub src_port: u16,
    /// Destination port (ICMP: the echo identifier).
    pub dst_port: u16,
}

/// Where the parts of a packet are.
#[derive(Debug, Clone, Copy)]
struct Layout {
    v6: bool,
    /// Offset of the transport header.
    l4: usize,
    /// Transport protocol (after the skipped IPv6 extension headers).
    protocol: u8,
    /// Not a non-first fragment (it has a transport header).
    has_l4: bool,
    /// Of a fragment: the datagram's identification, and whether this is its first fragment.
    fragment: Option<(u32, bool)>,
}

impl Layout {
    /// Offsets of the source and destination address.
    fn addresses(&self) -> (usize, usize) {
        if self.v6 { (8, 24) } else { (12, 16) }
    }

    fn addr_len(&self) -> usize {
        if self.v6 { 16 } else { 4 }
    }
}

fn word(packet: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([packet[at], packet[at + 1]])
}

fn layout(packet: &[u8]) -> Result<Layout, PacketError> {
    let first = *packet.first().ok_or(PacketError::Truncated(0))?;
    match first >> 4 {
        4 => {
            let ihl = usize::from(first & 0x0f) * 4;
            if ihl < 20 || packet.len() < ihl {
                return Err(PacketError::Truncated(packet.len()));
            }
            let flags_offset = word(packet, 6);
            let (more, offset) = (flags_offset & 0x2000 != 0, flags_offset & 0x1fff);
            Ok(Layout {
                v6: false,
                l4: ihl,
                protocol: packet[9],
                has_l4: offset == 0,
                fragment: (more || offset != 0).then(|| (u32::from(word(packet, 4)), offset == 0)),
            })
        }
        6 => {
            if packet.len() < 40 {
                return Err(PacketError::Truncated(packet.len()));
            }
            let (mut next, mut at, mut fragment) = (packet[6], 40, None);
            for _ in 0..=MAX_EXTENSIONS {
                match next {
                    HOP_BY_HOP | DESTINATION_OPTIONS => {
                        if packet.len() < at + 8 {
                            return Err(PacketError::Truncated(packet.len()));
                        }
                        next = packet[at];
                        at += (usize::from(packet[at + 1]) + 1) * 8;
                        if packet.len() < at {
                            return Err(PacketError::Truncated(packet.len()));
                        }
                    }
                    FRAGMENT => {
                        // Next header, reserved, offset (13 bits) + M, identification.
                        if packet.len() < at + 8 {
                            return Err(PacketError::Truncated(packet.len()));
                        }
                        let offset_more = word(packet, at + 2);
                        let id = u32::from_be_bytes([
                            packet[at + 4],
                            packet[at + 5],
                            packet[at + 6],
                            packet[at + 7],
                        ]);
                        next = packet[at];
                        at += 8;
                        let (offset, more) = (offset_more >> 3, offset_more & 1 != 0);
                        if offset != 0 {
                            return Ok(Layout {
                                v6: true,
                                l4: at,
                                protocol: next,
                                has_l4: false,
                                fragment: Some((id, false)),
                            });
                        }
                        // The first fragment (or an atomic one): its transport header follows.
                        fragment = more.then_some((id, true));
                    }
                    x if OTHER_EXTENSIONS.contains(&x) => {
                        return Err(PacketError::ExtensionHeader(x));
                    }
                    _ => {
                        return Ok(Layout {
                            v6: true,
                            l4: at,
                            protocol: next,
                            has_l4: true,
                            fragment,
                        });
                    }
                }
            }
            Err(PacketError::ExtensionHeader(next))
        }
        v => Err(PacketError::NotIp(v)),
    }
}

fn addr_at(packet: &[u8], at: usize, v6: bool) -> IpAddr {
    if v6 {
        let mut o = [0u8; 16];
        o.copy_from_slice(&packet[at..at + 16]);
        IpAddr::V6(Ipv6Addr::from(o))
    } else {
        IpAddr::V4(Ipv4Addr::new(
            packet[at],
            packet[at + 1],
            packet[at + 2],
            packet[at + 3],
        ))
    }
}

/// Where the checksum that covers the addresses sits in the transport header, if any: TCP,
/// UDP and (its checksum covers a pseudo-header too) ICMPv6.
fn l4_checksum_at(protocol: u8, l4: usize) -> Option<usize> {
    match protocol {
        TCP => Some(l4 + 16),
        UDP => Some(l4 + 6),
        ICMPV6 => Some(l4 + 2),
        _ => None,
    }
}

/// The datagram a fragment belongs to: protocol, source, destination and identification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragmentOf {
    /// Transport protocol.
    pub protocol: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// The identification all fragments of the datagram share (IPv4: 16 bits; IPv6: 32, from
    /// the Fragment header).
    pub id: u32,
}

/// When `packet` is an IPv4 fragment or carries an IPv6 Fragment header: its datagram, and
/// whether it is the first fragment (the one with the transport header).
pub fn fragment(packet: &[u8]) -> Option<(FragmentOf, bool)> {
    let l = layout(packet).ok()?;
    let (id, first) = l.fragment?;
    let (src, dst) = l.addresses();
    Some((
        FragmentOf {
            protocol: l.protocol,
            src: addr_at(packet, src, l.v6),
            dst: addr_at(packet, dst, l.v6),
            id,
        },
        first,
    ))
}

/// Reads the flow of a TCP, UDP or ICMP / ICMPv6 echo packet (IPv4 or IPv6).
pub fn flow(packet: &[u8]) -> Result<Flow, PacketError> {
    let l = layout(packet)?;
    if !l.has_l4 {
        return Err(PacketError::Fragment);
    }
    let at = l.l4;
    let need = |n: usize| {
        if packet.len() < at + n {
            Err(PacketError::Truncated(packet.len()))
        } else {
            Ok(())
        }
    };
    let (src_port, dst_port) = match (l.protocol, l.v6) {
        (TCP, _) => {
            need(20)?;
            (word(packet, at), word(packet, at + 2))
        }
        (UDP, _) => {
            need(8)?;
            // Partial checksums are never 0 (the pseudo-header sum of a non-empty datagram
            // is not), so this refuses only what IPv6 forbids.
            if l.v6 && word(packet, at + 6) == 0 {
                return Err(PacketError::UdpWithoutChecksum);
            }
            (word(packet, at), word(packet, at + 2))
        }
        (ICMP, false) | (ICMPV6, true) => {
            need(8)?;
            // Echo request and reply carry an identifier; other ICMP is not proxied.
            let echo: &[u8] = if l.v6 { &[128, 129] } else { &[0, 8] };
            if !echo.contains(&packet[at]) {
                return Err(PacketError::Unsupported(l.protocol));
            }
            let id = word(packet, at + 4);
            (id, id)
        }
        (other, _) => return Err(PacketError::Unsupported(other)),
    };
    let (src, dst) = l.addresses();
    Ok(Flow {
        protocol: l.protocol,
        src: addr_at(packet, src, l.v6),
        dst: addr_at(packet, dst, l.v6),
        src_port,
        dst_port,
    })
}

/// Folds a ones' complement sum into 16 bits.
fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The ones' complement sum of the 16-bit words of `bytes` (an even number of them).
fn sum_words(bytes: &[u8]) -> u64 {
    bytes
        .chunks_exact(2)
        .map(|c| u64::from(u16::from_be_bytes([c[0], c[1]])))
        .sum()
}

/// A complete checksum after words summing to `old` were replaced by words summing to `new`
/// (RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), over several words at once).
fn update_complete(checksum: u16, old: u64, new: u64) -> u16 {
    !update_partial(!checksum, old, new)
}

/// A partial (uncomplemented) sum after the same change: S' = S + ~m + m'.
fn update_partial(sum: u16, old: u64, new: u64) -> u16 {
    fold(u64::from(sum) + u64::from(!fold(old)) + new)
}

fn set_addr(
    packet: &mut [u8],
    source: bool,
    new: IpAddr,
    mode: Checksum,
) -> Result<(), PacketError> {
    let l = layout(packet)?;
    let mut octets = [0u8; 16];
    let new_bytes: &[u8] = match (new, l.v6) {
        (IpAddr::V4(a), false) => {
            octets[..4].copy_from_slice(&a.octets());
            &octets[..4]
        }
        (IpAddr::V6(a), true) => {
            octets = a.octets();
            &octets
        }
        _ => return Err(PacketError::WrongFamily(new)),
    };
    let (src, dst) = l.addresses();
    let at = if source { src } else { dst };
    let range = at..at + l.addr_len();
    if packet[range.clone()] == *new_bytes {
        return Ok(());
    }
    let (old, new_sum) = (sum_words(&packet[range.clone()]), sum_words(new_bytes));
    packet[range].copy_from_slice(new_bytes);
    if !l.v6 {
        let ip_sum = update_complete(word(packet, 10), old, new_sum);
        packet[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    }
    // The transport checksum covers the addresses through the pseudo-header (TCP, UDP,
    // ICMPv6; not ICMPv4). Of a non-first IPv4 fragment it is not in this packet.
    let Some(c) = l4_checksum_at(l.protocol, l.l4).filter(|_| l.has_l4) else {
        return Ok(());
    };
    if packet.len() < c + 2 {
        return Ok(());
    }
    let current = word(packet, c);
    let updated = match mode {
        Checksum::Partial if l.protocol != ICMPV6 => update_partial(current, old, new_sum),
        _ => {
            if l.protocol == UDP && current == 0 {
                if l.v6 {
                    return Err(PacketError::UdpWithoutChecksum);
                }
                // UDP over IPv4 without a checksum: stays without.
                return Ok(());
            }
            let sum = update_complete(current, old, new_sum);
            // A computed UDP checksum of 0 is sent as all ones (0 means "none").
            if l.protocol == UDP && sum == 0 {
                0xffff
            } else {
                sum
            }
        }
    };
    packet[c..c + 2].copy_from_slice(&updated.to_be_bytes());
    Ok(())
}

/// Rewrites the source address, updating the (complete) checksums.
pub fn set_src(packet: &mut [u8], new: impl Into<IpAddr>) -> Result<(), PacketError> {
    set_addr(packet, true, new.into(), Checksum::Complete)
}

/// Rewrites the destination address, updating the (complete) checksums.
pub fn set_dst(packet: &mut [u8], new: impl Into<IpAddr>) -> Result<(), PacketError> {
    set_addr(packet, false, new.into(), Checksum::Complete)
}

/// Rewrites the source address; the TCP/UDP checksum field is in state `mode`.
pub fn set_src_with(
    packet: &mut [u8],
    new: impl Into<IpAddr>,
    mode: Checksum,
) -> Result<(), PacketError> {
    set_addr(packet, true, new.into(), mode)
}

/// Rewrites the destination address; the TCP/UDP checksum field is in state `mode`.
pub fn set_dst_with(
    packet: &mut [u8],
    new: impl Into<IpAddr>,
    mode: Checksum,
) -> Result<(), PacketError> {
    set_addr(packet, false, new.into(), mode)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Full one's complement checksum over `data` (for checking the incremental updates).
    pub(crate) fn checksum(data: &[u8]) -> u16 {
        !fold(raw_sum(data))
    }

    /// The ones' complement sum of `data`, padded with a zero byte when odd.
    fn raw_sum(data: &[u8]) -> u64 {
        data.chunks(2)
            .map(|c| u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum()
    }

    fn l4_header_len(protocol: u8) -> usize {
        match protocol {
            TCP => 20,
            _ => 8,
        }
    }

    /// Fills in the transport header (ports, echo type and identifier, UDP length) and payload
    /// of `p` from `l4` on, then its checksum.
    fn fill_l4(p: &mut [u8], l4: usize, protocol: u8, sport: u16, dport: u16, payload: &[u8]) {
        match protocol {
            TCP | UDP => {
                p[l4..l4 + 2].copy_from_slice(&sport.to_be_bytes());
                p[l4 + 2..l4 + 4].copy_from_slice(&dport.to_be_bytes());
                if protocol == TCP {
                    p[l4 + 12] = 0x50; // data offset 5
                    p[l4 + 13] = 0x02; // SYN
                } else {
                    let len = (8 + payload.len()) as u16;
                    p[l4 + 4..l4 + 6].copy_from_slice(&len.to_be_bytes());
                }
            }
            ICMP => p[l4] = 8,     // echo request
            ICMPV6 => p[l4] = 128, // echo request
            _ => {}
        }
        if matches!(protocol, ICMP | ICMPV6) {
            p[l4 + 4..l4 + 6].copy_from_slice(&sport.to_be_bytes());
        }
        let start = l4 + l4_header_len(protocol);
        p[start..].copy_from_slice(payload);
        let sum = l4_checksum(p);
        let at = checksum_at(p);
        p[at..at + 2].copy_from_slice(&sum.to_be_bytes());
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
        let total = 20 + l4_header_len(protocol) + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[8] = 64;
        p[9] = protocol;
        p[12..16].copy_from_slice(&src.octets());
        p[16..20].copy_from_slice(&dst.octets());
        let ip = checksum(&p[..20]);
        p[10..12].copy_from_slice(&ip.to_be_bytes());
        fill_l4(&mut p, 20, protocol, sport, dport, payload);
        p
    }

    /// Builds an IPv6 packet with a correct checksum (`protocol` ICMPV6 for an echo request).
    pub(crate) fn packet6(
        protocol: u8,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        sport: u16,
        dport: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let body = l4_header_len(protocol) + payload.len();
        let mut p = vec![0u8; 40 + body];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&(body as u16).to_be_bytes());
        p[6] = protocol;
        p[7] = 64;
        p[8..24].copy_from_slice(&src.octets());
        p[24..40].copy_from_slice(&dst.octets());
        fill_l4(&mut p, 40, protocol, sport, dport, payload);
        p
    }

    /// Where the checksum of `p`'s transport header is (ICMP's included).
    pub(crate) fn checksum_at(p: &[u8]) -> usize {
        let l = layout(p).unwrap();
        l4_checksum_at(l.protocol, l.l4).unwrap_or(l.l4 + 2)
    }

    /// The pseudo-header's sum (not folded) of `p`, for TCP, UDP and ICMPv6.
    pub(crate) fn pseudo_sum(p: &[u8]) -> u64 {
        let l = layout(p).unwrap();
        let (src, _) = l.addresses();
        let len = (p.len() - l.l4) as u64;
        raw_sum(&p[src..src + 2 * l.addr_len()]) + u64::from(l.protocol) + len
    }

    /// The transport checksum `p` should carry (computed from scratch, field zeroed).
    pub(crate) fn l4_checksum(p: &[u8]) -> u16 {
        let l = layout(p).unwrap();
        let at = checksum_at(p);
        let mut body = p[l.l4..].to_vec();
        body[at - l.l4] = 0;
        body[at - l.l4 + 1] = 0;
        if l.protocol == ICMP {
            return checksum(&body);
        }
        let sum = !fold(pseudo_sum(p) + raw_sum(&body));
        if l.protocol == UDP && sum == 0 {
            0xffff
        } else {
            sum
        }
    }

    /// Checks every checksum of `p` against a computation from scratch.
    pub(crate) fn assert_checksums(p: &[u8]) {
        if p[0] >> 4 == 4 {
            let mut header = p[..20].to_vec();
            header[10] = 0;
            header[11] = 0;
            assert_eq!(word(p, 10), checksum(&header), "IPv4 header checksum");
        }
        assert_eq!(
            word(p, checksum_at(p)),
            l4_checksum(p),
            "transport checksum"
        );
    }

    /// Turns `p`'s complete TCP/UDP checksum into the partial one a TUN with `IFF_VNET_HDR`
    /// hands over: the folded, uncomplemented pseudo-header sum.
    pub(crate) fn make_partial(p: &mut [u8]) {
        let at = checksum_at(p);
        let partial = fold(pseudo_sum(p));
        p[at..at + 2].copy_from_slice(&partial.to_be_bytes());
    }

    /// What the NIC (or the kernel's software fallback) does with a partial checksum: sum
    /// from the transport header's start to the end, field included, and complement.
    pub(crate) fn finish(p: &mut [u8]) {
        let l = layout(p).unwrap();
        let mut sum = !fold(raw_sum(&p[l.l4..]));
        if l.protocol == UDP && sum == 0 {
            sum = 0xffff;
        }
        let at = checksum_at(p);
        p[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn ip6(s: &str) -> Ipv6Addr {
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
            assert_eq!(
                (f.src, f.dst),
                (ip("10.18.0.2").into(), ip("10.30.55.55").into())
            );
            set_dst(&mut p, ip("10.18.0.67")).unwrap();
            set_src(&mut p, ip("10.30.0.7")).unwrap();
            assert_checksums(&p);
            let f = flow(&p).unwrap();
            assert_eq!(
                (f.src, f.dst),
                (ip("10.30.0.7").into(), ip("10.18.0.67").into())
            );
            if protocol == ICMP {
                assert_eq!((f.src_port, f.dst_port), (40000, 40000), "echo identifier");
            } else {
                assert_eq!((f.src_port, f.dst_port), (40000, 80));
            }
        }
    }

    #[test]
    fn ipv6_rewrites_keep_every_checksum_right() {
        for protocol in [TCP, UDP, ICMPV6] {
            let mut p = packet6(
                protocol,
                ip6("fc00::4:1:102"),
                ip6("fdff:2000::55"),
                40000,
                80,
                b"hello v6 overlay",
            );
            assert_checksums(&p);
            let f = flow(&p).unwrap();
            assert_eq!(f.protocol, protocol);
            assert_eq!(
                (f.src, f.dst),
                (ip6("fc00::4:1:102").into(), ip6("fdff:2000::55").into())
            );
            set_dst(&mut p, ip6("fc00::4:2:103")).unwrap();
            set_src(&mut p, ip6("fdff::7")).unwrap();
            assert_checksums(&p);
            let f = flow(&p).unwrap();
            assert_eq!(
                (f.src, f.dst),
                (ip6("fdff::7").into(), ip6("fc00::4:2:103").into())
            );
            if protocol == ICMPV6 {
                assert_eq!((f.src_port, f.dst_port), (40000, 40000), "echo identifier");
            } else {
                assert_eq!((f.src_port, f.dst_port), (40000, 80));
            }
        }
    }

    #[test]
    fn ipv6_skips_hop_by_hop_and_destination_options() {
        let plain = packet6(UDP, ip6("fc00::2"), ip6("fdff::9"), 5, 53, b"query");
        // Insert an 8-byte Destination Options header (PadN) between IPv6 and UDP.
        let mut p = plain[..40].to_vec();
        p[6] = DESTINATION_OPTIONS;
        p.extend_from_slice(&[UDP, 0, 1, 4, 0, 0, 0, 0]);
        p.extend_from_slice(&plain[40..]);
        let len = (p.len() - 40) as u16;
        p[4..6].copy_from_slice(&len.to_be_bytes());
        let f = flow(&p).unwrap();
        assert_eq!((f.protocol, f.src_port, f.dst_port), (UDP, 5, 53));
        set_dst(&mut p, ip6("fc00::4:2:103")).unwrap();
        // The UDP checksum (pseudo-header with the new dst) is still right.
        let expected = packet6(UDP, ip6("fc00::2"), ip6("fc00::4:2:103"), 5, 53, b"query");
        assert_eq!(&p[48..], &expected[40..]);
    }

    #[test]
    fn partial_checksums_stay_partial_and_finish_right() {
        // Big enough to be a GSO super-packet: nothing assumes an MTU-sized packet.
        let payload: Vec<u8> = (0..60_000u32).map(|i| (i * 7 + 3) as u8).collect();
        let v4 = |protocol| {
            packet(
                protocol,
                ip("10.18.0.2"),
                ip("10.30.55.55"),
                40000,
                80,
                &payload,
            )
        };
        let v6 = |protocol| {
            packet6(
                protocol,
                ip6("fc00::4:1:102"),
                ip6("fdff:2000::55"),
                40000,
                80,
                &payload,
            )
        };
        let cases: Vec<(Vec<u8>, IpAddr, IpAddr)> = vec![
            (v4(TCP), ip("10.18.0.67").into(), ip("10.30.0.7").into()),
            (v4(UDP), ip("10.18.0.67").into(), ip("10.30.0.7").into()),
            (v6(TCP), ip6("fc00::4:2:103").into(), ip6("fdff::7").into()),
            (v6(UDP), ip6("fc00::4:2:103").into(), ip6("fdff::7").into()),
        ];
        for (mut p, dst, src) in cases {
            make_partial(&mut p);
            set_dst_with(&mut p, dst, Checksum::Partial).unwrap();
            set_src_with(&mut p, src, Checksum::Partial).unwrap();
            // Still partial: exactly the new pseudo-header's sum.
            assert_eq!(word(&p, checksum_at(&p)), fold(pseudo_sum(&p)), "{dst}");
            if p[0] >> 4 == 4 {
                let mut header = p[..20].to_vec();
                header[10] = 0;
                header[11] = 0;
                assert_eq!(
                    word(&p, 10),
                    checksum(&header),
                    "IPv4 header always complete"
                );
            }
            finish(&mut p);
            assert_checksums(&p);
        }
    }

    #[test]
    fn partial_checksums_of_small_packets_finish_right_for_many_addresses() {
        // Addresses whose words carry and wrap in every way.
        let v4s = ["0.0.0.0", "255.255.255.255", "10.30.0.1", "128.0.255.1"];
        let v6s = ["::", "ffff:ffff::ffff", "fdff:2000::1", "fc00::4:ffff:ff00"];
        for protocol in [TCP, UDP] {
            for s in v4s {
                for d in v4s {
                    let mut p = packet(protocol, ip("10.18.0.2"), ip("10.30.0.9"), 1, 2, b"abc");
                    make_partial(&mut p);
                    set_src_with(&mut p, ip(s), Checksum::Partial).unwrap();
                    set_dst_with(&mut p, ip(d), Checksum::Partial).unwrap();
                    finish(&mut p);
                    assert_checksums(&p);
                }
            }
            for s in v6s {
                for d in v6s {
                    let mut p = packet6(protocol, ip6("fc00::2"), ip6("fdff::9"), 1, 2, b"abc");
                    make_partial(&mut p);
                    set_src_with(&mut p, ip6(s), Checksum::Partial).unwrap();
                    set_dst_with(&mut p, ip6(d), Checksum::Partial).unwrap();
                    finish(&mut p);
                    assert_checksums(&p);
                }
            }
        }
    }

    #[test]
    fn udp_without_checksum_stays_without_over_ipv4_only() {
        let mut p = packet(UDP, ip("10.18.0.2"), ip("10.30.0.1"), 1, 2, b"x");
        p[26] = 0;
        p[27] = 0;
        set_dst(&mut p, ip("10.18.0.9")).unwrap();
        assert_eq!(word(&p, 26), 0);
        let mut p = packet6(UDP, ip6("fc00::2"), ip6("fdff::1"), 1, 2, b"x");
        p[46] = 0;
        p[47] = 0;
        assert_eq!(flow(&p), Err(PacketError::UdpWithoutChecksum));
        assert_eq!(
            set_dst(&mut p, ip6("fc00::9")),
            Err(PacketError::UdpWithoutChecksum)
        );
    }

    #[test]
    fn refuses_what_it_cannot_proxy() {
        assert_eq!(flow(&[]), Err(PacketError::Truncated(0)));
        assert_eq!(flow(&[0x50; 40]), Err(PacketError::NotIp(5)));
        assert_eq!(flow(&[0x60; 39]), Err(PacketError::Truncated(39)));
        let mut gre = packet(TCP, ip("10.0.0.1"), ip("10.0.0.2"), 1, 2, b"");
        gre[9] = 47;
        assert_eq!(flow(&gre), Err(PacketError::Unsupported(47)));
        let mut frag = packet(UDP, ip("10.0.0.1"), ip("10.0.0.2"), 1, 2, b"");
        frag[7] = 10;
        assert_eq!(flow(&frag), Err(PacketError::Fragment));
        let short = packet(TCP, ip("10.0.0.1"), ip("10.0.0.2"), 1, 2, b"");
        assert_eq!(flow(&short[..30]), Err(PacketError::Truncated(30)));
        // ICMP and ICMPv6 in the other IP version, and ICMPv6 other than echo.
        let mut icmp6_in_v4 = packet(ICMP, ip("10.0.0.1"), ip("10.0.0.2"), 1, 1, b"");
        icmp6_in_v4[9] = ICMPV6;
        assert_eq!(flow(&icmp6_in_v4), Err(PacketError::Unsupported(ICMPV6)));
        let mut icmp_in_v6 = packet6(ICMPV6, ip6("fc00::1"), ip6("fdff::1"), 1, 1, b"");
        icmp_in_v6[6] = ICMP;
        assert_eq!(flow(&icmp_in_v6), Err(PacketError::Unsupported(ICMP)));
        let mut neighbour = packet6(ICMPV6, ip6("fc00::1"), ip6("fdff::1"), 1, 1, b"");
        neighbour[40] = 135;
        assert_eq!(flow(&neighbour), Err(PacketError::Unsupported(ICMPV6)));
        // IPv6 extension headers other than Hop-by-Hop, Destination Options and Fragment.
        for (next, error) in [
            (43, PacketError::ExtensionHeader(43)),
            (51, PacketError::ExtensionHeader(51)),
        ] {
            let mut p = packet6(TCP, ip6("fc00::1"), ip6("fdff::1"), 1, 2, &[0; 8]);
            p[6] = next;
            assert_eq!(flow(&p), Err(error.clone()), "next header {next}");
            assert_eq!(set_dst(&mut p, ip6("fc00::2")), Err(error));
        }
        let mut nothing = packet6(TCP, ip6("fc00::1"), ip6("fdff::1"), 1, 2, b"");
        nothing[6] = 59; // No Next Header
        assert_eq!(flow(&nothing), Err(PacketError::Unsupported(59)));
        // An extension header longer than the packet.
        let mut p = packet6(TCP, ip6("fc00::1"), ip6("fdff::1"), 1, 2, b"");
        p[6] = HOP_BY_HOP;
        p[41] = 200;
        assert_eq!(flow(&p), Err(PacketError::Truncated(60)));
        // An address of the other version.
        let mut p = packet(TCP, ip("10.0.0.1"), ip("10.0.0.2"), 1, 2, b"");
        let v6: IpAddr = ip6("fc00::1").into();
        assert_eq!(set_dst(&mut p, v6), Err(PacketError::WrongFamily(v6)));
    }
}
