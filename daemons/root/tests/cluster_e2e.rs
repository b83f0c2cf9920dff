//! End to end: the real `oakestra-root` binary (embedded redb store) driven over HTTP with
//! `oakestra-client`, and the fake cluster over gRPC.

#[path = "support/fake_cluster.rs"]
mod fake_cluster;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fake_cluster::{FakeCluster, FakeClusterBuilder, eventually, resources, status};
use oakestra_core::status::{PositiveSchedulingStatus, Status};
use oakestra_root::tokens;

const CLIENTSRVR: &str = include_str!("../../../examples/sla-clientsrvr-container.json");

struct RootProcess {
    child: Child,
    rest: String,
    grpc: SocketAddr,
}

impl RootProcess {
    fn start(data_dir: &Path) -> RootProcess {
        Self::start_with_timeout(data_dir, "30s")
    }

    fn start_with_timeout(data_dir: &Path, cluster_timeout: &str) -> RootProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_oakestra-root"))
            .args(["--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"])
            .args(["--cluster-timeout", cluster_timeout])
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .env_remove("OAKESTRA_ROOT_CONFIG")
            .env_remove("OAKESTRA_ROOT_STORE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start oakestra-root");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut rest, mut grpc) = (None, None);
        while rest.is_none() || grpc.is_none() {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("oakestra-root prints its addresses");
            if let Some(url) = line.strip_prefix("oakestra-root: REST API listening on ") {
                rest = Some(url.trim().to_owned());
            }
            if let Some(addr) = line.strip_prefix("oakestra-root: cluster gRPC listening on ") {
                grpc = Some(addr.trim().parse().unwrap());
            }
        }
        RootProcess {
            child,
            rest: rest.unwrap(),
            grpc: grpc.unwrap(),
        }
    }

    async fn admin(&self) -> oakestra_client::Client {
        let c = oakestra_client::Client::new(&self.rest).unwrap();
        c.login("Admin", "Admin").await.unwrap();
        c
    }

    fn cluster(&self, name: &str, token: &str) -> FakeClusterBuilder {
        FakeClusterBuilder {
            addr: self.grpc,
            name: name.to_owned(),
            token: token.to_owned(),
            resources: resources(1, 4.0, 4096),
            instances: Vec::new(),
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RootProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn service_status(client: &oakestra_client::Client, id: &str) -> Option<Status> {
    client.service(id).await.unwrap().status
}

#[tokio::test]
async fn service_to_running_instance_through_the_real_binary() {
    let dir = tempfile::tempdir().unwrap();
    let mut root = RootProcess::start(dir.path());

    // 1-DOC: the bootstrap token file is there, and a cluster joins with it.
    let token = tokens::read_bootstrap_token(dir.path()).expect("bootstrap token file");
    let mut cluster: FakeCluster = root.cluster("edge", &token).connect().await.unwrap();

    let admin = root.admin().await;
    let apps = admin
        .create_applications(&serde_json::from_str::<serde_json::Value>(CLIENTSRVR).unwrap())
        .await
        .unwrap();
    let services = admin
        .application_services(&apps[0].id.to_string())
        .await
        .unwrap();
    let nginx = services
        .iter()
        .find(|s| s.service_name == "nginx")
        .unwrap()
        .id
        .to_string();
    let clusters = eventually("the cluster to be active", || async {
        let cs = admin.clusters().await.unwrap();
        cs.iter().any(|c| c.active).then_some(cs)
    })
    .await;
    assert_eq!(clusters[0].cluster_name, "edge");

    let answer = admin.deploy_instance(&nginx).await.unwrap();
    let instance = answer.instance.expect("the instance in the answer");
    assert_eq!(
        instance.status,
        Some(PositiveSchedulingStatus::ClusterScheduled.into())
    );
    let deploy = cluster.expect_deploy().await;
    assert_eq!(deploy.job_id, nginx);
    let sent: oakestra_core::model::ServiceRecord =
        serde_json::from_str(&deploy.service_json).unwrap();
    assert_eq!(sent.rr_ip, Some("10.30.55.55".parse().unwrap()));
    cluster.report(status(&nginx, 0, "RUNNING")).await;
    eventually("RUNNING over REST", || async {
        (service_status(&admin, &nginx).await == Some(Status::RUNNING)).then_some(())
    })
    .await;

    // Undeploy over REST reaches the cluster.
    admin.undeploy_instance(&nginx, Some(0)).await.unwrap();
    assert_eq!(cluster.expect_undeploy().await.instance_number, Some(0));

    // A new instance; then the root is killed and restarted on the same data dir. The cluster
    // registers again (same id) and its snapshot restores the picture without a re-deploy.
    admin.deploy_instance(&nginx).await.unwrap();
    let d = cluster.expect_deploy().await;
    assert_eq!(d.instance_number, 1);
    cluster.report(status(&nginx, 1, "RUNNING")).await;
    eventually("RUNNING again", || async {
        (service_status(&admin, &nginx).await == Some(Status::RUNNING)).then_some(())
    })
    .await;
    let old_id = cluster.id.clone();
    cluster.disconnect();
    root.kill();
    let root = RootProcess::start(dir.path());
    let mut cluster = root
        .cluster("edge", &token)
        .holding(vec![status(&nginx, 1, "RUNNING")])
        .connect()
        .await
        .unwrap();
    assert_eq!(cluster.id, old_id);
    assert!(
        cluster.quiet_for(Duration::from_millis(500)).await,
        "nothing to fix"
    );
    let admin = root.admin().await;
    assert_eq!(service_status(&admin, &nginx).await, Some(Status::RUNNING));

    // Deleting the application undeploys its instances on the cluster.
    admin
        .delete_application(&apps[0].id.to_string())
        .await
        .unwrap();
    let u = cluster.expect_undeploy().await;
    assert_eq!(u.job_id, nginx);
}

/// `GET /api/service/<id>/instance/<n>/logs`, as JSON, or the error status.
async fn get_logs(
    client: &oakestra_client::Client,
    service: &str,
    path_tail: &str,
) -> Result<serde_json::Value, u16> {
    let path = format!("/api/service/{service}/instance/{path_tail}");
    match client
        .call::<serde_json::Value, ()>(reqwest::Method::GET, &path, None)
        .await
    {
        Ok(v) => Ok(v),
        Err(oakestra_client::ClientError::Api {
            status, message, ..
        }) => {
            assert!(!message.is_empty(), "an error says what was wrong");
            Err(status)
        }
        Err(e) => panic!("GET {path}: {e}"),
    }
}

#[tokio::test]
async fn instance_logs_and_usage_reach_the_api_and_errors_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let root = RootProcess::start_with_timeout(dir.path(), "2s");
    let token = tokens::read_bootstrap_token(dir.path()).expect("bootstrap token file");
    let mut cluster: FakeCluster = root.cluster("edge", &token).connect().await.unwrap();
    let admin = root.admin().await;
    let apps = admin
        .create_applications(&serde_json::from_str::<serde_json::Value>(CLIENTSRVR).unwrap())
        .await
        .unwrap();
    let services = admin
        .application_services(&apps[0].id.to_string())
        .await
        .unwrap();
    let nginx = services
        .iter()
        .find(|s| s.service_name == "nginx")
        .unwrap()
        .id
        .to_string();
    eventually("the cluster to be active", || async {
        admin
            .clusters()
            .await
            .unwrap()
            .iter()
            .any(|c| c.active)
            .then_some(())
    })
    .await;

    // Not deployed: no instance 0 yet → 404; an unknown service → 404; a bad tail → 400.
    assert_eq!(get_logs(&admin, &nginx, "0/logs").await, Err(404));
    assert_eq!(
        get_logs(&admin, "65f1a2b3c4d5e6f708192a3b", "0/logs").await,
        Err(404)
    );
    admin.deploy_instance(&nginx).await.unwrap();
    cluster.expect_deploy().await;
    assert_eq!(get_logs(&admin, &nginx, "0/logs?tail=0").await, Err(400));
    assert_eq!(get_logs(&admin, &nginx, "0/logs?tail=x").await, Err(400));
    // Placed on the cluster, no worker yet → 503.
    let plain = |s: &str| fake_cluster::status(&nginx, 0, s);
    let mut scheduled = plain("NODE_SCHEDULED");
    scheduled.worker_id.clear();
    cluster.report(scheduled).await;
    eventually("NODE_SCHEDULED", || async {
        (service_status(&admin, &nginx).await
            == Some(PositiveSchedulingStatus::NodeScheduled.into()))
        .then_some(())
    })
    .await;
    assert_eq!(get_logs(&admin, &nginx, "0/logs").await, Err(503));

    // Running with output and usage: the tail and the usage show.
    let mut running = plain("RUNNING");
    running.logs = "one\ntwo\nthree\n".into();
    running.cpu_percent = Some(12.5);
    running.memory_percent = Some(3.25);
    cluster.report(running).await;
    let answer = eventually("the log over REST", || async {
        get_logs(&admin, &nginx, "0/logs?tail=2").await.ok()
    })
    .await;
    assert_eq!(answer["logs"], "two\nthree\n");
    // This cluster cannot ask a worker: the answer is the reported tail, and says so.
    assert_eq!(answer["source"], "report");
    assert!(
        answer["source_detail"]
            .as_str()
            .is_some_and(|d| d.contains("no worker to ask")),
        "{answer}"
    );
    assert_eq!(answer["instance_number"], 0);
    assert_eq!(answer["status"], "RUNNING");
    assert_eq!(answer["worker_id"], "worker-1");
    let all = get_logs(&admin, &nginx, "0/logs").await.unwrap();
    assert_eq!(all["logs"], "one\ntwo\nthree\n");
    // The typed client's method reads the same answer.
    assert_eq!(
        admin.logs(&nginx, 0, Some(1)).await.unwrap().trim_end(),
        "three"
    );
    let service = admin.service(&nginx).await.unwrap();
    let inst = service.instance(0).unwrap();
    assert_eq!(inst.cpu_percent, Some(12.5));
    assert_eq!(inst.memory_percent, Some(3.25));
    assert_eq!(get_logs(&admin, &nginx, "7/logs").await, Err(404));

    // The cluster goes away: once it is inactive, the log is unavailable (503).
    cluster.disconnect();
    eventually("503 once the cluster is gone", || async {
        (get_logs(&admin, &nginx, "0/logs").await == Err(503)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn cli_token_lets_a_cluster_join_and_a_wrong_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_oakestra-root"))
        .args(["token", "create", "--name", "lab"])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("OAKESTRA_ROOT_CONFIG")
        .env_remove("OAKESTRA_ROOT_STORE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let token = text.lines().next().unwrap().trim().to_owned();
    assert!(token.starts_with(tokens::TOKEN_PREFIX), "{text}");

    let root = RootProcess::start(dir.path());
    assert_eq!(
        tokens::read_bootstrap_token(dir.path()),
        None,
        "no bootstrap token once one exists"
    );
    let err = root
        .cluster("lab", "oakjoin_not-a-real-token")
        .register()
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(err.message().contains("not valid"), "{}", err.message());
    root.cluster("lab", &token).connect().await.unwrap();
}

#[tokio::test]
async fn a_clusters_workers_are_asked_on_demand_and_errors_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let root = RootProcess::start_with_timeout(dir.path(), "2s");
    let token = tokens::read_bootstrap_token(dir.path()).expect("bootstrap token file");
    // The store (signing key, password hashes) and the token file: owner only.
    {
        use std::os::unix::fs::PermissionsExt;
        for file in ["oakestra.redb", tokens::BOOTSTRAP_TOKEN_FILE] {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }
    let cluster: FakeCluster = root.cluster("edge", &token).connect().await.unwrap();
    let admin = root.admin().await;
    eventually("the cluster to be active", || async {
        admin
            .clusters()
            .await
            .unwrap()
            .iter()
            .any(|c| c.active)
            .then_some(())
    })
    .await;
    let id = cluster.id.clone();

    // The fake cluster answers with its one worker.
    let workers = admin.cluster_workers(&id).await.unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(
        (workers[0].id.as_str(), workers[0].host.as_str()),
        ("fake-w1", "edge-1")
    );
    assert!(workers[0].active);
    assert_eq!(workers[0].memory_allocatable_in_mb, 4096);
    // The MTU its overlay uses (0 in the cluster's message: none, and then absent).
    assert_eq!(workers[0].overlay_mtu, Some(1360));

    // A login is needed; an unknown cluster is a 404 that says where the ids are.
    let anonymous = reqwest::get(format!("{}/api/clusters/{id}/workers", root.rest))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let e = admin.cluster_workers("no-such-cluster").await.unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    assert!(e.to_string().contains("/api/clusters"), "{e}");

    // Gone: the cluster is still listed but cannot be asked (503, and why).
    cluster.disconnect();
    let e = eventually("503 once the cluster is gone", || async {
        admin
            .cluster_workers(&id)
            .await
            .err()
            .filter(|e| e.status() == Some(503))
    })
    .await;
    assert!(e.to_string().contains("not connected"), "{e}");
}

/// `POST /api/service/<id>/instance` raw, as (status, JSON body).
async fn post_deploy(
    client: &oakestra_client::Client,
    service: &str,
    query: &str,
) -> Result<serde_json::Value, u16> {
    let path = format!("/api/service/{service}/instance{query}");
    match client
        .call::<serde_json::Value, ()>(reqwest::Method::POST, &path, None)
        .await
    {
        Ok(v) => Ok(v),
        Err(oakestra_client::ClientError::Api {
            status, message, ..
        }) => {
            assert!(!message.is_empty(), "an error says what was wrong");
            Err(status)
        }
        Err(e) => panic!("POST {path}: {e}"),
    }
}

#[tokio::test]
async fn a_batch_deploy_creates_places_and_sends_every_instance() {
    let dir = tempfile::tempdir().unwrap();
    let root = RootProcess::start(dir.path());
    let token = tokens::read_bootstrap_token(dir.path()).expect("bootstrap token file");
    // Room for 3 one-core instances here and 10 there: the batch must take capacity after
    // each placement, or best fit would put all of them on the small cluster.
    let mut small = root
        .cluster("small", &token)
        .resources(resources(1, 3.0, 4096))
        .connect()
        .await
        .unwrap();
    let mut big = root
        .cluster("big", &token)
        .resources(resources(1, 10.0, 4096))
        .connect()
        .await
        .unwrap();
    let admin = root.admin().await;
    let apps = admin
        .create_applications(&serde_json::from_str::<serde_json::Value>(CLIENTSRVR).unwrap())
        .await
        .unwrap();
    let services = admin
        .application_services(&apps[0].id.to_string())
        .await
        .unwrap();
    let nginx = services
        .iter()
        .find(|s| s.service_name == "nginx")
        .unwrap()
        .id
        .to_string();
    eventually("both clusters active", || async {
        (admin
            .clusters()
            .await
            .unwrap()
            .iter()
            .filter(|c| c.active)
            .count()
            == 2)
            .then_some(())
    })
    .await;

    // Without count: Oakestra's answer, exactly one instance and no `instances` key.
    let plain = post_deploy(&admin, &nginx, "").await.unwrap();
    assert_eq!(plain["message"], "ok");
    assert_eq!(plain["instance"]["instance_number"], 0);
    assert_eq!(plain["instance"]["status"], "CLUSTER_SCHEDULED");
    assert!(plain.get("instances").is_none(), "{plain}");
    // count=1: the same instance fields, and the list of one.
    let one = post_deploy(&admin, &nginx, "?count=1").await.unwrap();
    assert_eq!(one["instance"]["instance_number"], 1);
    assert_eq!(one["instances"].as_array().unwrap().len(), 1);
    assert_eq!(one["instances"][0], one["instance"]);

    // Bad counts are 400 and create nothing; an unknown service is 404.
    for bad in ["?count=0", "?count=10001", "?count=abc", "?count=-3"] {
        assert_eq!(post_deploy(&admin, &nginx, bad).await, Err(400), "{bad}");
    }
    assert_eq!(
        post_deploy(&admin, "65f1a2b3c4d5e6f708192a3b", "?count=5").await,
        Err(404)
    );
    assert_eq!(admin.service(&nginx).await.unwrap().instance_list.len(), 2);

    // count=5 through the client: five new records, distinct numbers and addresses.
    let created = admin.deploy_instances(&nginx, 5).await.unwrap();
    let numbers: Vec<u32> = created.iter().map(|i| i.instance_number).collect();
    assert_eq!(numbers, [2, 3, 4, 5, 6]);
    let mut ips: Vec<_> = created.iter().map(|i| i.instance_ip.unwrap()).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 5, "distinct IPv4 addresses");
    let mut ips6: Vec<_> = created.iter().map(|i| i.instance_ip_v6.unwrap()).collect();
    ips6.sort();
    ips6.dedup();
    assert_eq!(ips6.len(), 5, "distinct IPv6 addresses");
    for i in &created {
        assert_eq!(
            i.status,
            Some(PositiveSchedulingStatus::ClusterScheduled.into())
        );
    }
    let service = admin.service(&nginx).await.unwrap();
    assert_eq!(service.instance_list.len(), 7);
    assert_eq!(service.next_instance_progressive_number, 7);

    // Each cluster got a Deploy for each instance placed on it, and no more than it fits.
    let on = |cluster_id: String| {
        service
            .instance_list
            .iter()
            .filter(|i| i.cluster_id.as_ref().map(|c| c.0.as_str()) == Some(cluster_id.as_str()))
            .map(|i| i.instance_number)
            .collect::<Vec<u32>>()
    };
    let (on_small, on_big) = (on(small.id.clone()), on(big.id.clone()));
    assert!(on_small.len() <= 3, "small fits 3: {on_small:?}");
    assert_eq!(on_small.len() + on_big.len(), 7);
    let mut sent = Vec::new();
    for _ in &on_small {
        sent.push(small.expect_deploy().await.instance_number);
    }
    for _ in &on_big {
        sent.push(big.expect_deploy().await.instance_number);
    }
    sent.sort();
    assert_eq!(sent, (0..7).collect::<Vec<u32>>());
    assert!(
        small.quiet_for(Duration::from_millis(300)).await
            && big.quiet_for(Duration::from_millis(300)).await,
        "one Deploy per instance"
    );

    // The clusters report all of them RUNNING back to back (applied as a batch).
    for n in &on_small {
        small.report(status(&nginx, *n, "RUNNING")).await;
    }
    for n in &on_big {
        big.report(status(&nginx, *n, "RUNNING")).await;
    }
    eventually("all seven RUNNING over REST", || async {
        let s = admin.service(&nginx).await.unwrap();
        s.instance_list
            .iter()
            .all(|i| i.status == Some(Status::RUNNING))
            .then_some(())
    })
    .await;
}
