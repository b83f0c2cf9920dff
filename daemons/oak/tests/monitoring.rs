//! Monitoring through the real binary: `--log-format json` makes every log line a JSON object
//! (time, level, target, fields, message); `--metrics-token` protects `/metrics` of the root,
//! the cluster and the worker alike (401 without the bearer token, 200 with it); the worker's
//! disk and network series are there; events and usage history survive a root restart.

mod support;
use support::{Proc, eventually, free_port};

use std::path::Path;
use std::time::Duration;

use oakestra_client::{Client, EventQuery};

/// The API URL `oak up` prints.
fn api_of(up: &Proc, err: &Path) -> String {
    up.line_with("  API ", Duration::from_secs(60), err)
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_and_a_metrics_token_on_root_cluster_and_worker() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster_port, worker_port) = (free_port(), free_port());
    let err = dir.path().join("up.err");
    let mut up = Proc::spawn_with_env(
        &[
            "up",
            "--data-dir",
            dir.path().join("state").to_str().unwrap(),
            "--api-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--cluster-listen",
            &format!("127.0.0.1:{cluster_port}"),
            "--mqtt-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--runtime",
            "fake",
            "--overlay",
            "off",
            "--worker-metrics-listen",
            &format!("127.0.0.1:{worker_port}"),
            "--metrics-token",
            "s3cret",
            "--log-format",
            "json",
        ],
        &[("RUST_LOG", "info")],
        &err,
    );
    let api = api_of(&up, &err);
    let http = reqwest::Client::new();
    for (what, url) in [
        ("root", format!("{api}/metrics")),
        (
            "cluster",
            format!("http://127.0.0.1:{cluster_port}/metrics"),
        ),
        ("worker", format!("http://127.0.0.1:{worker_port}/metrics")),
    ] {
        // The worker's endpoint comes up once it is registered.
        let refused = eventually(&format!("{what} /metrics"), Duration::from_secs(30), || {
            let (http, url) = (&http, &url);
            async move { http.get(url).send().await.ok() }
        })
        .await;
        assert_eq!(refused.status(), 401, "{what} without a token");
        let body = refused.text().await.unwrap();
        assert!(body.contains("--metrics-token"), "{what}: {body}");
        let wrong = http.get(&url).bearer_auth("nope").send().await.unwrap();
        assert_eq!(wrong.status(), 401, "{what} with a wrong token");
        let ok = http.get(&url).bearer_auth("s3cret").send().await.unwrap();
        assert_eq!(ok.status(), 200, "{what} with the token");
        let text = ok.text().await.unwrap();
        let expected: &[&str] = match what {
            "root" => &["oakestra_root_store_operation_duration_seconds_count{operation=\"get\"}"],
            "cluster" => &[
                "oakestra_cluster_placement_duration_seconds_count",
                "oakestra_cluster_placement_failures_total{reason=\"NO_WORKER_CAPACITY\"}",
            ],
            _ => &[
                "oakestra_node_network_receive_bytes_total",
                "oakestra_node_disk_written_bytes_total",
                "oakestra_node_filesystem_avail_bytes",
            ],
        };
        for series in expected {
            assert!(
                text.lines().any(|l| l.starts_with(series)),
                "{what}: no {series} in\n{text}"
            );
        }
    }
    assert_eq!(up.terminate(), Some(0));

    let log = std::fs::read_to_string(&err).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 5, "too few log lines:\n{log}");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        for key in ["time", "level", "target", "message"] {
            assert!(v[key].is_string(), "no {key} in {line}");
        }
        assert!(v["fields"].is_object(), "no fields in {line}");
    }
    // Each daemon of the set-up logged.
    for target in ["oakestra_root", "oakestra_cluster", "oakestra_node"] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("\"target\":\"{target}"))),
            "no line of {target} in\n{log}"
        );
    }
}

/// `oak up --workers 0` on `dir` with the cluster on `cluster_port`; returns it and its API.
fn up(dir: &Path, cluster_port: u16, mqtt_port: u16, err: &Path) -> (Proc, String) {
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
            &format!("127.0.0.1:{mqtt_port}"),
            "--workers",
            "0",
        ],
        err,
    );
    let api = api_of(&up, err);
    (up, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_usage_history_survive_a_root_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster_port, mqtt_port) = (free_port(), free_port());
    let up_err = dir.path().join("up.err");
    let (mut first_up, api) = up(dir.path(), cluster_port, mqtt_port, &up_err);
    let token =
        std::fs::read_to_string(dir.path().join("state/cluster/worker-join-token")).unwrap();
    let sim_err = dir.path().join("sim.err");
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
            dir.path().join("sim").to_str().unwrap(),
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

    let admin = Client::new(&api).unwrap();
    admin.login("Admin", "Admin").await.unwrap();
    let sla = serde_json::json!({
        "sla_version": "v2.0",
        "customerID": "Admin",
        "applications": [{
            "applicationID": "",
            "application_name": "restart",
            "application_namespace": "test",
            "application_desc": "events across a root restart",
            "microservices": [{
                "microserviceID": "",
                "microservice_name": "steady",
                "microservice_namespace": "test",
                "virtualization": "container",
                "cmd": [],
                "memory": 100,
                "vcpus": 1,
                "code": "docker.io/library/busybox:latest",
            }],
        }]
    });
    let apps = admin.create_applications(&sla).await.unwrap();
    let service = admin
        .application_services(&apps[0].id.to_string())
        .await
        .unwrap()[0]
        .id
        .to_string();
    admin.deploy_instance(&service).await.unwrap();
    let query = EventQuery {
        service: Some(service.clone()),
        limit: Some(1000),
        ..EventQuery::default()
    };
    let before = eventually("a running event", Duration::from_secs(40), || async {
        let events = admin.events(&query).await.ok()?;
        events.iter().any(|e| e.kind == "running").then_some(events)
    })
    .await;
    let history_before = eventually("two usage samples", Duration::from_secs(40), || async {
        let record = admin.service(&service).await.ok()?;
        let history = record.instance_list.first()?.cpu_history.clone();
        (history.len() >= 2).then_some(history)
    })
    .await;

    // The root stops (SIGTERM) and starts again on the same data directory.
    assert_eq!(first_up.terminate(), Some(0));
    let (_second_up, api) = up(dir.path(), cluster_port, mqtt_port, &up_err);
    let admin = Client::new(&api).unwrap();
    admin.login("Admin", "Admin").await.unwrap();

    let after = admin.events(&query).await.unwrap();
    for e in &before {
        assert!(
            after
                .iter()
                .any(|a| a.id == e.id && a.kind == e.kind && a.message == e.message),
            "event {} {} ({}) is gone after the restart; now:\n{after:#?}",
            e.id,
            e.kind,
            e.message
        );
    }
    let record = admin.service(&service).await.unwrap();
    let history_after = &record.instance_list[0].cpu_history;
    assert!(
        history_after
            .iter()
            .any(|s| s.timestamp == history_before[0].timestamp),
        "the sample of {} is gone after the restart: {history_after:?}",
        history_before[0].timestamp
    );
    // New events continue the numbering.
    let newest = before.iter().map(|e| e.id).max().unwrap();
    let more = eventually(
        "an event after the restart",
        Duration::from_secs(40),
        || async {
            let events = admin
                .events(&EventQuery {
                    after: Some(newest),
                    ..EventQuery::default()
                })
                .await
                .ok()?;
            (!events.is_empty()).then_some(events)
        },
    )
    .await;
    assert!(more.iter().all(|e| e.id > newest));
}
