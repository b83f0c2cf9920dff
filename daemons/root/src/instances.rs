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

use std::sync::atomic::Ordering;

use oakestra_core::ids::{ClusterId, ObjectId};
use oakestra_core::model::{InstanceRecord, ServiceRecord};
use oakestra_core::status::{
    DeploymentStatus, NegativeSchedulingStatus, PositiveSchedulingStatus, Status,
};
use oakestra_net::ipam::AddressManager;
use oakestra_sched::{ConstraintError, Level, PlacementRequest, Scheduler};
use oakestra_store::StoreError;

use crate::addresses::{self, AddressError};
use crate::cluster_link::{ClusterLink, Reserved, candidate_of, is_finished, undeploy_message};
use crate::grpc::proto::{Deploy, InstanceStatus, RootMessage, root_message};

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
enum Step {
    Store(StoreError),
    Address(Box<AddressError>),
    NotFound(u32),
}

impl From<StoreError> for Step {
    fn from(e: StoreError) -> Self {
        Step::Store(e)
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

const WAITING: &str = "Waiting for scheduling decision";

fn rank(status: Status) -> Option<u8> {
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
}

/// Copies a cluster's report into the instance.
pub(crate) fn apply_report(inst: &mut InstanceRecord, status: Option<Status>, r: &InstanceStatus) {
    fn text(s: &str) -> Option<String> {
        let s = s.trim();
        (!s.is_empty()).then(|| s.to_owned())
    }
    if let Some(s) = status {
        inst.status = Some(s);
        inst.status_detail = text(&r.status_detail);
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
    service.instance(n)?;
    let mut copy = service.clone();
    copy.instance_list.retain(|i| i.instance_number == n);
    // The addresses travel once, typed, in the record (`RR_ip`, `Closest_ip`, the instance's
    // `instance_ip`, …): the cluster reads them with `ServiceRecord::addresses`.
    Some(RootMessage {
        kind: Some(root_message::Kind::Deploy(Deploy {
            job_id: service.id.to_string(),
            instance_number: n,
            job_name: service.job_name.clone(),
            service_json: serde_json::to_string(&copy).ok()?,
        })),
    })
}

/// What one instance of `service` reserves (nothing when its constraints do not parse: then it
/// was never placed).
fn service_demand(service: &ServiceRecord) -> Reserved {
    placement_request(service).map_or_else(
        |_| Reserved::default(),
        |r| Reserved {
            vcpus: r.vcpus,
            memory_mb: r.memory_mb,
            gpus: r.vgpus,
        },
    )
}

fn placement_request(service: &ServiceRecord) -> Result<PlacementRequest, ConstraintError> {
    let mut request = PlacementRequest::from_microservice(&service.microservice, Level::Root)?;
    request.service = service.job_name.clone();
    Ok(request)
}

/// Clears what the previous cluster reported about an instance that moves.
fn reset_placement(inst: &mut InstanceRecord) {
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
const EXCLUDED_CLUSTERS: &str = "excluded_clusters";

/// How [`ClusterLink::schedule`] moves an instance.
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
    fn from(self) -> Option<&'a ClusterId> {
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

impl ClusterLink {
    /// Creates one instance of `service_id` and places it (see the module docs for the flow
    /// and the REST contract). The caller has checked that the user may change the service.
    pub async fn deploy_instance(
        &self,
        service_id: ObjectId,
    ) -> Result<DeployOutcome, InstanceError> {
        let service = self
            .store
            .get_service(service_id)
            .await?
            .ok_or(InstanceError::ServiceNotFound(service_id))?;
        placement_request(&service)?;
        let created = self
            .store
            .update_service_with_ipam(service_id, |service, ipam: &mut AddressManager| {
                let n = service.next_instance_progressive_number;
                let a = addresses::assign_instance(ipam, service_id, n)
                    .map_err(|e| Step::Address(Box::new(addresses::instance_error(e))))?;
                service.next_instance_progressive_number = n + 1;
                let mut inst = InstanceRecord::new(n, PositiveSchedulingStatus::Requested);
                inst.status_detail = Some(WAITING.to_owned());
                inst.instance_ip = Some(a.ipv4);
                inst.instance_ip_v6 = Some(a.ipv6);
                inst.last_modified_timestamp = Some(crate::tokens::now_secs_f64());
                service.instance_list.push(inst);
                refresh_service_status(service);
                Ok::<_, Step>(n)
            })
            .await;
        let n = match created {
            Ok(n) => n,
            Err(Step::Store(e)) if e.is_not_found() => {
                return Err(InstanceError::ServiceNotFound(service_id));
            }
            Err(Step::Store(e)) => return Err(e.into()),
            Err(Step::Address(e)) => return Err((*e).into()),
            Err(Step::NotFound(number)) => {
                return Err(InstanceError::InstanceNotFound {
                    service: service_id,
                    number,
                });
            }
        };
        crate::monitor::record::requested(&self.monitor, &service, n);
        let placed = match self.schedule(service_id, n, Move::Place).await {
            Ok(placed) => placed,
            Err(e) => {
                // The instance exists as REQUESTED; the retry places it later.
                self.pending_hint.store(true, Ordering::SeqCst);
                return Err(e.into());
            }
        };
        let service = self
            .store
            .get_service(service_id)
            .await?
            .ok_or(InstanceError::ServiceNotFound(service_id))?;
        let instance = service
            .instance(n)
            .cloned()
            .ok_or(InstanceError::InstanceNotFound {
                service: service_id,
                number: n,
            })?;
        Ok(DeployOutcome { instance, placed })
    }

    /// Removes instance `number` of the service, or every instance with `None`: the records
    /// and addresses go in one store update, then each cluster gets `Undeploy`. Returns the
    /// numbers removed. A cluster that is offline is told on its next connect (its snapshot
    /// lists an instance the root no longer has).
    pub async fn undeploy_instance(
        &self,
        service_id: ObjectId,
        number: Option<u32>,
    ) -> Result<Vec<u32>, InstanceError> {
        let mut demand = Reserved::default();
        let removed = self
            .store
            .update_service_with_ipam(service_id, |service, ipam: &mut AddressManager| {
                demand = service_demand(service);
                let (gone, kept): (Vec<InstanceRecord>, Vec<InstanceRecord>) = service
                    .instance_list
                    .drain(..)
                    .partition(|i| number.is_none_or(|n| i.instance_number == n));
                service.instance_list = kept;
                if let Some(n) = number
                    && gone.is_empty()
                {
                    return Err(Step::NotFound(n));
                }
                for i in &gone {
                    addresses::release_instance(ipam, service_id, i.instance_number);
                }
                if service.instance_list.is_empty() {
                    if !gone.is_empty() {
                        service.status = Some(DeploymentStatus::Undeployed.into());
                        service.status_detail = Some("no instances".to_owned());
                    }
                } else {
                    refresh_service_status(service);
                }
                Ok((gone, service.application_id))
            })
            .await;
        let (removed, application) = match removed {
            Ok(r) => r,
            Err(Step::Store(e)) if e.is_not_found() => {
                return Err(InstanceError::ServiceNotFound(service_id));
            }
            Err(Step::Store(e)) => return Err(e.into()),
            Err(Step::Address(e)) => return Err((*e).into()),
            Err(Step::NotFound(number)) => {
                return Err(InstanceError::InstanceNotFound {
                    service: service_id,
                    number,
                });
            }
        };
        for inst in &removed {
            if let Some(cluster) = &inst.cluster_id {
                if !is_finished(inst.status) {
                    self.release(cluster, demand);
                }
                self.send(
                    cluster,
                    undeploy_message(
                        service_id,
                        Some(inst.instance_number),
                        "undeployed by the user",
                    ),
                )
                .await;
            }
        }
        self.push_service_id(service_id).await;
        let numbers: Vec<u32> = removed.iter().map(|i| i.instance_number).collect();
        crate::monitor::record::undeployed(&self.monitor, application, service_id, &numbers);
        Ok(numbers)
    }

    /// After a service was deleted from the store: tells every cluster that holds one of its
    /// instances to undeploy them, and frees its RR and instance addresses.
    pub async fn release_service(&self, service: &ServiceRecord) -> Result<(), InstanceError> {
        let demand = service_demand(service);
        for i in &service.instance_list {
            if let Some(cluster) = &i.cluster_id
                && !is_finished(i.status)
            {
                self.release(cluster, demand);
            }
        }
        let mut clusters: Vec<&ClusterId> = service
            .instance_list
            .iter()
            .filter_map(|i| i.cluster_id.as_ref())
            .collect();
        clusters.sort();
        clusters.dedup();
        for cluster in clusters {
            self.send(
                cluster,
                undeploy_message(service.id, None, "the service was deleted"),
            )
            .await;
        }
        self.push_deleted(&service.job_name).await;
        crate::monitor::record::service_deleted(&self.monitor, service);
        addresses::release_services(self.store.as_ref(), std::slice::from_ref(service)).await?;
        Ok(())
    }

    /// Active, connected clusters as candidates.
    async fn candidates(
        &self,
    ) -> Result<Vec<(oakestra_sched::Candidate, ClusterId, String)>, StoreError> {
        let connected = self.connected_clusters();
        let reserved = self.reservations();
        Ok(self
            .store
            .list_clusters()
            .await?
            .into_iter()
            .map(|c| {
                let r = reserved.get(&c.id).copied().unwrap_or_default();
                let cand = candidate_of(&c, connected.contains(&c.id), r);
                (cand, c.id, c.location)
            })
            .collect())
    }

    /// Places instance `n` (see [`Move`]). Skips it when someone else moved it meanwhile.
    /// Returns whether it went to a cluster.
    pub(crate) async fn schedule(
        &self,
        service_id: ObjectId,
        n: u32,
        how: Move<'_>,
    ) -> Result<bool, StoreError> {
        let started = std::time::Instant::now();
        let Some(service) = self.store.get_service(service_id).await? else {
            return Ok(false);
        };
        let from = how.from();
        let mut excluded: Vec<String> = Vec::new();
        if let Move::Relocate(old) = how {
            excluded = service
                .instance(n)
                .and_then(|i| i.extra.get(EXCLUDED_CLUSTERS))
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            excluded.push(old.0.clone());
        }
        let demand = service_demand(&service);
        let mut chosen_name = String::new();
        let decision = match placement_request(&service) {
            Ok(request) => {
                let mut cands = self.candidates().await?;
                cands.retain(|(_, id, _)| !excluded.contains(&id.0));
                let list: Vec<oakestra_sched::Candidate> =
                    cands.iter().map(|(c, _, _)| c.clone()).collect();
                match self.config().algorithm.place(&request, &list) {
                    Ok(p) => {
                        let chosen = p
                            .index
                            .and_then(|i| cands.get(i))
                            .filter(|(c, _, _)| c.name == p.candidate)
                            .or_else(|| cands.iter().find(|(c, _, _)| c.name == p.candidate));
                        match chosen {
                            Some((c, id, location)) => {
                                chosen_name.clone_from(&c.name);
                                Ok((id.clone(), location.clone()))
                            }
                            None => Err((
                                oakestra_core::status::NegativeSchedulingStatus::TargetClusterNotFound
                                    .into(),
                                format!("the scheduler chose an unknown cluster {:?}", p.candidate),
                            )),
                        }
                    }
                    Err(no) => Err((Status::Negative(no.status), no.detail)),
                }
            }
            Err(e) => Err((
                oakestra_core::status::NegativeSchedulingStatus::NoActiveClusterWithCapacity.into(),
                e.to_string(),
            )),
        };
        if matches!(how, Move::Relocate(_)) && decision.is_err() {
            // No other cluster fits: the instance stays where it is.
            return Ok(false);
        }
        let took = started.elapsed();
        let from_owned = from.cloned();
        let updated = self
            .store
            .update_service(service_id, |service| {
                let Some(inst) = service.instance_mut(n) else {
                    return Ok::<_, StoreError>(None);
                };
                if inst.cluster_id != from_owned {
                    return Ok(None);
                }
                if matches!(how, Move::Relocate(_)) && !needs_relocation(inst.status) {
                    return Ok(None);
                }
                match &decision {
                    Ok((cluster, location)) => {
                        reset_placement(inst);
                        inst.cluster_id = Some(cluster.clone());
                        inst.cluster_location = Some(if location.is_empty() {
                            "location-unknown".to_owned()
                        } else {
                            location.clone()
                        });
                        inst.status = Some(PositiveSchedulingStatus::ClusterScheduled.into());
                        inst.status_detail = match how {
                            Move::Place => None,
                            Move::Evacuate(old) => {
                                Some(format!("moved from cluster {old}, which was lost"))
                            }
                            Move::Relocate(old) => Some(format!(
                                "moved from cluster {old}, which found no qualified worker"
                            )),
                        };
                        if matches!(how, Move::Relocate(_)) {
                            inst.extra.insert(
                                EXCLUDED_CLUSTERS.to_owned(),
                                serde_json::Value::from(excluded.clone()),
                            );
                        }
                    }
                    Err((status, detail)) => {
                        reset_placement(inst);
                        inst.cluster_id = None;
                        inst.cluster_location = None;
                        inst.status = Some(*status);
                        inst.status_detail = Some(detail.clone());
                    }
                }
                inst.last_modified_timestamp = Some(crate::tokens::now_secs_f64());
                refresh_service_status(service);
                Ok(Some(service.clone()))
            })
            .await;
        let service = match updated {
            Ok(Some(s)) => s,
            Ok(None) => return Ok(false),
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e),
        };
        // A moved instance is not routable until its new cluster reports it.
        self.push_service(&service).await;
        crate::monitor::record::placement(
            &self.monitor,
            &service,
            n,
            match how {
                Move::Place => None,
                Move::Evacuate(old) => Some((old, "lost")),
                Move::Relocate(old) => Some((old, "found no qualified worker")),
            },
            match &decision {
                Ok((cluster, _)) => Ok((cluster, chosen_name.as_str())),
                Err((status, detail)) => Err((*status, detail.as_str())),
            },
            took,
        );
        match decision {
            Ok((cluster, _)) => {
                tracing::info!(job = %service_id, n, cluster = %cluster, "instance placed");
                self.reserve(&cluster, demand);
                if let Move::Relocate(old) = how {
                    self.send(
                        old,
                        undeploy_message(
                            service_id,
                            Some(n),
                            "placed on another cluster: this one found no qualified worker",
                        ),
                    )
                    .await;
                }
                if let Some(msg) = deploy_message(&service, n) {
                    self.send(&cluster, msg).await;
                }
                Ok(true)
            }
            Err((status, detail)) => {
                tracing::info!(job = %service_id, n, %status, %detail, "instance pending");
                self.pending_hint.store(true, Ordering::SeqCst);
                Ok(false)
            }
        }
    }

    /// Moves every instance on `lost` (except finished ones) to other clusters.
    pub(crate) async fn reschedule_from(&self, lost: &ClusterId) -> Result<(), StoreError> {
        for service in self.store.list_all_services().await? {
            for inst in &service.instance_list {
                if inst.cluster_id.as_ref() == Some(lost) && !is_finished(inst.status) {
                    self.schedule(service.id, inst.instance_number, Move::Evacuate(lost))
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Tries to place every pending instance (negative status or `REQUESTED`, no cluster) and
    /// to relocate instances their cluster refused. Returns how many went to a cluster. Runs
    /// by itself when clusters register, connect or report more capacity.
    pub async fn retry_pending(&self) -> usize {
        let services = match self.store.list_all_services().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot list services to retry pending instances: {e}");
                self.pending_hint.store(true, Ordering::SeqCst);
                return 0;
            }
        };
        let mut placed = 0;
        for service in services {
            for inst in &service.instance_list {
                // Unplaced: pending with a negative status, or left `REQUESTED` by a deploy
                // whose placement step failed. Placed but refused by its cluster: relocation.
                let how = match &inst.cluster_id {
                    None if matches!(
                        inst.status,
                        Some(Status::Negative(_)) | Some(Status::REQUESTED)
                    ) =>
                    {
                        Move::Place
                    }
                    Some(cluster) if needs_relocation(inst.status) => Move::Relocate(cluster),
                    _ => continue,
                };
                let relocation = matches!(how, Move::Relocate(_));
                match self.schedule(service.id, inst.instance_number, how).await {
                    Ok(false) if relocation => {
                        // Still refused and nowhere else to go: try again later.
                        self.pending_hint.store(true, Ordering::SeqCst);
                    }
                    Ok(true) => placed += 1,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(job = %service.id, "cannot retry a pending instance: {e}");
                        self.pending_hint.store(true, Ordering::SeqCst);
                    }
                }
            }
        }
        placed
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
