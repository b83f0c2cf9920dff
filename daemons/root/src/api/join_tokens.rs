//! `/api/join-tokens` (Admin): cluster join tokens over the API, so `oak token create` works
//! against a running root (its redb store is locked by the root process, so
//! `oakestra-root token create` cannot run beside it). Not part of Oakestra's API.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use oakestra_proto::rest::{CreatedJoinToken, JoinTokenInfo as JoinTokenView, NewJoinToken};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::AdminCaller;
use super::{AppState, MessageBody};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::tokens::{self, TokenError};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_join_token, list_join_tokens))
        .routes(routes!(revoke_join_token))
}

fn token_error(e: TokenError) -> ApiError {
    match e {
        TokenError::NotFound(_) => ApiError::not_found(e.to_string()),
        TokenError::Store(s) => super::store_error(s),
        other => ApiError::internal(other.to_string()),
    }
}

/// Create a cluster join token (Admin). The answer holds the token itself; the root keeps only
/// its SHA-256, so it cannot be shown again.
#[utoipa::path(post, path = "/api/join-tokens", tag = "clusters",
    security(("bearer" = [])),
    request_body(content = Option<NewJoinToken>, description = "optional"),
    responses(
        (status = 200, body = CreatedJoinToken),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
    ))]
async fn create_join_token(
    State(state): State<AppState>,
    AdminCaller(_admin): AdminCaller,
    body: Bytes,
) -> ApiResult<Json<CreatedJoinToken>> {
    let request: NewJoinToken = if body.iter().all(u8::is_ascii_whitespace) {
        NewJoinToken::default()
    } else {
        // `null` is "no body" too (the document says the body is optional); anything else
        // must be an object (serde would also build the struct from an array).
        let bad = |e: String| {
            ApiError::bad_request(format!(
                "the body must be empty or {{\"name\": \"<text>\"}}: {e}"
            ))
        };
        match serde_json::from_slice::<serde_json::Value>(&body).map_err(|e| bad(e.to_string()))? {
            serde_json::Value::Null => NewJoinToken::default(),
            v @ serde_json::Value::Object(_) => {
                serde_json::from_value(v).map_err(|e| bad(e.to_string()))?
            }
            _ => return Err(bad("found no object".into())),
        }
    };
    let name = request
        .name
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| "cluster".to_owned());
    let created = tokens::create(state.store.as_ref(), &name)
        .await
        .map_err(token_error)?;
    Ok(Json(CreatedJoinToken {
        id: created.id,
        name: created.name,
        token: created.token,
    }))
}

/// Every cluster join token (Admin), oldest first, without secrets.
#[utoipa::path(get, path = "/api/join-tokens", tag = "clusters",
    security(("bearer" = [])),
    responses(
        (status = 200, body = Vec<JoinTokenView>),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ))]
async fn list_join_tokens(
    State(state): State<AppState>,
    AdminCaller(_admin): AdminCaller,
) -> ApiResult<Json<Vec<JoinTokenView>>> {
    let list = tokens::list(state.store.as_ref())
        .await
        .map_err(token_error)?;
    Ok(Json(
        list.into_iter()
            .map(|t| JoinTokenView {
                id: t.id,
                name: t.name,
                created_at: t.created_at,
            })
            .collect(),
    ))
}

/// Revoke a cluster join token (Admin). Clusters that joined with it keep their id; they need
/// a valid token the next time they register.
#[utoipa::path(delete, path = "/api/join-tokens/{id}", tag = "clusters",
    security(("bearer" = [])),
    params(("id" = String, Path)),
    responses(
        (status = 200, body = MessageBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
async fn revoke_join_token(
    State(state): State<AppState>,
    AdminCaller(_admin): AdminCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<MessageBody>> {
    tokens::revoke(state.store.as_ref(), &id)
        .await
        .map_err(token_error)?;
    Ok(super::message_json(format!("join token {id} revoked")))
}
