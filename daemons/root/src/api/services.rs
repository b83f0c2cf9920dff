//! `/api/service/*` and `/api/services/*`, including instance deploy and undeploy.

use std::collections::HashSet;

use axum::Json;
use axum::extract::{Path, Query, State};
use oakestra_core::ids::ObjectId;
use oakestra_core::model::ServiceRecord;
use oakestra_core::sla::Violation;
use oakestra_proto::mqtt::last_lines;
use oakestra_proto::rest::{DeployAnswer as DeployResponse, ServiceCreation, ServiceOutcome};
use oakestra_store::new_object_id;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::applications::{owned_application, release_all, reserve_all, validate_sla};
use super::extract::{AdminCaller, Caller, JsonBody};
use super::{AppState, Invalidate, MessageBody};
use crate::error::{ApiError, ApiResult, ErrorBody};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_services))
        .routes(routes!(get_service, update_service, delete_service))
        .routes(routes!(list_all_services))
        .routes(routes!(list_application_services))
        .routes(routes!(deploy_instance))
        .routes(routes!(undeploy_instance))
        .routes(routes!(instance_logs))
}

/// The service `id` if it exists and its application belongs to the caller; 404 otherwise.
pub(super) async fn owned_service(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> ApiResult<ServiceRecord> {
    let unknown = || ApiError::not_found(format!("you have no service with id {id:?}"));
    let oid: ObjectId = id.parse().map_err(|_| unknown())?;
    let service = state.store.get_service(oid).await?.ok_or_else(unknown)?;
    match state.store.get_application(service.application_id).await? {
        Some(app) if app.user_id == caller.username() => Ok(service),
        _ => Err(unknown()),
    }
}

/// Add services to existing applications.
///
/// The body is an SLA descriptor whose applications carry the `applicationID` of existing
/// applications of the caller. All or nothing. Differences from Oakestra: every application
/// of the descriptor is used (Oakestra: only the first); errors keep their real status — 422
/// with every violation for an invalid descriptor, 404 for an unknown application, 409 for a
/// taken name or rr_ip (Oakestra turns every error into a bare 400); `failed_services` is
/// always empty.
#[utoipa::path(post, path = "/api/service", tag = "services",
    security(("bearer" = [])),
    request_body(content = Object, description = "SLA v2.0 descriptor with applicationID set"),
    responses(
        (status = 200, body = ServiceCreation),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, description = "Unknown application", body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
async fn create_services(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<ServiceCreation>> {
    let sla = validate_sla(body)?;
    let mut missing = Vec::new();
    for (i, app) in sla.applications.iter().enumerate() {
        if app.application_id.as_deref().unwrap_or("").is_empty() {
            missing.push(Violation {
                path: format!("/applications/{i}/applicationID"),
                message: "the id of the existing application to add the services to is needed"
                    .into(),
            });
        }
    }
    if sla.applications.is_empty() {
        missing.push(Violation {
            path: "/applications".into(),
            message: "the descriptor has no application".into(),
        });
    }
    if !missing.is_empty() {
        return Err(ApiError::invalid_sla(missing));
    }
    let _serial = state.writes.lock(caller.username()).await;
    let _changed = Invalidate(&state.applications);
    let mut planned: Vec<ServiceRecord> = Vec::new();
    for app in &sla.applications {
        let id = app.application_id.as_deref().unwrap_or("");
        let record = owned_application(&state, &caller, id).await?;
        let mut taken: HashSet<(String, String)> = state
            .store
            .list_services(record.id)
            .await?
            .into_iter()
            .map(|s| (s.service_name, s.service_ns))
            .collect();
        for ms in &app.microservices {
            if !taken.insert((
                ms.microservice_name.clone(),
                ms.microservice_namespace.clone(),
            )) {
                return Err(ApiError::conflict(format!(
                    "application {id} already has a service {:?} in namespace {:?}",
                    ms.microservice_name, ms.microservice_namespace
                )));
            }
            // Job names use the stored application's names, not the descriptor's.
            let mut named = app.clone();
            named.application_name.clone_from(&record.application_name);
            named
                .application_namespace
                .clone_from(&record.application_namespace);
            planned.push(ServiceRecord::new(new_object_id(), record.id, &named, ms));
        }
    }
    reserve_all(&state, &mut planned, caller.username()).await?;
    let mut added: Vec<ObjectId> = Vec::new();
    for s in &planned {
        if let Err(e) = state.store.add_service(s).await {
            for id in &added {
                if let Err(del) = state.store.delete_service(*id).await {
                    tracing::error!(service = %id, error = %del, "rollback of a partly added descriptor failed");
                }
            }
            release_all(&state, &planned).await;
            return Err(e.into());
        }
        added.push(s.id);
    }
    super::replicas::deploy_new(&state, &planned).await;
    let deployed: Vec<ServiceOutcome> = planned
        .iter()
        .map(|s| ServiceOutcome {
            service_name: s.service_name.clone(),
            status: 200,
            service_id: Some(s.id.to_string()),
        })
        .collect();
    Ok(Json(ServiceCreation {
        job_id: deployed
            .last()
            .and_then(|d| d.service_id.clone())
            .unwrap_or_default(),
        deployed_services: deployed,
        failed_services: Vec::new(),
        extra: serde_json::Map::new(),
    }))
}

/// One service (job) of the caller, with its instances.
///
/// Unknown, malformed and other users' ids are a 404. Plain JSON (Oakestra: double-encoded).
#[utoipa::path(get, path = "/api/service/{service_id}", tag = "services",
    security(("bearer" = [])),
    params(("service_id" = String, Path)),
    responses(
        (status = 200, description = "The service: the SLA microservice plus `_id:{$oid}`, applicationID, app_name, app_ns, service_name, service_ns, job_name, image, RR_ip, RR_ip_v6, Closest_ip, Closest_ip_v6, status, status_detail, ready_instances (how many instances are RUNNING and pass their readiness probe), next_instance_progressive_number, instance_list (each instance with its status, restart_count and ready: in its service IPs' balancing)"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
async fn get_service(
    State(state): State<AppState>,
    caller: Caller,
    Path(service_id): Path<String>,
) -> ApiResult<Json<ServiceRecord>> {
    let mut service = owned_service(&state, &caller, &service_id).await?;
    state
        .monitor
        .history
        .fill(&mut service, crate::monitor::history::now_secs());
    Ok(Json(service))
}

/// Updating a service is not supported (as in Oakestra): delete it and add it again. 501
/// for the caller's services, 404 for others.
#[utoipa::path(put, path = "/api/service/{service_id}", tag = "services",
    security(("bearer" = [])),
    params(("service_id" = String, Path)),
    responses((status = 404, body = ErrorBody), (status = 501, body = ErrorBody)))]
async fn update_service(
    State(state): State<AppState>,
    caller: Caller,
    Path(service_id): Path<String>,
) -> ApiResult<Json<MessageBody>> {
    owned_service(&state, &caller, &service_id).await?;
    Err(ApiError::not_implemented(
        "services cannot be updated in place; delete the service (DELETE /api/service/<id>) and add it again (POST /api/service)",
    ))
}

/// Delete a service: its instances are undeployed and its addresses released.
///
/// Unknown or other users' ids are a 404 (Oakestra: 500).
#[utoipa::path(delete, path = "/api/service/{service_id}", tag = "services",
    security(("bearer" = [])),
    params(("service_id" = String, Path)),
    responses((status = 200, body = MessageBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_service(
    State(state): State<AppState>,
    caller: Caller,
    Path(service_id): Path<String>,
) -> ApiResult<Json<MessageBody>> {
    let service = owned_service(&state, &caller, &service_id).await?;
    let _serial = state.writes.lock(caller.username()).await;
    let _changed = Invalidate(&state.applications);
    let deleted = state.store.delete_service(service.id).await?;
    release_all(&state, std::slice::from_ref(&deleted)).await;
    Ok(super::message_json("Job deleted"))
}

/// Every service of every user (Admin).
#[utoipa::path(get, path = "/api/services", tag = "services",
    security(("bearer" = [])),
    responses((status = 200, description = "List of services"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_all_services(
    State(state): State<AppState>,
    _admin: AdminCaller,
) -> ApiResult<Json<Vec<ServiceRecord>>> {
    Ok(Json(with_history(
        &state,
        state.store.list_all_services().await?,
    )))
}

/// The services of one of the caller's applications.
#[utoipa::path(get, path = "/api/services/{application_id}", tag = "services",
    security(("bearer" = [])),
    params(("application_id" = String, Path)),
    responses((status = 200, description = "List of services"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_application_services(
    State(state): State<AppState>,
    caller: Caller,
    Path(application_id): Path<String>,
) -> ApiResult<Json<Vec<ServiceRecord>>> {
    let app = owned_application(&state, &caller, &application_id).await?;
    Ok(Json(with_history(
        &state,
        state.store.list_services(app.id).await?,
    )))
}

/// `services` with their instances' `cpu_history` / `memory_history` filled in.
fn with_history(state: &AppState, mut services: Vec<ServiceRecord>) -> Vec<ServiceRecord> {
    let now = crate::monitor::history::now_secs();
    for s in &mut services {
        state.monitor.history.fill(s, now);
    }
    services
}

/// Query of the deploy endpoint.
#[derive(Debug, serde::Deserialize)]
struct DeployQuery {
    count: Option<String>,
}

/// Deploy one more instance of a service, or `count` more.
///
/// Root scheduling runs before the answer, so the answer carries the new instance with its
/// status. Differences from Oakestra: an unknown or other user's service is a 404 (Oakestra:
/// 200 and nothing happens).
///
/// Oakestra-rs only: `?count=N` (1 to 10,000) creates N instances as one batch — their records
/// and addresses in one store update, placed with one candidate list, the placements recorded
/// in one more update and the clusters' deploy commands sent without waiting for each other —
/// and answers with every created instance in `instances` (number order; `instance` is the
/// first). Creation is all or nothing: when the address pool cannot take all N, none is
/// created (503). A `count` that is not a number from 1 to 10,000 is a 400. Without `count`
/// the request and answer are Oakestra's. A service with `replicas` (Oakestra-rs only) has its
/// desired count raised by the instances created.
#[utoipa::path(post, path = "/api/service/{service_id}/instance", tag = "services",
    security(("bearer" = [])),
    params(
        ("service_id" = String, Path),
        ("count" = Option<u32>, Query, minimum = 1, maximum = 10000, description = "Instances to create in one batch, 1 to 10000 (Oakestra-rs only; default: one, answered as Oakestra does)"),
    ),
    responses(
        (status = 200, body = DeployResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
async fn deploy_instance(
    State(state): State<AppState>,
    caller: Caller,
    Path(service_id): Path<String>,
    Query(query): Query<DeployQuery>,
) -> ApiResult<Json<DeployResponse>> {
    let max = oakestra_proto::rest::MAX_DEPLOY_COUNT;
    let count = match query.count.as_deref().map(str::trim) {
        None => None,
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => Some(n),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "count {text:?} is not valid: give a number of instances from 1 to {max} \
                     (more than {max} take several requests)"
                )));
            }
        },
    };
    let service = owned_service(&state, &caller, &service_id).await?;
    // With `replicas`, the desired count follows (under the replicas lock, so no reconcile
    // sees the new instances before the count).
    let _one = state.replicas.lock().await;
    let Some(count) = count else {
        let instance = state.lifecycle.deploy_instance(service.id).await?;
        super::replicas::adjust_desired(&state, service.id, 1).await?;
        return Ok(Json(DeployResponse {
            message: "ok".into(),
            instance: Some(instance),
            instances: None,
        }));
    };
    let instances = state.lifecycle.deploy_instances(service.id, count).await?;
    super::replicas::adjust_desired(&state, service.id, i64::from(count)).await?;
    Ok(Json(DeployResponse {
        message: "ok".into(),
        instance: instances.first().cloned(),
        instances: Some(instances),
    }))
}

/// Undeploy instance `instance_number` of a service, or every instance with `-1`.
///
/// Differences from Oakestra: an unknown or other user's service, or an instance number the
/// service does not have, is a 404 (Oakestra: 200); a non-integer number is a 400 (Oakestra:
/// 500); with `-1` every instance is undeployed (Oakestra skips every second one). A service
/// with `replicas` (Oakestra-rs only) has its desired count lowered by the instances removed
/// (to 0 with `-1`), so the root does not deploy them again.
#[utoipa::path(delete, path = "/api/service/{service_id}/instance/{instance_number}", tag = "services",
    security(("bearer" = [])),
    params(("service_id" = String, Path), ("instance_number" = i64, Path, minimum = -1, maximum = 4294967295_i64, description = "Instance number, or -1 for all")),
    responses(
        (status = 200, body = MessageBody), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
async fn undeploy_instance(
    State(state): State<AppState>,
    caller: Caller,
    Path((service_id, instance_number)): Path<(String, String)>,
) -> ApiResult<Json<MessageBody>> {
    let which = match instance_number.parse::<i64>() {
        Ok(-1) => None,
        Ok(n) if (0..=i64::from(u32::MAX)).contains(&n) => Some(n as u32),
        _ => {
            return Err(ApiError::bad_request(format!(
                "instance number {instance_number:?} is not valid: give a number ≥ 0, or -1 for every instance"
            )));
        }
    };
    let service = owned_service(&state, &caller, &service_id).await?;
    if let Some(n) = which
        && service.instance(n).is_none()
    {
        return Err(ApiError::not_found(format!(
            "service {service_id} has no instance {n}"
        )));
    }
    let _one = state.replicas.lock().await;
    state.lifecycle.undeploy_instance(service.id, which).await?;
    // With `replicas`, the desired count follows: one less, or none left.
    let counted = match which {
        Some(n) => i64::from(
            service
                .instance(n)
                .is_some_and(|i| !crate::instances::is_finished(i.status)),
        ),
        None => super::replicas::live_instances(&service).len() as i64,
    };
    super::replicas::adjust_desired(&state, service.id, -counted).await?;
    Ok(super::message_json("ok"))
}

/// Lines returned by the log endpoint when `tail` is not given.
pub const DEFAULT_LOG_TAIL_LINES: usize = 100;
/// Most lines the log endpoint returns.
pub const MAX_LOG_TAIL_LINES: usize = 10_000;

/// Query of the log endpoint.
#[derive(Debug, serde::Deserialize)]
struct LogsQuery {
    tail: Option<String>,
}

/// Answer of the log endpoint.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct InstanceLogs {
    /// The service.
    pub service_id: String,
    /// The instance.
    pub instance_number: u32,
    /// Its status (`RUNNING`, `DEAD`, …).
    pub status: Option<String>,
    /// Worker it runs (or ran) on.
    pub worker_id: Option<String>,
    /// Seconds since the epoch of the instance's last report.
    pub updated: Option<f64>,
    /// The last `tail` lines of its output (stdout and stderr), oldest first, each ending
    /// with a newline.
    pub logs: String,
    /// Where `logs` comes from: `"worker"` (read from the instance's log file just now) or
    /// `"report"` (the last 4 KiB the worker sent with its latest usage report, when the
    /// worker could not be asked or did not answer within 5 s).
    #[serde(default)]
    pub source: String,
    /// Why the answer is from the report instead of the worker; absent for `"worker"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_detail: Option<String>,
}

/// How long the log endpoint waits for the instance's worker before it answers from the
/// last report.
pub const WORKER_LOGS_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The last lines of an instance's output (Oakestra-rs only; Oakestra has no log endpoint).
///
/// The worker captures each instance's stdout and stderr in a rotated log file. The root asks
/// the instance's worker (through its cluster) for the last `tail` lines, up to 512 KiB, and
/// answers with them (`"source": "worker"`). When the worker cannot be asked or does not
/// answer within 5 s (it is gone, the instance ended and was removed), the answer is the
/// last 4 KiB the worker shipped with its usage reports (`"source": "report"`, with the
/// reason in `source_detail`), which stays available after the instance ended (`DEAD`,
/// `COMPLETED`, `FAILED`).
/// 404 for an unknown or other user's service or instance; 503 when no log can be had: the
/// instance is not placed on a worker (yet, or any more), or its cluster is not connected.
#[utoipa::path(get, path = "/api/service/{service_id}/instance/{instance_number}/logs", tag = "services",
    security(("bearer" = [])),
    params(
        ("service_id" = String, Path),
        ("instance_number" = u32, Path, minimum = 0, maximum = 4294967295_u32),
        ("tail" = Option<u32>, Query, minimum = 1, maximum = 10000, description = "Number of lines, 1–10000 [default: 100]"),
    ),
    responses(
        (status = 200, body = InstanceLogs), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, description = "No log available now (not placed yet, cluster disconnected)", body = ErrorBody),
    ))]
async fn instance_logs(
    State(state): State<AppState>,
    caller: Caller,
    Path((service_id, instance_number)): Path<(String, String)>,
    Query(query): Query<LogsQuery>,
) -> ApiResult<Json<InstanceLogs>> {
    let tail = match query.tail.as_deref() {
        None => DEFAULT_LOG_TAIL_LINES,
        Some(t) => match t.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_LOG_TAIL_LINES).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "tail {t:?} is not valid: give a number of lines from 1 to {MAX_LOG_TAIL_LINES}"
                )));
            }
        },
    };
    let service = owned_service(&state, &caller, &service_id).await?;
    let n: u32 = instance_number.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "instance number {instance_number:?} is not valid: give a number ≥ 0"
        ))
    })?;
    let inst = service
        .instance(n)
        .ok_or_else(|| ApiError::not_found(format!("service {service_id} has no instance {n}")))?;
    let status = inst.status.as_ref().map(ToString::to_string);
    let unavailable = |why: String| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("no log of instance {n} of service {service_id}: {why}"),
        )
    };
    match inst.cluster_id.as_ref() {
        Some(cluster) => {
            let connected = state
                .store
                .get_cluster(cluster)
                .await?
                .is_some_and(|c| c.active);
            if !connected {
                return Err(unavailable(format!(
                    "its cluster {cluster} is not connected to the root; retry once it is back \
                     (or the instance moved)"
                )));
            }
            if inst.logs.is_none() && inst.worker_id.is_none() {
                return Err(unavailable(format!(
                    "cluster {cluster} has not started it on a worker yet ({}); retry once it runs",
                    status.as_deref().unwrap_or("no status")
                )));
            }
        }
        None => {
            return Err(unavailable(format!(
                "it is not placed on a cluster ({}); retry once it runs",
                status.as_deref().unwrap_or("no status")
            )));
        }
    }
    let from_worker = match (inst.cluster_id.as_ref(), inst.worker_id.as_ref()) {
        (Some(cluster), Some(_)) => {
            state
                .lifecycle
                .worker_logs(
                    cluster,
                    &service.id,
                    n,
                    u32::try_from(tail).unwrap_or(u32::MAX),
                    WORKER_LOGS_WAIT,
                )
                .await
        }
        _ => Err("the instance is not on a worker".to_owned()),
    };
    let (logs, source, source_detail) = match from_worker {
        Ok(text) => (last_lines(&text, tail), "worker", None),
        Err(why) => (
            last_lines(inst.logs.as_deref().unwrap_or(""), tail),
            "report",
            Some(why),
        ),
    };
    Ok(Json(InstanceLogs {
        service_id: service.id.to_string(),
        instance_number: n,
        status,
        worker_id: inst.worker_id.as_ref().map(ToString::to_string),
        updated: inst.last_modified_timestamp,
        logs,
        source: source.to_owned(),
        source_detail,
    }))
}
