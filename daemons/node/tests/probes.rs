//! Health probes on the worker (issue 18): readiness reported as it changes, a failing
//! liveness probe restarts the instance through the restart machinery, and the real prober's
//! HTTP, TCP and exec checks. Fake runtime; paused tokio time where the timing is asserted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oakestra_core::sla::{Probe, ProbeAction};
use oakestra_core::status::DeploymentStatus;
use oakestra_node::Engine;
use oakestra_node::engine::{NetworkProber, Prober, Reporter};
use oakestra_node::state::{NodeState, StateFile};
use oakestra_proto::mqtt::{DeployCommand, JobStatusReport};
use oakestra_runtime::{FakeConfig, FakeRuntime, InstanceId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Debug)]
struct ChannelReporter(mpsc::UnboundedSender<(Instant, JobStatusReport)>);

impl Reporter for ChannelReporter {
    fn job_status(&self, report: JobStatusReport) {
        let _ = self.0.send((Instant::now(), report));
    }
}

/// Answers every attempt from a switch per instance (healthy unless switched off), and
/// counts the attempts.
#[derive(Debug, Default)]
struct Switch {
    unhealthy: Mutex<HashMap<u32, bool>>,
    attempts: Mutex<u32>,
}

impl Switch {
    fn set(&self, instance: u32, healthy: bool) {
        self.unhealthy.lock().unwrap().insert(instance, !healthy);
    }
}

#[async_trait::async_trait]
impl Prober for Switch {
    async fn check(
        &self,
        id: &InstanceId,
        _address: Option<IpAddr>,
        action: &ProbeAction,
        _timeout: Duration,
    ) -> Result<(), String> {
        *self.attempts.lock().unwrap() += 1;
        if self.unhealthy.lock().unwrap().get(&id.instance) == Some(&true) {
            Err(format!("{} refused", action.describe()))
        } else {
            Ok(())
        }
    }
}

fn deploy(n: u32) -> DeployCommand {
    serde_json::from_value(serde_json::json!({
        "_id": "j", "job_name": "app.ns.svc.ns", "instance_number": n, "image": "busybox",
        "virtualization": "docker"
    }))
    .unwrap()
}

fn probe(action: ProbeAction, failures: u32, successes: u32) -> Probe {
    Probe {
        period: Some(1.0),
        failure_threshold: Some(failures),
        success_threshold: Some(successes),
        ..Probe::new(action)
    }
}

struct Harness {
    engine: Arc<Engine>,
    runtime: FakeRuntime,
    reports: mpsc::UnboundedReceiver<(Instant, JobStatusReport)>,
    _dir: tempfile::TempDir,
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let runtime = FakeRuntime::new(FakeConfig::default()).unwrap();
    let (tx, reports) = mpsc::unbounded_channel();
    let engine = Engine::new(
        Arc::new(runtime.clone()),
        StateFile::new(dir.path()),
        NodeState::default(),
        Arc::new(ChannelReporter(tx)),
        "10.0.0.5".into(),
        Duration::from_secs(1),
    );
    engine.spawn_exit_watcher();
    Harness {
        engine,
        runtime,
        reports,
        _dir: dir,
    }
}

impl Harness {
    async fn next(&mut self) -> (Instant, JobStatusReport) {
        tokio::time::timeout(Duration::from_secs(3600), self.reports.recv())
            .await
            .expect("a report within an hour")
            .unwrap()
    }

    async fn quiet_for(&mut self, d: Duration) {
        tokio::time::sleep(d).await;
        if let Ok((_, r)) = self.reports.try_recv() {
            panic!("no report expected, got {r:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn readiness_is_reported_as_it_changes() {
    let mut h = harness();
    let switch = Arc::new(Switch::default());
    h.engine.set_prober(switch.clone());
    switch.set(0, false);
    let mut cmd = deploy(0);
    cmd.readiness_probe = Some(probe(ProbeAction::Tcp { port: 80 }, 2, 2));
    h.engine.deploy(cmd).await;
    let (_, r) = h.next().await;
    assert_eq!(
        (r.status, r.ready),
        (DeploymentStatus::Running, Some(false))
    );
    // Failing from the start: nothing changes, however long.
    h.quiet_for(Duration::from_secs(10)).await;
    assert!(*switch.attempts.lock().unwrap() >= 10);

    // Two successes in a row (success_threshold 2) make it ready.
    switch.set(0, true);
    let since = Instant::now();
    let (at, r) = h.next().await;
    assert_eq!((r.status, r.ready), (DeploymentStatus::Running, Some(true)));
    assert_eq!(r.status_detail, "");
    assert!(at - since <= Duration::from_secs(2), "{:?}", at - since);
    // Two failures in a row (failure_threshold 2) make it unready again, with the reason.
    switch.set(0, false);
    let (_, r) = h.next().await;
    assert_eq!(
        (r.status, r.ready),
        (DeploymentStatus::Running, Some(false))
    );
    assert_eq!(
        r.status_detail,
        "readiness probe failed: tcp :80: tcp :80 refused"
    );
    assert_eq!(h.engine.status_snapshot()[0].ready, Some(false));
    // A readiness failure never restarts anything.
    h.quiet_for(Duration::from_secs(10)).await;
    assert_eq!(h.runtime.running_count(), 1);

    // Without a readiness probe an instance reports no verdict: ready when RUNNING.
    h.engine.deploy(deploy(1)).await;
    let (_, r) = h.next().await;
    assert_eq!((r.instance, r.ready), (1, None));
}

#[tokio::test(start_paused = true)]
async fn a_failing_liveness_probe_restarts_the_instance() {
    let mut h = harness();
    // The real prober: exec runs through the (fake) runtime.
    let mut cmd = deploy(0);
    cmd.liveness_probe = Some(probe(ProbeAction::Exec(vec!["check".into()]), 3, 1));
    h.engine.deploy(cmd).await;
    let (started, r) = h.next().await;
    assert_eq!(
        (r.status, r.ready, r.restart_count),
        (DeploymentStatus::Running, None, 0)
    );
    h.quiet_for(Duration::from_secs(5)).await;

    let id = InstanceId::new("app.ns.svc.ns", 0);
    h.runtime.set_exec_exit_code(&id, 1);
    // Three failures in a row (one per second), then it is stopped and restarted after the
    // first back-off step, although the SLA sets no restart_policy.
    let (at, dead) = h.next().await;
    assert_eq!(dead.status, DeploymentStatus::Dead);
    assert!(dead.restarting, "the worker restarts it itself");
    assert_eq!(
        dead.status_detail,
        "liveness probe failed: exec check: exited with code 1 (3 in a row); \
         exited with code 137, restart 1 in 1 s"
    );
    assert!(at - started <= Duration::from_secs(9), "{:?}", at - started);
    h.runtime.set_exec_exit_code(&id, 0);
    let (at_running, running) = h.next().await;
    assert_eq!(
        (running.status, running.restart_count),
        (DeploymentStatus::Running, 1)
    );
    assert_eq!(at_running - at, Duration::from_secs(1), "back-off");
    // Healthy again: it keeps running.
    h.quiet_for(Duration::from_secs(30)).await;
    assert_eq!(h.runtime.running_count(), 1);
    assert!(
        h.engine
            .metrics_text()
            .contains("oakestra_node_liveness_failures_total 1")
    );
}

#[tokio::test(start_paused = true)]
async fn never_means_never_even_after_a_liveness_failure() {
    let mut h = harness();
    let switch = Arc::new(Switch::default());
    h.engine.set_prober(switch.clone());
    let mut cmd = deploy(0);
    cmd.restart_policy = Some(oakestra_core::sla::RestartPolicy::Never);
    cmd.liveness_probe = Some(probe(ProbeAction::Tcp { port: 80 }, 1, 1));
    h.engine.deploy(cmd).await;
    assert_eq!(h.next().await.1.status, DeploymentStatus::Running);
    switch.set(0, false);
    let (_, dead) = h.next().await;
    assert_eq!(dead.status, DeploymentStatus::Dead);
    assert!(!dead.restarting);
    assert!(
        dead.status_detail
            .starts_with("liveness probe failed: tcp :80"),
        "{}",
        dead.status_detail
    );
    h.quiet_for(Duration::from_secs(30)).await;
}

/// A one-connection-at-a-time HTTP server answering `status` to every request.
async fn http_server(status: Arc<Mutex<u16>>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            let code = *status.lock().unwrap();
            let answer = format!("HTTP/1.0 {code} X\r\nContent-Length: 0\r\n\r\n");
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    port
}

#[tokio::test]
async fn the_real_prober_checks_http_status_and_tcp_connections() {
    let runtime = FakeRuntime::new(FakeConfig::default()).unwrap();
    let prober = NetworkProber::new(Arc::new(runtime));
    let id = InstanceId::new("app.ns.svc.ns", 0);
    let status = Arc::new(Mutex::new(503u16));
    let port = http_server(status.clone()).await;
    let localhost = Some(IpAddr::from([127, 0, 0, 1]));
    let get = ProbeAction::HttpGet {
        port,
        path: "/ready".into(),
    };
    let t = Duration::from_secs(2);
    assert_eq!(
        prober.check(&id, localhost, &get, t).await,
        Err("GET /ready answered 503".into())
    );
    *status.lock().unwrap() = 200;
    assert_eq!(prober.check(&id, localhost, &get, t).await, Ok(()));
    *status.lock().unwrap() = 302;
    assert_eq!(
        prober.check(&id, None, &get, t).await,
        Ok(()),
        "3xx passes; loopback by default"
    );
    assert_eq!(
        prober
            .check(&id, localhost, &ProbeAction::Tcp { port }, t)
            .await,
        Ok(())
    );
    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let refused = prober
        .check(&id, localhost, &ProbeAction::Tcp { port: closed }, t)
        .await
        .unwrap_err();
    assert!(refused.contains("cannot connect"), "{refused}");
    // exec on an instance the runtime does not run.
    let missing = prober
        .check(&id, None, &ProbeAction::Exec(vec!["true".into()]), t)
        .await
        .unwrap_err();
    assert!(missing.contains("app.ns.svc.ns"), "{missing}");
}
