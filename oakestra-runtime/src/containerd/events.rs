//! containerd's task events: the subscription, exits (with OOM kills) recorded once per
//! incarnation and announced to the subscribers, and the catch-up after a gap.

use std::sync::Weak;
use std::time::Duration;

use containerd_client::services::v1::{PublishRequest, SubscribeRequest};
use containerd_client::tonic;
use containerd_client::types::v1::Status as ProcessStatus;
use prost::Message;

use super::{
    ContainerdRuntime, ExitRecord, Inner, OOM_KILLED, Tracked, adopted, backend, cgroup, rpc_error,
};
use crate::{ExitEvent, RuntimeError};

impl ContainerdRuntime {
    /// Subscribes to our task events. containerd sends the response headers of a subscription
    /// only with its first event, so marker events are published until the stream is open.
    pub(super) async fn subscribe(
        &self,
    ) -> Result<tonic::Streaming<containerd_client::types::Envelope>, RuntimeError> {
        let conn = self.conn();
        let mut events = conn.client.events();
        let subscription = events.subscribe(SubscribeRequest {
            filters: event_filters(&self.inner.config.namespace),
        });
        tokio::pin!(subscription);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let stream = loop {
            let mut publisher = conn.client.events();
            let publish = publisher.publish(conn.request(PublishRequest {
                topic: SUBSCRIBED_TOPIC.into(),
                event: Some(containerd_client::to_any(
                    &containerd_client::events::TaskOom {
                        container_id: String::new(),
                    },
                )),
            }));
            let _ = publish.await;
            tokio::select! {
                result = &mut subscription => {
                    break result
                        .map_err(|s| backend("subscribing to containerd events", rpc_error("subscribe", &s)))?
                        .into_inner();
                }
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            if tokio::time::Instant::now() > deadline {
                return Err(backend(
                    "subscribing to containerd events",
                    "containerd did not open the event stream within 10 s",
                ));
            }
        };
        Ok(stream)
    }

    fn broadcast(&self, event: ExitEvent) {
        self.state()
            .subscribers
            .retain(|tx| tx.send(event.clone()).is_ok());
    }

    /// Records and announces the exit of container `cid` (once per incarnation).
    pub(super) async fn handle_exit(&self, cid: &str, exit_status: u32) {
        let tracked = self.state().tracked.get(cid).cloned();
        let tracked = match tracked {
            Some(t) if t.exited => return,
            Some(t) => t,
            None => match self.get_container(cid).await {
                Ok(Some(c)) => match adopted(&c) {
                    Some((spec, incarnation)) => Tracked {
                        id: spec.id,
                        incarnation,
                        oom: false,
                        exited: false,
                    },
                    None => return,
                },
                _ => return,
            },
        };
        let code = i32::try_from(exit_status).unwrap_or(255);
        let oom = tracked.oom
            || (code == 137 && cgroup::oom_killed(&*self.inner.cgroups, &self.cgroup_path(cid)));
        {
            let mut state = self.state();
            let entry = state
                .tracked
                .entry(cid.to_string())
                .or_insert_with(|| tracked.clone());
            entry.exited = true;
            state.last_exits.insert(
                cid.to_string(),
                ExitRecord {
                    incarnation: tracked.incarnation,
                    oom,
                },
            );
        }
        if oom {
            let note = format!(
                "[oakestra] {OOM_KILLED}: the task exceeded its memory limit and was killed (exit code {code})\n"
            );
            let log = self.log(&tracked.id);
            let _ = tokio::task::spawn_blocking(move || log.append(&note)).await;
        }
        tracing::info!(
            "{cid} exited with {code}{}",
            if oom { " (OOM)" } else { "" }
        );
        self.broadcast(ExitEvent {
            id: tracked.id,
            incarnation: tracked.incarnation,
            exit_code: code,
        });
    }

    /// After an event-stream gap: exits of tracked tasks that happened meanwhile.
    pub(super) async fn reconcile(&self) {
        let running: Vec<String> = self
            .state()
            .tracked
            .iter()
            .filter(|(_, t)| !t.exited)
            .map(|(k, _)| k.clone())
            .collect();
        for cid in running {
            match self.task_status(&cid).await {
                Ok(Some((ProcessStatus::Stopped, code))) => self.handle_exit(&cid, code).await,
                Ok(None) => self.handle_exit(&cid, 255).await,
                _ => {}
            }
        }
    }
}

/// Topic of the marker events that open a subscription.
const SUBSCRIBED_TOPIC: &str = "/oakestra/subscribed";

pub(super) fn event_filters(namespace: &str) -> Vec<String> {
    vec![
        format!("topic==\"{SUBSCRIBED_TOPIC}\",namespace==\"{namespace}\""),
        format!("topic==\"/tasks/exit\",namespace==\"{namespace}\""),
        format!("topic==\"/tasks/oom\",namespace==\"{namespace}\""),
    ]
}

/// Follows containerd's task events; resubscribes (and reconciles) when the stream breaks.
pub(super) async fn event_loop(
    weak: Weak<Inner>,
    mut events: tonic::Streaming<containerd_client::types::Envelope>,
) {
    loop {
        loop {
            let envelope = match events.message().await {
                Ok(Some(e)) => e,
                Ok(None) | Err(_) => break,
            };
            let Some(inner) = weak.upgrade() else { return };
            let runtime = ContainerdRuntime { inner };
            let Some(event) = envelope.event else {
                continue;
            };
            match envelope.topic.as_str() {
                "/tasks/exit" => {
                    if let Ok(exit) = containerd_client::events::TaskExit::decode(&*event.value)
                        && exit.id == exit.container_id
                    {
                        runtime
                            .handle_exit(&exit.container_id, exit.exit_status)
                            .await;
                    }
                }
                "/tasks/oom" => {
                    if let Ok(oom) = containerd_client::events::TaskOom::decode(&*event.value) {
                        if let Some(t) = runtime.state().tracked.get_mut(&oom.container_id) {
                            t.oom = true;
                        }
                        if let Some(r) = runtime.state().last_exits.get_mut(&oom.container_id) {
                            r.oom = true;
                        }
                    }
                }
                _ => {}
            }
        }
        // The stream ended (containerd restarted?): resubscribe, then catch up.
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let Some(inner) = weak.upgrade() else { return };
            let runtime = ContainerdRuntime { inner };
            if let Ok(stream) = runtime.subscribe().await {
                events = stream;
                runtime.reconcile().await;
                break;
            }
        }
    }
}
