//! Root scheduling of instances (DESIGN.md §5, reference §2.4): create, place, move, remove.
//!
//! **Deploy** ([`ClusterLink::deploy_instance`], `POST /api/service/<id>/instance`):
//! 1. the service's SLA becomes an `oakestra_sched::PlacementRequest` (an unusable constraint
//!    is [`InstanceError::Constraints`], REST 422, and nothing is created);
//! 2. in one store update: the next instance number is taken, the instance's IPv4/IPv6 are
//!    allocated, and the instance is recorded as `REQUESTED` ("Waiting for scheduling
//!    decision");
//! 3. the root algorithm places it among the active, connected clusters: the instance becomes
//!    `CLUSTER_SCHEDULED` on the chosen cluster and the cluster gets the `Deploy` command;
//!    or, when nothing fits, the instance gets the negative status (`NoActiveClusterWithCapacity`,
//!    `TargetClusterNotFound`, …) with a detail saying why.
//!
//! **The REST contract** (chosen here): both outcomes are a success — the instance exists and
//! has a number — so the handler answers 200 with the [`DeployOutcome`] (the instance record;
//! `placed: false` and a negative `status` + `status_detail` when it waits for capacity). It
//! is **never stuck**: a pending instance is placed automatically as soon as a cluster
//! connects or reports more capacity. Errors: unknown service → [`InstanceError::ServiceNotFound`]
//! (404), unusable constraints → 422, address pool exhausted → 503, store → 500.
//!
//! **Moves.** Instances of a cluster that is gone longer than the link timeout are placed on
//! other clusters with the same number and addresses (or left pending). An instance its
//! cluster reports as `NO_QUALIFIED_WORKER_FOUND` / `NO_NODE_FOUND` is moved to another
//! cluster that fits (that cluster is then not tried again for it); if none fits, it stays.
//!
//! **Undeploy** ([`ClusterLink::undeploy_instance`]): removes one instance or, with `None`, all
//! of them (every one: Oakestra's `-1` skipped every second instance), frees their addresses in
//! the same store update and sends `Undeploy` to their clusters.
//!
//! **Service status** ([`derive_service_status`]) is a function of the instance list only, so
//! it cannot flip-flop between clusters: `RUNNING` if any instance runs; else the most
//! advanced in-progress state (`CREATED` > `CREATING` > `NODE_SCHEDULED` > `CLUSTER_SCHEDULED` >
//! `REQUESTED`); else the negative status of the first pending instance; else `FAILED` (or
//! `DEAD`) naming the failed instances; else `COMPLETED`, else `UNDEPLOYED`. A service whose
//! last instance was undeployed is `UNDEPLOYED`.
//!
//! [`ClusterLink::deploy_instance`]: crate::cluster_link::ClusterLink::deploy_instance
//! [`ClusterLink::undeploy_instance`]: crate::cluster_link::ClusterLink::undeploy_instance

use oakestra_core::ids::{ClusterId, ObjectId};
use oakestra_core::model::{InstanceRecord, ServiceRecord};
use oakestra_core::status::{
    DeploymentStatus, NegativeSchedulingStatus, PositiveSchedulingStatus, Status,
};
use oakestra_sched::{ConstraintError, Level, PlacementRequest};
use oakestra_store::StoreError;

use crate::addresses::AddressError;
use oakestra_proto::grpc::{Deploy, InstanceStatus, RootMessage, Undeploy, root_message};

/// An instance operation failed.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// No such service (REST: 404).
    #[error("service {0} not found")]
    ServiceNotFound(ObjectId),
    /// The service has no instance with this number (REST: 404).
    #[error(
        "service {service} has no instance {number}; GET /api/service/{service} lists its instances"
    )]
    InstanceNotFound {
        /// The service.
        service: ObjectId,
        /// The instance number asked for.
        number: u32,
    },
    /// The SLA's constraints cannot be used for placement (REST: 422).
    #[error("the service's constraints cannot be used for placement: {0}")]
    Constraints(#[from] ConstraintError),
    /// Address allocation failed (REST: 503 when exhausted, 500 otherwise).
    #[error(transparent)]
    Addresses(#[from] AddressError),
    /// The store failed (REST: 500).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Error of a store closure that also allocates addresses.
pub(crate) enum Step {
    Store(StoreError),
    Address(Box<AddressError>),
    NotFound(u32),
}

impl From<StoreError> for Step {
    fn from(e: StoreError) -> Self {
        Step::Store(e)
    }
}

impl Step {
    /// The API's error for a failed step on service `service`.
    pub(crate) fn into_error(self, service: ObjectId) -> InstanceError {
        match self {
            Step::Store(e) if e.is_not_found() => InstanceError::ServiceNotFound(service),
            Step::Store(e) => e.into(),
            Step::Address(e) => (*e).into(),
            Step::NotFound(number) => InstanceError::InstanceNotFound { service, number },
        }
    }
}

/// What `deploy_instance` did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeployOutcome {
    /// The new instance: number, status (`CLUSTER_SCHEDULED` or a negative status), detail,
    /// cluster, addresses.
    pub instance: InstanceRecord,
    /// Whether it was placed on a cluster (`false`: it waits and is retried automatically).
    pub placed: bool,
}

pub(crate) const WAITING: &str = "Waiting for scheduling decision";

pub(crate) fn rank(status: Status) -> Option<u8> {
    match status {
        Status::Positive(PositiveSchedulingStatus::Requested) => Some(1),
        Status::Positive(PositiveSchedulingStatus::ClusterScheduled) => Some(2),
        Status::Positive(PositiveSchedulingStatus::NodeScheduled) => Some(3),
        Status::Deployment(DeploymentStatus::Creating) => Some(4),
        Status::Deployment(DeploymentStatus::Created) => Some(5),
        Status::Legacy(_) => Some(0),
        _ => None,
    }
}

/// The service status its instances imply (see the module docs); `None` for no instances.
pub fn derive_service_status(instances: &[InstanceRecord]) -> Option<(Status, Option<String>)> {
    if instances.is_empty() {
        return None;
    }
    let with_status = || instances.iter().filter_map(|i| i.status.map(|s| (i, s)));
    let running = with_status().filter(|(_, s)| *s == Status::RUNNING).count();
    if running > 0 {
        return Some((
            Status::RUNNING,
            Some(format!(
                "{running} of {} instances running",
                instances.len()
            )),
        ));
    }
    if let Some((_, s)) = with_status()
        .filter_map(|(i, s)| rank(s).map(|r| (r, i, s)))
        .max_by_key(|(r, i, _)| (*r, std::cmp::Reverse(i.instance_number)))
        .map(|(_, i, s)| (i, s))
    {
        let detail = (s == Status::REQUESTED).then(|| WAITING.to_owned());
        return Some((s, detail));
    }
    if let Some((i, s)) = with_status().find(|(_, s)| matches!(s, Status::Negative(_))) {
        return Some((s, i.status_detail.clone()));
    }
    let failed: Vec<String> = with_status()
        .filter(|(_, s)| {
            matches!(
                s,
                Status::Deployment(DeploymentStatus::Failed | DeploymentStatus::Dead)
            )
        })
        .map(|(i, _)| i.instance_number.to_string())
        .collect();
    if !failed.is_empty() {
        let any_failed = with_status().any(|(_, s)| s == DeploymentStatus::Failed.into());
        let status = if any_failed {
            DeploymentStatus::Failed
        } else {
            DeploymentStatus::Dead
        };
        return Some((
            status.into(),
            Some(format!("Failed instance(s): {}", failed.join(", "))),
        ));
    }
    if with_status().any(|(_, s)| s == DeploymentStatus::Completed.into()) {
        return Some((DeploymentStatus::Completed.into(), None));
    }
    if with_status().next().is_some() {
        return Some((DeploymentStatus::Undeployed.into(), None));
    }
    None
}

/// Sets the service's `status`/`status_detail` from its instances (unchanged when it has none).
pub(crate) fn refresh_service_status(service: &mut ServiceRecord) {
    if let Some((status, detail)) = derive_service_status(&service.instance_list) {
        service.status = Some(status);
        service.status_detail = detail;
    }
    service.ready_instances = (!service.instance_list.is_empty()).then(|| service.count_ready());
}

/// Copies a cluster's report into the instance.
pub(crate) fn apply_report(inst: &mut InstanceRecord, status: Option<Status>, r: &InstanceStatus) {
    fn text(s: &str) -> Option<String> {
        let s = s.trim();
        (!s.is_empty()).then(|| s.to_owned())
    }
    if let Some(s) = status {
        inst.ready = Some(s == Status::RUNNING && r.ready != Some(false));
        inst.status = Some(s);
        inst.status_detail = text(&r.status_detail);
        // The cluster always sends its whole view, the count included.
        inst.restart_count = r.restart_count;
    }
    if let Some(w) = text(&r.worker_id) {
        inst.worker_id = Some(w.into());
    }
    if let Some(ip) = text(&r.host_ip) {
        inst.host_ip = Some(ip);
    }
    if let Ok(p) = u16::try_from(r.host_port)
        && p != 0
    {
        inst.host_port = Some(p);
    }
    if let Some(ip) = text(&r.public_ip) {
        inst.publicip = Some(ip);
    }
    if let Some(ip) = text(&r.namespace_ip).and_then(|s| s.parse().ok()) {
        inst.namespace_ip = Some(ip);
    }
    if let Some(ip) = text(&r.namespace_ip_v6).and_then(|s| s.parse().ok()) {
        inst.namespace_ip_v6 = Some(ip);
    }
    if r.cpu_percent.is_some() {
        inst.cpu_percent = r.cpu_percent;
    }
    if r.memory_percent.is_some() {
        inst.memory_percent = r.memory_percent;
    }
    if r.disk_bytes.is_some() {
        inst.disk = r.disk_bytes;
    }
    if let Some(logs) = text(&r.logs) {
        inst.logs = Some(logs);
    }
    inst.last_modified_timestamp = Some(crate::tokens::now_secs_f64());
}

/// The `Deploy` command for instance `n` of `service` (`None` if it has no such instance).
pub(crate) fn deploy_message(service: &ServiceRecord, n: u32) -> Option<RootMessage> {
    deploy_messages(service, &[n]).pop()
}

/// The `Deploy` commands for instances `numbers` of `service`, in that order (numbers the
/// service does not have are left out). The service is copied once without its instance list,
/// so a batch costs one pass over the list, not one per instance.
pub(crate) fn deploy_messages(service: &ServiceRecord, numbers: &[u32]) -> Vec<RootMessage> {
    let positions: std::collections::HashMap<u32, usize> = service
        .instance_list
        .iter()
        .enumerate()
        .map(|(i, inst)| (inst.instance_number, i))
        .collect();
    let mut shell = ServiceRecord {
        instance_list: Vec::new(),
        ..service.clone()
    };
    let job_id = service.id.to_string();
    numbers
        .iter()
        .filter_map(|n| {
            let inst = service.instance_list.get(*positions.get(n)?)?;
            shell.instance_list = vec![inst.clone()];
            // The addresses travel once, typed, in the record (`RR_ip`, `Closest_ip`, the
            // instance's `instance_ip`, …): the cluster reads them with
            // `ServiceRecord::addresses`.
            Some(RootMessage {
                kind: Some(root_message::Kind::Deploy(Deploy {
                    job_id: job_id.clone(),
                    instance_number: *n,
                    job_name: service.job_name.clone(),
                    service_json: serde_json::to_string(&shell).ok()?,
                })),
            })
        })
        .collect()
}

/// What one instance of `service` reserves (nothing when its constraints do not parse: then it
/// was never placed).
pub(crate) fn service_demand(service: &ServiceRecord) -> Reserved {
    placement_request(service).map_or_else(
        |_| Reserved::default(),
        |r| Reserved {
            vcpus: r.vcpus,
            memory_mb: r.memory_mb,
            gpus: r.vgpus,
        },
    )
}

pub(crate) fn placement_request(
    service: &ServiceRecord,
) -> Result<PlacementRequest, ConstraintError> {
    let mut request = PlacementRequest::from_microservice(&service.microservice, Level::Root)?;
    request.service = service.job_name.clone();
    Ok(request)
}

/// Clears what the previous cluster reported about an instance that moves.
pub(crate) fn reset_placement(inst: &mut InstanceRecord) {
    inst.worker_id = None;
    inst.host_ip = None;
    inst.host_port = None;
    inst.publicip = None;
    inst.namespace_ip = None;
    inst.namespace_ip_v6 = None;
    inst.cpu_percent = None;
    inst.memory_percent = None;
    inst.disk = None;
}

/// Instance key listing the clusters an instance was moved away from because they found no
/// qualified worker; they are not tried again for it.
pub(crate) const EXCLUDED_CLUSTERS: &str = "excluded_clusters";

/// How `ClusterLink::schedule` moves an instance.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Move<'a> {
    /// An unplaced instance (new or pending): placed, or left pending with the negative status.
    Place,
    /// Off a lost cluster: placed elsewhere, or left pending.
    Evacuate(&'a ClusterId),
    /// Off a cluster that reported it cannot run it (`NO_QUALIFIED_WORKER_FOUND`,
    /// `NO_NODE_FOUND`): placed on another cluster if one fits, otherwise left where it is
    /// (that cluster keeps retrying).
    Relocate(&'a ClusterId),
}

impl<'a> Move<'a> {
    pub(crate) fn from(self) -> Option<&'a ClusterId> {
        match self {
            Move::Place => None,
            Move::Evacuate(c) | Move::Relocate(c) => Some(c),
        }
    }
}

/// Cluster-level outcomes that waiting on the same cluster will not fix.
pub(crate) fn needs_relocation(status: Option<Status>) -> bool {
    matches!(
        status,
        Some(Status::Negative(
            NegativeSchedulingStatus::NoQualifiedWorkerFound
                | NegativeSchedulingStatus::NoNodeFound
        ))
    )
}

/// Statuses after which an instance is not deployed anywhere and is never moved or re-sent.
pub(crate) fn is_finished(status: Option<Status>) -> bool {
    matches!(
        status,
        Some(Status::Deployment(
            DeploymentStatus::Completed | DeploymentStatus::Undeployed
        ))
    )
}

pub(crate) fn undeploy_message(job: ObjectId, n: Option<u32>, reason: &str) -> RootMessage {
    RootMessage {
        kind: Some(root_message::Kind::Undeploy(Undeploy {
            job_id: job.to_string(),
            instance_number: n,
            reason: reason.to_owned(),
        })),
    }
}

/// Resources of instances a cluster has not yet accounted for in a report.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Reserved {
    pub(crate) vcpus: f64,
    pub(crate) memory_mb: u64,
    pub(crate) gpus: u32,
}

impl Reserved {
    pub(crate) fn add(&mut self, other: Reserved) {
        self.vcpus += other.vcpus;
        self.memory_mb = self.memory_mb.saturating_add(other.memory_mb);
        self.gpus = self.gpus.saturating_add(other.gpus);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(n: u32, s: impl Into<Status>) -> InstanceRecord {
        InstanceRecord::new(n, s)
    }

    #[test]
    fn service_status_follows_the_rule() {
        assert_eq!(derive_service_status(&[]), None);
        let running = derive_service_status(&[
            inst(0, DeploymentStatus::Failed),
            inst(1, DeploymentStatus::Running),
            inst(2, PositiveSchedulingStatus::ClusterScheduled),
        ])
        .unwrap();
        assert_eq!(running.0, Status::RUNNING);
        assert_eq!(running.1.as_deref(), Some("1 of 3 instances running"));

        let progress = derive_service_status(&[
            inst(0, PositiveSchedulingStatus::ClusterScheduled),
            inst(1, PositiveSchedulingStatus::NodeScheduled),
            inst(2, NegativeSchedulingStatus::NoActiveClusterWithCapacity),
        ])
        .unwrap();
        assert_eq!(progress.0, PositiveSchedulingStatus::NodeScheduled.into());

        let mut pending = inst(3, NegativeSchedulingStatus::NoActiveClusterWithCapacity);
        pending.status_detail = Some("0 clusters".into());
        let neg = derive_service_status(&[inst(0, DeploymentStatus::Dead), pending]).unwrap();
        assert_eq!(
            neg.0,
            NegativeSchedulingStatus::NoActiveClusterWithCapacity.into()
        );
        assert_eq!(neg.1.as_deref(), Some("0 clusters"));

        let failed = derive_service_status(&[
            inst(0, DeploymentStatus::Dead),
            inst(1, DeploymentStatus::Failed),
            inst(2, DeploymentStatus::Completed),
        ])
        .unwrap();
        assert_eq!(failed.0, DeploymentStatus::Failed.into());
        assert_eq!(failed.1.as_deref(), Some("Failed instance(s): 0, 1"));

        let done = derive_service_status(&[
            inst(0, DeploymentStatus::Completed),
            inst(1, DeploymentStatus::Undeployed),
        ])
        .unwrap();
        assert_eq!(done.0, DeploymentStatus::Completed.into());
    }

    #[test]
    fn status_does_not_depend_on_report_order() {
        // The same instance states in any order give the same service status.
        let a = [
            inst(0, DeploymentStatus::Running),
            inst(1, PositiveSchedulingStatus::ClusterScheduled),
        ];
        let b = [a[1].clone(), a[0].clone()];
        assert_eq!(derive_service_status(&a), derive_service_status(&b));
    }
}
