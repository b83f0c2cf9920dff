//! The cluster link over real gRPC: registration, deploy flow, pending instances, cluster loss
//! and reconnect reconciliation, addresses. Each test runs a root link in-process with a
//! `MemoryStore` and talks to it with the fake cluster of `support/fake_cluster.rs`.

#[path = "support/fake_cluster.rs"]
mod fake_cluster;

use std::time::Duration;

use fake_cluster::{Root, eventually, resources, status};
use oakestra_core::model::ServiceRecord;
use oakestra_core::status::{NegativeSchedulingStatus, PositiveSchedulingStatus, Status};
use oakestra_root::addresses;
use oakestra_root::cluster_link::LinkConfig;
use oakestra_root::grpc::proto::{ClusterMessage, cluster_message};
use oakestra_store::new_object_id;
use tonic::Code;

fn config(inactive_after: Duration) -> LinkConfig {
    LinkConfig {
        inactive_after,
        ..LinkConfig::default()
    }
}

#[tokio::test]
async fn registration_needs_a_valid_token_and_keeps_the_id_of_a_name() {
    let root = Root::start(LinkConfig::default()).await;

    let err = root.cluster("edge").token("").register().await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        err.message().contains("no token was given"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("oakestra-root token create"),
        "{}",
        err.message()
    );

    let err = root
        .cluster("edge")
        .token("oakjoin_1234567890abcdef")
        .register()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        err.message().contains("unknown or was revoked"),
        "{}",
        err.message()
    );

    let err = root.cluster("  ").register().await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let first = root.cluster("edge").register().await.unwrap();
    let again = root.cluster("edge").register().await.unwrap();
    let other = root.cluster("lab").register().await.unwrap();
    assert_eq!(first.cluster_id, again.cluster_id, "same name, same id");
    assert_ne!(first.cluster_id, other.cluster_id);
    assert_ne!(
        first.session_secret, again.session_secret,
        "new secret per registration"
    );
    assert_eq!(first.inactive_after_secs, 30);

    let stored = root.store.cluster_by_name("edge").await.unwrap().unwrap();
    assert_eq!(stored.id.0, first.cluster_id);
    assert_eq!(stored.location, "48.137,11.575");
    assert_eq!(stored.ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(stored.port, Some(10100));
    assert!(
        !stored.active,
        "active only once the session's snapshot arrived"
    );
}

#[tokio::test]
async fn a_session_needs_the_current_secret_and_a_snapshot_first() {
    let root = Root::start(LinkConfig::default()).await;
    let b = root.cluster("edge");
    let old = b.register().await.unwrap();
    let current = b.register().await.unwrap();

    let snapshot = || ClusterMessage {
        kind: Some(cluster_message::Kind::Snapshot(Default::default())),
    };
    let err = fake_cluster::FakeCluster::open(root.addr, "edge".into(), old, Some(snapshot()))
        .await
        .err()
        .expect("the secret of an older registration is refused");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        err.message().contains("call Register again"),
        "{}",
        err.message()
    );

    let first = ClusterMessage {
        kind: Some(cluster_message::Kind::Resources(resources(1, 2.0, 100))),
    };
    let mut c = fake_cluster::FakeCluster::open(root.addr, "edge".into(), current, Some(first))
        .await
        .unwrap();
    let got = c.next().await.expect("an answer");
    let status = got.expect_err("the stream fails");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("Snapshot"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn deploy_flow_reaches_running() {
    let root = Root::start(LinkConfig::default()).await;
    let mut cluster = root.cluster("edge").connect().await.unwrap();
    let services = root.create_clientsrvr().await;
    let nginx = &services[1];
    root.wait_active("edge").await;

    let outcome = root.link.deploy_instance(nginx.id).await.unwrap();
    assert!(outcome.placed);
    let inst = &outcome.instance;
    assert_eq!(inst.instance_number, 0);
    assert_eq!(
        inst.status,
        Some(PositiveSchedulingStatus::ClusterScheduled.into())
    );
    assert_eq!(
        inst.cluster_id.as_ref().map(|c| c.0.as_str()),
        Some(cluster.id.as_str())
    );
    assert_eq!(inst.cluster_location.as_deref(), Some("48.137,11.575"));
    let ip = inst.instance_ip.expect("an instance IPv4");
    assert!(ip.to_string().starts_with("10.30."), "{ip}");
    assert!(inst.instance_ip_v6.is_some());

    let deploy = cluster.expect_deploy().await;
    assert_eq!(deploy.job_id, nginx.id.to_string());
    assert_eq!(deploy.instance_number, 0);
    assert_eq!(deploy.job_name, "clientsrvr.test.nginx.test");
    let sent: ServiceRecord = serde_json::from_str(&deploy.service_json).unwrap();
    // Every address travels once, typed, in the record.
    let addresses = sent.addresses(0);
    assert_eq!(addresses.instance_ip, Some(ip));
    assert_eq!(addresses.instance_ip_v6, inst.instance_ip_v6);
    assert_eq!(addresses.rr_ip, Some("10.30.55.55".parse().unwrap()));
    // The closest IPs the root allocated travel with the deploy, as the service shows them.
    let closest = nginx.closest_ip.expect("a closest IPv4");
    assert_ne!(Some(closest), addresses.rr_ip);
    assert_eq!(addresses.closest_ip, Some(closest));
    assert_eq!(
        addresses.closest_ip_v6,
        Some(nginx.closest_ip_v6.expect("a closest IPv6"))
    );
    assert_eq!(sent.id, nginx.id);
    assert_eq!(sent.instance_list.len(), 1);
    assert_eq!(sent.microservice.code, "docker.io/library/nginx:latest");

    let s = root.service(nginx.id).await;
    assert_eq!(
        s.status,
        Some(PositiveSchedulingStatus::ClusterScheduled.into())
    );

    cluster.report(status(nginx.id, 0, "NODE_SCHEDULED")).await;
    cluster.report(status(nginx.id, 0, "RUNNING")).await;
    let s = eventually("the service to run", || async {
        let s = root.service(nginx.id).await;
        (s.status == Some(Status::RUNNING)).then_some(s)
    })
    .await;
    let i = s.instance(0).unwrap();
    assert_eq!(i.worker_id.as_ref().map(|w| w.0.as_str()), Some("worker-1"));
    assert_eq!(i.host_ip.as_deref(), Some("192.168.1.10"));
    assert_eq!(s.status_detail.as_deref(), Some("1 of 1 instances running"));

    // A second instance gets the next number and other addresses.
    let second = root.link.deploy_instance(nginx.id).await.unwrap();
    assert_eq!(second.instance.instance_number, 1);
    assert_ne!(second.instance.instance_ip, Some(ip));
    assert_eq!(cluster.expect_deploy().await.instance_number, 1);
    // RUNNING stays: one instance runs, the other is scheduled.
    assert_eq!(root.service(nginx.id).await.status, Some(Status::RUNNING));
}

#[tokio::test]
async fn an_undeploy_makes_room_at_once_without_waiting_for_the_clusters_report() {
    let root = Root::start(LinkConfig::default()).await;
    let services = root.create_clientsrvr().await;
    let nginx = &services[1]; // 1 vCPU, 100 MB
    let mut c = root
        .cluster("two-cores")
        .resources(resources(1, 2.0, 4096))
        .connect()
        .await
        .unwrap();
    for n in 0..2 {
        assert!(root.link.deploy_instance(nginx.id).await.unwrap().placed);
        assert_eq!(c.expect_deploy().await.instance_number, n);
    }
    // Both cores are reserved since the last report: the third waits.
    let third = root.link.deploy_instance(nginx.id).await.unwrap();
    assert!(!third.placed, "{:?}", third.instance);
    // Undeploying instance 1 gives its core back before the cluster reports again.
    root.link
        .undeploy_instance(nginx.id, Some(1))
        .await
        .unwrap();
    assert_eq!(c.expect_undeploy().await.instance_number, Some(1));
    let d = c.expect_deploy().await;
    assert_eq!(d.instance_number, 2);
}

#[tokio::test]
async fn no_capacity_gives_a_negative_status_and_is_retried_when_capacity_comes() {
    let root = Root::start(LinkConfig::default()).await;
    let services = root.create_clientsrvr().await;
    let nginx = &services[1];

    // No cluster at all.
    let outcome = root.link.deploy_instance(nginx.id).await.unwrap();
    assert!(!outcome.placed);
    let Some(Status::Negative(neg)) = outcome.instance.status else {
        panic!("negative status expected: {:?}", outcome.instance);
    };
    assert!(
        matches!(
            neg,
            NegativeSchedulingStatus::NoActiveClusterWithCapacity
                | NegativeSchedulingStatus::TargetClusterNotActive
        ),
        "{neg}"
    );
    assert!(
        outcome
            .instance
            .status_detail
            .as_deref()
            .is_some_and(|d| !d.is_empty())
    );
    assert!(outcome.instance.cluster_id.is_none());
    let s = root.service(nginx.id).await;
    assert_eq!(s.status, outcome.instance.status);
    assert_eq!(s.status_detail, outcome.instance.status_detail);

    // A cluster too small for nginx (100 MB) joins: still pending, with a reason.
    let mut small = root
        .cluster("small")
        .resources(resources(1, 4.0, 50))
        .connect()
        .await
        .unwrap();
    assert!(small.quiet_for(Duration::from_millis(300)).await);
    let s = root.service(nginx.id).await;
    let i = s.instance(0).unwrap();
    assert!(matches!(i.status, Some(Status::Negative(_))), "{i:?}");
    assert!(
        i.status_detail.as_deref().unwrap_or("").contains("memory"),
        "{:?}",
        i.status_detail
    );

    // It reports more memory: the instance is placed there.
    small.report_resources(resources(1, 4.0, 2048)).await;
    let d = small.expect_deploy().await;
    assert_eq!(
        (d.job_id.as_str(), d.instance_number),
        (&*nginx.id.to_string(), 0)
    );
    let s = root.service(nginx.id).await;
    assert_eq!(
        s.status,
        Some(PositiveSchedulingStatus::ClusterScheduled.into())
    );

    // Another pending instance is placed when a new cluster connects.
    let curl = &services[0];
    small.report_resources(resources(1, 4.0, 10)).await;
    eventually("the small report to be stored", || async {
        let c = root.store.cluster_by_name("small").await.unwrap()?;
        (c.resources.totals.memory_free_mb == 10).then_some(())
    })
    .await;
    let pending = root.link.deploy_instance(curl.id).await.unwrap();
    assert!(!pending.placed);
    let mut big = root.cluster("big").connect().await.unwrap();
    let d = big.expect_deploy().await;
    assert_eq!(d.job_id, curl.id.to_string());
}

#[tokio::test]
async fn a_lost_cluster_is_marked_inactive_and_its_instances_move() {
    let root = Root::start(config(Duration::from_millis(400))).await;
    let services = root.create_clientsrvr().await;
    let nginx = &services[1];
    let mut a = root.cluster("a").connect().await.unwrap();
    root.wait_active("a").await;
    let placed = root.link.deploy_instance(nginx.id).await.unwrap();
    assert_eq!(a.expect_deploy().await.instance_number, 0);
    a.report(status(nginx.id, 0, "RUNNING")).await;
    eventually("running on a", || async {
        (root.service(nginx.id).await.status == Some(Status::RUNNING)).then_some(())
    })
    .await;

    let mut b = root.cluster("b").connect().await.unwrap();
    let a_id = a.id.clone();
    a.disconnect();

    // Before the timeout nothing moves.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let s = root.service(nginx.id).await;
    assert_eq!(s.instance(0).unwrap().cluster_id.as_ref().unwrap().0, a_id);

    let d = b.expect_deploy().await;
    assert_eq!(d.instance_number, 0, "same instance number");
    let sent: ServiceRecord = serde_json::from_str(&d.service_json).unwrap();
    assert_eq!(
        sent.addresses(0).instance_ip,
        Some(placed.instance.instance_ip.unwrap()),
        "same address"
    );
    let s = root.service(nginx.id).await;
    let i = s.instance(0).unwrap();
    assert_eq!(i.cluster_id.as_ref().unwrap().0, b.id);
    assert_eq!(
        i.status,
        Some(PositiveSchedulingStatus::ClusterScheduled.into())
    );
    assert!(i.worker_id.is_none(), "the old worker is forgotten");
    assert!(i.status_detail.as_deref().unwrap().contains(&a_id));
    let a_rec = root.store.cluster_by_name("a").await.unwrap().unwrap();
    assert!(!a_rec.active);
    assert!(!root.link.is_connected(&a_rec.id));

    // `a` comes back still holding the instance: it is told to remove it.
    let mut a = root
        .cluster("a")
        .holding(vec![status(nginx.id, 0, "RUNNING")])
        .connect()
        .await
        .unwrap();
    let u = a.expect_undeploy().await;
    assert_eq!(
        (u.job_id.as_str(), u.instance_number),
        (&*nginx.id.to_string(), Some(0))
    );
    assert!(
        root.store
            .cluster_by_name("a")
            .await
            .unwrap()
            .unwrap()
            .active
    );
    // Its stale report did not touch the record.
    let s = root.service(nginx.id).await;
    assert_eq!(s.instance(0).unwrap().cluster_id.as_ref().unwrap().0, b.id);
}

#[tokio::test]
async fn a_lost_cluster_without_replacement_leaves_instances_pending_until_one_joins() {
    let root = Root::start(config(Duration::from_millis(200))).await;
    let services = root.create_clientsrvr().await;
    let nginx = &services[1];
    let mut a = root.cluster("a").connect().await.unwrap();
    root.wait_active("a").await;
    root.link.deploy_instance(nginx.id).await.unwrap();
    a.expect_deploy().await;
    a.disconnect();
    let s = eventually("the instance to be pending", || async {
        let s = root.service(nginx.id).await;
        matches!(s.instance(0)?.status, Some(Status::Negative(_))).then_some(s)
    })
    .await;
    assert!(s.instance(0).unwrap().cluster_id.is_none());
    let mut b = root.cluster("b").connect().await.unwrap();
    assert_eq!(b.expect_deploy().await.instance_number, 0);
}

#[tokio::test]
async fn reconnect_snapshot_undeploys_unknown_and_resends_missing_instances() {
    let root = Root::start(LinkConfig::default()).await;
    let services = root.create_clientsrvr().await;
    let nginx = &services[1];
    let mut c = root.cluster("edge").connect().await.unwrap();
    root.wait_active("edge").await;
    root.link.deploy_instance(nginx.id).await.unwrap();
    root.link.deploy_instance(nginx.id).await.unwrap();
    assert_eq!(c.expect_deploy().await.instance_number, 0);
    assert_eq!(c.expect_deploy().await.instance_number, 1);
    c.disconnect();

    let unknown_job = new_object_id();
    let mut c = root
        .cluster("edge")
        .holding(vec![
            status(nginx.id, 0, "RUNNING"),
            status(unknown_job, 0, "RUNNING"),
            status(nginx.id, 7, "RUNNING"),
        ])
        .connect()
        .await
        .unwrap();
    let mut undeploys = Vec::new();
    let mut deploys = Vec::new();
    for _ in 0..3 {
        match c.next().await.expect("a command").unwrap().kind.unwrap() {
            oakestra_root::grpc::proto::root_message::Kind::Deploy(d) => deploys.push(d),
            oakestra_root::grpc::proto::root_message::Kind::Undeploy(u) => undeploys.push(u),
            other => panic!("expected a Deploy or Undeploy, got {other:?}"),
        }
    }
    undeploys.sort_by(|a, b| a.job_id.cmp(&b.job_id));
    let mut expected = vec![
        (unknown_job.to_string(), None),
        (nginx.id.to_string(), Some(7)),
    ];
    expected.sort();
    let mut got: Vec<_> = undeploys
        .iter()
        .map(|u| (u.job_id.clone(), u.instance_number))
        .collect();
    got.sort();
    assert_eq!(got, expected);
    assert_eq!(deploys.len(), 1);
    assert_eq!(
        (deploys[0].job_id.as_str(), deploys[0].instance_number),
        (&*nginx.id.to_string(), 1)
    );
    let s = root.service(nginx.id).await;
    assert_eq!(s.instance(0).unwrap().status, Some(Status::RUNNING));
    assert!(c.quiet_for(Duration::from_millis(200)).await);
}

#[tokio::test]
async fn addresses_are_allocated_released_on_undeploy_and_on_service_deletion() {
    let root = Root::start(LinkConfig::default()).await;
    let services = root.create_clientsrvr().await;
    let nginx = &services[1];
    let mut c = root.cluster("edge").connect().await.unwrap();
    root.wait_active("edge").await;

    // The same rr_ip again conflicts, naming the holder.
    let mut again: Vec<ServiceRecord> = services.clone();
    for s in &mut again {
        // As submitted: only nginx names an rr_ip.
        s.id = new_object_id();
        s.rr_ip_v6 = None;
        s.closest_ip = None;
        s.closest_ip_v6 = None;
        if s.service_name == "curl" {
            s.rr_ip = None;
        }
    }
    let err = addresses::reserve_for_services(root.store.as_ref(), &mut again)
        .await
        .unwrap_err();
    assert!(matches!(err, addresses::AddressError::InUse { .. }));
    assert!(
        err.to_string().contains("clientsrvr.test.nginx.test"),
        "{err}"
    );

    let mut ips = Vec::new();
    for _ in 0..3 {
        let o = root.link.deploy_instance(nginx.id).await.unwrap();
        ips.push(o.instance.instance_ip.unwrap());
        c.expect_deploy().await;
    }
    let holder = addresses::holder_of(root.store.as_ref(), ips[1].into())
        .await
        .unwrap();
    assert!(holder.unwrap().contains("instance 1"));

    // One instance.
    assert_eq!(
        root.link
            .undeploy_instance(nginx.id, Some(1))
            .await
            .unwrap(),
        [1]
    );
    let u = c.expect_undeploy().await;
    assert_eq!(u.instance_number, Some(1));
    assert!(
        addresses::holder_of(root.store.as_ref(), ips[1].into())
            .await
            .unwrap()
            .is_none()
    );
    let err = root
        .link
        .undeploy_instance(nginx.id, Some(1))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("has no instance 1"), "{err}");

    // All the rest: every one, not every second one.
    let mut removed = root.link.undeploy_instance(nginx.id, None).await.unwrap();
    removed.sort();
    assert_eq!(removed, [0, 2]);
    let mut numbers = vec![
        c.expect_undeploy().await.instance_number,
        c.expect_undeploy().await.instance_number,
    ];
    numbers.sort();
    assert_eq!(numbers, [Some(0), Some(2)]);
    for ip in &ips {
        assert!(
            addresses::holder_of(root.store.as_ref(), (*ip).into())
                .await
                .unwrap()
                .is_none()
        );
    }
    let s = root.service(nginx.id).await;
    assert!(s.instance_list.is_empty());
    assert_eq!(
        s.status,
        Some(oakestra_core::status::DeploymentStatus::Undeployed.into())
    );

    // Deletion frees the rr_ip, so another service can take it.
    root.link.deploy_instance(nginx.id).await.unwrap();
    c.expect_deploy().await;
    let deleted = root.store.delete_service(nginx.id).await.unwrap();
    root.link.release_service(&deleted).await.unwrap();
    let u = c.expect_undeploy().await;
    assert_eq!((u.job_id, u.instance_number), (nginx.id.to_string(), None));
    let rr = "10.30.55.55".parse::<std::net::Ipv4Addr>().unwrap();
    assert!(
        addresses::holder_of(root.store.as_ref(), rr.into())
            .await
            .unwrap()
            .is_none()
    );
    // So are its closest IPs.
    let closest = deleted.closest_ip.expect("a closest IPv4");
    assert!(
        addresses::holder_of(root.store.as_ref(), closest.into())
            .await
            .unwrap()
            .is_none()
    );
    let mut taker: Vec<ServiceRecord> = vec![again[1].clone()];
    addresses::reserve_for_services(root.store.as_ref(), &mut taker)
        .await
        .unwrap();
    assert_eq!(taker[0].rr_ip, Some(rr));
}

#[tokio::test]
async fn a_burst_of_deploys_respects_capacity_until_the_next_report() {
    let root = Root::start(LinkConfig::default()).await;
    let services = root.create_clientsrvr().await;
    let nginx = &services[1]; // 1 vcpu, 100 MB
    let mut c = root
        .cluster("edge")
        .resources(resources(1, 2.0, 4096))
        .connect()
        .await
        .unwrap();
    root.wait_active("edge").await;
    let mut placed = Vec::new();
    for _ in 0..3 {
        placed.push(root.link.deploy_instance(nginx.id).await.unwrap().placed);
    }
    assert_eq!(placed, [true, true, false], "two cores, two instances");
    c.expect_deploy().await;
    c.expect_deploy().await;
    let s = root.service(nginx.id).await;
    let detail = s
        .instance(2)
        .unwrap()
        .status_detail
        .clone()
        .unwrap_or_default();
    assert!(
        detail.contains("cpu") || detail.contains("CPU") || detail.contains("core"),
        "{detail}"
    );

    // The cluster's next report shows room again (e.g. it has more workers now).
    c.report_resources(resources(2, 2.0, 4096)).await;
    assert_eq!(c.expect_deploy().await.instance_number, 2);
}

#[tokio::test]
async fn a_batch_takes_capacity_after_each_placement_and_leaves_the_rest_pending() {
    let root = Root::start(LinkConfig::default()).await;
    let services = root.create_clientsrvr().await;
    let nginx = &services[1]; // 1 vcpu, 100 MB
    let mut c = root
        .cluster("edge")
        .resources(resources(1, 2.0, 4096))
        .connect()
        .await
        .unwrap();
    root.wait_active("edge").await;
    let outcomes = root.link.deploy_instances(nginx.id, 3).await.unwrap();
    let placed: Vec<bool> = outcomes.iter().map(|o| o.placed).collect();
    assert_eq!(placed, [true, true, false], "two cores, two instances");
    assert!(matches!(
        outcomes[2].instance.status,
        Some(oakestra_core::status::Status::Negative(_))
    ));
    let mut sent = vec![
        c.expect_deploy().await.instance_number,
        c.expect_deploy().await.instance_number,
    ];
    sent.sort();
    assert_eq!(sent, [0, 1]);
    let s = root.service(nginx.id).await;
    assert_eq!(s.instance_list.len(), 3);
    // Room again: the pending one is placed by the retry, like a single deploy's.
    c.report_resources(resources(2, 2.0, 4096)).await;
    assert_eq!(c.expect_deploy().await.instance_number, 2);
}

#[tokio::test]
async fn an_instance_no_worker_of_its_cluster_qualifies_for_moves_to_another_cluster() {
    let root = Root::start(LinkConfig::default()).await;
    let services = root.create_clientsrvr().await;
    let nginx = &services[1];
    let mut a = root.cluster("a").connect().await.unwrap();
    root.wait_active("a").await;
    root.link.deploy_instance(nginx.id).await.unwrap();
    a.expect_deploy().await;
    let mut b = root.cluster("b").connect().await.unwrap();
    root.wait_active("b").await;

    a.report(status(nginx.id, 0, "NO_QUALIFIED_WORKER_FOUND"))
        .await;
    let u = a.expect_undeploy().await;
    assert_eq!(u.instance_number, Some(0));
    assert_eq!(b.expect_deploy().await.instance_number, 0);
    let s = root.service(nginx.id).await;
    let i = s.instance(0).unwrap();
    assert_eq!(i.cluster_id.as_ref().unwrap().0, b.id);
    assert_eq!(i.extra["excluded_clusters"], serde_json::json!([a.id]));

    // b cannot run it either, and a is excluded: it stays on b (which keeps trying).
    b.report(status(nginx.id, 0, "NO_QUALIFIED_WORKER_FOUND"))
        .await;
    assert!(a.quiet_for(Duration::from_millis(300)).await);
    assert!(b.quiet_for(Duration::from_millis(100)).await);
    let s = root.service(nginx.id).await;
    let i = s.instance(0).unwrap();
    assert_eq!(i.cluster_id.as_ref().unwrap().0, b.id);
    assert_eq!(
        i.status,
        Some(NegativeSchedulingStatus::NoQualifiedWorkerFound.into())
    );

    // A new cluster joins: the refused instance goes there.
    let mut c = root.cluster("c").connect().await.unwrap();
    assert_eq!(c.expect_deploy().await.instance_number, 0);
    assert_eq!(b.expect_undeploy().await.instance_number, Some(0));
    let s = root.service(nginx.id).await;
    assert_eq!(s.instance(0).unwrap().cluster_id.as_ref().unwrap().0, c.id);
    assert_eq!(
        s.instance(0).unwrap().extra["excluded_clusters"],
        serde_json::json!([a.id, b.id])
    );
}

fn service_table(
    m: Option<Result<oakestra_root::grpc::proto::RootMessage, tonic::Status>>,
) -> oakestra_root::grpc::proto::ServiceTable {
    use oakestra_root::grpc::proto::{RootMessage, root_message};
    match m {
        Some(Ok(RootMessage {
            kind: Some(root_message::Kind::ServiceTable(t)),
        })) => t,
        other => panic!("expected a ServiceTable, got {other:?}"),
    }
}

#[tokio::test]
async fn clusters_resolve_services_of_other_clusters_and_get_their_changes_pushed() {
    use oakestra_root::grpc::proto::{TableInterestRemove, TableQuery};
    let root = Root::start(LinkConfig::default()).await;
    let mut edge = root.cluster("edge").connect().await.unwrap();
    let services = root.create_clientsrvr().await;
    let nginx = &services[1];
    root.wait_active("edge").await;
    root.link.deploy_instance(nginx.id).await.unwrap();
    edge.expect_deploy().await;
    let running = |s: &str| oakestra_root::grpc::proto::InstanceStatus {
        namespace_ip: "10.18.0.66".into(),
        ..status(nginx.id, 0, s)
    };
    edge.report(running("RUNNING")).await;
    eventually("the instance running", || async {
        let s = root.service(nginx.id).await;
        (s.status == Some(Status::RUNNING)).then_some(())
    })
    .await;

    // Another cluster asks by the rr_ip: the root answers from edge's report.
    let mut far = root.cluster("far").connect().await.unwrap();
    far.send(cluster_message::Kind::TableQuery(TableQuery {
        request_id: "q1".into(),
        ip: "10.30.55.55".into(),
        ..TableQuery::default()
    }))
    .await;
    let t = service_table(far.next().await);
    assert_eq!(t.request_id, "q1");
    assert!(t.found);
    assert_eq!(t.job_name, "clientsrvr.test.nginx.test");
    assert_eq!(t.rr_ip, "10.30.55.55");
    assert_eq!(t.instances.len(), 1);
    let i = &t.instances[0];
    assert_eq!(
        (
            i.namespace_ip.as_str(),
            i.host_ip.as_str(),
            i.host_port,
            i.cluster_id.as_str()
        ),
        ("10.18.0.66", "192.168.1.10", 50103, edge.id.as_str())
    );
    // An unknown name: not found, no interest.
    far.send(cluster_message::Kind::TableQuery(TableQuery {
        request_id: "q2".into(),
        job_name: "no.such.service.here".into(),
        ..TableQuery::default()
    }))
    .await;
    let t = service_table(far.next().await);
    assert_eq!((t.request_id.as_str(), t.found), ("q2", false));

    // The instance fails on edge: far gets the new table (no instance) without asking.
    edge.report(running("FAILED")).await;
    let pushed = service_table(far.next().await);
    assert_eq!(pushed.request_id, "");
    assert!(pushed.found);
    assert!(pushed.instances.is_empty());
    // It runs again: pushed again; the same table is not pushed twice.
    edge.report(running("RUNNING")).await;
    assert_eq!(service_table(far.next().await).instances.len(), 1);
    edge.report(running("RUNNING")).await;
    assert!(far.quiet_for(Duration::from_millis(300)).await);

    // far no longer follows it: undeploying sends it nothing.
    far.send(cluster_message::Kind::TableInterestRemove(
        TableInterestRemove {
            job_name: "clientsrvr.test.nginx.test".into(),
        },
    ))
    .await;
    // An unknown interest removal is harmless.
    far.send(cluster_message::Kind::TableInterestRemove(
        TableInterestRemove {
            job_name: "never.asked.for.this".into(),
        },
    ))
    .await;
    eventually("the interest removed", || async {
        (!root.link.has_table_interest("clientsrvr.test.nginx.test")).then_some(())
    })
    .await;
    root.link.undeploy_instance(nginx.id, None).await.unwrap();
    edge.expect_undeploy().await;
    assert!(far.quiet_for(Duration::from_millis(300)).await);
}
