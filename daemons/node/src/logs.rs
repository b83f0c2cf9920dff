//! Answers the cluster's on-demand log requests (`nodes/<id>/control/logs`): the tail of one
//! instance's captured output, read from the runtime, for the root's log endpoint.

use oakestra_proto::mqtt::{LogsReply, LogsRequest, MAX_LOG_REQUEST_BYTES, Payload, last_lines};
use oakestra_runtime::{InstanceId, Runtime};

/// Largest encoded answer: the brokers and clients of this system accept 1 MiB packets;
/// leave room for the topic and MQTT headers.
const MAX_REPLY_BYTES: usize = 1000 * 1024;

/// The answer to `request`: at most `max_bytes` (capped at [`MAX_LOG_REQUEST_BYTES`]; 0 means
/// the cap) of the log's end, cut to its last `tail_lines` lines (0: no line limit).
pub async fn answer(runtime: &dyn Runtime, request: LogsRequest) -> LogsReply {
    let max_bytes = match request.max_bytes {
        0 => MAX_LOG_REQUEST_BYTES,
        n => n.min(MAX_LOG_REQUEST_BYTES),
    };
    let id = InstanceId::new(request.job_name.clone(), request.instance_number);
    let (logs, error) = match runtime
        .logs_tail(&id, usize::try_from(max_bytes).unwrap_or(usize::MAX))
        .await
    {
        Ok(text) => (last_lines(&text, request.tail_lines as usize), None),
        Err(e) => (
            String::new(),
            Some(format!("the worker cannot read the log of {id}: {e}")),
        ),
    };
    let mut reply = LogsReply {
        wire_version: Default::default(),
        request_id: request.request_id,
        job_name: request.job_name,
        instance_number: request.instance_number,
        logs,
        error,
    };
    // JSON escaping can grow text (control characters take six bytes): drop the oldest
    // lines until the answer fits a packet.
    while reply.to_bytes().len() > MAX_REPLY_BYTES {
        let lines = reply.logs.lines().count();
        reply.logs = last_lines(&reply.logs, lines / 2);
        if lines <= 1 {
            reply.logs.clear();
        }
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use oakestra_runtime::InstanceSpec;
    use oakestra_runtime::fake::{FakeConfig, FakeRuntime};

    fn request(job: &str, tail_lines: u32, max_bytes: u64) -> LogsRequest {
        LogsRequest {
            wire_version: Default::default(),
            request_id: "r-1".into(),
            job_name: job.into(),
            instance_number: 0,
            tail_lines,
            max_bytes,
        }
    }

    #[tokio::test]
    async fn the_last_lines_of_a_long_log_and_an_error_for_an_unknown_instance() {
        let runtime = FakeRuntime::new(FakeConfig::default()).unwrap();
        let spec = InstanceSpec {
            id: InstanceId::new("a.b.c.d", 0),
            image: "busybox".into(),
            virtualization: "docker".into(),
            cmd: vec![],
            env: vec!["OAK_FAKE_LOG_LINES=2000".into()],
            ports: vec![],
            memory_limit_mb: 0,
            cpu_limit: 0.0,
            storage_mb: 0,
            one_shot: false,
            privileged: false,
            arch: vec![],
            platform: None,
        };
        runtime.start(&spec).await.unwrap();

        let reply = answer(&runtime, request("a.b.c.d", 1000, 0)).await;
        assert_eq!(reply.request_id, "r-1");
        assert_eq!(reply.error, None);
        let lines: Vec<&str> = reply.logs.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert_eq!(lines[0], "fake: output line 1001");
        assert_eq!(lines[999], "fake: output line 2000");

        // The byte limit wins over the line count.
        let reply = answer(&runtime, request("a.b.c.d", 1000, 23)).await;
        assert_eq!(reply.logs, "fake: output line 2000\n");

        let reply = answer(&runtime, request("x.y.z.w", 10, 0)).await;
        assert!(reply.logs.is_empty());
        assert!(
            reply
                .error
                .as_deref()
                .is_some_and(|e| e.contains("x.y.z.w")),
            "{reply:?}"
        );
    }
}
