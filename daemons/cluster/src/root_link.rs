//! The link to the root (gRPC, `oakestra.cluster.v1`): `Register`, then one `Session` stream
//! that starts with a full snapshot. On any failure: register again after a capped
//! exponential backoff. While the root is away the cluster keeps working; reports produced
//! meanwhile are superseded by the snapshot sent on reconnect.

use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;
use tonic::metadata::MetadataValue;

use crate::cluster::Command;
use crate::metrics::Metrics;
use crate::proto;
use crate::proto::cluster_link_client::ClusterLinkClient;

/// Metadata keys of the `Session` call (see cluster.proto).
pub const CLUSTER_ID_HEADER: &str = "x-oakestra-cluster-id";
/// Secret from `Register`.
pub const CLUSTER_SECRET_HEADER: &str = "x-oakestra-cluster-secret";

/// What the link knows, for the status page.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LinkState {
    /// `host:port` of the root, if configured.
    pub address: Option<String>,
    /// Cluster id the root gave us.
    pub cluster_id: Option<String>,
    /// Whether the session stream is up.
    pub connected: bool,
    /// Last error.
    pub last_error: Option<String>,
}

/// Asks the root for workers' overlay subnets over the current registration (the
/// `WorkerSubnet` call with the session credentials). Empty until the link has registered.
#[derive(Clone, Default)]
pub struct SubnetSource {
    current: std::sync::Arc<std::sync::Mutex<Option<SubnetCaller>>>,
}

#[derive(Clone)]
struct SubnetCaller {
    client: ClusterLinkClient<tonic::transport::Channel>,
    id: MetadataValue<tonic::metadata::Ascii>,
    secret: MetadataValue<tonic::metadata::Ascii>,
}

impl std::fmt::Debug for SubnetSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let registered = self.current.lock().map(|c| c.is_some()).unwrap_or(false);
        f.debug_struct("SubnetSource")
            .field("registered", &registered)
            .finish()
    }
}

impl SubnetSource {
    fn set(&self, caller: Option<SubnetCaller>) {
        if let Ok(mut c) = self.current.lock() {
            *c = caller;
        }
    }

    /// The worker's subnets (a /26 and a /120 unless the root hands out larger ones) from the
    /// root, waiting at most `timeout`. An error says why (no root link yet, refused, timed
    /// out, a subnet that is not one).
    pub async fn worker_subnet(
        &self,
        worker_id: &str,
        timeout: Duration,
    ) -> Result<oakestra_net::ipam::WorkerSubnets, String> {
        // A worker may register while the root link is still coming up (the cluster just
        // started): wait for it a moment, but not long, since the worker's registration answer
        // waits too and an unreachable root must not make workers look silent.
        let deadline = tokio::time::Instant::now() + timeout.min(LINK_WAIT);
        let caller = loop {
            if let Some(c) = self.current.lock().ok().and_then(|c| c.clone()) {
                break c;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "the cluster is not registered with its root (waited {LINK_WAIT:?})"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut request = Request::new(proto::WorkerSubnetRequest {
            worker_id: worker_id.to_owned(),
        });
        request.set_timeout(timeout);
        request
            .metadata_mut()
            .insert(CLUSTER_ID_HEADER, caller.id.clone());
        request
            .metadata_mut()
            .insert(CLUSTER_SECRET_HEADER, caller.secret.clone());
        let mut client = caller.client;
        let reply = tokio::time::timeout(timeout, client.worker_subnet(request))
            .await
            .map_err(|_| format!("the root did not answer within {timeout:?}"))?
            .map_err(|s| format!("the root refused: {} ({:?})", s.message(), s.code()))?
            .into_inner();
        let v4 = reply
            .subnet_v4
            .parse()
            .map_err(|_| format!("the root sent a bad IPv4 subnet {:?}", reply.subnet_v4))?;
        let v6 = reply
            .subnet_v6
            .parse()
            .map_err(|_| format!("the root sent a bad IPv6 subnet {:?}", reply.subnet_v6))?;
        // Absent: a root before subnet sizes, which hands out /26s.
        let prefix_len = reply
            .prefix_len
            .unwrap_or(u32::from(oakestra_net::ipam::WORKER_SUBNET_IPV4_PREFIX_LEN));
        let prefix_len = u8::try_from(prefix_len).unwrap_or(u8::MAX);
        let bad = |e: oakestra_net::ipam::IpamError| {
            format!("the root sent a bad worker subnet {v4}/{prefix_len}: {e}")
        };
        Ok(oakestra_net::ipam::WorkerSubnets {
            ipv4: oakestra_net::ipam::Ipv4Subnet::with_prefix(v4, prefix_len).map_err(bad)?,
            ipv6: oakestra_net::ipam::Ipv6Subnet::with_prefix(
                v6,
                oakestra_net::ipam::worker_ipv6_prefix_len(prefix_len),
            )
            .map_err(bad)?,
        })
    }
}

/// How long a worker subnet request waits for a root link that is not up yet.
pub const LINK_WAIT: Duration = Duration::from_secs(1);

/// Settings of the link.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// `host:port` of the root's gRPC server.
    pub root: String,
    /// What the cluster sends in `Register` on every (re)connect: name, location, join token.
    pub register: proto::RegisterRequest,
    /// First reconnect delay.
    pub backoff_base: Duration,
    /// Longest reconnect delay.
    pub backoff_cap: Duration,
    /// Filled with the current registration, for worker subnets.
    pub subnets: SubnetSource,
}

/// Runs the link until the actor is gone.
pub async fn run(
    settings: LinkSettings,
    commands: mpsc::Sender<Command>,
    mut reports: mpsc::UnboundedReceiver<proto::cluster_message::Kind>,
    state: watch::Sender<LinkState>,
    metrics: Metrics,
) {
    let mut delay = settings.backoff_base;
    loop {
        let sessions_before = metrics.root_sessions.get();
        match session(&settings, &commands, &mut reports, &state, &metrics).await {
            Ok(()) => return,
            Err(e) => {
                metrics.root_connected.set(0);
                tracing::warn!(
                    "root link to {}: {e}; reconnecting in {delay:?}",
                    settings.root
                );
                state.send_modify(|s| {
                    s.connected = false;
                    s.last_error = Some(e.clone());
                });
            }
        }
        if metrics.root_sessions.get() != sessions_before {
            // The session was up: start the backoff over.
            delay = settings.backoff_base;
        }
        // Drop reports while waiting: the snapshot on reconnect carries the latest state.
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                r = reports.recv() => if r.is_none() { return },
            }
        }
        delay =
            oakestra_daemon::Backoff::new(settings.backoff_base, settings.backoff_cap).next(delay);
    }
}

/// One registration + session. `Ok` only when the actor is gone.
async fn session(
    settings: &LinkSettings,
    commands: &mpsc::Sender<Command>,
    reports: &mut mpsc::UnboundedReceiver<proto::cluster_message::Kind>,
    state: &watch::Sender<LinkState>,
    metrics: &Metrics,
) -> Result<(), String> {
    let endpoint = format!("http://{}", settings.root);
    let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
        .map_err(|e| format!("bad root address {endpoint}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_keepalive(Some(Duration::from_secs(10)))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let mut client = ClusterLinkClient::new(channel)
        .max_decoding_message_size(16 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);
    let reply = client
        .register(settings.register.clone())
        .await
        .map_err(|s| format!("register refused: {} ({:?})", s.message(), s.code()))?
        .into_inner();
    state.send_modify(|s| s.cluster_id = Some(reply.cluster_id.clone()));

    // Everything queued so far is older than the snapshot taken next.
    while reports.try_recv().is_ok() {}
    let (snapshot_tx, snapshot_rx) = oneshot::channel();
    if commands.send(Command::Snapshot(snapshot_tx)).await.is_err() {
        return Ok(());
    }
    let Ok(snapshot) = snapshot_rx.await else {
        return Ok(());
    };
    let instances = snapshot.instances.len();

    let (out_tx, out_rx) = mpsc::channel::<proto::ClusterMessage>(1024);
    out_tx
        .send(proto::ClusterMessage {
            kind: Some(proto::cluster_message::Kind::Snapshot(snapshot)),
        })
        .await
        .map_err(|_| "session closed".to_owned())?;
    let mut request = Request::new(ReceiverStream::new(out_rx));
    let id: MetadataValue<_> = reply
        .cluster_id
        .parse()
        .map_err(|_| "the root sent a cluster id that is not valid metadata".to_owned())?;
    let secret: MetadataValue<_> = reply
        .session_secret
        .parse()
        .map_err(|_| "the root sent a secret that is not valid metadata".to_owned())?;
    settings.subnets.set(Some(SubnetCaller {
        client: client.clone(),
        id: id.clone(),
        secret: secret.clone(),
    }));
    request.metadata_mut().insert(CLUSTER_ID_HEADER, id);
    request.metadata_mut().insert(CLUSTER_SECRET_HEADER, secret);
    let mut inbound = client
        .session(request)
        .await
        .map_err(|s| format!("session refused: {} ({:?})", s.message(), s.code()))?
        .into_inner();
    tracing::info!(
        cluster_id = %reply.cluster_id,
        instances,
        "connected to the root at {}",
        settings.root
    );
    metrics.root_sessions.inc();
    metrics.root_connected.set(1);
    state.send_modify(|s| {
        s.connected = true;
        s.last_error = None;
    });

    loop {
        tokio::select! {
            report = reports.recv() => {
                let Some(kind) = report else { return Ok(()) };
                out_tx
                    .send(proto::ClusterMessage { kind: Some(kind) })
                    .await
                    .map_err(|_| "session stream closed".to_owned())?;
            }
            message = inbound.message() => match message {
                Ok(Some(proto::RootMessage { kind: Some(kind) })) => {
                    if commands.send(Command::Root(kind)).await.is_err() {
                        return Ok(());
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => return Err("the root closed the session".into()),
                Err(s) => return Err(format!("session ended: {} ({:?})", s.message(), s.code())),
            },
        }
    }
}
