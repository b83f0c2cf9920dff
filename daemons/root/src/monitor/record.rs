//! Turns what the cluster link sees and decides into events and usage samples.

use oakestra_core::ids::{ClusterId, ObjectId};
use oakestra_core::model::ServiceRecord;
use oakestra_core::status::{DeploymentStatus, PositiveSchedulingStatus, Status};
use oakestra_store::ClusterRecord;

use super::{Event, Monitor};
use oakestra_proto::grpc::InstanceStatus;

/// An instance's record around one applied report.
#[derive(Debug, Clone)]
pub struct Change {
    application: ObjectId,
    service: ObjectId,
    n: u32,
    before: Option<Status>,
    after: Option<Status>,
    detail: Option<String>,
    worker: Option<String>,
    restarts_before: u32,
    restarts_after: u32,
    ready_before: Option<bool>,
    ready_after: Option<bool>,
}

impl Change {
    /// `inst` of `service` (of `application`) after the report, which found it in `before`
    /// with `restarts_before` restarts.
    pub fn of_instance(
        application: ObjectId,
        service: ObjectId,
        inst: &oakestra_core::model::InstanceRecord,
        before: Option<Status>,
        restarts_before: u32,
        ready_before: Option<bool>,
    ) -> Self {
        Change {
            application,
            service,
            n: inst.instance_number,
            before,
            after: inst.status,
            detail: inst.status_detail.clone(),
            worker: inst.worker_id.as_ref().map(ToString::to_string),
            restarts_before,
            restarts_after: inst.restart_count,
            ready_before,
            ready_after: inst.ready,
        }
    }
}

/// Statuses of an instance that is on a worker.
fn on_a_worker(s: Status) -> bool {
    matches!(
        s,
        Status::Positive(PositiveSchedulingStatus::NodeScheduled)
            | Status::Deployment(
                DeploymentStatus::Creating | DeploymentStatus::Created | DeploymentStatus::Running
            )
    )
}

fn with_detail(text: String, detail: Option<&str>) -> String {
    match detail.map(str::trim).filter(|d| !d.is_empty()) {
        Some(d) => format!("{text}: {d}"),
        None => text,
    }
}

/// A cluster's instance report: a status change becomes an event, usage of a running
/// instance a history sample.
pub fn instance_report(monitor: &Monitor, cluster: &ClusterId, c: &Change, r: &InstanceStatus) {
    let now = super::history::now_secs();
    if c.after == Some(Status::RUNNING) {
        monitor.metrics.running(c.service, c.n);
        if let Some(cpu) = r.cpu_percent {
            let mem = r.memory_percent.unwrap_or(0.0);
            monitor.history.record(c.service, c.n, now, cpu, mem);
        }
    } else {
        monitor.history.end(c.service, c.n, now);
    }
    let Some(after) = c.after else { return };
    let worker = c.worker.as_deref().unwrap_or("?");
    let detail = c.detail.as_deref();
    if c.before == Some(after) {
        // Its readiness probe changed its verdict: in or out of its service IPs' balancing.
        if after == Status::RUNNING
            && c.ready_before.is_some()
            && c.ready_after.is_some()
            && c.ready_before != c.ready_after
        {
            let (kind, text) = if c.ready_after == Some(true) {
                ("ready", format!("ready on worker {worker}"))
            } else {
                ("unready", format!("not ready on worker {worker}"))
            };
            monitor.emit(
                Event::instance(
                    c.application,
                    c.service,
                    c.n,
                    kind,
                    with_detail(text, detail),
                )
                .on_cluster(Some(cluster))
                .on_worker(c.worker.as_ref())
                .with_status(after),
            );
        }
        // Reports may be merged on the way: a restart whose DEAD was not seen still counts.
        if after == Status::RUNNING && c.restarts_after > c.restarts_before {
            monitor.emit(
                Event::instance(
                    c.application,
                    c.service,
                    c.n,
                    "restarted",
                    format!(
                        "restarted on worker {worker} (restart {})",
                        c.restarts_after
                    ),
                )
                .on_cluster(Some(cluster))
                .on_worker(c.worker.as_ref())
                .with_status(after),
            );
        }
        return;
    }
    let (kind, message) = match after {
        // The worker restarts it itself after a back-off (restart_policy).
        Status::Deployment(DeploymentStatus::Dead) if r.restarting => (
            "restarting",
            with_detail(format!("DEAD on worker {worker}"), detail),
        ),
        Status::Deployment(DeploymentStatus::Running) if c.restarts_after > c.restarts_before => (
            "running",
            format!("running on worker {worker} (restart {})", c.restarts_after),
        ),
        Status::Positive(PositiveSchedulingStatus::NodeScheduled) => (
            "node_scheduled",
            format!("cluster {cluster} placed it on worker {worker}"),
        ),
        Status::Deployment(DeploymentStatus::Creating) => {
            ("creating", format!("creating on worker {worker}"))
        }
        Status::Deployment(DeploymentStatus::Running) => {
            ("running", format!("running on worker {worker}"))
        }
        Status::Deployment(DeploymentStatus::Failed | DeploymentStatus::Dead) => (
            "failed",
            with_detail(format!("{after} on worker {worker}"), detail),
        ),
        Status::Deployment(DeploymentStatus::Completed) => {
            ("completed", format!("completed on worker {worker}"))
        }
        Status::Deployment(DeploymentStatus::Undeployed) => (
            "undeployed",
            with_detail(format!("undeployed from worker {worker}"), detail),
        ),
        // Straight from a worker to a scheduling failure: the cluster moved it off its worker
        // (lost) and found no other at once (the FAILED in between was not reported).
        Status::Negative(_) if c.before.is_some_and(on_a_worker) => (
            "rescheduling",
            with_detail(
                format!(
                    "was {} on worker {worker}; rescheduling, but cluster {cluster} cannot \
                     place it now ({after})",
                    c.before.map(|s| s.to_string()).unwrap_or_default()
                ),
                detail,
            ),
        ),
        Status::Negative(_) => (
            "pending",
            with_detail(
                format!("cluster {cluster} cannot place it ({after})"),
                detail,
            ),
        ),
        _ => ("status", with_detail(after.to_string(), detail)),
    };
    monitor.emit(
        Event::instance(c.application, c.service, c.n, kind, message)
            .on_cluster(Some(cluster))
            .on_worker(c.worker.as_ref())
            .with_status(after),
    );
}

/// A cluster registered.
pub fn cluster_registered(monitor: &Monitor, record: &ClusterRecord) {
    monitor.emit(Event::cluster(
        &record.id,
        "cluster_registered",
        format!(
            "cluster {:?} registered from {} (id {})",
            record.name,
            record.ip.as_deref().unwrap_or("an unknown address"),
            record.id
        ),
    ));
}

/// A cluster reported a different number of active workers.
pub fn workers_changed(monitor: &Monitor, cluster: &ClusterId, before: u32, after: u32) {
    if before == after {
        return;
    }
    monitor.emit(Event::cluster(
        cluster,
        "workers_changed",
        format!("cluster {cluster}: {before} → {after} active workers"),
    ));
}

/// The root decided where instance `n` goes (`Ok(cluster)`) or that it waits (`Err`).
pub fn placement(
    monitor: &Monitor,
    service: &ServiceRecord,
    n: u32,
    moved_from: Option<(&ClusterId, &str)>,
    decision: Result<(&ClusterId, &str), (Status, &str)>,
    took: std::time::Duration,
) {
    let status = service.instance(n).and_then(|i| i.status);
    placement_with_status(monitor, service, n, status, moved_from, decision, took);
}

/// As [`placement`], with the instance's status after the decision given (a batch knows it
/// without a search of the instance list).
pub fn placement_with_status(
    monitor: &Monitor,
    service: &ServiceRecord,
    n: u32,
    status: Option<Status>,
    moved_from: Option<(&ClusterId, &str)>,
    decision: Result<(&ClusterId, &str), (Status, &str)>,
    took: std::time::Duration,
) {
    monitor.metrics.decision_seconds.observe(took.as_secs_f64());
    let (outcome, reason) = match &decision {
        Ok(_) => ("placed", "none".to_owned()),
        Err((status, _)) => ("pending", status.to_string()),
    };
    monitor
        .metrics
        .decisions
        .get_or_create(&super::metrics::DecisionLabels {
            outcome: outcome.to_owned(),
            reason,
        })
        .inc();
    let event = match (decision, moved_from) {
        (Ok((cluster, name)), None) => Event::instance(
            service.application_id,
            service.id,
            n,
            "placed",
            format!("placed on cluster {name} ({cluster})"),
        )
        .on_cluster(Some(cluster)),
        (Ok((cluster, name)), Some((old, why))) => Event::instance(
            service.application_id,
            service.id,
            n,
            "moved",
            format!("moved from cluster {old} ({why}) to cluster {name} ({cluster})"),
        )
        .on_cluster(Some(cluster)),
        (Err((status, detail)), _) => Event::instance(
            service.application_id,
            service.id,
            n,
            "pending",
            with_detail(
                format!("no cluster can take it now ({status})"),
                Some(detail),
            ),
        ),
    };
    let mut event = event;
    event.status = status.map(|s| s.to_string());
    monitor.emit(event);
}

/// A deploy request created instance `n`.
pub fn requested(monitor: &Monitor, service: &ServiceRecord, n: u32) {
    monitor.metrics.requested(service.id, n);
    monitor.emit(
        Event::instance(
            service.application_id,
            service.id,
            n,
            "requested",
            format!("instance {n} of {} requested", service.job_name),
        )
        .with_status(Status::REQUESTED),
    );
}

/// Instances of `service` (of `application`) were undeployed on request.
pub fn undeployed(monitor: &Monitor, application: ObjectId, service: ObjectId, removed: &[u32]) {
    for n in removed {
        monitor.history.forget(service, Some(*n));
        monitor.metrics.forget(service, Some(*n));
        monitor.emit(
            Event::instance(
                application,
                service,
                *n,
                "undeployed",
                format!("instance {n} undeployed by the user"),
            )
            .with_status(DeploymentStatus::Undeployed),
        );
    }
}

/// A service was deleted.
pub fn service_deleted(monitor: &Monitor, service: &ServiceRecord) {
    monitor.history.forget(service.id, None);
    monitor.metrics.forget(service.id, None);
    let mut e = Event::new(
        super::ObjectKind::Service,
        service.id.to_string(),
        "service_deleted",
        format!("service {} deleted", service.job_name),
    );
    e.application_id = Some(service.application_id.to_string());
    e.service_id = Some(service.id.to_string());
    monitor.emit(e);
}
