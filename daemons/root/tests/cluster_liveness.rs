//! Liveness with virtual time: the link is driven directly (no network), so the 30 s default
//! timeout is tested exactly with `tokio::time::pause`.

use std::sync::Arc;
use std::time::Duration;

use oakestra_core::ids::ClusterId;
use oakestra_root::cluster_link::{ClusterLink, LinkConfig};
use oakestra_root::grpc::proto::{
    ClusterMessage, RegisterRequest, Resources, RootMessage, Snapshot, cluster_message,
};
use oakestra_root::tokens;
use oakestra_store::{MemoryStore, Store};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

type Up = mpsc::Sender<Result<ClusterMessage, tonic::Status>>;
type Down = mpsc::Receiver<Result<RootMessage, tonic::Status>>;

async fn join(link: &Arc<ClusterLink>, token: &str, name: &str) -> (ClusterId, Up, Down) {
    let reply = link
        .register(
            RegisterRequest {
                name: name.into(),
                join_token: token.into(),
                ..RegisterRequest::default()
            },
            None,
        )
        .await
        .unwrap();
    let (up, rx) = mpsc::channel(8);
    up.send(Ok(ClusterMessage {
        kind: Some(cluster_message::Kind::Snapshot(Snapshot {
            resources: Some(Resources {
                active_workers: 1,
                cpu_cores: 2.0,
                memory_total_mb: 1024,
                memory_free_mb: 1024,
                max_worker_free_vcpus: 2.0,
                max_worker_free_memory_mb: 1024,
                virtualization: vec!["container".into()],
                ..Resources::default()
            }),
            instances: vec![],
        })),
    }))
    .await
    .unwrap();
    let down = link
        .connect(
            &reply.cluster_id,
            &reply.session_secret,
            ReceiverStream::new(rx),
        )
        .unwrap();
    (ClusterId(reply.cluster_id), up, down)
}

async fn active(store: &Arc<dyn Store>, id: &ClusterId) -> bool {
    store.get_cluster(id).await.unwrap().unwrap().active
}

async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_cluster_is_inactive_exactly_after_the_default_timeout() {
    let store: Arc<dyn Store> = MemoryStore::shared();
    let token = tokens::create(store.as_ref(), "t").await.unwrap().token;
    let link = ClusterLink::new(store.clone(), LinkConfig::default());
    link.start();
    let (id, up, _down) = join(&link, &token, "edge").await;
    settle().await;
    assert!(active(&store, &id).await);
    assert!(link.is_connected(&id));

    drop(up); // the stream ends
    settle().await;
    assert!(!link.is_connected(&id));
    tokio::time::sleep(Duration::from_secs(29)).await;
    settle().await;
    assert!(active(&store, &id).await, "still within the 30 s grace");
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    assert!(!active(&store, &id).await, "inactive after 30 s");
}

#[tokio::test(start_paused = true)]
async fn reconnecting_within_the_timeout_keeps_the_cluster_active() {
    let store: Arc<dyn Store> = MemoryStore::shared();
    let token = tokens::create(store.as_ref(), "t").await.unwrap().token;
    let link = ClusterLink::new(store.clone(), LinkConfig::default());
    link.start();
    let (id, up, _down) = join(&link, &token, "edge").await;
    settle().await;
    drop(up);
    settle().await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (id2, _up2, _down2) = join(&link, &token, "edge").await;
    assert_eq!(id, id2);
    settle().await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    settle().await;
    assert!(active(&store, &id).await, "the old timer must not fire");
    assert!(link.is_connected(&id));
}

#[tokio::test(start_paused = true)]
async fn clusters_active_in_the_store_get_the_timeout_to_reconnect_after_a_restart() {
    let store: Arc<dyn Store> = MemoryStore::shared();
    let token = tokens::create(store.as_ref(), "t").await.unwrap().token;
    let first = ClusterLink::new(store.clone(), LinkConfig::default());
    let (id, _up, _down) = join(&first, &token, "edge").await;
    settle().await;
    assert!(active(&store, &id).await);

    // A new root process over the same store: nobody is connected.
    let second = ClusterLink::new(store.clone(), LinkConfig::default());
    second.start();
    settle().await;
    tokio::time::sleep(Duration::from_secs(25)).await;
    settle().await;
    assert!(active(&store, &id).await);
    tokio::time::sleep(Duration::from_secs(10)).await;
    settle().await;
    assert!(!active(&store, &id).await);
}
