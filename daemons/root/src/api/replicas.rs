//! Desired replicas (issue 18): a service whose SLA sets `replicas` is kept at that many
//! instances by the root, like a controller. The count is set by the descriptor,
//! `PUT /api/service/<id>/replicas`, and the per-instance POST/DELETE (which adjust it); a
//! reconcile after each change and a periodic one ([`run`]) deploy what is missing (as one
//! batch) and undeploy the highest numbered instances beyond it.
//!
//! An instance counts while it is neither `COMPLETED` nor `UNDEPLOYED`: a `FAILED` or `DEAD`
//! one is being placed again by its cluster (or the root, when its cluster is lost) and is
//! not doubled; one that completed, or was removed behind the root's back, is replaced.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use oakestra_core::ids::ObjectId;
use oakestra_core::model::ServiceRecord;
use oakestra_core::sla::MAX_REPLICAS;
use oakestra_proto::rest::{ScaleAnswer, ScaleRequest};
use oakestra_store::Store;
use serde_json::Value;
use tokio::sync::watch;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{Caller, JsonBody};
use super::lifecycle::ServiceLifecycle;
use crate::error::{ApiError, ApiResult, ErrorBody};

/// How often the root checks every service with `replicas` (besides after each change).
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(5);

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(scale_service))
}

/// The numbers of the instances that count towards `replicas`, ascending.
pub fn live_instances(service: &ServiceRecord) -> Vec<u32> {
    let mut live: Vec<u32> = service
        .instance_list
        .iter()
        .filter(|i| !crate::instances::is_finished(i.status))
        .map(|i| i.instance_number)
        .collect();
    live.sort_unstable();
    live
}

/// What one reconcile did.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// Instances created.
    pub deployed: Vec<u32>,
    /// Instances undeployed.
    pub removed: Vec<u32>,
    /// The instances that count after it.
    pub instances: Vec<u32>,
}

/// Brings service `id` to its desired `replicas` (nothing when it has none). The caller holds
/// [`AppState::replicas`], so two reconciles never both deploy the same missing instances.
pub async fn reconcile(
    store: &dyn Store,
    lifecycle: &dyn ServiceLifecycle,
    id: ObjectId,
) -> Result<Reconciled, ApiError> {
    let Some(service) = store.get_service(id).await? else {
        return Ok(Reconciled::default());
    };
    let mut live = live_instances(&service);
    let Some(desired) = service.microservice.replicas else {
        return Ok(Reconciled {
            instances: live,
            ..Reconciled::default()
        });
    };
    let mut done = Reconciled::default();
    let have = live.len() as u32;
    if have < desired {
        let created = lifecycle.deploy_instances(id, desired - have).await?;
        done.deployed = created.iter().map(|i| i.instance_number).collect();
        live.extend(&done.deployed);
    } else {
        while live.len() as u32 > desired {
            let Some(n) = live.pop() else { break };
            match lifecycle.undeploy_instance(id, Some(n)).await {
                Ok(()) => done.removed.push(n),
                // Gone meanwhile: as good as removed.
                Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => {}
                Err(e) => return Err(e),
            }
        }
    }
    live.sort_unstable();
    done.instances = live;
    Ok(done)
}

/// Records `replicas` in the SLA of service `id`.
pub async fn set_desired(store: &dyn Store, id: ObjectId, replicas: u32) -> Result<(), ApiError> {
    store
        .update_service(id, |s| {
            s.microservice.replicas = Some(replicas);
            Ok::<_, oakestra_store::StoreError>(())
        })
        .await?;
    Ok(())
}

/// After the per-instance API changed service `id` by `delta` instances: its desired count
/// follows, when it has one.
pub async fn adjust_desired(state: &AppState, id: ObjectId, delta: i64) -> Result<(), ApiError> {
    state
        .store
        .update_service(id, |s| {
            if let Some(n) = s.microservice.replicas {
                let next = (i64::from(n) + delta).clamp(0, i64::from(MAX_REPLICAS));
                s.microservice.replicas = Some(next as u32);
            }
            Ok::<_, oakestra_store::StoreError>(())
        })
        .await?;
    Ok(())
}

/// Remembers that service `id` follows `replicas` (the periodic reconcile looks at it).
fn remember(state: &AppState, id: ObjectId) {
    state
        .replicated
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id);
}

/// Deploys the instances of newly created services that ask for `replicas`. A failure is
/// logged, not returned: the services exist, and the periodic reconcile tries again.
pub async fn deploy_new(state: &AppState, services: &[ServiceRecord]) {
    for s in services {
        if s.microservice.replicas.is_none() {
            continue;
        }
        remember(state, s.id);
        let _one = state.replicas.lock().await;
        if let Err(e) = reconcile(state.store.as_ref(), state.lifecycle.as_ref(), s.id).await {
            tracing::warn!(service = %s.id, "cannot deploy the replicas of a new service now: {e}");
        }
    }
}

/// Reconciles every service with `replicas` every [`RECONCILE_INTERVAL`] until `stop`. The
/// store is listed once at start; after that only the services known to have `replicas` are
/// read (a deleted one is forgotten).
pub async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    match state.store.list_all_services().await {
        Ok(all) => {
            for s in all.iter().filter(|s| s.microservice.replicas.is_some()) {
                remember(&state, s.id);
            }
        }
        Err(e) => tracing::warn!("replicas: cannot list the services: {e}"),
    }
    let mut tick = tokio::time::interval(RECONCILE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let ids: Vec<ObjectId> = state
            .replicated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        for id in ids {
            let s = match state.store.get_service(id).await {
                Ok(Some(s)) => s,
                Ok(None) => {
                    state
                        .replicated
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&id);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(service = %id, "replicas: cannot read the service: {e}");
                    continue;
                }
            };
            let Some(desired) = s.microservice.replicas else {
                continue;
            };
            if live_instances(&s).len() as u32 == desired {
                continue;
            }
            let _one = state.replicas.lock().await;
            match reconcile(state.store.as_ref(), state.lifecycle.as_ref(), id).await {
                Ok(r) if !r.deployed.is_empty() || !r.removed.is_empty() => tracing::info!(
                    service = %id, desired, deployed = ?r.deployed, removed = ?r.removed,
                    "replicas reconciled"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(service = %id, "replicas: {e}"),
            }
        }
    }
}

/// Set a service's desired number of instances (Oakestra-rs only).
///
/// Records `replicas` in the service's SLA and brings the service to it at once: missing
/// instances are deployed as one batch (as `POST …/instance?count=N`), surplus ones undeployed,
/// the highest numbered first. From then on the root keeps that many instances: one that
/// completes or is removed is replaced (checked every 5 s), and the per-instance POST and
/// DELETE adjust the count. An instance counts while it is neither `COMPLETED` nor
/// `UNDEPLOYED`. `replicas` must be a whole number from 0 to 10,000 (400 otherwise); 404 for an
/// unknown or other user's service.
#[utoipa::path(put, path = "/api/service/{service_id}/replicas", tag = "services",
    security(("bearer" = [])),
    params(("service_id" = String, Path)),
    request_body(content = ScaleRequest),
    responses(
        (status = 200, body = ScaleAnswer), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, description = "The address pool cannot take the new instances", body = ErrorBody),
    ))]
async fn scale_service(
    State(state): State<AppState>,
    caller: Caller,
    Path(service_id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<ScaleAnswer>> {
    let replicas = match body.get("replicas") {
        // JSON has one number type: 3.0 is the whole number 3 (as its JSON Schema says).
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= f64::from(MAX_REPLICAS))
                    .map(|f| f as u64)
            })
            .filter(|n| *n <= u64::from(MAX_REPLICAS)),
        _ => None,
    };
    let Some(replicas) = replicas.map(|n| n as u32) else {
        return Err(ApiError::bad_request(format!(
            "/replicas: give the desired number of instances as a whole number from 0 to \
             {MAX_REPLICAS}, e.g. {{\"replicas\": 3}}; found {}",
            body.get("replicas")
                .map_or_else(|| "no replicas".to_owned(), Value::to_string)
        )));
    };
    let service = super::services::owned_service(&state, &caller, &service_id).await?;
    let _serial = state.writes.lock(caller.username()).await;
    let _one = state.replicas.lock().await;
    set_desired(state.store.as_ref(), service.id, replicas).await?;
    remember(&state, service.id);
    let done = reconcile(state.store.as_ref(), state.lifecycle.as_ref(), service.id).await?;
    Ok(Json(ScaleAnswer {
        replicas,
        instances: done.instances,
        deployed: done.deployed,
        removed: done.removed,
    }))
}

/// Starts [`run`] for `state` (the root does, beside its servers).
pub fn spawn(state: AppState, stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(state, stop))
}
