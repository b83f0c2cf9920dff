//! Instance logs fetched from the cluster that runs the instance.

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
    ) -> Result<String, LogsFetchError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let (request_id, tx) = {
            let mut st = self.state();
            let Some(session) = st.sessions.get(cluster) else {
                return Err(LogsFetchError::NotConnected(cluster.clone()));
            };
            let tx = session.tx.clone();
            st.logs_requests += 1;
            let request_id = format!("logs-{}", st.logs_requests);
            st.logs_waiting
                .insert(request_id.clone(), (cluster.clone(), reply_tx));
            (request_id, tx)
        };
        let _forget = ForgetLogsRequest {
            link: self,
            request_id: request_id.clone(),
        };
        let message = RootMessage {
            kind: Some(root_message::Kind::LogsRequest(LogsRequest {
                request_id,
                job_id: job_id.to_owned(),
                instance_number,
                tail_lines,
                max_bytes: oakestra_proto::mqtt::MAX_LOG_REQUEST_BYTES,
            })),
        };
        let exchange = async {
            tx.send(Ok(message))
                .await
                .map_err(|_| LogsFetchError::NotConnected(cluster.clone()))?;
            reply_rx
                .await
                .map_err(|_| LogsFetchError::NotConnected(cluster.clone()))
        };
        let reply =
            tokio::time::timeout(wait, exchange)
                .await
                .map_err(|_| LogsFetchError::Timeout {
                    cluster: cluster.clone(),
                    after: wait,
                })??;
        if reply.error.is_empty() {
            Ok(reply.logs)
        } else {
            Err(LogsFetchError::Refused(reply.error))
        }
    }

    pub(super) fn on_logs_reply(&self, cluster: &ClusterId, reply: LogsReply) {
        let mut st = self.state();
        // Only the cluster that was asked may answer.
        if st
            .logs_waiting
            .get(&reply.request_id)
            .is_some_and(|(asked, _)| asked == cluster)
            && let Some((_, tx)) = st.logs_waiting.remove(&reply.request_id)
        {
            let _ = tx.send(reply);
        }
    }
}

/// Removes a waiting log request when its caller stops waiting.
pub(super) struct ForgetLogsRequest<'a> {
    link: &'a ClusterLink,
    request_id: String,
}

impl Drop for ForgetLogsRequest<'_> {
    fn drop(&mut self) {
        self.link.state().logs_waiting.remove(&self.request_id);
    }
}
