//! `oak up` end to end through the real binary: the REST API answers with the default login,
//! the clientsrvr descriptor's services reach RUNNING on the in-process worker; and `oak sim`
//! workers register with the cluster of an `oak up --workers 0` and run instances, and the
//! failures `oak sim` injects (`--fail-every`, `--exit-after`, `--exit-code`) reach the root as
//! the right statuses and are healed by the cluster.

mod support;
use support::{Proc, eventually, free_port};

use std::path::Path;
use std::time::{Duration, Instant};

use oakestra_core::status::Status;

const CLIENTSRVR: &str = include_str!("../../../examples/sla-clientsrvr-container.json");

fn start_up(dir: &Path, workers: u32) -> (Proc, String, u16, std::path::PathBuf) {
    let cluster_port = free_port();
    let mqtt_port = free_port();
    let err = dir.join("up.err");
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
            &workers.to_string(),
            "--runtime",
            "fake",
            // Fixed resources: what the fake runtime's instances reserve never depends on the
            // size of the test machine.
            "--worker-cpus",
            "4",
            "--worker-memory-mb",
            "4096",
        ],
        &err,
    );
    let api_line = up.line_with("  API ", Duration::from_secs(60), &err);
    let api = api_line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_owned();
    (up, api, cluster_port, err)
}

/// Creates the clientsrvr application, deploys one instance of each service and waits until
/// the root shows both RUNNING. Returns the service ids.
async fn deploy_clientsrvr(api: &str) -> Vec<String> {
    let admin = oakestra_client::Client::new(api).unwrap();
    admin.login("Admin", "Admin").await.unwrap();
    eventually("an active cluster", Duration::from_secs(30), || async {
        let cs = admin.active_clusters().await.ok()?;
        (!cs.is_empty()).then_some(())
    })
    .await;
    let apps = admin
        .create_applications(&serde_json::from_str::<serde_json::Value>(CLIENTSRVR).unwrap())
        .await
        .unwrap();
    let services = admin
        .application_services(&apps[0].id.to_string())
        .await
        .unwrap();
    assert_eq!(services.len(), 2);
    let ids: Vec<String> = services.iter().map(|s| s.id.to_string()).collect();
    for id in &ids {
        admin.deploy_instance(id).await.unwrap();
    }
    for id in &ids {
        eventually(
            &format!("service {id} RUNNING at the root"),
            Duration::from_secs(30),
            || async {
                (admin.service(id).await.ok()?.status == Some(Status::RUNNING)).then_some(())
            },
        )
        .await;
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oak_up_runs_the_clientsrvr_services() {
    let dir = tempfile::tempdir().unwrap();
    let (mut up, api, _, err) = start_up(dir.path(), 1);
    deploy_clientsrvr(&api).await;
    assert_eq!(
        up.terminate(),
        Some(0),
        "oak up did not stop cleanly:\n{}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oak_sim_workers_join_a_cluster_and_run_instances() {
    let dir = tempfile::tempdir().unwrap();
    let (_up, api, cluster_port, up_err) = start_up(dir.path(), 0);
    let token = std::fs::read_to_string(dir.path().join("state/cluster/worker-join-token"))
        .unwrap_or_else(|e| {
            panic!(
                "worker token: {e}\n{}",
                std::fs::read_to_string(&up_err).unwrap_or_default()
            )
        });
    let sim_err = dir.path().join("sim.err");
    let sim = Proc::spawn(
        &[
            "sim",
            "--cluster",
            &format!("127.0.0.1:{cluster_port}"),
            "--token",
            token.trim(),
            "--workers",
            "5",
            "--data-dir",
            dir.path().join("sim").to_str().unwrap(),
            "--locations",
            "48.1,11.5;52.5,13.4",
            "--report-interval",
            "500ms",
        ],
        &sim_err,
    );
    sim.line_with(
        "all 5 workers registered",
        Duration::from_secs(30),
        &sim_err,
    );
    deploy_clientsrvr(&api).await;
}

/// Starts `oak sim` with one worker against the cluster of an `oak up --workers 0` in `dir`.
fn start_sim(dir: &Path, cluster_port: u16, up_err: &Path, extra: &[&str]) -> Proc {
    let token = std::fs::read_to_string(dir.join("state/cluster/worker-join-token"))
        .unwrap_or_else(|e| {
            panic!(
                "worker token: {e}\n{}",
                std::fs::read_to_string(up_err).unwrap_or_default()
            )
        });
    let sim_err = dir.join("sim.err");
    let mut args = vec![
        "sim".to_owned(),
        "--cluster".to_owned(),
        format!("127.0.0.1:{cluster_port}"),
        "--token".to_owned(),
        token.trim().to_owned(),
        "--workers".to_owned(),
        "1".to_owned(),
        "--data-dir".to_owned(),
        dir.join("sim").to_str().unwrap().to_owned(),
        "--report-interval".to_owned(),
        "500ms".to_owned(),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sim = Proc::spawn(&args, &sim_err);
    sim.line_with(
        "all 1 workers registered",
        Duration::from_secs(30),
        &sim_err,
    );
    sim
}

/// An application `inject` with one service per `(name, one_shot)`.
fn inject_app(services: &[(&str, bool)]) -> serde_json::Value {
    let microservices: Vec<serde_json::Value> = services
        .iter()
        .map(|(name, one_shot)| {
            serde_json::json!({
                "microserviceID": "",
                "microservice_name": name,
                "microservice_namespace": "test",
                "virtualization": "container",
                "cmd": [],
                "memory": 100,
                "vcpus": 1,
                "code": "docker.io/library/busybox:latest",
                "one_shot": one_shot,
            })
        })
        .collect();
    serde_json::json!({
        "sla_version": "v2.0",
        "customerID": "Admin",
        "applications": [{
            "applicationID": "",
            "application_name": "inject",
            "application_namespace": "test",
            "application_desc": "oak sim failure injection",
            "microservices": microservices,
        }]
    })
}

/// Logs in, waits for the cluster, creates `sla`'s application and deploys one instance of
/// each service. Returns the client and the service ids by name.
async fn deploy_all(
    api: &str,
    sla: &serde_json::Value,
) -> (oakestra_client::Client, Vec<(String, String)>) {
    let admin = oakestra_client::Client::new(api).unwrap();
    admin.login("Admin", "Admin").await.unwrap();
    eventually("an active cluster", Duration::from_secs(30), || async {
        let cs = admin.active_clusters().await.ok()?;
        (!cs.is_empty()).then_some(())
    })
    .await;
    let apps = admin.create_applications(sla).await.unwrap();
    let services = admin
        .application_services(&apps[0].id.to_string())
        .await
        .unwrap();
    let ids: Vec<(String, String)> = services
        .iter()
        .map(|s| (s.service_name.clone(), s.id.to_string()))
        .collect();
    for (_, id) in &ids {
        admin.deploy_instance(id).await.unwrap();
    }
    (admin, ids)
}

/// Status and detail of instance 0 of `service` at the root.
async fn instance_status(
    admin: &oakestra_client::Client,
    service: &str,
) -> Option<(String, String)> {
    let record = admin.service(service).await.ok()?;
    let instance = record.instance(0)?;
    Some((
        instance.status?.to_string(),
        instance.status_detail.clone().unwrap_or_default(),
    ))
}

/// Polls instance 0 of `service` every 20 ms until `done` holds for the statuses seen so far
/// (consecutive repeats collapsed), or panics after `within` showing what was seen.
async fn watch_statuses(
    admin: &oakestra_client::Client,
    service: &str,
    within: Duration,
    done: impl Fn(&[(String, String)]) -> bool,
) -> Vec<(String, String)> {
    let deadline = Instant::now() + within;
    let mut seen: Vec<(String, String)> = Vec::new();
    loop {
        if let Some(now) = instance_status(admin, service).await
            && seen.last().map(|(s, _)| s) != Some(&now.0)
        {
            seen.push(now);
            if done(&seen) {
                return seen;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{service}: statuses seen within {within:?}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Index of the first status `status` at or after `from`.
fn position(seen: &[(String, String)], from: usize, status: &str) -> Option<usize> {
    seen.iter()
        .skip(from)
        .position(|(s, _)| s == status)
        .map(|i| i + from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oak_sim_injected_start_failures_and_crashes_show_up_and_are_healed() {
    let dir = tempfile::tempdir().unwrap();
    let (_up, api, cluster_port, up_err) = start_up(dir.path(), 0);
    // One worker: every 2nd start on it fails, every instance that started exits with code 3
    // after 1.5 s. Start 1 runs and dies (DEAD), start 2 fails (FAILED), start 3 runs again.
    let _sim = start_sim(
        dir.path(),
        cluster_port,
        &up_err,
        &[
            "--fail-every",
            "2",
            "--exit-after",
            "1500ms",
            "--exit-code",
            "3",
        ],
    );
    let (admin, ids) = deploy_all(&api, &inject_app(&[("server", false)])).await;
    let server = &ids[0].1;

    let healed_after_failure = |seen: &[(String, String)]| {
        position(seen, 0, "FAILED")
            .and_then(|failed| position(seen, failed, "RUNNING"))
            .is_some()
    };
    let seen = watch_statuses(
        &admin,
        server,
        Duration::from_secs(40),
        healed_after_failure,
    )
    .await;
    let first_running = position(&seen, 0, "RUNNING").expect("RUNNING first");
    let failed = position(&seen, first_running, "FAILED").unwrap();
    // The injected start failure arrives with the runtime's reason.
    assert!(
        seen[failed].1.contains("injected failure"),
        "FAILED without the injected reason: {seen:?}"
    );
    // The crash (exit code 3) is DEAD, never COMPLETED (the service is not one_shot).
    assert!(seen.iter().all(|(s, _)| s != "COMPLETED"), "{seen:?}");
    let seen = watch_statuses(&admin, server, Duration::from_secs(40), |seen| {
        position(seen, 0, "DEAD")
            .and_then(|dead| position(seen, dead, "RUNNING"))
            .is_some()
    })
    .await;
    assert!(seen.iter().all(|(s, _)| s != "COMPLETED"), "{seen:?}");
    // Healing never duplicates the instance.
    let record = admin.service(server).await.unwrap();
    assert_eq!(record.instance_list.len(), 1, "{:?}", record.instance_list);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oak_sim_injected_exit_0_completes_a_one_shot_and_kills_a_service() {
    let dir = tempfile::tempdir().unwrap();
    let (_up, api, cluster_port, up_err) = start_up(dir.path(), 0);
    let _sim = start_sim(
        dir.path(),
        cluster_port,
        &up_err,
        &["--exit-after", "700ms", "--exit-code", "0"],
    );
    let (admin, ids) = deploy_all(&api, &inject_app(&[("job", true), ("server", false)])).await;
    let id_of = |name: &str| ids.iter().find(|(n, _)| n == name).unwrap().1.clone();
    let (job, server) = (id_of("job"), id_of("server"));

    // A one_shot exiting 0 is COMPLETED …
    let seen = watch_statuses(&admin, &job, Duration::from_secs(30), |seen| {
        seen.last().is_some_and(|(s, _)| s == "COMPLETED")
    })
    .await;
    assert!(
        seen.iter().all(|(s, _)| s != "DEAD" && s != "FAILED"),
        "a one_shot exiting 0 went through DEAD/FAILED: {seen:?}"
    );
    // … and stays so: not redeployed.
    let quiet = Instant::now() + Duration::from_secs(3);
    while Instant::now() < quiet {
        let (status, _) = instance_status(&admin, &job).await.unwrap();
        assert_eq!(status, "COMPLETED", "a completed one_shot was restarted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The same exit of a service that is not one_shot is DEAD and healed.
    watch_statuses(&admin, &server, Duration::from_secs(30), |seen| {
        position(seen, 0, "DEAD")
            .and_then(|dead| position(seen, dead, "RUNNING"))
            .is_some()
    })
    .await;
    assert_eq!(admin.service(&job).await.unwrap().instance_list.len(), 1);
    assert_eq!(admin.service(&server).await.unwrap().instance_list.len(), 1);
}
