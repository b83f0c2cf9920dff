//! Events and usage history survive a root restart: events are written to the store as they
//! come (a batch at a time), the changed usage histories once a minute and when the root
//! stops; both are read back when the root starts. Retention is the in-memory one: the store
//! keeps the newest [`super::events::DEFAULT_CAPACITY`] events of the last
//! [`super::events::DEFAULT_RETENTION_SECS`], and the histories of instances that exist, with
//! samples of the last day.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use oakestra_store::{Collection, Store, StoreError, Write};
use tokio::sync::{broadcast, watch};

use super::Monitor;
use super::events::Event;
use super::history::{OLDER_SPAN_SECS, SavedHistory};

/// How often the changed usage histories are written.
pub const HISTORY_FLUSH: Duration = Duration::from_secs(60);
/// Events written per store commit at most.
const EVENT_BATCH: usize = 512;

/// The store id of event `id`: zero-padded, so ids sort in order.
pub fn event_doc_id(id: u64) -> String {
    format!("{id:020}")
}

/// What [`load`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    /// Events kept.
    pub events: usize,
    /// Instance histories restored.
    pub histories: usize,
    /// Documents past retention, deleted.
    pub expired: usize,
    /// The largest event id read (0: none).
    pub last_event_id: u64,
}

/// Reads the events and histories back into `monitor` (before anything records) and deletes
/// what is past retention.
pub async fn load(store: &dyn Store, monitor: &Monitor) -> Result<Loaded, StoreError> {
    let now = crate::tokens::now_secs_f64();
    let mut events = Vec::new();
    let mut deletes = Vec::new();
    for doc in store.list(Collection::Events).await? {
        match serde_json::from_value::<Event>(doc.body) {
            Ok(e) => events.push(e),
            Err(_) => deletes.push(Write::delete_any(Collection::Events, doc.id)),
        }
    }
    let dropped = monitor.events.restore(events, now);
    deletes.extend(
        dropped
            .iter()
            .map(|e| Write::delete_any(Collection::Events, event_doc_id(e.id))),
    );
    let mut loaded = Loaded {
        events: monitor.events.len(),
        last_event_id: monitor.events.after(0).last().map_or(0, |e| e.id),
        ..Loaded::default()
    };
    let oldest = (now as u32).saturating_sub(OLDER_SPAN_SECS);
    for doc in store.list(Collection::UsageHistory).await? {
        match serde_json::from_value::<SavedHistory>(doc.body) {
            Ok(h) if h.newest() >= oldest => {
                monitor.history.restore(h);
                loaded.histories += 1;
            }
            _ => deletes.push(Write::delete_any(Collection::UsageHistory, doc.id)),
        }
    }
    loaded.expired = deletes.len();
    for chunk in chunks(deletes) {
        store.commit(chunk).await?;
    }
    Ok(loaded)
}

/// Writes events as they come and the changed histories every [`HISTORY_FLUSH`] until `stop`
/// turns true; then writes what is left. `loaded` is what [`load`] read. Store errors are
/// logged, not fatal: monitoring must not stop the root.
pub async fn run(
    store: Arc<dyn Store>,
    monitor: Arc<Monitor>,
    loaded: Loaded,
    mut stop: watch::Receiver<bool>,
) {
    let (kept, mut live) = monitor.events.follow();
    // Ids of the events in the store, oldest first, with their time (for retention).
    let mut stored: VecDeque<(u64, f64)> = kept
        .iter()
        .filter(|e| e.id <= loaded.last_event_id)
        .map(|e| (e.id, e.timestamp))
        .collect();
    // Recorded since the load, before this task subscribed.
    let fresh: Vec<Arc<Event>> = kept
        .into_iter()
        .filter(|e| e.id > loaded.last_event_id)
        .collect();
    let mut last_written = fresh.last().map_or(loaded.last_event_id, |e| e.id);
    write_events(store.as_ref(), &monitor, &fresh, &mut stored).await;
    let mut tick = tokio::time::interval(HISTORY_FLUSH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            received = live.recv() => {
                let mut batch = match received {
                    Ok(e) => vec![e],
                    // Fell behind the broadcast: the ring has them (or they are past retention).
                    Err(broadcast::error::RecvError::Lagged(_)) => monitor.events.after(last_written),
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                while batch.len() < EVENT_BATCH {
                    match live.try_recv() {
                        Ok(e) => batch.push(e),
                        Err(broadcast::error::TryRecvError::Lagged(_)) => {
                            batch = monitor.events.after(last_written);
                        }
                        Err(_) => break,
                    }
                }
                batch.retain(|e| e.id > last_written);
                if let Some(last) = batch.last() {
                    last_written = last.id;
                }
                write_events(store.as_ref(), &monitor, &batch, &mut stored).await;
            }
            _ = tick.tick() => write_histories(store.as_ref(), &monitor).await,
            // Stopping (or the root is gone): the guard of the watch is dropped inside.
            _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => {
                let rest = monitor.events.after(last_written);
                write_events(store.as_ref(), &monitor, &rest, &mut stored).await;
                write_histories(store.as_ref(), &monitor).await;
                break;
            }
        }
    }
}

async fn write_events(
    store: &dyn Store,
    monitor: &Monitor,
    batch: &[Arc<Event>],
    stored: &mut VecDeque<(u64, f64)>,
) {
    if batch.is_empty() {
        return;
    }
    let mut writes = Vec::with_capacity(batch.len());
    for e in batch {
        match serde_json::to_value(e.as_ref()) {
            Ok(body) => {
                writes.push(Write::upsert(Collection::Events, event_doc_id(e.id), body));
                stored.push_back((e.id, e.timestamp));
            }
            Err(err) => tracing::warn!("event {} not stored: {err}", e.id),
        }
    }
    let horizon = batch.last().map_or(0.0, |e| e.timestamp) - monitor.events.retention_secs();
    while stored.len() > monitor.events.capacity()
        || stored.front().is_some_and(|(_, t)| *t < horizon)
    {
        let Some((id, _)) = stored.pop_front() else {
            break;
        };
        writes.push(Write::delete_any(Collection::Events, event_doc_id(id)));
    }
    for chunk in chunks(writes) {
        if let Err(e) = store.commit(chunk).await {
            tracing::warn!("writing events to the store failed: {e}");
        }
    }
}

async fn write_histories(store: &dyn Store, monitor: &Monitor) {
    let (changed, removed) = monitor.history.take_changes();
    let mut writes = Vec::with_capacity(changed.len() + removed.len());
    for h in changed {
        let id = SavedHistory::doc_id(h.service, h.instance);
        match serde_json::to_value(&h) {
            Ok(body) => {
                monitor
                    .metrics
                    .history_written_bytes
                    .inc_by(body.to_string().len() as u64);
                writes.push(Write::upsert(Collection::UsageHistory, id, body));
            }
            Err(e) => tracing::warn!("usage history {id} not stored: {e}"),
        }
    }
    for (service, n) in removed {
        writes.push(Write::delete_any(
            Collection::UsageHistory,
            SavedHistory::doc_id(service, n),
        ));
    }
    for chunk in chunks(writes) {
        if let Err(e) = store.commit(chunk).await {
            tracing::warn!("writing usage histories to the store failed: {e}");
        }
    }
}

/// Writes in commits of at most [`EVENT_BATCH`].
fn chunks(mut writes: Vec<Write>) -> Vec<Vec<Write>> {
    let mut out = Vec::new();
    while writes.len() > EVENT_BATCH {
        let rest = writes.split_off(EVENT_BATCH);
        out.push(std::mem::replace(&mut writes, rest));
    }
    if !writes.is_empty() {
        out.push(writes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::events::ObjectKind;
    use oakestra_core::ids::ObjectId;

    fn monitor() -> Arc<Monitor> {
        Arc::new(Monitor::default())
    }

    #[tokio::test]
    async fn events_and_histories_come_back_after_a_restart() {
        let store: Arc<dyn Store> = Arc::new(oakestra_store::MemoryStore::new());
        let service = ObjectId::from_bytes([7; 12]);
        let now = crate::monitor::history::now_secs();

        let first = monitor();
        let loaded = load(store.as_ref(), &first).await.unwrap();
        let (stop_tx, stop) = watch::channel(false);
        let writer = tokio::spawn(run(Arc::clone(&store), Arc::clone(&first), loaded, stop));
        tokio::task::yield_now().await;
        for i in 0..3 {
            first.emit(Event::new(
                ObjectKind::Service,
                "s",
                "requested",
                format!("e{i}"),
            ));
        }
        for k in 0..4 {
            first
                .history
                .record(service, 0, now - 20 + k * 5, 10.0 + f64::from(k), 5.0);
        }
        first.history.record(service, 1, now - 5, 1.0, 1.0);
        first.history.forget(service, Some(1));
        stop_tx.send(true).unwrap();
        writer.await.unwrap();

        // The bytes written are counted: the one history document that stayed.
        let docs = store.list(Collection::UsageHistory).await.unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(
            first.metrics.history_written_bytes.get(),
            docs[0].body.to_string().len() as u64
        );

        let second = monitor();
        let loaded = load(store.as_ref(), &second).await.unwrap();
        assert_eq!((loaded.events, loaded.histories), (3, 1));
        let events = second.events.after(0);
        let messages: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages, ["e0", "e1", "e2"]);
        // Ids go on after the restored ones.
        let next = second.emit(Event::new(ObjectKind::Service, "s", "placed", "e3"));
        assert_eq!(next.id, events[2].id + 1);
        assert_eq!(
            second.history.read(service, 0, now - 20, now - 5, 5),
            first.history.read(service, 0, now - 20, now - 5, 5)
        );
        assert!(second.history.read(service, 1, 0, now, 5).is_empty());
    }

    #[tokio::test]
    async fn the_store_keeps_only_the_retained_events() {
        let store: Arc<dyn Store> = Arc::new(oakestra_store::MemoryStore::new());
        let m = Arc::new(Monitor {
            events: crate::monitor::EventLog::new(5, 3600.0),
            ..Monitor::default()
        });
        let (stop_tx, stop) = watch::channel(false);
        let writer = tokio::spawn(run(
            Arc::clone(&store),
            Arc::clone(&m),
            Loaded::default(),
            stop,
        ));
        // The writer follows the log from here on.
        tokio::task::yield_now().await;
        let now = crate::tokens::now_secs_f64();
        // Two past the retention age, then twelve: only the newest five stay.
        for i in 0..2 {
            m.events.emit_at(
                Event::new(ObjectKind::Service, "s", "old", format!("o{i}")),
                now - 7200.0,
            );
        }
        for i in 0..12 {
            m.events.emit_at(
                Event::new(ObjectKind::Service, "s", "new", format!("n{i}")),
                now,
            );
        }
        stop_tx.send(true).unwrap();
        writer.await.unwrap();
        let docs = store.list(Collection::Events).await.unwrap();
        let messages: Vec<String> = docs
            .iter()
            .map(|d| d.body["message"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(messages, ["n7", "n8", "n9", "n10", "n11"]);
    }
}
