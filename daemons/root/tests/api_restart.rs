//! Restart safety: SIGKILL the root in the middle of a burst of creates, restart it on the
//! same data dir, and find every acknowledged application, service, user, instance and
//! cluster intact (and nothing half-created).

#[macro_use]
mod api_common;
#[path = "support/fake_cluster.rs"]
mod fake_cluster;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api_common::{Backend, Root, clientsrvr_named};
use fake_cluster::{FakeClusterBuilder, eventually, resources, status};
use oakestra_client::{Client, NewUser};
use oakestra_root::grpc::proto::cluster_link_client::ClusterLinkClient;
use oakestra_root::grpc::proto::{RegisterRequest, RootMessage, root_message};
use tokio::sync::Mutex;

/// Every acknowledged creation.
#[derive(Default)]
struct Acked {
    /// application name → (id, service ids)
    apps: BTreeMap<String, (String, Vec<String>)>,
    users: Vec<String>,
    /// (service id, instance number) → the cluster the deploy answer placed it on
    instances: BTreeMap<(String, u32), String>,
    /// cluster name → id from its `RegisterReply`
    clusters: BTreeMap<String, String>,
}

/// The burst must get at least this far before the kill, so the kill lands mid-work.
const MIN_APPS: usize = 40;
const MIN_INSTANCES: usize = 10;
const MIN_CLUSTERS: usize = 5;

/// `Register` over gRPC; `None` once the root is gone.
async fn register_cluster(grpc: SocketAddr, name: &str, token: &str) -> Option<String> {
    let mut client = ClusterLinkClient::connect(format!("http://{grpc}"))
        .await
        .ok()?;
    let reply = client
        .register(RegisterRequest {
            name: name.to_owned(),
            location: "48.137,11.575".into(),
            join_token: token.to_owned(),
            manager_address: String::new(),
            manager_port: 10100,
            network_port: 10110,
            version: "test".into(),
        })
        .await
        .ok()?;
    Some(reply.into_inner().cluster_id)
}

/// A fake cluster named `edge` with room for every instance of the burst.
fn edge(grpc: SocketAddr, token: &str) -> FakeClusterBuilder {
    FakeClusterBuilder {
        addr: grpc,
        name: "edge".into(),
        token: token.to_owned(),
        resources: resources(100, 64.0, 1 << 20),
        instances: Vec::new(),
    }
}

async fn burst_then_kill(root: &mut Root) {
    let admin = Arc::new(root.admin().await);
    // Instances need an active cluster to be placed on: a fake one over the real gRPC link.
    let token = admin
        .create_join_token(Some("restart"))
        .await
        .unwrap()
        .token;
    let edge_cluster = edge(root.grpc, &token).connect().await.unwrap();
    let edge_id = edge_cluster.id.clone();
    eventually("the edge cluster to be active", || async {
        let active = admin.active_clusters().await.unwrap();
        active.iter().any(|c| c.id == edge_id).then_some(())
    })
    .await;

    let acked = Arc::new(Mutex::new(Acked::default()));
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..8 {
        let admin = Arc::clone(&admin);
        let acked = Arc::clone(&acked);
        workers.push(tokio::spawn(async move {
            for i in 0..10_000 {
                if started.elapsed() > Duration::from_secs(20) {
                    break;
                }
                let name = format!("w{w}n{i}");
                if w == 0 && i % 3 == 0 {
                    let user = format!("user{i}");
                    match admin
                        .register(&NewUser {
                            name: user.clone(),
                            password: "pw".into(),
                            email: String::new(),
                            roles: vec![],
                        })
                        .await
                    {
                        Ok(_) => acked.lock().await.users.push(user),
                        Err(_) => break,
                    }
                }
                let app = match admin
                    .create_applications(&clientsrvr_named(&name, false))
                    .await
                {
                    Ok(apps) => apps
                        .into_iter()
                        .find(|a| a.application_name == name)
                        .expect("the answer lists the new application"),
                    // The root is gone.
                    Err(_) => break,
                };
                let services: Vec<String> =
                    app.microservices.iter().map(ToString::to_string).collect();
                acked
                    .lock()
                    .await
                    .apps
                    .insert(name, (app.id.to_string(), services.clone()));
                if i % 2 == 0 {
                    match admin.deploy_instance(&services[0]).await {
                        Ok(answer) => {
                            let instance = answer.instance.expect("the instance in the answer");
                            let cluster = instance
                                .cluster_id
                                .map(|c| c.to_string())
                                .expect("the instance is placed on the edge cluster");
                            acked
                                .lock()
                                .await
                                .instances
                                .insert((services[0].clone(), instance.instance_number), cluster);
                        }
                        Err(_) => break,
                    }
                }
            }
        }));
    }
    // Clusters joining over gRPC during the burst.
    let registrar = {
        let acked = Arc::clone(&acked);
        let (grpc, token) = (root.grpc, token.clone());
        tokio::spawn(async move {
            for i in 0..10_000 {
                if started.elapsed() > Duration::from_secs(20) {
                    break;
                }
                let name = format!("site{i}");
                match register_cluster(grpc, &name, &token).await {
                    Some(id) => {
                        acked.lock().await.clusters.insert(name, id);
                    }
                    None => break,
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // Kill once a good number of creates went through, in the middle of the burst.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        {
            let a = acked.lock().await;
            if (a.apps.len() >= MIN_APPS
                && a.instances.len() >= MIN_INSTANCES
                && a.clusters.len() >= MIN_CLUSTERS)
                || Instant::now() >= deadline
            {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    root.kill();
    for w in workers {
        w.await.unwrap();
    }
    registrar.await.unwrap();
    let acked = std::mem::take(&mut *acked.lock().await);
    assert!(
        acked.apps.len() >= MIN_APPS
            && acked.instances.len() >= MIN_INSTANCES
            && acked.clusters.len() >= MIN_CLUSTERS,
        "the burst was too slow: {} apps, {} instances, {} clusters",
        acked.apps.len(),
        acked.instances.len(),
        acked.clusters.len()
    );
    drop(edge_cluster);

    root.restart();
    let client = Client::new(&root.url).unwrap();
    client.login("Admin", "Admin").await.unwrap();
    let apps = client.applications().await.unwrap();
    let by_name: BTreeMap<&str, _> = apps
        .iter()
        .map(|a| (a.application_name.as_str(), a))
        .collect();
    for (name, (id, services)) in &acked.apps {
        let app = by_name
            .get(name.as_str())
            .unwrap_or_else(|| panic!("acknowledged application {name} is lost"));
        assert_eq!(&app.id.to_string(), id);
        let stored: Vec<String> = app.microservices.iter().map(ToString::to_string).collect();
        assert_eq!(&stored, services, "{name}");
        let services = client.application_services(id).await.unwrap();
        assert_eq!(services.len(), 2, "{name} lost services");
    }
    // Whatever was in flight is either complete or absent: no half-created application.
    for app in &apps {
        let services = client
            .application_services(&app.id.to_string())
            .await
            .unwrap();
        assert_eq!(
            services.len(),
            2,
            "{} is half-created",
            app.application_name
        );
    }
    assert_eq!(client.services().await.unwrap().len(), apps.len() * 2);
    let users: Vec<String> = client
        .users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    for u in &acked.users {
        assert!(users.contains(u), "acknowledged user {u} is lost");
        let c = Client::new(&root.url).unwrap();
        c.login(u, "pw").await.unwrap();
    }

    // Every acknowledged instance is still there, on the cluster it was placed on, once.
    for ((service, n), cluster) in &acked.instances {
        let record = client.service(service).await.unwrap();
        let numbers: Vec<u32> = record
            .instance_list
            .iter()
            .map(|i| i.instance_number)
            .collect();
        let distinct: BTreeSet<u32> = numbers.iter().copied().collect();
        assert_eq!(numbers.len(), distinct.len(), "{service}: {numbers:?}");
        let instance = record
            .instance(*n)
            .unwrap_or_else(|| panic!("acknowledged instance {service}#{n} is lost"));
        assert_eq!(
            instance
                .cluster_id
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            Some(cluster.as_str()),
            "{service}#{n} lost its placement"
        );
    }
    // Every acknowledged cluster is still registered under its id.
    let clusters: BTreeMap<String, String> = client
        .clusters()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.cluster_name, c.id))
        .collect();
    assert_eq!(clusters.get("edge"), Some(&edge_id), "{clusters:?}");
    for (name, id) in &acked.clusters {
        assert_eq!(
            clusters.get(name),
            Some(id),
            "acknowledged cluster {name} is lost or changed its id: {clusters:?}"
        );
    }

    // The edge cluster reconnects holding the acknowledged instances: the root adopts them
    // (they become RUNNING) and tells it to undeploy none of them, i.e. it still knows them.
    let held: Vec<_> = acked
        .instances
        .keys()
        .map(|(service, n)| status(service, *n, "RUNNING"))
        .collect();
    let mut edge_cluster = edge(root.grpc, &token)
        .holding(held)
        .connect()
        .await
        .unwrap();
    assert_eq!(edge_cluster.id, edge_id, "the edge cluster got a new id");
    for (service, n) in acked.instances.keys() {
        eventually(&format!("{service}#{n} to be RUNNING"), || async {
            let record = client.service(service).await.unwrap();
            let status = record.instance(*n)?.status?;
            (status.to_string() == "RUNNING").then_some(())
        })
        .await;
    }
    while let Some(command) = edge_cluster.next_within(Duration::from_millis(500)).await {
        if let Ok(RootMessage {
            kind: Some(root_message::Kind::Undeploy(u)),
        }) = command
        {
            let key = (u.job_id.clone(), u.instance_number.unwrap_or(u32::MAX));
            assert!(
                u.instance_number.is_some() && !acked.instances.contains_key(&key),
                "the restarted root undeploys an acknowledged instance: {u:?}"
            );
        }
    }
}

async fn sigkill_during_creates_loses_nothing_acknowledged(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut root = Root::start_on(dir.path(), backend).await;
    burst_then_kill(&mut root).await;
}

/// Issue 19, item 4: a 300-application descriptor cut by SIGKILL at several points of its
/// request leaves all 300 applications after the restart or none (it left 275 of 300 when
/// each application was its own commit). Redb only: MongoDB without a replica set has no
/// multi-document commit, which the README says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_multi_application_create_leaves_all_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut root = Root::start_on(dir.path(), Backend::Redb).await;
    let mut outcomes = Vec::new();
    for (trial, delay_ms) in [5u64, 30, 80, 200, 500].into_iter().enumerate() {
        let admin = root.admin().await;
        let token = admin.access_token().await.unwrap();
        let mut descriptor = api_common::one_service_app("x", "web", None);
        let template = descriptor["applications"][0].clone();
        descriptor["applications"] = (0..300)
            .map(|i| {
                let mut app = template.clone();
                app["application_name"] = format!("t{trial}a{i}").into();
                app
            })
            .collect();
        let raw = root.raw();
        let body = descriptor.to_string();
        // A connection cut by the kill is no answer (`None`).
        let create = tokio::spawn(async move {
            let answer = raw
                .http
                .post(format!("{}/api/application", raw.base))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            answer.ok().map(|r| r.status().as_u16())
        });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        root.kill();
        let answered = create.await.unwrap();
        root.restart();
        let admin = root.admin().await;
        let prefix = format!("t{trial}a");
        let stored = admin
            .applications()
            .await
            .unwrap()
            .iter()
            .filter(|a| a.application_name.starts_with(&prefix))
            .count();
        assert!(
            stored == 0 || stored == 300,
            "trial {trial} (kill after {delay_ms} ms): {stored} of 300 applications exist"
        );
        if answered == Some(200) {
            assert_eq!(stored, 300, "an acknowledged create lost applications");
        }
        outcomes.push(stored);
    }
    // The descriptor still goes through whole after all of that.
    let admin = root.admin().await;
    let mut descriptor = api_common::one_service_app("x", "web", None);
    let template = descriptor["applications"][0].clone();
    descriptor["applications"] = (0..300)
        .map(|i| {
            let mut app = template.clone();
            app["application_name"] = format!("final{i}").into();
            app
        })
        .collect();
    let (status, body) = root
        .raw()
        .post(
            "/api/application",
            Some(&admin.access_token().await.unwrap()),
            &descriptor.to_string(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    eprintln!("applications found after each kill: {outcomes:?}");
}

on_every_backend!(sigkill_during_creates_loses_nothing_acknowledged);
