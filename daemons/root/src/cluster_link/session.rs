//! A cluster's session: the stream it holds open, what it reports (resources, snapshots,
//! instance statuses, answers to questions), and what happens when it goes away.

use super::resources::capacity_grew;
use super::*;

impl ClusterLink {
    /// `Session`: checks the session credentials, installs the cluster's command stream
    /// (replacing an older one) and processes `inbound` in a task of its own. Returns the
    /// receiver of the commands for the cluster.
    pub fn connect<S>(
        &self,
        cluster_id: &str,
        secret: &str,
        inbound: S,
    ) -> Result<mpsc::Receiver<Result<RootMessage, tonic::Status>>, LinkError>
    where
        S: Stream<Item = Result<ClusterMessage, tonic::Status>> + Send + Unpin + 'static,
    {
        let id = ClusterId(cluster_id.trim().to_owned());
        let (tx, rx) = mpsc::channel(self.config.command_buffer.max(1));
        let generation = {
            let mut st = self.state();
            let ok = !secret.is_empty() && st.secrets.get(&id) == Some(&tokens::hash_token(secret));
            if !ok {
                return Err(LinkError::Unauthenticated(format!(
                    "cluster id {:?} with this session secret is not registered (the root may \
                     have restarted, or the cluster registered again elsewhere); call Register \
                     again and use the id and secret it returns",
                    id.0
                )));
            }
            st.generation += 1;
            let generation = st.generation;
            st.sessions.insert(id.clone(), Session { generation, tx });
            st.disconnected.remove(&id);
            generation
        };
        self.monitor.emit(crate::monitor::Event::cluster(
            &id,
            "cluster_connected",
            format!("cluster {id} connected its session"),
        ));
        let link = self.this.upgrade().expect("a ClusterLink lives in an Arc");
        tokio::spawn(async move { link.run_session(id, generation, inbound).await });
        Ok(rx)
    }

    pub(super) fn is_current(&self, id: &ClusterId, generation: u64) -> bool {
        self.state()
            .sessions
            .get(id)
            .is_some_and(|s| s.generation == generation)
    }

    pub(super) async fn run_session<S>(
        self: Arc<Self>,
        id: ClusterId,
        generation: u64,
        mut inbound: S,
    ) where
        S: Stream<Item = Result<ClusterMessage, tonic::Status>> + Send + Unpin + 'static,
    {
        match inbound.next().await {
            Some(Ok(ClusterMessage {
                kind: Some(cluster_message::Kind::Snapshot(snapshot)),
            })) => {
                if let Err(e) = self.on_snapshot(&id, snapshot).await {
                    tracing::warn!(cluster = %id, "cannot apply the snapshot: {e}");
                }
                while let Some(message) = inbound.next().await {
                    if !self.is_current(&id, generation) {
                        break;
                    }
                    let Ok(message) = message else { break };
                    if let Err(e) = self.on_message(&id, message).await {
                        tracing::warn!(cluster = %id, "cannot apply a report: {e}");
                    }
                }
            }
            Some(Ok(_)) => {
                let sender = self.state().sessions.get(&id).map(|s| s.tx.clone());
                if let Some(tx) = sender {
                    let _ = tx
                        .send(Err(tonic::Status::failed_precondition(
                            "the first message on the stream must be a Snapshot of every \
                             instance the cluster holds and its resources",
                        )))
                        .await;
                }
            }
            Some(Err(_)) | None => {}
        }
        self.on_disconnect(&id, generation);
    }

    pub(super) fn on_disconnect(&self, id: &ClusterId, generation: u64) {
        {
            let mut st = self.state();
            if st.sessions.get(id).map(|s| s.generation) != Some(generation) {
                return; // replaced by a newer stream
            }
            st.sessions.remove(id);
        }
        tracing::info!(cluster = %id, "cluster stream closed");
        self.monitor.emit(crate::monitor::Event::cluster(
            id,
            "cluster_disconnected",
            format!(
                "cluster {id} closed its session; lost unless it is back within {:?}",
                self.config.inactive_after
            ),
        ));
        self.arm_loss_timer(id.clone());
    }

    /// Starts the timer after which a cluster without a stream is lost.
    pub(super) fn arm_loss_timer(&self, id: ClusterId) {
        let generation = {
            let mut st = self.state();
            if st.sessions.contains_key(&id) {
                return;
            }
            st.generation += 1;
            let g = st.generation;
            st.disconnected.insert(id.clone(), g);
            g
        };
        let weak = self.this.clone();
        let after = self.config.inactive_after;
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let Some(link) = weak.upgrade() else { return };
            let expired = link.state().disconnected.get(&id) == Some(&generation);
            if expired {
                link.state().disconnected.remove(&id);
                if let Err(e) = link.cluster_lost(&id).await {
                    tracing::warn!(cluster = %id, "cannot move the instances of a lost cluster: {e}");
                }
            }
        });
    }

    /// Marks the cluster inactive and moves its instances.
    pub(crate) async fn cluster_lost(&self, id: &ClusterId) -> Result<(), StoreError> {
        if self.is_connected(id) {
            return Ok(()); // it came back just now
        }
        tracing::warn!(cluster = %id, after = ?self.config.inactive_after, "cluster lost");
        match self
            .store
            .update_cluster(id, |c| {
                c.active = false;
                Ok::<_, StoreError>(())
            })
            .await
        {
            Ok(()) => {}
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        }
        self.monitor.emit(crate::monitor::Event::cluster(
            id,
            "cluster_lost",
            format!(
                "cluster {id} silent for {:?}: inactive, moving its instances to other clusters",
                self.config.inactive_after
            ),
        ));
        self.reschedule_from(id).await
    }

    pub(super) async fn on_message(
        &self,
        id: &ClusterId,
        message: ClusterMessage,
    ) -> Result<(), StoreError> {
        self.monitor.metrics.message(
            "received",
            crate::monitor::metrics::cluster_message_kind(&message),
        );
        match message.kind {
            Some(cluster_message::Kind::Resources(r)) => self.on_resources(id, &r, false).await,
            Some(cluster_message::Kind::InstanceStatus(s)) => {
                self.on_instance_status(id, &s).await.map(|_| ())
            }
            // A later snapshot (e.g. after the cluster's own restart of a component).
            Some(cluster_message::Kind::Snapshot(s)) => self.on_snapshot(id, s).await,
            Some(cluster_message::Kind::LogsReply(r)) => {
                let request_id = r.request_id.clone();
                self.state().asks.answer(id, &request_id, Answer::Logs(r));
                Ok(())
            }
            Some(cluster_message::Kind::WorkersReply(r)) => {
                let request_id = r.request_id.clone();
                self.state()
                    .asks
                    .answer(id, &request_id, Answer::Workers(r));
                Ok(())
            }
            Some(cluster_message::Kind::TableQuery(q)) => {
                self.on_table_query(id, q).await;
                Ok(())
            }
            Some(cluster_message::Kind::TableInterestRemove(r)) => {
                self.on_table_interest_remove(id, r);
                Ok(())
            }
            None => Ok(()),
        }
    }

    pub(super) async fn on_resources(
        &self,
        id: &ClusterId,
        r: &Resources,
        activate: bool,
    ) -> Result<(), StoreError> {
        let (resources, extra) = resources_from_proto(r);
        let now = tokens::now_secs_f64();
        // The report accounts for everything placed before it.
        let had_reservations = self.state().reserved.remove(id).is_some();
        let (grew, workers_before) = self
            .store
            .update_cluster(id, |c| {
                let workers_before = c.resources.totals.workers;
                let grew = capacity_grew(c, &resources, &extra) || (activate && !c.active);
                c.resources = resources.clone();
                for (k, v) in &extra {
                    c.extra.insert(k.clone(), v.clone());
                }
                c.last_seen = Some(now);
                // Any report comes over a live session, so the cluster is active (this also
                // repairs a loss timer that fired just as the cluster came back).
                c.active = true;
                Ok::<_, StoreError>((grew, workers_before))
            })
            .await?;
        crate::monitor::record::workers_changed(
            &self.monitor,
            id,
            workers_before,
            resources.totals.workers,
        );
        if grew || had_reservations {
            self.retry.notify_one();
        }
        Ok(())
    }

    pub(super) async fn on_snapshot(
        &self,
        id: &ClusterId,
        snapshot: Snapshot,
    ) -> Result<(), StoreError> {
        let resources = snapshot.resources.unwrap_or_default();
        self.on_resources(id, &resources, true).await?;
        let mut held = HashSet::new();
        for s in &snapshot.instances {
            if let Some(key) = self.on_instance_status(id, s).await? {
                held.insert(key);
            }
        }
        // Instances the root placed here that the cluster does not hold: send them again.
        for service in self.store.list_all_services().await? {
            for inst in &service.instance_list {
                let here = inst.cluster_id.as_ref() == Some(id);
                if here
                    && !is_finished(inst.status)
                    && !held.contains(&(service.id, inst.instance_number))
                    && let Some(msg) =
                        crate::instances::deploy_message(&service, inst.instance_number)
                {
                    tracing::info!(cluster = %id, job = %service.id, n = inst.instance_number,
                        "re-sending an instance the cluster's snapshot lacks");
                    self.send(id, msg).await;
                }
            }
        }
        self.retry.notify_one();
        Ok(())
    }

    /// Applies one instance report. Returns the instance's key when the root places it on
    /// this cluster; otherwise tells the cluster to undeploy it.
    pub(super) async fn on_instance_status(
        &self,
        id: &ClusterId,
        report: &InstanceStatus,
    ) -> Result<Option<(ObjectId, u32)>, StoreError> {
        let Ok(job) = report.job_id.parse::<ObjectId>() else {
            tracing::warn!(cluster = %id, job = %report.job_id, "report about a malformed job id; ignored");
            return Ok(None);
        };
        let status = match Status::parse_optional(report.status.trim()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(cluster = %id, "report with {e}; ignored");
                return Ok(None);
            }
        };
        let n = report.instance_number;
        let outcome = self
            .store
            .update_service(job, |service| {
                let Some(inst) = service.instance_mut(n) else {
                    return Ok::<_, StoreError>(Report::Foreign);
                };
                if inst.cluster_id.as_ref() != Some(id) {
                    return Ok(Report::Foreign);
                }
                let before = inst.status;
                crate::instances::apply_report(inst, status, report);
                crate::instances::refresh_service_status(service);
                Ok(Report::Applied(crate::monitor::record::Change::of(
                    service, n, before,
                )))
            })
            .await;
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) if e.is_not_found() => Report::UnknownService,
            Err(e) => return Err(e),
        };
        let undeployed = status == Some(Status::Deployment(DeploymentStatus::Undeployed));
        match outcome {
            Report::Applied(change) => {
                crate::monitor::record::instance_report(&self.monitor, id, &change, report);
                if crate::instances::needs_relocation(status)
                    && !self
                        .schedule(job, n, crate::instances::Move::Relocate(id))
                        .await?
                {
                    // Nowhere else to go now; a cluster joining or growing retries it.
                    self.pending_hint.store(true, Ordering::SeqCst);
                }
                self.push_service_id(job).await;
                return Ok(Some((job, n)));
            }
            Report::Foreign if !undeployed => {
                self.send(
                    id,
                    undeploy_message(
                        job,
                        Some(n),
                        "the root does not place this instance on this cluster",
                    ),
                )
                .await;
            }
            Report::UnknownService if !undeployed => {
                self.send(
                    id,
                    undeploy_message(job, None, "the service does not exist at the root"),
                )
                .await;
            }
            _ => {}
        }
        Ok(None)
    }
}

/// What became of an instance report.
pub(super) enum Report {
    /// The root places the instance on this cluster; the record was updated.
    Applied(crate::monitor::record::Change),
    /// The root does not place this instance on this cluster.
    Foreign,
    /// The root has no such service.
    UnknownService,
}
