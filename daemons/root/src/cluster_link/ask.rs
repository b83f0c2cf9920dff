//! Questions the root asks a cluster on demand (an instance's log tail, the list of workers)
//! and the answers it waits for, matched by request id.
//!
//! The root sends the question on the cluster's session and waits a bounded time; a late or
//! foreign answer (another cluster's, or one nobody waits for any more) is dropped.

use std::collections::HashMap;

use oakestra_core::ids::ClusterId;
use tokio::sync::oneshot;

use oakestra_proto::grpc::{LogsReply, WorkersReply};

/// An answer from a cluster.
#[derive(Debug)]
pub(crate) enum Answer {
    /// To a `LogsRequest`.
    Logs(LogsReply),
    /// To a `WorkersRequest`.
    Workers(WorkersReply),
}

/// Questions waiting for their cluster's answer.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    asked: u64,
    waiting: HashMap<String, (ClusterId, oneshot::Sender<Answer>)>,
}

impl Pending {
    /// Registers a question to `cluster`: its request id (`<kind>-<n>`) and where the answer
    /// arrives.
    pub(crate) fn open(
        &mut self,
        cluster: &ClusterId,
        kind: &str,
    ) -> (String, oneshot::Receiver<Answer>) {
        self.asked += 1;
        let request_id = format!("{kind}-{}", self.asked);
        let (tx, rx) = oneshot::channel();
        self.waiting
            .insert(request_id.clone(), (cluster.clone(), tx));
        (request_id, rx)
    }

    /// Hands `answer` to whoever waits for `request_id`, if `cluster` is the one asked.
    pub(crate) fn answer(&mut self, cluster: &ClusterId, request_id: &str, answer: Answer) {
        if self
            .waiting
            .get(request_id)
            .is_some_and(|(asked, _)| asked == cluster)
            && let Some((_, tx)) = self.waiting.remove(request_id)
        {
            let _ = tx.send(answer);
        }
    }

    /// Stops waiting for `request_id`.
    pub(crate) fn forget(&mut self, request_id: &str) {
        self.waiting.remove(request_id);
    }

    /// Questions still waiting.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logs(id: &str) -> Answer {
        Answer::Logs(LogsReply {
            request_id: id.into(),
            logs: "line".into(),
            error: String::new(),
        })
    }

    #[test]
    fn only_the_asked_cluster_answers_and_only_once() {
        let c1 = ClusterId::from("c1");
        let c2 = ClusterId::from("c2");
        let mut p = Pending::default();
        let (id, mut rx) = p.open(&c1, "logs");
        assert_eq!(id, "logs-1");
        p.answer(&c2, &id, logs(&id));
        assert!(
            rx.try_recv().is_err(),
            "another cluster's answer is dropped"
        );
        p.answer(&c1, &id, logs(&id));
        assert!(matches!(rx.try_recv(), Ok(Answer::Logs(r)) if r.logs == "line"));
        assert_eq!(p.len(), 0);
        // A late duplicate finds nobody waiting.
        p.answer(&c1, &id, logs(&id));
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn a_forgotten_question_takes_no_answer() {
        let c1 = ClusterId::from("c1");
        let mut p = Pending::default();
        let (a, _rx) = p.open(&c1, "workers");
        let (b, _rx2) = p.open(&c1, "workers");
        assert_ne!(a, b);
        p.forget(&a);
        assert_eq!(p.len(), 1);
    }
}
