//! The NodeEngine proper: runs the instances the cluster asks for through a [`Runtime`],
//! keeps the desired state on disk, turns runtime events into status reports, and re-adopts
//! what runs after a restart.
//!
//! Operations on one instance (deploy, delete, exit handling, recovery) are serialised by a
//! per-instance async lock, so they never interleave, while different instances proceed in
//! parallel. The in-memory state sits behind a plain mutex that is never held across an
//! `.await`; every change is written to disk before it is reported.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use oakestra_core::status::DeploymentStatus;
use oakestra_proto::mqtt::{
    DeleteCommand, DeployCommand, JobStatusReport, ResourcesReport, ServiceUsage,
};
use oakestra_runtime::{ExitEvent, InstanceId, InstanceSpec, InstanceState, Runtime, RuntimeError};

use crate::metrics::Metrics;
use crate::state::{DesiredInstance, Identity, NodeState, StateFile};

mod probes;
mod restart;
pub use probes::{NetworkProber, Prober};
pub use restart::RestartRules;

/// Bytes of log tail sent with each resources report (Oakestra sends 1 KiB). The root's log
/// endpoint serves what arrives here, so it is a few dozen lines rather than one or two.
pub const LOG_TAIL_BYTES: usize = 4096;

/// Where status changes go (MQTT in the daemon, a channel in tests). Must not block: a report
/// that cannot be sent now is covered by the full status snapshot sent on every (re)connect.
pub trait Reporter: Send + Sync + std::fmt::Debug {
    /// An instance changed status.
    fn job_status(&self, report: JobStatusReport);
}

/// The instances' network (the overlay): set up before an instance starts, removed after it
/// is gone.
#[async_trait::async_trait]
pub trait NetworkHook: Send + Sync + std::fmt::Debug {
    /// Before the runtime starts the instance; an error fails the deploy.
    async fn before_start(&self, deploy: &DeployCommand) -> Result<(), String>;
    /// After the runtime removed the instance (also when it never started).
    async fn after_remove(&self, id: &InstanceId);
    /// Where the worker reaches the instance (its overlay address), for probes; none: the
    /// host's loopback (no overlay).
    fn instance_address(&self, _id: &InstanceId) -> Option<std::net::IpAddr> {
        None
    }
    /// Prometheus text lines of the network's own metrics (none by default).
    fn metrics(&self) -> String {
        String::new()
    }
}

/// The engine; share it as `Arc<Engine>`.
#[derive(Debug)]
pub struct Engine {
    runtime: Arc<dyn Runtime>,
    network: Mutex<Option<Arc<dyn NetworkHook>>>,
    state: Mutex<NodeState>,
    file: StateFile,
    key_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    reporter: Arc<dyn Reporter>,
    public_ip: Mutex<String>,
    stop_grace: Duration,
    metrics: Arc<Metrics>,
    restart_rules: Mutex<RestartRules>,
    prober: Mutex<Arc<dyn Prober>>,
    /// The engine itself, for the tasks it spawns (probes).
    me: Weak<Engine>,
}

/// Status after an exit with `code`: one-shot tasks that succeeded are `COMPLETED`, every
/// other exit is `DEAD` (the cluster decides about restarting).
pub fn status_after_exit(one_shot: bool, code: i32) -> DeploymentStatus {
    if one_shot && code == 0 {
        DeploymentStatus::Completed
    } else {
        DeploymentStatus::Dead
    }
}

fn ignore_not_found(result: Result<(), RuntimeError>) -> Result<(), RuntimeError> {
    match result {
        Err(RuntimeError::NotFound(_)) => Ok(()),
        other => other,
    }
}

impl Engine {
    /// An engine over `runtime` starting from the saved `state`.
    pub fn new(
        runtime: Arc<dyn Runtime>,
        file: StateFile,
        state: NodeState,
        reporter: Arc<dyn Reporter>,
        public_ip: String,
        stop_grace: Duration,
    ) -> Arc<Self> {
        let prober: Arc<dyn Prober> = Arc::new(NetworkProber::new(Arc::clone(&runtime)));
        Arc::new_cyclic(|me| Self {
            runtime,
            network: Mutex::new(None),
            state: Mutex::new(state),
            file,
            key_locks: Mutex::new(HashMap::new()),
            reporter,
            public_ip: Mutex::new(public_ip),
            stop_grace,
            metrics: Arc::new(Metrics::default()),
            restart_rules: Mutex::new(RestartRules::default()),
            prober: Mutex::new(prober),
            me: me.clone(),
        })
    }

    /// Probes run through `prober` from now on (tests).
    pub fn set_prober(&self, prober: Arc<dyn Prober>) {
        *self.prober.lock().unwrap_or_else(|p| p.into_inner()) = prober;
    }

    fn prober(&self) -> Arc<dyn Prober> {
        Arc::clone(&self.prober.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Restarts under a `restart_policy` follow `rules` from now on.
    pub fn set_restart_rules(&self, rules: RestartRules) {
        *self.restart_rules.lock().unwrap_or_else(|p| p.into_inner()) = rules;
    }

    fn restart_rules(&self) -> RestartRules {
        *self.restart_rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives instances their network through `hook` from now on.
    pub fn set_network(&self, hook: Arc<dyn NetworkHook>) {
        *self.network.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// The network's own metrics lines (empty without an overlay).
    pub fn network_metrics(&self) -> String {
        self.network().map(|n| n.metrics()).unwrap_or_default()
    }

    fn network(&self) -> Option<Arc<dyn NetworkHook>> {
        self.network
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Removes the network of an instance the runtime no longer holds.
    async fn remove_network(&self, id: &InstanceId) {
        if let Some(network) = self.network() {
            network.after_remove(id).await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, NodeState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The worker's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The Prometheus text of the worker's metrics, its instances by status and its network.
    pub fn metrics_text(&self) -> String {
        self.metrics
            .render(&self.statuses(), &self.network_metrics())
    }

    /// The runtime.
    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }

    /// The saved identity, if the worker registered before.
    pub fn identity(&self) -> Option<Identity> {
        self.lock().identity.clone()
    }

    /// Records (and saves) the identity from a registration.
    pub async fn set_identity(&self, identity: Identity) {
        self.lock().identity = Some(identity);
        self.save().await;
    }

    /// Sets the address sent as `publicip`.
    pub fn set_public_ip(&self, ip: String) {
        *self
            .public_ip
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = ip;
    }

    /// Task id → status of every instance the worker holds.
    pub fn statuses(&self) -> Vec<(String, DeploymentStatus)> {
        self.lock()
            .instances
            .iter()
            .map(|(k, v)| (k.clone(), v.status))
            .collect()
    }

    async fn save(&self) {
        let result = self.file.save_with(|| self.lock().clone()).await;
        if let Err(e) = result {
            // The instance still runs; only a crash before the next successful save would
            // lose track of this change.
            tracing::error!("cannot save the worker state: {e}");
        }
    }

    fn key_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .key_locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(locks.entry(key.to_owned()).or_default())
    }

    fn forget_key_lock(&self, key: &str) {
        let mut locks = self
            .key_locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Only when nobody else waits on it.
        if locks.get(key).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(key);
        }
    }

    fn report_of(&self, entry: &DesiredInstance) -> JobStatusReport {
        JobStatusReport {
            wire_version: Default::default(),
            sname: entry.deploy.job_name.clone(),
            status: entry.status,
            status_detail: entry.status_detail.clone(),
            instance: entry.deploy.instance_number,
            publicip: self
                .public_ip
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
            restart_count: entry.restart_count,
            restarting: entry.restart_pending && entry.status == DeploymentStatus::Dead,
            ready: entry.ready,
        }
    }

    /// Sets the status of `key` (if it exists), saves, then reports.
    async fn set_status(
        &self,
        key: &str,
        status: DeploymentStatus,
        detail: String,
        incarnation: Option<u64>,
    ) {
        let report = {
            let mut state = self.lock();
            let Some(entry) = state.instances.get_mut(key) else {
                return;
            };
            entry.status = status;
            entry.status_detail = detail;
            if incarnation.is_some() {
                entry.incarnation = incarnation;
            }
            self.report_of(entry)
        };
        self.save().await;
        tracing::info!(instance = key, status = %report.status, detail = %report.status_detail, "status");
        self.reporter.job_status(report);
    }

    /// The status of every instance, for the snapshot sent on every (re)connect.
    pub fn status_snapshot(&self) -> Vec<JobStatusReport> {
        self.lock()
            .instances
            .values()
            .filter(|e| !e.deleting)
            .map(|e| self.report_of(e))
            .collect()
    }

    /// Handles `control/deploy`. Idempotent: a deploy of an instance that is starting or
    /// running only repeats its status; one that ended is started afresh.
    pub async fn deploy(&self, cmd: DeployCommand) {
        Metrics::inc(&self.metrics.deploys);
        let id = InstanceId::new(cmd.job_name.clone(), cmd.instance_number);
        let key = id.to_string();
        let lock = self.key_lock(&key);
        let _guard = lock.lock().await;
        let existing = self.lock().instances.get(&key).cloned();
        if let Some(entry) = &existing
            && entry.wants_running()
        {
            tracing::info!(instance = %key, "already deployed; repeating its status");
            self.reporter.job_status(self.report_of(entry));
            return;
        }
        if existing.is_some() {
            // An ended copy may still be held by the runtime.
            if let Err(e) = ignore_not_found(self.runtime.delete(&id).await) {
                tracing::warn!(instance = %key, "cannot remove the ended copy: {e}");
            }
        }
        // A deploy during a restart's back-off starts it now; the count goes on.
        let restart_count = existing.map_or(0, |e| e.restart_count);
        self.lock().instances.insert(
            key.clone(),
            DesiredInstance {
                restart_count,
                ..DesiredInstance::new(cmd)
            },
        );
        // Saved before the runtime starts anything, so a crash cannot leave an instance
        // running that the worker does not know about.
        self.save().await;
        self.start_instance(&key).await;
    }

    /// Starts `key` (lock held by the caller) and records the outcome.
    async fn start_instance(&self, key: &str) {
        let Some(deploy) = self.lock().instances.get(key).map(|e| e.deploy.clone()) else {
            return;
        };
        let begun = tokio::time::Instant::now();
        let started = async {
            let spec = InstanceSpec::from_deploy(&deploy)?;
            self.runtime.ensure_image(&spec).await?;
            if let Some(network) = self.network() {
                network
                    .before_start(&deploy)
                    .await
                    .map_err(|reason| RuntimeError::Start {
                        id: spec.id.to_string(),
                        reason,
                    })?;
            }
            self.runtime.start(&spec).await
        }
        .await;
        match started {
            Ok(incarnation) => {
                if let Some(entry) = self.lock().instances.get_mut(key) {
                    entry.started_at = Some(tokio::time::Instant::now());
                    entry.begin_run();
                }
                self.metrics.deploy_micros.fetch_add(
                    begun.elapsed().as_micros() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                self.set_status(
                    key,
                    DeploymentStatus::Running,
                    String::new(),
                    Some(incarnation),
                )
                .await;
                self.start_probes(key, incarnation);
            }
            Err(e) => {
                Metrics::inc(&self.metrics.deploy_failures);
                if !matches!(e, RuntimeError::AlreadyExists(_)) {
                    let id = InstanceId::new(deploy.job_name.clone(), deploy.instance_number);
                    let _ = self.runtime.delete(&id).await;
                    self.remove_network(&id).await;
                }
                self.set_status(key, DeploymentStatus::Failed, e.to_string(), None)
                    .await;
            }
        }
    }

    /// Handles `control/delete`: stops and removes the instance and reports `UNDEPLOYED`
    /// (once; the exit this causes is not reported as `DEAD`).
    pub async fn delete(&self, cmd: DeleteCommand) {
        Metrics::inc(&self.metrics.deletes);
        let id = InstanceId::new(cmd.job_name.clone(), cmd.instance_number);
        let key = id.to_string();
        let lock = self.key_lock(&key);
        let guard = lock.lock().await;
        let report = {
            let mut state = self.lock();
            match state.instances.get_mut(&key) {
                Some(entry) => {
                    entry.deleting = true;
                    entry.status = DeploymentStatus::Undeployed;
                    entry.status_detail = String::new();
                    Some(self.report_of(entry))
                }
                None => None,
            }
        };
        self.save().await;
        if let Err(e) = ignore_not_found(self.runtime.stop(&id, self.stop_grace).await) {
            tracing::warn!(instance = %key, "stop failed: {e}");
        }
        if let Err(e) = ignore_not_found(self.runtime.delete(&id).await) {
            tracing::warn!(instance = %key, "delete failed: {e}");
        }
        self.remove_network(&id).await;
        self.lock().instances.remove(&key);
        self.save().await;
        let report = report.unwrap_or_else(|| JobStatusReport {
            wire_version: Default::default(),
            sname: cmd.job_name.clone(),
            status: DeploymentStatus::Undeployed,
            status_detail: "the worker did not hold this instance".into(),
            instance: cmd.instance_number,
            publicip: self
                .public_ip
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
            restart_count: 0,
            restarting: false,
            ready: None,
        });
        tracing::info!(instance = %key, "undeployed");
        self.reporter.job_status(report);
        drop(guard);
        drop(lock);
        self.forget_key_lock(&key);
    }

    /// Handles an exit event of the runtime.
    pub async fn on_exit(self: &Arc<Self>, event: ExitEvent) {
        let key = event.id.to_string();
        let lock = self.key_lock(&key);
        let _guard = lock.lock().await;
        {
            let state = self.lock();
            match state.instances.get(&key) {
                Some(e)
                    if !e.deleting
                        && e.incarnation == Some(event.incarnation)
                        && e.wants_running() => {}
                // A copy we are deleting, an older incarnation, or something we do not own.
                _ => return,
            }
        }
        Metrics::inc(&self.metrics.exits);
        // The runtime may know more than the code (e.g. OOMKilled by the memory limit).
        let exited = match self.runtime.exit_reason(&event.id, event.incarnation).await {
            Some(reason) => format!("exited with code {} ({reason})", event.exit_code),
            None => format!("exited with code {}", event.exit_code),
        };
        self.after_exit(&key, event.exit_code, exited, Some(event.incarnation))
            .await;
        // The record of the instance stays (a restart of the worker must not run it again,
        // and a restart under its policy starts it afresh); the runtime's resources go.
        if let Err(e) = ignore_not_found(self.runtime.delete(&event.id).await) {
            tracing::warn!(instance = %key, "cannot clean up after the exit: {e}");
        }
        self.remove_network(&event.id).await;
    }

    /// Feeds the runtime's exit events to [`Engine::on_exit`]. Subscribes before returning,
    /// so no exit after this call is missed.
    pub fn spawn_exit_watcher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let mut events = self.runtime.exit_events();
        let engine = Arc::clone(self);
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let engine = Arc::clone(&engine);
                tokio::spawn(async move { engine.on_exit(event).await });
            }
        })
    }

    /// After a restart: re-adopts instances the runtime still runs, reports those that ended
    /// meanwhile, starts again those the runtime lost, finishes interrupted deletes, and
    /// removes runtime instances the worker does not own. Call after
    /// [`Engine::spawn_exit_watcher`].
    pub async fn recover(self: &Arc<Self>) -> Result<(), RuntimeError> {
        let actual = self.runtime.list().await?;
        let actual: HashMap<String, _> = actual
            .into_iter()
            .map(|s| (s.spec.id.to_string(), s))
            .collect();
        let keys: Vec<String> = self.lock().instances.keys().cloned().collect();
        let mut adopted = 0usize;
        let mut restarted = 0usize;
        for key in &keys {
            let lock = self.key_lock(key);
            let _guard = lock.lock().await;
            let Some(entry) = self.lock().instances.get(key).cloned() else {
                continue;
            };
            let id = entry.id();
            if entry.deleting {
                let _ = ignore_not_found(self.runtime.delete(&id).await);
                self.remove_network(&id).await;
                self.lock().instances.remove(key);
                self.save().await;
                self.reporter.job_status(self.report_of(&entry));
                continue;
            }
            if !entry.wants_running() {
                if actual.contains_key(key) {
                    let _ = ignore_not_found(self.runtime.delete(&id).await);
                }
                if entry.restart_pending {
                    // Its back-off was under way when the worker stopped: restart it now.
                    restarted += 1;
                    self.restart_locked(key, entry.incarnation).await;
                }
                continue;
            }
            match actual.get(key) {
                Some(found) if found.state == InstanceState::Running => {
                    adopted += 1;
                    if let Some(entry) = self.lock().instances.get_mut(key) {
                        entry.begin_run();
                    }
                    self.set_status(
                        key,
                        DeploymentStatus::Running,
                        String::new(),
                        Some(found.incarnation),
                    )
                    .await;
                    self.start_probes(key, found.incarnation);
                }
                Some(found) => {
                    let code = match found.state {
                        InstanceState::Exited { code } => code,
                        InstanceState::Running => 0,
                    };
                    if let Some(e) = self.lock().instances.get_mut(key) {
                        e.incarnation = Some(found.incarnation);
                    }
                    self.after_exit(
                        key,
                        code,
                        format!("exited with code {code} while the worker was down"),
                        Some(found.incarnation),
                    )
                    .await;
                    let _ = ignore_not_found(self.runtime.delete(&id).await);
                    self.remove_network(&id).await;
                }
                None => {
                    restarted += 1;
                    tracing::info!(instance = %key, "the runtime lost it; starting it again");
                    self.start_instance(key).await;
                }
            }
        }
        for (key, found) in &actual {
            if !self.lock().instances.contains_key(key) {
                tracing::info!(instance = %key, "removing an instance the worker does not own");
                let _ = ignore_not_found(self.runtime.delete(&found.spec.id).await);
            }
        }
        if !keys.is_empty() {
            tracing::info!(
                adopted,
                restarted,
                total = keys.len(),
                "recovered the instances"
            );
        }
        Ok(())
    }

    /// Usage of every running instance (`jobs/resources`), with memory in percent of
    /// `memory_total_mb`.
    pub async fn resources(&self, memory_total_mb: u64) -> ResourcesReport {
        let running: Vec<DeployCommand> = self
            .lock()
            .instances
            .values()
            .filter(|e| !e.deleting && e.status == DeploymentStatus::Running)
            .map(|e| e.deploy.clone())
            .collect();
        // One task per instance: a runtime may take a while per call (containerd's first CPU
        // sample of an instance waits 100 ms), and a hundred of them one after the other would
        // hold the report back for seconds.
        let mut tasks = tokio::task::JoinSet::new();
        for deploy in running {
            let runtime = Arc::clone(&self.runtime);
            tasks.spawn(async move {
                let id = InstanceId::new(deploy.job_name.clone(), deploy.instance_number);
                let stats = runtime.stats(&id).await.ok()?;
                let logs = runtime
                    .logs_tail(&id, LOG_TAIL_BYTES)
                    .await
                    .unwrap_or_default();
                let memory_percent = if memory_total_mb > 0 {
                    100.0 * stats.memory_bytes as f64 / (memory_total_mb as f64 * 1024.0 * 1024.0)
                } else {
                    0.0
                };
                Some(ServiceUsage {
                    cpu_percent: stats.cpu_percent,
                    memory_percent: (memory_percent * 100.0).round() / 100.0,
                    disk: stats.disk_bytes,
                    logs,
                    job_name: deploy.job_name,
                    virtualization: deploy.virtualization,
                    instance: deploy.instance_number,
                })
            });
        }
        let mut services = Vec::with_capacity(tasks.len());
        while let Some(done) = tasks.join_next().await {
            if let Ok(Some(usage)) = done {
                services.push(usage);
            }
        }
        services.sort_by(|a, b| (&a.job_name, a.instance).cmp(&(&b.job_name, b.instance)));
        ResourcesReport {
            wire_version: Default::default(),
            services,
        }
    }
}

impl crate::metrics::MetricsSource for Engine {
    fn metrics_text(&self) -> String {
        Engine::metrics_text(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oakestra_runtime::{FakeConfig, FakeRuntime};
    use tokio::sync::mpsc;

    #[derive(Debug)]
    struct ChannelReporter(mpsc::UnboundedSender<JobStatusReport>);

    impl Reporter for ChannelReporter {
        fn job_status(&self, report: JobStatusReport) {
            let _ = self.0.send(report);
        }
    }

    fn deploy(n: u32, env: &[&str], one_shot: bool) -> DeployCommand {
        serde_json::from_value(serde_json::json!({
            "_id": "j", "job_name": "app.ns.svc.ns", "instance_number": n, "image": "busybox",
            "virtualization": "docker", "environment": env, "one_shot": one_shot
        }))
        .unwrap()
    }

    fn delete(n: u32) -> DeleteCommand {
        DeleteCommand {
            wire_version: Default::default(),
            job_name: "app.ns.svc.ns".into(),
            virtualization: "docker".into(),
            instance_number: n,
        }
    }

    struct Harness {
        engine: Arc<Engine>,
        runtime: FakeRuntime,
        reports: mpsc::UnboundedReceiver<JobStatusReport>,
        _dir: tempfile::TempDir,
    }

    fn engine_at(
        data: &std::path::Path,
        runtime: &FakeRuntime,
    ) -> (Arc<Engine>, mpsc::UnboundedReceiver<JobStatusReport>) {
        let (tx, reports) = mpsc::unbounded_channel();
        let file = StateFile::new(data);
        let state = file.load().unwrap();
        let engine = Engine::new(
            Arc::new(runtime.clone()),
            file,
            state,
            Arc::new(ChannelReporter(tx)),
            "10.0.0.5".into(),
            Duration::from_secs(1),
        );
        engine.spawn_exit_watcher();
        (engine, reports)
    }

    fn harness(dir: tempfile::TempDir, runtime: FakeRuntime) -> Harness {
        let (engine, reports) = engine_at(dir.path(), &runtime);
        Harness {
            engine,
            runtime,
            reports,
            _dir: dir,
        }
    }

    async fn next(h: &mut Harness) -> (DeploymentStatus, u32, String) {
        let r = h.reports.recv().await.unwrap();
        (r.status, r.instance, r.status_detail)
    }

    #[tokio::test(start_paused = true)]
    async fn deploy_runs_exits_and_deletes() {
        let runtime = FakeRuntime::new(FakeConfig::default()).unwrap();
        let mut h = harness(tempfile::tempdir().unwrap(), runtime);
        h.engine.deploy(deploy(0, &[], false)).await;
        assert_eq!(next(&mut h).await.0, DeploymentStatus::Running);
        // A repeated deploy does not start a second copy.
        h.engine.deploy(deploy(0, &[], false)).await;
        assert_eq!(next(&mut h).await.0, DeploymentStatus::Running);
        assert_eq!(h.runtime.running_count(), 1);

        let usage = h.engine.resources(1024).await;
        assert_eq!(usage.services.len(), 1);
        assert!((usage.services[0].memory_percent - 0.78).abs() < 0.01);

        // One-shot, exit 0 → COMPLETED; exit 2 → DEAD; non-one-shot exit 0 → DEAD.
        h.engine
            .deploy(deploy(1, &["OAK_FAKE_EXIT_AFTER_MS=100"], true))
            .await;
        assert_eq!(next(&mut h).await.0, DeploymentStatus::Running);
        let (status, n, detail) = next(&mut h).await;
        assert_eq!((status, n), (DeploymentStatus::Completed, 1));
        assert_eq!(detail, "exited with code 0");
        h.engine
            .deploy(deploy(
                2,
                &["OAK_FAKE_EXIT_AFTER_MS=100", "OAK_FAKE_EXIT_CODE=2"],
                true,
            ))
            .await;
        assert_eq!(next(&mut h).await.0, DeploymentStatus::Running);
        assert_eq!(next(&mut h).await.0, DeploymentStatus::Dead);
        h.engine
            .deploy(deploy(3, &["OAK_FAKE_EXIT_AFTER_MS=100"], false))
            .await;
        assert_eq!(next(&mut h).await.0, DeploymentStatus::Running);
        assert_eq!(next(&mut h).await.0, DeploymentStatus::Dead);

        // Delete: UNDEPLOYED once, no DEAD for the kill.
        h.engine.delete(delete(0)).await;
        assert_eq!(next(&mut h).await.0, DeploymentStatus::Undeployed);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(h.reports.try_recv().is_err());
        assert_eq!(h.runtime.running_count(), 0);
        assert!(h.runtime.list().await.unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_reported_with_the_reason() {
        let runtime = FakeRuntime::new(FakeConfig::default()).unwrap();
        let mut h = harness(tempfile::tempdir().unwrap(), runtime);
        h.engine
            .deploy(deploy(0, &["OAK_FAKE_FAIL_IMAGE=manifest unknown"], false))
            .await;
        let (status, _, detail) = next(&mut h).await;
        assert_eq!(status, DeploymentStatus::Failed);
        assert_eq!(detail, "image busybox: manifest unknown");
        let mut bad = deploy(1, &[], false);
        bad.port = "80:x".into();
        h.engine.deploy(bad).await;
        let (status, _, detail) = next(&mut h).await;
        assert_eq!(status, DeploymentStatus::Failed);
        assert!(detail.contains("port"), "{detail}");
        // A failed instance can be deployed again.
        h.engine.deploy(deploy(0, &[], false)).await;
        assert_eq!(next(&mut h).await.0, DeploymentStatus::Running);
    }

    #[tokio::test]
    async fn restart_re_adopts_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let fake_config = FakeConfig {
            state_file: Some(dir.path().join("fake.json")),
            ..FakeConfig::default()
        };
        let data = dir.path().to_owned();
        {
            let runtime = FakeRuntime::new(fake_config.clone()).unwrap();
            let (engine, mut reports) = engine_at(&data, &runtime);
            engine.deploy(deploy(0, &[], false)).await;
            engine.deploy(deploy(1, &[], false)).await;
            assert_eq!(
                reports.recv().await.unwrap().status,
                DeploymentStatus::Running
            );
            assert_eq!(
                reports.recv().await.unwrap().status,
                DeploymentStatus::Running
            );
        }
        // The runtime lost instance 1 while the worker was down, and holds an orphan.
        {
            let runtime = FakeRuntime::new(fake_config.clone()).unwrap();
            runtime
                .delete(&InstanceId::new("app.ns.svc.ns", 1))
                .await
                .unwrap();
            let orphan = InstanceSpec::from_deploy(&deploy(9, &[], false)).unwrap();
            runtime.start(&orphan).await.unwrap();
        }
        let runtime = FakeRuntime::new(fake_config).unwrap();
        let (engine, mut reports) = engine_at(&data, &runtime);
        engine.recover().await.unwrap();
        let mut seen = vec![];
        while let Ok(r) = reports.try_recv() {
            seen.push((r.instance, r.status));
        }
        seen.sort_by_key(|s| s.0);
        assert_eq!(
            seen,
            vec![
                (0, DeploymentStatus::Running),
                (1, DeploymentStatus::Running)
            ]
        );
        let list = runtime.list().await.unwrap();
        let ids: Vec<u32> = list.iter().map(|s| s.spec.id.instance).collect();
        assert_eq!(
            ids,
            vec![0, 1],
            "orphan removed, lost one restarted, no duplicates"
        );
        assert_eq!(engine.status_snapshot().len(), 2);
    }
}
