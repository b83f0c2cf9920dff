//! Service tables across clusters (issue 8, MDNC): a cluster asks the root about a service it
//! does not hold (`TableQuery`, by job name or service IP), the root answers from the
//! instances every cluster reported (`ServiceTable`), remembers that the cluster is interested
//! in the service, and pushes a fresh `ServiceTable` to every interested cluster whenever the
//! service's routable instances change.
//!
//! Routable: `RUNNING`, with the namespace address and tunnel endpoint its cluster reported.
//! An instance that fails, moves or is undeployed drops out (the cluster's report or the
//! root's own placement clears it), so a push follows. Pushes are sent only when the table a
//! cluster would get differs from the last one sent for that service.
//!
//! Interests are in memory: after a root restart clusters ask again when they reconnect
//! (the cluster re-sends a `TableQuery` for every service it caches).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use oakestra_core::ids::ClusterId;
use oakestra_core::model::ServiceRecord;

use oakestra_proto::grpc::{RootMessage, ServiceTable, TableInstance, root_message};

/// Which clusters want which services, and what they were last told.
#[derive(Debug, Default)]
pub(crate) struct Interests {
    /// Job name → interested clusters.
    pub(crate) clusters: HashMap<String, HashSet<ClusterId>>,
    /// Job name → the table last pushed (or answered).
    pub(crate) last: HashMap<String, ServiceTable>,
}

/// Whether `service` is the one a query names: by job name, or by its rr_ip, closest IP or an
/// instance IP
/// (v4 or v6; compared as addresses, so `fdff::1` matches `fdff:0::1`).
pub fn service_matches(service: &ServiceRecord, job_name: &str, ip: &str) -> bool {
    if !job_name.is_empty() {
        return service.job_name == job_name;
    }
    let Ok(ip) = ip.trim().parse::<IpAddr>() else {
        return false;
    };
    let rr = [
        service.rr_ip.map(IpAddr::V4),
        service.rr_ip_v6.map(IpAddr::V6),
        service.closest_ip.map(IpAddr::V4),
        service.closest_ip_v6.map(IpAddr::V6),
    ];
    let instances = service.instance_list.iter().flat_map(|i| {
        [
            i.instance_ip.map(IpAddr::V4),
            i.instance_ip_v6.map(IpAddr::V6),
        ]
    });
    rr.into_iter().chain(instances).flatten().any(|a| a == ip)
}

/// The table of `service`: its addresses and its routable instances.
pub fn service_table(service: &ServiceRecord) -> ServiceTable {
    let text = |a: Option<String>| a.unwrap_or_default();
    let instances = service
        .instance_list
        .iter()
        .filter(|i| i.is_ready())
        .filter_map(|i| {
            let cluster = i.cluster_id.as_ref()?;
            let host_ip = i.host_ip.clone().filter(|h| !h.is_empty())?;
            Some(TableInstance {
                instance_number: i.instance_number,
                namespace_ip: i.namespace_ip?.to_string(),
                namespace_ip_v6: text(i.namespace_ip_v6.map(|a| a.to_string())),
                host_ip,
                host_port: u32::from(i.host_port?),
                instance_ip: text(i.instance_ip.map(|a| a.to_string())),
                instance_ip_v6: text(i.instance_ip_v6.map(|a| a.to_string())),
                cluster_id: cluster.0.clone(),
            })
        })
        .collect();
    ServiceTable {
        request_id: String::new(),
        found: true,
        job_name: service.job_name.clone(),
        rr_ip: text(service.rr_ip.map(|a| a.to_string())),
        rr_ip_v6: text(service.rr_ip_v6.map(|a| a.to_string())),
        instances,
        closest_ip: text(service.closest_ip.map(|a| a.to_string())),
        closest_ip_v6: text(service.closest_ip_v6.map(|a| a.to_string())),
    }
}

pub(crate) fn table_message(table: ServiceTable) -> RootMessage {
    RootMessage {
        kind: Some(root_message::Kind::ServiceTable(table)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oakestra_core::model::InstanceRecord;
    use oakestra_core::status::DeploymentStatus;

    fn service() -> ServiceRecord {
        let mut s: ServiceRecord = serde_json::from_value(serde_json::json!({
            "_id": {"$oid": "65f1a2b3c4d5e6f708192a3b"},
            "applicationID": "65f1a2b3c4d5e6f708192a30",
            "app_name": "demo", "app_ns": "test", "service_name": "nginx", "service_ns": "test",
            "job_name": "demo.test.nginx.test", "image": "busybox",
            "microservice_name": "nginx", "microservice_namespace": "test",
            "virtualization": "container", "code": "busybox", "memory": 10, "vcpus": 0
        }))
        .unwrap();
        s.rr_ip = Some("10.30.55.55".parse().unwrap());
        let mut running = InstanceRecord::new(0, DeploymentStatus::Running);
        running.cluster_id = Some(ClusterId("b".into()));
        running.instance_ip = Some("10.30.0.7".parse().unwrap());
        running.namespace_ip = Some("10.18.0.66".parse().unwrap());
        running.host_ip = Some("192.0.2.2".into());
        running.host_port = Some(50103);
        let mut failed = running.clone();
        failed.instance_number = 1;
        failed.instance_ip = Some("10.30.0.8".parse().unwrap());
        failed.status = Some(DeploymentStatus::Failed.into());
        let mut no_network = running.clone();
        no_network.instance_number = 2;
        no_network.namespace_ip = None;
        s.instance_list = vec![running, failed, no_network];
        s
    }

    #[test]
    fn only_running_instances_with_a_network_are_routable() {
        let mut s = service();
        s.closest_ip = Some("10.30.66.66".parse().unwrap());
        let t = service_table(&s);
        assert!(t.found);
        assert_eq!(t.rr_ip, "10.30.55.55");
        assert_eq!(t.closest_ip, "10.30.66.66");
        assert_eq!(t.closest_ip_v6, "", "none allocated");
        assert_eq!(t.instances.len(), 1);
        let i = &t.instances[0];
        assert_eq!(
            (
                i.instance_number,
                i.namespace_ip.as_str(),
                i.host_ip.as_str(),
                i.host_port,
                i.instance_ip.as_str(),
                i.cluster_id.as_str()
            ),
            (0, "10.18.0.66", "192.0.2.2", 50103, "10.30.0.7", "b")
        );
    }

    #[test]
    fn unready_instances_are_left_out_until_ready() {
        let mut s = service();
        s.instance_list[0].ready = Some(false);
        assert!(service_table(&s).instances.is_empty());
        s.instance_list[0].ready = Some(true);
        assert_eq!(service_table(&s).instances.len(), 1);
        // Absent (an older cluster): ready when RUNNING.
        s.instance_list[0].ready = None;
        assert_eq!(service_table(&s).instances.len(), 1);
    }

    #[test]
    fn queries_match_by_name_rr_ip_closest_ip_or_any_instance_ip() {
        let mut s = service();
        assert!(!service_matches(&s, "", "10.30.66.66"));
        s.closest_ip = Some("10.30.66.66".parse().unwrap());
        assert!(service_matches(&s, "", "10.30.66.66"));
        assert!(service_matches(&s, "demo.test.nginx.test", ""));
        assert!(!service_matches(&s, "demo.test.other.test", ""));
        assert!(service_matches(&s, "", "10.30.55.55"));
        assert!(
            service_matches(&s, "", "10.30.0.8"),
            "a failed instance's IP"
        );
        assert!(!service_matches(&s, "", "10.30.0.9"));
        assert!(!service_matches(&s, "", "not an ip"));
        assert!(!service_matches(&s, "", ""));
    }
}
