//! Where worker messages meet the actor when only the latest one counts.
//!
//! A worker's `information` (heartbeat) and `jobs/resources` (usage) reports replace the ones
//! before them: the MQTT loop keeps the newest of each per worker here instead of queueing
//! every one for the actor, and stamps the time it heard from each worker. The actor drains
//! this once per tick, before it checks liveness. So
//! - a busy actor (a burst of thousands of deploys) never declares a worker silent that kept
//!   reporting: liveness is measured where messages arrive, not where they are applied;
//! - what waits for the actor is bounded by the number of workers, not by how long it was busy;
//! - the reports never queue behind, or in front of, the commands that change state.
//!
//! Status reports (`job`), network and log messages still go through the actor's queue in
//! order: each of them matters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use oakestra_proto::mqtt::NodeTopic;
use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;

/// The newest coalescible reports of one worker.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Latest {
    /// Last time any message of the worker arrived.
    pub heard: Option<Instant>,
    /// Newest `information` payload not yet applied.
    pub information: Option<Vec<u8>>,
    /// Newest `jobs/resources` payload not yet applied.
    pub resources: Option<Vec<u8>>,
}

/// Shared between the MQTT loop (writes) and the actor (drains). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Inbox {
    pending: Arc<Mutex<HashMap<String, Latest>>>,
    received: Counter,
}

impl Inbox {
    /// An inbox that counts every arriving message in `received`.
    pub fn counting(received: Counter) -> Inbox {
        Inbox {
            pending: Arc::default(),
            received,
        }
    }

    /// A message of `kind` from `worker` arrived at `at`. Returns the payload back when the
    /// message must be queued for the actor (not one whose newest copy is enough).
    pub fn arrived(
        &self,
        worker: &str,
        kind: NodeTopic,
        payload: Vec<u8>,
        at: Instant,
    ) -> Option<Vec<u8>> {
        self.received.inc();
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let latest = match pending.get_mut(worker) {
            Some(latest) => latest,
            None => pending.entry(worker.to_owned()).or_default(),
        };
        latest.heard = Some(at);
        match kind {
            NodeTopic::Information => {
                latest.information = Some(payload);
                None
            }
            NodeTopic::JobsResources => {
                latest.resources = Some(payload);
                None
            }
            _ => Some(payload),
        }
    }

    /// Takes everything that arrived since the last drain, by worker.
    pub fn drain(&self) -> HashMap<String, Latest> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_report_of_each_kind_wins_and_ordered_messages_pass_through() {
        let received = Counter::default();
        let inbox = Inbox::counting(received.clone());
        let t0 = Instant::now();
        let t1 = t0 + std::time::Duration::from_secs(1);
        assert_eq!(
            inbox.arrived("w1", NodeTopic::Information, b"old".to_vec(), t0),
            None
        );
        assert_eq!(
            inbox.arrived("w1", NodeTopic::JobsResources, b"usage".to_vec(), t0),
            None
        );
        assert_eq!(
            inbox.arrived("w1", NodeTopic::Information, b"new".to_vec(), t0),
            None
        );
        assert_eq!(
            inbox.arrived("w1", NodeTopic::Job, b"status".to_vec(), t1),
            Some(b"status".to_vec()),
            "a status report is queued for the actor, not coalesced"
        );
        inbox.arrived("w2", NodeTopic::Logs, b"logs".to_vec(), t0);

        let drained = inbox.drain();
        assert_eq!(
            drained["w1"],
            Latest {
                heard: Some(t1),
                information: Some(b"new".to_vec()),
                resources: Some(b"usage".to_vec()),
            }
        );
        assert_eq!(
            drained["w2"],
            Latest {
                heard: Some(t0),
                ..Latest::default()
            },
            "any message counts as a sign of life"
        );
        assert!(inbox.drain().is_empty(), "a drain takes everything");
        assert_eq!(received.get(), 5, "every message is counted");
    }
}
