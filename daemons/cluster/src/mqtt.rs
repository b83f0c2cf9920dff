//! The cluster's own MQTT connection: subscribes to what workers publish and hands each
//! message to the actor (heartbeats and usage reports through the [`Inbox`], where only the
//! newest per worker waits; everything else through the actor's queue); publishes the actor's
//! commands. With the embedded broker it is an
//! in-process link ([`start_local`]); with an external broker a rumqttc client ([`start`])
//! that reconnects with capped exponential backoff and re-subscribes after every connect.

use std::str::FromStr;
use std::time::Duration;

use oakestra_proto::mqtt::{NodeTopic, Topic};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

use crate::cluster::Command;
use crate::inbox::Inbox;

/// Where and how the cluster's client connects.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// MQTT client id.
    pub client_id: String,
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// User name to authenticate with at the broker (none: anonymous).
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
}

const SUBSCRIPTIONS: [NodeTopic; 7] = [
    NodeTopic::Information,
    NodeTopic::Job,
    NodeTopic::JobsResources,
    // The overlay (issue 8): instances' network addresses, table queries, interests.
    NodeTopic::NetServiceDeployed,
    NodeTopic::NetTableQueryRequest,
    NodeTopic::NetInterestRemove,
    // Answers to the root's log requests.
    NodeTopic::Logs,
];

/// Starts the client: incoming worker messages go to `inbox` and `commands`, `(topic,
/// payload)` from `outgoing` are published with QoS 1.
pub fn start(
    settings: ClientSettings,
    inbox: Inbox,
    commands: mpsc::Sender<Command>,
    mut outgoing: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
) {
    let mut options = MqttOptions::new(&settings.client_id, &settings.host, settings.port);
    options.set_keep_alive(Duration::from_secs(10));
    options.set_max_packet_size(4 * 1024 * 1024, 4 * 1024 * 1024);
    options.set_clean_session(true);
    if let Some(user) = &settings.username {
        options.set_credentials(user.clone(), settings.password.clone().unwrap_or_default());
    }
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    // Commands are small and latency matters: no Nagle delay.
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);

    let publisher = client.clone();
    tokio::spawn(async move {
        while let Some((topic, payload)) = outgoing.recv().await {
            if let Err(e) = publisher
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
            {
                tracing::error!("MQTT publish failed: {e}");
            }
        }
    });

    tokio::spawn(async move {
        let mut delay = Duration::from_millis(100);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    tracing::info!("MQTT connected to {}:{}", settings.host, settings.port);
                    delay = Duration::from_millis(100);
                    for topic in SUBSCRIPTIONS {
                        let qos = if topic == NodeTopic::Information {
                            QoS::AtMostOnce
                        } else {
                            QoS::AtLeastOnce
                        };
                        if let Err(e) = client.subscribe(topic.all_nodes_filter(), qos).await {
                            tracing::error!("MQTT subscribe failed: {e}");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let Ok(Topic::Node { node, kind }) = Topic::from_str(&p.topic) else {
                        continue;
                    };
                    if !deliver(&inbox, &commands, node, kind, p.payload.to_vec()).await {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(
                        "MQTT connection to {}:{} failed: {e}; retrying in {delay:?}",
                        settings.host,
                        settings.port
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    });
}

/// Connects the actor to the embedded broker through its in-process link.
pub fn start_local(
    link: crate::broker::LocalLink,
    inbox: Inbox,
    commands: mpsc::Sender<Command>,
    mut outgoing: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
) {
    let (mut tx, mut rx) = link;
    for topic in SUBSCRIPTIONS {
        if let Err(e) = tx.subscribe(topic.all_nodes_filter()) {
            tracing::error!("embedded broker: subscribe failed: {e}");
        }
    }
    // LinkTx::publish may block on the router's channel: keep it off the async runtime.
    let spawned = std::thread::Builder::new()
        .name("mqtt-publish".into())
        .spawn(move || {
            while let Some((topic, payload)) = outgoing.blocking_recv() {
                if let Err(e) = tx.publish(topic, payload) {
                    tracing::error!("embedded broker: publish failed: {e}");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the MQTT publisher thread: {e}");
    }
    tokio::spawn(async move {
        loop {
            match rx.next().await {
                Ok(Some(rumqttd::Notification::Forward(forward))) => {
                    let Ok(topic) = std::str::from_utf8(&forward.publish.topic) else {
                        continue;
                    };
                    let Ok(Topic::Node { node, kind }) = Topic::from_str(topic) else {
                        continue;
                    };
                    let payload = forward.publish.payload.to_vec();
                    if !deliver(&inbox, &commands, node, kind, payload).await {
                        return;
                    }
                }
                // The router filled this link's buffer faster than it was read and paused the
                // link: it forwards nothing more until told the link is ready again (the
                // broker's own network links do the same). Without this a burst of more than
                // ~200 messages left the cluster deaf to every worker for good.
                Ok(Some(rumqttd::Notification::Unschedule)) => {
                    if let Err(e) = rx.wake().await {
                        tracing::error!("embedded broker link closed: {e}");
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!("embedded broker link closed: {e}");
                    return;
                }
            }
        }
    });
}

/// Hands one worker message on: stamped and kept in the inbox, or queued for the actor.
/// `false` once the actor is gone.
async fn deliver(
    inbox: &Inbox,
    commands: &mpsc::Sender<Command>,
    worker: String,
    kind: NodeTopic,
    payload: Vec<u8>,
) -> bool {
    match inbox.arrived(&worker, kind, payload, tokio::time::Instant::now()) {
        None => !commands.is_closed(),
        Some(payload) => commands
            .send(Command::Mqtt {
                worker,
                kind,
                payload,
            })
            .await
            .is_ok(),
    }
}
