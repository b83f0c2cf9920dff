//! The cluster's in-process link to the embedded broker under a burst: when the link is read
//! more slowly than workers publish, the broker pauses it; the link must resume it, or the
//! cluster never hears from any worker again (issue 20: every worker of a 1,000-worker
//! cluster was declared lost during a burst of 10,000 deploys, and none came back).

use std::time::Duration;

use oakestra_cluster::broker::{Credentials, sha256_hex, start_embedded};
use oakestra_cluster::cluster::Command;
use oakestra_cluster::inbox::Inbox;
use oakestra_cluster::mqtt::start_local;
use oakestra_proto::mqtt::NodeTopic;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_larger_than_the_links_buffer_reaches_the_cluster_completely() {
    const BURST: usize = 1500;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let credentials = Credentials::default();
    credentials.allow_hashed("w1", &sha256_hex("secret"));
    let link =
        start_embedded(format!("127.0.0.1:{port}").parse().unwrap(), credentials).expect("broker");
    // A small actor queue that nobody reads during the burst: the link's loop blocks on it
    // and the broker's buffer for the link fills up.
    let (commands, mut queue) = mpsc::channel::<Command>(16);
    let (_outgoing, outgoing_rx) = mpsc::unbounded_channel();
    let inbox = Inbox::default();
    start_local(link, inbox.clone(), commands, outgoing_rx);

    let mut options = MqttOptions::new("w1-test", "127.0.0.1", port);
    options.set_credentials("w1", "secret");
    let (client, mut eventloop) = AsyncClient::new(options, 4096);
    let (connected_tx, connected) = tokio::sync::oneshot::channel();
    let (acked_tx, acked) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut connected_tx = Some(connected_tx);
        let mut acked_tx = Some(acked_tx);
        let mut acks = 0;
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    if let Some(tx) = connected_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                    acks += 1;
                    if acks == BURST
                        && let Some(tx) = acked_tx.take()
                    {
                        let _ = tx.send(());
                    }
                }
                Ok(_) => {}
                // The broker's listener may not be up yet: rumqttc reconnects on the next poll.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), connected)
        .await
        .expect("connected to the embedded broker")
        .unwrap();
    let topic = NodeTopic::Job.for_node("w1");
    for i in 0..BURST {
        client
            .publish(&topic, QoS::AtLeastOnce, false, format!("{i}").into_bytes())
            .await
            .unwrap();
    }

    // The broker has all of them (acknowledged) while the actor still reads nothing; give its
    // router a moment to forward what it can to the link.
    tokio::time::timeout(Duration::from_secs(20), acked)
        .await
        .expect("the broker acknowledged the burst")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Now the actor reads: every message of the burst arrives, in order.
    let mut received = Vec::new();
    while received.len() < BURST {
        match tokio::time::timeout(Duration::from_secs(20), queue.recv()).await {
            Ok(Some(Command::Mqtt { payload, .. })) => {
                received.push(String::from_utf8(payload).unwrap())
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => panic!(
                "only {} of {BURST} messages reached the cluster",
                received.len()
            ),
        }
    }
    let expected: Vec<String> = (0..BURST).map(|i| i.to_string()).collect();
    assert_eq!(received, expected);
}
