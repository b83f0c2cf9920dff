//! Events (`GET /api/events`, the `GET /api/events/stream` server-sent events) and usage
//! history (`GET /api/service/<id>/usage`). Oakestra-rs only.

use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::{Client, ClientError, Result, ServiceUsage, api_error, segment};

/// One event: what happened to which object, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Increasing number.
    pub id: u64,
    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub time: String,
    /// Seconds since the epoch.
    pub timestamp: f64,
    /// `application`, `service`, `instance`, `cluster` or `worker`.
    pub object: String,
    /// The object's id (`<service id>/<n>` for instances).
    pub object_id: String,
    /// `placed`, `running`, `failed`, `cluster_lost`, … (see the API docs).
    pub kind: String,
    /// What happened, for people.
    pub message: String,
    /// The instance's status after the event.
    #[serde(default)]
    pub status: Option<String>,
    /// Application of the object.
    #[serde(default)]
    pub application_id: Option<String>,
    /// Service of the object.
    #[serde(default)]
    pub service_id: Option<String>,
    /// Instance number.
    #[serde(default)]
    pub instance_number: Option<u32>,
    /// Cluster involved.
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// Worker involved.
    #[serde(default)]
    pub worker_id: Option<String>,
}

/// Which events to get (every field optional).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventQuery {
    /// Only events of this service.
    pub service: Option<String>,
    /// Only events of this application.
    pub application: Option<String>,
    /// Only events of this cluster.
    pub cluster: Option<String>,
    /// Only these kinds (comma-separated).
    pub kind: Option<String>,
    /// Only events about this kind of object.
    pub object: Option<String>,
    /// Only events at or after this time (seconds since the epoch).
    pub since: Option<f64>,
    /// Only events with a larger id.
    pub after: Option<u64>,
    /// At most this many, the newest (default 100).
    pub limit: Option<usize>,
}

impl EventQuery {
    fn query_string(&self) -> String {
        let mut parts = Vec::new();
        let mut add = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                parts.push(format!("{k}={}", segment(&v)));
            }
        };
        add("service", self.service.clone());
        add("application", self.application.clone());
        add("cluster", self.cluster.clone());
        add("kind", self.kind.clone());
        add("object", self.object.clone());
        add("since", self.since.map(|v| v.to_string()));
        add("after", self.after.map(|v| v.to_string()));
        add("limit", self.limit.map(|v| v.to_string()));
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    }
}

/// Live events from `GET /api/events/stream`; [`EventStream::next`] gives them one by one.
#[derive(Debug)]
pub struct EventStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
    url: String,
}

impl EventStream {
    /// The next event; `None` when the root closed the stream.
    pub async fn next(&mut self) -> Option<Result<Event>> {
        loop {
            if let Some(end) = find_blank_line(&self.buffer) {
                let block: Vec<u8> = self.buffer.drain(..end).collect();
                match parse_block(&block) {
                    Some(Ok(event)) => return Some(Ok(event)),
                    Some(Err(message)) => {
                        return Some(Err(ClientError::Decode {
                            method: "GET".into(),
                            path: self.url.clone(),
                            message,
                        }));
                    }
                    None => continue, // comment, keep-alive, or a note
                }
            }
            match self.response.chunk().await {
                Ok(Some(bytes)) => self.buffer.extend_from_slice(&bytes),
                Ok(None) => return None,
                Err(source) => {
                    return Some(Err(ClientError::Transport {
                        url: self.url.clone(),
                        source,
                    }));
                }
            }
        }
    }
}

/// End (exclusive, including the blank line) of the first complete SSE block.
fn find_blank_line(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The event of one SSE block; `None` for a block that carries none.
fn parse_block(block: &[u8]) -> Option<std::result::Result<Event, String>> {
    let text = String::from_utf8_lossy(block);
    let mut data = String::new();
    let mut kind = "message";
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
        } else if let Some(rest) = line.strip_prefix("event:") {
            kind = rest.trim();
        }
    }
    if data.is_empty() || kind != "message" {
        return None;
    }
    Some(serde_json::from_str(&data).map_err(|e| format!("{e} in {data:?}")))
}

impl Client {
    /// `GET /api/events`: the newest matching events, oldest first.
    pub async fn events(&self, query: &EventQuery) -> Result<Vec<Event>> {
        let path = format!("/api/events{}", query.query_string());
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// `GET /api/events/stream`: the kept events matching `query` (its `limit` newest),
    /// then every new one as it happens.
    pub async fn follow_events(&self, query: &EventQuery) -> Result<EventStream> {
        let path = format!("/api/events/stream{}", query.query_string());
        let url = format!("{}{}", self.base, path);
        let token = self.current_token().await?;
        let response = self
            .http
            .get(&url)
            .bearer_auth(token)
            .header("accept", "text/event-stream")
            .send()
            .await
            .map_err(|source| ClientError::Transport {
                url: url.clone(),
                source,
            })?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.bytes().await.unwrap_or_default();
            return Err(api_error(&Method::GET, &path, status, &bytes));
        }
        Ok(EventStream {
            response,
            buffer: Vec::new(),
            url,
        })
    }

    /// `GET /api/service/<id>/usage`: CPU and memory history of the service's instances (or
    /// of `instance`) between `since` and `until` (seconds since the epoch; default the last
    /// hour).
    pub async fn usage(
        &self,
        service_id: &str,
        instance: Option<u32>,
        since: Option<u32>,
        until: Option<u32>,
    ) -> Result<ServiceUsage> {
        let mut params = Vec::new();
        if let Some(n) = instance {
            params.push(format!("instance={n}"));
        }
        if let Some(t) = since {
            params.push(format!("since={t}"));
        }
        if let Some(t) = until {
            params.push(format!("until={t}"));
        }
        let mut path = format!("/api/service/{}/usage", segment(service_id));
        if !params.is_empty() {
            path.push('?');
            path.push_str(&params.join("&"));
        }
        self.call(Method::GET, &path, None::<&()>).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_blocks_are_parsed() {
        let buf = b": keep-alive\n\nid: 3\ndata: {\"id\":3,\"time\":\"t\",\"timestamp\":1.0,\"object\":\"cluster\",\"object_id\":\"c\",\"kind\":\"cluster_lost\",\"message\":\"m\"}\n\nid: 4\nda";
        let first = find_blank_line(buf).unwrap();
        assert!(parse_block(&buf[..first]).is_none());
        let rest = &buf[first..];
        let second = find_blank_line(rest).unwrap();
        let event = parse_block(&rest[..second]).unwrap().unwrap();
        assert_eq!((event.id, event.kind.as_str()), (3, "cluster_lost"));
        assert!(find_blank_line(&rest[second..]).is_none());
        assert!(parse_block(b"event: lagged\ndata: 3 events were skipped\n\n").is_none());
    }

    #[test]
    fn queries_are_encoded() {
        let q = EventQuery {
            service: Some("abc".into()),
            kind: Some("placed,running".into()),
            limit: Some(5),
            ..Default::default()
        };
        assert_eq!(
            q.query_string(),
            "?service=abc&kind=placed%2Crunning&limit=5"
        );
        assert_eq!(EventQuery::default().query_string(), "");
    }
}
