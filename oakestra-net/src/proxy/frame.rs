//! Offload metadata of packets that cross the tunnel, pure: the `virtio_net_hdr` that a TUN
//! device opened with `IFF_VNET_HDR` puts in front of every packet, and the frame header that
//! carries the same facts between workers.
//!
//! With TSO and checksum offload enabled on the TUN device, the kernel hands the proxy whole
//! TCP super-packets (up to 64 KB, [`Offload::gso_size`] bytes per segment) whose transport
//! checksum is still partial ([`Offload::needs_csum`]). Sending such a packet through the
//! tunnel as one UDP datagram (the underlay's IP layer fragments and reassembles it) and
//! writing it into the peer's TUN with the same metadata lets the kernels segment, checksum
//! and coalesce: one read, one send, one receive and one write per 64 KB instead of per
//! 1.4 KB packet.
//!
//! What a tunnel datagram starts with tells its kind ([`Datagram::classify`]):
//!
//! | first byte | kind |
//! |---|---|
//! | `0x4_`, `0x6_` (IP version 4 or 6) | a plain IP packet with complete checksums (Oakestra's format) |
//! | `0x10` ([`FRAME_MAGIC`], version 1) | a [frame](Offload::encode_frame): 12-byte header, then the IP packet |
//! | `0x11` ([`CHUNK_MAGIC`]) | one [chunk](Chunk) of a frame too big for one underlay packet |
//! | `0x00` (version 0) | an RTT probe ([`crate::proxy::rtt`]) |
//!
//! The frame header (all numbers big-endian): magic `0x10`, flags (bit 0: checksum partial,
//! bit 1: checksum already verified), GSO type (`virtio_net_hdr` values: 0 none, 1 TCP/IPv4,
//! 4 TCP/IPv6, 5 UDP, bit 7 ECN), a zero byte, then header length, segment size, checksum
//! start and checksum offset as 16-bit numbers. Packets without offload metadata travel plain.
//!
//! A frame bigger than one underlay packet travels in chunks rather than as one IP-fragmented
//! datagram: the sender hands all chunks to the kernel in one UDP segmentation offload send
//! (`UDP_SEGMENT`), which a veth or a capable NIC passes on unsegmented, and the receiver takes
//! them back in one UDP GRO read; [`Reassembly`] puts the frame together again. Each chunk
//! starts with a 10-byte header (big-endian): magic `0x11`, chunk index, chunk count, a zero
//! byte, the chunk's byte offset in the frame (16 bits) and the frame's id (32 bits).

/// Length of the `virtio_net_hdr` a TUN device with `IFF_VNET_HDR` reads and writes.
pub const VNET_HDR_LEN: usize = 10;
/// Length of the frame header in front of an offloaded packet in the tunnel.
pub const FRAME_HEADER_LEN: usize = 12;
/// First byte of a frame (IP version 1, which no IP packet has).
pub const FRAME_MAGIC: u8 = 0x10;

/// First byte of a chunk of a frame.
pub const CHUNK_MAGIC: u8 = 0x11;
/// Length of a chunk's header.
pub const CHUNK_HEADER_LEN: usize = 10;
/// Most chunks one frame is cut into (the reassembly keeps a 64-bit map of them).
pub const MAX_CHUNKS: usize = 64;

/// `virtio_net_hdr` flag: the transport checksum is partial; the receiver completes it.
pub const F_NEEDS_CSUM: u8 = 1;
/// `virtio_net_hdr` flag: the checksum was verified already.
pub const F_DATA_VALID: u8 = 2;
/// GSO type: none.
pub const GSO_NONE: u8 = 0;
/// GSO type: TCP over IPv4.
pub const GSO_TCPV4: u8 = 1;
/// GSO type: TCP over IPv6.
pub const GSO_TCPV6: u8 = 4;
/// GSO type: UDP segmentation (`VIRTIO_NET_HDR_GSO_UDP_L4`).
pub const GSO_UDP_L4: u8 = 5;
/// GSO type bit: the segments carry ECN.
pub const GSO_ECN: u8 = 0x80;

/// What the kernel still has to do to a packet: segment it, finish its checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offload {
    /// [`F_NEEDS_CSUM`] and/or [`F_DATA_VALID`].
    pub flags: u8,
    /// [`GSO_NONE`], [`GSO_TCPV4`], [`GSO_TCPV6`] or [`GSO_UDP_L4`], maybe with [`GSO_ECN`].
    pub gso_type: u8,
    /// Length of the headers in front of the payload (a hint).
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where the checksummed part starts, from the start of the IP packet.
    pub csum_start: u16,
    /// Where the checksum field is, from `csum_start`.
    pub csum_offset: u16,
}

/// Why a frame is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than its header.
    #[error("truncated tunnel frame ({0} bytes)")]
    Truncated(usize),
    /// Not a frame.
    #[error("not a tunnel frame (first byte {0:#04x})")]
    NotAFrame(u8),
    /// A GSO type the kernel would not accept.
    #[error("unknown GSO type {0:#04x}")]
    GsoType(u8),
    /// A chunk header that contradicts itself.
    #[error("bad chunk header {0:?}")]
    BadChunk(Chunk),
    /// The checksum field lies outside the packet.
    #[error("checksum field at {start}+{offset} outside the {len}-byte packet")]
    ChecksumOutside {
        /// Checksum start.
        start: u16,
        /// Checksum offset.
        offset: u16,
        /// Packet length.
        len: usize,
    },
}

/// What kind of tunnel datagram this is (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram {
    /// A plain IP packet.
    Packet,
    /// An offloaded packet behind a frame header.
    Frame,
    /// An RTT probe.
    Probe,
    /// A chunk of a frame.
    Chunk,
    /// Nothing this tunnel speaks.
    Other,
}

impl Datagram {
    /// Tells a datagram's kind from its first byte.
    pub fn classify(datagram: &[u8]) -> Self {
        match datagram.first().map(|b| b >> 4) {
            Some(4 | 6) => Self::Packet,
            Some(1) if datagram[0] == FRAME_MAGIC => Self::Frame,
            Some(1) if datagram[0] == CHUNK_MAGIC => Self::Chunk,
            Some(0) => Self::Probe,
            _ => Self::Other,
        }
    }
}

impl Offload {
    /// Nothing left to do: the packet can travel plain.
    pub fn is_none(&self) -> bool {
        self.flags & F_NEEDS_CSUM == 0 && self.gso_type == GSO_NONE
    }

    /// The transport checksum is partial (pseudo-header only).
    pub fn needs_csum(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }

    /// Length of the largest packet the kernel cuts `packet` (the super-packet behind this
    /// metadata) into: its IP and transport headers plus [`Offload::gso_size`] bytes, or
    /// `None` when it is not segmented (no GSO type, no segment size, or headers that do not
    /// fit the packet). TCP's segment size follows the smaller MSS of the two ends, so this
    /// is at most the smaller end's MTU: the tunnel cuts the frame into chunks no longer than
    /// this, so that a worker on a larger underlay never sends a peer on a smaller one
    /// datagrams its underlay cannot carry.
    pub fn segment_len(&self, packet: &[u8]) -> Option<usize> {
        let start = usize::from(self.csum_start);
        let transport = match self.gso_type & !GSO_ECN {
            GSO_TCPV4 | GSO_TCPV6 => usize::from(packet.get(start + 12)? >> 4) * 4,
            GSO_UDP_L4 => 8,
            _ => return None,
        };
        if self.gso_size == 0 || start + transport > packet.len() {
            return None;
        }
        Some(start + transport + usize::from(self.gso_size))
    }

    /// Reads a `virtio_net_hdr` as a TUN device writes it (native byte order).
    pub fn from_vnet(header: &[u8; VNET_HDR_LEN]) -> Self {
        let n = |i: usize| u16::from_ne_bytes([header[i], header[i + 1]]);
        Self {
            flags: header[0],
            gso_type: header[1],
            hdr_len: n(2),
            gso_size: n(4),
            csum_start: n(6),
            csum_offset: n(8),
        }
    }

    /// The 16-bit fields, in the order both headers carry them.
    fn fields(&self) -> [u16; 4] {
        [
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
        ]
    }

    /// The `virtio_net_hdr` to write in front of the packet into a TUN device.
    pub fn to_vnet(&self) -> [u8; VNET_HDR_LEN] {
        let mut h = [0u8; VNET_HDR_LEN];
        h[0] = self.flags;
        h[1] = self.gso_type;
        for (i, v) in self.fields().into_iter().enumerate() {
            h[2 + 2 * i..4 + 2 * i].copy_from_slice(&v.to_ne_bytes());
        }
        h
    }

    /// The frame header to send in front of the packet through the tunnel.
    pub fn encode_frame(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut h = [0u8; FRAME_HEADER_LEN];
        h[0] = FRAME_MAGIC;
        h[1] = self.flags;
        h[2] = self.gso_type;
        for (i, v) in self.fields().into_iter().enumerate() {
            h[4 + 2 * i..6 + 2 * i].copy_from_slice(&v.to_be_bytes());
        }
        h
    }

    /// Reads a frame: its offload metadata, checked against the packet behind the header
    /// (whose length is `datagram.len() - FRAME_HEADER_LEN`).
    pub fn decode_frame(datagram: &[u8]) -> Result<Self, FrameError> {
        if datagram.len() < FRAME_HEADER_LEN {
            return Err(FrameError::Truncated(datagram.len()));
        }
        if datagram[0] != FRAME_MAGIC {
            return Err(FrameError::NotAFrame(datagram[0]));
        }
        let n = |i: usize| u16::from_be_bytes([datagram[i], datagram[i + 1]]);
        let offload = Self {
            flags: datagram[1] & (F_NEEDS_CSUM | F_DATA_VALID),
            gso_type: datagram[2],
            hdr_len: n(4),
            gso_size: n(6),
            csum_start: n(8),
            csum_offset: n(10),
        };
        if !matches!(
            offload.gso_type & !GSO_ECN,
            GSO_NONE | GSO_TCPV4 | GSO_TCPV6 | GSO_UDP_L4
        ) {
            return Err(FrameError::GsoType(offload.gso_type));
        }
        let len = datagram.len() - FRAME_HEADER_LEN;
        if offload.needs_csum()
            && usize::from(offload.csum_start) + usize::from(offload.csum_offset) + 2 > len
        {
            return Err(FrameError::ChecksumOutside {
                start: offload.csum_start,
                offset: offload.csum_offset,
                len,
            });
        }
        Ok(offload)
    }
}

/// The header of one chunk of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Which chunk (0-based).
    pub index: u8,
    /// How many chunks the frame has.
    pub count: u8,
    /// Where this chunk's bytes go in the frame.
    pub offset: u16,
    /// The frame's id, per sender.
    pub frame: u32,
}

impl Chunk {
    /// The chunk headers of a `len`-byte frame cut into pieces of at most `piece` bytes
    /// (each piece going out behind its header), or `None` when that needs more than
    /// [`MAX_CHUNKS`] chunks or the frame is longer than 65,535 bytes.
    pub fn split(
        len: usize,
        piece: usize,
        frame: u32,
    ) -> Option<Vec<(Chunk, std::ops::Range<usize>)>> {
        if piece == 0 || len > usize::from(u16::MAX) {
            return None;
        }
        let count = len.div_ceil(piece);
        if count == 0 || count > MAX_CHUNKS {
            return None;
        }
        Some(
            (0..count)
                .map(|i| {
                    let start = i * piece;
                    let chunk = Chunk {
                        index: i as u8,
                        count: count as u8,
                        offset: start as u16,
                        frame,
                    };
                    (chunk, start..len.min(start + piece))
                })
                .collect(),
        )
    }

    /// The header's bytes.
    pub fn encode(&self) -> [u8; CHUNK_HEADER_LEN] {
        let mut h = [0u8; CHUNK_HEADER_LEN];
        h[0] = CHUNK_MAGIC;
        h[1] = self.index;
        h[2] = self.count;
        h[4..6].copy_from_slice(&self.offset.to_be_bytes());
        h[6..10].copy_from_slice(&self.frame.to_be_bytes());
        h
    }

    /// Reads a chunk datagram: its header and its piece of the frame.
    pub fn decode(datagram: &[u8]) -> Result<(Chunk, &[u8]), FrameError> {
        if datagram.len() < CHUNK_HEADER_LEN {
            return Err(FrameError::Truncated(datagram.len()));
        }
        if datagram[0] != CHUNK_MAGIC {
            return Err(FrameError::NotAFrame(datagram[0]));
        }
        let chunk = Chunk {
            index: datagram[1],
            count: datagram[2],
            offset: u16::from_be_bytes([datagram[4], datagram[5]]),
            frame: u32::from_be_bytes([datagram[6], datagram[7], datagram[8], datagram[9]]),
        };
        let piece = &datagram[CHUNK_HEADER_LEN..];
        if chunk.count == 0
            || usize::from(chunk.count) > MAX_CHUNKS
            || chunk.index >= chunk.count
            || usize::from(chunk.offset) + piece.len() > usize::from(u16::MAX)
        {
            return Err(FrameError::BadChunk(chunk));
        }
        Ok((chunk, piece))
    }
}

/// One sender's frame being put together.
#[derive(Debug, Clone)]
struct Partial {
    frame: u32,
    count: u8,
    /// Chunks received, one bit each.
    got: u64,
    /// The frame's length, known once its last chunk came.
    len: Option<usize>,
    bytes: Vec<u8>,
}

/// Puts chunked frames together again, one frame in progress per sender: a chunk of a new
/// frame drops the sender's unfinished one (its packet is lost, as an IP fragment's would
/// be). Chunks are kept by offset, so their order does not matter.
#[derive(Debug, Clone)]
pub struct Reassembly<K> {
    partial: std::collections::HashMap<K, Partial>,
    /// Senders kept at most; more drop every unfinished frame.
    max_senders: usize,
}

impl<K: std::hash::Hash + Eq + Clone> Reassembly<K> {
    /// Keeps unfinished frames of at most `max_senders` senders.
    pub fn new(max_senders: usize) -> Self {
        Self {
            partial: std::collections::HashMap::new(),
            max_senders,
        }
    }

    /// Adds the chunk `datagram` from `sender`; returns the whole frame once its last missing
    /// chunk came (valid until the next call).
    pub fn add(&mut self, sender: &K, datagram: &[u8]) -> Result<Option<&mut [u8]>, FrameError> {
        let (chunk, piece) = Chunk::decode(datagram)?;
        if !self.partial.contains_key(sender) && self.partial.len() >= self.max_senders {
            self.partial.clear();
        }
        let partial = self
            .partial
            .entry(sender.clone())
            .or_insert_with(|| Partial {
                frame: chunk.frame,
                count: chunk.count,
                got: 0,
                len: None,
                bytes: Vec::with_capacity(usize::from(u16::MAX)),
            });
        if partial.frame != chunk.frame || partial.count != chunk.count || partial.got == u64::MAX {
            partial.frame = chunk.frame;
            partial.count = chunk.count;
            partial.got = 0;
            partial.len = None;
        }
        let bit = 1u64 << chunk.index;
        if partial.got & bit != 0 {
            return Ok(None);
        }
        let (start, end) = (
            usize::from(chunk.offset),
            usize::from(chunk.offset) + piece.len(),
        );
        if partial.bytes.len() < end {
            partial.bytes.resize(end, 0);
        }
        partial.bytes[start..end].copy_from_slice(piece);
        partial.got |= bit;
        if chunk.index + 1 == chunk.count {
            partial.len = Some(end);
        }
        let all = if chunk.count as usize == MAX_CHUNKS {
            u64::MAX
        } else {
            (1u64 << chunk.count) - 1
        };
        match partial.len {
            Some(len) if partial.got == all => {
                // Done: the next chunk from this sender starts afresh.
                partial.got = u64::MAX;
                Ok(Some(&mut partial.bytes[..len]))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tso() -> Offload {
        Offload {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 52,
            gso_size: 1398,
            csum_start: 20,
            csum_offset: 16,
        }
    }

    #[test]
    fn vnet_headers_and_frames_round_trip() {
        let o = tso();
        assert_eq!(Offload::from_vnet(&o.to_vnet()), o);
        let mut datagram = o.encode_frame().to_vec();
        datagram.extend_from_slice(&[0x45; 64]);
        assert_eq!(Datagram::classify(&datagram), Datagram::Frame);
        assert_eq!(Offload::decode_frame(&datagram), Ok(o));
        // Big-endian on the wire, whatever the host's order.
        assert_eq!(&datagram[6..8], &1398u16.to_be_bytes());
        assert!(!o.is_none() && o.needs_csum());
        assert!(Offload::default().is_none());
        // Data-valid alone needs no frame: the packet's checksums are complete.
        assert!(
            Offload {
                flags: F_DATA_VALID,
                ..Offload::default()
            }
            .is_none()
        );
    }

    #[test]
    fn a_super_packet_is_cut_into_packets_of_its_headers_plus_the_segment_size() {
        // IPv4 (20) + TCP with timestamps (data offset 8 words = 32).
        let mut packet = vec![0u8; 20 + 32 + 3 * 1308];
        packet[20 + 12] = 8 << 4;
        let o = Offload {
            gso_size: 1308,
            ..tso()
        };
        assert_eq!(o.segment_len(&packet), Some(20 + 32 + 1308));
        // UDP segmentation: an 8-byte header.
        let udp = Offload {
            gso_type: GSO_UDP_L4,
            gso_size: 1000,
            ..tso()
        };
        assert_eq!(udp.segment_len(&packet), Some(20 + 8 + 1000));
        // Not segmented, no size, or a transport header past the packet's end: no answer.
        assert_eq!(
            Offload {
                gso_type: GSO_NONE,
                ..o
            }
            .segment_len(&packet),
            None
        );
        assert_eq!(Offload { gso_size: 0, ..o }.segment_len(&packet), None);
        assert_eq!(o.segment_len(&packet[..30]), None);
        assert_eq!(o.segment_len(&packet[..40]), None);
    }

    #[test]
    fn datagrams_are_told_apart_by_their_first_byte() {
        assert_eq!(Datagram::classify(&[0x45, 0]), Datagram::Packet);
        assert_eq!(Datagram::classify(&[0x60, 0]), Datagram::Packet);
        assert_eq!(Datagram::classify(&[0x00, b'O']), Datagram::Probe);
        assert_eq!(Datagram::classify(&[0x10]), Datagram::Frame);
        assert_eq!(Datagram::classify(&[0x11]), Datagram::Chunk);
        assert_eq!(Datagram::classify(&[0x12]), Datagram::Other);
        assert_eq!(Datagram::classify(&[0x80]), Datagram::Other);
        assert_eq!(Datagram::classify(&[]), Datagram::Other);
    }

    #[test]
    fn bad_frames_are_refused_with_the_reason() {
        assert_eq!(
            Offload::decode_frame(&[FRAME_MAGIC; 5]),
            Err(FrameError::Truncated(5))
        );
        let mut datagram = tso().encode_frame().to_vec();
        datagram.extend_from_slice(&[0; 37]);
        // The checksum field (20 + 16) would end at byte 38 of a 37-byte packet.
        assert_eq!(
            Offload::decode_frame(&datagram),
            Err(FrameError::ChecksumOutside {
                start: 20,
                offset: 16,
                len: 37
            })
        );
        datagram.push(0);
        assert!(Offload::decode_frame(&datagram).is_ok());
        datagram[2] = 3; // the old UFO type, gone from Linux
        assert_eq!(
            Offload::decode_frame(&datagram),
            Err(FrameError::GsoType(3))
        );
        datagram[0] = 0x45;
        assert_eq!(
            Offload::decode_frame(&datagram),
            Err(FrameError::NotAFrame(0x45))
        );
    }

    fn chunks_of(frame: &[u8], piece: usize, id: u32) -> Vec<Vec<u8>> {
        Chunk::split(frame.len(), piece, id)
            .unwrap()
            .into_iter()
            .map(|(c, range)| {
                let mut d = c.encode().to_vec();
                d.extend_from_slice(&frame[range]);
                d
            })
            .collect()
    }

    #[test]
    fn a_frame_cut_into_chunks_comes_back_whole_in_any_order() {
        let frame: Vec<u8> = (0..65_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let chunks = chunks_of(&frame, 1452, 9);
        assert_eq!(chunks.len(), 45);
        assert!(chunks.iter().all(|c| c.len() <= 1452 + CHUNK_HEADER_LEN));
        assert_eq!(Datagram::classify(&chunks[3]), Datagram::Chunk);
        let mut r = Reassembly::new(4);
        // In order.
        for (i, c) in chunks.iter().enumerate() {
            let done = r.add(&1, c).unwrap().map(|f| f.to_vec());
            assert_eq!(done.is_some(), i + 1 == chunks.len(), "chunk {i}");
            if let Some(f) = done {
                assert_eq!(f, frame);
            }
        }
        // Reversed, with a duplicate, and another sender's chunks in between.
        let other = chunks_of(&frame[..3000], 1452, 1);
        let mut done = None;
        for (i, c) in chunks.iter().rev().enumerate() {
            if i == 2 {
                assert!(
                    r.add(&1, c).unwrap().is_none(),
                    "a duplicate completes nothing"
                );
            }
            if let Some(o) = other.get(i) {
                let whole = r.add(&2, o).unwrap().map(|f| f.to_vec());
                assert_eq!(whole.is_some(), i + 1 == other.len());
            }
            if let Some(f) = r.add(&1, c).unwrap() {
                done = Some(f.to_vec());
            }
        }
        assert_eq!(done.as_deref(), Some(&frame[..]));
    }

    #[test]
    fn a_new_frame_drops_the_unfinished_one() {
        let a = vec![1u8; 4000];
        let b = vec![2u8; 4000];
        let (ca, cb) = (chunks_of(&a, 1452, 1), chunks_of(&b, 1452, 2));
        let mut r = Reassembly::new(4);
        assert!(r.add(&0, &ca[0]).unwrap().is_none());
        assert!(r.add(&0, &ca[1]).unwrap().is_none());
        // Frame 2 starts: frame 1 is gone, its last chunk completes nothing.
        assert!(r.add(&0, &cb[0]).unwrap().is_none());
        assert!(r.add(&0, &ca[2]).unwrap().is_none());
        assert!(r.add(&0, &cb[1]).unwrap().is_none());
        assert!(
            r.add(&0, &cb[2]).unwrap().is_none(),
            "frame 1's chunk took the slot"
        );
        // A frame of one chunk.
        let single = chunks_of(&a[..100], 1452, 3);
        assert_eq!(r.add(&0, &single[0]).unwrap().as_deref(), Some(&a[..100]));
    }

    #[test]
    fn chunk_limits_and_bad_headers() {
        assert!(Chunk::split(65_536, 1452, 0).is_none(), "longer than 64 KB");
        assert!(
            Chunk::split(65_000, 1000, 0).is_none(),
            "more than 64 chunks"
        );
        assert!(Chunk::split(100, 0, 0).is_none());
        assert_eq!(Chunk::split(64_000, 1000, 0).unwrap().len(), 64);
        let mut bad = Chunk {
            index: 2,
            count: 2,
            offset: 0,
            frame: 0,
        }
        .encode()
        .to_vec();
        bad.push(0);
        assert!(matches!(Chunk::decode(&bad), Err(FrameError::BadChunk(_))));
        assert_eq!(Chunk::decode(&bad[..5]), Err(FrameError::Truncated(5)));
        let mut r = Reassembly::new(1);
        assert!(r.add(&0, &bad).is_err());
        // A second sender beyond the limit clears the first's unfinished frame.
        let f = chunks_of(&[5u8; 3000], 1452, 7);
        assert!(r.add(&0, &f[0]).unwrap().is_none());
        assert!(r.add(&1, &f[1]).unwrap().is_none());
        assert!(r.add(&0, &f[2]).unwrap().is_none());
    }
}
