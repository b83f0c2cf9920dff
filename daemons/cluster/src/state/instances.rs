//! Instances: deploy and undeploy from the root, and what workers report about them.

use super::*;
use oakestra_core::sla::RestartPolicy;

impl ClusterState {
    /// `nodes/<id>/job`: an instance changed status on a worker.
    pub fn job_report(&mut self, worker: &str, report: JobStatusReport, now: Instant) {
        let key = self
            .by_job_name
            .get(&report.sname)
            .map(|job| (job.clone(), report.instance));
        let Some(instance) = key.as_ref().and_then(|k| self.instances.get_mut(k)) else {
            // Nobody wants this instance (undeployed while the worker was away): remove it.
            if !matches!(
                report.status,
                DeploymentStatus::Undeployed | DeploymentStatus::Completed
            ) {
                self.effects.push(Effect::Delete {
                    worker: worker.to_owned(),
                    command: DeleteCommand {
                        wire_version: WireVersion::CURRENT,
                        job_name: report.sname,
                        virtualization: String::new(),
                        instance_number: report.instance,
                    },
                });
            }
            return;
        };
        if instance.worker_id.as_deref() != Some(worker) {
            // An old copy (the instance moved): never two running copies.
            if !matches!(
                report.status,
                DeploymentStatus::Undeployed | DeploymentStatus::Completed
            ) {
                self.effects.push(Effect::Delete {
                    worker: worker.to_owned(),
                    command: instance.delete_command(),
                });
            }
            return;
        }
        let key = instance.key();
        if report.status == DeploymentStatus::Undeployed {
            // Only ever the answer to a delete the cluster sent (possibly for an older copy
            // on this same worker): never a reason to change or redeploy anything.
            return;
        }
        if !report.publicip.is_empty() {
            instance.public_ip = report.publicip.clone();
        }
        let new_status = Status::Deployment(report.status);
        let changed = instance.status != new_status
            || instance.status_detail != report.status_detail
            || instance.restart_count != report.restart_count
            || instance.restarting != report.restarting
            || instance.ready != report.ready;
        if instance.ready != report.ready && instance.network.is_some() {
            // In or out of the service's tables: interested workers get the new table.
            self.tables.changed.insert(instance.job_name.clone());
        }
        instance.ready = report.ready;
        instance.status = new_status;
        instance.status_detail = report.status_detail;
        instance.restart_count = report.restart_count;
        instance.restarting = report.restarting && report.status == DeploymentStatus::Dead;
        // Under a restart policy the worker restarts a DEAD instance on the spot (`restarting`)
        // or, with `never`, leaves it ended for good: only FAILED (the worker gave up, or the
        // start failed) is placed again.
        let worker_decides = instance.restarting
            || (report.status == DeploymentStatus::Dead
                && instance.command.restart_policy == Some(RestartPolicy::Never));
        match report.status {
            DeploymentStatus::Dead if worker_decides => {
                // Out of the service's tables until it runs again (its worker sends its
                // network anew when it restarts it).
                if instance.network.take().is_some() {
                    self.tables.changed.insert(instance.job_name.clone());
                }
                self.capacity_changed = true;
            }
            DeploymentStatus::Running => {
                if instance.running_since.is_none() {
                    instance.running_since = Some(now);
                }
            }
            DeploymentStatus::Failed | DeploymentStatus::Dead => {
                // A crash loop backs off; an instance that ran for a while starts over. One
                // whose worker gave up restarting it (restart_policy) was a crash loop however
                // long it ran: it always waits.
                let gave_up = instance.command.restart_policy.is_some() && report.restart_count > 0;
                if instance
                    .running_since
                    .take()
                    .is_some_and(|t| now.saturating_duration_since(t) >= self.timing.stable_after)
                    && !gave_up
                {
                    instance.attempts = 0;
                }
                if gave_up {
                    instance.attempts = instance.attempts.max(1);
                }
                // Heal: place it again after the backoff. The ended copy stays on its worker
                // until the new placement: a redeploy on the same worker restarts it there,
                // one elsewhere sends that worker a delete.
                instance.worker_id = None;
                if instance.network.take().is_some() {
                    self.tables.changed.insert(instance.job_name.clone());
                }
                instance.stale_copies.insert(worker.to_owned());
                instance.retry_at = Some(now + self.timing.backoff(instance.attempts));
                instance.attempts = instance.attempts.saturating_add(1);
                self.capacity_changed = true;
            }
            DeploymentStatus::Undeployed => {}
            DeploymentStatus::Completed => {
                self.capacity_changed = true;
            }
            DeploymentStatus::Creating | DeploymentStatus::Created => {}
        }
        if changed {
            self.effects.push(Effect::Report(key.clone()));
        }
        self.dirty_instances.insert(key);
    }

    /// The root's `Deploy`. Idempotent: an instance the cluster already holds is only
    /// reported again.
    pub fn deploy(
        &mut self,
        job_id: &str,
        instance_number: u32,
        job_name: &str,
        service_json: &str,
        now: Instant,
    ) -> Result<(), DeployError> {
        let key = (job_id.to_owned(), instance_number);
        if self.instances.contains_key(&key) {
            self.effects.push(Effect::Report(key));
            return Ok(());
        }
        let service: ServiceRecord =
            serde_json::from_str(service_json).map_err(|source| DeployError::ServiceJson {
                job_id: job_id.to_owned(),
                source,
            })?;
        let job_name = if job_name.is_empty() {
            service.job_name.clone()
        } else {
            job_name.to_owned()
        };
        let command = deploy_command(&service, job_id, &job_name, instance_number);
        let (request, status, detail) =
            match PlacementRequest::from_microservice(&service.microservice, Level::Cluster) {
                Ok(mut r) => {
                    r.service = job_name.clone();
                    (
                        r,
                        Status::Positive(PositiveSchedulingStatus::ClusterScheduled),
                        String::new(),
                    )
                }
                Err(e) => (
                    PlacementRequest::default(),
                    Status::Negative(NegativeSchedulingStatus::NoQualifiedWorkerFound),
                    format!("invalid constraints: {e}"),
                ),
            };
        let unusable = !detail.is_empty();
        let instance = Instance {
            job_id: job_id.to_owned(),
            instance_number,
            job_name: job_name.clone(),
            command,
            request,
            status,
            status_detail: detail,
            worker_id: None,
            public_ip: String::new(),
            attempts: 0,
            stale_copies: BTreeSet::new(),
            usage: None,
            running_since: None,
            usage_forwarded_at: None,
            network: None,
            restart_count: 0,
            restarting: false,
            ready: None,
            // An SLA whose constraints do not parse never becomes placeable.
            retry_at: unusable.then(|| now + Duration::from_secs(365 * 24 * 3600)),
        };
        self.by_job_name.insert(job_name, job_id.to_owned());
        self.instances.insert(key.clone(), instance);
        self.dirty_instances.insert(key.clone());
        self.effects.push(Effect::Report(key));
        Ok(())
    }

    /// The root's `Undeploy`: every matching instance is deleted on its worker and forgotten.
    /// Returns how many were removed.
    pub fn undeploy(&mut self, job_id: &str, instance_number: Option<u32>) -> usize {
        let keys: Vec<InstanceKey> = self
            .instances
            .keys()
            .filter(|(j, n)| j == job_id && instance_number.is_none_or(|m| m == *n))
            .cloned()
            .collect();
        for key in &keys {
            let Some(instance) = self.instances.remove(key) else {
                continue;
            };
            let targets = instance
                .worker_id
                .iter()
                .chain(instance.stale_copies.iter());
            for worker in targets {
                self.effects.push(Effect::Delete {
                    worker: worker.clone(),
                    command: instance.delete_command(),
                });
            }
            self.dirty_instances.remove(key);
            self.removed_instances.insert(key.clone());
            self.capacity_changed = true;
            self.tables.changed.insert(instance.job_name.clone());
        }
        if !self.instances.keys().any(|(j, _)| j == job_id) {
            self.by_job_name.retain(|_, j| j != job_id);
        }
        keys.len()
    }
}

/// What a worker gets on `control/deploy` for instance `n` of `service`.
pub fn deploy_command(
    service: &ServiceRecord,
    job_id: &str,
    job_name: &str,
    n: u32,
) -> DeployCommand {
    let ms = &service.microservice;
    let mut extra = oakestra_core::sla::Extra::new();
    let mut put = |k: &str, v: &str| {
        if !v.is_empty() {
            extra.insert(k.to_owned(), Value::String(v.to_owned()));
        }
    };
    put("app_name", &service.app_name);
    put("app_ns", &service.app_ns);
    put("service_name", &service.service_name);
    put("service_ns", &service.service_ns);
    DeployCommand {
        wire_version: WireVersion::CURRENT,
        id: job_id.to_owned(),
        job_name: job_name.to_owned(),
        instance_number: n,
        image: ms.code.clone(),
        virtualization: ms.virtualization.as_str().to_owned(),
        cmd: ms.cmd.clone().unwrap_or_default(),
        environment: ms.environment.clone().unwrap_or_default(),
        port: ms
            .port
            .as_ref()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        vcpus: u32::try_from(ms.vcpus.unwrap_or(0)).unwrap_or(u32::MAX),
        vgpus: u32::try_from(ms.vgpus.unwrap_or(0)).unwrap_or(u32::MAX),
        vtpus: u32::try_from(ms.vtpus.unwrap_or(0)).unwrap_or(u32::MAX),
        memory: ms.memory.unwrap_or(0),
        storage: ms.storage.unwrap_or(0),
        arch: ms.arch.clone().unwrap_or_default(),
        platform: ms
            .extra
            .get("platform")
            .and_then(Value::as_str)
            .map(str::to_owned),
        vm_images: Vec::new(),
        volumes: ms.volumes.clone().unwrap_or_default(),
        one_shot: ms.one_shot.unwrap_or(false),
        restart_policy: ms.restart_policy,
        liveness_probe: ms.liveness_probe.clone(),
        readiness_probe: ms.readiness_probe.clone(),
        privileged: ms.privileged.unwrap_or(false),
        status: None,
        status_detail: None,
        addresses: service.addresses(n),
        extra,
    }
}
