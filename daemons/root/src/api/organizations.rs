//! `/api/organization/*`.

use axum::Json;
use axum::extract::{Path, State};
use oakestra_core::ids::ObjectId;
use oakestra_proto::rest::{Member as MemberDoc, OrganizationSpec as OrganizationRequest};
use oakestra_store::{Member, OrganizationRecord, new_object_id};
use serde_json::Map;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{DEFAULT_ORGANIZATION, check_roles};
use super::extract::{AdminCaller, JsonBody};
use super::{AppState, MessageBody};
use crate::error::{ApiError, ApiResult, ErrorBody};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_organizations, create_organization))
        .routes(routes!(update_organization, delete_organization))
}

async fn members(state: &AppState, docs: Vec<MemberDoc>) -> ApiResult<Vec<Member>> {
    let mut out = Vec::with_capacity(docs.len());
    for (i, m) in docs.into_iter().enumerate() {
        check_roles(&m.roles)?;
        let unknown = || {
            ApiError::not_found(format!(
                "member[{i}].user_id {:?} is not the id of a user",
                m.user_id
            ))
        };
        let id: ObjectId = m.user_id.parse().map_err(|_| unknown())?;
        if state.store.get_user(id).await?.is_none() {
            return Err(unknown());
        }
        out.push(Member {
            user_id: id.to_string(),
            roles: m.roles,
        });
    }
    Ok(out)
}

fn check_name(name: &str) -> ApiResult<()> {
    if name.trim().is_empty() {
        return Err(ApiError::bad_request(
            "the organization name must not be empty",
        ));
    }
    Ok(())
}

/// Every organization (Admin): `[{_id:{$oid}, name, member:[{user_id, roles}]}]`.
#[utoipa::path(get, path = "/api/organization", tag = "organizations",
    security(("bearer" = [])),
    responses((status = 200, description = "List of organizations"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_organizations(
    State(state): State<AppState>,
    _admin: AdminCaller,
) -> ApiResult<Json<Vec<OrganizationRecord>>> {
    Ok(Json(state.store.list_organizations().await?))
}

/// Create an organization (Admin).
///
/// Answers the new organization document (Oakestra answers its id as a double-encoded
/// string). Members must be existing users; a taken name is a 409.
#[utoipa::path(post, path = "/api/organization", tag = "organizations",
    security(("bearer" = [])),
    request_body = OrganizationRequest,
    responses(
        (status = 200, description = "The new organization"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, description = "A member's user_id is not the id of a user", body = ErrorBody),
        (status = 409, body = ErrorBody),
    ))]
async fn create_organization(
    State(state): State<AppState>,
    _admin: AdminCaller,
    JsonBody(req): JsonBody<OrganizationRequest>,
) -> ApiResult<Json<OrganizationRecord>> {
    check_name(&req.name)?;
    let org = OrganizationRecord {
        id: new_object_id(),
        name: req.name,
        members: members(&state, req.member).await?,
        extra: Map::new(),
    };
    state.store.create_organization(&org).await?;
    Ok(Json(org))
}

fn parse_id(id: &str) -> ApiResult<ObjectId> {
    id.parse()
        .map_err(|_| ApiError::not_found(format!("no organization with id {id:?}")))
}

/// Rename an organization and replace its members (Admin).
///
/// Both keys are needed (Oakestra sets a missing one to null). Unknown ids are a 404.
#[utoipa::path(put, path = "/api/organization/{organization_id}", tag = "organizations",
    security(("bearer" = [])),
    params(("organization_id" = String, Path)),
    request_body = OrganizationRequest,
    responses(
        (status = 200, body = MessageBody),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    ))]
async fn update_organization(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Path(organization_id): Path<String>,
    JsonBody(req): JsonBody<OrganizationRequest>,
) -> ApiResult<Json<MessageBody>> {
    let id = parse_id(&organization_id)?;
    check_name(&req.name)?;
    let new_members = members(&state, req.member).await?;
    let name = req.name;
    let old_members = state
        .store
        .update_organization(id, |org: &mut OrganizationRecord| {
            if org.name == DEFAULT_ORGANIZATION && name != DEFAULT_ORGANIZATION {
                return Err(ApiError::conflict(
                    "the root organization cannot be renamed: logins use it by default",
                ));
            }
            org.name.clone_from(&name);
            Ok(std::mem::replace(&mut org.members, new_members.clone()))
        })
        .await?;
    // Tokens carry roles: whoever's roles here changed must log in again.
    let roles = |list: &[Member], uid: &str| {
        list.iter()
            .find(|m| m.user_id == uid)
            .map(|m| m.roles.clone())
    };
    let mut changed: Vec<&str> = old_members
        .iter()
        .chain(&new_members)
        .map(|m| m.user_id.as_str())
        .filter(|uid| roles(&old_members, uid) != roles(&new_members, uid))
        .collect();
    changed.sort_unstable();
    changed.dedup();
    for uid in changed {
        state.revoke_tokens(uid).await?;
    }
    Ok(super::message_json("Organization is updated"))
}

/// Delete an organization (Admin). The `root` organization cannot be deleted.
#[utoipa::path(delete, path = "/api/organization/{organization_id}", tag = "organizations",
    security(("bearer" = [])),
    params(("organization_id" = String, Path)),
    responses(
        (status = 200, body = MessageBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "The root organization", body = ErrorBody),
    ))]
async fn delete_organization(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Path(organization_id): Path<String>,
) -> ApiResult<Json<MessageBody>> {
    let id = parse_id(&organization_id)?;
    let org = state
        .store
        .get_organization(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no organization with id {id}")))?;
    if org.name == DEFAULT_ORGANIZATION {
        return Err(ApiError::conflict(
            "the root organization cannot be deleted: logins use it by default",
        ));
    }
    state.store.delete_organization(id).await?;
    for m in &org.members {
        state.revoke_tokens(&m.user_id).await?;
    }
    Ok(super::message_json("Organization deleted"))
}
