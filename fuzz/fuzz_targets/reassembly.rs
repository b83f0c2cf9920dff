//! Feeds arbitrary sequences of tunnel datagrams from a few senders to the chunk reassembly,
//! and checks that a frame cut by `Chunk::split` comes back whole whatever order its chunks
//! arrive in.
//!
//! Input: a list of records `sender (1 byte) | length (2 bytes, big-endian) | datagram`; the
//! first byte of the input also seeds the round trip (piece size and chunk order).
//!
//! Properties: nothing panics; a reassembled frame is never longer than 65,535 bytes; a
//! split frame delivered in any order, with a duplicate chunk, reassembles to the original
//! bytes exactly once, on its last missing chunk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oakestra_net::proxy::frame::{Chunk, Reassembly};

fn records(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 3 {
            return None;
        }
        let sender = data[0];
        let len = usize::from(u16::from_be_bytes([data[1], data[2]])).min(data.len() - 3);
        let datagram = &data[3..3 + len];
        data = &data[3 + len..];
        Some((sender % 5, datagram))
    })
}

fuzz_target!(|data: &[u8]| {
    let mut reassembly = Reassembly::<u8>::new(3);
    for (sender, datagram) in records(data) {
        if let Ok(Some(frame)) = reassembly.add(&sender, datagram) {
            assert!(frame.len() <= usize::from(u16::MAX));
        }
    }

    // Round trip: the input itself as a frame, cut into pieces, delivered shuffled.
    let Some((&seed, frame)) = data.split_first() else {
        return;
    };
    let piece = usize::from(seed % 64) * 64 + 1;
    let Some(chunks) = Chunk::split(frame.len(), piece, u32::from(seed)) else {
        return;
    };
    let mut order: Vec<usize> = (0..chunks.len()).collect();
    // A deterministic shuffle from the data; with more than one chunk, the first one sent is
    // sent again at once (a duplicate before the frame is complete changes nothing).
    for i in (1..order.len()).rev() {
        let j = usize::from(frame.get(i).copied().unwrap_or(seed)) % (i + 1);
        order.swap(i, j);
    }
    if order.len() > 1 {
        order.insert(1, order[0]);
    }
    let mut fresh = Reassembly::<u8>::new(1);
    let mut done = 0;
    for (n, &i) in order.iter().enumerate() {
        let (chunk, range) = &chunks[i];
        let mut datagram = chunk.encode().to_vec();
        datagram.extend_from_slice(&frame[range.clone()]);
        match fresh
            .add(&0, &datagram)
            .expect("a chunk from split decodes")
        {
            Some(whole) => {
                assert_eq!(
                    n,
                    order.len() - 1,
                    "the frame completed before its last chunk"
                );
                assert_eq!(&whole[..], frame);
                done += 1;
            }
            None => {}
        }
    }
    if !frame.is_empty() {
        assert_eq!(done, 1, "the frame did not come back whole");
    }
});
