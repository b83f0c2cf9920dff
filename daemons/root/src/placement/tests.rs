//! The placement core without a store or sessions: records and candidates in, decisions and
//! effects out.

use super::*;
use oakestra_proto::grpc::root_message::Kind;
use oakestra_sched::Algorithm;

const NOW: f64 = 1_700_000_000.0;

fn service() -> ServiceRecord {
    serde_json::from_value(serde_json::json!({
        "_id": {"$oid": "65f1a2b3c4d5e6f708192a3b"},
        "applicationID": "65f1a2b3c4d5e6f708192a30",
        "app_name": "demo", "app_ns": "test", "service_name": "nginx", "service_ns": "test",
        "job_name": "demo.test.nginx.test", "image": "busybox",
        "microservice_name": "nginx", "microservice_namespace": "test",
        "virtualization": "container", "code": "busybox", "memory": 100, "vcpus": 1
    }))
    .unwrap()
}

/// A service with instance 0 `REQUESTED` (as a deploy leaves it).
fn requested() -> ServiceRecord {
    let mut s = service();
    let n = add_requested(
        &mut s,
        "10.30.0.2".parse().unwrap(),
        "fdff::2".parse().unwrap(),
        NOW,
    );
    assert_eq!(n, 0);
    s
}

fn cluster(name: &str, location: &str) -> ClusterChoice {
    let candidate = Candidate {
        name: name.to_owned(),
        cpu_cores: 4.0,
        memory_total_mb: 4096,
        memory_free_mb: 4096,
        virtualization: vec!["container".to_owned()],
        ..Candidate::default()
    };
    (candidate, ClusterId(name.to_owned()), location.to_owned())
}

fn id(name: &str) -> ClusterId {
    ClusterId(name.to_owned())
}

fn request(s: &ServiceRecord) -> Result<PlacementRequest, ConstraintError> {
    crate::instances::placement_request(s)
}

fn kinds(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .map(|e| match e {
            Effect::Reserve(c, _) => format!("reserve {c}"),
            Effect::Release(c, _) => format!("release {c}"),
            Effect::Send(c, m) => match &m.kind {
                Some(Kind::Deploy(d)) => {
                    format!("deploy {}/{} to {c}", d.job_id, d.instance_number)
                }
                Some(Kind::Undeploy(u)) => {
                    format!(
                        "undeploy {}/{:?} to {c}: {}",
                        u.job_id, u.instance_number, u.reason
                    )
                }
                other => format!("{other:?} to {c}"),
            },
            Effect::RetryLater => "retry later".to_owned(),
        })
        .collect()
}

#[test]
fn a_new_instance_is_requested_with_its_addresses_and_the_next_number() {
    let mut s = requested();
    let n = add_requested(
        &mut s,
        "10.30.0.3".parse().unwrap(),
        "fdff::3".parse().unwrap(),
        NOW,
    );
    assert_eq!(n, 1);
    assert_eq!(s.next_instance_progressive_number, 2);
    let i = s.instance(1).unwrap();
    assert_eq!(i.status, Some(Status::REQUESTED));
    assert_eq!(i.status_detail.as_deref(), Some(WAITING));
    assert_eq!(i.instance_ip, Some("10.30.0.3".parse().unwrap()));
    assert_eq!(i.instance_ip_v6, Some("fdff::3".parse().unwrap()));
    assert_eq!(i.last_modified_timestamp, Some(NOW));
}

#[test]
fn a_placement_goes_to_the_schedulers_cluster_and_sends_deploy_after_reserving() {
    let s = requested();
    let r = request(&s);
    let cands = vec![cluster("c1", ""), cluster("c2", "48.1,11.6")];
    let plan = plan(&s, 0, Move::Place, &r, cands, &Algorithm::FirstFit).unwrap();
    assert!(
        matches!(&plan.decision, Decision::Placed { cluster, name, .. }
        if cluster.0 == "c1" && name == "c1")
    );
    assert_eq!(plan.demand.vcpus, 1.0);
    assert_eq!(plan.demand.memory_mb, 100);
    assert_eq!(plan.moved_from(), None);

    let mut stored = s.clone();
    assert!(plan.apply(&mut stored, NOW + 1.0));
    let i = stored.instance(0).unwrap();
    assert_eq!(i.cluster_id, Some(id("c1")));
    assert_eq!(i.cluster_location.as_deref(), Some("location-unknown"));
    assert_eq!(
        i.status,
        Some(PositiveSchedulingStatus::ClusterScheduled.into())
    );
    assert_eq!(i.status_detail, None);
    assert_eq!(i.last_modified_timestamp, Some(NOW + 1.0));
    assert_eq!(
        stored.status,
        Some(PositiveSchedulingStatus::ClusterScheduled.into())
    );
    let effects = plan.effects(&stored);
    assert_eq!(
        kinds(&effects),
        ["reserve c1".to_owned(), format!("deploy {}/0 to c1", s.id)]
    );
    assert_eq!(effects[0], Effect::Reserve(id("c1"), plan.demand));
}

#[test]
fn nothing_fits_leaves_the_instance_pending_with_the_reason_and_asks_for_a_retry() {
    let s = requested();
    let mut tiny = cluster("c1", "");
    tiny.0.memory_free_mb = 10;
    tiny.0.memory_total_mb = 10;
    let plan = plan(
        &s,
        0,
        Move::Place,
        &request(&s),
        vec![tiny],
        &Algorithm::BestFit,
    )
    .unwrap();
    let Decision::Unplaced { status, detail } = &plan.decision else {
        panic!(
            "placed on a cluster without the memory: {:?}",
            plan.decision
        );
    };
    assert!(matches!(status, Status::Negative(_)), "{status}");
    assert!(!detail.is_empty());
    let mut stored = s.clone();
    assert!(plan.apply(&mut stored, NOW));
    let i = stored.instance(0).unwrap();
    assert_eq!(i.cluster_id, None);
    assert_eq!(i.status, Some(*status));
    assert_eq!(i.status_detail.as_deref(), Some(detail.as_str()));
    assert_eq!(kinds(&plan.effects(&stored)), ["retry later"]);
}

#[test]
fn an_unknown_cluster_from_the_scheduler_is_target_cluster_not_found() {
    /// A scheduler that names a cluster nobody offered.
    struct Stray;
    impl Scheduler for Stray {
        fn name(&self) -> &str {
            "stray"
        }

        fn place(
            &self,
            _: &PlacementRequest,
            _: &[Candidate],
        ) -> Result<oakestra_sched::Placement, oakestra_sched::NoPlacement> {
            Ok(oakestra_sched::Placement {
                candidate: "elsewhere".to_owned(),
                index: None,
                expected_latency_ms: None,
                distance_km: None,
            })
        }
    }
    let s = requested();
    let plan = plan(
        &s,
        0,
        Move::Place,
        &request(&s),
        vec![cluster("c1", "")],
        &Stray,
    )
    .unwrap();
    assert!(
        matches!(&plan.decision, Decision::Unplaced { status, detail }
        if *status == NegativeSchedulingStatus::TargetClusterNotFound.into()
            && detail.contains("elsewhere"))
    );
}

/// Instance 0 placed on `old`, which reported it found no worker for it.
fn refused_on(old: &str) -> ServiceRecord {
    let mut s = requested();
    let i = s.instance_mut(0).unwrap();
    i.cluster_id = Some(id(old));
    i.worker_id = Some(oakestra_core::ids::WorkerId::from("w1".to_owned()));
    i.status = Some(NegativeSchedulingStatus::NoQualifiedWorkerFound.into());
    s
}

#[test]
fn a_refused_instance_moves_to_another_cluster_and_the_old_one_lets_go() {
    let s = refused_on("old");
    let old = id("old");
    let cands = vec![cluster("old", ""), cluster("new", "lab")];
    let plan = plan(
        &s,
        0,
        Move::Relocate(&old),
        &request(&s),
        cands,
        &Algorithm::FirstFit,
    )
    .unwrap();
    assert!(matches!(&plan.decision, Decision::Placed { cluster, .. } if cluster.0 == "new"));
    assert_eq!(plan.moved_from(), Some((&old, "found no qualified worker")));
    let mut stored = s.clone();
    assert!(plan.apply(&mut stored, NOW));
    let i = stored.instance(0).unwrap();
    assert_eq!(i.cluster_id, Some(id("new")));
    assert_eq!(i.cluster_location.as_deref(), Some("lab"));
    assert_eq!(i.worker_id, None, "the old cluster's report is cleared");
    assert_eq!(
        i.status_detail.as_deref(),
        Some("moved from cluster old, which found no qualified worker")
    );
    assert_eq!(i.extra[EXCLUDED_CLUSTERS], serde_json::json!(["old"]));
    assert_eq!(
        kinds(&plan.effects(&stored)),
        [
            "reserve new".to_owned(),
            format!(
                "undeploy {}/Some(0) to old: placed on another cluster: this one found no qualified worker",
                s.id
            ),
            format!("deploy {}/0 to new", s.id),
        ]
    );

    // Refused again on `new`: neither cluster is tried, so it stays where it is.
    let new = id("new");
    let mut again = stored.clone();
    again.instance_mut(0).unwrap().status =
        Some(NegativeSchedulingStatus::NoQualifiedWorkerFound.into());
    let cands = vec![cluster("old", ""), cluster("new", "lab")];
    assert!(plan_is_none(&again, &new, cands));
}

fn plan_is_none(s: &ServiceRecord, from: &ClusterId, cands: Vec<ClusterChoice>) -> bool {
    plan(
        s,
        0,
        Move::Relocate(from),
        &request(s),
        cands,
        &Algorithm::FirstFit,
    )
    .is_none()
}

#[test]
fn a_relocation_with_nowhere_else_to_go_is_no_plan() {
    let s = refused_on("old");
    assert!(plan_is_none(&s, &id("old"), vec![cluster("old", "")]));
}

#[test]
fn an_evacuation_says_the_old_cluster_was_lost() {
    let mut s = requested();
    let lost = id("lost");
    s.instance_mut(0).unwrap().cluster_id = Some(lost.clone());
    let cands = vec![cluster("c2", "")];
    let plan = plan(
        &s,
        0,
        Move::Evacuate(&lost),
        &request(&s),
        cands,
        &Algorithm::FirstFit,
    )
    .unwrap();
    let mut stored = s.clone();
    assert!(plan.apply(&mut stored, NOW));
    assert_eq!(
        stored.instance(0).unwrap().status_detail.as_deref(),
        Some("moved from cluster lost, which was lost")
    );
    assert_eq!(plan.moved_from(), Some((&lost, "lost")));
}

#[test]
fn a_plan_is_not_applied_to_an_instance_that_moved_meanwhile_or_is_gone() {
    let s = requested();
    let plan = plan(
        &s,
        0,
        Move::Place,
        &request(&s),
        vec![cluster("c1", "")],
        &Algorithm::FirstFit,
    )
    .unwrap();
    let mut moved = s.clone();
    moved.instance_mut(0).unwrap().cluster_id = Some(id("other"));
    let before = moved.clone();
    assert!(!plan.apply(&mut moved, NOW));
    assert_eq!(moved, before);
    let mut gone = s.clone();
    gone.instance_list.clear();
    assert!(!plan.apply(&mut gone, NOW));

    // A relocation no longer needed (the cluster found a worker after all) is skipped too.
    let old = id("old");
    let r = refused_on("old");
    let relocate = plan_for(&r, &old);
    let mut recovered = r.clone();
    recovered.instance_mut(0).unwrap().status = Some(DeploymentStatus::Running.into());
    assert!(!relocate.apply(&mut recovered, NOW));
}

fn plan_for<'a>(s: &ServiceRecord, old: &'a ClusterId) -> Plan<'a> {
    let cands = vec![cluster("new", "")];
    plan(
        s,
        0,
        Move::Relocate(old),
        &request(s),
        cands,
        &Algorithm::FirstFit,
    )
    .unwrap()
}

#[test]
fn undeploying_frees_what_live_instances_hold_and_tells_their_clusters() {
    let mut s = requested();
    for n in 1..4 {
        add_requested(
            &mut s,
            "10.30.0.9".parse().unwrap(),
            "fdff::9".parse().unwrap(),
            NOW,
        );
        let i = s.instance_mut(n).unwrap();
        i.cluster_id = Some(id(if n == 3 { "c2" } else { "c1" }));
        i.status = Some(DeploymentStatus::Running.into());
    }
    s.instance_mut(2).unwrap().status = Some(DeploymentStatus::Completed.into());

    assert_eq!(remove_instances(&mut s.clone(), Some(9)), Err(9));
    let mut one = s.clone();
    let gone = remove_instances(&mut one, Some(1)).unwrap();
    assert_eq!(gone.len(), 1);
    assert_eq!(one.instance_list.len(), 3);
    assert_eq!(one.status, Some(Status::RUNNING));

    let mut all = s.clone();
    let gone = remove_instances(&mut all, None).unwrap();
    assert_eq!(gone.len(), 4);
    assert!(all.instance_list.is_empty());
    assert_eq!(all.status, Some(DeploymentStatus::Undeployed.into()));
    assert_eq!(all.status_detail.as_deref(), Some("no instances"));

    let demand = Reserved {
        vcpus: 1.0,
        memory_mb: 100,
        gpus: 0,
    };
    let effects = undeploy_effects(s.id, &gone, demand);
    let reason = "undeployed by the user";
    assert_eq!(
        kinds(&effects),
        [
            // Instance 0 was never placed: nothing to tell anyone.
            "release c1".to_owned(),
            format!("undeploy {}/Some(1) to c1: {reason}", s.id),
            // Instance 2 completed: its cluster no longer counts it.
            format!("undeploy {}/Some(2) to c1: {reason}", s.id),
            "release c2".to_owned(),
            format!("undeploy {}/Some(3) to c2: {reason}", s.id),
        ]
    );

    let deleted = deleted_service_effects(&s, demand);
    let reason = "the service was deleted";
    assert_eq!(
        kinds(&deleted),
        [
            "release c1".to_owned(),
            "release c2".to_owned(),
            format!("undeploy {}/None to c1: {reason}", s.id),
            format!("undeploy {}/None to c2: {reason}", s.id),
        ]
    );
}

#[test]
fn the_retry_places_unplaced_instances_and_relocates_refused_ones_only() {
    let mut s = requested(); // 0: REQUESTED, no cluster → placed
    let statuses: [(Option<&str>, Status); 5] = [
        (
            None,
            NegativeSchedulingStatus::NoActiveClusterWithCapacity.into(),
        ), // 1 → placed
        (
            Some("c1"),
            NegativeSchedulingStatus::NoQualifiedWorkerFound.into(),
        ), // 2 → relocated
        (Some("c1"), DeploymentStatus::Running.into()), // 3 → left
        (None, DeploymentStatus::Failed.into()),        // 4 → left
        (Some("c1"), NegativeSchedulingStatus::NoNodeFound.into()), // 5 → relocated
    ];
    for (cluster, status) in statuses {
        let n = add_requested(
            &mut s,
            "10.30.0.9".parse().unwrap(),
            "fdff::9".parse().unwrap(),
            NOW,
        );
        let i = s.instance_mut(n).unwrap();
        i.cluster_id = cluster.map(id);
        i.status = Some(status);
    }
    let services = [s.clone()];
    let picked: Vec<(u32, Option<&ClusterId>, bool)> = retries(&services)
        .into_iter()
        .map(|(job, n, how)| {
            assert_eq!(job, s.id);
            (n, how.from(), matches!(how, Move::Relocate(_)))
        })
        .collect();
    let c1 = id("c1");
    assert_eq!(
        picked,
        [
            (0, None, false),
            (1, None, false),
            (2, Some(&c1), true),
            (5, Some(&c1), true)
        ]
    );

    // Losing c1 moves every instance on it but a finished one.
    s.instance_mut(3).unwrap().status = Some(DeploymentStatus::Completed.into());
    let services = [s.clone()];
    let moved: Vec<u32> = evacuations(&services, &c1)
        .iter()
        .map(|(_, n, _)| *n)
        .collect();
    assert_eq!(moved, [2, 5]);
}
