//! `GET /api/events`, `GET /api/events/stream` (server-sent events) and
//! `GET /api/service/<id>/usage` (usage history). See [`crate::monitor`].

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use oakestra_core::model::MetricSample;
use oakestra_proto::rest::{InstanceUsage, ServiceUsage};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::monitor::history::{iso_time, now_secs};
use crate::monitor::{Event, EventFilter};

/// Events answered when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;
/// Most events one answer holds.
pub const MAX_LIMIT: usize = 10_000;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_events))
        .routes(routes!(stream_events))
        .routes(routes!(service_usage))
}

/// Which events a caller may see: an Admin every one; others those of their applications.
enum Visibility {
    All,
    Owner {
        user: String,
        owned: HashSet<String>,
        foreign: HashSet<String>,
    },
}

impl Visibility {
    async fn of(state: &AppState, caller: &Caller) -> ApiResult<Self> {
        if caller.is_admin() {
            return Ok(Visibility::All);
        }
        let user = caller.username().to_owned();
        let owned = state
            .store
            .list_applications_of(&user)
            .await?
            .into_iter()
            .map(|a| a.id.to_string())
            .collect();
        Ok(Visibility::Owner {
            user,
            owned,
            foreign: HashSet::new(),
        })
    }

    /// Whether `e` is visible with what is known now.
    fn allows(&self, e: &Event) -> bool {
        match self {
            Visibility::All => true,
            Visibility::Owner { owned, .. } => {
                e.application_id.as_ref().is_some_and(|a| owned.contains(a))
            }
        }
    }

    /// Like [`Self::allows`], looking up applications created since.
    async fn allows_now(&mut self, state: &AppState, e: &Event) -> bool {
        let Visibility::Owner {
            user,
            owned,
            foreign,
        } = self
        else {
            return true;
        };
        let Some(app) = e.application_id.as_ref() else {
            return false;
        };
        if owned.contains(app) {
            return true;
        }
        if foreign.contains(app) {
            return false;
        }
        let mine = match app.parse() {
            Ok(id) => matches!(
                state.store.get_application(id).await,
                Ok(Some(a)) if a.user_id == *user
            ),
            Err(_) => false,
        };
        if mine {
            owned.insert(app.clone());
        } else {
            foreign.insert(app.clone());
        }
        mine
    }
}

fn limit_of(filter: &EventFilter) -> ApiResult<usize> {
    match filter.limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "limit {n} is not valid: give a number of events from 1 to {MAX_LIMIT}"
        ))),
    }
}

/// Events, oldest first.
///
/// What happened to which object and why: placements, moves, status changes with their
/// reason (image pull failures, crashes, lost workers), undeploys, clusters joining and
/// leaving. An Admin sees every event; other users the events of their own applications.
/// Events are kept in memory at the root (the newest 10 000, at most 24 h) and lost when it
/// restarts. Oakestra-rs only.
#[utoipa::path(get, path = "/api/events", tag = "events",
    security(("bearer" = [])),
    params(EventFilter),
    responses(
        (status = 200, body = Vec<Event>, description = "The newest `limit` matching events, oldest first"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    ))]
async fn list_events(
    State(state): State<AppState>,
    caller: Caller,
    Query(filter): Query<EventFilter>,
) -> ApiResult<Json<Vec<Event>>> {
    let limit = limit_of(&filter)?;
    let visibility = Visibility::of(&state, &caller).await?;
    let events = state
        .monitor
        .events
        .query(&filter, limit, |e| visibility.allows(e));
    Ok(Json(events.iter().map(|e| (**e).clone()).collect()))
}

/// Events as they happen (server-sent events).
///
/// First the kept events matching the filter (the newest `limit`; none with `limit=0`
/// is not allowed, use `after` with the last id seen, or the `Last-Event-ID` header a
/// reconnecting `EventSource` sends), then every new one. Each SSE message has `id:` the
/// event id and `data:` the event as JSON; a comment line is sent every 15 s to keep
/// proxies from closing the connection. Same visibility as `GET /api/events`.
#[utoipa::path(get, path = "/api/events/stream", tag = "events",
    security(("bearer" = [])),
    params(EventFilter),
    responses(
        (status = 200, content_type = "text/event-stream", description = "`id: <event id>` and `data: <event JSON>` per event"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    ))]
async fn stream_events(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(mut filter): Query<EventFilter>,
) -> ApiResult<impl axum::response::IntoResponse> {
    let limit = limit_of(&filter)?;
    if let Some(last) = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        filter.after = Some(filter.after.map_or(last, |a| a.max(last)));
    }
    let mut visibility = Visibility::of(&state, &caller).await?;
    let (backlog, mut live) = state.monitor.events.follow();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<SseEvent, Infallible>>(256);
    tokio::spawn(async move {
        let mut last_id = 0;
        let mut first: Vec<Arc<Event>> = Vec::new();
        for e in backlog.iter().rev() {
            if first.len() >= limit {
                break;
            }
            if filter.matches(e) && visibility.allows_now(&state, e).await {
                first.push(Arc::clone(e));
            }
        }
        first.reverse();
        for e in first {
            last_id = e.id;
            if tx.send(Ok(sse(&e))).await.is_err() {
                return;
            }
        }
        loop {
            let e = match live.recv().await {
                Ok(e) => e,
                Err(RecvError::Lagged(n)) => {
                    let note = SseEvent::default().event("lagged").data(format!(
                        "{n} events were skipped; reload with after={last_id}"
                    ));
                    if tx.send(Ok(note)).await.is_err() {
                        return;
                    }
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            if e.id <= last_id || !filter.matches(&e) || !visibility.allows_now(&state, &e).await {
                continue;
            }
            last_id = e.id;
            if tx.send(Ok(sse(&e))).await.is_err() {
                return;
            }
        }
    });
    Ok(Sse::new(ReceiverStream::new(rx)).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("keep-alive"),
    ))
}

fn sse(e: &Event) -> SseEvent {
    SseEvent::default()
        .id(e.id.to_string())
        .data(serde_json::to_string(e).unwrap_or_default())
}

/// Time range and grid of a usage reading.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Only this instance.
    pub instance: Option<u32>,
    /// Start, seconds since the epoch (default: one hour ago).
    pub since: Option<u32>,
    /// End, seconds since the epoch (default: now).
    pub until: Option<u32>,
    /// Grid step in seconds for the last hour (default 5; older points are 5-minute means).
    #[param(minimum = 1)]
    pub step: Option<u32>,
}

/// Usage history of a service's instances over a time range.
///
/// The root keeps every instance's reported CPU and memory for the last hour as reported
/// (read on a grid of `step` seconds, each point holding the last reported value: the
/// cluster forwards usage when it moves by a point, at most every 5 s) and as 5-minute means
/// for 24 h; in memory, lost when the root restarts. The service record's `cpu_history` and
/// `memory_history` hold the last 100 points of the same. Oakestra-rs only.
#[utoipa::path(get, path = "/api/service/{service_id}/usage", tag = "events",
    security(("bearer" = [])),
    params(("service_id" = String, Path), UsageQuery),
    responses(
        (status = 200, body = ServiceUsage),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
async fn service_usage(
    State(state): State<AppState>,
    caller: Caller,
    Path(service_id): Path<String>,
    Query(q): Query<UsageQuery>,
) -> ApiResult<Json<ServiceUsage>> {
    let service = super::services::owned_service(&state, &caller, &service_id).await?;
    let history = &state.monitor.history;
    let until = q.until.unwrap_or_else(now_secs);
    let since = q.since.unwrap_or_else(|| until.saturating_sub(3600));
    if since > until {
        return Err(ApiError::bad_request(format!(
            "since ({since}) is after until ({until})"
        )));
    }
    let step = q.step.unwrap_or(history.step());
    if step == 0 {
        return Err(ApiError::bad_request("step must be at least 1 second"));
    }
    if u64::from(until - since) / u64::from(step) > 100_000 {
        return Err(ApiError::bad_request(
            "the range holds more than 100000 steps; give a larger step or a shorter range",
        ));
    }
    if let Some(n) = q.instance
        && service.instance(n).is_none()
    {
        return Err(ApiError::not_found(format!(
            "service {service_id} has no instance {n}"
        )));
    }
    let instances = service
        .instance_list
        .iter()
        .filter(|i| q.instance.is_none_or(|n| n == i.instance_number))
        .map(|i| {
            let points = history.read(service.id, i.instance_number, since, until, step);
            let series = |f: fn(&crate::monitor::history::UsagePoint) -> f32| {
                points
                    .iter()
                    .map(|p| MetricSample {
                        value: (f64::from(f(p)) * 100.0).round() / 100.0,
                        timestamp: iso_time(p.t),
                    })
                    .collect()
            };
            InstanceUsage {
                instance_number: i.instance_number,
                cpu_history: series(|p| p.cpu_percent),
                memory_history: series(|p| p.memory_percent),
            }
        })
        .collect();
    Ok(Json(ServiceUsage {
        service_id: service.id.to_string(),
        since,
        until,
        step,
        instances,
    }))
}
