//! The SLA's `restart_policy` on the worker (issue 18): restarts on the same worker with an
//! exponential back-off, counted and reported, and `FAILED` after too many within the window.
//! Fake runtime, paused tokio time: the back-off is measured exactly.

use std::sync::Arc;
use std::time::Duration;

use oakestra_core::sla::RestartPolicy;
use oakestra_core::status::DeploymentStatus;
use oakestra_node::Engine;
use oakestra_node::engine::{Reporter, RestartRules};
use oakestra_node::state::{NodeState, StateFile};
use oakestra_proto::mqtt::{DeleteCommand, DeployCommand, JobStatusReport};
use oakestra_runtime::{FakeConfig, FakeRuntime};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Debug)]
struct ChannelReporter(mpsc::UnboundedSender<(Instant, JobStatusReport)>);

impl Reporter for ChannelReporter {
    fn job_status(&self, report: JobStatusReport) {
        let _ = self.0.send((Instant::now(), report));
    }
}

fn deploy(n: u32, env: &[&str], policy: Option<RestartPolicy>) -> DeployCommand {
    let mut cmd: DeployCommand = serde_json::from_value(serde_json::json!({
        "_id": "j", "job_name": "app.ns.svc.ns", "instance_number": n, "image": "busybox",
        "virtualization": "docker", "environment": env
    }))
    .unwrap();
    cmd.restart_policy = policy;
    cmd
}

struct Harness {
    engine: Arc<Engine>,
    runtime: FakeRuntime,
    reports: mpsc::UnboundedReceiver<(Instant, JobStatusReport)>,
    _dir: tempfile::TempDir,
}

fn harness(rules: RestartRules) -> Harness {
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
    engine.set_restart_rules(rules);
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

    /// No report during `d`.
    async fn quiet_for(&mut self, d: Duration) {
        tokio::time::sleep(d).await;
        assert!(self.reports.try_recv().is_err(), "no report expected");
    }
}

const EXIT_1: &[&str] = &["OAK_FAKE_EXIT_AFTER_MS=100", "OAK_FAKE_EXIT_CODE=1"];

#[tokio::test(start_paused = true)]
async fn on_failure_restarts_with_doubling_backoff_then_fails() {
    let mut h = harness(RestartRules::default());
    h.engine
        .deploy(deploy(0, EXIT_1, Some(RestartPolicy::OnFailure)))
        .await;
    let (mut started, r) = h.next().await;
    assert_eq!((r.status, r.restart_count), (DeploymentStatus::Running, 0));
    // Restarts 1..=5 after 1, 2, 4, 8, 16 s, each announced by a DEAD with the exit code.
    for (restart, wait) in [(1u32, 1u64), (2, 2), (3, 4), (4, 8), (5, 16)] {
        let (at, dead) = h.next().await;
        assert_eq!(dead.status, DeploymentStatus::Dead);
        assert!(dead.restarting, "the worker restarts it itself");
        assert_eq!(dead.restart_count, restart - 1);
        assert_eq!(
            dead.status_detail,
            format!("exited with code 1, restart {restart} in {wait} s")
        );
        assert_eq!(at - started, Duration::from_millis(100));
        let (at_running, running) = h.next().await;
        assert_eq!(running.status, DeploymentStatus::Running);
        assert!(!running.restarting);
        assert_eq!(running.restart_count, restart);
        assert_eq!(at_running - at, Duration::from_secs(wait), "back-off");
        started = at_running;
    }
    // The sixth exit within ten minutes: FAILED, not restarted (the cluster places it anew).
    let (_, failed) = h.next().await;
    assert_eq!(failed.status, DeploymentStatus::Failed);
    assert!(!failed.restarting);
    assert_eq!(failed.restart_count, 5);
    assert!(
        failed
            .status_detail
            .starts_with("exited with code 1 after 5 restarts within 600 s"),
        "{}",
        failed.status_detail
    );
    h.quiet_for(Duration::from_secs(120)).await;
    assert_eq!(h.runtime.running_count(), 0);
    let metrics = h.engine.metrics_text();
    assert!(
        metrics.contains("oakestra_node_restarts_total 5"),
        "{metrics}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stable_run_resets_the_backoff_and_the_delay_is_capped() {
    // Runs of 100 ms count as stable: every restart waits the first delay again.
    let mut h = harness(RestartRules {
        stable_after: Duration::from_millis(50),
        max_restarts: 100,
        ..RestartRules::default()
    });
    h.engine
        .deploy(deploy(0, EXIT_1, Some(RestartPolicy::Always)))
        .await;
    assert_eq!(h.next().await.1.status, DeploymentStatus::Running);
    for restart in 1..=4u32 {
        let dead = h.next().await.1;
        assert_eq!(
            dead.status_detail,
            format!("exited with code 1, restart {restart} in 1 s")
        );
        assert_eq!(h.next().await.1.restart_count, restart);
    }
    // Without stable runs the delay doubles up to the cap.
    let rules = RestartRules {
        max_delay: Duration::from_secs(5),
        ..RestartRules::default()
    };
    let delays: Vec<u64> = (0..6).map(|s| rules.delay(s).as_secs()).collect();
    assert_eq!(delays, [1, 2, 4, 5, 5, 5]);
    assert_eq!(rules.delay(u32::MAX), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn exit_codes_by_policy() {
    let mut h = harness(RestartRules::default());
    let exit_0 = &["OAK_FAKE_EXIT_AFTER_MS=100"];
    // always: exit 0 is restarted too.
    h.engine
        .deploy(deploy(0, exit_0, Some(RestartPolicy::Always)))
        .await;
    assert_eq!(h.next().await.1.status, DeploymentStatus::Running);
    let dead = h.next().await.1;
    assert_eq!(
        (dead.status, dead.restarting),
        (DeploymentStatus::Dead, true)
    );
    assert_eq!(dead.status_detail, "exited with code 0, restart 1 in 1 s");
    assert_eq!(h.next().await.1.status, DeploymentStatus::Running);
    h.engine
        .delete(DeleteCommand {
            wire_version: Default::default(),
            job_name: "app.ns.svc.ns".into(),
            virtualization: "docker".into(),
            instance_number: 0,
        })
        .await;
    // The delete may race the next exit; what counts is the end: UNDEPLOYED, nothing after.
    loop {
        let r = h.next().await.1;
        if r.status == DeploymentStatus::Undeployed {
            break;
        }
    }
    h.quiet_for(Duration::from_secs(30)).await;

    // on-failure: exit 0 completes.
    h.engine
        .deploy(deploy(1, exit_0, Some(RestartPolicy::OnFailure)))
        .await;
    assert_eq!(h.next().await.1.status, DeploymentStatus::Running);
    let done = h.next().await.1;
    assert_eq!(done.status, DeploymentStatus::Completed);
    assert_eq!(
        done.status_detail,
        "exited with code 0 (restart_policy on-failure)"
    );

    // never: exit 1 is DEAD for good, exit 0 COMPLETED.
    h.engine
        .deploy(deploy(2, EXIT_1, Some(RestartPolicy::Never)))
        .await;
    assert_eq!(h.next().await.1.status, DeploymentStatus::Running);
    let dead = h.next().await.1;
    assert_eq!(
        (dead.status, dead.restarting, dead.instance),
        (DeploymentStatus::Dead, false, 2)
    );
    h.engine
        .deploy(deploy(3, exit_0, Some(RestartPolicy::Never)))
        .await;
    assert_eq!(h.next().await.1.status, DeploymentStatus::Running);
    assert_eq!(h.next().await.1.status, DeploymentStatus::Completed);
    h.quiet_for(Duration::from_secs(120)).await;
    assert_eq!(h.runtime.running_count(), 0);

    // No policy: Oakestra's DEAD, the worker does not restart it.
    h.engine.deploy(deploy(4, EXIT_1, None)).await;
    assert_eq!(h.next().await.1.status, DeploymentStatus::Running);
    let dead = h.next().await.1;
    assert_eq!(
        (dead.status, dead.restarting, dead.status_detail.as_str()),
        (DeploymentStatus::Dead, false, "exited with code 1")
    );
    h.quiet_for(Duration::from_secs(120)).await;
}

#[tokio::test(start_paused = true)]
async fn a_delete_during_the_backoff_cancels_the_restart() {
    let mut h = harness(RestartRules::default());
    h.engine
        .deploy(deploy(0, EXIT_1, Some(RestartPolicy::OnFailure)))
        .await;
    assert_eq!(h.next().await.1.status, DeploymentStatus::Running);
    assert!(h.next().await.1.restarting);
    h.engine
        .delete(DeleteCommand {
            wire_version: Default::default(),
            job_name: "app.ns.svc.ns".into(),
            virtualization: "docker".into(),
            instance_number: 0,
        })
        .await;
    assert_eq!(h.next().await.1.status, DeploymentStatus::Undeployed);
    h.quiet_for(Duration::from_secs(60)).await;
    assert_eq!(h.runtime.running_count(), 0);

    // A deploy during the back-off starts it at once and keeps the count.
    h.engine
        .deploy(deploy(1, EXIT_1, Some(RestartPolicy::OnFailure)))
        .await;
    assert_eq!(h.next().await.1.status, DeploymentStatus::Running);
    let (dead_at, dead) = h.next().await;
    assert!(dead.restarting);
    h.engine
        .deploy(deploy(1, EXIT_1, Some(RestartPolicy::OnFailure)))
        .await;
    let (at, running) = h.next().await;
    assert_eq!(running.status, DeploymentStatus::Running);
    assert!(
        at - dead_at < Duration::from_secs(1),
        "no waiting for the back-off"
    );
    // The restart scheduled before finds a newer start and does nothing: the next report is
    // the new copy's exit, its back-off from the start.
    let (_, dead) = h.next().await;
    assert_eq!(dead.status_detail, "exited with code 1, restart 1 in 1 s");
    let running = h.next().await.1;
    assert_eq!(running.restart_count, 1);
    assert_eq!(h.runtime.running_count(), 1);
}
