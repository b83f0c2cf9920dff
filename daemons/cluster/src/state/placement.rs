//! Placement: which instances are due, the candidates, the scheduler's answer, and the
//! aggregate the root places by.

use super::workers::union;
use super::*;

impl ClusterState {
    /// Instances to place now, oldest key first. Clears the "capacity appeared" flag: after a
    /// capacity change every unplaced instance is due at once.
    pub fn due_for_placement(&mut self, now: Instant) -> Vec<InstanceKey> {
        let capacity_changed = std::mem::take(&mut self.capacity_changed);
        self.instances
            .values()
            .filter(|i| i.needs_placement())
            .filter(|i| match i.retry_at {
                None => true,
                Some(at) => {
                    at <= now
                        || (capacity_changed
                            && matches!(i.status, Status::Negative(_))
                            && !i.status_detail.starts_with("invalid constraints"))
                }
            })
            .map(Instance::key)
            .collect()
    }

    /// The active workers as scheduling candidates. Free capacity follows the cluster's
    /// [`CapacityPolicy`]: by default a worker's capacity minus the system reserve minus what
    /// the instances placed on it reserve (derived from the instances each time, so it cannot
    /// drift and survives a restart), with memory also capped by what the worker measures free.
    pub fn candidates(&self) -> Vec<Candidate> {
        let mut demand: HashMap<&str, (f64, u64, u32)> = HashMap::new();
        for i in self.instances.values() {
            if let Some(w) = i.worker_id.as_deref()
                && !i.has_ended()
            {
                let d = demand.entry(w).or_default();
                d.0 += i.request.vcpus;
                d.1 += i.request.memory_mb;
                d.2 += i.request.vgpus;
            }
        }
        self.workers
            .values()
            .filter(|w| w.active)
            .map(|w| {
                let (cpu, mem, gpu) = demand
                    .get(w.record.id.as_str())
                    .copied()
                    .unwrap_or_default();
                worker_candidate(w, &self.capacity, cpu, mem, gpu)
            })
            .collect()
    }

    /// Places every due instance with `scheduler`, taking each placement's demand off the
    /// chosen candidate before the next, as the actor does with a built-in scheduler (tests,
    /// simulation). Returns the instances it tried.
    pub fn place_due_with(
        &mut self,
        scheduler: &dyn oakestra_sched::Scheduler,
        now: Instant,
    ) -> Vec<InstanceKey> {
        let due = self.due_for_placement(now);
        let mut candidates = self.candidates();
        for key in &due {
            let Some(request) = self.request(key) else {
                continue;
            };
            let outcome = scheduler.place(&request, &candidates).map(|p| p.candidate);
            if let Ok(worker) = &outcome
                && let Some(c) = candidates.iter_mut().find(|c| &c.name == worker)
            {
                oakestra_sched::commit(&request, c);
            }
            self.placed(key, outcome, now);
        }
        due
    }

    /// The placement request of an instance, with `direct` node names that are worker
    /// hostnames resolved to worker ids (candidates are named by id; users write hostnames).
    pub fn request(&self, key: &InstanceKey) -> Option<PlacementRequest> {
        let mut request = self.instances.get(key)?.request.clone();
        let mut ids = Vec::new();
        for name in &request.constraints.nodes {
            for w in self.workers.values() {
                if &w.record.info.host == name && &w.record.id != name {
                    ids.push(w.record.id.clone());
                }
            }
        }
        request.constraints.nodes.extend(ids);
        Some(request)
    }

    /// Records a scheduling outcome.
    pub fn placed(
        &mut self,
        key: &InstanceKey,
        outcome: Result<String, NoPlacement>,
        now: Instant,
    ) {
        let timing = self.timing;
        let Some(instance) = self.instances.get_mut(key) else {
            return;
        };
        if !instance.needs_placement() {
            return;
        }
        match outcome {
            Ok(worker) => {
                instance.worker_id = Some(worker.clone());
                if instance.network.take().is_some() {
                    self.tables.changed.insert(instance.job_name.clone());
                }
                instance.retry_at = None;
                instance.running_since = None;
                instance.status = Status::Positive(PositiveSchedulingStatus::NodeScheduled);
                instance.status_detail = String::new();
                instance.usage = None;
                instance.usage_forwarded_at = None;
                // The new worker must not be asked to delete what it is about to run; other
                // reachable holders of an old copy delete it now, unreachable ones when back.
                instance.stale_copies.remove(&worker);
                let reachable: Vec<String> = instance
                    .stale_copies
                    .iter()
                    .filter(|w| self.workers.get(*w).is_some_and(|w| w.active))
                    .cloned()
                    .collect();
                for holder in reachable {
                    instance.stale_copies.remove(&holder);
                    self.effects.push(Effect::Delete {
                        worker: holder,
                        command: instance.delete_command(),
                    });
                }
                self.effects.push(Effect::Deploy {
                    worker,
                    command: Box::new(instance.command.clone()),
                });
                self.effects.push(Effect::Report(key.clone()));
            }
            Err(no) => {
                let status = Status::Negative(no.status);
                let changed = instance.status != status || instance.status_detail != no.detail;
                instance.status = status;
                instance.status_detail = no.detail;
                instance.retry_at = Some(now + timing.unplaced_retry);
                if changed {
                    self.effects.push(Effect::Report(key.clone()));
                }
            }
        }
        self.dirty_instances.insert(key.clone());
    }

    /// Aggregated resources of the active workers.
    pub fn aggregate(&self) -> Aggregate {
        let candidates = self.candidates();
        let mut a = Aggregate {
            workers: self.workers.len() as u32,
            ..Aggregate::default()
        };
        let mut free_cores = 0.0;
        let mut busy_cores = 0.0;
        for c in &candidates {
            a.active_workers += 1;
            a.cpu_cores += c.cpu_cores;
            free_cores += c.free_vcpus().max(0.0);
            busy_cores += c.cpu_cores * c.cpu_usage_percent / 100.0;
            a.memory_total_mb += c.memory_total_mb;
            a.memory_free_mb += c.memory_free_mb;
            a.gpus += c.gpus;
            a.gpus_free += c.gpus_free;
            a.max_worker_free_vcpus = a.max_worker_free_vcpus.max(c.free_vcpus().max(0.0));
            a.max_worker_free_memory_mb = a.max_worker_free_memory_mb.max(c.memory_free_mb);
            a.max_worker_free_gpus = a.max_worker_free_gpus.max(c.gpus_free);
            union(&mut a.virtualization, &c.virtualization);
            union(&mut a.arch, &c.arch);
            union(&mut a.csi_drivers, &c.csi_drivers);
            union(&mut a.addons, &c.addons);
        }
        (a.cpu_load_percent, a.cpu_usage_percent) = if a.cpu_cores > 0.0 {
            (
                (100.0 - free_cores * 100.0 / a.cpu_cores).clamp(0.0, 100.0),
                (busy_cores * 100.0 / a.cpu_cores).clamp(0.0, 100.0),
            )
        } else {
            (0.0, 0.0)
        };
        a
    }
}

pub(super) fn worker_candidate(
    w: &Worker,
    policy: &CapacityPolicy,
    demand_cpu: f64,
    demand_mem: u64,
    demand_gpu: u32,
) -> Candidate {
    let info = &w.record.info;
    let cores = f64::from(info.vcpus);
    let usage = info.cpu_percent.clamp(0.0, 100.0);
    let memory_total = info.memory_total.unwrap_or(info.memory);
    let (cpu_load_percent, free_mem) = policy.allocatable(&WorkerResources {
        cores,
        cpu_usage_percent: usage,
        memory_total_mb: memory_total,
        memory_free_mb: info.memory,
        reserved_vcpus: demand_cpu,
        reserved_memory_mb: demand_mem,
    });
    let virtualization = info
        .virtualization
        .iter()
        .map(|v| {
            if v == "docker" {
                "container".to_owned()
            } else {
                v.clone()
            }
        })
        .collect();
    Candidate {
        name: w.record.id.clone(),
        cpu_cores: cores,
        cpu_load_percent,
        cpu_usage_percent: usage,
        memory_total_mb: memory_total,
        memory_free_mb: free_mem,
        gpus: info.vgpus,
        gpus_free: info.vgpus.saturating_sub(demand_gpu),
        virtualization,
        arch: if info.architecture.is_empty() {
            Vec::new()
        } else {
            vec![info.architecture.clone()]
        },
        csi_drivers: info
            .csi_drivers
            .iter()
            .map(|d| d.csi_driver_name.clone())
            .collect(),
        addons: info.supported_addons.clone(),
        location: info.location.as_deref().and_then(|l| l.parse().ok()),
        active: w.active,
        ..Candidate::default()
    }
}
