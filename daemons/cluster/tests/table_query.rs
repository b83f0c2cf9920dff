//! The cluster's side of the overlay (issue 8) on its state machine: workers report where an
//! instance's network is (`net/service/deployed`), and table queries (`net/tablequery/request`)
//! are answered from the cluster's own view, by job name, rr_ip, closest IP or instance IP, in Oakestra's
//! field names. An instance that moves is left out until its new worker reports it.

use std::time::Duration;

use oakestra_cluster::state::{ClusterState, Effect, InstanceAddresses, Timing, WorkerRecord};
use oakestra_core::wire::{NodeInfo, ServiceDeployed, TableQueryRequest, WireVersion};
use oakestra_sched::{Algorithm, Scheduler};
use tokio::time::Instant;

const JOB: &str = "65f1a2b3c4d5e6f708192a3b";
const JOB_NAME: &str = "clientsrvr.test.nginx.test";

fn service_json() -> String {
    format!(
        r#"{{"_id":{{"$oid":"{JOB}"}},"applicationID":"65f1a2b3c4d5e6f708192a30",
        "app_name":"clientsrvr","app_ns":"test","service_name":"nginx","service_ns":"test",
        "job_name":"{JOB_NAME}","image":"docker.io/library/nginx:latest",
        "microservice_name":"nginx","microservice_namespace":"test","virtualization":"container",
        "code":"docker.io/library/nginx:latest","memory":100,"vcpus":1}}"#
    )
}

fn worker(id: &str) -> WorkerRecord {
    WorkerRecord {
        id: id.into(),
        info: NodeInfo {
            id: id.into(),
            host: id.into(),
            vcpus: 4,
            memory: 4000,
            memory_total: Some(4000),
            architecture: "amd64".into(),
            virtualization: vec!["docker".into()],
            ..NodeInfo::default()
        },
        mqtt_password_sha256: String::new(),
    }
}

fn timing() -> Timing {
    Timing {
        worker_timeout: Duration::from_secs(10),
        backoff_base: Duration::from_secs(1),
        backoff_cap: Duration::from_secs(8),
        unplaced_retry: Duration::from_secs(2),
        stable_after: Duration::from_secs(10),
    }
}

fn place_due(state: &mut ClusterState, now: Instant) {
    let due = state.due_for_placement(now);
    let mut candidates = state.candidates();
    for key in &due {
        let request = state.request(key).unwrap();
        let outcome = Algorithm::FirstFit
            .place(&request, &candidates)
            .map(|p| p.candidate);
        if let Ok(w) = &outcome {
            let c = candidates.iter_mut().find(|c| &c.name == w).unwrap();
            oakestra_sched::commit(&request, c);
        }
        state.placed(key, outcome, now);
    }
}

fn deployed(n: u32, nsip: &str, host: &str) -> ServiceDeployed {
    ServiceDeployed {
        wire_version: WireVersion::CURRENT,
        appname: JOB_NAME.into(),
        status: "DEPLOYED".into(),
        instance_number: n,
        nsip: nsip.into(),
        nsipv6: String::new(),
        host_port: 50103,
        host_ip: host.into(),
    }
}

fn by_name() -> TableQueryRequest {
    TableQueryRequest {
        sname: JOB_NAME.into(),
        ..Default::default()
    }
}

fn by_ip(ip: &str) -> TableQueryRequest {
    TableQueryRequest {
        sip: ip.into(),
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn table_queries_are_answered_from_the_cluster_view() {
    let mut s = ClusterState::new(timing());
    let t0 = Instant::now();
    s.register_worker(worker("w1"), t0);
    for n in 0..2 {
        s.deploy(
            JOB,
            n,
            JOB_NAME,
            &service_json(),
            InstanceAddresses {
                instance_ip: format!("10.30.0.{}", 3 + n),
                instance_ip_v6: String::new(),
                rr_ip: "10.30.55.55".into(),
                rr_ip_v6: String::new(),
                closest_ip: "10.30.66.66".into(),
                closest_ip_v6: "fdff:2000::66".into(),
            },
            t0,
        )
        .unwrap();
    }
    place_due(&mut s, t0);
    s.take_effects();

    // Known service, no network reported yet: no instances to route to.
    let empty = s.table_query(&by_name());
    assert_eq!(empty.app_name.as_deref(), Some(JOB_NAME));
    assert!(empty.instance_list.is_empty());

    // A report from a worker the instance is not on is ignored.
    assert!(!s.service_deployed("w9", &deployed(0, "10.18.0.2", "192.0.2.9")));
    assert!(s.service_deployed("w1", &deployed(0, "10.18.0.2", "192.0.2.1")));
    assert!(s.service_deployed("w1", &deployed(1, "10.18.0.3", "192.0.2.1")));
    assert!(
        s.take_effects()
            .iter()
            .any(|e| matches!(e, Effect::Report(_))),
        "the root learns the namespace address"
    );
    let i0 = s.instances().find(|i| i.instance_number == 0).unwrap();
    let status = oakestra_cluster::cluster::instance_status(i0);
    assert_eq!(
        (status.namespace_ip.as_str(), status.host_port),
        ("10.18.0.2", 50103)
    );

    let answer = s.table_query(&by_name());
    assert_eq!(answer.query_key, JOB_NAME);
    assert_eq!(answer.instance_list.len(), 2);
    let first = &answer.instance_list[0];
    assert_eq!(
        (
            first.instance_number,
            first.namespace_ip.as_str(),
            first.host_ip.as_str(),
            first.host_port
        ),
        (0, "10.18.0.2", "192.0.2.1", 50103)
    );
    let types: Vec<(&str, &str)> = first
        .service_ip
        .iter()
        .map(|a| (a.ip_type.as_str(), a.address.as_str()))
        .collect();
    assert_eq!(
        types,
        vec![
            ("RR", "10.30.55.55"),
            ("instance_ip", "10.30.0.3"),
            ("Closest", "10.30.66.66")
        ]
    );
    assert_eq!(first.service_ip[2].address_v6, "fdff:2000::66");
    // Oakestra's field names on the wire.
    let json = serde_json::to_value(&answer).unwrap();
    for key in ["app_name", "instance_list", "query_key"] {
        assert!(json.get(key).is_some(), "{key} in {json}");
    }
    let entry = &json["instance_list"][0];
    for key in [
        "instance_number",
        "namespace_ip",
        "host_ip",
        "host_port",
        "service_ip",
    ] {
        assert!(entry.get(key).is_some(), "{key} in {entry}");
    }
    assert_eq!(entry["service_ip"][0]["IpType"], "RR");
    assert_eq!(entry["service_ip"][0]["Address"], "10.30.55.55");

    // By rr_ip, closest IP (v4 or v6) and by an instance IP: the same service, every instance.
    for ip in ["10.30.55.55", "10.30.66.66", "fdff:2000::66", "10.30.0.4"] {
        let a = s.table_query(&by_ip(ip));
        assert_eq!(a.app_name.as_deref(), Some(JOB_NAME), "{ip}");
        assert_eq!(a.query_key, ip);
        assert_eq!(a.instance_list.len(), 2);
    }
    // Unknown: null name, no instances (Oakestra's shape for a miss).
    let miss = s.table_query(&by_ip("10.30.9.9"));
    assert_eq!(miss.app_name, None);
    assert!(miss.instance_list.is_empty());
    assert_eq!(
        serde_json::to_value(&miss).unwrap()["app_name"],
        serde_json::Value::Null
    );

    // w1 goes silent: its instances move to w2 and drop out of the table until w2 reports.
    s.register_worker(worker("w2"), t0);
    tokio::time::advance(Duration::from_secs(6)).await;
    let t1 = Instant::now();
    s.worker_information("w2", worker("w2").info, t1);
    tokio::time::advance(Duration::from_secs(5)).await;
    let t2 = Instant::now();
    s.worker_information("w2", worker("w2").info, t2);
    assert_eq!(s.check_liveness(t2), vec!["w1".to_string()]);
    place_due(&mut s, t2);
    assert!(s.table_query(&by_name()).instance_list.is_empty());
    assert!(!s.service_deployed("w1", &deployed(0, "10.18.0.2", "192.0.2.1")));
    assert!(s.service_deployed("w2", &deployed(0, "10.18.0.66", "192.0.2.2")));
    let moved = s.table_query(&by_name());
    assert_eq!(moved.instance_list.len(), 1);
    assert_eq!(moved.instance_list[0].host_ip, "192.0.2.2");
}
