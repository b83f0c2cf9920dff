//! A fake cluster orchestrator that speaks the real cluster-link gRPC protocol to a root, plus
//! a small harness that runs a root's cluster link in-process. Included by the
//! `tests/cluster_*.rs` files with `#[path = "support/fake_cluster.rs"] mod fake_cluster;`.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use oakestra_core::ids::ObjectId;
use oakestra_core::model::{ApplicationRecord, ServiceRecord};
use oakestra_root::cluster_link::{ClusterLink, LinkConfig};
use oakestra_root::grpc::proto::cluster_link_client::ClusterLinkClient;
use oakestra_root::grpc::proto::{
    ClusterMessage, Deploy, InstanceStatus, LogsReply, RegisterReply, RegisterRequest, Resources,
    RootMessage, Snapshot, Undeploy, WorkerSummary, WorkersReply, cluster_message, root_message,
};
use oakestra_root::grpc::{self, CLUSTER_ID_HEADER, CLUSTER_SECRET_HEADER};
use oakestra_root::{addresses, tokens};
use oakestra_store::{MemoryStore, Store, new_object_id};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// How long tests wait for something that should happen at once.
pub const WAIT: Duration = Duration::from_secs(10);

/// A root's cluster link served on a free loopback port.
pub struct Root {
    pub store: Arc<dyn Store>,
    pub link: Arc<ClusterLink>,
    pub addr: SocketAddr,
    /// A valid join token.
    pub token: String,
    stop: Option<oneshot::Sender<()>>,
}

impl Root {
    /// Waits until the cluster named `name` is registered and active.
    pub async fn wait_active(&self, name: &str) {
        eventually(&format!("{name} to be active"), || async {
            self.store
                .cluster_by_name(name)
                .await
                .unwrap()?
                .active
                .then_some(())
        })
        .await;
    }

    /// Serves a new link over a [`MemoryStore`].
    pub async fn start(config: LinkConfig) -> Root {
        Root::start_with(MemoryStore::shared(), config).await
    }

    /// Serves a new link over `store`.
    pub async fn start_with(store: Arc<dyn Store>, config: LinkConfig) -> Root {
        let link = ClusterLink::new(store.clone(), config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = link.clone();
        tokio::spawn(async move {
            grpc::serve(listener, served, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        let token = tokens::create(store.as_ref(), "tests").await.unwrap().token;
        Root {
            store,
            link,
            addr,
            token,
            stop: Some(stop),
        }
    }

    /// Stops the gRPC server.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    /// Stores an application with the services of `examples/sla-clientsrvr-container.json`
    /// (curl, nginx with rr_ip 10.30.55.55), addresses reserved. Returns the services.
    pub async fn create_clientsrvr(&self) -> Vec<ServiceRecord> {
        self.create_from(
            include_str!("../../../../examples/sla-clientsrvr-container.json"),
            None,
        )
        .await
    }

    /// Stores the application of an SLA (optionally renamed, so it can be stored twice).
    pub async fn create_from(&self, sla: &str, rename: Option<&str>) -> Vec<ServiceRecord> {
        let mut sla = oakestra_core::sla::parse_and_validate(sla).unwrap();
        let app = &mut sla.applications[0];
        if let Some(name) = rename {
            app.application_name = name.to_owned();
        }
        let app_id = new_object_id();
        let record = ApplicationRecord::new(app_id, "Admin", app);
        let mut services: Vec<ServiceRecord> = app
            .microservices
            .iter()
            .map(|m| ServiceRecord::new(new_object_id(), app_id, app, m))
            .collect();
        addresses::reserve_for_services(self.store.as_ref(), &mut services)
            .await
            .unwrap();
        self.store
            .create_application(&record, &services)
            .await
            .unwrap();
        services
    }

    /// The stored service.
    pub async fn service(&self, id: ObjectId) -> ServiceRecord {
        self.store.get_service(id).await.unwrap().unwrap()
    }

    /// A cluster registered under `name` with the valid token, not yet connected.
    pub fn cluster(&self, name: &str) -> FakeClusterBuilder {
        FakeClusterBuilder {
            addr: self.addr,
            name: name.to_owned(),
            token: self.token.clone(),
            resources: resources(1, 4.0, 4096),
            instances: Vec::new(),
        }
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Resources of `workers` equal workers with `cores` idle cores and `memory_mb` free each.
pub fn resources(workers: u32, cores: f64, memory_mb: u64) -> Resources {
    Resources {
        active_workers: workers,
        cpu_cores: cores * f64::from(workers),
        cpu_load_percent: 0.0,
        cpu_usage_percent: 0.0,
        memory_total_mb: memory_mb * u64::from(workers),
        memory_free_mb: memory_mb * u64::from(workers),
        gpus: 0,
        gpus_free: 0,
        max_worker_free_vcpus: if workers > 0 { cores } else { 0.0 },
        max_worker_free_memory_mb: if workers > 0 { memory_mb } else { 0 },
        max_worker_free_gpus: 0,
        virtualization: vec!["docker".into(), "container".into()],
        arch: vec!["amd64".into()],
        csi_drivers: vec![],
        addons: vec![],
        gpu_drivers: vec![],
    }
}

/// A status report.
pub fn status(job: impl ToString, n: u32, status: &str) -> InstanceStatus {
    InstanceStatus {
        job_id: job.to_string(),
        instance_number: n,
        status: status.to_owned(),
        worker_id: "worker-1".into(),
        host_ip: "192.168.1.10".into(),
        host_port: 50103,
        ..InstanceStatus::default()
    }
}

/// How a fake cluster joins.
pub struct FakeClusterBuilder {
    pub addr: SocketAddr,
    pub name: String,
    pub token: String,
    pub resources: Resources,
    pub instances: Vec<InstanceStatus>,
}

impl FakeClusterBuilder {
    pub fn token(mut self, token: &str) -> Self {
        self.token = token.to_owned();
        self
    }

    pub fn resources(mut self, r: Resources) -> Self {
        self.resources = r;
        self
    }

    /// Instances listed in the snapshot.
    pub fn holding(mut self, instances: Vec<InstanceStatus>) -> Self {
        self.instances = instances;
        self
    }

    /// `Register` only.
    pub async fn register(&self) -> Result<RegisterReply, tonic::Status> {
        let mut client = client(self.addr).await;
        client
            .register(RegisterRequest {
                name: self.name.clone(),
                location: "48.137,11.575".into(),
                join_token: self.token.clone(),
                manager_address: String::new(),
                manager_port: 10100,
                network_port: 10110,
                version: "test".into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// `Register`, then `Session` with the snapshot.
    pub async fn connect(self) -> Result<FakeCluster, tonic::Status> {
        let reply = self.register().await?;
        let snapshot = ClusterMessage {
            kind: Some(cluster_message::Kind::Snapshot(Snapshot {
                resources: Some(self.resources.clone()),
                instances: self.instances.clone(),
            })),
        };
        FakeCluster::open(self.addr, self.name, reply, Some(snapshot)).await
    }
}

async fn client(addr: SocketAddr) -> ClusterLinkClient<Channel> {
    ClusterLinkClient::connect(format!("http://{addr}"))
        .await
        .expect("the root's gRPC port accepts connections")
}

/// A connected fake cluster: what the root sends arrives in `commands`.
pub struct FakeCluster {
    pub id: String,
    pub name: String,
    pub secret: String,
    up: Option<mpsc::Sender<ClusterMessage>>,
    commands: mpsc::UnboundedReceiver<Result<RootMessage, tonic::Status>>,
    reader: tokio::task::JoinHandle<()>,
}

impl FakeCluster {
    /// Opens a session with the given credentials; `first` is the first message sent.
    pub async fn open(
        addr: SocketAddr,
        name: String,
        reply: RegisterReply,
        first: Option<ClusterMessage>,
    ) -> Result<FakeCluster, tonic::Status> {
        let (up, rx) = mpsc::channel(64);
        if let Some(first) = first {
            up.send(first).await.unwrap();
        }
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        request
            .metadata_mut()
            .insert(CLUSTER_ID_HEADER, reply.cluster_id.parse().unwrap());
        request
            .metadata_mut()
            .insert(CLUSTER_SECRET_HEADER, reply.session_secret.parse().unwrap());
        let mut inbound = client(addr).await.session(request).await?.into_inner();
        let (tx, commands) = mpsc::unbounded_channel();
        // This cluster has no workers: it answers log requests itself, with an error, as a
        // real cluster does for an instance it cannot ask a worker about.
        let answers = up.clone();
        let reader = tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(RootMessage {
                        kind: Some(root_message::Kind::LogsRequest(r)),
                    })) => {
                        let reply = LogsReply {
                            request_id: r.request_id,
                            logs: String::new(),
                            error: "the fake cluster has no worker to ask".into(),
                        };
                        let _ = answers
                            .send(ClusterMessage {
                                kind: Some(cluster_message::Kind::LogsReply(reply)),
                            })
                            .await;
                    }
                    // Its one worker, `fake-w1` on host `edge-1`, holding nothing.
                    Ok(Some(RootMessage {
                        kind: Some(root_message::Kind::WorkersRequest(r)),
                    })) => {
                        let reply = WorkersReply {
                            request_id: r.request_id,
                            workers: vec![WorkerSummary {
                                id: "fake-w1".into(),
                                host: "edge-1".into(),
                                ip: "192.0.2.1".into(),
                                active: true,
                                cpu_cores: 4.0,
                                vcpus_allocatable: 4.0,
                                memory_total_mb: 4096,
                                memory_free_mb: 4096,
                                memory_allocatable_mb: 4096,
                                overlay_mtu: 1360,
                                ..WorkerSummary::default()
                            }],
                        };
                        let _ = answers
                            .send(ClusterMessage {
                                kind: Some(cluster_message::Kind::WorkersReply(reply)),
                            })
                            .await;
                    }
                    Ok(Some(m)) => {
                        if tx.send(Ok(m)).is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        let _ = tx.send(Err(status));
                        break;
                    }
                }
            }
        });
        Ok(FakeCluster {
            id: reply.cluster_id,
            name,
            secret: reply.session_secret,
            up: Some(up),
            commands,
            reader,
        })
    }

    /// Sends a message up.
    pub async fn send(&self, kind: cluster_message::Kind) {
        self.up
            .as_ref()
            .expect("connected")
            .send(ClusterMessage { kind: Some(kind) })
            .await
            .unwrap();
    }

    pub async fn report(&self, s: InstanceStatus) {
        self.send(cluster_message::Kind::InstanceStatus(s)).await;
    }

    pub async fn report_resources(&self, r: Resources) {
        self.send(cluster_message::Kind::Resources(r)).await;
    }

    /// The next command, or `None` after `WAIT`.
    pub async fn next(&mut self) -> Option<Result<RootMessage, tonic::Status>> {
        tokio::time::timeout(WAIT, self.commands.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next command if one arrives within `d`.
    pub async fn next_within(&mut self, d: Duration) -> Option<Result<RootMessage, tonic::Status>> {
        tokio::time::timeout(d, self.commands.recv())
            .await
            .ok()
            .flatten()
    }

    /// Whether a command arrives within `d`.
    pub async fn quiet_for(&mut self, d: Duration) -> bool {
        tokio::time::timeout(d, self.commands.recv()).await.is_err()
    }

    pub async fn expect_deploy(&mut self) -> Deploy {
        match self.next().await {
            Some(Ok(RootMessage {
                kind: Some(root_message::Kind::Deploy(d)),
            })) => d,
            other => panic!("{}: expected a Deploy, got {other:?}", self.name),
        }
    }

    pub async fn expect_undeploy(&mut self) -> Undeploy {
        match self.next().await {
            Some(Ok(RootMessage {
                kind: Some(root_message::Kind::Undeploy(u)),
            })) => u,
            other => panic!("{}: expected an Undeploy, got {other:?}", self.name),
        }
    }

    /// Ends the stream (as if the cluster's connection broke).
    pub fn disconnect(mut self) {
        self.up.take();
        self.reader.abort();
    }
}

/// Polls `check` until it returns `Some` or `WAIT` passes.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
