//! The cluster's side of the overlay (issue 8) on its state machine: workers report where an
//! instance's network is (`net/service/deployed`), and table queries (`net/tablequery/request`)
//! are answered from the cluster's own view, by job name, rr_ip, closest IP or instance IP, in Oakestra's
//! field names. An instance that moves is left out until its new worker reports it.

use std::time::Duration;

use oakestra_cluster::state::{ClusterState, Effect, Timing, WorkerRecord};
use oakestra_proto::mqtt::{IpType, NodeInfo, ServiceDeployed, TableQueryRequest, WireVersion};
use oakestra_sched::Algorithm;
use serde_json::{Value, json};
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

/// [`service_json`] with the addresses the root assigned: `addresses` holds the service's
/// (`RR_ip`, `Closest_ip`, …) and instance `n`'s (`instance_ip`, `instance_ip_v6`), as the root
/// sends them in the record.
fn service_json_with(n: u32, addresses: Value) -> String {
    let mut service: Value = serde_json::from_str(&service_json()).unwrap();
    let mut instance = json!({"instance_number": n});
    for (k, v) in addresses.as_object().unwrap() {
        if k.starts_with("instance_ip") {
            instance[k] = v.clone();
        } else {
            service[k] = v.clone();
        }
    }
    service["instance_list"] = json!([instance]);
    service.to_string()
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
        first_report_grace: Duration::ZERO,
    }
}

fn place_due(state: &mut ClusterState, now: Instant) {
    state.place_due_with(&Algorithm::FirstFit, now);
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
            &service_json_with(
                n,
                json!({
                    "instance_ip": format!("10.30.0.{}", 3 + n),
                    "instance_ip_v6": format!("fdff::{}", 3 + n),
                    "RR_ip": "10.30.55.55",
                    "RR_ip_v6": "fdff:2000::55",
                    "Closest_ip": "10.30.66.66",
                    "Closest_ip_v6": "fdff:2000::66",
                }),
            ),
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
    let types: Vec<(IpType, String)> = first
        .service_ip
        .iter()
        .map(|a| (a.ip_type.clone(), a.address.unwrap().to_string()))
        .collect();
    assert_eq!(
        types,
        vec![
            (IpType::RoundRobin, "10.30.55.55".to_string()),
            (IpType::Instance, "10.30.0.3".to_string()),
            (IpType::Closest, "10.30.66.66".to_string())
        ]
    );
    assert_eq!(
        first.service_ip[2].address_v6,
        Some("fdff:2000::66".parse().unwrap())
    );
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
    // IPv6 addresses match in any spelling (a worker's IPv6 table miss asks with its own).
    for ip in [
        "10.30.55.55",
        "10.30.66.66",
        "fdff:2000::66",
        "10.30.0.4",
        "fdff:2000:0:0::55",
        "FDFF::4",
    ] {
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

fn tables_for(effects: &[Effect]) -> Vec<(String, oakestra_proto::mqtt::TableQueryResult)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Table { worker, result } => Some((worker.clone(), (**result).clone())),
            _ => None,
        })
        .collect()
}

fn numbers(r: &oakestra_proto::mqtt::TableQueryResult) -> Vec<u32> {
    r.instance_list.iter().map(|i| i.instance_number).collect()
}

/// Two instances of the service on w1 and w2, both with their network reported; w3 hosts none.
fn two_running_instances() -> (ClusterState, Instant) {
    let mut s = ClusterState::new(timing());
    let t0 = Instant::now();
    for w in ["w1", "w2", "w3"] {
        s.register_worker(worker(w), t0);
    }
    for n in 0..2 {
        s.deploy(
            JOB,
            n,
            JOB_NAME,
            &service_json_with(
                n,
                json!({"instance_ip": format!("10.30.0.{}", 3 + n), "RR_ip": "10.30.55.55"}),
            ),
            t0,
        )
        .unwrap();
    }
    for n in 0..2 {
        s.placed(&(JOB.to_string(), n), Ok(format!("w{}", n + 1)), t0);
    }
    for i in s.instances().cloned().collect::<Vec<_>>() {
        let w = i.worker_id.clone().unwrap();
        let host = format!("192.0.2.{}", &w[1..]);
        assert!(s.service_deployed(&w, &deployed(i.instance_number, "10.18.0.2", &host)));
    }
    (s, t0)
}

/// The `jobs/<job>/updates_available` signals among `effects`.
fn signals(effects: &[Effect]) -> Vec<(String, oakestra_proto::mqtt::UpdateKind)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::JobUpdate { job_name, kind } => Some((job_name.clone(), *kind)),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn interested_workers_get_a_service_s_new_table_as_soon_as_its_instances_change() {
    use oakestra_proto::mqtt::UpdateKind;
    let (mut s, t0) = two_running_instances();
    let effects = s.take_effects();
    assert!(
        signals(&effects).contains(&(JOB_NAME.into(), UpdateKind::Deployment)),
        "Oakestra's signal for NetManagers that follow it: {effects:?}"
    );
    // The hosting workers w1 and w2 follow the job by themselves; w3 follows it once it asks.
    assert_eq!(s.interested_workers(JOB_NAME), vec!["w1", "w2"]);
    s.worker_table_query("w3", &by_ip("10.30.55.55"), t0);
    let answer = tables_for(&s.take_effects());
    assert_eq!(answer.len(), 1);
    assert_eq!(answer[0].0, "w3");
    assert_eq!(answer[0].1.query_key, "10.30.55.55");
    assert_eq!(numbers(&answer[0].1), vec![0, 1]);
    let expected = vec!["w1", "w2", "w3"];
    assert_eq!(s.interested_workers(JOB_NAME), expected);

    // Instance 1 dies on its worker: every interested worker gets the table without it in
    // the same flush, no query needed.
    s.job_report(
        "w2",
        oakestra_proto::mqtt::JobStatusReport {
            wire_version: WireVersion::CURRENT,
            sname: JOB_NAME.into(),
            status: oakestra_core::status::DeploymentStatus::Dead,
            status_detail: "exit 137".into(),
            instance: 1,
            publicip: String::new(),
            restart_count: 0,
            restarting: false,
            ready: None,
        },
        t0,
    );
    let effects = s.take_effects();
    assert_eq!(
        signals(&effects),
        vec![(JOB_NAME.to_string(), UpdateKind::Undeployment)]
    );
    let pushed = tables_for(&effects);
    let mut to: Vec<String> = pushed.iter().map(|(w, _)| w.clone()).collect();
    to.sort();
    assert_eq!(to, expected);
    for (_, r) in &pushed {
        assert_eq!(r.app_name.as_deref(), Some(JOB_NAME));
        assert_eq!(r.query_key, JOB_NAME);
        assert_eq!(numbers(r), vec![0]);
    }

    // Unknown interests and a hosting worker's removal are ignored, without a crash.
    assert!(!s.interest_remove("w9", JOB_NAME));
    assert!(!s.interest_remove("w3", "no.such.service.here"));
    assert!(!s.interest_remove("w1", JOB_NAME), "w1 hosts instance 0");
    assert!(s.interest_remove("w3", JOB_NAME));
    assert!(!s.interest_remove("w3", JOB_NAME), "only once");
    assert_eq!(s.interested_workers(JOB_NAME), vec!["w1", "w2"]);

    // Undeployed: the remaining followers learn that the service is gone.
    s.undeploy(JOB, None);
    let gone = tables_for(&s.take_effects());
    let mut to: Vec<String> = gone.iter().map(|(w, _)| w.clone()).collect();
    to.sort();
    assert_eq!(to, vec!["w1", "w2"]);
    for (_, r) in &gone {
        assert_eq!(r.app_name, None);
        assert_eq!(r.query_key, JOB_NAME);
    }
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_goes_silent_takes_its_instances_out_of_the_others_tables() {
    let (mut s, _) = two_running_instances();
    s.take_effects();
    // w2 (instance 1) goes silent; w1 and w3 keep reporting.
    tokio::time::advance(Duration::from_secs(11)).await;
    let t1 = Instant::now();
    for w in ["w1", "w3"] {
        s.worker_information(w, worker(w).info, t1);
    }
    assert_eq!(s.check_liveness(t1), vec!["w2".to_string()]);
    let pushed = tables_for(&s.take_effects());
    assert!(
        pushed
            .iter()
            .any(|(w, r)| w == "w1" && numbers(r) == vec![0]),
        "{pushed:?}"
    );
}

fn root_service(instances: &[(u32, &str)]) -> oakestra_cluster::state::RemoteService {
    oakestra_cluster::cluster::root_table(oakestra_cluster::proto::ServiceTable {
        request_id: String::new(),
        found: true,
        job_name: "demo.test.nginx.test".into(),
        rr_ip: "10.30.55.55".into(),
        rr_ip_v6: String::new(),
        closest_ip: "10.30.66.66".into(),
        closest_ip_v6: String::new(),
        instances: instances
            .iter()
            .map(|(n, host)| oakestra_cluster::proto::TableInstance {
                instance_number: *n,
                namespace_ip: format!("10.18.0.{}", 66 + n),
                host_ip: (*host).into(),
                host_port: 50103,
                instance_ip: format!("10.30.0.{}", 7 + n),
                cluster_id: "cluster-b".into(),
                ..Default::default()
            })
            .collect(),
    })
    .service
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn services_of_other_clusters_are_asked_of_the_root_cached_and_followed() {
    use oakestra_cluster::state::RootTable;
    const REMOTE: &str = "demo.test.nginx.test";
    let mut s = ClusterState::new(timing());
    let t0 = Instant::now();
    s.register_worker(worker("w1"), t0);
    s.register_worker(worker("w2"), t0);
    s.take_effects();

    // Two workers miss the same service (by IP and by name): one question to the root.
    s.worker_table_query("w1", &by_ip("10.30.55.55"), t0);
    s.worker_table_query(
        "w2",
        &TableQueryRequest {
            sname: REMOTE.into(),
            ..Default::default()
        },
        t0,
    );
    let effects = s.take_effects();
    let asks: Vec<(String, String, String)> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::AskRoot {
                request_id,
                job_name,
                ip,
            } => Some((request_id.clone(), job_name.clone(), ip.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(asks.len(), 2, "one per distinct question: {asks:?}");
    assert!(tables_for(&effects).is_empty(), "nobody is answered yet");
    s.worker_table_query("w1", &by_ip("10.30.55.55"), t0);
    assert!(
        s.take_effects().is_empty(),
        "the same question is not asked twice"
    );

    // The root answers the IP question: w1 gets it under its own key and follows the service.
    let by_ip_id = asks
        .iter()
        .find(|a| a.2 == "10.30.55.55")
        .unwrap()
        .0
        .clone();
    s.root_table(RootTable {
        request_id: by_ip_id,
        job_name: REMOTE.into(),
        service: Some(root_service(&[(0, "192.0.2.20")])),
    });
    let answers = tables_for(&s.take_effects());
    let to_w1: Vec<_> = answers.iter().filter(|(w, _)| w == "w1").collect();
    assert!(to_w1.iter().any(|(_, r)| r.query_key == "10.30.55.55"
        && r.app_name.as_deref() == Some(REMOTE)
        && numbers(r) == vec![0]
        && r.instance_list[0].host_ip == "192.0.2.20"
        && r.instance_list[0].service_ip[0].address == Some("10.30.55.55".parse().unwrap())));
    assert_eq!(s.interested_workers(REMOTE), vec!["w1".to_string()]);
    // Now cached: w2's name and any IP of it (its closest IP too) are answered at once.
    assert_eq!(numbers(&s.table_query(&by_ip("10.30.0.7"))), vec![0]);
    let closest = s.table_query(&by_ip("10.30.66.66"));
    assert_eq!(numbers(&closest), vec![0]);
    assert!(
        closest.instance_list[0]
            .service_ip
            .iter()
            .any(|a| a.ip_type == IpType::Closest
                && a.address == Some("10.30.66.66".parse().unwrap())),
        "{closest:?}"
    );
    let by_name_id = asks.iter().find(|a| a.1 == REMOTE).unwrap().0.clone();
    s.root_table(RootTable {
        request_id: by_name_id,
        job_name: REMOTE.into(),
        service: Some(root_service(&[(0, "192.0.2.20")])),
    });
    let answers = tables_for(&s.take_effects());
    assert!(
        answers
            .iter()
            .any(|(w, r)| w == "w2" && r.query_key == REMOTE)
    );
    assert_eq!(
        s.interested_workers(REMOTE),
        vec!["w1".to_string(), "w2".to_string()]
    );

    // The root pushes a change (instance 0 died, 1 came up): both workers get it.
    s.root_table(RootTable {
        request_id: String::new(),
        job_name: REMOTE.into(),
        service: Some(root_service(&[(1, "192.0.2.21")])),
    });
    let pushed = tables_for(&s.take_effects());
    assert_eq!(pushed.len(), 2, "{pushed:?}");
    assert!(pushed.iter().all(|(_, r)| numbers(r) == vec![1]));

    // The workers drop it: the last one out tells the root.
    assert!(s.interest_remove("w1", REMOTE));
    assert!(
        !s.take_effects()
            .iter()
            .any(|e| matches!(e, Effect::DropRootInterest { .. }))
    );
    assert!(s.interest_remove("w2", REMOTE));
    assert!(matches!(
        &s.take_effects()[..],
        [Effect::DropRootInterest { job_name }] if job_name == REMOTE
    ));
    assert!(s.remote_service(REMOTE).is_none());
}

#[tokio::test(start_paused = true)]
async fn without_an_answer_from_the_root_the_worker_hears_unknown_and_asks_again() {
    let mut s = ClusterState::new(timing());
    let t0 = Instant::now();
    s.register_worker(worker("w1"), t0);
    s.take_effects();
    s.worker_table_query("w1", &by_ip("10.30.66.66"), t0);
    assert_eq!(s.take_effects().len(), 1);
    tokio::time::advance(Duration::from_millis(1900)).await;
    assert_eq!(s.expire_root_queries(Instant::now()), 0);
    tokio::time::advance(Duration::from_millis(200)).await;
    assert_eq!(s.expire_root_queries(Instant::now()), 1);
    let answers = tables_for(&s.take_effects());
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].1.app_name, None);
    assert_eq!(answers[0].1.query_key, "10.30.66.66");
    // A late answer finds nobody waiting and nobody interested: the root is told to forget.
    s.worker_table_query("w1", &by_ip("10.30.66.66"), Instant::now());
    assert!(
        s.take_effects()
            .iter()
            .any(|e| matches!(e, Effect::AskRoot { .. })),
        "asked again"
    );
    s.root_table(oakestra_cluster::state::RootTable {
        request_id: "tq-1".into(),
        job_name: "demo.test.nginx.test".into(),
        service: Some(root_service(&[(0, "192.0.2.20")])),
    });
    assert!(matches!(
        &s.take_effects()[..],
        [Effect::DropRootInterest { .. }]
    ));
}

#[tokio::test(start_paused = true)]
async fn a_local_service_also_lists_its_instances_in_other_clusters_and_local_ones_win() {
    use oakestra_cluster::state::RootTable;
    let (mut s, t0) = two_running_instances();
    s.take_effects();
    // w3 asks about the local service: answered at once, and the root is asked in the
    // background (nobody waits for it).
    s.worker_table_query("w3", &by_name(), t0);
    let effects = s.take_effects();
    assert_eq!(tables_for(&effects).len(), 1);
    let request_id = effects
        .iter()
        .find_map(|e| match e {
            Effect::AskRoot {
                request_id,
                job_name,
                ..
            } if job_name == JOB_NAME => Some(request_id.clone()),
            _ => None,
        })
        .expect("the root is asked about the local service");
    // The root knows instance 0 (with an older address) and instance 5 in another cluster.
    let mut remote = root_service(&[(0, "198.51.100.9"), (5, "192.0.2.50")]);
    for i in &mut remote.instances {
        i.service_ip[0].address = Some("10.30.55.55".parse().unwrap());
    }
    s.root_table(RootTable {
        request_id,
        job_name: JOB_NAME.into(),
        service: Some(remote),
    });
    let pushed = tables_for(&s.take_effects());
    assert!(!pushed.is_empty(), "followers learn about instance 5");
    let table = s.table_query(&by_name());
    assert_eq!(numbers(&table), vec![0, 1, 5]);
    let host = |n: u32| {
        table
            .instance_list
            .iter()
            .find(|i| i.instance_number == n)
            .unwrap()
            .host_ip
            .clone()
    };
    assert_eq!(
        host(0),
        "192.0.2.1",
        "this cluster's view of its own instance wins"
    );
    assert_eq!(host(5), "192.0.2.50");
    // After a reconnect the root is asked again about what this cluster caches.
    s.ask_root_again(t0);
    assert!(
        s.take_effects()
            .iter()
            .any(|e| matches!(e, Effect::AskRoot { job_name, .. } if job_name == JOB_NAME))
    );
}

fn ready_report(instance: u32, ready: Option<bool>) -> oakestra_proto::mqtt::JobStatusReport {
    oakestra_proto::mqtt::JobStatusReport {
        wire_version: WireVersion::CURRENT,
        sname: JOB_NAME.into(),
        status: oakestra_core::status::DeploymentStatus::Running,
        status_detail: String::new(),
        instance,
        publicip: String::new(),
        restart_count: 0,
        restarting: false,
        ready,
    }
}

#[tokio::test(start_paused = true)]
async fn an_unready_instance_leaves_the_tables_until_it_is_ready_again() {
    let (mut s, t0) = two_running_instances();
    s.take_effects();
    s.worker_table_query("w3", &by_ip("10.30.55.55"), t0);
    assert_eq!(numbers(&tables_for(&s.take_effects())[0].1), vec![0, 1]);

    // Instance 1's readiness probe fails: every interested worker gets the table without it.
    s.job_report("w2", ready_report(1, Some(false)), t0);
    let effects = s.take_effects();
    let pushed = tables_for(&effects);
    let mut to: Vec<String> = pushed.iter().map(|(w, _)| w.clone()).collect();
    to.sort();
    assert_eq!(to, vec!["w1", "w2", "w3"]);
    for (_, r) in &pushed {
        assert_eq!(numbers(r), vec![0]);
    }
    // The root hears it too.
    let key = (JOB.to_owned(), 1);
    let status = oakestra_cluster::cluster::instance_status(s.instance(&key).unwrap());
    assert_eq!(
        (status.status.as_str(), status.ready),
        ("RUNNING", Some(false))
    );
    // Queries are answered without it; the same verdict again changes nothing.
    assert_eq!(numbers(&s.table_query(&by_name())), vec![0]);
    s.job_report("w2", ready_report(1, Some(false)), t0);
    assert!(tables_for(&s.take_effects()).is_empty());

    // Ready again: back in every table.
    s.job_report("w2", ready_report(1, Some(true)), t0);
    let pushed = tables_for(&s.take_effects());
    assert_eq!(pushed.len(), 3);
    for (_, r) in &pushed {
        assert_eq!(numbers(r), vec![0, 1]);
    }
    assert_eq!(numbers(&s.table_query(&by_name())), vec![0, 1]);
}
