//! The root's pure core: where an instance goes and what the link must do about it, as plain
//! data in and decisions out (the root's counterpart of the cluster's `ClusterState` +
//! `Effect`s). No store, no sessions, no clock: the async shell in
//! `cluster_link/instances.rs` reads the inputs (the service record, the candidate clusters,
//! the time), applies the record changes inside its store update and carries out the
//! [`Effect`]s (reserve capacity, send commands, retry later). The rules of statuses, reports
//! and messages it builds on are in [`crate::instances`].

use oakestra_core::ids::{ClusterId, ObjectId};
use oakestra_core::model::{InstanceRecord, ServiceRecord};
use oakestra_core::status::{
    DeploymentStatus, NegativeSchedulingStatus, PositiveSchedulingStatus, Status,
};
use oakestra_proto::grpc::RootMessage;
use oakestra_sched::{Candidate, ConstraintError, Placement, PlacementRequest, Scheduler};
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::instances::{
    EXCLUDED_CLUSTERS, Move, Reserved, WAITING, deploy_message, is_finished, needs_relocation,
    refresh_service_status, reset_placement, undeploy_message,
};

/// A cluster the root may place on: the scheduler's view of it, its id and its location.
pub(crate) type ClusterChoice = (Candidate, ClusterId, String);

/// What the link does once the store holds the new records, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Effect {
    /// Count an instance's demand against a cluster until the cluster's report includes it.
    Reserve(ClusterId, Reserved),
    /// Give back the demand of an instance that left a cluster before its report did.
    Release(ClusterId, Reserved),
    /// Send a command down the cluster's session (dropped while it is offline: its snapshot
    /// on reconnect reconciles).
    Send(ClusterId, RootMessage),
    /// Something is left unplaced: the pending retry should run again.
    RetryLater,
}

/// Where an instance goes, or why it stays unplaced.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    /// On this cluster.
    Placed {
        /// The chosen cluster.
        cluster: ClusterId,
        /// Its location (empty when unknown).
        location: String,
        /// Its name, as the scheduler knows it.
        name: String,
    },
    /// Nowhere: the negative status and why.
    Unplaced {
        /// `NoActiveClusterWithCapacity`, `TargetClusterNotFound`, …
        status: Status,
        /// What the scheduler said.
        detail: String,
    },
}

/// The placement of one instance worked out by [`plan`]: apply it to the stored service with
/// [`Plan::apply`], then carry out [`Plan::effects`].
#[derive(Debug, Clone)]
pub(crate) struct Plan<'a> {
    /// The instance number.
    pub(crate) n: u32,
    /// How it moves.
    pub(crate) how: Move<'a>,
    /// Where it goes.
    pub(crate) decision: Decision,
    /// What one instance of the service reserves on its cluster.
    pub(crate) demand: Reserved,
    /// Clusters a relocated instance is not tried on again (they found no worker for it).
    excluded: Vec<String>,
}

/// What one instance of a service with this placement request reserves (nothing when its
/// constraints do not parse: then it is never placed).
pub(crate) fn demand_of(request: &Result<PlacementRequest, ConstraintError>) -> Reserved {
    request.as_ref().map_or_else(
        |_| Reserved::default(),
        |r| Reserved {
            vcpus: r.vcpus,
            memory_mb: r.memory_mb,
            gpus: r.vgpus,
        },
    )
}

/// Decides where instance `n` of `service` goes among `candidates` (the active and connected
/// clusters with what they have left), with the service's placement `request`. `None` when a
/// relocation finds no other cluster: the instance then stays where it is.
pub(crate) fn plan<'a, S: Scheduler + ?Sized>(
    service: &ServiceRecord,
    n: u32,
    how: Move<'a>,
    request: &Result<PlacementRequest, ConstraintError>,
    mut candidates: Vec<ClusterChoice>,
    scheduler: &S,
) -> Option<Plan<'a>> {
    let mut excluded: Vec<String> = Vec::new();
    if let Move::Relocate(old) = how {
        excluded = service
            .instance(n)
            .and_then(|i| i.extra.get(EXCLUDED_CLUSTERS))
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        excluded.push(old.0.clone());
    }
    let decision = match request {
        Ok(request) => {
            candidates.retain(|(_, id, _)| !excluded.contains(&id.0));
            choose(request, candidates, scheduler)
        }
        Err(e) => Decision::Unplaced {
            status: NegativeSchedulingStatus::NoActiveClusterWithCapacity.into(),
            detail: e.to_string(),
        },
    };
    if matches!(how, Move::Relocate(_)) && matches!(decision, Decision::Unplaced { .. }) {
        return None;
    }
    Some(Plan {
        n,
        how,
        decision,
        demand: demand_of(request),
        excluded,
    })
}

/// The scheduler's pick among `candidates`, found by the index it answers (or by name).
fn choose<S: Scheduler + ?Sized>(
    request: &PlacementRequest,
    candidates: Vec<ClusterChoice>,
    scheduler: &S,
) -> Decision {
    let list: Vec<Candidate> = candidates.iter().map(|(c, _, _)| c.clone()).collect();
    match scheduler.place(request, &list) {
        Ok(p) => match chosen_index(&p, &list).and_then(|i| candidates.into_iter().nth(i)) {
            Some((c, cluster, location)) => Decision::Placed {
                cluster,
                location,
                name: c.name,
            },
            None => {
                let (status, detail) = unknown_cluster(&p);
                Decision::Unplaced { status, detail }
            }
        },
        Err(no) => Decision::Unplaced {
            status: Status::Negative(no.status),
            detail: no.detail,
        },
    }
}

/// Where the scheduler's answer is in `list`: the position it reports when the candidate
/// there has the answer's name, else the candidate with that name.
pub(crate) fn chosen_index(p: &Placement, list: &[Candidate]) -> Option<usize> {
    p.index
        .filter(|i| list.get(*i).is_some_and(|c| c.name == p.candidate))
        .or_else(|| list.iter().position(|c| c.name == p.candidate))
}

/// The status and detail of an answer naming a cluster nobody offered.
pub(crate) fn unknown_cluster(p: &Placement) -> (Status, String) {
    (
        NegativeSchedulingStatus::TargetClusterNotFound.into(),
        format!("the scheduler chose an unknown cluster {:?}", p.candidate),
    )
}

/// Records in `inst` at time `now` that it is placed on `cluster` at `location` (empty:
/// unknown), with `detail` (why it moved; `None` for a first placement). What its previous
/// cluster reported is cleared.
pub(crate) fn record_placed(
    inst: &mut InstanceRecord,
    cluster: &ClusterId,
    location: &str,
    detail: Option<String>,
    now: f64,
) {
    reset_placement(inst);
    inst.cluster_id = Some(cluster.clone());
    inst.cluster_location = Some(if location.is_empty() {
        "location-unknown".to_owned()
    } else {
        location.to_owned()
    });
    inst.status = Some(PositiveSchedulingStatus::ClusterScheduled.into());
    inst.status_detail = detail;
    inst.last_modified_timestamp = Some(now);
}

/// Records in `inst` at time `now` that no cluster takes it: `status` and why.
pub(crate) fn record_unplaced(inst: &mut InstanceRecord, status: Status, detail: &str, now: f64) {
    reset_placement(inst);
    inst.cluster_id = None;
    inst.cluster_location = None;
    inst.status = Some(status);
    inst.status_detail = Some(detail.to_owned());
    inst.last_modified_timestamp = Some(now);
}

impl Plan<'_> {
    /// Writes the decision into the stored `service` at time `now` (seconds since the epoch).
    /// `false`, and nothing changed, when the instance is gone, someone else moved it
    /// meanwhile, or a relocation is no longer needed.
    pub(crate) fn apply(&self, service: &mut ServiceRecord, now: f64) -> bool {
        let Some(inst) = service.instance_mut(self.n) else {
            return false;
        };
        if inst.cluster_id.as_ref() != self.how.from() {
            return false;
        }
        if matches!(self.how, Move::Relocate(_)) && !needs_relocation(inst.status) {
            return false;
        }
        match &self.decision {
            Decision::Placed {
                cluster, location, ..
            } => {
                let detail = match self.how {
                    Move::Place => None,
                    Move::Evacuate(old) => {
                        Some(format!("moved from cluster {old}, which was lost"))
                    }
                    Move::Relocate(old) => Some(format!(
                        "moved from cluster {old}, which found no qualified worker"
                    )),
                };
                record_placed(inst, cluster, location, detail, now);
                if matches!(self.how, Move::Relocate(_)) {
                    inst.extra.insert(
                        EXCLUDED_CLUSTERS.to_owned(),
                        serde_json::Value::from(self.excluded.clone()),
                    );
                }
            }
            Decision::Unplaced { status, detail } => record_unplaced(inst, *status, detail, now),
        }
        refresh_service_status(service);
        true
    }

    /// The cluster it left and why, for the event log (`None` for a first placement).
    pub(crate) fn moved_from(&self) -> Option<(&ClusterId, &'static str)> {
        match self.how {
            Move::Place => None,
            Move::Evacuate(old) => Some((old, "lost")),
            Move::Relocate(old) => Some((old, "found no qualified worker")),
        }
    }

    /// What the link does once `service` (the stored record after [`Plan::apply`]) is saved:
    /// reserve the demand on the new cluster, tell a refusing old cluster to let go, send the
    /// `Deploy`; or retry later when nothing fits.
    pub(crate) fn effects(&self, service: &ServiceRecord) -> Vec<Effect> {
        match &self.decision {
            Decision::Placed { cluster, .. } => {
                let mut effects = vec![Effect::Reserve(cluster.clone(), self.demand)];
                if let Move::Relocate(old) = self.how {
                    effects.push(Effect::Send(
                        old.clone(),
                        undeploy_message(
                            service.id,
                            Some(self.n),
                            "placed on another cluster: this one found no qualified worker",
                        ),
                    ));
                }
                if let Some(msg) = deploy_message(service, self.n) {
                    effects.push(Effect::Send(cluster.clone(), msg));
                }
                effects
            }
            Decision::Unplaced { .. } => vec![Effect::RetryLater],
        }
    }
}

/// Adds the service's next instance, `REQUESTED` and waiting for a decision, with the
/// addresses the IPAM gave it, at time `now`. Returns its number.
pub(crate) fn add_requested(
    service: &mut ServiceRecord,
    ipv4: Ipv4Addr,
    ipv6: Ipv6Addr,
    now: f64,
) -> u32 {
    let n = service.next_instance_progressive_number;
    service.next_instance_progressive_number = n + 1;
    let mut inst = InstanceRecord::new(n, PositiveSchedulingStatus::Requested);
    inst.status_detail = Some(WAITING.to_owned());
    inst.instance_ip = Some(ipv4);
    inst.instance_ip_v6 = Some(ipv6);
    inst.last_modified_timestamp = Some(now);
    service.instance_list.push(inst);
    n
}

/// Takes instance `number` (every instance with `None`) out of `service` and sets the
/// service's status from what is left. `Err(number)` when it has no such instance.
pub(crate) fn remove_instances(
    service: &mut ServiceRecord,
    number: Option<u32>,
) -> Result<Vec<InstanceRecord>, u32> {
    let (gone, kept): (Vec<InstanceRecord>, Vec<InstanceRecord>) = service
        .instance_list
        .drain(..)
        .partition(|i| number.is_none_or(|n| i.instance_number == n));
    service.instance_list = kept;
    if let Some(n) = number
        && gone.is_empty()
    {
        return Err(n);
    }
    if service.instance_list.is_empty() {
        if !gone.is_empty() {
            service.status = Some(DeploymentStatus::Undeployed.into());
            service.status_detail = Some("no instances".to_owned());
        }
    } else {
        refresh_service_status(service);
    }
    Ok(gone)
}

/// What the link does for instances the user undeployed: free what each still holds on its
/// cluster and tell the cluster.
pub(crate) fn undeploy_effects(
    service_id: ObjectId,
    removed: &[InstanceRecord],
    demand: Reserved,
) -> Vec<Effect> {
    let mut effects = Vec::new();
    for inst in removed {
        if let Some(cluster) = &inst.cluster_id {
            if !is_finished(inst.status) {
                effects.push(Effect::Release(cluster.clone(), demand));
            }
            effects.push(Effect::Send(
                cluster.clone(),
                undeploy_message(
                    service_id,
                    Some(inst.instance_number),
                    "undeployed by the user",
                ),
            ));
        }
    }
    effects
}

/// What the link does for a deleted service: free what its instances hold, then one
/// `Undeploy` of the whole service per cluster that has any of them.
pub(crate) fn deleted_service_effects(service: &ServiceRecord, demand: Reserved) -> Vec<Effect> {
    let mut effects = Vec::new();
    for i in &service.instance_list {
        if let Some(cluster) = &i.cluster_id
            && !is_finished(i.status)
        {
            effects.push(Effect::Release(cluster.clone(), demand));
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
        effects.push(Effect::Send(
            cluster.clone(),
            undeploy_message(service.id, None, "the service was deleted"),
        ));
    }
    effects
}

/// The instances on the `lost` cluster that must move (all but finished ones).
pub(crate) fn evacuations<'a>(
    services: &[ServiceRecord],
    lost: &'a ClusterId,
) -> Vec<(ObjectId, u32, Move<'a>)> {
    services
        .iter()
        .flat_map(|s| {
            s.instance_list
                .iter()
                .filter(|i| i.cluster_id.as_ref() == Some(lost) && !is_finished(i.status))
                .map(move |i| (s.id, i.instance_number, Move::Evacuate(lost)))
        })
        .collect()
}

/// The instances the pending retry tries again: unplaced ones (a negative status, or left
/// `REQUESTED` by a deploy whose placement step failed) are placed, and ones their cluster
/// refused are relocated.
pub(crate) fn retries(services: &[ServiceRecord]) -> Vec<(ObjectId, u32, Move<'_>)> {
    let mut out = Vec::new();
    for service in services {
        for inst in &service.instance_list {
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
            out.push((service.id, inst.instance_number, how));
        }
    }
    out
}

#[cfg(test)]
mod tests;
