//! The overlay's service tables (issue 8): where instances' networks are, table queries
//! from workers answered from this cluster's view or asked of the root, and interests.

use super::*;

impl ClusterState {
    /// `net/service/deployed` from `worker`: where an instance's network is. Ignored (`false`)
    /// unless the instance is placed on that worker.
    pub fn service_deployed(&mut self, worker: &str, report: &ServiceDeployed) -> bool {
        let key = self
            .by_job_name
            .get(&report.appname)
            .map(|job| (job.clone(), report.instance_number));
        let Some(instance) = key.as_ref().and_then(|k| self.instances.get_mut(k)) else {
            return false;
        };
        if instance.worker_id.as_deref() != Some(worker) || report.nsip.is_empty() {
            return false;
        }
        let network = InstanceNetwork {
            nsip: report.nsip.clone(),
            nsipv6: report.nsipv6.clone(),
            host_ip: report.host_ip.clone(),
            host_port: report.host_port,
        };
        if instance.network.as_ref() != Some(&network) {
            instance.network = Some(network);
            let key = instance.key();
            self.dirty_instances.insert(key.clone());
            self.effects.push(Effect::Report(key));
            self.tables.changed.insert(report.appname.clone());
        }
        // A worker hosting an instance of a job follows that job.
        self.tables.add_interest(&report.appname, worker);
        true
    }

    /// Answers a table query (`net/tablequery/request`) from what this cluster knows: the
    /// service named `sname`, or the one `sip` belongs to (its `rr_ip`, closest IP or an
    /// instance IP), with every instance whose network its worker has reported, plus the
    /// instances in other clusters the root told it about. Unknown: `app_name` null and no
    /// instances.
    pub fn table_query(&self, request: &TableQueryRequest) -> TableQueryResult {
        let job_name = if request.sip.is_empty() {
            (self.by_job_name.contains_key(&request.sname)
                || self.tables.remote.contains_key(&request.sname))
            .then(|| request.sname.clone())
        } else {
            // Compared as addresses, so an IPv6 service IP matches in any spelling.
            request.sip.trim().parse::<IpAddr>().ok().and_then(|ip| {
                self.instances
                    .values()
                    .find(|i| i.command.addresses.contains(ip))
                    .map(|i| i.job_name.clone())
                    .or_else(|| self.tables.remote_job_of_ip(ip))
            })
        };
        let instance_list = job_name
            .as_deref()
            .map(|name| self.table_entries(name))
            .unwrap_or_default();
        TableQueryResult {
            wire_version: WireVersion::CURRENT,
            app_name: job_name,
            instance_list,
            query_key: request.query_key().to_owned(),
        }
    }

    /// The routable instances of `job_name`: this cluster's with a reported network, then
    /// those of other clusters (an instance number this cluster holds is its own, whatever
    /// the root's possibly older view says).
    pub(super) fn table_entries(&self, job_name: &str) -> Vec<TableEntryInstance> {
        let local: Vec<&Instance> = self
            .instances
            .values()
            .filter(|i| i.job_name == job_name)
            .collect();
        let mut entries: Vec<TableEntryInstance> = local
            .iter()
            .filter(|i| i.is_ready())
            .filter_map(|i| {
                let net = i.network.as_ref()?;
                Some(TableEntryInstance {
                    instance_number: i.instance_number,
                    namespace_ip: net.nsip.clone(),
                    namespace_ip_v6: net.nsipv6.clone(),
                    host_ip: net.host_ip.clone(),
                    host_port: net.host_port,
                    service_ip: ServiceIp::list(&i.command.addresses),
                    extra: Default::default(),
                })
            })
            .collect();
        if let Some(remote) = self.tables.remote.get(job_name) {
            entries.extend(
                remote
                    .instances
                    .iter()
                    .filter(|r| !local.iter().any(|i| i.instance_number == r.instance_number))
                    .cloned(),
            );
        }
        entries
    }

    /// A worker's table query: answered at once when this cluster knows the service (and the
    /// worker becomes interested in it); otherwise the root is asked and the worker gets the
    /// answer when it comes (or "unknown" after [`ROOT_QUERY_TIMEOUT`]). A service this
    /// cluster holds is also asked of the root once, in the background, since other clusters
    /// may run instances of it too.
    pub fn worker_table_query(&mut self, worker: &str, request: &TableQueryRequest, now: Instant) {
        let answer = self.table_query(request);
        if let Some(job) = answer.app_name.clone() {
            self.tables.add_interest(&job, worker);
            if !self.tables.remote.contains_key(&job) {
                self.ask_root(&job, "", None, now);
            }
            self.effects.push(Effect::Table {
                worker: worker.to_owned(),
                result: Box::new(answer),
            });
            return;
        }
        if request.query_key().is_empty() {
            self.effects.push(Effect::Table {
                worker: worker.to_owned(),
                result: Box::new(answer),
            });
            return;
        }
        let (job, ip) = if request.sip.is_empty() {
            (request.sname.as_str(), "")
        } else {
            ("", request.sip.as_str())
        };
        self.ask_root(job, ip, Some((worker, request.query_key())), now);
    }

    /// Asks the root about `job`/`ip` unless the same question is already out; `waiting` gets
    /// the answer.
    pub(super) fn ask_root(
        &mut self,
        job: &str,
        ip: &str,
        waiting: Option<(&str, &str)>,
        now: Instant,
    ) {
        let existing = self
            .tables
            .pending
            .values_mut()
            .find(|q| q.job_name == job && q.ip == ip);
        let query = match existing {
            Some(q) => q,
            None => {
                self.tables.requests += 1;
                let request_id = format!("tq-{}", self.tables.requests);
                self.effects.push(Effect::AskRoot {
                    request_id: request_id.clone(),
                    job_name: job.to_owned(),
                    ip: ip.to_owned(),
                });
                self.tables
                    .pending
                    .entry(request_id.clone())
                    .or_insert(RootQuery {
                        job_name: job.to_owned(),
                        ip: ip.to_owned(),
                        waiting: BTreeMap::new(),
                        asked_at: now,
                    })
            }
        };
        if let Some((worker, key)) = waiting {
            query.waiting.insert(worker.to_owned(), key.to_owned());
        }
    }

    /// After a (re)connect to the root: every service of other clusters this cluster caches
    /// is asked again, so the root (which may have restarted) knows the interest.
    pub fn ask_root_again(&mut self, now: Instant) {
        let jobs: Vec<String> = self.tables.remote.keys().cloned().collect();
        for job in jobs {
            self.ask_root(&job, "", None, now);
        }
    }

    /// The root's `ServiceTable`: the answer to a `TableQuery` (the waiting workers get it and
    /// become interested) or a pushed update (interested workers get the new table).
    pub fn root_table(&mut self, table: RootTable) {
        let pending = if table.request_id.is_empty() {
            None
        } else {
            self.tables.pending.remove(&table.request_id)
        };
        let job = table.job_name;
        let waiting = pending.map(|p| p.waiting).unwrap_or_default();
        match table.service {
            Some(service) => {
                for worker in waiting.keys() {
                    self.tables.add_interest(&job, worker);
                }
                if !self.tables.interests.contains_key(&job) {
                    // A service nobody here follows (any more).
                    self.effects
                        .push(Effect::DropRootInterest { job_name: job });
                    return;
                }
                if self.tables.remote.get(&job) != Some(&service) {
                    self.tables.remote.insert(job.clone(), service);
                    self.tables.changed.insert(job.clone());
                }
                for (worker, key) in waiting {
                    let mut result = self.table_query(&TableQueryRequest {
                        sname: job.clone(),
                        ..TableQueryRequest::default()
                    });
                    result.query_key = key;
                    self.effects.push(Effect::Table {
                        worker,
                        result: Box::new(result),
                    });
                }
            }
            None => {
                if self.tables.remote.remove(&job).is_some() {
                    self.tables.changed.insert(job);
                }
                for (worker, key) in waiting {
                    self.effects.push(Effect::Table {
                        worker,
                        result: Box::new(unknown(key)),
                    });
                }
            }
        }
    }

    /// Questions to the root unanswered for [`ROOT_QUERY_TIMEOUT`] (root unreachable or
    /// slow): their workers hear "unknown" and ask again later. Returns how many expired.
    pub fn expire_root_queries(&mut self, now: Instant) -> usize {
        let expired: Vec<String> = self
            .tables
            .pending
            .iter()
            .filter(|(_, q)| now.saturating_duration_since(q.asked_at) >= ROOT_QUERY_TIMEOUT)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            if let Some(query) = self.tables.pending.remove(id) {
                for (worker, key) in query.waiting {
                    self.effects.push(Effect::Table {
                        worker,
                        result: Box::new(unknown(key)),
                    });
                }
            }
        }
        expired.len()
    }

    /// `net/interest/remove` from `worker`: it no longer follows `job_name`. Unknown interests
    /// are ignored (`false`), and so is a worker that still hosts an instance of the job. When
    /// nobody here follows a service of other clusters any more, the root is told.
    pub fn interest_remove(&mut self, worker: &str, job_name: &str) -> bool {
        let hosts = self.instances.values().any(|i| {
            i.job_name == job_name && i.worker_id.as_deref() == Some(worker) && i.network.is_some()
        });
        if hosts {
            return false;
        }
        let removed = self.tables.remove_interest(job_name, worker);
        if removed
            && !self.tables.interests.contains_key(job_name)
            && self.tables.remote.remove(job_name).is_some()
        {
            self.effects.push(Effect::DropRootInterest {
                job_name: job_name.to_owned(),
            });
        }
        removed
    }

    /// Workers interested in `job_name`.
    pub fn interested_workers(&self, job_name: &str) -> Vec<String> {
        self.tables
            .interests
            .get(job_name)
            .map(|w| w.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The services of other clusters this cluster caches.
    pub fn remote_service(&self, job_name: &str) -> Option<&RemoteService> {
        self.tables.remote.get(job_name)
    }

    /// Every changed service's table to each worker interested in it.
    pub(super) fn fan_out_changes(&mut self) {
        for job in std::mem::take(&mut self.tables.changed) {
            let result = self.table_query(&TableQueryRequest {
                sname: job.clone(),
                ..TableQueryRequest::default()
            });
            // Oakestra's signal too: UNDEPLOYMENT when fewer instances are routable than at
            // the last signal, else DEPLOYMENT.
            let count = result.instance_list.len();
            let before = self.tables.signalled.insert(job.clone(), count);
            self.effects.push(Effect::JobUpdate {
                job_name: job.clone(),
                kind: if before.is_some_and(|b| count < b) {
                    UpdateKind::Undeployment
                } else {
                    UpdateKind::Deployment
                },
            });
            let Some(workers) = self.tables.interests.get(&job) else {
                continue;
            };
            let workers: Vec<String> = workers.iter().cloned().collect();
            for worker in workers {
                self.effects.push(Effect::Table {
                    worker,
                    result: Box::new(result.clone()),
                });
            }
        }
    }
}

/// The answer for a name or IP nobody knows (Oakestra's shape: `app_name` null).
pub(super) fn unknown(query_key: String) -> TableQueryResult {
    TableQueryResult {
        wire_version: WireVersion::CURRENT,
        app_name: None,
        instance_list: Vec::new(),
        query_key,
    }
}
