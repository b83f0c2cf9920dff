//! The cluster's HTTP API (default port 10100): worker registration, status, metrics, health.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use oakestra_proto::mqtt::NodeInfo;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::broker::sha256_hex;
use crate::cluster::Command;
use crate::metrics::Metrics;

/// Shared by the handlers.
#[derive(Debug, Clone)]
pub struct Api {
    /// The actor.
    pub commands: mpsc::Sender<Command>,
    /// SHA-256 of the workers' join token.
    pub worker_token_sha256: String,
    /// The cluster's Prometheus metrics, served at `/metrics` and counted by the handlers.
    pub metrics: Metrics,
    /// When set, `GET /metrics` needs it as a bearer token.
    pub metrics_token: Option<std::sync::Arc<str>>,
    /// Root link state, for the status page.
    pub root: tokio::sync::watch::Receiver<crate::root_link::LinkState>,
    /// Workers' overlay subnets from the root.
    pub subnets: crate::root_link::SubnetSource,
}

/// How long a registration waits for the root to hand out the worker's subnet.
const SUBNET_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The router (paths with and without a trailing slash).
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/api/node/register", post(register))
        .route("/api/node/register/", post(register))
        .route("/api/cluster/status", get(status))
        .route("/api/cluster/status/", get(status))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(api)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({
            "code": status.as_u16(),
            "status": status.canonical_reason().unwrap_or(""),
            "message": message.into(),
        })),
    )
        .into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn register(State(api): State<Api>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let Some(token) = bearer(&headers) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing Authorization: Bearer <worker join token> (the token is in the cluster's \
             <data-dir>/worker-join-token)",
        );
    };
    if sha256_hex(token) != api.worker_token_sha256 {
        return error(StatusCode::UNAUTHORIZED, "wrong worker join token");
    }
    let info: NodeInfo = match serde_json::from_slice(&body) {
        Ok(i) => i,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is not a worker description (NodeInfo JSON): {e}"),
            );
        }
    };
    let (reply, answer) = oneshot::channel();
    let command = Command::Register {
        info: Box::new(info),
        reply,
    };
    if api.commands.send(command).await.is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the cluster is shutting down",
        );
    }
    match answer.await {
        Ok(Err(refused)) => error(StatusCode::CONFLICT, refused),
        Ok(Ok(mut response)) => {
            // The worker's overlay subnet: the root's IPAM is the only allocator, so without a
            // root the worker registers without one (and gets it when it registers again).
            let has_root = api.root.borrow().address.is_some();
            let subnet = if has_root {
                api.subnets
                    .worker_subnet(&response.id, SUBNET_TIMEOUT)
                    .await
            } else {
                Err("the cluster runs without a root".to_owned())
            };
            match subnet {
                Ok(subnets) => {
                    response.subnet = Some(subnets.ipv4.base());
                    response.subnet_v6 = Some(subnets.ipv6.base());
                    // Only for a larger subnet, so a /26 answer stays what workers before
                    // subnet sizes read.
                    let prefix_len = subnets.ipv4.prefix_len();
                    response.subnet_prefix_len = (prefix_len
                        != oakestra_net::ipam::WORKER_SUBNET_IPV4_PREFIX_LEN)
                        .then_some(prefix_len);
                }
                Err(e) => tracing::warn!(
                    worker = %response.id,
                    "worker registered without an overlay subnet: {e}"
                ),
            }
            axum::Json(response).into_response()
        }
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the cluster is shutting down",
        ),
    }
}

async fn status(State(api): State<Api>) -> Response {
    let (reply, answer) = oneshot::channel();
    if api.commands.send(Command::Status(reply)).await.is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the cluster is shutting down",
        );
    }
    match answer.await {
        Ok(mut value) => {
            let root = api.root.borrow().clone();
            value["root"] = serde_json::to_value(root).unwrap_or_default();
            axum::Json(value).into_response()
        }
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the cluster is shutting down",
        ),
    }
}

async fn metrics(State(api): State<Api>, headers: HeaderMap) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !oakestra_daemon::metrics::authorized(api.metrics_token.as_deref(), given) {
        return error(
            StatusCode::UNAUTHORIZED,
            oakestra_daemon::metrics::unauthorized_message("cluster"),
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            oakestra_daemon::metrics::OPENMETRICS_CONTENT_TYPE,
        )],
        api.metrics.encode(),
    )
        .into_response()
}

async fn health() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}
