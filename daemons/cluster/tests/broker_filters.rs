//! Routing of the embedded broker with the scale patches of `vendor/rumqttd` (issue 20): a
//! filter without a wildcard is found by hashing instead of being matched against every topic,
//! and a disconnection visits only the client's own filters. Routing must stay exactly MQTT's:
//! exact and wildcard filters subscribed before or after a topic was first published, and
//! again after a reconnection.

use std::time::Duration;

use oakestra_cluster::broker::{Credentials, sha256_hex, start_embedded};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// What a test client sees: publishes (topic, payload) and acknowledgements of subscriptions.
#[derive(Debug, PartialEq)]
enum Seen {
    Message(String, String),
    Subscribed,
    Connected,
}

struct TestClient {
    client: AsyncClient,
    seen: mpsc::UnboundedReceiver<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl TestClient {
    /// Connects as `user` with the MQTT client id `client_id`.
    async fn connect(port: u16, user: &str, client_id: &str) -> Self {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options.set_credentials(user, "secret");
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let (tx, seen) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let seen = match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => Seen::Message(
                        p.topic.clone(),
                        String::from_utf8_lossy(&p.payload).into_owned(),
                    ),
                    Ok(Event::Incoming(Packet::SubAck(_))) => Seen::Subscribed,
                    Ok(Event::Incoming(Packet::ConnAck(_))) => Seen::Connected,
                    Ok(_) => continue,
                    // The listener may not be up yet: rumqttc reconnects on the next poll.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.send(seen).is_err() {
                    return;
                }
            }
        });
        let mut this = Self { client, seen, task };
        assert_eq!(this.next().await, Seen::Connected);
        this
    }

    async fn next(&mut self) -> Seen {
        timeout(Duration::from_secs(10), self.seen.recv())
            .await
            .expect("an MQTT event within 10 s")
            .expect("the client's event loop runs")
    }

    async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        assert_eq!(self.next().await, Seen::Subscribed, "suback for {filter}");
    }

    async fn publish(&self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .await
            .unwrap();
    }

    async fn expect(&mut self, topic: &str, payload: &str) {
        assert_eq!(
            self.next().await,
            Seen::Message(topic.to_owned(), payload.to_owned())
        );
    }

    /// Nothing more arrives for a while.
    async fn expect_nothing(&mut self) {
        if let Ok(seen) = timeout(Duration::from_millis(300), self.seen.recv()).await {
            panic!("unexpected {seen:?}");
        }
    }

    async fn disconnect(self) {
        self.client.disconnect().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_and_wildcard_filters_route_like_mqtt_before_and_after_a_topic_is_known() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let credentials = Credentials::default();
    for user in ["cluster", "a", "b", "pub"] {
        credentials.allow_hashed(user, &sha256_hex("secret"));
    }
    let _link =
        start_embedded(format!("127.0.0.1:{port}").parse().unwrap(), credentials).expect("broker");

    let mut all = TestClient::connect(port, "cluster", "cluster-all").await;
    all.subscribe("nodes/+/control/deploy").await;
    let publisher = TestClient::connect(port, "pub", "publisher").await;

    // The topic becomes known to the broker through the wildcard subscriber.
    publisher.publish("nodes/a/control/deploy", "1").await;
    all.expect("nodes/a/control/deploy", "1").await;

    // An exact filter subscribed after its topic is known receives from then on.
    let mut a = TestClient::connect(port, "a", "a-ne").await;
    a.subscribe("nodes/a/control/deploy").await;
    publisher.publish("nodes/a/control/deploy", "2").await;
    a.expect("nodes/a/control/deploy", "2").await;
    all.expect("nodes/a/control/deploy", "2").await;

    // An exact filter subscribed before its topic is first published.
    let mut b = TestClient::connect(port, "b", "b-ne").await;
    b.subscribe("nodes/b/control/deploy").await;
    publisher.publish("nodes/b/control/deploy", "3").await;
    b.expect("nodes/b/control/deploy", "3").await;
    all.expect("nodes/b/control/deploy", "3").await;
    a.expect_nothing().await;

    // A wildcard filter subscribed after its topics are known receives them too, and a
    // multi-level one matches what a single-level one does not.
    let mut b_all = TestClient::connect(port, "b", "b-all").await;
    b_all.subscribe("nodes/b/#").await;
    publisher.publish("nodes/b/control/deploy", "4").await;
    publisher.publish("nodes/b/information", "5").await;
    b_all.expect("nodes/b/control/deploy", "4").await;
    b_all.expect("nodes/b/information", "5").await;
    b.expect("nodes/b/control/deploy", "4").await;
    all.expect("nodes/b/control/deploy", "4").await;
    b.expect_nothing().await;

    // A topic that only looks like a filter's prefix or extension does not match it.
    publisher.publish("nodes/a/control/deploy/x", "6").await;
    publisher.publish("nodes/a/control", "7").await;
    a.expect_nothing().await;
    all.expect_nothing().await;

    // Disconnected and connected again (the broker drops the client's waiters for its own
    // filters only): the same filter receives again, the other subscribers are unaffected.
    a.disconnect().await;
    let mut a = TestClient::connect(port, "a", "a-ne").await;
    a.subscribe("nodes/a/control/deploy").await;
    publisher.publish("nodes/a/control/deploy", "8").await;
    a.expect("nodes/a/control/deploy", "8").await;
    all.expect("nodes/a/control/deploy", "8").await;
    publisher.publish("nodes/b/control/deploy", "9").await;
    b.expect("nodes/b/control/deploy", "9").await;
    all.expect("nodes/b/control/deploy", "9").await;
    b_all.expect("nodes/b/control/deploy", "9").await;
}
