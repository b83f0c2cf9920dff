//! One test per rule of the address plan and of the pools.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

pub(super) fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

pub(super) fn v4(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

pub(super) fn v6(text: &str) -> Ipv6Addr {
    text.parse().unwrap()
}

pub(super) fn first_worker() -> WorkerSubnets {
    AddressManager::new().assign_worker("w0").unwrap()
}

#[test]
fn first_addresses_of_every_pool() {
    let mut ipam = AddressManager::new();
    // RR IPv4 and instance IPv4 share 10.30.0.0/16; 10.30.0.0 is never handed out.
    let service = ipam.assign_service("app.ns.svc.ns", None, None).unwrap();
    assert_eq!(service.rr_ipv4, v4("10.30.0.1"));
    assert_eq!(service.rr_ipv6, v6("fdff:2000::1"));
    let instance = ipam.assign_instance("app.ns.svc.ns", 0).unwrap();
    assert_eq!(instance.ipv4, v4("10.30.0.2"));
    assert_eq!(instance.ipv6, v6("fdff::1"));

    let worker = ipam.assign_worker("w0").unwrap();
    assert_eq!(worker.ipv4.to_string(), "10.18.0.0/26");
    assert_eq!(worker.ipv6.to_string(), "fc00::/120");
    let second = ipam.assign_worker("w1").unwrap();
    assert_eq!(second.ipv4.to_string(), "10.18.0.64/26");
    assert_eq!(second.ipv6.to_string(), "fc00::100/120");

    let mut node = WorkerAddresses::new(worker);
    assert_eq!(node.bridge_ipv4(), v4("10.18.0.1"));
    assert_eq!(node.bridge_ipv6(), v6("fc00::1"));
    let container = node.assign(&Holder::instance("app.ns.svc.ns", 0)).unwrap();
    assert_eq!(container.ipv4, v4("10.18.0.2"));
    assert_eq!(container.ipv6, v6("fc00::2"));
    let next = node.assign(&Holder::instance("app.ns.svc.ns", 1)).unwrap();
    assert_eq!((next.ipv4, next.ipv6), (v4("10.18.0.3"), v6("fc00::3")));
    ipam.assert_consistent();
    node.assert_consistent();
}

#[test]
fn service_ipv4_uses_every_octet_value_and_rolls_over() {
    let mut pool = Pool::new(PoolKind::ServiceIpv4);
    for n in 0..255 {
        pool.allocate(Holder::instance("s", n)).unwrap();
    }
    // Unlike Oakestra (mod 254), .254 and .255 of the third octet's block are plain addresses.
    assert_eq!(
        pool.address_of(&Holder::instance("s", 253)),
        Some(ip("10.30.0.254"))
    );
    assert_eq!(
        pool.address_of(&Holder::instance("s", 254)),
        Some(ip("10.30.0.255"))
    );
    assert_eq!(
        pool.allocate(Holder::instance("s", 255)).unwrap(),
        ip("10.30.1.0")
    );
}

#[test]
fn worker_subnets_roll_over_into_the_next_16_and_stop_at_10_29() {
    let mut pool = Pool::new(PoolKind::WorkerSubnetIpv4);
    for n in 0..1023 {
        pool.allocate(Holder::worker(n.to_string())).unwrap();
    }
    assert_eq!(
        pool.address_of(&Holder::worker("1022")),
        Some(ip("10.18.255.128"))
    );
    assert_eq!(
        pool.allocate(Holder::worker("1023")).unwrap(),
        ip("10.18.255.192")
    );
    assert_eq!(
        pool.allocate(Holder::worker("1024")).unwrap(),
        ip("10.19.0.0")
    );
}

#[test]
fn worker_subnet_pool_is_exhausted_at_exactly_its_capacity() {
    let span = u32::from(v4("10.30.0.0")) - u32::from(WORKER_SUBNETS_IPV4_FIRST);
    let capacity = span / (1 << (32 - WORKER_SUBNET_IPV4_PREFIX_LEN));
    assert_eq!(capacity, 12_288);
    let mut pool = Pool::new(PoolKind::WorkerSubnetIpv4);
    assert_eq!(pool.capacity(), u128::from(capacity));
    let mut last = None;
    for n in 0..capacity {
        last = Some(pool.allocate(Holder::worker(n.to_string())).unwrap());
    }
    assert_eq!(last, Some(ip("10.29.255.192")));
    assert_eq!(pool.next_available(), None);
    let before = pool.clone();
    let err = pool.allocate(Holder::worker("one too many")).unwrap_err();
    assert_eq!(pool, before, "a failed allocation changes nothing");
    assert!(
        matches!(
            err,
            IpamError::Exhausted {
                capacity: 12_288,
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("worker subnet IPv4 pool is exhausted"),
        "{message}"
    );
    assert!(
        message.contains("10.18.0.0/26 … 10.29.255.192/26"),
        "{message}"
    );
    assert!(message.contains("release"), "{message}");
    // A release makes exactly that subnet available again.
    assert_eq!(pool.release(ip("10.21.3.64")), Some(Holder::worker("3085")));
    assert_eq!(
        pool.allocate(Holder::worker("late")).unwrap(),
        ip("10.21.3.64")
    );
    pool.assert_consistent();
}

#[test]
fn container_ipv4_pool_is_exhausted_at_exactly_its_capacity() {
    // A /26 has 64 addresses; network (+0), bridge (+1) and broadcast (+63) are never handed out.
    let capacity = (1u32 << (32 - WORKER_SUBNET_IPV4_PREFIX_LEN)) - 3;
    assert_eq!(capacity, 61);
    let subnets = first_worker();
    let mut node = WorkerAddresses::new(subnets);
    assert_eq!(node.ipv4_pool().capacity(), u128::from(capacity));
    let mut handed_out = Vec::new();
    for n in 0..capacity {
        handed_out.push(node.assign(&Holder::instance("s", n)).unwrap().ipv4);
    }
    assert_eq!(handed_out.first(), Some(&v4("10.18.0.2")));
    assert_eq!(handed_out.last(), Some(&v4("10.18.0.62")));
    let before = node.clone();
    let err = node.assign(&Holder::instance("s", capacity)).unwrap_err();
    assert_eq!(node, before, "the IPv6 side was not touched either");
    assert!(
        matches!(err, IpamError::Exhausted { capacity: 61, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("10.18.0.2–10.18.0.62"), "{err}");
    node.release(&Holder::instance("s", 7));
    assert_eq!(
        node.assign(&Holder::instance("new", 0)).unwrap().ipv4,
        v4("10.18.0.9")
    );
    node.assert_consistent();
}

#[test]
fn container_ipv6_pool_holds_254_addresses_up_to_base_plus_ff() {
    let capacity = (1u32 << (128 - WORKER_SUBNET_IPV6_PREFIX_LEN)) - 2;
    let mut pool = Pool::new(PoolKind::ContainerIpv6 {
        subnet: first_worker().ipv6,
    });
    assert_eq!(pool.capacity(), u128::from(capacity));
    let mut last = None;
    for n in 0..capacity {
        last = Some(pool.allocate(Holder::instance("s", n)).unwrap());
    }
    assert_eq!(last, Some(ip("fc00::ff")));
    assert!(matches!(
        pool.allocate(Holder::instance("s", 999)),
        Err(IpamError::Exhausted { .. })
    ));
}

#[test]
fn service_ipv4_pool_is_exhausted_at_65534() {
    let mut pool = Pool::new(PoolKind::ServiceIpv4);
    let capacity = (1u32 << (32 - SERVICE_IPV4_PREFIX_LEN)) - 2;
    for n in 0..capacity {
        pool.allocate(Holder::instance("s", n)).unwrap();
    }
    assert_eq!(
        pool.address_of(&Holder::instance("s", capacity - 1)),
        Some(ip("10.30.255.254"))
    );
    assert!(matches!(
        pool.allocate(Holder::service("x")),
        Err(IpamError::Exhausted {
            capacity: 65_534,
            ..
        })
    ));
}

#[test]
fn instance_ipv6_skips_the_rr_range_and_rr_ipv6_wraps_to_its_start() {
    // Start from a stored state whose cursor sits just below the RR range.
    let json =
        r#"{"kind":"instance_ipv6","next":"fdff:1fff:ffff:ffff:ffff:ffff:ffff:ffff","held":[]}"#;
    let mut pool: Pool = serde_json::from_str(json).unwrap();
    assert_eq!(
        pool.allocate(Holder::instance("s", 0)).unwrap(),
        ip("fdff:1fff:ffff:ffff:ffff:ffff:ffff:ffff")
    );
    assert_eq!(
        pool.allocate(Holder::instance("s", 1)).unwrap(),
        ip("fdff:2800::")
    );

    let json = r#"{"kind":"rr_ipv6","next":"fdff:27ff:ffff:ffff:ffff:ffff:ffff:ffff","held":[]}"#;
    let mut pool: Pool = serde_json::from_str(json).unwrap();
    assert_eq!(
        pool.allocate(Holder::service("a")).unwrap(),
        ip("fdff:27ff:ffff:ffff:ffff:ffff:ffff:ffff")
    );
    assert_eq!(
        pool.allocate(Holder::service("b")).unwrap(),
        ip("fdff:2000::1")
    );
}

#[test]
fn worker_ipv6_subnets_count_up_in_steps_of_256_below_fdfe() {
    let mut pool = Pool::new(PoolKind::WorkerSubnetIpv6);
    assert_eq!(pool.allocate(Holder::worker("a")).unwrap(), ip("fc00::"));
    assert_eq!(pool.allocate(Holder::worker("b")).unwrap(), ip("fc00::100"));
    let last = "fdfd:ffff:ffff:ffff:ffff:ffff:ffff:ff00";
    pool.reserve(Holder::worker("last"), ip(last)).unwrap();
    assert_eq!(
        pool.holder_of(ip("fdfd:ffff:ffff:ffff:ffff:ffff:ffff:ffab")),
        Some(&Holder::worker("last"))
    );
    assert!(matches!(
        pool.reserve(Holder::worker("c"), ip("fdfe::")),
        Err(IpamError::OutOfPool { .. })
    ));
}

#[test]
fn user_given_rr_ip_is_reserved_and_never_handed_out_again() {
    let mut ipam = AddressManager::new();
    let s = ipam
        .assign_service("a.b.c.d", Some("10.30.0.2"), Some("fdff:2000::1"))
        .unwrap();
    assert_eq!(
        (s.rr_ipv4, s.rr_ipv6),
        (v4("10.30.0.2"), v6("fdff:2000::1"))
    );
    // Automatic allocation steps over the reserved addresses.
    let i = ipam.assign_instance("a.b.c.d", 0).unwrap();
    assert_eq!(i.ipv4, v4("10.30.0.1"));
    let i = ipam.assign_instance("a.b.c.d", 1).unwrap();
    assert_eq!(i.ipv4, v4("10.30.0.3"));
    let other = ipam.assign_service("e.f.g.h", None, None).unwrap();
    assert_eq!(other.rr_ipv6, v6("fdff:2000::2"));
    ipam.assert_consistent();
}

#[test]
fn a_collision_names_the_holder_and_changes_nothing() {
    let mut ipam = AddressManager::new();
    ipam.assign_service("a.b.c.d", Some("10.30.5.5"), None)
        .unwrap();
    ipam.assign_instance("x.y.z.w", 3).unwrap();
    let before = ipam.clone();

    let err = ipam
        .assign_service("e.f.g.h", Some("10.30.5.5"), None)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "10.30.5.5 in the service IPv4 pool is already held by service a.b.c.d; choose another \
         address, or release it from service a.b.c.d first"
    );
    let err = ipam
        .assign_service("e.f.g.h", Some("10.30.0.1"), None)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("held by instance 3 of service x.y.z.w"),
        "{err}"
    );
    // The v6 side is normalised before comparing: these spell the same address.
    ipam.assign_service("p.q.r.s", None, Some("FDFF:2000:0::7"))
        .unwrap();
    let before_v6 = ipam.clone();
    let err = ipam
        .assign_service("t.u.v.w", Some("10.30.9.9"), Some("fdff:2000::7"))
        .unwrap_err();
    assert!(matches!(err, IpamError::AlreadyHeld { .. }), "{err:?}");
    assert_eq!(ipam, before_v6, "the valid rr_ip was not reserved either");
    assert_ne!(ipam, before);
}

#[test]
fn the_same_service_may_redeploy_its_own_rr_ip() {
    let mut ipam = AddressManager::new();
    let first = ipam
        .assign_service("a.b.c.d", Some("10.30.5.5"), None)
        .unwrap();
    assert_eq!(
        ipam.assign_service("a.b.c.d", Some("10.30.5.5"), None)
            .unwrap(),
        first
    );
    assert_eq!(ipam.assign_service("a.b.c.d", None, None).unwrap(), first);
    let err = ipam
        .assign_service("a.b.c.d", Some("10.30.6.6"), None)
        .unwrap_err();
    assert!(matches!(err, IpamError::HolderHoldsOther { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("release 10.30.5.5 before reserving 10.30.6.6"),
        "{err}"
    );
}

#[test]
fn user_given_rr_ips_are_validated_with_clear_errors() {
    let mut ipam = AddressManager::new();
    let before = ipam.clone();
    let cases: [(Option<&str>, Option<&str>, &str); 11] = [
        (
            Some("10.30.1"),
            None,
            "rr_ip \"10.30.1\" is not an IPv4 address; give one such as 10.30.0.5",
        ),
        (Some("10.30.01.1"), None, "is not an IPv4 address"),
        (Some(" 10.30.1.1"), None, "is not an IPv4 address"),
        (Some("fdff:2000::1"), None, "is not an IPv4 address"),
        (
            Some("10.31.0.1"),
            None,
            "rr_ip 10.31.0.1 is outside the service IPv4 pool; choose an address in 10.30.0.1–10.30.255.254",
        ),
        (
            Some("10.30.0.0"),
            None,
            "rr_ip 10.30.0.0 is the network address of 10.30.0.0/16 and is never handed out",
        ),
        (
            Some("10.30.255.255"),
            None,
            "is the broadcast address of 10.30.0.0/16",
        ),
        (
            None,
            Some("10.30.0.1"),
            "rr_ip_v6 \"10.30.0.1\" is not an IPv6 address",
        ),
        (
            None,
            Some("fdff:2800::1"),
            "rr_ip_v6 fdff:2800::1 is outside the RR IPv6 pool",
        ),
        (
            None,
            Some("fdff:2000::"),
            "is the subnet-router anycast address of fdff:2000::/21",
        ),
        (
            None,
            Some("fdff::1"),
            "outside the RR IPv6 pool; choose an address in fdff:2000::1–fdff:27ff",
        ),
    ];
    for (rr_ip, rr_ip_v6, expected) in cases {
        let err = ipam.assign_service("a.b.c.d", rr_ip, rr_ip_v6).unwrap_err();
        assert!(
            err.to_string().contains(expected),
            "{rr_ip:?} {rr_ip_v6:?}: {err}"
        );
    }
    assert_eq!(ipam, before);
    // The whole /21 is accepted, not only fdff:20xx (Oakestra's narrower check).
    ipam.assign_service("a.b.c.d", Some("10.30.200.1"), Some("fdff:27ff::1"))
        .unwrap();
}

#[test]
fn instance_ipv6_pool_refuses_rr_addresses() {
    let mut pool = Pool::new(PoolKind::InstanceIpv6);
    let err = pool
        .reserve(Holder::instance("s", 0), ip("fdff:2000::5"))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("in the RR IPv6 range fdff:2000::/21"),
        "{err}"
    );
}

#[test]
fn release_frees_the_address_for_reservation_and_later_allocation() {
    let mut ipam = AddressManager::new();
    let a = ipam.assign_instance("s", 0).unwrap();
    let b = ipam.assign_instance("s", 1).unwrap();
    assert_eq!(ipam.release_instance("s", 0), (Some(a.ipv4), Some(a.ipv6)));
    assert_eq!(ipam.release_instance("s", 0), (None, None));
    assert_eq!(ipam.holder_of(IpAddr::V4(a.ipv4)), None);
    // Next-fit: the cursor moves on first, so a just-released address is not reused at once…
    let c = ipam.assign_instance("s", 2).unwrap();
    assert_eq!(c.ipv4, v4("10.30.0.3"));
    // …but it is free: it can be reserved right away.
    ipam.assign_service("t", Some(&a.ipv4.to_string()), None)
        .unwrap();
    assert_eq!(
        ipam.holder_of(IpAddr::V4(a.ipv4)),
        Some((RootPool::ServiceIpv4, &Holder::service("t")))
    );
    assert_eq!(
        ipam.holder_of(IpAddr::V4(b.ipv4)),
        Some((RootPool::ServiceIpv4, &Holder::instance("s", 1)))
    );
    ipam.assert_consistent();
}

#[test]
fn released_addresses_are_reused_once_the_cursor_comes_round() {
    let mut pool = Pool::new(PoolKind::ContainerIpv4 {
        subnet: first_worker().ipv4,
    });
    for n in 0..61 {
        pool.allocate(Holder::instance("s", n)).unwrap();
    }
    pool.release(ip("10.18.0.30"));
    pool.release(ip("10.18.0.10"));
    assert_eq!(
        pool.allocate(Holder::service("a")).unwrap(),
        ip("10.18.0.10")
    );
    assert_eq!(
        pool.allocate(Holder::service("b")).unwrap(),
        ip("10.18.0.30")
    );
}

#[test]
fn a_re_registering_worker_gets_its_subnets_back() {
    let mut ipam = AddressManager::new();
    let w1 = ipam.assign_worker("worker-1").unwrap();
    let w2 = ipam.assign_worker("worker-2").unwrap();
    assert_ne!(w1, w2);
    assert_eq!(ipam.assign_worker("worker-1").unwrap(), w1);
    assert_eq!(ipam.worker_subnets("worker-1"), Some(w1));
    // Any address inside the subnet names the worker.
    assert_eq!(
        ipam.holder_of(ip("10.18.0.17")),
        Some((RootPool::WorkerSubnetIpv4, &Holder::worker("worker-1")))
    );
    assert_eq!(
        ipam.holder_of(ip("fc00::1a0")),
        Some((RootPool::WorkerSubnetIpv6, &Holder::worker("worker-2")))
    );
    // Also after a restart, i.e. a round trip through the store.
    let mut restarted: AddressManager =
        serde_json::from_str(&serde_json::to_string(&ipam).unwrap()).unwrap();
    assert_eq!(restarted.assign_worker("worker-1").unwrap(), w1);
    assert_eq!(
        ipam.release_worker("worker-1"),
        (Some(w1.ipv4), Some(w1.ipv6))
    );
    assert_eq!(ipam.worker_subnets("worker-1"), None);
}

#[test]
fn state_round_trips_and_keeps_allocating_where_it_left_off() {
    let mut ipam = AddressManager::new();
    ipam.assign_service("a", Some("10.30.0.3"), None).unwrap();
    ipam.assign_instance("a", 0).unwrap();
    ipam.assign_instance("a", 1).unwrap();
    ipam.release_instance("a", 0);
    ipam.assign_worker("w").unwrap();
    let json = serde_json::to_string(&ipam).unwrap();
    assert!(
        json.contains(r#""held":[["10.30.0.2","instance:a#1"],["10.30.0.3","service:a"]]"#),
        "{json}"
    );
    let mut loaded: AddressManager = serde_json::from_str(&json).unwrap();
    assert_eq!(loaded, ipam);
    loaded.assert_consistent();
    assert_eq!(
        loaded.assign_instance("a", 2).unwrap(),
        ipam.assign_instance("a", 2).unwrap()
    );
}

#[test]
fn loading_rejects_a_pool_in_the_wrong_field() {
    let mut value = serde_json::to_value(AddressManager::new()).unwrap();
    value["rr_ipv6"] = value["instance_ipv6"].clone();
    let err = serde_json::from_value::<AddressManager>(value)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("stored state of the RR IPv6 pool is invalid"),
        "{err}"
    );
}

#[test]
fn worker_addresses_round_trip_and_check_their_subnets() {
    let mut node = WorkerAddresses::new(first_worker());
    let holder = Holder::instance("s", 4);
    let addrs = node.assign(&holder).unwrap();
    assert_eq!(node.assign(&holder).unwrap(), addrs, "idempotent");
    assert_eq!(node.holder_of(IpAddr::V6(addrs.ipv6)), Some(&holder));
    assert_eq!(
        node.holder_of(ip("10.18.0.1")),
        None,
        "the bridge is not a container"
    );
    let json = serde_json::to_string(&node).unwrap();
    let loaded: WorkerAddresses = serde_json::from_str(&json).unwrap();
    assert_eq!(loaded, node);
    let tampered = json.replacen("\"10.18.0.0/26\"", "\"10.18.0.64/26\"", 1);
    let err = serde_json::from_str::<WorkerAddresses>(&tampered)
        .unwrap_err()
        .to_string();
    assert!(err.contains("is invalid"), "{err}");
    assert_eq!(node.release(&holder), (Some(addrs.ipv4), Some(addrs.ipv6)));
    assert!(node.ipv4_pool().is_empty() && node.ipv6_pool().is_empty());
}

#[test]
fn worker_subnet_reservation_must_name_a_subnet_base() {
    let mut ipam = AddressManager::new();
    let pool = ipam.pool_mut(RootPool::WorkerSubnetIpv4);
    let err = pool
        .reserve(Holder::worker("w"), ip("10.18.0.65"))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("not the base address of a /26 subnet"),
        "{err}"
    );
    pool.reserve(Holder::worker("w"), ip("10.18.0.64")).unwrap();
}

fn request(
    rr_ip: Option<&str>,
    rr_ip_v6: Option<&str>,
    closest_ip: Option<&str>,
    closest_ip_v6: Option<&str>,
) -> ServiceIpRequest {
    ServiceIpRequest {
        rr_ip: rr_ip.map(v4),
        rr_ip_v6: rr_ip_v6.map(v6),
        closest_ip: closest_ip.map(v4),
        closest_ip_v6: closest_ip_v6.map(v6),
    }
}

#[test]
fn a_service_gets_rr_and_closest_ips_from_the_same_pools_and_keeps_them() {
    let mut ipam = AddressManager::new();
    let s = ipam
        .assign_service_ips("a.b.c.d", ServiceIpRequest::default())
        .unwrap();
    assert_eq!(
        s,
        ServiceIps {
            rr_ipv4: v4("10.30.0.1"),
            rr_ipv6: v6("fdff:2000::1"),
            closest_ipv4: v4("10.30.0.2"),
            closest_ipv6: v6("fdff:2000::2"),
        }
    );
    assert_eq!(
        ipam.holder_of(ip("10.30.0.2")),
        Some((RootPool::ServiceIpv4, &Holder::closest("a.b.c.d")))
    );
    // Again (a re-deploy, or the user-given values echoed back): the same addresses.
    assert_eq!(
        ipam.assign_service_ips("a.b.c.d", ServiceIpRequest::default())
            .unwrap(),
        s
    );
    assert_eq!(
        ipam.assign_service_ips(
            "a.b.c.d",
            request(
                Some("10.30.0.1"),
                Some("fdff:2000::1"),
                Some("10.30.0.2"),
                Some("fdff:2000::2")
            )
        )
        .unwrap(),
        s
    );
    // Released, both pairs are free for others.
    assert_eq!(
        ipam.release_closest("a.b.c.d"),
        (Some(v4("10.30.0.2")), Some(v6("fdff:2000::2")))
    );
    assert_eq!(ipam.holder_of(ip("10.30.0.2")), None);
    assert_eq!(
        ipam.release_service("a.b.c.d"),
        (Some(v4("10.30.0.1")), Some(v6("fdff:2000::1")))
    );
    assert!(ipam.pool(RootPool::ServiceIpv4).is_empty());
    assert!(ipam.pool(RootPool::RrIpv6).is_empty());
    ipam.assert_consistent();
}

#[test]
fn user_given_closest_ips_are_reserved_before_anything_is_allocated() {
    let mut ipam = AddressManager::new();
    // The given closest IPs are the very addresses the next allocation would pick.
    let s = ipam
        .assign_service_ips(
            "a.b.c.d",
            request(None, None, Some("10.30.0.1"), Some("fdff:2000::1")),
        )
        .unwrap();
    assert_eq!(
        (s.closest_ipv4, s.closest_ipv6),
        (v4("10.30.0.1"), v6("fdff:2000::1"))
    );
    assert_eq!(
        (s.rr_ipv4, s.rr_ipv6),
        (v4("10.30.0.2"), v6("fdff:2000::2"))
    );
    // Automatic instance addresses step over them.
    assert_eq!(
        ipam.assign_instance("a.b.c.d", 0).unwrap().ipv4,
        v4("10.30.0.3")
    );
    ipam.assert_consistent();
}

#[test]
fn closest_ips_follow_the_rr_ip_rules_and_a_failure_changes_nothing() {
    let mut ipam = AddressManager::new();
    ipam.assign_service_ips(
        "a.b.c.d",
        request(Some("10.30.5.5"), None, Some("10.30.6.6"), None),
    )
    .unwrap();
    let before = ipam.clone();
    let cases: [(ServiceIpRequest, &str); 5] = [
        // Another service's closest IP, as rr_ip and as closest_ip.
        (
            request(Some("10.30.6.6"), None, None, None),
            "10.30.6.6 in the service IPv4 pool is already held by the closest IP of service a.b.c.d",
        ),
        (
            request(None, None, Some("10.30.5.5"), None),
            "10.30.5.5 in the service IPv4 pool is already held by service a.b.c.d",
        ),
        // Validated like an rr_ip, naming the field.
        (
            request(None, None, Some("10.31.0.1"), None),
            "closest_ip 10.31.0.1 is outside the service IPv4 pool",
        ),
        (
            request(None, None, None, Some("fdff:2800::1")),
            "closest_ip_v6 fdff:2800::1 is outside the RR IPv6 pool",
        ),
        // The same address for both roles of one service.
        (
            request(Some("10.30.7.7"), None, Some("10.30.7.7"), None),
            "closest_ip 10.30.7.7 is also given as rr_ip",
        ),
    ];
    for (req, expected) in cases {
        let err = ipam.assign_service_ips("e.f.g.h", req).unwrap_err();
        assert!(err.to_string().starts_with(expected), "{req:?}: {err}");
        assert_eq!(ipam, before, "{req:?}: nothing kept");
    }
    let err = ipam
        .assign_service_ips("e.f.g.h", request(None, None, Some("10.30.6.6"), None))
        .unwrap_err();
    assert!(
        matches!(&err, IpamError::AlreadyHeld { field, .. } if field == "closest_ip"),
        "{err:?}"
    );
}

#[test]
fn service_ips_are_all_or_nothing_when_the_pool_runs_out() {
    let mut ipam = AddressManager::new();
    // Fill the service IPv4 pool up to one free address.
    let capacity = ipam.pool(RootPool::ServiceIpv4).capacity();
    let pool = ipam.pool_mut(RootPool::ServiceIpv4);
    for n in 0..capacity - 1 {
        pool.allocate(Holder::instance("filler", n as u32)).unwrap();
    }
    let before = ipam.clone();
    let err = ipam
        .assign_service_ips("a.b.c.d", ServiceIpRequest::default())
        .unwrap_err();
    assert!(matches!(err, IpamError::Exhausted { .. }), "{err:?}");
    assert_eq!(ipam, before);
}

#[test]
fn given_addresses_of_a_batch_can_be_reserved_before_anyone_allocates() {
    let mut ipam = AddressManager::new();
    // The second service asks for the address the first one's allocation would take.
    let second = request(None, None, Some("10.30.0.1"), None);
    ipam.reserve_given_service_ips("b", second).unwrap();
    assert_eq!(
        ipam.holder_of(ip("10.30.0.1")),
        Some((RootPool::ServiceIpv4, &Holder::closest("b")))
    );
    assert_eq!(
        ipam.pool(RootPool::ServiceIpv4).len(),
        1,
        "nothing allocated"
    );
    assert!(ipam.pool(RootPool::RrIpv6).is_empty());
    let a = ipam
        .assign_service_ips("a", ServiceIpRequest::default())
        .unwrap();
    assert_eq!(a.rr_ipv4, v4("10.30.0.2"));
    let b = ipam.assign_service_ips("b", second).unwrap();
    assert_eq!(b.closest_ipv4, v4("10.30.0.1"));
    // Checked like assign_service_ips: a conflict changes nothing.
    let before = ipam.clone();
    let err = ipam
        .reserve_given_service_ips(
            "c",
            request(Some("10.30.9.9"), None, Some("10.30.0.2"), None),
        )
        .unwrap_err();
    assert!(matches!(err, IpamError::AlreadyHeld { .. }), "{err:?}");
    assert_eq!(ipam, before);
    ipam.assert_consistent();
}
