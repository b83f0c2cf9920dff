//! The real `oakestra-cluster` binary with its embedded broker and with mosquitto: worker
//! registration and its join token, MQTT credentials (anonymous and wrong logins refused),
//! the worker registry and its liveness.

mod support;

use std::time::Duration;

use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet};
use support::{Broker, ClusterProcess, FakeWorker, Mosquitto, eventually, free_port};

/// Tries to connect; `true` when the broker accepted the login.
async fn login_accepted(port: u16, client_id: &str, login: Option<(&str, &str)>) -> bool {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    if let Some((u, p)) = login {
        options.set_credentials(u, p);
    }
    let (_client, mut eventloop) = AsyncClient::new(options, 10);
    let outcome = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    return ack.code == ConnectReturnCode::Success;
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await;
    outcome.unwrap_or(false)
}

fn worker_entry<'a>(status: &'a serde_json::Value, id: &str) -> Option<&'a serde_json::Value> {
    status["workers"].as_array()?.iter().find(|w| w["id"] == id)
}

#[tokio::test]
async fn embedded_broker_needs_credentials_and_workers_are_tracked() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = free_port();
    let cluster =
        ClusterProcess::start("solo", dir.path(), Broker::Embedded(mqtt), None, &[]).await;
    let token = cluster.worker_token();
    assert_eq!(token.len(), 32);

    // The join token is required.
    let http = reqwest::Client::new();
    let url = format!("{}/api/node/register", cluster.http);
    let r = http
        .post(&url)
        .json(&serde_json::json!({"host": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(&url)
        .bearer_auth("not-the-token")
        .json(&serde_json::json!({"host": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("token"),
        "{body}"
    );

    // Anonymous and wrong logins are refused by the broker.
    assert!(
        !login_accepted(mqtt, "anon", None).await,
        "anonymous login accepted"
    );
    assert!(!login_accepted(mqtt, "intruder", Some(("nobody", "guess"))).await);

    let mut worker = FakeWorker::start(&cluster.http, &token, "edge-1", 2048).await;
    let status = eventually("the worker to be active", || async {
        let s = cluster.status().await;
        worker_entry(&s, &worker.id)
            .filter(|w| w["active"] == true)
            .map(|_| s.clone())
    })
    .await;
    let w = worker_entry(&status, &worker.id).unwrap();
    assert_eq!(w["host"], "edge-1");
    assert_eq!(w["vcpus"], 8);
    assert_eq!(status["resources"]["active_workers"], 1);
    assert_eq!(status["resources"]["memory_free_mb"], 2048);

    // A worker's password is not valid for another username.
    assert!(!login_accepted(mqtt, "x", Some(("oakestra-cluster", "guess"))).await);

    // Silent for longer than the timeout (3 s in the tests) → inactive; back → active.
    worker.stop();
    eventually("the worker to be inactive", || async {
        let s = cluster.status().await;
        worker_entry(&s, &worker.id)
            .filter(|w| w["active"] == false)
            .map(|_| ())
    })
    .await;
    let s = cluster.status().await;
    assert_eq!(s["resources"]["active_workers"], 0);
    let id = worker.id.clone();
    worker.connect(&cluster.http, &token).await;
    assert_eq!(worker.id, id, "re-registration keeps the id");
    eventually("the worker to be active again", || async {
        let s = cluster.status().await;
        worker_entry(&s, &worker.id)
            .filter(|w| w["active"] == true)
            .map(|_| ())
    })
    .await;

    eventually(
        "the metrics to show one active and one lost worker",
        || async {
            let metrics = reqwest::get(format!("{}/metrics", cluster.http))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (metrics.contains("oakestra_cluster_workers_active 1")
                && metrics.contains("oakestra_cluster_workers_lost_total 1"))
            .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn mosquitto_with_password_file_and_acl() {
    let broker = Mosquitto::start(&[
        ("oakestra-cluster", "cluster-secret"),
        ("oakestra-worker", "worker-secret"),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cluster = ClusterProcess::start(
        "mosq",
        dir.path(),
        Broker::External {
            port: broker.port,
            cluster_user: "oakestra-cluster".into(),
            cluster_password: "cluster-secret".into(),
            worker_user: "oakestra-worker".into(),
            worker_password: "worker-secret".into(),
        },
        None,
        &[],
    )
    .await;
    assert!(
        !login_accepted(broker.port, "anon", None).await,
        "anonymous login accepted"
    );

    let token = cluster.worker_token();
    let reg: oakestra_proto::mqtt::RegisterResponse = reqwest::Client::new()
        .post(format!("{}/api/node/register", cluster.http))
        .bearer_auth(&token)
        .json(&serde_json::json!({"host": "probe", "vcpus": 1, "memory": 10}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reg.mqtt_broker_port, broker.port);
    assert_eq!(reg.mqtt_broker_host, "127.0.0.1");
    assert_eq!(reg.mqtt_username, "oakestra-worker");

    let worker = FakeWorker::start(&cluster.http, &token, "edge-m", 1024).await;
    eventually(
        "the worker's reports to arrive through mosquitto",
        || async {
            let s = cluster.status().await;
            worker_entry(&s, &worker.id)
                .filter(|w| w["active"] == true && w["memory_free_mb"] == 1024)
                .map(|_| ())
        },
    )
    .await;
    eventually("information reports through mosquitto", || async {
        let metrics = reqwest::get(format!("{}/metrics", cluster.http))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let line = metrics
            .lines()
            .find(|l| l.starts_with("oakestra_cluster_mqtt_messages_total"))?;
        let n: u64 = line.rsplit(' ').next()?.parse().ok()?;
        (n >= 4).then_some(())
    })
    .await;
}
