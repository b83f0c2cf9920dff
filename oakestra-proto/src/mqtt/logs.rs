//! On-demand log tails (Oakestra-rs only; Oakestra has no such topics): the cluster asks a
//! worker on `nodes/<id>/control/logs` for the last lines of one instance's output, and the
//! worker answers on `nodes/<id>/logs` with the same `request_id`. The periodic usage reports
//! carry only the last 4 KiB; this is how a caller gets a longer tail.

use serde::{Deserialize, Serialize};

use super::{NodeTopic, Payload, WireVersion};
use oakestra_core::lenient;

/// The most log bytes a worker reads for one request: the answer must fit an MQTT packet
/// (workers accept 1 MiB), with room for JSON escaping.
pub const MAX_LOG_REQUEST_BYTES: u64 = 512 * 1024;

/// `nodes/<id>/control/logs`: send the tail of an instance's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsRequest {
    /// Schema version.
    #[serde(default)]
    pub wire_version: WireVersion,
    /// Echoed in the answer, so the asker can match it to its request.
    pub request_id: String,
    /// The job name (`app.appns.service.servicens`).
    pub job_name: String,
    /// Which instance.
    #[serde(deserialize_with = "lenient::number")]
    pub instance_number: u32,
    /// At most this many lines (the last ones); 0 means no line limit.
    #[serde(default, deserialize_with = "lenient::number")]
    pub tail_lines: u32,
    /// At most this many bytes (the last ones); the worker caps it at
    /// [`MAX_LOG_REQUEST_BYTES`].
    #[serde(default, deserialize_with = "lenient::number")]
    pub max_bytes: u64,
}

impl Payload for LogsRequest {
    const TOPIC: NodeTopic = NodeTopic::ControlLogs;
}

/// `nodes/<id>/logs`: the answer to a [`LogsRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsReply {
    /// Schema version.
    #[serde(default)]
    pub wire_version: WireVersion,
    /// The request's `request_id`.
    pub request_id: String,
    /// The job name of the request.
    pub job_name: String,
    /// The instance of the request.
    #[serde(deserialize_with = "lenient::number")]
    pub instance_number: u32,
    /// The tail, oldest line first (empty on error).
    #[serde(default)]
    pub logs: String,
    /// Why there is no tail (unknown instance, runtime error), `None` on success.
    #[serde(default)]
    pub error: Option<String>,
}

impl Payload for LogsReply {
    const TOPIC: NodeTopic = NodeTopic::Logs;
}

/// The last `n` lines of `text` (a final line without a newline counts), each ending with a
/// newline; `n == 0` keeps every line.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = if n == 0 {
        0
    } else {
        lines.len().saturating_sub(n)
    };
    lines[from..].iter().map(|l| format!("{l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_request_round_trips_and_reads_oakestra_style_numbers() {
        let request = LogsRequest {
            wire_version: WireVersion::CURRENT,
            request_id: "r-7".into(),
            job_name: "app.ns.svc.ns".into(),
            instance_number: 2,
            tail_lines: 1000,
            max_bytes: MAX_LOG_REQUEST_BYTES,
        };
        assert_eq!(
            LogsRequest::from_bytes(&request.to_bytes()).unwrap(),
            request
        );
        let lenient = LogsRequest::from_bytes(
            br#"{"request_id":"r","job_name":"a.b.c.d","instance_number":"3","tail_lines":"5"}"#,
        )
        .unwrap();
        assert_eq!(lenient.instance_number, 3);
        assert_eq!(lenient.tail_lines, 5);
        assert_eq!(lenient.max_bytes, 0);
        assert_eq!(lenient.wire_version, WireVersion::CURRENT);
        assert_eq!(LogsRequest::TOPIC.suffix(), "control/logs");
        assert!(!LogsRequest::TOPIC.from_worker());
    }

    #[test]
    fn logs_reply_round_trips_with_and_without_an_error() {
        let ok = LogsReply {
            wire_version: WireVersion::CURRENT,
            request_id: "r-7".into(),
            job_name: "app.ns.svc.ns".into(),
            instance_number: 2,
            logs: "line \"1\"\nline 2\n".into(),
            error: None,
        };
        assert_eq!(LogsReply::from_bytes(&ok.to_bytes()).unwrap(), ok);
        let failed = LogsReply {
            logs: String::new(),
            error: Some("no instance app.ns.svc.ns/2 on this worker".into()),
            ..ok
        };
        assert_eq!(LogsReply::from_bytes(&failed.to_bytes()).unwrap(), failed);
        assert_eq!(LogsReply::TOPIC.suffix(), "logs");
        assert!(LogsReply::TOPIC.from_worker());
        let err = LogsReply::from_bytes(b"{\"request_id\":1}").unwrap_err();
        assert!(err.to_string().contains("nodes/<id>/logs"), "{err}");
    }

    #[test]
    fn last_lines_keeps_the_newest() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(last_lines("a\nb\nc", 5), "a\nb\nc\n");
        assert_eq!(last_lines("a\nb\nc", 0), "a\nb\nc\n");
        assert_eq!(last_lines("", 3), "");
    }
}
