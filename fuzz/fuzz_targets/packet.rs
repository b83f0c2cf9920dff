//! Feeds arbitrary bytes, as IP packets, to the proxy's packet parser and rewriting, and, as
//! tunnel datagrams, to the frame header decoder: what the TUN device and the UDP tunnel hand
//! the worker.
//!
//! Properties: nothing panics; rewriting never changes a packet's length; what the frame
//! header decoder understood survives encode + decode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oakestra_net::proxy::frame::{Datagram, FRAME_HEADER_LEN, Offload};
use oakestra_net::proxy::packet;
use oakestra_net::proxy::{InstanceRoute, Proxy, ServiceRoutes};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

fn proxy() -> Proxy {
    let mut proxy = Proxy::new(SocketAddr::from(([192, 0, 2, 1], 50103)));
    proxy.set_service(ServiceRoutes {
        job_name: "app.ns.svc.ns".into(),
        rr_ip: Some(Ipv4Addr::new(10, 30, 0, 1)),
        closest_ip: Some(Ipv4Addr::new(10, 30, 0, 3)),
        rr_ip_v6: Some("fdff:2000::1".parse::<Ipv6Addr>().unwrap()),
        closest_ip_v6: None,
        instances: vec![
            InstanceRoute {
                number: 0,
                instance_ip: Ipv4Addr::new(10, 30, 0, 2),
                nsip: Ipv4Addr::new(10, 18, 0, 2),
                instance_ip_v6: Some("fdff::2".parse().unwrap()),
                nsip_v6: Some("fc00::102".parse().unwrap()),
                node: SocketAddr::from(([192, 0, 2, 1], 50103)),
            },
            InstanceRoute {
                number: 1,
                instance_ip: Ipv4Addr::new(10, 30, 0, 4),
                nsip: Ipv4Addr::new(10, 18, 0, 66),
                instance_ip_v6: None,
                nsip_v6: None,
                node: SocketAddr::from(([192, 0, 2, 2], 50103)),
            },
        ],
    });
    proxy
}

fuzz_target!(|data: &[u8]| {
    let _ = packet::flow(data);
    let _ = packet::fragment(data);
    let _ = Datagram::classify(data);
    if let Ok(offload) = Offload::decode_frame(data) {
        // Unknown flag bits and the reserved byte are ignored on decode, so the property is
        // that what was understood survives encode + decode.
        let mut again = offload.encode_frame().to_vec();
        again.extend_from_slice(&data[FRAME_HEADER_LEN..]);
        assert_eq!(
            Offload::decode_frame(&again).ok(),
            Some(offload),
            "a frame header does not survive decode + encode + decode"
        );
        let _ = offload.segment_len(&data[FRAME_HEADER_LEN..]);
        let _ = offload.needs_csum();
    }
    let mut p = proxy();
    for partial in [false, true] {
        let mut buf = data.to_vec();
        let _ = p.outgoing_offloaded(&mut buf, partial);
        assert_eq!(buf.len(), data.len());
        let mut buf = data.to_vec();
        let _ = p.incoming_offloaded(&mut buf, partial);
        assert_eq!(buf.len(), data.len());
    }
    let mut buf = data.to_vec();
    let _ = packet::set_src(&mut buf, Ipv4Addr::new(10, 30, 0, 9));
    let _ = packet::set_dst(&mut buf, "fdff::9".parse::<Ipv6Addr>().unwrap());
    assert_eq!(buf.len(), data.len());
});
