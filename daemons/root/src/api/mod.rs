//! The REST API (Oakestra v1 paths and JSON shapes, DESIGN.md §4.1).
//!
//! * [`extract`] — authentication guards and the JSON body extractor.
//! * one module per resource: [`auth`], [`users`], [`organizations`], [`applications`],
//!   [`services`], [`clusters`], [`join_tokens`].
//! * [`lifecycle`] — what the API needs from IPAM and the cluster link.
//!
//! [`router`] assembles everything, with the OpenAPI document generated from the handlers.

pub mod applications;
pub mod auth;
pub mod clusters;
pub mod events;
pub mod extract;
pub mod join_tokens;
pub mod lifecycle;
pub mod organizations;
pub mod replicas;
pub mod services;
mod unknown_fields;
pub mod users;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Bytes;

use axum::Json;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Router, middleware};
use oakestra_store::{Store, StoreError};
use tower_http::cors::CorsLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::TokenService;
use crate::error::ApiError;
use crate::metrics::Metrics;
use lifecycle::ServiceLifecycle;

/// Largest request body accepted (413 above).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Shared state of every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Persistent state.
    pub store: Arc<dyn Store>,
    /// Token signing and checking.
    pub tokens: Arc<TokenService>,
    /// Addresses and instances.
    pub lifecycle: Arc<dyn ServiceLifecycle>,
    /// How long a silent cluster stays active.
    pub cluster_timeout: Duration,
    /// The cached answer of `GET /api/applications`.
    pub applications: Arc<ListCache>,
    /// Serialises each user's multi-step writes (address reservation + creation, deletion +
    /// release), one lock per user: one user's large descriptor never waits for another's.
    /// Users' writes meet only in the IPAM document, whose updates are atomic in the store.
    pub writes: Arc<UserLocks>,
    /// Serialises the API's updates of the one IPAM document (address reservation and
    /// release, each one short store update): concurrent users' creates would otherwise lose
    /// optimistic-concurrency races and retry durable commits.
    pub ipam: Arc<tokio::sync::Mutex<()>>,
    /// Id and token version of the users seen, so the revocation check of every request
    /// needs no store read. Users change only through this API, which forgets them here.
    pub known_users: Arc<RwLock<HashMap<String, (String, u64)>>>,
    /// Events and usage history (shared with the cluster link when there is one).
    pub monitor: Arc<crate::monitor::Monitor>,
    /// When set, `GET /metrics` needs it as a bearer token.
    pub metrics_token: Option<Arc<str>>,
    /// Serialises changes of instance counts that follow a service's desired `replicas`
    /// (the reconciles, and the per-instance API with the count it adjusts).
    pub replicas: Arc<tokio::sync::Mutex<()>>,
    /// The services whose SLA has `replicas` (filled at start, added to on create and scale),
    /// so the periodic reconcile reads only those.
    pub replicated: Arc<std::sync::Mutex<std::collections::BTreeSet<oakestra_core::ids::ObjectId>>>,
}

impl AppState {
    /// State over these parts.
    pub fn new(
        store: Arc<dyn Store>,
        tokens: TokenService,
        lifecycle: Arc<dyn ServiceLifecycle>,
        cluster_timeout: Duration,
    ) -> Self {
        let monitor = lifecycle.monitor().unwrap_or_default();
        Self {
            monitor,
            metrics_token: None,
            store,
            tokens: Arc::new(tokens),
            lifecycle,
            cluster_timeout,
            applications: Arc::new(ListCache::default()),
            writes: Arc::new(UserLocks::default()),
            ipam: Arc::new(tokio::sync::Mutex::new(())),
            known_users: Arc::new(RwLock::new(HashMap::new())),
            replicas: Arc::new(tokio::sync::Mutex::new(())),
            replicated: Arc::default(),
        }
    }

    /// Refuses a token whose user is gone, is another user of the same name (deleted and
    /// registered again), or has changed roles or password since the token was issued. The
    /// user's id and token version are cached once read; every change goes through this API,
    /// which calls [`AppState::forget_user`].
    pub async fn check_current(&self, claims: &crate::auth::Claims) -> Result<(), ApiError> {
        let cached = self
            .known_users
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&claims.sub)
            .cloned();
        let (id, version) = match cached {
            Some(stamp) => stamp,
            None => {
                let Some(user) = self.store.user_by_name(&claims.sub).await? else {
                    return Err(ApiError::unauthorized(format!(
                        "user {:?} of this token no longer exists",
                        claims.sub
                    )));
                };
                let stamp = (user.id.to_string(), user.token_version);
                self.known_users
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(claims.sub.clone(), stamp.clone());
                stamp
            }
        };
        if !claims.uid.is_empty() && claims.uid != id {
            return Err(ApiError::unauthorized(format!(
                "this token belongs to an earlier, deleted user named {:?}; log in again",
                claims.sub
            )));
        }
        if claims.ver < version {
            return Err(ApiError::unauthorized(
                "this token was revoked: the user's roles or password changed since it was \
                 issued; log in again",
            ));
        }
        Ok(())
    }

    /// Revokes every token of the user with id `user_id` (24 hex digits; unknown or unparsable
    /// ids are skipped: there is nothing to revoke).
    pub async fn revoke_tokens(&self, user_id: &str) -> Result<(), ApiError> {
        let Ok(id) = user_id.parse() else {
            return Ok(());
        };
        let Some(user) = self.store.get_user(id).await? else {
            return Ok(());
        };
        self.forget_user(&user.name);
        let bumped = self
            .store
            .update_user(id, |u: &mut oakestra_store::UserRecord| {
                u.token_version += 1;
                Ok::<_, StoreError>(())
            })
            .await;
        self.forget_user(&user.name);
        match bumped {
            Err(e) if e.is_not_found() => Ok(()),
            other => other.map_err(ApiError::from),
        }
    }

    /// Forgets what is cached about user `name` (call around every change of the user).
    pub fn forget_user(&self, name: &str) {
        self.known_users
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }
}

/// One async lock per user name, made on first use and dropped when nobody holds or waits
/// for it.
#[derive(Debug, Default)]
pub struct UserLocks(std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl UserLocks {
    /// Waits for `user`'s lock; it is released when the guard is dropped.
    pub async fn lock(&self, user: &str) -> UserLockGuard<'_> {
        let lock = {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(map.entry(user.to_owned()).or_default())
        };
        let guard = Arc::clone(&lock).lock_owned().await;
        UserLockGuard {
            locks: self,
            user: user.to_owned(),
            lock,
            guard: Some(guard),
        }
    }
}

/// Holds one user's lock (see [`UserLocks`]).
#[derive(Debug)]
pub struct UserLockGuard<'a> {
    locks: &'a UserLocks,
    user: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for UserLockGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.locks.0.lock().unwrap_or_else(|p| p.into_inner());
        // The map's copy and ours: nobody else holds or waits for it.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.user);
        }
    }
}

/// A serialised list answer, valid until the next change. Applications change only through
/// this API (the cluster link writes services and clusters, never applications), so every
/// handler that changes one invalidates it, with an [`Invalidate`] guard that also fires on
/// error paths. The generation is read before the store, so an answer computed while a
/// change lands is never kept for the newer generation.
#[derive(Debug, Default)]
pub struct ListCache {
    generation: AtomicU64,
    cached: RwLock<Option<(u64, Bytes)>>,
}

impl ListCache {
    /// The current generation and, if cached for it, the answer.
    pub fn get(&self) -> (u64, Option<Bytes>) {
        let generation = self.generation.load(Ordering::Acquire);
        let cached = self.cached.read().unwrap_or_else(|p| p.into_inner());
        match &*cached {
            Some((g, bytes)) if *g == generation => (generation, Some(bytes.clone())),
            _ => (generation, None),
        }
    }

    /// Keeps `bytes` as the answer of `generation` (ignored if a change happened since).
    pub fn put(&self, generation: u64, bytes: Bytes) {
        if self.generation.load(Ordering::Acquire) == generation {
            *self.cached.write().unwrap_or_else(|p| p.into_inner()) = Some((generation, bytes));
        }
    }

    /// Marks every cached answer stale.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// Invalidates a [`ListCache`] when dropped (after the change, on every path).
#[derive(Debug)]
pub struct Invalidate<'a>(pub &'a ListCache);

impl Drop for Invalidate<'_> {
    fn drop(&mut self) {
        self.0.invalidate();
    }
}

/// A store failure as an API error: missing → 404, taken name → 409, backend → 503.
pub fn store_error(e: StoreError) -> ApiError {
    match &e {
        StoreError::NotFound { .. } => ApiError::not_found(e.to_string()),
        StoreError::Conflict { .. } | StoreError::Stale { .. } => ApiError::conflict(e.to_string()),
        StoreError::Invalid { .. } => ApiError::bad_request(e.to_string()),
        StoreError::Backend(_) | StoreError::Open { .. } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        _ => ApiError::internal(e.to_string()),
    }
}

/// A `{"message": …}` answer (the contract crate's `Message`).
pub use oakestra_proto::rest::Message as MessageBody;

/// `{"message": text}` as a JSON response.
pub fn message_json(text: impl Into<String>) -> Json<MessageBody> {
    Json(MessageBody::new(text))
}

/// The OpenAPI document's fixed part; paths come from the handlers.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Oakestra-rs root orchestrator API",
        description = include_str!("api_description.md"),
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    components(schemas(crate::error::ErrorBody, crate::error::ViolationDoc, MessageBody)),
    tags(
        (name = "auth", description = "Login, token refresh, registration, permissions"),
        (name = "users", description = "User accounts"),
        (name = "organizations", description = "Organizations and their members"),
        (name = "applications", description = "Applications (created from deployment descriptors)"),
        (name = "services", description = "Services (jobs) and their instances"),
        (name = "clusters", description = "Clusters connected to this root (no login needed)"),
        (name = "operations", description = "Health and metrics"),
        (name = "events", description = "What happened to which object, and why; usage history"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "Access token from POST /api/auth/login (10 minutes); the refresh \
                         token (30 days) is accepted only by POST /api/auth/refresh.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The API routes and their OpenAPI document.
pub fn api_routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(auth::routes())
        .merge(users::routes())
        .merge(organizations::routes())
        .merge(applications::routes())
        .merge(services::routes())
        .merge(replicas::routes())
        .merge(clusters::routes())
        .merge(join_tokens::routes())
        .merge(events::routes())
        .routes(utoipa_axum::routes!(health))
        .split_for_parts()
}

/// The complete application: API, docs, dashboard, health and metrics, with metrics, CORS and the body
/// limit applied. Trailing slashes are removed before routing by the caller
/// (`serve_app` in the crate root), so `/api/applications/` and `/api/applications` are one route.
pub fn router(state: AppState, metrics: Arc<Metrics>) -> Router {
    let (api, openapi) = api_routes();
    let mut doc = serde_json::to_value(&openapi).expect("the OpenAPI document serialises");
    crate::openapi::complete(&mut doc);
    let spec =
        Arc::new(serde_json::to_string_pretty(&doc).expect("the OpenAPI document serialises"));
    let scrape_state = state.clone();
    api.with_state(state)
        .route(
            "/docs/openapi.json",
            get(move || {
                let spec = Arc::clone(&spec);
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        spec.as_str().to_owned(),
                    )
                }
            }),
        )
        .route(
            "/metrics",
            get({
                let metrics = Arc::clone(&metrics);
                move |headers: axum::http::HeaderMap| async move {
                    let state = scrape_state;
                    let given = headers
                        .get(axum::http::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok());
                    if !oakestra_daemon::metrics::authorized(state.metrics_token.as_deref(), given)
                    {
                        return ApiError::unauthorized(
                            oakestra_daemon::metrics::unauthorized_message("root"),
                        )
                        .into_response();
                    }
                    crate::monitor::metrics::refresh(
                        &state.monitor.metrics,
                        &state.store,
                        &state.monitor,
                    )
                    .await;
                    crate::metrics::serve(axum::extract::State(metrics))
                        .await
                        .into_response()
                }
            }),
        )
        .merge(crate::dashboard::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            metrics,
            crate::metrics::track,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::map_response(json_errors))
        .layer(CorsLayer::very_permissive())
}

/// Every error answer in the one `{code, status, message}` shape: the framework's own
/// rejections (a duplicate or malformed query parameter, a path that is not UTF-8, a body the
/// extractor refuses) come as plain text or empty; they are rewritten here, keeping their
/// status and headers. Answers that are JSON already pass unchanged.
async fn json_errors(response: axum::response::Response) -> axum::response::Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let message = match text.trim() {
        "" => status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase(),
        t => t.to_owned(),
    };
    let fresh = ApiError::new(status, message).into_response();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.remove(axum::http::header::CONTENT_TYPE);
    let (fresh_parts, fresh_body) = fresh.into_parts();
    parts.headers.extend(fresh_parts.headers);
    axum::response::Response::from_parts(parts, fresh_body)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no endpoint {method} {}; see /api/docs for the API",
        uri.path()
    ))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} does not accept {method}; see /api/docs for the methods it accepts",
            uri.path()
        ),
    )
}

/// Whether the root is up and its store answers.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses(
        (status = 200, description = "`{\"status\":\"ok\",\"store\":\"<backend and location>\"}`"),
        (status = 503, description = "The store does not answer", body = crate::error::ErrorBody),
    ))]
async fn health(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    match state.store.signing_key(crate::SIGNING_KEY_NAME).await {
        Ok(_) => Json(serde_json::json!({
            "status": "ok",
            "store": state.store.describe(),
        }))
        .into_response(),
        Err(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the store does not answer: {e}"),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod user_lock_tests {
    use super::*;

    #[tokio::test]
    async fn users_do_not_wait_for_each_other_and_one_user_waits_for_itself() {
        let locks = UserLocks::default();
        let alice = locks.lock("alice").await;
        // Another user gets the lock at once while alice holds hers.
        let bob = tokio::time::timeout(Duration::from_millis(100), locks.lock("bob"))
            .await
            .expect("bob waited for alice");
        drop(bob);
        // Alice's second write waits for the first.
        assert!(
            tokio::time::timeout(Duration::from_millis(100), locks.lock("alice"))
                .await
                .is_err()
        );
        drop(alice);
        let again = tokio::time::timeout(Duration::from_millis(100), locks.lock("alice"))
            .await
            .expect("alice's lock was not released");
        drop(again);
        // Nothing is kept for users nobody holds.
        assert!(locks.0.lock().unwrap().is_empty());
    }
}
