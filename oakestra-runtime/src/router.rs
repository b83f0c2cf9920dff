//! [`RoutingRuntime`]: one [`Runtime`] over several, so a worker runs containers and unikernels
//! side by side.
//!
//! - `ensure_image` and `start` go to the first runtime that advertises the spec's
//!   virtualization. The container names are aliases of each other (`docker`, `container`,
//!   `containerd`): a spec with one of them goes to the runtime advertising any of them, with its
//!   virtualization rewritten to the name that runtime advertises. A virtualization nobody runs
//!   fails with [`RuntimeError::Unsupported`] listing what this worker runs.
//! - `stop`, `delete`, `stats` and `logs_tail` go to the runtime that owns the instance. The
//!   owner is remembered from `start` and `list`; an id the router has not seen (after a restart
//!   of the worker) is looked up in every runtime's `list`.
//! - Incarnations are remapped so they stay unique across runtimes and stable across restarts:
//!   with N runtimes, incarnation `inc` of runtime number `i` (0-based, in the order given to
//!   [`RoutingRuntime::new`]) is `inc * N + i`, and `combined % N` names the runtime back.
//!   The same runtimes in the same order give the same numbers after a restart; a worker whose
//!   set of runtimes changed re-learns the incarnations from [`Runtime::list`] when it recovers.
//! - `exit_events` and `list` merge those of every runtime (with remapped incarnations);
//!   `virtualizations` is the union.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::{
    ExitEvent, InstanceId, InstanceSpec, InstanceStats, InstanceStatus, Runtime, RuntimeError,
};

/// Names of the container virtualization; a spec with any of them runs on a runtime that
/// advertises any of them.
pub const CONTAINER_ALIASES: &[&str] = &["docker", "container", "containerd"];

/// Routes instances to one of several runtimes by virtualization. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RoutingRuntime {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    runtimes: Vec<Arc<dyn Runtime>>,
    /// Which runtime (index) holds each instance the router has seen.
    owners: Mutex<HashMap<InstanceId, usize>>,
}

impl RoutingRuntime {
    /// A router over `runtimes`. Their order fixes the incarnation mapping (see the module
    /// documentation) and the preference when two advertise the same virtualization.
    pub fn new(runtimes: Vec<Arc<dyn Runtime>>) -> Self {
        Self {
            shared: Arc::new(Shared {
                runtimes,
                owners: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The runtimes, in routing order.
    pub fn runtimes(&self) -> &[Arc<dyn Runtime>] {
        &self.shared.runtimes
    }

    fn count(&self) -> u64 {
        self.shared.runtimes.len().max(1) as u64
    }

    fn owners(&self) -> MutexGuard<'_, HashMap<InstanceId, usize>> {
        self.shared
            .owners
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The router's incarnation of incarnation `inner` of runtime `index`.
    pub fn combine(&self, index: usize, inner: u64) -> u64 {
        inner
            .saturating_mul(self.count())
            .saturating_add(index as u64)
    }

    /// The runtime index and its own incarnation behind a router incarnation.
    pub fn split(&self, combined: u64) -> (usize, u64) {
        let n = self.count();
        ((combined % n) as usize, combined / n)
    }

    /// The runtime for `spec` and the spec as that runtime wants it (aliases rewritten).
    fn route(&self, spec: &InstanceSpec) -> Result<(usize, InstanceSpec), RuntimeError> {
        let wanted = spec.virtualization.as_str();
        let advertised: Vec<Vec<String>> = self
            .shared
            .runtimes
            .iter()
            .map(|r| r.virtualizations())
            .collect();
        if let Some(index) = advertised
            .iter()
            .position(|v| v.iter().any(|name| name == wanted))
        {
            return Ok((index, spec.clone()));
        }
        if CONTAINER_ALIASES.contains(&wanted) {
            for (index, names) in advertised.iter().enumerate() {
                if let Some(name) = names
                    .iter()
                    .find(|name| CONTAINER_ALIASES.contains(&name.as_str()))
                {
                    let mut spec = spec.clone();
                    spec.virtualization = name.clone();
                    return Ok((index, spec));
                }
            }
        }
        let supported = self.virtualizations();
        Err(RuntimeError::Unsupported {
            virtualization: spec.virtualization.clone(),
            runtime: "worker's",
            supported: if supported.is_empty() {
                "nothing".into()
            } else {
                supported.join(", ")
            },
        })
    }

    /// The runtime that holds `id`: remembered, else found in the runtimes' lists.
    async fn owner(&self, id: &InstanceId) -> Result<usize, RuntimeError> {
        if let Some(index) = self.owners().get(id).copied() {
            return Ok(index);
        }
        for (index, runtime) in self.shared.runtimes.iter().enumerate() {
            let held = runtime.list().await?;
            if held.iter().any(|s| &s.spec.id == id) {
                self.owners().insert(id.clone(), index);
                return Ok(index);
            }
        }
        Err(RuntimeError::NotFound(id.to_string()))
    }
}

#[async_trait]
impl Runtime for RoutingRuntime {
    fn name(&self) -> &'static str {
        "routing"
    }

    fn virtualizations(&self) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        for runtime in &self.shared.runtimes {
            for name in runtime.virtualizations() {
                if !all.contains(&name) {
                    all.push(name);
                }
            }
        }
        all
    }

    async fn ensure_image(&self, spec: &InstanceSpec) -> Result<(), RuntimeError> {
        let (index, spec) = self.route(spec)?;
        self.shared.runtimes[index].ensure_image(&spec).await
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<u64, RuntimeError> {
        let (index, routed) = self.route(spec)?;
        // Only what the router knows is checked, so a deploy costs no list of every runtime: a
        // worker lists once when it recovers (which teaches the router every owner), and each
        // runtime rejects an id it holds itself.
        {
            let mut owners = self.owners();
            match owners.get(&spec.id).copied() {
                Some(owner) if owner != index => {
                    return Err(RuntimeError::AlreadyExists(format!(
                        "{} (in the {} runtime)",
                        spec.id,
                        self.shared.runtimes[owner].name()
                    )));
                }
                // Owned from the attempt on: a failed start may leave something to delete.
                _ => {
                    owners.insert(spec.id.clone(), index);
                }
            }
        }
        let inner = self.shared.runtimes[index].start(&routed).await?;
        Ok(self.combine(index, inner))
    }

    async fn stop(&self, id: &InstanceId, grace: Duration) -> Result<(), RuntimeError> {
        let index = self.owner(id).await?;
        self.shared.runtimes[index].stop(id, grace).await
    }

    async fn delete(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        let index = self.owner(id).await?;
        let result = self.shared.runtimes[index].delete(id).await;
        if matches!(result, Ok(()) | Err(RuntimeError::NotFound(_))) {
            self.owners().remove(id);
        }
        result
    }

    fn exit_events(&self) -> mpsc::UnboundedReceiver<ExitEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        for (index, runtime) in self.shared.runtimes.iter().enumerate() {
            let mut events = runtime.exit_events();
            let tx = tx.clone();
            let router = self.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        event = events.recv() => {
                            let Some(mut event) = event else { break };
                            event.incarnation = router.combine(index, event.incarnation);
                            if tx.send(event).is_err() {
                                break;
                            }
                        }
                        // The subscriber went away: stop forwarding.
                        _ = tx.closed() => break,
                    }
                }
            });
        }
        rx
    }

    async fn stats(&self, id: &InstanceId) -> Result<InstanceStats, RuntimeError> {
        let index = self.owner(id).await?;
        self.shared.runtimes[index].stats(id).await
    }

    async fn logs_tail(&self, id: &InstanceId, max_bytes: usize) -> Result<String, RuntimeError> {
        let index = self.owner(id).await?;
        self.shared.runtimes[index].logs_tail(id, max_bytes).await
    }

    async fn list(&self) -> Result<Vec<InstanceStatus>, RuntimeError> {
        let mut all = Vec::new();
        for (index, runtime) in self.shared.runtimes.iter().enumerate() {
            let held = runtime.list().await.map_err(|e| RuntimeError::Backend {
                what: format!("listing the instances of the {} runtime", runtime.name()),
                reason: e.to_string(),
            })?;
            let mut owners = self.owners();
            for mut status in held {
                owners.insert(status.spec.id.clone(), index);
                status.incarnation = self.combine(index, status.incarnation);
                all.push(status);
            }
        }
        Ok(all)
    }

    async fn exec(
        &self,
        id: &InstanceId,
        argv: &[String],
        timeout: Duration,
    ) -> Result<i32, RuntimeError> {
        let index = self.owner(id).await?;
        self.shared.runtimes[index].exec(id, argv, timeout).await
    }

    async fn exit_reason(&self, id: &InstanceId, incarnation: u64) -> Option<String> {
        let (index, inner) = self.split(incarnation);
        self.shared
            .runtimes
            .get(index)?
            .exit_reason(id, inner)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FakeConfig, FakeRuntime, InstanceState};

    fn fake(virtualization: &str, state_file: Option<std::path::PathBuf>) -> FakeRuntime {
        FakeRuntime::new(FakeConfig {
            virtualizations: vec![virtualization.into()],
            state_file,
            ..FakeConfig::default()
        })
        .unwrap()
    }

    fn spec(job: &str, instance: u32, virtualization: &str) -> InstanceSpec {
        InstanceSpec {
            id: InstanceId::new(job, instance),
            image: "img".into(),
            virtualization: virtualization.into(),
            cmd: Vec::new(),
            env: Vec::new(),
            ports: Vec::new(),
            memory_limit_mb: 0,
            cpu_limit: 0.0,
            storage_mb: 0,
            one_shot: false,
            privileged: false,
            arch: Vec::new(),
            platform: None,
        }
    }

    fn router(containers: &FakeRuntime, unikernels: &FakeRuntime) -> RoutingRuntime {
        RoutingRuntime::new(vec![
            Arc::new(containers.clone()),
            Arc::new(unikernels.clone()),
        ])
    }

    #[tokio::test]
    async fn routes_by_virtualization_and_advertises_the_union() {
        let (c, u) = (fake("docker", None), fake("unikernel", None));
        let r = router(&c, &u);
        assert_eq!(r.virtualizations(), vec!["docker", "unikernel"]);

        let a = spec("a.a.a.a", 0, "docker");
        let b = spec("b.b.b.b", 0, "unikernel");
        let alias = spec("c.c.c.c", 0, "container");
        r.ensure_image(&a).await.unwrap();
        let inc_a = r.start(&a).await.unwrap();
        let inc_b = r.start(&b).await.unwrap();
        let inc_c = r.start(&alias).await.unwrap();
        assert_eq!(c.running_count(), 2);
        assert_eq!(u.running_count(), 1);
        // The alias was rewritten to what the container runtime advertises.
        let held = c.list().await.unwrap();
        let c_spec = held.iter().find(|s| s.spec.id == alias.id).unwrap();
        assert_eq!(c_spec.spec.virtualization, "docker");
        // Incarnations: inner * 2 + index, so unique across the two runtimes.
        assert_eq!(r.split(inc_a).0, 0);
        assert_eq!(r.split(inc_b).0, 1);
        assert_ne!(inc_a, inc_b);
        assert_ne!(inc_a, inc_c);

        r.stats(&b.id).await.unwrap();
        r.logs_tail(&a.id, 100).await.unwrap();
        r.stop(&b.id, Duration::from_millis(1)).await.unwrap();
        r.delete(&b.id).await.unwrap();
        assert!(u.list().await.unwrap().is_empty());
        assert_eq!(c.running_count(), 2);
        assert!(matches!(
            r.delete(&b.id).await,
            Err(RuntimeError::NotFound(_))
        ));
        // The same id may not run in both runtimes at once.
        let clash = spec("a.a.a.a", 0, "unikernel");
        let err = r.start(&clash).await.unwrap_err();
        assert!(matches!(err, RuntimeError::AlreadyExists(_)), "{err}");
    }

    #[tokio::test]
    async fn unknown_virtualization_names_what_the_worker_runs() {
        let (c, u) = (fake("docker", None), fake("unikernel", None));
        let r = router(&c, &u);
        let err = r.start(&spec("a.a.a.a", 0, "crosvm")).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("\"crosvm\""), "{text}");
        assert!(text.contains("docker, unikernel"), "{text}");
        let err = r.ensure_image(&spec("a.a.a.a", 0, "wasm")).await;
        assert!(matches!(err, Err(RuntimeError::Unsupported { .. })));
        assert!(c.list().await.unwrap().is_empty());

        let empty = RoutingRuntime::new(Vec::new());
        let err = empty
            .start(&spec("a.a.a.a", 0, "docker"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("nothing"), "{err}");
    }

    #[tokio::test]
    async fn ownership_and_incarnations_survive_a_re_creation() {
        let dir = tempfile::tempdir().unwrap();
        let (cf, uf) = (dir.path().join("c.json"), dir.path().join("u.json"));
        let a = spec("a.a.a.a", 1, "docker");
        let b = spec("b.b.b.b", 2, "unikernel");
        let (inc_a, inc_b) = {
            let (c, u) = (
                fake("docker", Some(cf.clone())),
                fake("unikernel", Some(uf.clone())),
            );
            let r = router(&c, &u);
            (r.start(&a).await.unwrap(), r.start(&b).await.unwrap())
        };
        // A new router over new runtimes on the same state: it has seen nothing yet.
        let (c, u) = (fake("docker", Some(cf)), fake("unikernel", Some(uf)));
        let r = router(&c, &u);
        r.stop(&b.id, Duration::from_millis(1)).await.unwrap();
        assert_eq!(u.running_count(), 0);
        assert_eq!(c.running_count(), 1);
        let listed = r.list().await.unwrap();
        let inc = |id: &InstanceId| listed.iter().find(|s| &s.spec.id == id).unwrap();
        assert_eq!(inc(&a.id).incarnation, inc_a);
        assert_eq!(inc(&b.id).incarnation, inc_b);
        assert_eq!(inc(&a.id).state, InstanceState::Running);
        r.delete(&a.id).await.unwrap();
        assert!(c.list().await.unwrap().is_empty());
        assert_eq!(u.list().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn exits_of_both_runtimes_arrive_with_remapped_incarnations() {
        let (c, u) = (fake("docker", None), fake("unikernel", None));
        let r = router(&c, &u);
        let mut events = r.exit_events();
        let a = spec("a.a.a.a", 0, "docker");
        let b = spec("b.b.b.b", 0, "unikernel");
        let inc_a = r.start(&a).await.unwrap();
        let inc_b = r.start(&b).await.unwrap();
        // Both fakes count from 1: without remapping the two incarnations would collide.
        assert_eq!(r.split(inc_a).1, r.split(inc_b).1);

        u.crash(&b.id, 3).await.unwrap();
        c.crash(&a.id, 0).await.unwrap();
        let mut got = Vec::new();
        for _ in 0..2 {
            let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
                .await
                .unwrap()
                .unwrap();
            got.push((event.id, event.incarnation, event.exit_code));
        }
        got.sort();
        assert_eq!(
            got,
            vec![(a.id.clone(), inc_a, 0), (b.id.clone(), inc_b, 3)]
        );
        assert_eq!(r.exit_reason(&a.id, inc_a).await, None);
    }
}
