//! Worker subnets larger than a /26: spans of aligned slots, persistence of the older format,
//! size checks and the full-subnet advice.

use super::tests::{first_worker, ip, v4, v6};
use super::*;

/// A root state as stored before worker subnets could be larger than a /26: one worker.
const STORED_BEFORE_SIZES: &str = concat!(
    r#"{"service_ipv4":{"kind":"service_ipv4","next":"10.30.0.1","held":[]},"#,
    r#""instance_ipv6":{"kind":"instance_ipv6","next":"fdff::1","held":[]},"#,
    r#""rr_ipv6":{"kind":"rr_ipv6","next":"fdff:2000::1","held":[]},"#,
    r#""worker_subnet_ipv4":{"kind":"worker_subnet_ipv4","next":"10.18.0.64","held":[["10.18.0.0","worker:w1"]]},"#,
    r#""worker_subnet_ipv6":{"kind":"worker_subnet_ipv6","next":"fc00::100","held":[["fc00::","worker:w1"]]}}"#,
);

#[test]
fn a_stored_state_of_26s_loads_unchanged_and_existing_workers_keep_their_size() {
    let mut ipam: AddressManager = serde_json::from_str(STORED_BEFORE_SIZES).unwrap();
    assert_eq!(serde_json::to_string(&ipam).unwrap(), STORED_BEFORE_SIZES);
    let w1 = ipam.worker_subnets("w1").unwrap();
    assert_eq!(w1.ipv4.to_string(), "10.18.0.0/26");
    assert_eq!(w1.instance_capacity(), 61);
    // The root now hands out /24s: w1 keeps its /26, w2 gets the next aligned /24 (slots 4..8;
    // 10.18.0.64 … 10.18.0.255 stay free for /26 workers), with the /118 of as many /120s.
    assert_eq!(ipam.assign_worker_sized("w1", 24).unwrap(), w1);
    let w2 = ipam.assign_worker_sized("w2", 24).unwrap();
    assert_eq!(w2.ipv4.to_string(), "10.18.1.0/24");
    assert_eq!(w2.ipv6.to_string(), "fc00::400/118");
    assert_eq!(w2.instance_capacity(), 253);
    // Any address inside the /24 names w2.
    assert_eq!(
        ipam.holder_of(ip("10.18.1.200")),
        Some((RootPool::WorkerSubnetIpv4, &Holder::worker("w2")))
    );
    assert_eq!(
        ipam.holder_of(ip("fc00::7ff")),
        Some((RootPool::WorkerSubnetIpv6, &Holder::worker("w2")))
    );
    // Its slots are taken: a /26 worker after it gets the first free slot after the cursor.
    assert_eq!(
        ipam.assign_worker("w3").unwrap().ipv4.to_string(),
        "10.18.2.0/26"
    );
    // The sizes survive a restart (persisted as spans) and the state stays consistent.
    let json = serde_json::to_string(&ipam).unwrap();
    assert!(json.contains(r#""spans":[["10.18.1.0",4]]"#), "{json}");
    assert!(json.contains(r#""spans":[["fc00::400",4]]"#), "{json}");
    let restored: AddressManager = serde_json::from_str(&json).unwrap();
    assert_eq!(restored, ipam);
    assert_eq!(restored.worker_subnets("w2"), Some(w2));
    restored.assert_consistent();
    // Releasing w2 frees the whole /24, which a /26 worker can then use (after the cursor
    // came round).
    assert_eq!(ipam.release_worker("w2"), (Some(w2.ipv4), Some(w2.ipv6)));
    assert_eq!(
        ipam.pool(RootPool::WorkerSubnetIpv4)
            .holder_of(ip("10.18.1.64")),
        None
    );
    ipam.assert_consistent();
}

#[test]
fn worker_subnet_sizes_are_checked_and_a_failed_assignment_changes_nothing() {
    let mut ipam = AddressManager::new();
    for bad in [21, 27, 0] {
        let before = ipam.clone();
        let err = ipam.assign_worker_sized("w", bad).unwrap_err().to_string();
        assert!(err.contains("from 22"), "{err}");
        assert_eq!(ipam, before);
    }
    let w = ipam.assign_worker_sized("w", 22).unwrap();
    assert_eq!(w.ipv4.to_string(), "10.18.0.0/22");
    assert_eq!(w.ipv6.to_string(), "fc00::/116");
    assert_eq!(w.instance_capacity(), 1021);
    // A stored span that is not aligned to its size is refused.
    let json = serde_json::to_string(&ipam)
        .unwrap()
        .replace(r#"["10.18.0.0",16]"#, r#"["10.18.0.0",3]"#);
    let err = serde_json::from_str::<AddressManager>(&json)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not aligned"), "{err}");
}

#[test]
fn a_larger_worker_subnet_hands_out_all_of_its_addresses_and_says_how_to_grow_when_full() {
    let mut ipam = AddressManager::new();
    let subnets = ipam.assign_worker_sized("w", 24).unwrap();
    let mut node = WorkerAddresses::new(subnets);
    assert_eq!(node.ipv4_pool().capacity(), 253);
    assert_eq!(node.ipv6_pool().capacity(), 1022);
    let mut handed_out = Vec::new();
    for n in 0..253 {
        handed_out.push(node.assign(&Holder::instance("s", n)).unwrap());
    }
    assert_eq!(handed_out[0].ipv4, v4("10.18.0.2"));
    // Past the /26 boundary: +63 and +64 are ordinary addresses in a /24.
    assert!(handed_out.iter().any(|a| a.ipv4 == v4("10.18.0.63")));
    assert!(handed_out.iter().any(|a| a.ipv4 == v4("10.18.0.64")));
    assert_eq!(handed_out[252].ipv4, v4("10.18.0.254"));
    assert_eq!(handed_out[252].ipv6, v6("fc00::fe"));
    let before = node.clone();
    let err = node.assign(&Holder::instance("s", 253)).unwrap_err();
    assert_eq!(node, before);
    let message = err.to_string();
    assert!(
        message.contains("a worker with a /24 holds at most 253 instances"),
        "{message}"
    );
    assert!(message.contains("--worker-subnet-prefix"), "{message}");
    // The broadcast address of the /24 is never handed out.
    let pool = node.ipv4_pool();
    assert!(matches!(
        pool.check_reserve(&Holder::instance("x", 0), ip("10.18.0.255"), "ip"),
        Err(IpamError::Excluded { .. })
    ));
    let json = serde_json::to_string(&node).unwrap();
    assert_eq!(
        serde_json::from_str::<WorkerAddresses>(&json).unwrap(),
        node
    );
    node.assert_consistent();
}

#[test]
fn a_full_26_says_how_to_get_a_larger_subnet() {
    let mut node = WorkerAddresses::new(first_worker());
    for n in 0..61 {
        node.assign(&Holder::instance("s", n)).unwrap();
    }
    let message = node
        .assign(&Holder::instance("s", 61))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("a worker with a /26 holds at most 61 instances"),
        "{message}"
    );
    assert!(message.contains("e.g. 24 → 253"), "{message}");
}
