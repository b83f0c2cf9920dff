//! The cluster's state machine with a paused clock: registry, liveness, placement and
//! self-healing, with no broker, root or store (the effects are inspected directly).

use std::time::Duration;

use oakestra_cluster::state::{
    ClusterState, Effect, InstanceKey, Timing, USAGE_FORWARD_INTERVAL, WorkerRecord,
};
use oakestra_core::status::{
    DeploymentStatus, NegativeSchedulingStatus, PositiveSchedulingStatus, Status,
};
use oakestra_proto::mqtt::{JobStatusReport, NodeInfo, ResourcesReport, ServiceUsage, WireVersion};
use oakestra_sched::Algorithm;
use tokio::time::Instant;

const JOB: &str = "65f1a2b3c4d5e6f708192a3b";
const JOB_NAME: &str = "clientsrvr.test.nginx.test";

fn service_json(memory: u64, one_shot: bool, constraints: &str) -> String {
    format!(
        r#"{{"_id":{{"$oid":"{JOB}"}},"applicationID":"65f1a2b3c4d5e6f708192a30",
        "app_name":"clientsrvr","app_ns":"test","service_name":"nginx","service_ns":"test",
        "job_name":"{JOB_NAME}","image":"docker.io/library/nginx:latest",
        "microservice_name":"nginx","microservice_namespace":"test","virtualization":"container",
        "code":"docker.io/library/nginx:latest","memory":{memory},"vcpus":1,"one_shot":{one_shot},
        "constraints":{constraints}}}"#
    )
}

fn worker(id: &str, memory: u64) -> WorkerRecord {
    WorkerRecord {
        id: id.into(),
        info: NodeInfo {
            id: id.into(),
            host: id.into(),
            vcpus: 4,
            memory,
            memory_total: Some(memory),
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

/// Places every due instance with best fit, like the actor does.
fn place_due(state: &mut ClusterState, now: Instant) -> Vec<InstanceKey> {
    state.place_due_with(&Algorithm::BestFit, now)
}

fn deploys(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Deploy { worker, .. } => Some(worker.clone()),
            _ => None,
        })
        .collect()
}

fn deletes(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Delete { worker, .. } => Some(worker.clone()),
            _ => None,
        })
        .collect()
}

fn report(status: DeploymentStatus) -> JobStatusReport {
    JobStatusReport {
        wire_version: WireVersion::CURRENT,
        sname: JOB_NAME.into(),
        status,
        status_detail: String::new(),
        instance: 0,
        publicip: "10.0.0.2".into(),
        restart_count: 0,
        restarting: false,
        ready: None,
    }
}

fn key() -> InstanceKey {
    (JOB.into(), 0)
}

fn deploy(state: &mut ClusterState, memory: u64, one_shot: bool, constraints: &str, now: Instant) {
    state
        .deploy(
            JOB,
            0,
            JOB_NAME,
            &service_json(memory, one_shot, constraints),
            now,
        )
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn deploy_places_reports_and_is_idempotent() {
    let mut s = ClusterState::new(timing());
    let now = Instant::now();
    s.register_worker(worker("w1", 1000), now);
    s.register_worker(worker("w2", 4000), now);
    deploy(&mut s, 800, false, "[]", now);
    assert_eq!(
        s.instance(&key()).unwrap().status,
        Status::Positive(PositiveSchedulingStatus::ClusterScheduled)
    );
    place_due(&mut s, now);
    let effects = s.take_effects();
    // best fit: the tighter worker
    assert_eq!(deploys(&effects), vec!["w1"]);
    assert_eq!(
        s.instance(&key()).unwrap().status,
        Status::Positive(PositiveSchedulingStatus::NodeScheduled)
    );
    s.job_report("w1", report(DeploymentStatus::Running), now);
    assert_eq!(s.instance(&key()).unwrap().status, Status::RUNNING);
    assert!(s.take_effects().contains(&Effect::Report(key())));
    // the root re-sends the deploy after a reconnect: reported, not deployed again
    deploy(&mut s, 800, false, "[]", now);
    assert!(place_due(&mut s, now).is_empty());
    assert_eq!(s.take_effects(), vec![Effect::Report(key())]);
    let (dirty, removed, workers) = s.take_dirty();
    assert_eq!(dirty.len(), 1);
    assert!(removed.is_empty());
    assert_eq!(workers.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_deploy_sent_before_the_worker_subscribed_is_sent_again_with_its_first_information() {
    let mut s = ClusterState::new(timing());
    let now = Instant::now();
    s.register_worker(worker("w1", 1000), now);
    deploy(&mut s, 800, false, "[]", now);
    place_due(&mut s, now);
    assert_eq!(deploys(&s.take_effects()), vec!["w1"]);
    // The worker's first information: its session is subscribed now, the deploy goes again.
    s.worker_information("w1", worker("w1", 1000).info, now);
    assert_eq!(deploys(&s.take_effects()), vec!["w1"]);
    // Later information sends nothing again, and neither does a confirmed instance.
    s.worker_information("w1", worker("w1", 1000).info, now);
    assert!(deploys(&s.take_effects()).is_empty());
    s.job_report("w1", report(DeploymentStatus::Running), now);
    s.register_worker(worker("w1", 1000), now);
    s.worker_information("w1", worker("w1", 1000).info, now);
    assert!(
        deploys(&s.take_effects()).is_empty(),
        "running: not sent again"
    );
}

#[tokio::test(start_paused = true)]
async fn a_worker_heard_from_is_not_silent_even_before_its_report_is_applied() {
    let mut s = ClusterState::new(timing());
    let t0 = Instant::now();
    s.register_worker(worker("w1", 1000), t0);
    tokio::time::advance(Duration::from_secs(8)).await;
    s.heard_from("w1", Instant::now());
    s.heard_from("w1", t0); // an older stamp never moves the time back
    tokio::time::advance(Duration::from_secs(8)).await;
    assert!(
        s.check_liveness(Instant::now()).is_empty(),
        "heard 8 s ago: alive"
    );
    tokio::time::advance(Duration::from_secs(3)).await;
    assert_eq!(s.check_liveness(Instant::now()), vec!["w1".to_string()]);
    s.heard_from("nobody", Instant::now()); // unknown workers are ignored
}

#[tokio::test(start_paused = true)]
async fn a_worker_has_a_grace_for_its_first_report_after_registering() {
    let mut s = ClusterState::new(Timing {
        first_report_grace: Duration::from_secs(20),
        ..timing()
    });
    let t0 = Instant::now();
    s.register_worker(worker("w1", 1000), t0);
    s.register_worker(worker("w2", 1000), t0);
    // w2 reports at once; w1 is still connecting to the broker (thousands registering).
    s.worker_information("w2", worker("w2", 1000).info, t0);
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(
        s.check_liveness(Instant::now()),
        vec!["w2".to_string()],
        "reported once, then silent for 11 s: inactive; w1 has not reported yet: waited for"
    );
    tokio::time::advance(Duration::from_secs(18)).await;
    assert!(
        s.check_liveness(Instant::now()).is_empty(),
        "29 s: within 10 s + 20 s"
    );
    s.worker_information("w1", worker("w1", 1000).info, Instant::now());
    // Once it has reported, the plain timeout applies to it.
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(s.check_liveness(Instant::now()), vec!["w1".to_string()]);
    // A worker that never reports is inactive after the timeout and the grace.
    s.register_worker(worker("w3", 1000), Instant::now());
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(s.check_liveness(Instant::now()), vec!["w3".to_string()]);
}

#[tokio::test(start_paused = true)]
async fn a_silent_worker_loses_its_instances_and_deletes_them_when_back() {
    let mut s = ClusterState::new(timing());
    let t0 = Instant::now();
    s.register_worker(worker("w1", 1000), t0);
    s.register_worker(worker("w2", 4000), t0);
    deploy(&mut s, 800, false, "[]", t0);
    place_due(&mut s, t0);
    s.job_report("w1", report(DeploymentStatus::Running), t0);
    s.take_effects();

    tokio::time::advance(Duration::from_secs(6)).await;
    let t1 = Instant::now();
    s.worker_information("w2", worker("w2", 4000).info, t1);
    assert!(s.check_liveness(t1).is_empty());
    tokio::time::advance(Duration::from_secs(5)).await;
    let t2 = Instant::now();
    assert_eq!(s.check_liveness(t2), vec!["w1".to_string()]);
    let i = s.instance(&key()).unwrap();
    assert_eq!(i.status, Status::Deployment(DeploymentStatus::Failed));
    assert!(i.worker_id.is_none());
    place_due(&mut s, t2);
    assert_eq!(deploys(&s.take_effects()), vec!["w2"]);
    s.job_report("w2", report(DeploymentStatus::Running), t2);

    // w1 comes back: told to delete its copy; a late report from it changes nothing
    s.worker_information("w1", worker("w1", 1000).info, t2);
    assert_eq!(deletes(&s.take_effects()), vec!["w1"]);
    s.job_report("w1", report(DeploymentStatus::Running), t2);
    assert_eq!(deletes(&s.take_effects()), vec!["w1"]);
    assert_eq!(s.instance(&key()).unwrap().worker_id.as_deref(), Some("w2"));
    // its resources report listing the instance: deleted again, never two copies kept
    s.resources_report(
        "w1",
        ResourcesReport {
            wire_version: WireVersion::CURRENT,
            services: vec![ServiceUsage {
                cpu_percent: 1.0,
                memory_percent: 1.0,
                disk: 0,
                logs: String::new(),
                job_name: JOB_NAME.into(),
                virtualization: "docker".into(),
                instance: 0,
            }],
        },
        t2,
    );
    assert_eq!(deletes(&s.take_effects()), vec!["w1"]);
}

fn usage(cpu: f64, logs: &str) -> ResourcesReport {
    ResourcesReport {
        wire_version: WireVersion::CURRENT,
        services: vec![ServiceUsage {
            cpu_percent: cpu,
            memory_percent: 2.0,
            disk: 0,
            logs: logs.into(),
            job_name: JOB_NAME.into(),
            virtualization: "docker".into(),
            instance: 0,
        }],
    }
}

fn reports(effects: &[Effect]) -> usize {
    effects
        .iter()
        .filter(|e| matches!(e, Effect::Report(_)))
        .count()
}

#[tokio::test(start_paused = true)]
async fn usage_goes_to_the_root_when_it_moves_at_most_every_interval() {
    let mut s = ClusterState::new(timing());
    let t0 = Instant::now();
    s.register_worker(worker("w1", 1000), t0);
    deploy(&mut s, 100, false, "[]", t0);
    place_due(&mut s, t0);
    s.job_report("w1", report(DeploymentStatus::Running), t0);
    s.take_effects();

    // the first usage is forwarded at once, with the log tail
    s.resources_report("w1", usage(3.0, "hello\n"), t0);
    assert_eq!(reports(&s.take_effects()), 1);
    let i = s.instance(&key()).unwrap();
    assert_eq!(i.usage.as_ref().unwrap().logs, "hello\n");
    let status = oakestra_cluster::cluster::instance_status(i);
    assert_eq!(status.cpu_percent, Some(3.0));
    assert_eq!(status.memory_percent, Some(2.0));
    assert_eq!(status.logs, "hello\n");

    // new output within the interval: kept, not forwarded yet
    tokio::time::advance(Duration::from_secs(1)).await;
    s.resources_report("w1", usage(3.0, "hello\nworld\n"), Instant::now());
    assert_eq!(reports(&s.take_effects()), 0);
    // after the interval: forwarded
    tokio::time::advance(USAGE_FORWARD_INTERVAL).await;
    s.resources_report("w1", usage(3.2, "hello\nworld\n!\n"), Instant::now());
    assert_eq!(reports(&s.take_effects()), 1);
    // nothing moved noticeably: not forwarded, however long it has been
    tokio::time::advance(USAGE_FORWARD_INTERVAL * 3).await;
    s.resources_report("w1", usage(3.5, "hello\nworld\n!\n"), Instant::now());
    assert_eq!(reports(&s.take_effects()), 0);
    // CPU moved by a point or more: forwarded
    s.resources_report("w1", usage(9.0, "hello\nworld\n!\n"), Instant::now());
    assert_eq!(reports(&s.take_effects()), 1);
}

#[tokio::test(start_paused = true)]
async fn dead_instances_are_redeployed_with_capped_backoff() {
    let mut s = ClusterState::new(timing());
    let t0 = Instant::now();
    s.register_worker(worker("w1", 1000), t0);
    deploy(&mut s, 100, false, "[]", t0);
    place_due(&mut s, t0);
    s.take_effects();
    let mut delays = Vec::new();
    for _ in 0..6 {
        // a crash loop: RUNNING, then DEAD right after
        s.job_report("w1", report(DeploymentStatus::Running), Instant::now());
        s.job_report("w1", report(DeploymentStatus::Dead), Instant::now());
        let mut waited = Duration::ZERO;
        while place_due(&mut s, Instant::now()).is_empty() {
            tokio::time::advance(Duration::from_millis(250)).await;
            waited += Duration::from_millis(250);
        }
        delays.push(waited.as_secs());
        assert_eq!(deploys(&s.take_effects()), vec!["w1"]);
    }
    assert_eq!(delays, vec![0, 1, 2, 4, 8, 8]);
    // RUNNING for longer than stable_after: the next failure is redeployed at once
    s.job_report("w1", report(DeploymentStatus::Running), Instant::now());
    tokio::time::advance(Duration::from_secs(11)).await;
    s.job_report("w1", report(DeploymentStatus::Dead), Instant::now());
    assert_eq!(place_due(&mut s, Instant::now()).len(), 1);
    assert_eq!(s.instance(&key()).unwrap().attempts, 1);
}

#[tokio::test(start_paused = true)]
async fn completed_one_shot_is_never_restarted() {
    let mut s = ClusterState::new(timing());
    let t0 = Instant::now();
    s.register_worker(worker("w1", 1000), t0);
    deploy(&mut s, 100, true, "[]", t0);
    place_due(&mut s, t0);
    s.job_report("w1", report(DeploymentStatus::Completed), t0);
    s.take_effects();
    tokio::time::advance(Duration::from_secs(60)).await;
    // even when its worker goes away
    assert_eq!(s.check_liveness(Instant::now()), vec!["w1".to_string()]);
    assert!(place_due(&mut s, Instant::now()).is_empty());
    assert_eq!(
        s.instance(&key()).unwrap().status,
        Status::Deployment(DeploymentStatus::Completed)
    );
}

#[tokio::test(start_paused = true)]
async fn no_capacity_is_reported_and_retried_when_a_worker_joins() {
    let mut s = ClusterState::new(timing());
    let t0 = Instant::now();
    s.register_worker(worker("small", 100), t0);
    deploy(&mut s, 800, false, "[]", t0);
    place_due(&mut s, t0);
    let i = s.instance(&key()).unwrap();
    assert_eq!(
        i.status,
        Status::Negative(NegativeSchedulingStatus::NoWorkerCapacity)
    );
    assert!(i.status_detail.contains("memory"), "{}", i.status_detail);
    assert!(s.take_effects().contains(&Effect::Report(key())));
    // not retried before the interval …
    assert!(place_due(&mut s, t0 + Duration::from_millis(500)).is_empty());
    // … but at once when capacity appears
    s.register_worker(worker("big", 4000), t0 + Duration::from_millis(600));
    place_due(&mut s, t0 + Duration::from_millis(600));
    assert_eq!(deploys(&s.take_effects()), vec!["big"]);
}

#[tokio::test(start_paused = true)]
async fn direct_node_constraint_is_honoured() {
    let mut s = ClusterState::new(timing());
    let t0 = Instant::now();
    s.register_worker(worker("w1", 1000), t0);
    s.register_worker(worker("w2", 4000), t0);
    deploy(&mut s, 100, false, r#"[{"type":"direct","node":"w2"}]"#, t0);
    place_due(&mut s, t0);
    assert_eq!(deploys(&s.take_effects()), vec!["w2"]);
}

#[tokio::test(start_paused = true)]
async fn direct_node_names_match_hostnames_too() {
    let mut s = ClusterState::new(timing());
    let t0 = Instant::now();
    let mut w = worker("65f1a2b3c4d5e6f708192a99", 4000);
    w.info.host = "edge-box".into();
    s.register_worker(worker("w1", 4000), t0);
    s.register_worker(w, t0);
    deploy(
        &mut s,
        100,
        false,
        r#"[{"type":"direct","node":"edge-box"}]"#,
        t0,
    );
    place_due(&mut s, t0);
    assert_eq!(deploys(&s.take_effects()), vec!["65f1a2b3c4d5e6f708192a99"]);
}

#[tokio::test(start_paused = true)]
async fn demand_is_reserved_until_the_worker_reports() {
    let mut s = ClusterState::new(timing());
    let t0 = Instant::now();
    s.register_worker(worker("w1", 1000), t0);
    s.worker_information("w1", worker("w1", 1000).info, t0);
    deploy(&mut s, 600, false, "[]", t0);
    s.deploy(JOB, 1, JOB_NAME, &service_json(600, false, "[]"), t0)
        .unwrap();
    place_due(&mut s, t0);
    // the second one does not fit next to the first on the same worker
    assert_eq!(deploys(&s.take_effects()), vec!["w1"]);
    // a fresh report that still shows the memory free does not double-book it
    s.worker_information("w1", worker("w1", 1000).info, t0 + Duration::from_secs(5));
    assert!(place_due(&mut s, t0 + Duration::from_secs(5)).len() == 1);
    assert!(deploys(&s.take_effects()).is_empty());
}

#[tokio::test(start_paused = true)]
async fn unknown_workers_and_orphans_are_told_off() {
    let mut s = ClusterState::new(timing());
    let t0 = Instant::now();
    s.worker_information("ghost", NodeInfo::default(), t0);
    assert!(
        matches!(&s.take_effects()[..], [Effect::ControlError { worker, .. }] if worker == "ghost")
    );
    s.register_worker(worker("w1", 1000), t0);
    s.job_report("w1", report(DeploymentStatus::Running), t0);
    assert_eq!(deletes(&s.take_effects()), vec!["w1"]);
}

#[tokio::test(start_paused = true)]
async fn undeploy_deletes_on_the_worker_and_on_stale_holders() {
    let mut s = ClusterState::new(timing());
    let t0 = Instant::now();
    s.register_worker(worker("w1", 1000), t0);
    deploy(&mut s, 100, false, "[]", t0);
    place_due(&mut s, t0);
    s.take_effects();
    assert_eq!(s.undeploy(JOB, None), 1);
    assert_eq!(deletes(&s.take_effects()), vec!["w1"]);
    assert!(s.instance(&key()).is_none());
    let (_, removed, _) = s.take_dirty();
    assert_eq!(removed, vec![key()]);
}

#[tokio::test(start_paused = true)]
async fn aggregate_counts_active_workers_only() {
    let mut s = ClusterState::new(timing());
    let t0 = Instant::now();
    s.register_worker(worker("w1", 1000), t0);
    tokio::time::advance(Duration::from_secs(8)).await;
    s.register_worker(worker("w2", 3000), Instant::now());
    tokio::time::advance(Duration::from_secs(3)).await;
    s.check_liveness(Instant::now());
    let a = s.aggregate();
    assert_eq!((a.workers, a.active_workers), (2, 1));
    assert_eq!(a.memory_free_mb, 3000);
    assert_eq!(a.max_worker_free_memory_mb, 3000);
    assert_eq!(a.virtualization, vec!["container".to_string()]);
    assert_eq!(a.arch, vec!["amd64".to_string()]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_copy_is_restarted_in_place_or_deleted_when_moved() {
    let mut s = ClusterState::new(timing());
    let t0 = Instant::now();
    s.register_worker(worker("w1", 1000), t0);
    // Its broker session is up (a first information re-sends unconfirmed deploys).
    s.worker_information("w1", worker("w1", 1000).info, t0);
    deploy(&mut s, 800, false, "[]", t0);
    place_due(&mut s, t0);
    s.take_effects();
    // DEAD on the only worker: redeployed there, no delete (the worker restarts it)
    s.job_report("w1", report(DeploymentStatus::Dead), t0);
    place_due(&mut s, t0);
    let effects = s.take_effects();
    assert_eq!(deploys(&effects), vec!["w1"]);
    assert!(deletes(&effects).is_empty());
    // a late UNDEPLOYED (answer to an older delete) changes nothing
    s.job_report("w1", report(DeploymentStatus::Undeployed), t0);
    assert_eq!(s.instance(&key()).unwrap().worker_id.as_deref(), Some("w1"));
    assert!(s.take_effects().is_empty());
    // FAILED while a roomier worker exists and w1 is now too small: moved, w1 deletes its copy
    s.register_worker(worker("w2", 4000), t0);
    let mut small = worker("w1", 100).info;
    small.memory_total = Some(100);
    s.worker_information("w1", small, t0);
    s.job_report("w1", report(DeploymentStatus::Failed), t0);
    tokio::time::advance(Duration::from_secs(1)).await;
    place_due(&mut s, Instant::now());
    let effects = s.take_effects();
    assert_eq!(deploys(&effects), vec!["w2"]);
    assert_eq!(deletes(&effects), vec!["w1"]);
}

fn deploy_with_policy(state: &mut ClusterState, policy: &str, now: Instant) {
    let json = service_json(100, false, "[]").replace(
        r#""one_shot":false"#,
        &format!(r#""one_shot":false,"restart_policy":"{policy}""#),
    );
    state.deploy(JOB, 0, JOB_NAME, &json, now).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_worker_restarting_under_its_policy_keeps_the_instance_until_it_gives_up() {
    let mut s = ClusterState::new(timing());
    let t0 = Instant::now();
    s.register_worker(worker("w1", 1000), t0);
    s.register_worker(worker("w2", 1000), t0);
    deploy_with_policy(&mut s, "on-failure", t0);
    place_due(&mut s, t0);
    let placed = s.instance(&key()).unwrap().worker_id.clone().unwrap();
    assert_eq!(
        s.instance(&key()).unwrap().command.restart_policy,
        Some(oakestra_core::sla::RestartPolicy::OnFailure),
        "the policy travels to the worker"
    );
    s.take_effects();
    s.job_report(&placed, report(DeploymentStatus::Running), t0);
    let restarting = JobStatusReport {
        status_detail: "exited with code 1, restart 1 in 1 s".into(),
        restarting: true,
        ..report(DeploymentStatus::Dead)
    };
    s.job_report(&placed, restarting, t0);
    let i = s.instance(&key()).unwrap();
    assert_eq!(
        i.worker_id.as_deref(),
        Some(placed.as_str()),
        "stays on its worker"
    );
    assert!(i.restarting);
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(
        place_due(&mut s, Instant::now()).is_empty(),
        "not placed again"
    );
    assert!(deploys(&s.take_effects()).is_empty());
    s.job_report(
        &placed,
        JobStatusReport {
            restart_count: 1,
            ..report(DeploymentStatus::Running)
        },
        Instant::now(),
    );
    let i = s.instance(&key()).unwrap();
    assert_eq!((i.restart_count, i.restarting), (1, false));
    let status = oakestra_cluster::cluster::instance_status(i);
    assert_eq!((status.restart_count, status.restarting), (1, false));
    // The worker gives up: FAILED is placed again, as without a policy.
    s.job_report(
        &placed,
        JobStatusReport {
            restart_count: 5,
            ..report(DeploymentStatus::Failed)
        },
        Instant::now(),
    );
    assert_eq!(s.instance(&key()).unwrap().worker_id, None);
    // A crash loop: the cluster backs off too, so the root sees FAILED before the next try.
    assert!(place_due(&mut s, Instant::now()).is_empty());
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(place_due(&mut s, Instant::now()).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn dead_under_never_is_final_and_frees_its_capacity() {
    let mut s = ClusterState::new(timing());
    let t0 = Instant::now();
    s.register_worker(worker("w1", 1000), t0);
    deploy_with_policy(&mut s, "never", t0);
    place_due(&mut s, t0);
    s.job_report("w1", report(DeploymentStatus::Running), t0);
    let before = s.candidates()[0].memory_free_mb;
    s.job_report("w1", report(DeploymentStatus::Dead), t0);
    s.take_effects();
    tokio::time::advance(Duration::from_secs(60)).await;
    assert!(place_due(&mut s, Instant::now()).is_empty());
    assert!(s.instance(&key()).unwrap().has_ended());
    assert_eq!(s.candidates()[0].memory_free_mb, before + 100);
    // Even when its worker goes away.
    assert_eq!(s.check_liveness(Instant::now()), vec!["w1".to_string()]);
    assert!(place_due(&mut s, Instant::now()).is_empty());
}
