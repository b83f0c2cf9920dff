//! The descriptors published in Oakestra's documentation (`/examples`) all parse.

use std::net::Ipv4Addr;

use oakestra_core::sla::{self, PortMapping, Protocol, Virtualization};

const CLIENTSRVR: &str = include_str!("../../examples/sla-clientsrvr-container.json");
const TAIL: &str = include_str!("../../examples/sla-clientsrvr-tail.json");
const UNIKERNEL: &str = include_str!("../../examples/sla-nginx-unikernel.json");
const DASHBOARD: &str = include_str!("../../examples/dashboard-microservices-only.json");

#[test]
fn clientsrvr_container_parses() {
    let sla = sla::parse_and_validate(CLIENTSRVR).unwrap();
    assert_eq!(sla.customer_id, "Admin");
    let app = &sla.applications[0];
    assert_eq!(app.application_name, "clientsrvr");
    let [curl, nginx] = app.microservices.as_slice() else {
        panic!("two services expected")
    };
    assert_eq!(curl.job_name(app), "clientsrvr.test.curl.test");
    assert_eq!(curl.port_mappings(), &[]);
    assert_eq!(
        curl.cmd.as_deref().unwrap(),
        ["sh", "-c", "curl 10.30.55.55 ; sleep 5"]
    );
    assert_eq!(nginx.virtualization, Virtualization::Container);
    assert_eq!(
        nginx.addresses.as_ref().unwrap().rr_ip,
        Some(Ipv4Addr::new(10, 30, 55, 55))
    );
    assert_eq!(
        nginx.port_mappings(),
        &[PortMapping {
            host: 80,
            container: 80,
            protocol: Protocol::Tcp
        }]
    );
    assert_eq!(nginx.memory, Some(100));
    assert_eq!(nginx.vcpus, Some(1));
}

#[test]
fn clientsrvr_tail_parses() {
    let sla = sla::parse_and_validate(TAIL).unwrap();
    let ms = &sla.applications[0].microservices;
    assert_eq!(
        ms[0].port_mappings(),
        &[PortMapping {
            host: 9080,
            container: 9080,
            protocol: Protocol::Tcp
        }]
    );
    assert_eq!(
        ms[1].port_mappings(),
        &[PortMapping {
            host: 6080,
            container: 60,
            protocol: Protocol::Tcp
        }]
    );
    assert_eq!(
        ms[1].addresses.as_ref().unwrap().rr_ip,
        Some(Ipv4Addr::new(10, 30, 30, 30))
    );
}

#[test]
fn unikernel_nginx_parses() {
    let sla = sla::parse_and_validate(UNIKERNEL).unwrap();
    let nginx = &sla.applications[0].microservices[0];
    assert_eq!(nginx.virtualization, Virtualization::Unikernel);
    assert_eq!(nginx.virtualization.runtime_name(), "unikernel");
    assert_eq!(nginx.arch.as_deref().unwrap(), ["amd64"]);
    assert_eq!(
        nginx.kernel_for_arch("amd64"),
        Some("https://github.com/Sabanic-P/app-nginx/releases/download/v1.0/kernel.tar.gz")
    );
    assert_eq!(nginx.kernel_for_arch("arm64"), None);
}

#[test]
fn dashboard_variant_parses_with_its_own_entry_point() {
    let list = sla::parse_microservices(DASHBOARD).unwrap();
    assert_eq!(list.microservices.len(), 1);
    assert_eq!(list.microservices[0].microservice_name, "nginx");
    // It is not a full descriptor: the full parser says the version is missing.
    let err = sla::parse_and_validate(DASHBOARD).unwrap_err();
    assert!(err.is_version_error(), "{err}");
}

#[test]
fn examples_round_trip_through_serde() {
    for text in [CLIENTSRVR, TAIL, UNIKERNEL] {
        let sla = sla::parse_and_validate(text).unwrap();
        let again = sla::parse_and_validate(&serde_json::to_string(&sla).unwrap()).unwrap();
        assert_eq!(sla, again);
        // Serialising emits the same JSON value as the input (all keys known or kept).
        let original: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_value(&sla).unwrap(), original);
    }
}
