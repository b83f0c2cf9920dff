//! A fake root: serves the cluster link, hands every message of the cluster's session to the
//! test, and sends the test's commands down the session.
#![allow(dead_code)]

use std::net::SocketAddr;

use oakestra_cluster::proto::cluster_link_server::{ClusterLink, ClusterLinkServer};
use oakestra_cluster::proto::{
    ClusterMessage, RegisterReply, RegisterRequest, RootMessage, WorkerSubnetReply,
    WorkerSubnetRequest, cluster_message,
};
use tokio::sync::{Mutex, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// What the test holds.
pub struct FakeRoot {
    pub addr: SocketAddr,
    /// Every message the cluster sent.
    pub from_cluster: mpsc::UnboundedReceiver<cluster_message::Kind>,
    /// Commands for the cluster (delivered once it has a session).
    pub to_cluster: mpsc::Sender<RootMessage>,
}

struct Service {
    from_cluster: mpsc::UnboundedSender<cluster_message::Kind>,
    to_cluster: Mutex<Option<mpsc::Receiver<RootMessage>>>,
}

#[tonic::async_trait]
impl ClusterLink for Service {
    async fn register(
        &self,
        _request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        Ok(Response::new(RegisterReply {
            cluster_id: "fake-cluster".into(),
            session_secret: "secret".into(),
            inactive_after_secs: 30,
        }))
    }

    type SessionStream = ReceiverStream<Result<RootMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<ClusterMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let from_cluster = self.from_cluster.clone();
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                if let Some(kind) = m.kind {
                    let _ = from_cluster.send(kind);
                }
            }
        });
        let Some(mut commands) = self.to_cluster.lock().await.take() else {
            return Err(Status::unavailable("the fake root serves one session"));
        };
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(async move {
            while let Some(c) = commands.recv().await {
                if tx.send(Ok(c)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn worker_subnet(
        &self,
        _request: Request<WorkerSubnetRequest>,
    ) -> Result<Response<WorkerSubnetReply>, Status> {
        Ok(Response::new(WorkerSubnetReply {
            subnet_v4: "10.18.0.0".into(),
            subnet_v6: "fc00::".into(),
            prefix_len: None,
        }))
    }
}

impl FakeRoot {
    /// Serves on a free loopback port.
    pub async fn start() -> FakeRoot {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (from_tx, from_rx) = mpsc::unbounded_channel();
        let (to_tx, to_rx) = mpsc::channel(100_000);
        let service = Service {
            from_cluster: from_tx,
            to_cluster: Mutex::new(Some(to_rx)),
        };
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(ClusterLinkServer::new(service))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        FakeRoot {
            addr,
            from_cluster: from_rx,
            to_cluster: to_tx,
        }
    }
}
