//! Bookkeeping of the overlay's service tables (issue 8) inside the cluster state: which
//! workers follow which service (interests), the services of other clusters the root told
//! this cluster about (MDNC), and the questions to the root still waiting for an answer.
//!
//! The logic that uses it is in [`crate::state::ClusterState`] (`worker_table_query`,
//! `root_table`, `interest_remove`, …); this module holds the data and its small invariants.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use std::net::IpAddr;

use oakestra_core::addresses::ServiceAddresses;
use oakestra_proto::mqtt::TableEntryInstance;
use tokio::time::Instant;

/// How long a worker's question waits for the root before it is answered "unknown" (the
/// worker asks again on its next miss).
pub const ROOT_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// A service as the root described it: its addresses and the routable instances of every
/// cluster, already in table-entry form.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RemoteService {
    /// The service's round-robin and closest addresses (no instance addresses).
    pub addresses: ServiceAddresses,
    /// The routable instances.
    pub instances: Vec<TableEntryInstance>,
}

/// The root's `ServiceTable` in state terms.
#[derive(Debug, Clone, PartialEq)]
pub struct RootTable {
    /// The question it answers; empty for a pushed update.
    pub request_id: String,
    /// The service's job name (the asked name when unknown; may be empty for an IP).
    pub job_name: String,
    /// The service, or `None` when the root does not know it (or it was deleted).
    pub service: Option<RemoteService>,
}

/// A question to the root and the workers waiting for its answer.
#[derive(Debug, Clone)]
pub(crate) struct RootQuery {
    pub(crate) job_name: String,
    pub(crate) ip: String,
    /// Worker → the query key it asked with.
    pub(crate) waiting: BTreeMap<String, String>,
    pub(crate) asked_at: Instant,
}

/// Interests, remote services and open questions.
#[derive(Debug, Default)]
pub(crate) struct Tables {
    /// Job name → workers that follow it.
    pub(crate) interests: BTreeMap<String, BTreeSet<String>>,
    /// Services of other clusters (and other clusters' instances of this cluster's services).
    pub(crate) remote: BTreeMap<String, RemoteService>,
    /// Request id → question to the root.
    pub(crate) pending: BTreeMap<String, RootQuery>,
    /// Jobs whose table changed since the last fan-out.
    pub(crate) changed: BTreeSet<String>,
    /// Job → routable instances at its last `updates_available` signal.
    pub(crate) signalled: BTreeMap<String, usize>,
    /// Questions asked so far (request ids).
    pub(crate) requests: u64,
}

impl Tables {
    pub(crate) fn add_interest(&mut self, job_name: &str, worker: &str) {
        if job_name.is_empty() {
            return;
        }
        self.interests
            .entry(job_name.to_owned())
            .or_default()
            .insert(worker.to_owned());
    }

    /// `false` when the worker did not follow the job.
    pub(crate) fn remove_interest(&mut self, job_name: &str, worker: &str) -> bool {
        let Some(workers) = self.interests.get_mut(job_name) else {
            return false;
        };
        let removed = workers.remove(worker);
        if workers.is_empty() {
            self.interests.remove(job_name);
        }
        removed
    }

    /// The remote service that `ip` (a service or instance IP) belongs to.
    pub(crate) fn remote_job_of_ip(&self, ip: IpAddr) -> Option<String> {
        self.remote
            .iter()
            .find(|(_, s)| {
                s.addresses.contains(ip)
                    || s.instances
                        .iter()
                        .any(|i| i.service_ip.iter().any(|a| a.contains(ip)))
            })
            .map(|(job, _)| job.clone())
    }
}
