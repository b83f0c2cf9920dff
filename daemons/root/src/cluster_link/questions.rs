//! Questions to the cluster that runs something: instance logs and the worker list, each
//! answered on the session and matched by request id ([`super::ask`]).

use super::*;

impl ClusterLink {
    /// Asks `cluster` for the last `tail_lines` lines of an instance's log (its worker reads
    /// them) and waits at most `wait` for the answer. The waiting request is forgotten when
    /// this returns or is dropped, so a late answer is ignored.
    pub async fn fetch_logs(
        &self,
        cluster: &ClusterId,
        job_id: &str,
        instance_number: u32,
        tail_lines: u32,
        wait: Duration,
    ) -> Result<String, AskError> {
        let answer = self
            .ask(cluster, "logs", wait, |request_id| {
                root_message::Kind::LogsRequest(LogsRequest {
                    request_id,
                    job_id: job_id.to_owned(),
                    instance_number,
                    tail_lines,
                    max_bytes: oakestra_proto::mqtt::MAX_LOG_REQUEST_BYTES,
                })
            })
            .await?;
        match answer {
            Answer::Logs(reply) if reply.error.is_empty() => Ok(reply.logs),
            Answer::Logs(reply) => Err(AskError::Refused(reply.error)),
            Answer::Workers(_) => Err(AskError::Refused("the cluster answered out of turn".into())),
        }
    }

    /// Asks `cluster` for its registered workers (the cluster answers from memory) and waits
    /// at most `wait`.
    pub async fn fetch_workers(
        &self,
        cluster: &ClusterId,
        wait: Duration,
    ) -> Result<Vec<WorkerSummary>, AskError> {
        let answer = self
            .ask(cluster, "workers", wait, |request_id| {
                root_message::Kind::WorkersRequest(WorkersRequest { request_id })
            })
            .await?;
        match answer {
            Answer::Workers(reply) => Ok(reply.workers),
            Answer::Logs(_) => Err(AskError::Refused("the cluster answered out of turn".into())),
        }
    }

    /// Sends the question `make(request_id)` on `cluster`'s session and waits at most `wait`
    /// for the answer with that request id. The question is forgotten when this returns or is
    /// dropped, so a late answer is ignored.
    pub(super) async fn ask(
        &self,
        cluster: &ClusterId,
        kind: &str,
        wait: Duration,
        make: impl FnOnce(String) -> root_message::Kind,
    ) -> Result<Answer, AskError> {
        let (request_id, tx, answer) = {
            let mut st = self.state();
            let Some(session) = st.sessions.get(cluster) else {
                return Err(AskError::NotConnected(cluster.clone()));
            };
            let tx = session.tx.clone();
            let (request_id, answer) = st.asks.open(cluster, kind);
            (request_id, tx, answer)
        };
        let _forget = ForgetQuestion {
            link: self,
            request_id: request_id.clone(),
        };
        let message = RootMessage {
            kind: Some(make(request_id)),
        };
        let exchange = async {
            tx.send(Ok(message))
                .await
                .map_err(|_| AskError::NotConnected(cluster.clone()))?;
            answer
                .await
                .map_err(|_| AskError::NotConnected(cluster.clone()))
        };
        tokio::time::timeout(wait, exchange)
            .await
            .map_err(|_| AskError::Timeout {
                cluster: cluster.clone(),
                after: wait,
            })?
    }
}

/// Removes a waiting question when its caller stops waiting.
pub(super) struct ForgetQuestion<'a> {
    link: &'a ClusterLink,
    request_id: String,
}

impl Drop for ForgetQuestion<'_> {
    fn drop(&mut self) {
        self.link.state().asks.forget(&self.request_id);
    }
}
