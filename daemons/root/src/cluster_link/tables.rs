//! The link's service tables (issue 8): table queries from clusters, interests, and pushed
//! updates. The tables themselves are built in [`crate::tables`].

use oakestra_core::ids::{ClusterId, ObjectId};
use oakestra_core::model::ServiceRecord;
use oakestra_proto::grpc::{ServiceTable, TableInterestRemove, TableQuery};

use super::*;
use crate::tables::*;

impl ClusterLink {
    /// `TableQuery` from `cluster`: answers with the service's table (or `found: false`) and
    /// records the cluster's interest in a service it found.
    pub(crate) async fn on_table_query(&self, cluster: &ClusterId, query: TableQuery) {
        let services = match self.store.list_all_services().await {
            Ok(s) => s,
            Err(e) => {
                // Not found for now: the worker asks again, and so does its cluster.
                tracing::warn!(cluster = %cluster, "table query not answered from the store: {e}");
                Vec::new()
            }
        };
        let found = services
            .iter()
            .find(|s| service_matches(s, &query.job_name, &query.ip));
        let mut table = match found {
            Some(service) => {
                let table = service_table(service);
                let mut interests = self.interests();
                interests
                    .clusters
                    .entry(table.job_name.clone())
                    .or_default()
                    .insert(cluster.clone());
                interests.last.insert(table.job_name.clone(), table.clone());
                table
            }
            None => ServiceTable {
                found: false,
                job_name: query.job_name.clone(),
                ..ServiceTable::default()
            },
        };
        tracing::debug!(cluster = %cluster, job = %table.job_name, ip = %query.ip, found = table.found,
            instances = table.instances.len(), "table query");
        table.request_id = query.request_id;
        self.send(cluster, table_message(table)).await;
    }

    /// `TableInterestRemove` from `cluster`. Unknown interests are ignored.
    pub(crate) fn on_table_interest_remove(&self, cluster: &ClusterId, r: TableInterestRemove) {
        let mut interests = self.interests();
        if let Some(set) = interests.clusters.get_mut(&r.job_name) {
            set.remove(cluster);
            if set.is_empty() {
                interests.clusters.remove(&r.job_name);
                interests.last.remove(&r.job_name);
            }
        }
    }

    /// Whether some cluster is interested in `job_name`.
    pub fn has_table_interest(&self, job_name: &str) -> bool {
        self.interests().clusters.contains_key(job_name)
    }

    /// The service's instances may have changed: its table goes to every interested cluster
    /// when it differs from the last one sent.
    pub(crate) async fn push_service(&self, service: &ServiceRecord) {
        self.push_table(service_table(service)).await;
    }

    /// As [`Self::push_service`], by id (reads the service; a deleted one needs
    /// [`Self::push_deleted`]).
    pub(crate) async fn push_service_id(&self, id: ObjectId) {
        if !self.any_table_interest() {
            return;
        }
        match self.store.get_service(id).await {
            Ok(Some(service)) => self.push_service(&service).await,
            Ok(None) => {}
            Err(e) => tracing::warn!(job = %id, "service table not pushed: {e}"),
        }
    }

    /// The service was deleted: interested clusters learn it is gone (`found: false`).
    pub(crate) async fn push_deleted(&self, job_name: &str) {
        let table = ServiceTable {
            found: false,
            job_name: job_name.to_owned(),
            ..ServiceTable::default()
        };
        self.push_table(table).await;
    }

    pub(super) async fn push_table(&self, table: ServiceTable) {
        let targets: Vec<ClusterId> = {
            let mut interests = self.interests();
            let Some(clusters) = interests.clusters.get(&table.job_name) else {
                return;
            };
            let targets = clusters.iter().cloned().collect();
            if interests.last.get(&table.job_name) == Some(&table) {
                return;
            }
            if table.found {
                interests.last.insert(table.job_name.clone(), table.clone());
            } else {
                interests.clusters.remove(&table.job_name);
                interests.last.remove(&table.job_name);
            }
            targets
        };
        tracing::debug!(job = %table.job_name, clusters = targets.len(), instances = table.instances.len(), "service table pushed");
        for cluster in targets {
            self.send(&cluster, table_message(table.clone())).await;
        }
    }

    pub(super) fn any_table_interest(&self) -> bool {
        !self.interests().clusters.is_empty()
    }
}
