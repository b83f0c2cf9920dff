//! The cluster-facing gRPC server (tonic, default port 50052). The protocol is
//! `oakestra-proto/proto/cluster.proto` (package `oakestra.cluster.v1`); the logic behind it is
//! [`crate::cluster_link::ClusterLink`].
//!
//! [`proto`] holds the generated messages, the server and the client
//! (`proto::cluster_link_client::ClusterLinkClient`), so a cluster written in Rust can use this
//! crate's generated client (it is `oakestra_proto::grpc`) or compile the same `.proto` itself.

pub mod limit;
mod server;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Server;

use crate::cluster_link::ClusterLink;

pub use server::ClusterLinkService;

/// Generated protobuf messages, server and client of `oakestra.cluster.v1` (the contract crate's
/// [`oakestra_proto::grpc`]).
pub use oakestra_proto::grpc as proto;

/// Default port of the cluster link.
pub const DEFAULT_PORT: u16 = 50052;

/// Metadata key carrying the cluster id on `Session`.
pub const CLUSTER_ID_HEADER: &str = "x-oakestra-cluster-id";

/// Metadata key carrying the session secret on `Session`.
pub const CLUSTER_SECRET_HEADER: &str = "x-oakestra-cluster-secret";

/// Largest message accepted from a cluster (a snapshot of many instances).
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The server failed to run.
#[derive(Debug, thiserror::Error)]
#[error("cluster gRPC server failed: {0}")]
pub struct ServeError(#[from] tonic::transport::Error);

/// Serves the cluster link on `listener` until `shutdown` completes, and starts the link's
/// background work (liveness timers, retries of pending instances).
///
/// ```no_run
/// # async fn demo(link: std::sync::Arc<oakestra_root::cluster_link::ClusterLink>) {
/// let listener = tokio::net::TcpListener::bind(("0.0.0.0", oakestra_root::grpc::DEFAULT_PORT))
///     .await
///     .unwrap();
/// oakestra_root::grpc::serve(listener, link, std::future::pending()).await.unwrap();
/// # }
/// ```
pub async fn serve(
    listener: TcpListener,
    link: Arc<ClusterLink>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    link.start();
    let keepalive = link.config().keepalive;
    let service = proto::cluster_link_server::ClusterLinkServer::new(ClusterLinkService::new(link))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    Server::builder()
        .http2_keepalive_interval(keepalive)
        .http2_keepalive_timeout(keepalive.map(|k| k.max(Duration::from_secs(1))))
        .add_service(service)
        .serve_with_incoming_shutdown(
            limit::incoming(
                listener,
                oakestra_daemon::http::HttpLimits {
                    max_connections: limit::MAX_CONNECTIONS,
                    ..Default::default()
                }
                .effective_max_connections(oakestra_daemon::http::current_file_limit()),
                limit::FIRST_BYTE_TIMEOUT,
            ),
            shutdown,
        )
        .await?;
    Ok(())
}
