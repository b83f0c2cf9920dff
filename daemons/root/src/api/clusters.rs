//! `/api/clusters` and `/api/clusters/active` (no login needed, as in Oakestra).

use axum::Json;
use axum::extract::{Path, State};
use oakestra_core::ids::ClusterId;
use oakestra_store::ClusterRecord;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_clusters))
        .routes(routes!(list_active_clusters))
        .routes(routes!(list_cluster_workers))
}

/// One worker of a cluster, as its cluster reports it on demand (the contract crate's
/// `ClusterWorker`).
pub use oakestra_proto::rest::ClusterWorker as WorkerView;

/// A cluster as Oakestra's API shows it: the resource fields under their Oakestra names, the
/// compatibility aliases the CLIs and the dashboard read, and a string `_id`.
pub fn cluster_view(c: &ClusterRecord) -> Value {
    let r = &c.resources;
    let t = &r.totals;
    let memory_percent = if t.memory_total_mb == 0 {
        0.0
    } else {
        t.memory_total_mb.saturating_sub(t.memory_free_mb) as f64 * 100.0 / t.memory_total_mb as f64
    };
    let name = if c.name.is_empty() {
        "Unknown Cluster"
    } else {
        &c.name
    };
    let location = if c.location.is_empty() {
        "Unknown Location"
    } else {
        &c.location
    };
    // Oakestra's `cpu_percent` is how busy the cluster is; what is reserved is separate.
    let usage = c
        .extra
        .get(crate::cluster_link::EXTRA_CPU_USAGE)
        .and_then(Value::as_f64)
        .unwrap_or(t.cpu_percent);
    let mut v = json!({
        "_id": c.id.as_str(),
        "candidate_name": c.name,
        "cluster_name": name,
        "candidate_location": c.location,
        "cluster_location": location,
        "ip": c.ip,
        "port": c.port,
        "active": c.active,
        "active_nodes": t.workers,
        "vcpus": t.cpu_cores,
        "total_cpu_cores": t.cpu_cores,
        "cpu_percent": usage,
        "aggregated_cpu_percent": usage,
        "cpu_allocated_percent": t.cpu_percent,
        "memory": t.memory_total_mb,
        "memory_in_mb": t.memory_total_mb,
        "memory_free_in_mb": t.memory_free_mb,
        "memory_percent": memory_percent,
        "vgpus": t.gpus,
        "total_gpu_cores": t.gpus,
        "gpu_percent": 0,
        "gpu_temp": 0,
        "vram": 0,
        "vram_percent": 0,
        "max_worker_cpu_cores": t.max_worker_cpu_cores,
        "max_worker_memory_free_in_mb": t.max_worker_memory_free_mb,
        "virtualization": r.virtualizations,
        "architectures": r.archs,
        "csi_drivers": r.csi_drivers,
        "supported_addons": r.supported_addons,
        "gpu_drivers": r.gpu_drivers,
        "last_modified_timestamp": c.last_seen,
        "registered_at": c.registered_at,
    });
    if let Value::Object(map) = &mut v {
        for (k, val) in &c.extra {
            map.entry(k.clone()).or_insert_with(|| val.clone());
        }
    }
    v
}

fn views<'a>(clusters: impl Iterator<Item = &'a ClusterRecord>) -> Vec<Value> {
    clusters.map(cluster_view).collect()
}

/// Every cluster that ever registered, active or not.
///
/// Each entry has Oakestra's fields (`_id` as a plain string, `candidate_name`, `vcpus`,
/// `memory`, `cpu_percent`, …) and the aliases `cluster_name`, `cluster_location`,
/// `aggregated_cpu_percent`, `memory_in_mb`, `total_cpu_cores`, `total_gpu_cores`, plus
/// `active`. Plain JSON (Oakestra: text/html).
#[utoipa::path(get, path = "/api/clusters", tag = "clusters",
    responses((status = 200, description = "List of clusters"), (status = 503, body = ErrorBody)))]
async fn list_clusters(State(state): State<AppState>) -> ApiResult<Json<Vec<Value>>> {
    let clusters = state.store.list_clusters().await?;
    Ok(Json(views(clusters.iter())))
}

/// The clusters whose link to the root is up (heard from within the cluster timeout,
/// default 30 s).
#[utoipa::path(get, path = "/api/clusters/active", tag = "clusters",
    responses((status = 200, description = "List of clusters"), (status = 503, body = ErrorBody)))]
async fn list_active_clusters(State(state): State<AppState>) -> ApiResult<Json<Vec<Value>>> {
    let clusters = state.store.list_clusters().await?;
    Ok(Json(views(clusters.iter().filter(|c| c.active))))
}

/// The workers of one cluster, active or not, with their resources and how many instances
/// each holds. The root asks the cluster on demand (it keeps only aggregates), so the cluster
/// must be connected: 503 when it is not, 504 when it does not answer within 5 s. Needs a
/// login (any user), unlike the cluster list.
#[utoipa::path(get, path = "/api/clusters/{cluster_id}/workers", tag = "clusters",
    params(("cluster_id" = String, Path, description = "The cluster's `_id`")),
    responses((status = 200, body = [WorkerView], description = "The cluster's workers"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_cluster_workers(
    State(state): State<AppState>,
    _caller: Caller,
    Path(cluster_id): Path<String>,
) -> ApiResult<Json<Vec<WorkerView>>> {
    let id = ClusterId::from(cluster_id.as_str());
    let clusters = state.store.list_clusters().await?;
    if !clusters.iter().any(|c| c.id == id) {
        return Err(ApiError::not_found(format!(
            "no cluster with id {cluster_id:?}: GET /api/clusters lists them"
        )));
    }
    Ok(Json(
        state.lifecycle.cluster_workers(&id, WORKERS_WAIT).await?,
    ))
}

/// How long the workers endpoint waits for the cluster's answer.
const WORKERS_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
