//! The root's side of the actor: commands from the root (deploy, undeploy, tables, logs) and
//! the conversions between the cluster-link messages and the state's types.

use super::*;

impl Actor {
    pub(super) fn root_command(&mut self, kind: proto::root_message::Kind, now: Instant) {
        match kind {
            proto::root_message::Kind::Deploy(d) => {
                // The addresses travel once, typed, in the service record.
                if let Err(e) = self.state.deploy(
                    &d.job_id,
                    d.instance_number,
                    &d.job_name,
                    &d.service_json,
                    now,
                ) {
                    tracing::error!("deploy from the root refused: {e}");
                    let _ = self
                        .outputs
                        .root
                        .send(proto::cluster_message::Kind::InstanceStatus(
                            proto::InstanceStatus {
                                job_id: d.job_id,
                                instance_number: d.instance_number,
                                status: "NO_QUALIFIED_WORKER_FOUND".into(),
                                status_detail: e.to_string(),
                                ..Default::default()
                            },
                        ));
                }
            }
            proto::root_message::Kind::Undeploy(u) => {
                for i in self.state.instances().filter(|i| {
                    i.job_id == u.job_id && u.instance_number.is_none_or(|n| n == i.instance_number)
                }) {
                    self.metrics.forget_instance(&i.job_name, i.instance_number);
                }
                let n = self.state.undeploy(&u.job_id, u.instance_number);
                tracing::info!(job = %u.job_id, instance = ?u.instance_number, removed = n, reason = %u.reason, "undeploy");
            }
            proto::root_message::Kind::LogsRequest(r) => self.ask_worker_for_logs(r),
            proto::root_message::Kind::ServiceTable(t) => self.state.root_table(root_table(t)),
            proto::root_message::Kind::WorkersRequest(r) => {
                let workers = crate::workers_report::worker_summaries(&self.state, Instant::now());
                let _ = self
                    .outputs
                    .root
                    .send(proto::cluster_message::Kind::WorkersReply(
                        proto::WorkersReply {
                            request_id: r.request_id,
                            workers,
                        },
                    ));
            }
        }
    }

    /// Passes the root's log request to the instance's worker, whose answer comes back on
    /// `nodes/<id>/logs` (see [`Self::forward_logs_reply`]); answers at once with an error when
    /// no active worker holds the instance. The root times the request out; nothing waits here.
    pub(super) fn ask_worker_for_logs(&self, r: proto::LogsRequest) {
        let key: InstanceKey = (r.job_id.clone(), r.instance_number);
        let target = match self.state.instance(&key) {
            None => Err("this cluster does not hold it".to_owned()),
            Some(i) => match i.worker_id.as_deref() {
                None => Err(format!("it is not on a worker ({})", i.status)),
                Some(w) if !self.state.worker(w).is_some_and(|w| w.active) => {
                    Err(format!("its worker {w} is not active"))
                }
                Some(w) => Ok((w.to_owned(), i.command.job_name.clone())),
            },
        };
        match target {
            Ok((worker, job_name)) => {
                let request = LogsRequest {
                    wire_version: WireVersion::CURRENT,
                    request_id: r.request_id,
                    job_name,
                    instance_number: r.instance_number,
                    tail_lines: r.tail_lines,
                    max_bytes: r.max_bytes,
                };
                self.publish(NodeTopic::ControlLogs, &worker, request.to_bytes());
            }
            Err(why) => {
                let _ = self
                    .outputs
                    .root
                    .send(proto::cluster_message::Kind::LogsReply(proto::LogsReply {
                        request_id: r.request_id,
                        logs: String::new(),
                        error: format!(
                            "no log of instance {} of service {} from a worker: {why}",
                            r.instance_number, r.job_id
                        ),
                    }));
            }
        }
    }

    /// A worker's answer to a log request, up to the root.
    pub(super) fn forward_logs_reply(&self, reply: LogsReply) {
        let _ = self
            .outputs
            .root
            .send(proto::cluster_message::Kind::LogsReply(proto::LogsReply {
                request_id: reply.request_id,
                logs: reply.logs,
                error: reply.error.unwrap_or_default(),
            }));
    }
}

/// The root's view of an instance.
pub fn instance_status(i: &Instance) -> proto::InstanceStatus {
    proto::InstanceStatus {
        job_id: i.job_id.clone(),
        instance_number: i.instance_number,
        status: i.status.as_str().to_owned(),
        status_detail: i.status_detail.clone(),
        worker_id: i.worker_id.clone().unwrap_or_default(),
        host_ip: i
            .network
            .as_ref()
            .map_or_else(|| i.public_ip.clone(), |n| n.host_ip.clone()),
        host_port: i.network.as_ref().map_or(0, |n| u32::from(n.host_port)),
        public_ip: i.public_ip.clone(),
        namespace_ip: i
            .network
            .as_ref()
            .map(|n| n.nsip.clone())
            .unwrap_or_default(),
        namespace_ip_v6: i
            .network
            .as_ref()
            .map(|n| n.nsipv6.clone())
            .unwrap_or_default(),
        cpu_percent: i.usage.as_ref().map(|u| u.cpu_percent),
        memory_percent: i.usage.as_ref().map(|u| u.memory_percent),
        disk_bytes: i.usage.as_ref().map(|u| u.disk),
        logs: i.usage.as_ref().map(|u| u.logs.clone()).unwrap_or_default(),
        restart_count: i.restart_count,
        restarting: i.restarting,
        ready: i.ready,
    }
}

/// The root's `ServiceTable` as the state takes it: the addresses parsed (text that is no
/// address is absent), instances in table-entry form (Oakestra's `service_ip` order: the RR
/// address, then the instance's own, then the closest address when the service has one; the
/// cluster in `cluster_id`).
pub fn root_table(t: proto::ServiceTable) -> RootTable {
    fn ip<T: std::str::FromStr>(text: &str) -> Option<T> {
        text.trim().parse().ok()
    }
    let addresses = ServiceAddresses {
        rr_ip: ip(&t.rr_ip),
        rr_ip_v6: ip(&t.rr_ip_v6),
        closest_ip: ip(&t.closest_ip),
        closest_ip_v6: ip(&t.closest_ip_v6),
        ..ServiceAddresses::default()
    };
    let service = t.found.then(|| RemoteService {
        addresses,
        instances: t
            .instances
            .iter()
            .map(|i| {
                let mut extra = oakestra_core::sla::Extra::new();
                if !i.cluster_id.is_empty() {
                    extra.insert("cluster_id".into(), Value::String(i.cluster_id.clone()));
                }
                TableEntryInstance {
                    instance_number: i.instance_number,
                    namespace_ip: i.namespace_ip.clone(),
                    namespace_ip_v6: i.namespace_ip_v6.clone(),
                    host_ip: i.host_ip.clone(),
                    host_port: u16::try_from(i.host_port).unwrap_or_default(),
                    service_ip: ServiceIp::list(&ServiceAddresses {
                        instance_ip: ip(&i.instance_ip),
                        instance_ip_v6: ip(&i.instance_ip_v6),
                        ..addresses
                    }),
                    extra,
                }
            })
            .collect(),
    });
    RootTable {
        request_id: t.request_id,
        job_name: t.job_name,
        service,
    }
}

/// The root's `Resources` from the aggregate.
pub fn resources_message(a: &Aggregate) -> proto::Resources {
    proto::Resources {
        active_workers: a.active_workers,
        cpu_cores: a.cpu_cores,
        cpu_load_percent: a.cpu_load_percent,
        cpu_usage_percent: a.cpu_usage_percent,
        memory_total_mb: a.memory_total_mb,
        memory_free_mb: a.memory_free_mb,
        gpus: a.gpus,
        gpus_free: a.gpus_free,
        max_worker_free_vcpus: a.max_worker_free_vcpus,
        max_worker_free_memory_mb: a.max_worker_free_memory_mb,
        max_worker_free_gpus: a.max_worker_free_gpus,
        virtualization: a.virtualization.clone(),
        arch: a.arch.clone(),
        csi_drivers: a.csi_drivers.clone(),
        addons: a.addons.clone(),
        gpu_drivers: Vec::new(),
    }
}
