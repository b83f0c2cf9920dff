//! Worker overlay subnets (DESIGN.md §4.5): the real root's IPAM hands each worker a /26 and a
//! /120 (larger with the root's --worker-subnet-prefix) through the cluster at
//! `POST /api/node/register`; a worker that registers again, also after a root restart, keeps
//! them.

mod support;

use std::net::{Ipv4Addr, Ipv6Addr};

use oakestra_proto::mqtt::{NodeInfo, RegisterResponse};
use support::{Broker, ClusterProcess, RootProcess, eventually, free_port};

fn node_info(id: &str, host: &str) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        host: host.into(),
        ip: "127.0.0.1".into(),
        vcpus: 2,
        memory: 1000,
        memory_total: Some(1000),
        architecture: "amd64".into(),
        virtualization: vec!["docker".into()],
        ..NodeInfo::default()
    }
}

async fn try_register(
    cluster: &ClusterProcess,
    id: &str,
    host: &str,
    secret: &str,
) -> reqwest::Response {
    let mut info = node_info(id, host);
    info.worker_secret = secret.to_owned();
    reqwest::Client::new()
        .post(format!("{}/api/node/register", cluster.http))
        .bearer_auth(cluster.worker_token())
        .json(&info)
        .send()
        .await
        .unwrap()
}

async fn register(
    cluster: &ClusterProcess,
    id: &str,
    host: &str,
    secret: &str,
) -> RegisterResponse {
    let response = try_register(cluster, id, host, secret).await;
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.unwrap()
}

/// Registers until the answer carries a subnet (the cluster's root link comes up
/// asynchronously), returning the id and the subnets.
/// `secret` is the worker's secret before (empty for a new worker) and after: each
/// registration hands out a new one.
async fn register_with_subnet(
    cluster: &ClusterProcess,
    id: &str,
    host: &str,
    secret: &mut String,
) -> (String, Ipv4Addr, Ipv6Addr) {
    let latest = std::sync::Mutex::new(secret.clone());
    let out = eventually(&format!("a subnet for worker {host}"), || async {
        let given = latest.lock().unwrap().clone();
        let r = register(cluster, id, host, &given).await;
        *latest.lock().unwrap() = r.worker_secret.clone();
        Some((r.id, r.subnet?, r.subnet_v6?))
    })
    .await;
    *secret = latest.into_inner().unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_get_their_subnet_from_the_root_and_keep_it() {
    let root_dir = tempfile::tempdir().unwrap();
    let cluster_dir = tempfile::tempdir().unwrap();
    let mut root = RootProcess::start(root_dir.path());
    let cluster = ClusterProcess::start(
        "subnets",
        cluster_dir.path(),
        Broker::Embedded(free_port()),
        Some((root.grpc.clone(), root.join_token())),
        &[],
    )
    .await;

    let mut a_secret = String::new();
    let (a, a4, a6) = register_with_subnet(&cluster, "", "worker-a", &mut a_secret).await;
    let (b, b4, b6) = register_with_subnet(&cluster, "", "worker-b", &mut String::new()).await;
    assert_ne!(a, b);
    for (v4, v6) in [(a4, a6), (b4, b6)] {
        let o = v4.octets();
        assert!(
            (18..=29).contains(&o[1]) && o[0] == 10,
            "{v4} is a worker /26"
        );
        assert_eq!(o[3] % 64, 0, "{v4} is the base of a /26");
        assert_eq!(v6.octets()[15], 0, "{v6} is the base of a /120");
        assert_eq!(v6.segments()[0] & 0xfe00, 0xfc00, "{v6} is in fc00::/7");
    }
    assert_ne!(a4, b4, "two workers never share a /26");
    assert_ne!(a6, b6, "two workers never share a /120");

    // Registering again with the same id needs that worker's secret (issue 19): the join
    // token alone does not take over another worker's identity.
    for wrong in ["", "guess"] {
        let refused = try_register(&cluster, &a, "intruder", wrong).await;
        assert_eq!(refused.status().as_u16(), 409);
        assert!(refused.text().await.unwrap().contains("secret"));
    }
    // With it: same subnets.
    let again = register(&cluster, &a, "worker-a", &a_secret).await;
    assert_eq!(again.id, a);
    assert_eq!((again.subnet, again.subnet_v6), (Some(a4), Some(a6)));
    assert_ne!(
        again.worker_secret, a_secret,
        "each registration gives a new secret"
    );
    let mut a_secret = again.worker_secret;

    // The root persisted the assignment: after a restart the worker still gets its subnets, and
    // a new worker gets different ones.
    root.restart();
    let (a_again, a4_again, a6_again) =
        register_with_subnet(&cluster, &a, "worker-a", &mut a_secret).await;
    assert_eq!((a_again, a4_again, a6_again), (a.clone(), a4, a6));
    let (_, c4, c6) = register_with_subnet(&cluster, "", "worker-c", &mut String::new()).await;
    assert!(c4 != a4 && c4 != b4 && c6 != a6 && c6 != b6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_larger_worker_subnet_applies_to_new_workers_and_existing_ones_keep_theirs() {
    let root_dir = tempfile::tempdir().unwrap();
    let cluster_dir = tempfile::tempdir().unwrap();
    let mut root = RootProcess::start(root_dir.path());
    let cluster = ClusterProcess::start(
        "sizes",
        cluster_dir.path(),
        Broker::Embedded(free_port()),
        Some((root.grpc.clone(), root.join_token())),
        &[],
    )
    .await;
    let mut secret = String::new();
    let (a, a4, a6) = register_with_subnet(&cluster, "", "worker-a", &mut secret).await;
    let first = register(&cluster, &a, "worker-a", &secret).await;
    let mut secret = first.worker_secret.clone();
    // A /26 answer is what a worker before subnet sizes reads: no prefix field.
    assert_eq!(first.subnet_prefix_len, None);

    root.restart_with(&["--worker-subnet-prefix", "24"]);
    // worker-a keeps its /26.
    let (_, a4_again, a6_again) = register_with_subnet(&cluster, &a, "worker-a", &mut secret).await;
    assert_eq!((a4_again, a6_again), (a4, a6));
    assert_eq!(
        register(&cluster, &a, "worker-a", &secret)
            .await
            .subnet_prefix_len,
        None
    );
    // A new worker gets an aligned /24 and the /118 that goes with it.
    let b = eventually("a subnet for worker-b", || async {
        let r = register(&cluster, "", "worker-b", "").await;
        r.subnet.is_some().then_some(r)
    })
    .await;
    assert_eq!(b.subnet_prefix_len, Some(24));
    let (b4, b6) = (b.subnet.unwrap(), b.subnet_v6.unwrap());
    assert_eq!(b4.octets()[3], 0, "{b4} is the base of a /24");
    assert_eq!(u128::from(b6) & 0x3ff, 0, "{b6} is the base of a /118");
    assert!(
        a4.octets()[..3] != b4.octets()[..3],
        "{b4}/24 does not overlap {a4}/26"
    );
    // And keeps it across registrations.
    let again = register(&cluster, &b.id, "worker-b", &b.worker_secret).await;
    assert_eq!(
        (again.subnet, again.subnet_v6, again.subnet_prefix_len),
        (Some(b4), Some(b6), Some(24))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_root_a_worker_registers_without_a_subnet() {
    let cluster_dir = tempfile::tempdir().unwrap();
    let cluster = ClusterProcess::start(
        "alone",
        cluster_dir.path(),
        Broker::Embedded(free_port()),
        None,
        &[],
    )
    .await;
    let r = register(&cluster, "", "worker-x", "").await;
    assert!(!r.id.is_empty());
    assert_eq!((r.subnet, r.subnet_v6), (None, None));
}
