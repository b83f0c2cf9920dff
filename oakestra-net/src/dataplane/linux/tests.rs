//! The Linux data plane's decisions on the fake kernel (`fake.rs`): which links, addresses,
//! routes, rules and namespaces set-up, attach, detach and reconcile create and remove. No
//! root needed; `tests/dataplane_linux.rs` runs the same code on the real kernel.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use super::fake::FakeKernel;
use super::sys::{ENODEV, Family};
use super::*;
use crate::dataplane::Protocol;
use crate::ipam::{Ipv4Subnet, Ipv6Subnet};

fn config() -> DataPlaneConfig {
    let subnets = WorkerSubnets {
        ipv4: Ipv4Subnet::new(Ipv4Addr::new(10, 18, 0, 64)).unwrap(),
        ipv6: Ipv6Subnet::new("fc00::100".parse().unwrap()).unwrap(),
    };
    let mut config = DataPlaneConfig::new(subnets);
    config.naming = Naming::new("tst").unwrap();
    config
}

fn plane(kernel: &FakeKernel) -> LinuxDataPlane {
    LinuxDataPlane::with_system(config(), kernel.system())
}

fn key(n: u32) -> InstanceKey {
    InstanceKey::new("app.ns.svc.ns", n).unwrap()
}

fn web() -> PortForward {
    PortForward {
        host: 8080,
        container: 80,
        protocol: Protocol::Tcp,
    }
}

async fn bridge_index(kernel: &FakeKernel) -> u32 {
    let nl = kernel.system().netlink;
    nl.link_index("tstbr").await.unwrap().unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[tokio::test]
async fn host_setup_makes_the_bridge_forwarding_and_chains_and_repeats_cleanly() {
    let kernel = FakeKernel::new();
    let plane = plane(&kernel);
    plane.setup_host().await.unwrap();

    let bridge = &kernel.links(None)["tstbr"];
    assert!(bridge.bridge && bridge.up);
    assert_eq!(bridge.mtu, DataPlaneConfig::DEFAULT_MTU);
    assert_eq!(
        bridge.addresses,
        vec![(ip("10.18.0.65"), 26), (ip("fc00::101"), 120)]
    );
    assert_eq!(kernel.sysctl("net/ipv4/ip_forward").as_deref(), Some("1"));
    assert_eq!(
        kernel.sysctl("net/ipv6/conf/all/forwarding").as_deref(),
        Some("1")
    );
    // Router advertisements keep coming on interfaces that took them; lo and all untouched.
    assert_eq!(
        kernel.sysctl("net/ipv6/conf/eth0/accept_ra").as_deref(),
        Some("2")
    );
    assert_eq!(
        kernel.sysctl("net/ipv6/conf/lo/accept_ra").as_deref(),
        Some("1")
    );
    for family in [Family::V4, Family::V6] {
        assert_eq!(
            kernel.user_chains(family),
            ["filter/TST-FWD", "nat/TST-DNAT", "nat/TST-POST"]
        );
        assert_eq!(
            kernel.rules(family, "filter", "FORWARD").unwrap(),
            ["-j TST-FWD"]
        );
        assert_eq!(
            kernel.rules(family, "nat", "PREROUTING").unwrap(),
            ["-m addrtype --dst-type LOCAL -j TST-DNAT"]
        );
    }
    assert_eq!(
        kernel.rules(Family::V4, "nat", "TST-POST").unwrap(),
        [
            "-d 10.16.0.0/12 -j RETURN",
            "-s 10.18.0.64/26 ! -o tstbr -j MASQUERADE"
        ]
    );
    assert_eq!(
        kernel.rules(Family::V6, "nat", "TST-POST").unwrap(),
        [
            "-d fc00::/7 -j RETURN",
            "-s fc00::100/120 ! -o tstbr -j MASQUERADE"
        ]
    );

    // Again: nothing doubled, and no bridge created twice.
    kernel.clear_calls();
    plane.setup_host().await.unwrap();
    assert!(!kernel.calls().iter().any(|c| c.contains("add_bridge")));
    assert_eq!(
        kernel.rules(Family::V4, "filter", "FORWARD").unwrap().len(),
        1
    );
    assert_eq!(
        kernel.rules(Family::V4, "nat", "TST-POST").unwrap().len(),
        2
    );

    plane.teardown_host().await.unwrap();
    assert!(!kernel.links(None).contains_key("tstbr"));
    for family in [Family::V4, Family::V6] {
        assert!(kernel.user_chains(family).is_empty());
        assert!(kernel.rules(family, "nat", "OUTPUT").unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_host_without_ip6tables_still_sets_up_ipv4() {
    let kernel = FakeKernel::new();
    kernel.without_firewall(Family::V6);
    let plane = plane(&kernel);
    plane.setup_host().await.unwrap();
    assert_eq!(kernel.user_chains(Family::V4).len(), 3);
    let a = plane.attach(&key(0), &[web()]).await.unwrap();
    assert_eq!(a.ports, [web()]);
    assert_eq!(
        kernel.rules(Family::V4, "nat", "TST-DNAT").unwrap().len(),
        1
    );
}

#[tokio::test]
async fn attach_builds_namespace_veth_addresses_routes_and_port_rules() {
    let kernel = FakeKernel::new();
    let plane = plane(&kernel);
    plane.setup_host().await.unwrap();
    let a = plane.attach(&key(1), &[web()]).await.unwrap();

    assert_eq!(a.ipv4, Ipv4Addr::new(10, 18, 0, 66));
    assert_eq!(a.ipv6, "fc00::102".parse::<std::net::Ipv6Addr>().unwrap());
    assert_eq!(a.host_veth, "tstv2");
    assert_eq!(a.netns, Path::new("/run/netns/tst-app.ns.svc.ns.1"));
    assert_eq!(kernel.namespaces(), std::slice::from_ref(&a.netns));

    assert!(
        kernel
            .calls()
            .contains(&"host: add_veth tstv2 tstp2 1450".to_owned())
    );
    // The host side is up in the bridge; the peer left the host.
    let host = kernel.links(None);
    assert!(host["tstv2"].up);
    assert_eq!(host["tstv2"].controller, Some(bridge_index(&kernel).await));
    assert!(!host.contains_key("tstp2"));

    let inside = kernel.links(Some(&a.netns));
    assert!(inside["lo"].up);
    let eth0 = &inside["eth0"];
    assert!(eth0.up);
    assert_eq!(eth0.mtu, 1450);
    assert_eq!(
        eth0.addresses,
        vec![(ip("10.18.0.66"), 26), (ip("fc00::102"), 120)]
    );
    assert_eq!(eth0.routes, vec![ip("10.18.0.65"), ip("fc00::101")]);

    assert_eq!(
        kernel.rules(Family::V4, "nat", "TST-DNAT").unwrap(),
        [
            "-p tcp --dport 8080 -m comment --comment tst:app.ns.svc.ns.1 -j DNAT --to-destination 10.18.0.66:80"
        ]
    );
    assert_eq!(
        kernel.rules(Family::V6, "nat", "TST-DNAT").unwrap(),
        [
            "-p tcp --dport 8080 -m comment --comment tst:app.ns.svc.ns.1 -j DNAT --to-destination [fc00::102]:80"
        ]
    );

    // Attaching again answers the same attachment and touches nothing.
    kernel.clear_calls();
    assert_eq!(plane.attach(&key(1), &[web()]).await.unwrap(), a);
    assert!(kernel.calls().is_empty());
}

#[tokio::test]
async fn attach_without_the_bridge_fails_and_leaves_nothing() {
    let kernel = FakeKernel::new();
    let plane = plane(&kernel);
    let e = plane.attach(&key(0), &[]).await.unwrap_err();
    assert!(matches!(e, DataPlaneError::InvalidConfig(_)), "{e}");
    assert!(kernel.namespaces().is_empty());
    assert!(plane.attachments().is_empty());
}

#[tokio::test]
async fn a_failed_attach_removes_its_pieces_and_frees_the_address() {
    let kernel = FakeKernel::new();
    let plane = plane(&kernel);
    plane.setup_host().await.unwrap();
    // The namespace exists and the veth is made, then the kernel refuses the default route.
    kernel.fail("tst-app.ns.svc.ns.0: add_default_route", ENODEV);
    let e = plane.attach(&key(0), &[web()]).await.unwrap_err();
    assert!(
        e.to_string().contains("default route via 10.18.0.65"),
        "{e}"
    );
    assert!(kernel.namespaces().is_empty());
    assert!(!kernel.links(None).contains_key("tstv2"));
    assert!(
        kernel
            .rules(Family::V4, "nat", "TST-DNAT")
            .unwrap()
            .is_empty()
    );
    assert!(plane.attachments().is_empty());
}

#[tokio::test]
async fn detach_removes_rules_veth_and_namespace_also_of_an_earlier_process() {
    let kernel = FakeKernel::new();
    let first = plane(&kernel);
    first.setup_host().await.unwrap();
    let a = first.attach(&key(0), &[web()]).await.unwrap();
    first.attach(&key(1), &[]).await.unwrap();

    // A new process (empty bookkeeping) finds the address in the namespace.
    let second = plane(&kernel);
    second.detach(&key(0)).await.unwrap();
    assert_eq!(
        kernel.namespaces(),
        [Path::new("/run/netns/tst-app.ns.svc.ns.1")]
    );
    let host = kernel.links(None);
    assert!(!host.contains_key(&a.host_veth));
    assert!(host.contains_key("tstv3"));
    for family in [Family::V4, Family::V6] {
        assert!(kernel.rules(family, "nat", "TST-DNAT").unwrap().is_empty());
    }
    // Detaching what is gone is fine.
    second.detach(&key(0)).await.unwrap();
}

#[tokio::test]
async fn reconcile_adopts_what_should_run_and_removes_the_rest() {
    let kernel = FakeKernel::new();
    let crashed = plane(&kernel);
    crashed.setup_host().await.unwrap();
    let kept = crashed.attach(&key(0), &[web()]).await.unwrap();
    crashed.attach(&key(1), &[]).await.unwrap();
    let udp = PortForward {
        host: 5353,
        container: 53,
        protocol: Protocol::Udp,
    };
    let gone = crashed.attach(&key(2), &[udp]).await.unwrap();
    // A peer an interrupted attach left on the host, and someone else's link.
    kernel.add_link(None, "tstp9");
    kernel.add_link(None, "docker0");

    let restarted = plane(&kernel);
    let adopted = restarted.reconcile(&[key(0), key(1)]).await.unwrap();
    assert_eq!(adopted.len(), 2);
    assert_eq!(adopted[0], kept, "addresses, veth and ports read back");
    assert_eq!(restarted.attachments().len(), 2);

    assert_eq!(kernel.namespaces().len(), 2);
    let host = kernel.links(None);
    assert!(!host.contains_key(&gone.host_veth));
    assert!(!host.contains_key("tstp9"));
    assert!(host.contains_key("docker0") && host.contains_key("tstv2"));
    let rules = kernel.rules(Family::V4, "nat", "TST-DNAT").unwrap();
    assert_eq!(rules.len(), 1);
    assert!(rules[0].contains("tst:app.ns.svc.ns.0"));

    // The adopted addresses are taken: a new instance gets the next free one.
    let next = restarted.attach(&key(3), &[]).await.unwrap();
    assert_eq!(next.ipv4, gone.ipv4);
}

#[tokio::test]
async fn reconcile_removes_a_kept_instance_whose_veth_is_gone() {
    let kernel = FakeKernel::new();
    let crashed = plane(&kernel);
    crashed.setup_host().await.unwrap();
    crashed.attach(&key(0), &[web()]).await.unwrap();
    // The host side lost its name (someone renamed it); the namespace is still there.
    let nl = kernel.system().netlink;
    let index = nl.link_index("tstv2").await.unwrap().unwrap();
    nl.set_up(index, Some("renamed"), None, None).await.unwrap();

    let restarted = plane(&kernel);
    let adopted = restarted.reconcile(&[key(0)]).await.unwrap();
    assert!(adopted.is_empty());
    assert!(kernel.namespaces().is_empty());
    assert!(
        kernel
            .rules(Family::V4, "nat", "TST-DNAT")
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_guest_needs_the_instance_namespace() {
    let kernel = FakeKernel::new();
    let plane = plane(&kernel);
    plane.setup_host().await.unwrap();
    let e = plane.add_guest(&key(0)).await.unwrap_err();
    assert!(matches!(e, DataPlaneError::InvalidInstance(_)), "{e}");
    let a = plane.attach(&key(0), &[]).await.unwrap();
    let guest = plane.add_guest(&key(0)).await.unwrap();
    assert_eq!(guest, GuestNetwork::standard());
    assert_eq!(kernel.guests(), [a.netns]);
}

#[tokio::test]
async fn the_underlay_is_the_link_holding_the_tunnel_address_else_the_route_to_the_cluster() {
    let kernel = FakeKernel::new();
    kernel.add_host_link("wwan0", 1400, ip("100.64.0.2"), 24);
    kernel.add_host_link("eth1", 1500, ip("192.168.1.20"), 24);
    kernel.add_host_default_route("eth1", ip("192.168.1.1"));
    let nl = kernel.system().netlink;

    // The worker's tunnel address is on the LTE link: its MTU, minus 40 bytes of tunnel.
    let lte = detect_underlay(&*nl, Some(ip("100.64.0.2")), Some(ip("192.168.1.5")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (lte.link.as_str(), lte.mtu, lte.ipv6),
        ("wwan0", 1400, false)
    );
    assert_eq!(lte.overlay_mtu(), 1360);

    // An advertised address no link holds (behind NAT): the route to the cluster decides, a
    // directly connected one before the default route.
    let lan = detect_underlay(&*nl, Some(ip("203.0.113.7")), Some(ip("100.64.0.9")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((lan.link.as_str(), lan.mtu), ("wwan0", 1400));
    let default = detect_underlay(&*nl, None, Some(ip("198.51.100.1")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((default.link.as_str(), default.mtu), ("eth1", 1500));
    assert_eq!(default.overlay_mtu(), 1460);

    // A route with an MTU of its own (a VPN, `ip route add … mtu 1420`) wins when smaller.
    kernel.set_route_mtu(ip("198.51.100.1"), 1420);
    let vpn = detect_underlay(&*nl, None, Some(ip("198.51.100.1")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (vpn.link.as_str(), vpn.mtu, vpn.overlay_mtu()),
        ("eth1", 1420, 1380)
    );

    // Nothing to go by: unknown, and the worker keeps its default.
    assert_eq!(
        detect_underlay(&*nl, Some(ip("203.0.113.7")), None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        detect_underlay(&*nl, None, Some(ip("fd00::1")))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_larger_worker_subnet_sets_its_prefix_everywhere_and_names_veths_past_63() {
    let kernel = FakeKernel::new();
    let mut config = config();
    config.subnets = WorkerSubnets {
        ipv4: "10.18.4.0/24".parse().unwrap(),
        ipv6: "fc00::400/118".parse().unwrap(),
    };
    let plane = LinuxDataPlane::with_system(config, kernel.system());
    plane.setup_host().await.unwrap();
    assert_eq!(
        kernel.links(None)["tstbr"].addresses,
        vec![(ip("10.18.4.1"), 24), (ip("fc00::401"), 118)]
    );
    assert_eq!(
        kernel.rules(Family::V4, "nat", "TST-POST").unwrap(),
        [
            "-d 10.16.0.0/12 -j RETURN",
            "-s 10.18.4.0/24 ! -o tstbr -j MASQUERADE"
        ]
    );
    let mut last = None;
    for n in 0..100 {
        last = Some(plane.attach(&key(n), &[]).await.unwrap());
    }
    let last = last.unwrap();
    // The 100th instance is base+101: past a /26's broadcast address, an ordinary one here.
    assert_eq!(last.ipv4, Ipv4Addr::new(10, 18, 4, 101));
    assert_eq!(last.host_veth, "tstv101");
    let eth0 = &kernel.links(Some(&last.netns))["eth0"];
    assert_eq!(
        eth0.addresses,
        vec![(ip("10.18.4.101"), 24), (ip("fc00::465"), 118)]
    );
    // Detach finds the veth by its offset, also past 63.
    plane.detach(&key(99)).await.unwrap();
    assert!(!kernel.links(None).contains_key("tstv101"));
}
