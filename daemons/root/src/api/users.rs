//! `/api/user/*` and `/api/users/*`.

use axum::Json;
use axum::extract::{Path, State};
use oakestra_core::ids::ObjectId;
use oakestra_proto::rest::{PasswordChange, UserUpdate};
use oakestra_store::{Member, OrganizationRecord, UserRecord};
use serde_json::{Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{check_password, check_roles, hash, user_view};
use super::extract::{AdminCaller, Caller, JsonBody};
use super::{AppState, MessageBody};
use crate::auth::Claims;
use crate::error::{ApiError, ApiResult, ErrorBody};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_user, update_user, delete_user, change_password))
        .routes(routes!(request_password_reset, reset_password))
        .routes(routes!(list_users))
        .routes(routes!(list_organization_users))
}

async fn caller_org(state: &AppState, claims: &Claims) -> ApiResult<Option<OrganizationRecord>> {
    match claims.organization.parse::<ObjectId>() {
        Ok(id) => Ok(state.store.get_organization(id).await?),
        Err(_) => Ok(None),
    }
}

fn roles_of(org: Option<&OrganizationRecord>, user: &UserRecord) -> Vec<String> {
    org.map(|o| o.roles_of(&user.id.to_string()).to_vec())
        .unwrap_or_default()
}

async fn user_named(state: &AppState, name: &str) -> ApiResult<UserRecord> {
    state
        .store
        .user_by_name(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no user named {name:?}")))
}

/// A user (your own, or any for an Admin), without the password hash, with `roles` in your
/// organization.
#[utoipa::path(get, path = "/api/user/{username}", tag = "users",
    security(("bearer" = [])),
    params(("username" = String, Path)),
    responses(
        (status = 200, description = "`{_id:{$oid}, name, email, created_at, roles}`"),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Another user's account and you are not Admin", body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
) -> ApiResult<Json<Value>> {
    if caller.username() != username && !caller.is_admin() {
        return Err(ApiError::forbidden(format!(
            "you are {:?} and can read only your own account",
            caller.username()
        )));
    }
    let user = user_named(&state, &username).await?;
    let org = caller_org(&state, &caller.0).await?;
    Ok(Json(user_view(&user, &roles_of(org.as_ref(), &user))))
}

/// Change a user (Admin): e-mail, password, roles in your organization, other fields.
///
/// Differences from Oakestra: the password is hashed (Oakestra stores it as given), the user
/// cannot be renamed (applications are owned by user name), and an unknown user is a 404
/// (Oakestra: 500).
#[utoipa::path(put, path = "/api/user/{username}", tag = "users",
    security(("bearer" = [])),
    params(("username" = String, Path)),
    request_body = UserUpdate,
    responses(
        (status = 200, body = MessageBody),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
async fn update_user(
    State(state): State<AppState>,
    AdminCaller(admin): AdminCaller,
    Path(username): Path<String>,
    JsonBody(req): JsonBody<UserUpdate>,
) -> ApiResult<Json<MessageBody>> {
    for key in req.extra.keys() {
        if key == "_id" || (key == "name" && req.extra[key] != Value::String(username.clone())) {
            return Err(ApiError::bad_request(format!(
                "{key:?} of a user cannot be changed"
            )));
        }
    }
    if let Some(roles) = &req.roles {
        check_roles(roles)?;
    }
    let user = user_named(&state, &username).await?;
    let password_hash = match req.password {
        Some(p) if p.is_empty() => {
            return Err(ApiError::bad_request("the new password must not be empty"));
        }
        Some(p) => Some(hash(p).await),
        None => None,
    };
    let email = req.email;
    let other = req.extra;
    let revoke = password_hash.is_some() || req.roles.is_some();
    state.forget_user(&username);
    state
        .store
        .update_user(user.id, |u: &mut UserRecord| {
            if revoke {
                // Tokens issued before carry the old roles or were got with the old password.
                u.token_version += 1;
            }
            if let Some(e) = &email {
                u.email.clone_from(e);
            }
            if let Some(h) = &password_hash {
                u.password_hash.clone_from(h);
            }
            for (k, v) in &other {
                if k != "name" {
                    u.extra.insert(k.clone(), v.clone());
                }
            }
            Ok::<_, ApiError>(())
        })
        .await?;
    if let Some(roles) = req.roles {
        let org_id: ObjectId = admin
            .organization
            .parse()
            .map_err(|_| ApiError::internal("the token's organization is not an object id"))?;
        let uid = user.id.to_string();
        state
            .store
            .update_organization(org_id, |org: &mut OrganizationRecord| {
                match org.members.iter_mut().find(|m| m.user_id == uid) {
                    Some(m) => m.roles.clone_from(&roles),
                    None => org.members.push(Member {
                        user_id: uid.clone(),
                        roles: roles.clone(),
                    }),
                }
                Ok::<_, ApiError>(())
            })
            .await?;
    }
    state.forget_user(&username);
    Ok(super::message_json("User updated"))
}

/// Delete a user (Admin) and remove it from every organization. Answers the remaining users.
///
/// Its applications stay (owned by the user name) until an Admin deletes them. You cannot
/// delete your own account (so a root cannot lose its last Admin by accident).
#[utoipa::path(delete, path = "/api/user/{username}", tag = "users",
    security(("bearer" = [])),
    params(("username" = String, Path)),
    responses(
        (status = 200, description = "The remaining users"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "Deleting yourself", body = ErrorBody),
    ))]
async fn delete_user(
    State(state): State<AppState>,
    AdminCaller(admin): AdminCaller,
    Path(username): Path<String>,
) -> ApiResult<Json<Vec<Value>>> {
    if admin.sub == username {
        return Err(ApiError::conflict(
            "you cannot delete your own account; log in as another Admin to do it",
        ));
    }
    let user = user_named(&state, &username).await?;
    state.forget_user(&username);
    let deleted = state.store.delete_user(user.id).await;
    // A request that slipped in between may have cached the name again.
    state.forget_user(&username);
    deleted?;
    list_views(&state, &admin).await.map(Json)
}

async fn list_views(state: &AppState, caller: &Claims) -> ApiResult<Vec<Value>> {
    let org = caller_org(state, caller).await?;
    Ok(state
        .store
        .list_users()
        .await?
        .iter()
        .map(|u| user_view(u, &roles_of(org.as_ref(), u)))
        .collect())
}

/// Change your own password.
#[utoipa::path(post, path = "/api/user/{username}", tag = "users",
    security(("bearer" = [])),
    params(("username" = String, Path)),
    request_body = PasswordChange,
    responses(
        (status = 200, description = "`{token, refresh_token}`: every token issued before the change is revoked, these replace the caller's (Oakestra answers `{}`)"),
        (status = 400, description = "The new password equals the old one", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Another user's password, or the old password is wrong", body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
    JsonBody(req): JsonBody<PasswordChange>,
) -> ApiResult<Json<Value>> {
    if caller.username() != username {
        return Err(ApiError::forbidden(format!(
            "you are {:?} and can change only your own password",
            caller.username()
        )));
    }
    let user = user_named(&state, &username).await?;
    if !check_password(req.old_password.clone(), user.password_hash.clone()).await {
        return Err(ApiError::forbidden("the old password is not valid"));
    }
    if req.old_password == req.new_password {
        return Err(ApiError::bad_request(
            "the new password must differ from the old one",
        ));
    }
    if req.new_password.is_empty() {
        return Err(ApiError::bad_request("the new password must not be empty"));
    }
    let new_hash = hash(req.new_password).await;
    state.forget_user(&username);
    let version = state
        .store
        .update_user(user.id, |u: &mut UserRecord| {
            u.password_hash.clone_from(&new_hash);
            // Every token issued before dies; the caller gets new ones in the answer.
            u.token_version += 1;
            Ok::<_, ApiError>(u.token_version)
        })
        .await?;
    state.forget_user(&username);
    let who = crate::auth::Identity {
        username: user.name.clone(),
        roles: caller.0.roles.clone(),
        organization: caller.0.organization.clone(),
        user_id: user.id.to_string(),
        token_version: version,
    };
    let now = crate::auth::now_secs();
    let mut answer = Map::new();
    answer.insert(
        "token".into(),
        state
            .tokens
            .issue(&who, crate::auth::TokenKind::Access, now)
            .into(),
    );
    answer.insert(
        "refresh_token".into(),
        state
            .tokens
            .issue(&who, crate::auth::TokenKind::Refresh, now)
            .into(),
    );
    Ok(Json(Value::Object(answer)))
}

const NO_MAIL: &str = "password reset by e-mail is not available on this root (it sends no mail); \
an Admin can set a new password with PUT /api/user/<username> {\"password\": …}";

/// Request a password-reset mail: not offered (the root sends no mail), always 501.
#[utoipa::path(post, path = "/api/user", tag = "users",
    responses((status = 501, description = "Not offered; an Admin sets passwords with PUT /api/user/{username}", body = ErrorBody)))]
async fn request_password_reset() -> ApiError {
    ApiError::not_implemented(NO_MAIL)
}

/// Reset a password with a mailed token: not offered, always 501 (Oakestra's flow cannot
/// succeed either: it hashes the mailed hash again).
#[utoipa::path(put, path = "/api/user", tag = "users",
    responses((status = 501, body = ErrorBody)))]
async fn reset_password() -> ApiError {
    ApiError::not_implemented(NO_MAIL)
}

/// Every user (Admin), without password hashes, with `roles` in your organization.
#[utoipa::path(get, path = "/api/users", tag = "users",
    security(("bearer" = [])),
    responses((status = 200, description = "List of users"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_users(
    State(state): State<AppState>,
    AdminCaller(admin): AdminCaller,
) -> ApiResult<Json<Vec<Value>>> {
    list_views(&state, &admin).await.map(Json)
}

/// The members of an organization (Admin), each with its roles there.
#[utoipa::path(get, path = "/api/users/{organization_id}", tag = "users",
    security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "24 hex digits")),
    responses(
        (status = 200, description = "List of users"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "Unknown organization (Oakestra: `[]`)", body = ErrorBody),
    ))]
async fn list_organization_users(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Path(organization_id): Path<String>,
) -> ApiResult<Json<Vec<Value>>> {
    let unknown = || ApiError::not_found(format!("no organization with id {organization_id:?}"));
    let id: ObjectId = organization_id.parse().map_err(|_| unknown())?;
    let org = state
        .store
        .get_organization(id)
        .await?
        .ok_or_else(unknown)?;
    let mut out = Vec::with_capacity(org.members.len());
    for m in &org.members {
        let Ok(uid) = m.user_id.parse::<ObjectId>() else {
            continue;
        };
        if let Some(user) = state.store.get_user(uid).await? {
            out.push(user_view(&user, &m.roles));
        }
    }
    Ok(Json(out))
}
