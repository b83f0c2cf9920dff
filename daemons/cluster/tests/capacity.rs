//! Reservation-based capacity in the cluster's state machine (paused clock, no broker or
//! store): a busy worker still takes work, reservations decide what fits, an undeploy frees
//! room at once, and a restart (state restored from the stored instances) keeps them.

use std::time::Duration;

use oakestra_cluster::state::{ClusterState, Effect, Timing, WorkerRecord};
use oakestra_core::status::{NegativeSchedulingStatus, Status};
use oakestra_proto::mqtt::NodeInfo;
use oakestra_sched::Algorithm;
use oakestra_sched::capacity::{CapacityMode, CapacityPolicy};
use tokio::time::Instant;

const JOB: &str = "65f1a2b3c4d5e6f708192a3b";
const JOB_NAME: &str = "app.test.web.test";

/// A 2-core, 4 GB worker whose CPU is measured at `cpu_percent`.
fn busy_worker(cpu_percent: f64) -> WorkerRecord {
    WorkerRecord {
        id: "w1".into(),
        info: NodeInfo {
            id: "w1".into(),
            host: "w1".into(),
            vcpus: 2,
            cpu_percent,
            memory: 3500,
            memory_total: Some(4096),
            architecture: "amd64".into(),
            virtualization: vec!["docker".into()],
            overlay_mtu: Some(1360),
            ..NodeInfo::default()
        },
        mqtt_password_sha256: String::new(),
    }
}

/// Deploys instance `n` of a 1-vCPU, 100 MB service.
fn deploy(s: &mut ClusterState, n: u32, now: Instant) {
    let service = format!(
        r#"{{"_id":{{"$oid":"{JOB}"}},"applicationID":"65f1a2b3c4d5e6f708192a30",
        "app_name":"app","app_ns":"test","service_name":"web","service_ns":"test",
        "job_name":"{JOB_NAME}","image":"reg/web:1","microservice_name":"web",
        "microservice_namespace":"test","virtualization":"container","code":"reg/web:1",
        "memory":100,"vcpus":1}}"#
    );
    s.deploy(JOB, n, JOB_NAME, &service, now).unwrap();
}

/// Places every due instance with best fit, as the actor does; returns the deploys sent.
fn place_due(s: &mut ClusterState, now: Instant) -> usize {
    s.place_due_with(&Algorithm::BestFit, now);
    s.take_effects()
        .iter()
        .filter(|e| matches!(e, Effect::Deploy { .. }))
        .count()
}

fn status(s: &ClusterState, n: u32) -> Status {
    s.instance(&(JOB.to_owned(), n)).unwrap().status
}

fn timing() -> Timing {
    Timing {
        unplaced_retry: Duration::from_secs(2),
        ..Timing::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_worker_at_full_measured_load_with_nothing_reserved_takes_a_one_vcpu_instance() {
    let mut s = ClusterState::new(timing());
    let t0 = Instant::now();
    s.register_worker(busy_worker(100.0), t0);
    deploy(&mut s, 0, t0);
    assert_eq!(place_due(&mut s, t0), 1);
    // The cluster's aggregate says so too (what the root schedules on), and still shows the
    // measured load.
    let a = s.aggregate();
    assert!((a.max_worker_free_vcpus - 1.0).abs() < 1e-9, "{a:?}");
    assert!((a.cpu_usage_percent - 100.0).abs() < 1e-9, "{a:?}");
}

#[tokio::test(start_paused = true)]
async fn usage_mode_refuses_a_busy_worker_as_oakestra_does() {
    let mut s = ClusterState::new(timing());
    s.set_capacity(CapacityPolicy {
        mode: CapacityMode::Usage,
        ..CapacityPolicy::default()
    });
    let t0 = Instant::now();
    s.register_worker(busy_worker(100.0), t0);
    deploy(&mut s, 0, t0);
    assert_eq!(place_due(&mut s, t0), 0);
    assert_eq!(
        status(&s, 0),
        Status::Negative(NegativeSchedulingStatus::NoWorkerCapacity)
    );
}

#[tokio::test(start_paused = true)]
async fn two_fit_on_two_cores_the_third_waits_and_is_placed_when_one_is_undeployed() {
    let mut s = ClusterState::new(timing());
    let t0 = Instant::now();
    s.register_worker(busy_worker(0.0), t0);
    // Its first report after registering (which re-sends unconfirmed deploys) comes now.
    s.worker_information("w1", busy_worker(0.0).info, t0);
    for n in 0..3 {
        deploy(&mut s, n, t0);
    }
    assert_eq!(place_due(&mut s, t0), 2);
    assert_eq!(
        status(&s, 2),
        Status::Negative(NegativeSchedulingStatus::NoWorkerCapacity)
    );
    let detail = &s.instance(&(JOB.to_owned(), 2)).unwrap().status_detail;
    assert!(detail.contains("lack CPU"), "{detail}");
    // An idle worker report changes nothing: the cores are reserved.
    let t1 = t0 + Duration::from_secs(5);
    s.worker_information("w1", busy_worker(0.0).info, t1);
    assert_eq!(place_due(&mut s, t1), 0);
    // Undeploying instance 0 frees its core; the third is placed at once.
    s.undeploy(JOB, Some(0));
    assert_eq!(place_due(&mut s, t1), 1);
}

#[tokio::test(start_paused = true)]
async fn a_restart_keeps_the_reservations() {
    let mut s = ClusterState::new(timing());
    let t0 = Instant::now();
    s.register_worker(busy_worker(0.0), t0);
    for n in 0..2 {
        deploy(&mut s, n, t0);
    }
    assert_eq!(place_due(&mut s, t0), 2);
    // What the store holds after the actor persisted the state.
    let workers: Vec<WorkerRecord> = s.workers().map(|w| w.record.clone()).collect();
    let instances = s.instances().cloned().collect();
    let mut restored = ClusterState::restore(timing(), workers, instances, t0);
    let free: f64 = restored.candidates().iter().map(|c| c.free_vcpus()).sum();
    assert!(
        free.abs() < 1e-9,
        "reservations lost on restart: {free} cores free"
    );
    deploy(&mut restored, 2, t0);
    assert_eq!(place_due(&mut restored, t0), 0);
}

#[tokio::test(start_paused = true)]
async fn the_overload_guard_keeps_a_saturated_worker_out() {
    let mut s = ClusterState::new(timing());
    s.set_capacity(CapacityPolicy {
        max_load_percent: Some(95.0),
        ..CapacityPolicy::default()
    });
    let t0 = Instant::now();
    s.register_worker(busy_worker(99.0), t0);
    deploy(&mut s, 0, t0);
    assert_eq!(place_due(&mut s, t0), 0);
    // Load drops: the next report makes room (retried after the interval).
    let t1 = t0 + Duration::from_secs(3);
    s.worker_information("w1", busy_worker(20.0).info, t1);
    assert_eq!(place_due(&mut s, t1), 1);
}

#[tokio::test(start_paused = true)]
async fn the_worker_list_for_the_root_shows_reservations_and_what_is_left() {
    let mut s = ClusterState::new(timing());
    s.set_capacity(CapacityPolicy {
        system_reserved_vcpus: 0.5,
        system_reserved_memory_mb: 500,
        ..CapacityPolicy::default()
    });
    let t0 = Instant::now();
    s.register_worker(busy_worker(40.0), t0);
    deploy(&mut s, 0, t0);
    assert_eq!(place_due(&mut s, t0), 1);
    tokio::time::advance(Duration::from_secs(3)).await;

    let list = oakestra_cluster::workers_report::worker_summaries(&s, Instant::now());
    assert_eq!(list.len(), 1);
    let w = &list[0];
    assert_eq!((w.id.as_str(), w.host.as_str()), ("w1", "w1"));
    assert!(w.active);
    assert_eq!(w.seconds_since_report, 3.0);
    assert_eq!(w.instances, 1);
    assert_eq!((w.cpu_cores, w.cpu_usage_percent), (2.0, 40.0));
    // 2 cores − 0.5 system − 1 reserved.
    assert_eq!((w.vcpus_reserved, w.vcpus_allocatable), (1.0, 0.5));
    // 4096 MB − 500 system − 100 reserved, capped by nothing (3500 measured free).
    assert_eq!(w.memory_reserved_mb, 100);
    assert_eq!(w.memory_allocatable_mb, 3496);
    assert_eq!((w.memory_total_mb, w.memory_free_mb), (4096, 3500));
    assert_eq!(w.arch, "amd64");
    // The overlay MTU it registered with; a report that does not say keeps it.
    assert_eq!(w.overlay_mtu, 1360);
    let mut silent = busy_worker(40.0).info;
    silent.overlay_mtu = None;
    s.worker_information("w1", silent, Instant::now());
    let w = &oakestra_cluster::workers_report::worker_summaries(&s, Instant::now())[0];
    assert_eq!(w.overlay_mtu, 1360);

    // Undeployed: nothing reserved, and the list still shows the worker.
    s.undeploy(JOB, Some(0));
    let w = &oakestra_cluster::workers_report::worker_summaries(&s, Instant::now())[0];
    assert_eq!(
        (w.instances, w.vcpus_reserved, w.vcpus_allocatable),
        (0, 0.0, 1.5)
    );
}
