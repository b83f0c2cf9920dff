//! The SLA validator (`oakestra_core::sla::check_rr_ip*`, used by `oak validate` and by the
//! root before anything is stored) and the root's IPAM must agree on every user-given RR IP:
//! a descriptor the validator calls valid must not be refused by the IPAM (the root would answer
//! 422 to what `oak validate` accepted), and the other way round.

use std::net::{Ipv4Addr, Ipv6Addr};

use oakestra_core::sla::{check_rr_ip, check_rr_ip_v6};
use oakestra_net::ipam::AddressManager;
use proptest::prelude::*;

/// Whether a fresh IPAM reserves `rr_ip` for a service; `Some(address)` when it does.
fn ipam_accepts_v4(text: &str) -> Option<Ipv4Addr> {
    let mut ipam = AddressManager::new();
    ipam.assign_service("app.ns.svc.ns", Some(text), None)
        .ok()
        .map(|a| a.rr_ipv4)
}

fn ipam_accepts_v6(text: &str) -> Option<Ipv6Addr> {
    let mut ipam = AddressManager::new();
    ipam.assign_service("app.ns.svc.ns", None, Some(text))
        .ok()
        .map(|a| a.rr_ipv6)
}

fn assert_agree_v4(text: &str) {
    assert_eq!(
        check_rr_ip(text).ok(),
        ipam_accepts_v4(text),
        "validator and IPAM disagree on rr_ip {text:?}: validator says {:?}",
        check_rr_ip(text)
    );
}

fn assert_agree_v6(text: &str) {
    assert_eq!(
        check_rr_ip_v6(text).ok(),
        ipam_accepts_v6(text),
        "validator and IPAM disagree on rr_ip_v6 {text:?}: validator says {:?}",
        check_rr_ip_v6(text)
    );
}

#[test]
fn every_ipv4_of_the_service_network_and_its_neighbours_is_judged_alike() {
    let first = u32::from(Ipv4Addr::new(10, 30, 0, 0));
    // The whole /16 plus 256 addresses on either side of it.
    for bits in first - 256..first + (1 << 16) + 256 {
        assert_agree_v4(&Ipv4Addr::from_bits(bits).to_string());
    }
    // The two addresses issue 2 was about are refused by both.
    assert!(check_rr_ip("10.30.0.0").is_err() && ipam_accepts_v4("10.30.0.0").is_none());
    assert!(check_rr_ip("10.30.255.255").is_err() && ipam_accepts_v4("10.30.255.255").is_none());
}

#[test]
fn ipv6_range_edges_are_judged_alike() {
    for text in [
        "fdff:2000::",
        "FDFF:2000::0",
        "fdff:2000:0:0:0:0:0:0",
        "fdff:2000::1",
        "fdff:2000::1337",
        "fdff:27ff:ffff:ffff:ffff:ffff:ffff:ffff",
        "fdff:2800::",
        "fdff:1fff:ffff:ffff:ffff:ffff:ffff:ffff",
        "fdff::",
        "fdff::1",
        "::ffff:10.30.0.1",
    ] {
        assert_agree_v6(text);
    }
    assert!(check_rr_ip_v6("fdff:2000::").is_err() && ipam_accepts_v6("fdff:2000::").is_none());
}

#[test]
fn malformed_text_is_refused_by_both() {
    for text in [
        "",
        " 10.30.1.1",
        "10.30.1.1 ",
        "10.30.01.1",
        "10.30.1",
        "10.30.1.256",
        "10.30.x.y",
        "fdff:2000::1",
        "10.30.1.1/16",
    ] {
        assert_agree_v4(text);
    }
    for text in [
        "",
        "fdff:2000::g",
        "fdff:2000",
        "10.30.0.1",
        "fdff:2000:::1",
        "fdff:2000::1/21",
    ] {
        assert_agree_v6(text);
    }
}

proptest! {
    /// Random addresses in fdff::/16 (around and inside the RR range), and anywhere at all.
    #[test]
    fn random_ipv6_addresses_are_judged_alike(
        low in any::<u128>(),
        second in prop_oneof![Just(0x1fffu16), 0x2000u16..0x2800, Just(0x2800u16), any::<u16>()],
        anywhere in any::<bool>(),
    ) {
        let bits = if anywhere {
            low
        } else {
            (0xfdff_u128 << 112) | (u128::from(second) << 96) | (low & ((1 << 96) - 1))
        };
        let text = Ipv6Addr::from_bits(bits).to_string();
        prop_assert_eq!(check_rr_ip_v6(&text).ok(), ipam_accepts_v6(&text), "{}", text);
    }

    /// Host parts with zero bits are where the anycast address hides.
    #[test]
    fn sparse_rr_ipv6_host_parts_are_judged_alike(bit in 0u32..107, set in any::<bool>()) {
        let base = 0xfdff_2000_u128 << 96;
        let bits = if set { base | (1 << bit) } else { base };
        let text = Ipv6Addr::from_bits(bits).to_string();
        prop_assert_eq!(check_rr_ip_v6(&text).ok(), ipam_accepts_v6(&text), "{}", text);
    }
}
