//! Workers: registration, their reports (information, resources) and liveness.

use super::*;

impl ClusterState {
    /// A worker registered (new, or again with its id). It is active at once.
    pub fn register_worker(&mut self, record: WorkerRecord, now: Instant) {
        let id = record.id.clone();
        let was_inactive = self.workers.get(&id).is_some_and(|w| !w.active);
        self.workers.insert(
            id.clone(),
            Worker {
                record,
                last_seen: now,
                active: true,
                session_seen: false,
            },
        );
        self.dirty_workers.insert(id.clone());
        self.capacity_changed = true;
        self.worker_back(&id, was_inactive);
    }

    /// `nodes/<id>/information`.
    pub fn worker_information(&mut self, id: &str, info: NodeInfo, now: Instant) {
        let Some(worker) = self.workers.get_mut(id) else {
            self.effects.push(Effect::ControlError {
                worker: id.to_owned(),
                message: "Node not registered to the cluster".into(),
            });
            return;
        };
        let was_inactive = !worker.active;
        let first_since_registration = !worker.session_seen;
        worker.last_seen = now;
        worker.active = true;
        worker.session_seen = true;
        merge_dynamic(&mut worker.record.info, info);
        if first_since_registration {
            // A deploy published between the worker's registration and its subscription
            // reached nobody: send what it has not confirmed again (deploys are idempotent).
            for instance in self.instances.values().filter(|i| {
                i.worker_id.as_deref() == Some(id)
                    && i.status == Status::Positive(PositiveSchedulingStatus::NodeScheduled)
            }) {
                self.effects.push(Effect::Deploy {
                    worker: id.to_owned(),
                    command: Box::new(instance.command.clone()),
                });
            }
        }
        if was_inactive {
            self.dirty_workers.insert(id.to_owned());
            self.capacity_changed = true;
        }
        self.worker_back(id, was_inactive);
    }

    /// A message of the worker arrived at `at` (applied or not yet): it is not silent.
    /// Whether it is active again is decided by its next heartbeat.
    pub fn heard_from(&mut self, id: &str, at: Instant) {
        if let Some(worker) = self.workers.get_mut(id)
            && at > worker.last_seen
        {
            worker.last_seen = at;
        }
    }

    /// A worker is (again) reachable: it deletes the copies it may hold of moved instances.
    pub(super) fn worker_back(&mut self, id: &str, was_inactive: bool) {
        if !was_inactive {
            return;
        }
        tracing::info!(worker = id, "worker is back");
        for instance in self.instances.values_mut() {
            if instance.stale_copies.remove(id) {
                self.effects.push(Effect::Delete {
                    worker: id.to_owned(),
                    command: instance.delete_command(),
                });
                self.dirty_instances.insert(instance.key());
            }
        }
    }

    /// `nodes/<id>/jobs/resources`: usage of the instances on a worker. Also a duplicate guard:
    /// an instance the worker runs but should not is deleted there.
    ///
    /// Usage (CPU, memory, disk, log tail) goes on to the root as an instance report: the
    /// first one at once, later ones when they differ noticeably (new log output, CPU or
    /// memory moved by a point or more), at most every [`USAGE_FORWARD_INTERVAL`] per
    /// instance, so a hundred idle instances cost the root nothing.
    pub fn resources_report(&mut self, worker: &str, report: ResourcesReport, now: Instant) {
        for usage in report.services {
            let key = self
                .by_job_name
                .get(&usage.job_name)
                .map(|job| (job.clone(), usage.instance));
            match key.as_ref().and_then(|k| self.instances.get_mut(k)) {
                Some(instance) if instance.worker_id.as_deref() == Some(worker) => {
                    let due = match instance.usage_forwarded_at {
                        None => true,
                        Some(at) => {
                            now.saturating_duration_since(at) >= USAGE_FORWARD_INTERVAL
                                && usage_moved(instance.usage.as_ref(), &usage)
                        }
                    };
                    instance.usage = Some(usage);
                    if due {
                        instance.usage_forwarded_at = Some(now);
                        let key = instance.key();
                        self.effects.push(Effect::Report(key));
                    }
                }
                Some(instance) => self.effects.push(Effect::Delete {
                    worker: worker.to_owned(),
                    command: instance.delete_command(),
                }),
                None => self.effects.push(Effect::Delete {
                    worker: worker.to_owned(),
                    command: DeleteCommand {
                        wire_version: WireVersion::CURRENT,
                        job_name: usage.job_name.clone(),
                        virtualization: usage.virtualization.clone(),
                        instance_number: usage.instance,
                    },
                }),
            }
        }
    }

    /// Liveness: workers silent for longer than the timeout become inactive and their
    /// instances are placed again; a worker that has not reported since it registered has
    /// [`Timing::first_report_grace`] more. Returns the workers that just became inactive.
    pub fn check_liveness(&mut self, now: Instant) -> Vec<String> {
        let timeout = self.timing.worker_timeout;
        let first_report_timeout = timeout + self.timing.first_report_grace;
        let lost: Vec<String> = self
            .workers
            .values()
            .filter(|w| {
                let limit = if w.session_seen {
                    timeout
                } else {
                    first_report_timeout
                };
                w.active && now.saturating_duration_since(w.last_seen) > limit
            })
            .map(|w| w.record.id.clone())
            .collect();
        for id in &lost {
            if let Some(w) = self.workers.get_mut(id) {
                if w.session_seen {
                    tracing::warn!(worker = %id, "worker silent for more than {timeout:?}: inactive");
                } else {
                    tracing::warn!(
                        worker = %id,
                        "worker did not report within {first_report_timeout:?} of registering: inactive"
                    );
                }
                w.active = false;
            }
            let timing = self.timing;
            for instance in self.instances.values_mut() {
                if instance.worker_id.as_deref() != Some(id.as_str()) {
                    continue;
                }
                if instance.has_ended() {
                    continue;
                }
                if instance
                    .running_since
                    .take()
                    .is_some_and(|t| now.saturating_duration_since(t) >= timing.stable_after)
                {
                    instance.attempts = 0;
                }
                instance.worker_id = None;
                if instance.network.take().is_some() {
                    self.tables.changed.insert(instance.job_name.clone());
                }
                instance.stale_copies.insert(id.clone());
                instance.status = Status::Deployment(DeploymentStatus::Failed);
                instance.status_detail = format!("worker {id} is inactive; rescheduling");
                instance.restarting = false;
                instance.retry_at = Some(now + timing.backoff(instance.attempts));
                instance.attempts = instance.attempts.saturating_add(1);
                self.effects.push(Effect::Report(instance.key()));
                self.dirty_instances.insert(instance.key());
            }
        }
        lost
    }
}

pub(super) fn union(into: &mut Vec<String>, from: &[String]) {
    for s in from {
        if !into.contains(s) {
            into.push(s.clone());
        }
    }
}

/// Keeps the registration's static fields and takes the dynamic ones of a report.
pub(super) fn merge_dynamic(record: &mut NodeInfo, report: NodeInfo) {
    record.cpu_percent = report.cpu_percent;
    record.memory_percent = report.memory_percent;
    record.memory = report.memory;
    if report.memory_total.is_some() {
        record.memory_total = report.memory_total;
    }
    if report.vcpus > 0 {
        record.vcpus = report.vcpus;
    }
    if !report.virtualization.is_empty() {
        record.virtualization = report.virtualization;
    }
    if !report.csi_drivers.is_empty() {
        record.csi_drivers = report.csi_drivers;
    }
    if !report.supported_addons.is_empty() {
        record.supported_addons = report.supported_addons;
    }
    if report.gpu_usage.is_some() {
        record.gpu_usage = report.gpu_usage;
    }
    if report.overlay_mtu.is_some() {
        record.overlay_mtu = report.overlay_mtu;
    }
    if report.location.is_some() {
        record.location = report.location;
    }
    if !report.ip.is_empty() {
        record.ip = report.ip;
    }
}
