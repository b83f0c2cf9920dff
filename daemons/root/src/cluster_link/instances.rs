//! The link's instance lifecycle: deploy and undeploy requests, placement on a cluster
//! (scheduling, moving, retrying pending instances) and releasing a deleted service. This is
//! the I/O shell: it reads the store and the sessions, lets the pure core
//! ([`crate::placement`]) decide, applies the record changes in one store update and carries
//! out the core's effects. The rules of statuses, reports and messages are in
//! [`crate::instances`].

use crate::addresses;
use oakestra_core::ids::{ClusterId, ObjectId};
use oakestra_core::model::ServiceRecord;
use oakestra_core::status::Status;
use oakestra_net::ipam::AddressManager;
use oakestra_sched::Scheduler;
use oakestra_store::StoreError;
use std::sync::atomic::Ordering;

use super::*;
use crate::instances::*;
use crate::placement;

/// A batch placement: the index of the chosen cluster, or why none fits.
type Decision = Result<usize, (Status, String)>;

impl ClusterLink {
    /// Creates one instance of `service_id` and places it (see the [`crate::instances`] docs for
    /// the flow and the REST contract). The caller has checked that the user may change the
    /// service.
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
                let n = placement::add_requested(
                    service,
                    a.ipv4,
                    a.ipv6,
                    crate::tokens::now_secs_f64(),
                );
                refresh_service_status(service);
                Ok::<_, Step>(n)
            })
            .await;
        let n = match created {
            Ok(n) => n,
            Err(step) => return Err(step.into_error(service_id)),
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

    /// Creates `count` instances of `service_id` and places them, as a batch (`POST
    /// /api/service/<id>/instance?count=N`): the records and their addresses are created in
    /// ONE store update, placed with one candidate list (each placement takes its demand off
    /// the chosen cluster before the next, as the per-instance path's reservations do), the
    /// placements recorded in ONE more update, and the `Deploy` commands queued on the
    /// clusters' streams without waiting for each other. The work per instance does not grow
    /// with the instances the service already has. Returns the created instances in number
    /// order. All or nothing for creation: when the address pool cannot take every instance,
    /// none is created.
    pub async fn deploy_instances(
        &self,
        service_id: ObjectId,
        count: u32,
    ) -> Result<Vec<DeployOutcome>, InstanceError> {
        let service = self
            .store
            .get_service(service_id)
            .await?
            .ok_or(InstanceError::ServiceNotFound(service_id))?;
        let request = placement_request(&service)?;
        let created = self
            .store
            .update_service_with_ipam(service_id, |service, ipam: &mut AddressManager| {
                let first = service.next_instance_progressive_number;
                let now = crate::tokens::now_secs_f64();
                service.instance_list.reserve(count as usize);
                for n in first..first.saturating_add(count) {
                    let a = addresses::assign_instance(ipam, service_id, n)
                        .map_err(|e| Step::Address(Box::new(addresses::instance_error(e))))?;
                    placement::add_requested(service, a.ipv4, a.ipv6, now);
                }
                service.next_instance_progressive_number = first.saturating_add(count);
                refresh_service_status(service);
                Ok::<_, Step>(first..first.saturating_add(count))
            })
            .await;
        let numbers: Vec<u32> = match created {
            Ok(range) => range.collect(),
            Err(step) => return Err(step.into_error(service_id)),
        };
        for n in &numbers {
            crate::monitor::record::requested(&self.monitor, &service, *n);
        }

        // Placement: one candidate list; each decision takes its demand off the chosen
        // cluster before the next one.
        let demand = service_demand(&service);
        let connected = self.connected_clusters();
        let mut reserved = self.reservations();
        let clusters = match self.store.list_clusters().await {
            Ok(c) => c,
            Err(e) => {
                // The instances exist as REQUESTED; the retry places them later.
                self.pending_hint.store(true, Ordering::SeqCst);
                return Err(e.into());
            }
        };
        let mut list: Vec<oakestra_sched::Candidate> = clusters
            .iter()
            .map(|c| {
                let r = reserved.get(&c.id).copied().unwrap_or_default();
                candidate_of(c, connected.contains(&c.id), r)
            })
            .collect();
        let mut decisions: Vec<(u32, Decision, std::time::Duration)> =
            Vec::with_capacity(numbers.len());
        for n in &numbers {
            let started = std::time::Instant::now();
            let decision = match self.config().algorithm.place(&request, &list) {
                Ok(p) => match placement::chosen_index(&p, &list) {
                    Some(i) => {
                        let id = &clusters[i].id;
                        let r = reserved.entry(id.clone()).or_default();
                        r.placed.add(demand);
                        list[i] = candidate_of(&clusters[i], connected.contains(id), *r);
                        Ok(i)
                    }
                    None => Err(placement::unknown_cluster(&p)),
                },
                Err(no) => Err((Status::Negative(no.status), no.detail)),
            };
            decisions.push((*n, decision, started.elapsed()));
        }

        // One update records every decision (instances someone else placed meanwhile, e.g.
        // the retry of pending instances, are left as they are).
        let now = crate::tokens::now_secs_f64();
        let updated = self
            .store
            .update_service(service_id, |service| {
                let positions: std::collections::HashMap<u32, usize> = service
                    .instance_list
                    .iter()
                    .enumerate()
                    .map(|(i, inst)| (inst.instance_number, i))
                    .collect();
                let mut applied = Vec::with_capacity(decisions.len());
                for (k, (n, decision, _)) in decisions.iter().enumerate() {
                    let Some(inst) = positions
                        .get(n)
                        .and_then(|i| service.instance_list.get_mut(*i))
                    else {
                        continue;
                    };
                    if inst.cluster_id.is_some() || inst.status != Some(Status::REQUESTED) {
                        continue;
                    }
                    match decision {
                        Ok(i) => {
                            let c = &clusters[*i];
                            placement::record_placed(inst, &c.id, &c.location, None, now);
                        }
                        Err((status, detail)) => {
                            placement::record_unplaced(inst, *status, detail, now);
                        }
                    }
                    applied.push(k);
                }
                refresh_service_status(service);
                Ok::<_, StoreError>((applied, service.clone()))
            })
            .await;
        let (applied, service) = match updated {
            Ok(u) => u,
            Err(e) => {
                self.pending_hint.store(true, Ordering::SeqCst);
                return Err(if e.is_not_found() {
                    InstanceError::ServiceNotFound(service_id)
                } else {
                    e.into()
                });
            }
        };
        self.push_service(&service).await;

        let positions: std::collections::HashMap<u32, usize> = service
            .instance_list
            .iter()
            .enumerate()
            .map(|(i, inst)| (inst.instance_number, i))
            .collect();
        let status_of = |n: u32| {
            positions
                .get(&n)
                .and_then(|i| service.instance_list.get(*i))
                .and_then(|i| i.status)
        };
        let mut per_cluster: std::collections::BTreeMap<usize, Vec<u32>> = Default::default();
        let mut pending = false;
        for k in applied {
            let (n, decision, took) = &decisions[k];
            crate::monitor::record::placement_with_status(
                &self.monitor,
                &service,
                *n,
                status_of(*n),
                None,
                match decision {
                    Ok(i) => Ok((&clusters[*i].id, clusters[*i].name.as_str())),
                    Err((status, detail)) => Err((*status, detail.as_str())),
                },
                *took,
            );
            match decision {
                Ok(i) => per_cluster.entry(*i).or_default().push(*n),
                Err(_) => pending = true,
            }
        }
        if pending {
            self.pending_hint.store(true, Ordering::SeqCst);
        }
        let placed: std::collections::HashSet<u32> =
            per_cluster.values().flatten().copied().collect();
        for (i, ns) in &per_cluster {
            let cluster = &clusters[*i].id;
            tracing::info!(job = %service_id, instances = ns.len(), cluster = %cluster, "instances placed");
            let mut total = Reserved::default();
            for _ in ns {
                total.add(demand);
            }
            self.reserve(cluster, total);
            // Queued on the cluster's stream one after another; the stream sends them while
            // later ones are queued (a send waits only when the stream's buffer is full).
            for msg in crate::instances::deploy_messages(&service, ns) {
                self.send(cluster, msg).await;
            }
        }
        Ok(numbers
            .iter()
            .filter_map(|n| {
                let instance = service.instance_list.get(*positions.get(n)?)?.clone();
                Some(DeployOutcome {
                    placed: placed.contains(n),
                    instance,
                })
            })
            .collect())
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
                let gone = placement::remove_instances(service, number).map_err(Step::NotFound)?;
                for i in &gone {
                    addresses::release_instance(ipam, service_id, i.instance_number);
                }
                Ok::<_, Step>((gone, service.application_id))
            })
            .await;
        let (removed, application) = match removed {
            Ok(r) => r,
            Err(step) => return Err(step.into_error(service_id)),
        };
        self.carry_out(placement::undeploy_effects(service_id, &removed, demand))
            .await;
        self.push_service_id(service_id).await;
        let numbers: Vec<u32> = removed.iter().map(|i| i.instance_number).collect();
        crate::monitor::record::undeployed(&self.monitor, application, service_id, &numbers);
        Ok(numbers)
    }

    /// After a service was deleted from the store: tells every cluster that holds one of its
    /// instances to undeploy them, and frees its RR and instance addresses.
    pub async fn release_service(&self, service: &ServiceRecord) -> Result<(), InstanceError> {
        self.carry_out(placement::deleted_service_effects(
            service,
            service_demand(service),
        ))
        .await;
        self.push_deleted(&service.job_name).await;
        crate::monitor::record::service_deleted(&self.monitor, service);
        addresses::release_services(self.store.as_ref(), std::slice::from_ref(service)).await?;
        Ok(())
    }

    /// Active, connected clusters as candidates.
    pub(super) async fn candidates(
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

    /// Places instance `n` (see [`Move`]): [`placement::plan`] decides from the stored service
    /// and the candidate clusters, the plan is applied in one store update, then its effects
    /// are carried out. Skips it when someone else moved it meanwhile. Returns whether it went
    /// to a cluster.
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
        let request = placement_request(&service);
        let candidates = match request {
            Ok(_) => self.candidates().await?,
            Err(_) => Vec::new(),
        };
        let algorithm = self.config().algorithm;
        let Some(plan) = placement::plan(&service, n, how, &request, candidates, &algorithm) else {
            // A relocation with no other cluster that fits: the instance stays where it is.
            return Ok(false);
        };
        let took = started.elapsed();
        let updated = self
            .store
            .update_service(service_id, |service| {
                Ok::<_, StoreError>(
                    plan.apply(service, crate::tokens::now_secs_f64())
                        .then(|| service.clone()),
                )
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
            plan.moved_from(),
            match &plan.decision {
                placement::Decision::Placed { cluster, name, .. } => Ok((cluster, name.as_str())),
                placement::Decision::Unplaced { status, detail } => Err((*status, detail.as_str())),
            },
            took,
        );
        let placed = match &plan.decision {
            placement::Decision::Placed { cluster, .. } => {
                tracing::info!(job = %service_id, n, cluster = %cluster, "instance placed");
                true
            }
            placement::Decision::Unplaced { status, detail } => {
                tracing::info!(job = %service_id, n, %status, %detail, "instance pending");
                false
            }
        };
        self.carry_out(plan.effects(&service)).await;
        Ok(placed)
    }

    /// Carries out what the pure core decided, in order.
    pub(super) async fn carry_out(&self, effects: Vec<placement::Effect>) {
        for effect in effects {
            match effect {
                placement::Effect::Reserve(cluster, demand) => self.reserve(&cluster, demand),
                placement::Effect::Release(cluster, demand) => self.release(&cluster, demand),
                placement::Effect::Send(cluster, message) => {
                    self.send(&cluster, message).await;
                }
                placement::Effect::RetryLater => self.pending_hint.store(true, Ordering::SeqCst),
            }
        }
    }

    /// Moves every instance on `lost` (except finished ones) to other clusters.
    pub(crate) async fn reschedule_from(&self, lost: &ClusterId) -> Result<(), StoreError> {
        let services = self.store.list_all_services().await?;
        for (service, n, how) in placement::evacuations(&services, lost) {
            self.schedule(service, n, how).await?;
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
        for (service, n, how) in placement::retries(&services) {
            let relocation = matches!(how, Move::Relocate(_));
            match self.schedule(service, n, how).await {
                Ok(false) if relocation => {
                    // Still refused and nowhere else to go: try again later.
                    self.pending_hint.store(true, Ordering::SeqCst);
                }
                Ok(true) => placed += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(job = %service, "cannot retry a pending instance: {e}");
                    self.pending_hint.store(true, Ordering::SeqCst);
                }
            }
        }
        placed
    }
}
