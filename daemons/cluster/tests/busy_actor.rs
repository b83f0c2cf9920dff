//! The actor while it is busy: workers that keep reporting are not declared silent, however
//! long the actor took to get to their reports (issue 20: a burst of 10,000 deploys kept the
//! actor from applying heartbeats for more than the 10 s liveness timeout, and every worker
//! was declared lost although all of them were reporting), and registrations that arrive
//! together share one durable commit.

use std::sync::Arc;
use std::time::Duration;

use oakestra_cluster::broker::Credentials;
use oakestra_cluster::cluster::{Actor, BrokerAdvert, Command, Outputs};
use oakestra_cluster::inbox::Inbox;
use oakestra_cluster::metrics::Metrics;
use oakestra_cluster::sched::{Placer, SchedulerChoice};
use oakestra_cluster::state::Timing;
use oakestra_proto::mqtt::{NodeInfo, NodeTopic, Payload, WireVersion};
use oakestra_store::{Collection, Store};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

async fn actor() -> (Actor, Inbox) {
    actor_on(Arc::new(oakestra_store::MemoryStore::new())).await
}

async fn actor_on(store: Arc<oakestra_store::MemoryStore>) -> (Actor, Inbox) {
    let (mqtt, _) = mpsc::unbounded_channel();
    let (root, _) = mpsc::unbounded_channel();
    let mut actor = Actor::load(
        "c1".into(),
        store,
        Timing {
            worker_timeout: Duration::from_secs(10),
            // w2 below never reports: no extra time for a first report.
            first_report_grace: Duration::ZERO,
            ..Timing::default()
        },
        Outputs { mqtt, root },
        Placer::new(SchedulerChoice::default(), Duration::from_secs(1)),
        Credentials::default(),
        BrokerAdvert::default(),
        Metrics::new(),
    )
    .await
    .expect("actor");
    let inbox = Inbox::default();
    actor.set_reports(inbox.clone());
    (actor, inbox)
}

fn info(id: &str, cpu_percent: f64) -> NodeInfo {
    NodeInfo {
        wire_version: WireVersion::CURRENT,
        id: id.into(),
        host: id.into(),
        vcpus: 2,
        memory: 1000,
        memory_total: Some(1000),
        cpu_percent,
        virtualization: vec!["docker".into()],
        ..NodeInfo::default()
    }
}

async fn register(actor: &mut Actor, id: &str) {
    let (reply, answer) = oneshot::channel();
    actor
        .handle(Command::Register {
            info: Box::new(info(id, 0.0)),
            reply,
        })
        .await;
    answer.await.unwrap().expect("registered");
}

async fn workers(actor: &mut Actor) -> Vec<Value> {
    let (reply, answer) = oneshot::channel();
    actor.handle(Command::Status(reply)).await;
    let mut status = answer.await.unwrap();
    let mut workers: Vec<Value> = serde_json::from_value(status["workers"].take()).unwrap();
    workers.sort_by_key(|w| w["id"].as_str().unwrap_or_default().to_owned());
    workers
}

#[tokio::test(start_paused = true)]
async fn heartbeats_that_arrive_while_the_actor_is_busy_keep_their_workers_alive() {
    let (mut actor, inbox) = actor().await;
    register(&mut actor, "w1").await;
    register(&mut actor, "w2").await;
    // The actor does nothing for 30 s (three liveness timeouts) while the MQTT loop hears
    // w1's heartbeat every 2 s; w2 stays silent.
    for round in 1..=15 {
        tokio::time::advance(Duration::from_secs(2)).await;
        let heartbeat = info("w1", f64::from(round)).to_bytes();
        assert_eq!(
            inbox.arrived("w1", NodeTopic::Information, heartbeat, Instant::now()),
            None,
            "a heartbeat waits in the inbox, not in the actor's queue"
        );
    }
    actor.tick().await;
    let workers = workers(&mut actor).await;
    assert_eq!(workers[0]["id"], "w1");
    assert_eq!(workers[0]["active"], true, "w1 kept reporting: {workers:?}");
    assert_eq!(
        workers[0]["cpu_percent"], 15.0,
        "the newest heartbeat is the one applied"
    );
    assert_eq!(workers[1]["id"], "w2");
    assert_eq!(workers[1]["active"], false, "w2 was silent: {workers:?}");
}

#[tokio::test]
async fn registrations_arriving_together_share_one_commit_and_are_answered_once_stored() {
    let store = Arc::new(oakestra_store::MemoryStore::new());
    let (actor, _inbox) = actor_on(store.clone()).await;
    let (commands, inbox) = mpsc::channel(4096);
    let mut answers = Vec::new();
    for i in 0..200 {
        let (reply, answer) = oneshot::channel();
        commands
            .send(Command::Register {
                info: Box::new(info(&format!("w{i}"), 0.0)),
                reply,
            })
            .await
            .unwrap();
        answers.push(answer);
    }
    let running = tokio::spawn(actor.run(inbox));
    for answer in answers {
        let response = answer.await.unwrap().expect("registered");
        assert!(
            store
                .get(Collection::Workers, &response.id)
                .await
                .unwrap()
                .is_some(),
            "answered only once stored"
        );
    }
    let commits = store.commits();
    assert!(
        (1..=2).contains(&commits),
        "200 registrations took {commits} commits"
    );
    drop(commands);
    running.await.unwrap();
}
