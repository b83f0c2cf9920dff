//! Request guards: who is calling (access token, Admin role, refresh token) and the JSON body.
//!
//! Unlike Oakestra, which has two guards with different answers (401, 422, `{"msg"}` or
//! `{"message"}`), every authentication failure here is a 401 and every missing role a 403,
//! both with the usual error body saying what was wrong.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::{AppState, MAX_BODY_BYTES};
use crate::auth::{Claims, TokenKind, now_secs, roles};
use crate::error::ApiError;

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized(
            "missing Authorization header; send `Authorization: Bearer <token>` with the token from POST /api/auth/login",
        )
    })?;
    let text = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not valid text"))?;
    let token = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <token>`"))?
        .trim();
    if token.is_empty() {
        return Err(ApiError::unauthorized(
            "the Authorization header holds an empty token",
        ));
    }
    Ok(token)
}

fn verify(parts: &Parts, state: &AppState, kind: TokenKind) -> Result<Claims, ApiError> {
    let token = bearer(parts)?;
    state
        .tokens
        .verify(token, kind, now_secs())
        .map_err(|e| ApiError::unauthorized(e.to_string()))
}

/// A caller with a valid access token.
#[derive(Debug, Clone)]
pub struct Caller(pub Claims);

impl Caller {
    /// The user name (owner of applications).
    pub fn username(&self) -> &str {
        &self.0.sub
    }

    /// Whether the token carries the Admin role.
    pub fn is_admin(&self) -> bool {
        self.0.has_role(roles::ADMIN)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let claims = verify(parts, state, TokenKind::Access)?;
        state.check_current(&claims).await?;
        Ok(Caller(claims))
    }
}

/// A caller with a valid access token, the Admin role, and an account that still exists.
#[derive(Debug, Clone)]
pub struct AdminCaller(pub Claims);

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let claims = verify(parts, state, TokenKind::Access)?;
        if !claims.has_role(roles::ADMIN) {
            return Err(ApiError::forbidden(format!(
                "this endpoint needs the Admin role; user {:?} has {:?} in its organization",
                claims.sub, claims.roles
            )));
        }
        state.check_current(&claims).await?;
        Ok(AdminCaller(claims))
    }
}

/// A caller presenting a refresh token (`POST /api/auth/refresh`).
#[derive(Debug, Clone)]
pub struct RefreshCaller(pub Claims);

impl FromRequestParts<AppState> for RefreshCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let claims = verify(parts, state, TokenKind::Refresh)?;
        state.check_current(&claims).await?;
        Ok(RefreshCaller(claims))
    }
}

/// A JSON request body of type `T`. Any content type is accepted (Oakestra's clients do not
/// all send one). Empty or malformed JSON, or a body of the wrong shape, is a 400 naming the
/// problem; a body over 1 MiB is a 413.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    e.status(),
                    format!("the request body is larger than the limit of {MAX_BODY_BYTES} bytes (1 MiB)"),
                )
            } else {
                ApiError::new(e.status(), format!("cannot read the request body: {e}"))
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses a JSON body with a 400 that says where it is broken.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "the request body is empty; this endpoint expects a JSON document",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let what = if e.is_syntax() || e.is_eof() {
            "the request body is not valid JSON"
        } else {
            "the request body does not have the expected shape"
        };
        ApiError::bad_request(format!("{what}: {e}"))
    })
}
