//! Events: what happened to which object, and why ("placed on cluster c1", "FAILED on worker
//! w3: worker w3 is inactive; rescheduling"). The root records them from what it decides
//! (placements, moves, undeploys) and from what its clusters report (instance status changes
//! with their reason, worker counts), keeps the newest [`DEFAULT_CAPACITY`] for at most
//! [`DEFAULT_RETENTION_SECS`] in memory and in the store (written as they come by
//! [`super::persist`], read back when the root starts) and fans new ones out to followers
//! (`GET /api/events/stream`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use utoipa::ToSchema;

/// Events kept at most.
pub const DEFAULT_CAPACITY: usize = 10_000;
/// Events older than this are dropped.
pub const DEFAULT_RETENTION_SECS: f64 = 24.0 * 3600.0;

/// The kind of object an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// An application.
    Application,
    /// A service.
    Service,
    /// An instance of a service (`object_id` is `<service id>/<instance number>`).
    Instance,
    /// A cluster.
    Cluster,
    /// A worker.
    Worker,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Increasing number (resume a stream after it with `after` or `Last-Event-ID`).
    pub id: u64,
    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub time: String,
    /// Seconds since the epoch.
    pub timestamp: f64,
    /// What kind of object it is about.
    pub object: ObjectKind,
    /// Its id.
    pub object_id: String,
    /// What happened: `requested`, `placed`, `pending`, `moved`, `node_scheduled`,
    /// `creating`, `running`, `failed`, `restarting` (`DEAD`, its worker restarts it after a
    /// back-off), `restarted` (a restart seen only by its count), `rescheduling` (off a lost
    /// worker), `completed`,
    /// `undeployed`, `service_deleted`, `cluster_registered`, `cluster_connected`,
    /// `cluster_disconnected`, `cluster_lost`, `workers_changed`, `status` (any other status
    /// change).
    pub kind: String,
    /// What happened, for people.
    pub message: String,
    /// The instance's status after the event, when it is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Application of the object (services and instances).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_id: Option<String>,
    /// Service of the object (services and instances).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<String>,
    /// Instance number (instances).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_number: Option<u32>,
    /// Cluster involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// Worker involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
}

impl Event {
    /// An event about `object` `object_id` (id and time are set when it is emitted).
    pub fn new(
        object: ObjectKind,
        object_id: impl Into<String>,
        kind: &str,
        message: impl Into<String>,
    ) -> Self {
        Event {
            id: 0,
            time: String::new(),
            timestamp: 0.0,
            object,
            object_id: object_id.into(),
            kind: kind.to_owned(),
            message: message.into(),
            status: None,
            application_id: None,
            service_id: None,
            instance_number: None,
            cluster_id: None,
            worker_id: None,
        }
    }

    /// An event about instance `n` of a service of an application.
    pub fn instance(
        application: impl ToString,
        service: impl ToString,
        n: u32,
        kind: &str,
        message: impl Into<String>,
    ) -> Self {
        let service = service.to_string();
        let mut e = Event::new(
            ObjectKind::Instance,
            format!("{service}/{n}"),
            kind,
            message,
        );
        e.application_id = Some(application.to_string());
        e.service_id = Some(service);
        e.instance_number = Some(n);
        e
    }

    /// An event about a cluster.
    pub fn cluster(cluster: impl ToString, kind: &str, message: impl Into<String>) -> Self {
        let cluster = cluster.to_string();
        let mut e = Event::new(ObjectKind::Cluster, cluster.clone(), kind, message);
        e.cluster_id = Some(cluster);
        e
    }

    /// With the cluster set.
    pub fn on_cluster(mut self, cluster: Option<impl ToString>) -> Self {
        self.cluster_id = cluster.map(|c| c.to_string());
        self
    }

    /// With the worker set.
    pub fn on_worker(mut self, worker: Option<impl ToString>) -> Self {
        self.worker_id = worker.map(|w| w.to_string());
        self
    }

    /// With the status set.
    pub fn with_status(mut self, status: impl ToString) -> Self {
        self.status = Some(status.to_string());
        self
    }
}

/// What to select.
#[derive(Debug, Clone, Default, Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventFilter {
    /// Only events of this service.
    pub service: Option<String>,
    /// Only events of this application.
    pub application: Option<String>,
    /// Only events of this cluster.
    pub cluster: Option<String>,
    /// Only these kinds (comma-separated).
    pub kind: Option<String>,
    /// Only events about this kind of object.
    pub object: Option<ObjectKind>,
    /// Only events at or after this time: seconds since the epoch.
    pub since: Option<f64>,
    /// Only events with a larger id.
    #[param(minimum = 0, maximum = 18446744073709551615_u64)]
    pub after: Option<u64>,
    /// At most this many (the newest), 1 to 10 000, default 100.
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<usize>,
}

impl EventFilter {
    /// Whether `e` passes (ownership aside).
    pub fn matches(&self, e: &Event) -> bool {
        let eq = |want: &Option<String>, have: &Option<String>| {
            want.as_deref().is_none_or(|w| have.as_deref() == Some(w))
        };
        eq(&self.service, &e.service_id)
            && eq(&self.application, &e.application_id)
            && eq(&self.cluster, &e.cluster_id)
            && self
                .kind
                .as_deref()
                .is_none_or(|k| k.split(',').any(|k| k.trim() == e.kind))
            && self.object.is_none_or(|o| o == e.object)
            && self.since.is_none_or(|s| e.timestamp >= s)
            && self.after.is_none_or(|a| e.id > a)
    }
}

#[derive(Debug, Default)]
struct Ring {
    events: VecDeque<Arc<Event>>,
    next_id: u64,
}

/// The event log.
#[derive(Debug)]
pub struct EventLog {
    ring: Mutex<Ring>,
    capacity: usize,
    retention_secs: f64,
    live: broadcast::Sender<Arc<Event>>,
}

impl Default for EventLog {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY, DEFAULT_RETENTION_SECS)
    }
}

impl EventLog {
    /// A log keeping at most `capacity` events for at most `retention_secs`.
    pub fn new(capacity: usize, retention_secs: f64) -> Self {
        Self {
            ring: Mutex::new(Ring {
                events: VecDeque::new(),
                next_id: 1,
            }),
            capacity: capacity.max(1),
            retention_secs,
            live: broadcast::channel(1024).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `event` now; returns it with its id and time.
    pub fn emit(&self, event: Event) -> Arc<Event> {
        self.emit_at(event, crate::tokens::now_secs_f64())
    }

    /// Records `event` at `timestamp` (seconds since the epoch).
    pub fn emit_at(&self, mut event: Event, timestamp: f64) -> Arc<Event> {
        tracing::debug!(kind = %event.kind, object = %event.object_id, "event: {}", event.message);
        let mut ring = self.lock();
        event.id = ring.next_id;
        ring.next_id += 1;
        event.timestamp = timestamp;
        event.time = iso_millis(timestamp);
        let event = Arc::new(event);
        ring.events.push_back(Arc::clone(&event));
        let horizon = timestamp - self.retention_secs;
        while ring.events.len() > self.capacity
            || ring.events.front().is_some_and(|e| e.timestamp < horizon)
        {
            ring.events.pop_front();
        }
        // Sent under the lock, so followers see events in id order.
        let _ = self.live.send(Arc::clone(&event));
        event
    }

    /// The newest `limit` events passing `filter` and `visible`, oldest first.
    pub fn query(
        &self,
        filter: &EventFilter,
        limit: usize,
        visible: impl Fn(&Event) -> bool,
    ) -> Vec<Arc<Event>> {
        let ring = self.lock();
        let mut out: Vec<Arc<Event>> = ring
            .events
            .iter()
            .rev()
            .filter(|e| filter.matches(e) && visible(e))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// Events kept now and a receiver of every later one (no gap, no duplicate).
    pub fn follow(&self) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        let ring = self.lock();
        let rx = self.live.subscribe();
        (ring.events.iter().cloned().collect(), rx)
    }

    /// Events kept at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Events older than this many seconds are dropped.
    pub fn retention_secs(&self) -> f64 {
        self.retention_secs
    }

    /// Puts back events read from the store, before any new one: keeps the newest within the
    /// capacity and the retention at `now`, continues the ids after the largest. Returns the
    /// events that are not kept (for the caller to delete). Does nothing if events were
    /// recorded already (their ids would clash).
    pub fn restore(&self, mut events: Vec<Event>, now: f64) -> Vec<Event> {
        let mut ring = self.lock();
        if !ring.events.is_empty() {
            return Vec::new();
        }
        events.sort_by_key(|e| e.id);
        events.dedup_by_key(|e| e.id);
        ring.next_id = events.last().map_or(1, |e| e.id + 1);
        let horizon = now - self.retention_secs;
        let excess = events.len().saturating_sub(self.capacity);
        let mut dropped: Vec<Event> = events.drain(..excess).collect();
        let (old, kept): (Vec<Event>, Vec<Event>) =
            events.into_iter().partition(|e| e.timestamp < horizon);
        dropped.extend(old);
        ring.events = kept.into_iter().map(Arc::new).collect();
        dropped
    }

    /// Kept events with an id above `after`, oldest first.
    pub fn after(&self, after: u64) -> Vec<Arc<Event>> {
        self.lock()
            .events
            .iter()
            .filter(|e| e.id > after)
            .cloned()
            .collect()
    }

    /// How many events are kept.
    pub fn len(&self) -> usize {
        self.lock().events.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of seconds since the epoch.
pub fn iso_millis(timestamp: f64) -> String {
    let ms = (timestamp.max(0.0) * 1000.0).round() as u64;
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let (y, m, d) = oakestra_daemon::calendar::civil_from_days(days);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_numbered_filtered_and_bounded() {
        let log = EventLog::new(3, 100.0);
        for (i, kind) in ["placed", "running", "failed", "running"]
            .iter()
            .enumerate()
        {
            let e = Event::instance("a1", "s1", 0, kind, format!("m{i}"));
            log.emit_at(e, 1000.0 + i as f64);
        }
        log.emit_at(Event::cluster("c1", "cluster_lost", "gone"), 1004.0);
        assert_eq!(log.len(), 3);
        let all = log.query(&EventFilter::default(), 10, |_| true);
        assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), [3, 4, 5]);
        let running = EventFilter {
            kind: Some("running,failed".into()),
            ..Default::default()
        };
        let got = log.query(&running, 10, |_| true);
        assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(log.query(&running, 1, |_| true)[0].id, 4);
        let service = EventFilter {
            service: Some("s1".into()),
            after: Some(3),
            ..Default::default()
        };
        assert_eq!(log.query(&service, 10, |_| true).len(), 1);
        let owned = log.query(&EventFilter::default(), 10, |e| e.application_id.is_some());
        assert_eq!(owned.len(), 2);
        // Retention: everything older than 100 s before the newest goes.
        log.emit_at(Event::cluster("c1", "cluster_connected", "back"), 1104.5);
        assert_eq!(log.len(), 1);
        assert_eq!(all[0].time, "1970-01-01T00:16:42.000Z");
    }

    #[tokio::test]
    async fn followers_get_new_events_after_the_backlog() {
        let log = EventLog::default();
        log.emit(Event::cluster("c1", "cluster_registered", "hello"));
        let (backlog, mut rx) = log.follow();
        log.emit(Event::cluster("c1", "cluster_connected", "stream"));
        assert_eq!(backlog.len(), 1);
        assert_eq!(rx.recv().await.unwrap().id, 2);
    }
}
