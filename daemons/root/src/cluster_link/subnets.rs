//! Worker subnets assigned in groups: the requests that arrive while one IPAM commit is under
//! way are assigned together in the next one (group commit).
//!
//! A cluster asks for a subnet for every worker that registers; a thousand workers starting at
//! once ask a thousand times within a second. Each assignment is a read-modify-write of the
//! one IPAM document (durable commit, optimistic retry), so one commit per worker made the
//! registrations wait on each other for tens of seconds (issue 20). Here the first request
//! becomes the writer; the others queue and are answered by the writer's next commit.

use std::sync::{Mutex, PoisonError};

use oakestra_net::ipam::{AddressManager, IpamError, WorkerSubnets};
use oakestra_store::{Store, StoreError};
use tokio::sync::oneshot;

use super::LinkError;

type Answer = oneshot::Sender<Result<WorkerSubnets, LinkError>>;

/// Pending subnet requests and the writer's turn.
#[derive(Debug, Default)]
pub(crate) struct SubnetRequests {
    queue: Mutex<Vec<(String, Answer)>>,
    writer: tokio::sync::Mutex<()>,
}

impl SubnetRequests {
    /// The subnets of `worker` (sized `prefix_len` if new), stored before the answer.
    pub(crate) async fn assign(
        &self,
        store: &dyn Store,
        worker: &str,
        prefix_len: u8,
    ) -> Result<WorkerSubnets, LinkError> {
        let (answer, mut answered) = oneshot::channel();
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((worker.to_owned(), answer));
        // Whoever holds the writer's turn assigns everything queued so far, this request
        // included unless an earlier writer already took it.
        let _turn = self.writer.lock().await;
        if let Ok(result) = answered.try_recv() {
            return result;
        }
        let batch = std::mem::take(&mut *self.queue.lock().unwrap_or_else(PoisonError::into_inner));
        let workers: Vec<&str> = batch.iter().map(|(w, _)| w.as_str()).collect();
        let assigned = store
            .update_ipam(|ipam: &mut AddressManager| {
                Ok::<_, StoreError>(assign_all(ipam, &workers, prefix_len))
            })
            .await;
        match assigned {
            Ok(results) => {
                for ((worker, answer), result) in batch.into_iter().zip(results) {
                    let _ = answer.send(result.map_err(|e| {
                        LinkError::Exhausted(format!("no overlay subnet for worker {worker}: {e}"))
                    }));
                }
            }
            Err(e) => {
                for (_, answer) in batch {
                    let _ = answer.send(Err(LinkError::Store(e.clone())));
                }
            }
        }
        answered.await.unwrap_or_else(|_| {
            Err(LinkError::Store(StoreError::Backend(
                "the subnet assignment was abandoned".into(),
            )))
        })
    }
}

/// Assigns each worker its subnets in order; a failure (pool exhausted) is that worker's
/// answer and changes nothing for the others.
fn assign_all(
    ipam: &mut AddressManager,
    workers: &[&str],
    prefix_len: u8,
) -> Vec<Result<WorkerSubnets, IpamError>> {
    workers
        .iter()
        .map(|w| ipam.assign_worker_sized(w, prefix_len))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn concurrent_requests_share_commits_and_get_distinct_subnets() {
        let store = Arc::new(oakestra_store::MemoryStore::new());
        let requests = Arc::new(SubnetRequests::default());
        // A commit under way (held here) while 200 requests arrive: they all wait for the
        // next one.
        let under_way = requests.writer.lock().await;
        let mut tasks = Vec::new();
        for i in 0..200 {
            let (store, requests) = (store.clone(), requests.clone());
            tasks.push(tokio::spawn(async move {
                requests.assign(store.as_ref(), &format!("w{i}"), 26).await
            }));
        }
        while requests.queue.lock().unwrap().len() < 200 {
            tokio::task::yield_now().await;
        }
        drop(under_way);
        let mut subnets = std::collections::HashSet::new();
        for task in tasks {
            let assigned = task.await.unwrap().expect("assigned");
            assert!(subnets.insert(assigned.ipv4), "{assigned:?} given twice");
        }
        assert_eq!(subnets.len(), 200);
        assert_eq!(store.commits(), 1, "200 requests, one commit");
        // A worker asking again keeps its subnet; nothing new is written.
        let again = requests.assign(store.as_ref(), "w7", 26).await.unwrap();
        let first = requests.assign(store.as_ref(), "w7", 26).await.unwrap();
        assert_eq!(again, first);
    }

    #[tokio::test]
    async fn an_exhausted_pool_fails_only_the_requests_it_cannot_serve() {
        let store = oakestra_store::MemoryStore::new();
        let requests = SubnetRequests::default();
        // An invalid size is the one request's error, not the store's.
        let refused = requests.assign(&store, "big", 8).await;
        assert!(
            matches!(refused, Err(LinkError::Exhausted(ref m)) if m.contains("big")),
            "{refused:?}"
        );
        assert!(requests.assign(&store, "ok", 26).await.is_ok());
    }
}
