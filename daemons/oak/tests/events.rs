//! Events and usage history end to end, through the real binaries: `oak up --workers 0` with
//! an `oak sim` worker (fake runtime, failures injected through the services' environment).
//! A deploy, a crash-looping service, an image that does not exist and the loss of the
//! worker (its process killed) each produce the expected events in order, the same over
//! `GET /api/events` and the server-sent-events stream; the service record's `cpu_history`
//! grows one sample per interval; a user sees only the events of their own services.

mod support;
use support::{Proc, eventually, free_port};

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oakestra_client::{Client, Event, EventQuery};

/// `oak up --workers 0` and one `oak sim` worker; returns (up, sim, API URL).
fn start(dir: &Path) -> (Proc, Proc, String) {
    let cluster_port = free_port();
    let up_err = dir.join("up.err");
    let up = Proc::spawn(
        &[
            "up",
            "--data-dir",
            dir.join("state").to_str().unwrap(),
            "--api-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--cluster-listen",
            &format!("127.0.0.1:{cluster_port}"),
            "--mqtt-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--workers",
            "0",
        ],
        &up_err,
    );
    let api = up
        .line_with("  API ", Duration::from_secs(60), &up_err)
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_owned();
    let token = std::fs::read_to_string(dir.join("state/cluster/worker-join-token")).unwrap();
    let sim_err = dir.join("sim.err");
    let sim = Proc::spawn(
        &[
            "sim",
            "--cluster",
            &format!("127.0.0.1:{cluster_port}"),
            "--token",
            token.trim(),
            "--workers",
            "1",
            "--data-dir",
            dir.join("sim").to_str().unwrap(),
            "--report-interval",
            "500ms",
        ],
        &sim_err,
    );
    sim.line_with(
        "all 1 workers registered",
        Duration::from_secs(30),
        &sim_err,
    );
    (up, sim, api)
}

/// Application `events` with one service per `(name, environment)`.
fn app(services: &[(&str, &[&str])]) -> serde_json::Value {
    let microservices: Vec<serde_json::Value> = services
        .iter()
        .map(|(name, env)| {
            serde_json::json!({
                "microserviceID": "",
                "microservice_name": name,
                "microservice_namespace": "test",
                "virtualization": "container",
                "cmd": [],
                "memory": 100,
                "vcpus": 1,
                "code": "docker.io/library/busybox:latest",
                "environment": env,
            })
        })
        .collect();
    serde_json::json!({
        "sla_version": "v2.0",
        "customerID": "Admin",
        "applications": [{
            "applicationID": "",
            "application_name": "events",
            "application_namespace": "test",
            "application_desc": "events end to end",
            "microservices": microservices,
        }]
    })
}

/// The kinds of `events`, in order.
fn kinds(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

/// Whether `want` occurs in `have` in this order (not necessarily adjacent).
fn in_order(have: &[&str], want: &[&str]) -> bool {
    let mut it = have.iter();
    want.iter().all(|w| it.any(|h| h == w))
}

async fn service_events(admin: &Client, service: &str) -> Vec<Event> {
    admin
        .events(&EventQuery {
            service: Some(service.to_owned()),
            limit: Some(1000),
            ..EventQuery::default()
        })
        .await
        .unwrap()
}

/// Waits until the events of `service` contain `want` in order; returns them.
async fn expect_events(admin: &Client, service: &str, want: &[&str]) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let events = service_events(admin, service).await;
        if in_order(&kinds(&events), want) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "events of {service}: wanted {want:?} in order, have:\n{:#?}",
            events
                .iter()
                .map(|e| format!("{} {}", e.kind, e.message))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_crashes_missing_images_and_worker_loss_become_events() {
    let dir = tempfile::tempdir().unwrap();
    let (_up, mut sim, api) = start(dir.path());
    let admin = Client::new(&api).unwrap();
    admin.login("Admin", "Admin").await.unwrap();
    eventually("an active cluster", Duration::from_secs(30), || async {
        let cs = admin.active_clusters().await.ok()?;
        (!cs.is_empty()).then_some(())
    })
    .await;

    // Follow the stream from the start: everything after this point arrives on it.
    let mut stream = admin.follow_events(&EventQuery::default()).await.unwrap();
    let streamed: Arc<Mutex<Vec<Event>>> = Arc::default();
    let sink = Arc::clone(&streamed);
    tokio::spawn(async move {
        while let Some(Ok(e)) = stream.next().await {
            sink.lock().unwrap().push(e);
        }
    });

    let sla = app(&[
        ("good", &[]),
        (
            "crashy",
            &["OAK_FAKE_EXIT_AFTER_MS=800", "OAK_FAKE_EXIT_CODE=3"],
        ),
        (
            "noimage",
            &["OAK_FAKE_FAIL_IMAGE=manifest unknown: 404 for docker.io/library/nope"],
        ),
    ]);
    let apps = admin.create_applications(&sla).await.unwrap();
    let services = admin
        .application_services(&apps[0].id.to_string())
        .await
        .unwrap();
    let id = |name: &str| {
        services
            .iter()
            .find(|s| s.service_name == name)
            .unwrap()
            .id
            .to_string()
    };
    let (good, crashy, noimage) = (id("good"), id("crashy"), id("noimage"));
    for s in [&good, &crashy, &noimage] {
        admin.deploy_instance(s).await.unwrap();
    }

    // Deploy: requested → placed on the cluster → placed on the worker → running.
    let events = expect_events(
        &admin,
        &good,
        &["requested", "placed", "node_scheduled", "running"],
    )
    .await;
    let placed = events.iter().find(|e| e.kind == "placed").unwrap();
    assert!(
        placed.message.starts_with("placed on cluster") && placed.cluster_id.is_some(),
        "{placed:?}"
    );
    let running = events.iter().find(|e| e.kind == "running").unwrap();
    let worker = running.worker_id.clone().expect("the worker is named");
    assert!(running.message.contains(&worker), "{running:?}");
    assert_eq!(running.status.as_deref(), Some("RUNNING"));

    // A crash loop: running, DEAD with the exit code, running again, DEAD again.
    let events = expect_events(&admin, &crashy, &["running", "failed", "running", "failed"]).await;
    let dead = events.iter().find(|e| e.kind == "failed").unwrap();
    assert_eq!(dead.status.as_deref(), Some("DEAD"), "{dead:?}");

    // An image that does not exist: FAILED with the registry's reason, never running.
    let events = expect_events(&admin, &noimage, &["requested", "placed", "failed"]).await;
    let failed = events.iter().find(|e| e.kind == "failed").unwrap();
    assert!(
        failed.message.contains("404 for docker.io/library/nope"),
        "{failed:?}"
    );
    assert!(!kinds(&events).contains(&"running"), "{events:?}");

    // Usage history: the record gains one sample per 5 s interval while the instance runs.
    let first = admin.service(&good).await.unwrap().instance_list[0]
        .cpu_history
        .len();
    let record = eventually(
        "three more cpu_history samples",
        Duration::from_secs(30),
        || async {
            let r = admin.service(&good).await.ok()?;
            (r.instance_list[0].cpu_history.len() >= first + 3).then_some(r)
        },
    )
    .await;
    let inst = &record.instance_list[0];
    assert_eq!(inst.cpu_history.len(), inst.memory_history.len());
    let usage = admin.usage(&good, Some(0), None, None).await.unwrap();
    assert_eq!(usage.instances.len(), 1);
    assert!(usage.instances[0].cpu_history.len() >= inst.cpu_history.len());

    // Worker loss: the sim process is killed; the cluster notices it is silent, the
    // instance fails with that reason and waits for a worker.
    sim.kill();
    // (The cluster reports FAILED "worker … is inactive; rescheduling", or, when it tried
    // another worker in the same breath, only the outcome: then the root says so.)
    let lost = eventually(
        "an event saying the instance left its lost worker",
        Duration::from_secs(40),
        || async {
            let events = service_events(&admin, &good).await;
            let after_running = events.iter().rposition(|e| e.kind == "running")?;
            events[after_running..]
                .iter()
                .find(|e| {
                    matches!(e.kind.as_str(), "failed" | "rescheduling")
                        && e.message.contains(&worker)
                        && e.message.contains("rescheduling")
                })
                .cloned()
        },
    )
    .await;
    assert_ne!(lost.status.as_deref(), Some("RUNNING"), "{lost:?}");
    // The cluster's next resources report tells the root it has no worker left.
    eventually(
        "a workers_changed 1 → 0 event of the cluster",
        Duration::from_secs(30),
        || async {
            let cluster_events = admin
                .events(&EventQuery {
                    object: Some("cluster".into()),
                    kind: Some("workers_changed".into()),
                    limit: Some(1000),
                    ..EventQuery::default()
                })
                .await
                .ok()?;
            cluster_events
                .iter()
                .any(|e| e.message.contains("1 → 0"))
                .then_some(())
        },
    )
    .await;

    // The stream delivered the same events of each service, in the same order.
    for s in [&good, &crashy, &noimage] {
        let listed = service_events(&admin, s).await;
        let last = listed.last().unwrap().id;
        let streamed = eventually("the stream to catch up", Duration::from_secs(10), || {
            let streamed = Arc::clone(&streamed);
            async move {
                let got: Vec<Event> = streamed
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|e| e.service_id.as_deref() == Some(s.as_str()))
                    .cloned()
                    .collect();
                got.iter().any(|e| e.id >= last).then_some(got)
            }
        })
        .await;
        let ids = |v: &[Event]| v.iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(&streamed)[..listed.len()], ids(&listed)[..], "{s}");
    }

    // Another user sees none of these events (and no cluster events).
    admin
        .register(&oakestra_client::NewUser {
            name: "alice".into(),
            password: "wonderland".into(),
            email: "alice@example.org".into(),
            roles: vec!["Application_Provider".into()],
        })
        .await
        .unwrap();
    let alice = Client::new(&api).unwrap();
    alice.login("alice", "wonderland").await.unwrap();
    let seen = alice.events(&EventQuery::default()).await.unwrap();
    assert!(seen.is_empty(), "{seen:?}");
}
