//! An in-memory [`Runtime`] for tests and the simulator.
//!
//! Instances "run" until stopped, deleted, or until an injected exit fires. Behaviour comes
//! from [`FakeConfig`] (defaults for every instance) and can be set per instance through its
//! environment, so a test or a simulated deployment drives failures with an ordinary
//! descriptor:
//!
//! | variable | effect |
//! |---|---|
//! | `OAK_FAKE_FAIL_IMAGE=<reason>` | `ensure_image` fails with the reason |
//! | `OAK_FAKE_FAIL_START=<reason>` | `start` fails with the reason |
//! | `OAK_FAKE_START_LATENCY_MS=<n>` | `start` takes n ms |
//! | `OAK_FAKE_EXIT_AFTER_MS=<n>` | the task exits n ms after it started … |
//! | `OAK_FAKE_EXIT_CODE=<x>` | … with code x (default 0) |
//!
//! All waiting uses tokio time, so tests under `tokio::time::pause` are deterministic.
//! With [`FakeConfig::state_file`] set the instances survive a restart of the process that
//! holds the runtime (as containers survive a restart of the worker agent): what runs is
//! written to that file and read back by [`FakeRuntime::new`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::{
    ExitEvent, InstanceId, InstanceSpec, InstanceState, InstanceStats, InstanceStatus, Runtime,
    RuntimeError,
};

/// Environment key: `ensure_image` fails with this reason.
pub const ENV_FAIL_IMAGE: &str = "OAK_FAKE_FAIL_IMAGE";
/// Environment key: `start` fails with this reason.
pub const ENV_FAIL_START: &str = "OAK_FAKE_FAIL_START";
/// Environment key: start latency in ms.
pub const ENV_START_LATENCY_MS: &str = "OAK_FAKE_START_LATENCY_MS";
/// Environment key: the task exits this many ms after it started.
pub const ENV_EXIT_AFTER_MS: &str = "OAK_FAKE_EXIT_AFTER_MS";
/// Environment key: exit code of an injected exit (default 0).
pub const ENV_EXIT_CODE: &str = "OAK_FAKE_EXIT_CODE";
/// Environment key: the task writes this many lines (`fake: output line <i>`, i from 1) to
/// its log right after it started (at most 100 000), e.g. to test long log tails.
pub const ENV_LOG_LINES: &str = "OAK_FAKE_LOG_LINES";

/// What a fake task has written when it has just started.
fn initial_log(spec: &InstanceSpec) -> String {
    let mut log = format!("fake: started {} from {}\n", spec.id, spec.image);
    let lines = spec
        .env_value(ENV_LOG_LINES)
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0)
        .min(100_000);
    for i in 1..=lines {
        log.push_str(&format!("fake: output line {i}\n"));
    }
    log
}

/// Exit code of a stopped (killed) fake task: 128 + SIGKILL.
pub const KILLED_EXIT_CODE: i32 = 137;

/// Defaults for every instance of a [`FakeRuntime`].
#[derive(Debug, Clone, PartialEq)]
pub struct FakeConfig {
    /// How long `start` takes.
    pub start_latency: Duration,
    /// How long `ensure_image` takes.
    pub image_latency: Duration,
    /// Every start fails with this reason.
    pub fail_start: Option<String>,
    /// Every n-th start fails (1 = all, 0 = none), for simulated flaky workers.
    pub fail_every_nth_start: u32,
    /// Every task exits after this long with this code.
    pub exit_after: Option<(Duration, i32)>,
    /// Reported CPU use of a running instance, percent.
    pub cpu_percent: f64,
    /// Reported memory of a running instance, bytes (capped by its memory limit).
    pub memory_bytes: u64,
    /// Reported disk use, bytes.
    pub disk_bytes: u64,
    /// Advertised virtualizations; starting another one fails.
    pub virtualizations: Vec<String>,
    /// Where the instances are kept across restarts; `None` keeps them in memory only.
    pub state_file: Option<PathBuf>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            start_latency: Duration::ZERO,
            image_latency: Duration::ZERO,
            fail_start: None,
            fail_every_nth_start: 0,
            exit_after: None,
            cpu_percent: 1.0,
            memory_bytes: 8 << 20,
            disk_bytes: 4096,
            virtualizations: vec!["docker".into(), "unikernel".into()],
            state_file: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FakeInstance {
    spec: InstanceSpec,
    incarnation: u64,
    state: InstanceState,
    /// Wall-clock ms since the epoch at which an injected exit fires (persisted form).
    exit_at_unix_ms: Option<u64>,
    exit_code: i32,
    log: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    next_incarnation: u64,
    instances: Vec<FakeInstance>,
}

#[derive(Debug, Default)]
struct Inner {
    instances: HashMap<InstanceId, FakeInstance>,
    next_incarnation: u64,
    starts: u64,
    exec_codes: HashMap<InstanceId, i32>,
    subscribers: Vec<mpsc::UnboundedSender<ExitEvent>>,
}

#[derive(Debug)]
struct Shared {
    config: FakeConfig,
    inner: Mutex<Inner>,
    /// Serialises writes of the state file so a newer snapshot is never overwritten by an older one.
    persist_lock: tokio::sync::Mutex<()>,
}

/// The in-memory runtime. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct FakeRuntime {
    shared: Arc<Shared>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn env_ms(spec: &InstanceSpec, key: &str) -> Option<Duration> {
    spec.env_value(key)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
}

impl FakeRuntime {
    /// A fake runtime; with a state file, the instances it held before are back (running
    /// ones keep running, injected exits that fell due meanwhile fire at once).
    /// Must be called inside a tokio runtime.
    pub fn new(config: FakeConfig) -> Result<Self, RuntimeError> {
        let mut inner = Inner {
            next_incarnation: 1,
            ..Inner::default()
        };
        if let Some(path) = &config.state_file {
            match std::fs::read(path) {
                Ok(bytes) => {
                    let persisted: Persisted =
                        serde_json::from_slice(&bytes).map_err(|e| RuntimeError::Backend {
                            what: format!("reading the fake runtime state {}", path.display()),
                            reason: format!("{e}; delete the file to start empty"),
                        })?;
                    inner.next_incarnation = persisted.next_incarnation.max(1);
                    for instance in persisted.instances {
                        inner.instances.insert(instance.spec.id.clone(), instance);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(RuntimeError::Backend {
                        what: format!("reading the fake runtime state {}", path.display()),
                        reason: e.to_string(),
                    });
                }
            }
        }
        let pending: Vec<(InstanceId, u64, u64)> = inner
            .instances
            .values()
            .filter(|i| i.state == InstanceState::Running)
            .filter_map(|i| {
                i.exit_at_unix_ms
                    .map(|at| (i.spec.id.clone(), i.incarnation, at))
            })
            .collect();
        let runtime = Self {
            shared: Arc::new(Shared {
                config,
                inner: Mutex::new(inner),
                persist_lock: tokio::sync::Mutex::new(()),
            }),
        };
        let now = unix_ms();
        for (id, incarnation, at) in pending {
            runtime.arm_exit(
                id,
                incarnation,
                Duration::from_millis(at.saturating_sub(now)),
            );
        }
        Ok(runtime)
    }

    /// The configuration.
    pub fn config(&self) -> &FakeConfig {
        &self.shared.config
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep going with it.
        self.shared
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Number of instances that run now (tests, simulator statistics).
    pub fn running_count(&self) -> usize {
        self.lock()
            .instances
            .values()
            .filter(|i| i.state == InstanceState::Running)
            .count()
    }

    /// What commands run in `id` with [`Runtime::exec`] exit with from now on (default 0;
    /// tests of exec probes).
    pub fn set_exec_exit_code(&self, id: &InstanceId, code: i32) {
        self.lock().exec_codes.insert(id.clone(), code);
    }

    /// Makes a running instance exit now with `code` (tests).
    pub async fn crash(&self, id: &InstanceId, code: i32) -> Result<(), RuntimeError> {
        let incarnation = self
            .lock()
            .instances
            .get(id)
            .map(|i| i.incarnation)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        self.exit(id, incarnation, code);
        self.persist().await
    }

    fn arm_exit(&self, id: InstanceId, incarnation: u64, after: Duration) {
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let code = this
                .lock()
                .instances
                .get(&id)
                .map(|i| i.exit_code)
                .unwrap_or(0);
            this.exit(&id, incarnation, code);
            if let Err(e) = this.persist().await {
                tracing::warn!("fake runtime: {e}");
            }
        });
    }

    /// Marks the instance exited and tells the subscribers, if it is still that incarnation
    /// and running.
    fn exit(&self, id: &InstanceId, incarnation: u64, code: i32) {
        let mut inner = self.lock();
        let Some(instance) = inner.instances.get_mut(id) else {
            return;
        };
        if instance.incarnation != incarnation || instance.state != InstanceState::Running {
            return;
        }
        instance.state = InstanceState::Exited { code };
        instance.exit_at_unix_ms = None;
        instance
            .log
            .push_str(&format!("fake: task exited with code {code}\n"));
        let event = ExitEvent {
            id: id.clone(),
            incarnation,
            exit_code: code,
        };
        inner
            .subscribers
            .retain(|tx| tx.send(event.clone()).is_ok());
    }

    async fn persist(&self) -> Result<(), RuntimeError> {
        let Some(path) = self.shared.config.state_file.clone() else {
            return Ok(());
        };
        let _guard = self.shared.persist_lock.lock().await;
        let bytes = {
            let inner = self.lock();
            let persisted = Persisted {
                next_incarnation: inner.next_incarnation,
                instances: inner.instances.values().cloned().collect(),
            };
            serde_json::to_vec(&persisted).unwrap_or_default()
        };
        let tmp = path.with_extension("tmp");
        let backend = |e: std::io::Error| RuntimeError::Backend {
            what: format!("writing the fake runtime state {}", path.display()),
            reason: e.to_string(),
        };
        tokio::fs::write(&tmp, bytes).await.map_err(backend)?;
        tokio::fs::rename(&tmp, &path).await.map_err(backend)
    }

    fn check_virtualization(&self, spec: &InstanceSpec) -> Result<(), RuntimeError> {
        let supported = &self.shared.config.virtualizations;
        let wanted = if spec.virtualization == "container" {
            "docker"
        } else {
            spec.virtualization.as_str()
        };
        if supported.iter().any(|v| v == wanted) {
            Ok(())
        } else {
            Err(RuntimeError::Unsupported {
                virtualization: spec.virtualization.clone(),
                runtime: "fake",
                supported: supported.join(", "),
            })
        }
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn virtualizations(&self) -> Vec<String> {
        self.shared.config.virtualizations.clone()
    }

    async fn ensure_image(&self, spec: &InstanceSpec) -> Result<(), RuntimeError> {
        self.check_virtualization(spec)?;
        let latency = self.shared.config.image_latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if let Some(reason) = spec.env_value(ENV_FAIL_IMAGE) {
            return Err(RuntimeError::Image {
                image: spec.image.clone(),
                reason: reason.to_owned(),
            });
        }
        Ok(())
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<u64, RuntimeError> {
        self.check_virtualization(spec)?;
        let config = &self.shared.config;
        if self.lock().instances.contains_key(&spec.id) {
            return Err(RuntimeError::AlreadyExists(spec.id.to_string()));
        }
        let latency = env_ms(spec, ENV_START_LATENCY_MS).unwrap_or(config.start_latency);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let fail = |reason: String| RuntimeError::Start {
            id: spec.id.to_string(),
            reason,
        };
        if let Some(reason) = spec.env_value(ENV_FAIL_START) {
            return Err(fail(reason.to_owned()));
        }
        if let Some(reason) = &config.fail_start {
            return Err(fail(reason.clone()));
        }
        let exit = match env_ms(spec, ENV_EXIT_AFTER_MS) {
            Some(after) => {
                let code = spec
                    .env_value(ENV_EXIT_CODE)
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                Some((after, code))
            }
            None => config.exit_after,
        };
        let incarnation = {
            let mut inner = self.lock();
            inner.starts += 1;
            let nth = config.fail_every_nth_start;
            if nth > 0 && inner.starts.is_multiple_of(u64::from(nth)) {
                return Err(fail(format!(
                    "injected failure (every {nth}th start fails)"
                )));
            }
            if inner.instances.contains_key(&spec.id) {
                return Err(RuntimeError::AlreadyExists(spec.id.to_string()));
            }
            let incarnation = inner.next_incarnation;
            inner.next_incarnation += 1;
            inner.instances.insert(
                spec.id.clone(),
                FakeInstance {
                    spec: spec.clone(),
                    incarnation,
                    state: InstanceState::Running,
                    exit_at_unix_ms: exit.map(|(after, _)| unix_ms() + after.as_millis() as u64),
                    exit_code: exit.map(|(_, code)| code).unwrap_or(0),
                    log: initial_log(spec),
                },
            );
            incarnation
        };
        if let Some((after, _)) = exit {
            self.arm_exit(spec.id.clone(), incarnation, after);
        }
        self.persist().await?;
        Ok(incarnation)
    }

    async fn stop(&self, id: &InstanceId, _grace: Duration) -> Result<(), RuntimeError> {
        let incarnation = self
            .lock()
            .instances
            .get(id)
            .map(|i| i.incarnation)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        self.exit(id, incarnation, KILLED_EXIT_CODE);
        self.persist().await
    }

    async fn delete(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        let incarnation = self
            .lock()
            .instances
            .get(id)
            .map(|i| i.incarnation)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        self.exit(id, incarnation, KILLED_EXIT_CODE);
        self.lock().instances.remove(id);
        self.persist().await
    }

    async fn exec(
        &self,
        id: &InstanceId,
        _argv: &[String],
        _timeout: Duration,
    ) -> Result<i32, RuntimeError> {
        let inner = self.lock();
        match inner.instances.get(id) {
            Some(i) if i.state == InstanceState::Running => {
                Ok(inner.exec_codes.get(id).copied().unwrap_or(0))
            }
            _ => Err(RuntimeError::NotFound(id.to_string())),
        }
    }

    fn exit_events(&self) -> mpsc::UnboundedReceiver<ExitEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().subscribers.push(tx);
        rx
    }

    async fn stats(&self, id: &InstanceId) -> Result<InstanceStats, RuntimeError> {
        let inner = self.lock();
        let instance = inner
            .instances
            .get(id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        if instance.state != InstanceState::Running {
            return Ok(InstanceStats {
                disk_bytes: self.shared.config.disk_bytes,
                ..InstanceStats::default()
            });
        }
        let config = &self.shared.config;
        let limit = instance.spec.memory_limit_mb << 20;
        let memory_bytes = if limit > 0 {
            config.memory_bytes.min(limit)
        } else {
            config.memory_bytes
        };
        Ok(InstanceStats {
            cpu_percent: config.cpu_percent,
            memory_bytes,
            disk_bytes: config.disk_bytes,
        })
    }

    async fn logs_tail(&self, id: &InstanceId, max_bytes: usize) -> Result<String, RuntimeError> {
        let inner = self.lock();
        let instance = inner
            .instances
            .get(id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        Ok(crate::tail(&instance.log, max_bytes).to_owned())
    }

    async fn list(&self) -> Result<Vec<InstanceStatus>, RuntimeError> {
        let mut list: Vec<InstanceStatus> = self
            .lock()
            .instances
            .values()
            .map(|i| InstanceStatus {
                spec: i.spec.clone(),
                incarnation: i.incarnation,
                state: i.state,
            })
            .collect();
        list.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(job: &str, n: u32, env: &[&str]) -> InstanceSpec {
        InstanceSpec {
            id: InstanceId::new(job, n),
            image: "busybox".into(),
            virtualization: "docker".into(),
            cmd: vec![],
            env: env.iter().map(|s| (*s).to_owned()).collect(),
            ports: vec![],
            memory_limit_mb: 0,
            cpu_limit: 0.0,
            storage_mb: 0,
            one_shot: false,
            privileged: false,
            arch: vec![],
            platform: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_writes_the_log_lines_its_environment_asks_for() {
        let rt = FakeRuntime::new(FakeConfig::default()).unwrap();
        let chatty = spec("a.b.c.d", 1, &["OAK_FAKE_LOG_LINES=3"]);
        rt.start(&chatty).await.unwrap();
        assert_eq!(
            rt.logs_tail(&chatty.id, 1 << 20).await.unwrap(),
            "fake: started a.b.c.d.instance.1 from busybox\n\
             fake: output line 1\nfake: output line 2\nfake: output line 3\n"
        );
        assert_eq!(
            rt.logs_tail(&chatty.id, 20).await.unwrap(),
            "fake: output line 3\n"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn start_stop_delete_and_exit_events() {
        let rt = FakeRuntime::new(FakeConfig::default()).unwrap();
        let mut events = rt.exit_events();
        let s = spec("a.b.c.d", 0, &[]);
        rt.ensure_image(&s).await.unwrap();
        let inc = rt.start(&s).await.unwrap();
        assert_eq!(rt.running_count(), 1);
        assert_eq!(
            rt.start(&s).await.unwrap_err(),
            RuntimeError::AlreadyExists("a.b.c.d.instance.0".into())
        );
        let stats = rt.stats(&s.id).await.unwrap();
        assert_eq!(stats.memory_bytes, 8 << 20);
        assert!(rt.logs_tail(&s.id, 1024).await.unwrap().contains("started"));

        rt.stop(&s.id, Duration::from_secs(5)).await.unwrap();
        let event = events.recv().await.unwrap();
        assert_eq!(
            event,
            ExitEvent {
                id: s.id.clone(),
                incarnation: inc,
                exit_code: KILLED_EXIT_CODE
            }
        );
        let list = rt.list().await.unwrap();
        assert_eq!(list[0].state, InstanceState::Exited { code: 137 });
        rt.delete(&s.id).await.unwrap();
        assert!(rt.list().await.unwrap().is_empty());
        assert!(matches!(
            rt.delete(&s.id).await,
            Err(RuntimeError::NotFound(_))
        ));
        // A second start of the same id is a new incarnation.
        let inc2 = rt.start(&s).await.unwrap();
        assert!(inc2 > inc);
    }

    #[tokio::test(start_paused = true)]
    async fn injected_latency_exit_and_failures_are_deterministic() {
        let rt = FakeRuntime::new(FakeConfig {
            start_latency: Duration::from_millis(100),
            ..FakeConfig::default()
        })
        .unwrap();
        let mut events = rt.exit_events();
        let t0 = tokio::time::Instant::now();
        let s = spec(
            "a.b.c.d",
            1,
            &["OAK_FAKE_EXIT_AFTER_MS=500", "OAK_FAKE_EXIT_CODE=3"],
        );
        let inc = rt.start(&s).await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_millis(100));
        let event = events.recv().await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_millis(600));
        assert_eq!(event.exit_code, 3);
        assert_eq!(event.incarnation, inc);

        let fails = spec("a.b.c.d", 2, &["OAK_FAKE_FAIL_START=no space left"]);
        let err = rt.start(&fails).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot start a.b.c.d.instance.2: no space left"
        );
        let bad_image = spec("a.b.c.d", 3, &["OAK_FAKE_FAIL_IMAGE=manifest unknown"]);
        assert!(
            rt.ensure_image(&bad_image)
                .await
                .unwrap_err()
                .to_string()
                .contains("manifest unknown")
        );
        let mut vm = spec("a.b.c.d", 4, &[]);
        vm.virtualization = "crosvm".into();
        assert!(matches!(
            rt.start(&vm).await,
            Err(RuntimeError::Unsupported { .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn every_nth_start_fails_and_memory_is_capped_by_the_limit() {
        let rt = FakeRuntime::new(FakeConfig {
            fail_every_nth_start: 2,
            memory_bytes: 64 << 20,
            ..FakeConfig::default()
        })
        .unwrap();
        let mut s = spec("a.b.c.d", 0, &[]);
        s.memory_limit_mb = 10;
        rt.start(&s).await.unwrap();
        assert!(rt.start(&spec("a.b.c.d", 1, &[])).await.is_err());
        rt.start(&spec("a.b.c.d", 2, &[])).await.unwrap();
        assert_eq!(rt.stats(&s.id).await.unwrap().memory_bytes, 10 << 20);
    }

    #[test]
    fn instances_survive_a_restart_with_a_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = FakeConfig {
            state_file: Some(dir.path().join("fake.json")),
            ..FakeConfig::default()
        };
        let a = spec("a.b.c.d", 0, &[]);
        let b = spec("a.b.c.d", 1, &["OAK_FAKE_EXIT_AFTER_MS=30"]);
        // The first "process": its tasks end with its tokio runtime.
        let inc = {
            let process = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            process.block_on(async {
                let rt = FakeRuntime::new(config.clone()).unwrap();
                let inc = rt.start(&a).await.unwrap();
                rt.start(&b).await.unwrap();
                inc
            })
        };

        let process = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        process.block_on(async {
            // "Down" for longer than the injected exit needed.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let again = FakeRuntime::new(config).unwrap();
            let mut events = again.exit_events();
            // The exit that fell due while "down" fires at once.
            let event = events.recv().await.unwrap();
            assert_eq!(event.id, b.id);
            let list = again.list().await.unwrap();
            assert_eq!(list.len(), 2);
            assert_eq!(list[0].incarnation, inc);
            assert_eq!(list[0].state, InstanceState::Running);
            assert_eq!(list[1].state, InstanceState::Exited { code: 0 });
            // Incarnations keep increasing across the restart.
            again.delete(&a.id).await.unwrap();
            assert!(again.start(&a).await.unwrap() > inc);
        });
    }
}
