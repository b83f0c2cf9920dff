//! `/api/auth/*` and `/api/permission/<username>`.

use axum::Json;
use axum::extract::{Path, State};
use oakestra_proto::rest::{
    LoginRequest, NewUser, Refreshed as RefreshResponse, Roles as RolesResponse,
    Tokens as LoginResponse,
};
use oakestra_store::{Member, OrganizationRecord, UserRecord, new_object_id};
use serde_json::{Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{AdminCaller, Caller, JsonBody, RefreshCaller};
use crate::auth::{Identity, TokenKind, hash_password, now_secs, verify_password};
use crate::error::{ApiError, ApiResult, ErrorBody};

/// The organization a login picks when none is named.
pub const DEFAULT_ORGANIZATION: &str = "root";

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(register))
        .routes(routes!(permission))
}

/// The roles of `user` in `org`.
fn roles_in(org: &OrganizationRecord, user: &UserRecord) -> Vec<String> {
    org.roles_of(&user.id.to_string()).to_vec()
}

/// At most this many password hashes are computed at once: each takes 7 MiB and a core for
/// ~20 ms, so a burst of logins queues instead of inflating memory and starving requests.
static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Runs argon2 off the async runtime.
pub(crate) async fn check_password(password: String, hash: String) -> bool {
    let _permit = HASHING
        .acquire()
        .await
        .expect("the semaphore is never closed");
    tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .unwrap_or(false)
}

/// Hashes off the async runtime.
pub(crate) async fn hash(password: String) -> String {
    let _permit = HASHING
        .acquire()
        .await
        .expect("the semaphore is never closed");
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .expect("argon2 hashing does not panic")
}

/// Log in with a user name and password.
///
/// Answers both tokens, and whether the password used is still the default one of `Admin`
/// (`default_password`, Oakestra-rs only). Deliberate differences from Oakestra: a missing or non-JSON body is a
/// 400 (Oakestra: 403), missing keys are a 400 (Oakestra: 500), and every error names its
/// cause. Like Oakestra, a user who is not a member of the organization still logs in, with
/// no roles.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, body = LoginResponse),
        (status = 400, description = "Body missing, not JSON, or without username/password", body = ErrorBody),
        (status = 401, description = "Unknown user or wrong password", body = ErrorBody),
        (status = 404, description = "Unknown organization", body = ErrorBody),
    ))]
async fn login(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let wrong = || ApiError::unauthorized("wrong user name or password");
    if req.username.is_empty() || req.password.is_empty() {
        return Err(wrong());
    }
    let org_name = req
        .organization_name
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(DEFAULT_ORGANIZATION);
    let default_password = req.username == crate::DEFAULT_ADMIN && req.password == "Admin";
    let user = state.store.user_by_name(&req.username).await?;
    let Some(user) = user else {
        // Hash anyway so the answer time does not tell which user names exist.
        let _ = check_password(req.password, crate::DUMMY_HASH.to_owned()).await;
        return Err(wrong());
    };
    if !check_password(req.password, user.password_hash.clone()).await {
        return Err(wrong());
    }
    let org = state
        .store
        .organization_by_name(org_name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no organization named {org_name:?}")))?;
    let who = Identity {
        username: user.name.clone(),
        roles: roles_in(&org, &user),
        organization: org.id.to_string(),
        user_id: user.id.to_string(),
        token_version: user.token_version,
    };
    let now = now_secs();
    Ok(Json(LoginResponse {
        token: state.tokens.issue(&who, TokenKind::Access, now),
        refresh_token: state.tokens.issue(&who, TokenKind::Refresh, now),
        default_password,
    }))
}

/// Get a new access token for a refresh token (sent as `Authorization: Bearer <refresh token>`).
///
/// The new token carries the roles the user has *now* in the refresh token's organization
/// (Oakestra copies the old roles). A deleted user gets 401.
#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, body = RefreshResponse),
        (status = 401, description = "No, expired or invalid refresh token, or the user is gone", body = ErrorBody),
    ))]
async fn refresh(
    State(state): State<AppState>,
    RefreshCaller(claims): RefreshCaller,
) -> ApiResult<Json<RefreshResponse>> {
    let user = state
        .store
        .user_by_name(&claims.sub)
        .await?
        .ok_or_else(|| ApiError::unauthorized(format!("user {:?} no longer exists", claims.sub)))?;
    let roles = match claims.organization.parse() {
        Ok(org_id) => match state.store.get_organization(org_id).await? {
            Some(org) => roles_in(&org, &user),
            None => Vec::new(),
        },
        Err(_) => Vec::new(),
    };
    let who = Identity {
        user_id: user.id.to_string(),
        token_version: user.token_version,
        username: user.name,
        roles,
        organization: claims.organization,
    };
    Ok(Json(RefreshResponse {
        token: state.tokens.issue(&who, TokenKind::Access, now_secs()),
    }))
}

/// A user as the API shows it: the stored document without the password hash, plus `roles`
/// in the caller's organization.
pub(crate) fn user_view(user: &UserRecord, roles: &[String]) -> Value {
    let mut v = serde_json::to_value(user).expect("records serialise");
    if let Value::Object(map) = &mut v {
        map.remove("password");
        map.insert("roles".into(), Value::from(roles.to_vec()));
    }
    v
}

/// `dd/mm/YYYY HH:MM` (UTC), as Oakestra writes `created_at`.
pub(crate) fn created_at_now() -> String {
    let secs = now_secs();
    let days = (secs / 86_400) as i64;
    let (y, m, d) = oakestra_daemon::calendar::civil_from_days(days);
    let rem = secs % 86_400;
    format!(
        "{d:02}/{m:02}/{y:04} {:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// Checks role names.
pub(crate) fn check_roles(roles: &[String]) -> ApiResult<()> {
    for r in roles {
        if !crate::auth::roles::ALL.contains(&r.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown role {r:?}; the roles are {}",
                crate::auth::roles::ALL.join(", ")
            )));
        }
    }
    Ok(())
}

/// Create a user (Admin), with roles in the caller's organization.
///
/// Answers the new user without its password hash (Oakestra returns the hash). An empty
/// name or password is a 400 and a taken name a 409 (Oakestra answers both with HTTP 200 and
/// the error inside the body).
#[utoipa::path(post, path = "/api/auth/register", tag = "auth",
    security(("bearer" = [])),
    request_body = NewUser,
    responses(
        (status = 200, description = "The new user `{_id:{$oid}, name, email, created_at, roles}`"),
        (status = 400, description = "Empty name or password, unknown role, bad body", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "User name taken, or still owning a deleted user's applications", body = ErrorBody),
    ))]
async fn register(
    State(state): State<AppState>,
    AdminCaller(admin): AdminCaller,
    JsonBody(req): JsonBody<NewUser>,
) -> ApiResult<Json<Value>> {
    if req.name.trim().is_empty() || req.password.is_empty() {
        return Err(ApiError::bad_request("name and password must not be empty"));
    }
    check_roles(&req.roles)?;
    if state.store.user_by_name(&req.name).await?.is_some() {
        return Err(ApiError::conflict(format!(
            "a user named {:?} already exists",
            req.name
        )));
    }
    // Applications are owned by user name: a new user must not inherit a deleted one's.
    let inherited = state.store.list_applications_of(&req.name).await?.len();
    if inherited > 0 {
        return Err(ApiError::conflict(format!(
            "the name {:?} still owns {inherited} application(s) of a deleted user; an Admin \
             finds them in GET /api/applications (\"userId\": {0:?}) and deletes them with \
             DELETE /api/application/{{id}} first, or choose another name",
            req.name
        )));
    }
    let user = UserRecord {
        id: new_object_id(),
        name: req.name,
        email: req.email,
        password_hash: hash(req.password).await,
        created_at: created_at_now(),
        token_version: 0,
        extra: Map::new(),
    };
    state.store.create_user(&user).await?;
    let org_id = admin
        .organization
        .parse()
        .map_err(|_| ApiError::internal("the token's organization is not an object id"))?;
    let uid = user.id.to_string();
    let roles = req.roles.clone();
    state
        .store
        .update_organization(org_id, |org: &mut OrganizationRecord| {
            org.members.retain(|m| m.user_id != uid);
            org.members.push(Member {
                user_id: uid.clone(),
                roles: roles.clone(),
            });
            Ok::<_, ApiError>(())
        })
        .await?;
    Ok(Json(user_view(&user, &req.roles)))
}

/// The caller's roles in the token's organization (only for the caller's own user name).
#[utoipa::path(get, path = "/api/permission/{username}", tag = "auth",
    security(("bearer" = [])),
    params(("username" = String, Path, description = "The caller's user name")),
    responses(
        (status = 200, body = RolesResponse),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Another user's name", body = ErrorBody),
        (status = 404, description = "User or organization gone", body = ErrorBody),
    ))]
async fn permission(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
) -> ApiResult<Json<RolesResponse>> {
    if caller.username() != username {
        return Err(ApiError::forbidden(format!(
            "you are {:?} and can read only your own permissions",
            caller.username()
        )));
    }
    let user = state
        .store
        .user_by_name(&username)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no user named {username:?}")))?;
    let org_id = caller
        .0
        .organization
        .parse()
        .map_err(|_| ApiError::not_found("the token names no organization; log in again"))?;
    let org = state
        .store
        .get_organization(org_id)
        .await?
        .ok_or_else(|| ApiError::not_found("the token's organization no longer exists"))?;
    Ok(Json(RolesResponse {
        roles: roles_in(&org, &user),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_at_is_oakestras_format() {
        assert_eq!(created_at_now().len(), "01/01/2026 10:00".len());
    }
}
