//! `/api/application/*` and `/api/applications/*`.

use std::collections::HashSet;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use oakestra_core::ids::ObjectId;
use oakestra_core::model::{ApplicationRecord, ServiceRecord};
use oakestra_core::naming::{NAME_RULE, is_valid_name};
use oakestra_core::sla::{Sla, Violation, validate_owned};
use oakestra_proto::rest::ApplicationUpdate;
use oakestra_store::new_object_id;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{AdminCaller, Caller, JsonBody};
use super::{AppState, Invalidate, MessageBody};
use crate::error::{ApiError, ApiResult, ErrorBody};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_applications))
        .routes(routes!(
            get_application,
            update_application,
            delete_application
        ))
        .routes(routes!(list_all_applications))
        .routes(routes!(list_user_applications))
}

/// Validates a descriptor: every violation of the SLA rules, plus services of one application
/// that share a name and namespace (they would share a job name).
pub(crate) fn validate_sla(value: Value) -> ApiResult<Sla> {
    let sla = validate_owned(value).map_err(|e| ApiError::invalid_sla(e.into_violations()))?;
    let mut violations = super::unknown_fields::unknown_fields(&sla);
    for (a, app) in sla.applications.iter().enumerate() {
        let mut seen = HashSet::new();
        for (m, ms) in app.microservices.iter().enumerate() {
            if !seen.insert((&ms.microservice_name, &ms.microservice_namespace)) {
                violations.push(Violation {
                    path: format!("/applications/{a}/microservices/{m}/microservice_name"),
                    message: format!(
                        "another service of this application is also named {:?} in namespace {:?}",
                        ms.microservice_name, ms.microservice_namespace
                    ),
                });
            }
        }
    }
    if violations.is_empty() {
        Ok(sla)
    } else {
        Err(ApiError::invalid_sla(violations))
    }
}

/// The application `id` if it exists and belongs to the caller; 404 otherwise, so ids of
/// other users do not leak.
pub(crate) async fn owned_application(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> ApiResult<ApplicationRecord> {
    let unknown = || ApiError::not_found(format!("you have no application with id {id:?}"));
    let oid: ObjectId = id.parse().map_err(|_| unknown())?;
    match state.store.get_application(oid).await? {
        Some(app) if app.user_id == caller.username() => Ok(app),
        _ => Err(unknown()),
    }
}

/// Application `id` if its owner's account was deleted and the caller is an Admin: the one
/// way to remove what a deleted user left (and to free the name for a new user).
async fn orphaned_application(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> ApiResult<Option<ApplicationRecord>> {
    if !caller.is_admin() {
        return Ok(None);
    }
    let Ok(oid) = id.parse::<ObjectId>() else {
        return Ok(None);
    };
    match state.store.get_application(oid).await? {
        Some(app) if state.store.user_by_name(&app.user_id).await?.is_none() => Ok(Some(app)),
        _ => Ok(None),
    }
}

/// Reserves the addresses of every service, all or nothing.
pub(crate) async fn reserve_all(
    state: &AppState,
    services: &mut [ServiceRecord],
    owner: &str,
) -> ApiResult<()> {
    let _ipam = state.ipam.lock().await;
    state.lifecycle.reserve_services(services, owner).await
}

/// Undeploys the instances of services that are gone from the store and frees their
/// addresses (best effort: a failure is logged, the caller's answer is what the user needs
/// to see, and a cluster's next snapshot cleans up what it still runs).
pub(crate) async fn release_all(state: &AppState, services: &[ServiceRecord]) {
    let _ipam = state.ipam.lock().await;
    for s in services {
        if let Err(e) = state.lifecycle.release_service(s).await {
            tracing::warn!(service = %s.id, error = %e, "could not release the service's instances and addresses");
        }
    }
}

/// Create the applications of a deployment descriptor, each with its services.
///
/// The body is an SLA v2.0 descriptor (see the Oakestra docs) with one or more applications.
/// Answers **every** application of the caller (as Oakestra does), as plain JSON with `_id`
/// as `{"$oid": …}`.
///
/// All or nothing: if any application or service cannot be created, nothing is stored and no
/// address stays reserved. Deliberate fixes of Oakestra's behaviour: an invalid descriptor is
/// a 422 whose `violations` list every broken rule with its JSON path (Oakestra: a bare 422);
/// a missing or unknown `sla_version` is a 422 (Oakestra: 500); an `rr_ip` in use is a 409
/// naming the service that holds it (Oakestra: accepted, then failing later).
#[utoipa::path(post, path = "/api/application", tag = "applications",
    security(("bearer" = [])),
    request_body(content = Object, description = "SLA v2.0 deployment descriptor"),
    responses(
        (status = 200, description = "All applications of the caller"),
        (status = 400, description = "Body missing or not JSON", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 409, description = "Name+namespace taken by another application of yours, or rr_ip in use", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 422, description = "Invalid descriptor: every violation with its JSON path", body = ErrorBody),
    ))]
async fn create_applications(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Vec<ApplicationRecord>>> {
    let sla = validate_sla(body)?;
    if sla.applications.is_empty() {
        return Err(ApiError::invalid_sla(vec![Violation {
            path: "/applications".into(),
            message: "the descriptor has no application; add at least one".into(),
        }]));
    }
    let user = caller.username();
    {
        let _serial = state.writes.lock(user).await;
        let _changed = Invalidate(&state.applications);
        create_all(&state, user, &sla).await?;
    }
    Ok(Json(state.store.list_applications_of(user).await?))
}

/// The writes of [`create_applications`], all or nothing.
async fn create_all(state: &AppState, user: &str, sla: &Sla) -> ApiResult<()> {
    let mut seen = HashSet::new();
    for (i, app) in sla.applications.iter().enumerate() {
        let key = (&app.application_name, &app.application_namespace);
        if !seen.insert(key) {
            return Err(ApiError::conflict(format!(
                "applications/{i}: the descriptor names application {:?} in namespace {:?} twice",
                app.application_name, app.application_namespace
            )));
        }
        if let Some(existing) = state
            .store
            .application_by_name(user, &app.application_name, &app.application_namespace)
            .await?
        {
            return Err(ApiError::conflict(format!(
                "you already have application {:?} in namespace {:?} (id {}); delete it or pick another name",
                app.application_name, app.application_namespace, existing.id
            )));
        }
    }
    let mut batch: Vec<(ApplicationRecord, Vec<ServiceRecord>)> = Vec::new();
    let mut services: Vec<ServiceRecord> = Vec::new();
    let mut owner: Vec<usize> = Vec::new();
    for (i, app) in sla.applications.iter().enumerate() {
        let app_id = new_object_id();
        batch.push((ApplicationRecord::new(app_id, user, app), Vec::new()));
        for ms in &app.microservices {
            services.push(ServiceRecord::new(new_object_id(), app_id, app, ms));
            owner.push(i);
        }
    }
    // Every address of the descriptor in one IPAM update, then every record in one commit:
    // after a crash all of the descriptor exists or none of it, and reservations left without
    // their services are released at the next start.
    reserve_all(state, &mut services, user).await?;
    for (s, &i) in services.iter().zip(&owner) {
        batch[i].1.push(s.clone());
    }
    if let Err(e) = state.store.create_applications(&batch).await {
        release_all(state, &services).await;
        return Err(e.into());
    }
    // Services with `replicas` get their instances at once.
    super::replicas::deploy_new(state, &services).await;
    Ok(())
}

/// One application of the caller.
///
/// Oakestra answers `null` here; this root answers the application. Unknown ids, malformed
/// ids and other users' applications are all a 404.
#[utoipa::path(get, path = "/api/application/{application_id}", tag = "applications",
    security(("bearer" = [])),
    params(("application_id" = String, Path, description = "24 hex digits")),
    responses(
        (status = 200, description = "The application `{_id:{$oid}, applicationID, application_name, application_namespace, application_desc, userId, microservices}`"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
async fn get_application(
    State(state): State<AppState>,
    caller: Caller,
    Path(application_id): Path<String>,
) -> ApiResult<Json<ApplicationRecord>> {
    owned_application(&state, &caller, &application_id)
        .await
        .map(Json)
}

/// Rename an application or change its description.
///
/// Differences from Oakestra: only the caller's own applications can be changed (Oakestra
/// lets anyone change any application and makes the caller its owner); names are checked;
/// `microservices` in the body is ignored instead of replacing (or nulling) the list; a name
/// already used by another application of the caller is a 409. The services keep their job
/// names.
#[utoipa::path(put, path = "/api/application/{application_id}", tag = "applications",
    security(("bearer" = [])),
    params(("application_id" = String, Path)),
    request_body = ApplicationUpdate,
    responses(
        (status = 200, body = MessageBody),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, description = "Invalid name", body = ErrorBody),
    ))]
async fn update_application(
    State(state): State<AppState>,
    caller: Caller,
    Path(application_id): Path<String>,
    JsonBody(req): JsonBody<ApplicationUpdate>,
) -> ApiResult<Json<MessageBody>> {
    let app = owned_application(&state, &caller, &application_id).await?;
    let mut violations = Vec::new();
    for (field, value) in [
        ("application_name", &req.application_name),
        ("application_namespace", &req.application_namespace),
    ] {
        if !is_valid_name(value) {
            violations.push(Violation {
                path: format!("/{field}"),
                message: format!("{value:?} is not a valid name: {NAME_RULE}"),
            });
        }
    }
    if !violations.is_empty() {
        return Err(ApiError::invalid_sla(violations));
    }
    let user = caller.username().to_owned();
    let _changed = Invalidate(&state.applications);
    state
        .store
        .update_application(app.id, |a: &mut ApplicationRecord| {
            if a.user_id != user {
                return Err(ApiError::not_found(format!(
                    "you have no application with id {:?}",
                    a.id.to_string()
                )));
            }
            a.application_name.clone_from(&req.application_name);
            a.application_namespace
                .clone_from(&req.application_namespace);
            if let Some(desc) = &req.application_desc {
                a.application_desc.clone_from(desc);
            }
            Ok(())
        })
        .await?;
    Ok(super::message_json("Application is updated"))
}

/// Delete an application: its instances are undeployed, its services deleted and their
/// addresses released.
///
/// Unknown or other users' ids are a 404 (Oakestra: 501); an Admin may delete an application
/// whose owner's account was deleted.
#[utoipa::path(delete, path = "/api/application/{application_id}", tag = "applications",
    security(("bearer" = [])),
    params(("application_id" = String, Path)),
    responses(
        (status = 200, body = MessageBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
async fn delete_application(
    State(state): State<AppState>,
    caller: Caller,
    Path(application_id): Path<String>,
) -> ApiResult<Json<MessageBody>> {
    let app = match owned_application(&state, &caller, &application_id).await {
        Ok(app) => app,
        Err(e) => orphaned_application(&state, &caller, &application_id)
            .await?
            .ok_or(e)?,
    };
    let _serial = state.writes.lock(caller.username()).await;
    let _changed = Invalidate(&state.applications);
    let (_, deleted) = state.store.delete_application(app.id).await?;
    release_all(&state, &deleted).await;
    Ok(super::message_json("Application Deleted"))
}

/// Every application of every user (Admin).
#[utoipa::path(get, path = "/api/applications", tag = "applications",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "List of applications"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ))]
async fn list_all_applications(
    State(state): State<AppState>,
    _admin: AdminCaller,
) -> ApiResult<Response> {
    // The dashboard and the CLIs poll this; the answer is cached until an application changes.
    let (generation, cached) = state.applications.get();
    let bytes = match cached {
        Some(bytes) => bytes,
        None => {
            let apps = state.store.list_applications().await?;
            let bytes = Bytes::from(serde_json::to_vec(&apps).map_err(|e| {
                ApiError::internal(format!("cannot serialise the applications: {e}"))
            })?);
            state.applications.put(generation, bytes.clone());
            bytes
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

/// The applications of a user, by the user's id (`_id.$oid` of GET /api/user/{name}): your
/// own, or any user's for an Admin.
///
/// Another user's id is a 403 (Oakestra: 401); an unknown id a 404.
#[utoipa::path(get, path = "/api/applications/{user_id}", tag = "applications",
    security(("bearer" = [])),
    params(("user_id" = String, Path, description = "The user's object id (24 hex digits)")),
    responses(
        (status = 200, description = "List of applications"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
async fn list_user_applications(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Vec<ApplicationRecord>>> {
    let unknown = || ApiError::not_found(format!("no user with id {user_id:?}"));
    let id: ObjectId = user_id.parse().map_err(|_| unknown())?;
    let user = state.store.get_user(id).await?;
    match user {
        Some(u) if u.name == caller.username() || caller.is_admin() => {
            Ok(Json(state.store.list_applications_of(&u.name).await?))
        }
        Some(_) => Err(ApiError::forbidden(format!(
            "you are {:?} and can list only your own applications",
            caller.username()
        ))),
        None if caller.is_admin() => Err(unknown()),
        None => Err(ApiError::forbidden(format!(
            "you are {:?} and can list only your own applications",
            caller.username()
        ))),
    }
}
