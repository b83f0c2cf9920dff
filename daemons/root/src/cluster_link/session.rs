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
                    // What else has already arrived is applied with it, so that the instance
                    // reports among them cost one store update per service, not one each.
                    let mut batch = vec![message];
                    let mut ended = false;
                    while batch.len() < MAX_BATCH {
                        match ready(&mut inbound).await {
                            Some(Some(Ok(m))) => batch.push(m),
                            Some(Some(Err(_)) | None) => {
                                ended = true;
                                break;
                            }
                            None => break,
                        }
                    }
                    self.on_messages(&id, batch).await;
                    if ended {
                        break;
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

    /// Applies messages in their order; runs of instance reports go through
    /// [`Self::on_instance_statuses`] (one store update per service for the run).
    pub(super) async fn on_messages(&self, id: &ClusterId, messages: Vec<ClusterMessage>) {
        let mut reports: Vec<InstanceStatus> = Vec::new();
        for message in messages {
            match message.kind {
                Some(cluster_message::Kind::InstanceStatus(s)) => {
                    self.monitor.metrics.message("received", "instance_status");
                    reports.push(s);
                }
                kind => {
                    if !reports.is_empty() {
                        self.apply_reports(id, std::mem::take(&mut reports)).await;
                    }
                    if let Err(e) = self.on_message(id, ClusterMessage { kind }).await {
                        tracing::warn!(cluster = %id, "cannot apply a report: {e}");
                    }
                }
            }
        }
        if !reports.is_empty() {
            self.apply_reports(id, reports).await;
        }
    }

    async fn apply_reports(&self, id: &ClusterId, reports: Vec<InstanceStatus>) {
        if let Err(e) = self.on_instance_statuses(id, &reports).await {
            tracing::warn!(cluster = %id, reports = reports.len(), "cannot apply instance reports: {e}");
        }
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
        let held: HashSet<(ObjectId, u32)> = self
            .on_instance_statuses(id, &snapshot.instances)
            .await?
            .into_iter()
            .collect();
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
        Ok(self
            .on_instance_statuses(id, std::slice::from_ref(report))
            .await?
            .pop())
    }

    /// Applies instance reports: those of one service in ONE store update (in their order, so
    /// a later report of an instance wins), then per report what follows (events, history,
    /// relocation, undeploying what the root does not place here) and one table push per
    /// service. Returns the keys of the reported instances the root places on this cluster.
    pub(super) async fn on_instance_statuses(
        &self,
        id: &ClusterId,
        reports: &[InstanceStatus],
    ) -> Result<Vec<(ObjectId, u32)>, StoreError> {
        // Reports grouped by service, in the order the services first appear.
        let mut jobs: Vec<(ObjectId, Vec<ParsedReport<'_>>)> = Vec::new();
        let mut slot: HashMap<ObjectId, usize> = HashMap::new();
        for report in reports {
            let Ok(job) = report.job_id.parse::<ObjectId>() else {
                tracing::warn!(cluster = %id, job = %report.job_id, "report about a malformed job id; ignored");
                continue;
            };
            let status = match Status::parse_optional(report.status.trim()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(cluster = %id, "report with {e}; ignored");
                    continue;
                }
            };
            let k = *slot.entry(job).or_insert_with(|| {
                jobs.push((job, Vec::new()));
                jobs.len() - 1
            });
            jobs[k].1.push((report, status));
        }
        let mut held = Vec::new();
        for (job, group) in jobs {
            let outcomes = self
                .store
                .update_service(job, |service| {
                    let positions: HashMap<u32, usize> = service
                        .instance_list
                        .iter()
                        .enumerate()
                        .map(|(i, inst)| (inst.instance_number, i))
                        .collect();
                    let mut outcomes = Vec::with_capacity(group.len());
                    for (report, status) in &group {
                        let n = report.instance_number;
                        let Some(inst) = positions
                            .get(&n)
                            .and_then(|i| service.instance_list.get_mut(*i))
                        else {
                            outcomes.push(Report::Foreign);
                            continue;
                        };
                        if inst.cluster_id.as_ref() != Some(id) {
                            outcomes.push(Report::Foreign);
                            continue;
                        }
                        let before = inst.status;
                        let restarts_before = inst.restart_count;
                        let ready_before = inst.ready;
                        crate::instances::apply_report(inst, *status, report);
                        outcomes.push(Report::Applied(
                            crate::monitor::record::Change::of_instance(
                                service.application_id,
                                service.id,
                                inst,
                                before,
                                restarts_before,
                                ready_before,
                            ),
                        ));
                    }
                    crate::instances::refresh_service_status(service);
                    Ok::<_, StoreError>(outcomes)
                })
                .await;
            let outcomes = match outcomes {
                Ok(o) => o,
                Err(e) if e.is_not_found() => {
                    group.iter().map(|_| Report::UnknownService).collect()
                }
                Err(e) => return Err(e),
            };
            let mut applied_any = false;
            let mut told_unknown = false;
            for ((report, status), outcome) in group.iter().zip(outcomes) {
                let n = report.instance_number;
                let undeployed = *status == Some(Status::Deployment(DeploymentStatus::Undeployed));
                match outcome {
                    Report::Applied(change) => {
                        applied_any = true;
                        crate::monitor::record::instance_report(&self.monitor, id, &change, report);
                        if crate::instances::needs_relocation(*status)
                            && !self
                                .schedule(job, n, crate::instances::Move::Relocate(id))
                                .await?
                        {
                            // Nowhere else to go now; a cluster joining or growing retries it.
                            self.pending_hint.store(true, Ordering::SeqCst);
                        }
                        held.push((job, n));
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
                    Report::UnknownService if !undeployed && !told_unknown => {
                        told_unknown = true;
                        self.send(
                            id,
                            undeploy_message(job, None, "the service does not exist at the root"),
                        )
                        .await;
                    }
                    _ => {}
                }
            }
            if applied_any {
                self.push_service_id(job).await;
            }
        }
        Ok(held)
    }
}

/// An instance report with its parsed status.
type ParsedReport<'a> = (&'a InstanceStatus, Option<Status>);

/// Most messages of a cluster's stream applied together.
const MAX_BATCH: usize = 4096;

/// The stream's next item if it is there already: `None` when it would have to wait.
async fn ready<S>(inbound: &mut S) -> Option<Option<S::Item>>
where
    S: Stream + Unpin,
{
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut *inbound).poll_next(cx) {
            std::task::Poll::Ready(item) => Some(item),
            std::task::Poll::Pending => None,
        })
    })
    .await
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
