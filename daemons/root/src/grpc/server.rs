//! The tonic service: decodes calls and hands them to [`ClusterLink`].

use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::proto::cluster_link_server::ClusterLink as ClusterLinkRpc;
use super::proto::{
    ClusterMessage, RegisterReply, RegisterRequest, RootMessage, WorkerSubnetReply,
    WorkerSubnetRequest,
};
use super::{CLUSTER_ID_HEADER, CLUSTER_SECRET_HEADER};
use crate::cluster_link::ClusterLink;

/// The gRPC face of a [`ClusterLink`].
#[derive(Debug, Clone)]
pub struct ClusterLinkService {
    link: Arc<ClusterLink>,
}

impl ClusterLinkService {
    /// Serves `link`.
    pub fn new(link: Arc<ClusterLink>) -> Self {
        Self { link }
    }
}

fn metadata<'a, T>(request: &'a Request<T>, key: &str) -> &'a str {
    request
        .metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tonic::async_trait]
impl ClusterLinkRpc for ClusterLinkService {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        let peer = request.remote_addr();
        let reply = self
            .link
            .register(request.into_inner(), peer)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(reply))
    }

    type SessionStream = ReceiverStream<Result<RootMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<ClusterMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let id = metadata(&request, CLUSTER_ID_HEADER).to_owned();
        let secret = metadata(&request, CLUSTER_SECRET_HEADER).to_owned();
        let rx = self
            .link
            .connect(&id, &secret, request.into_inner())
            .map_err(Status::from)?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn worker_subnet(
        &self,
        request: Request<WorkerSubnetRequest>,
    ) -> Result<Response<WorkerSubnetReply>, Status> {
        let id = metadata(&request, CLUSTER_ID_HEADER).to_owned();
        let secret = metadata(&request, CLUSTER_SECRET_HEADER).to_owned();
        let reply = self
            .link
            .worker_subnet(&id, &secret, &request.into_inner().worker_id)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(reply))
    }
}
