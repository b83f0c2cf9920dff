//! The worker's link to its cluster: HTTP registration (with capped backoff while the cluster
//! is unreachable) and the MQTT session (control topics in, reports out).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oakestra_proto::mqtt::{
    DeleteCommand, DeployCommand, JobStatusReport, LogsRequest, NodeInfo, NodeTopic, Payload,
    RegisterResponse,
};
use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS};
use tokio::sync::watch;

use oakestra_daemon::Backoff;

use crate::config::{Config, MAX_BACKOFF};
use crate::engine::{Engine, Reporter};
use crate::info::InfoCollector;
use crate::metrics::Metrics;
use crate::state::Identity;

/// Why a registration attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// No answer.
    #[error(
        "cannot reach the cluster at {url}: {reason}; is oakestra-cluster running there and is the port open?"
    )]
    Unreachable {
        /// The URL.
        url: String,
        /// The error.
        reason: String,
    },
    /// The cluster answered with an error.
    #[error("the cluster at {url} refused the registration ({status}): {body}{hint}")]
    Refused {
        /// The URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// Its message.
        body: String,
        /// What to do.
        hint: &'static str,
    },
    /// The answer is not a registration answer.
    #[error("the cluster at {url} answered something that is not a registration: {reason}")]
    BadAnswer {
        /// The URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
}

/// One `POST /api/node/register`.
pub async fn register_once(
    http: &reqwest::Client,
    config: &Config,
    body: &NodeInfo,
) -> Result<RegisterResponse, RegisterError> {
    let scheme = if config.cluster_ca.is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!(
        "{scheme}://{}/api/node/register",
        config.cluster.authority()
    );
    let response = http
        .post(&url)
        .bearer_auth(&config.token)
        .json(body)
        .send()
        .await
        .map_err(|e| RegisterError::Unreachable {
            url: url.clone(),
            reason: error_chain(&e),
        })?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        let hint = match status.as_u16() {
            401 | 403 => "; check --token (the cluster's worker join token)",
            409 => "; registering as a new worker",
            _ => "",
        };
        return Err(RegisterError::Refused {
            url,
            status: status.as_u16(),
            body: text.chars().take(300).collect(),
            hint,
        });
    }
    let answer: RegisterResponse =
        serde_json::from_str(&text).map_err(|e| RegisterError::BadAnswer {
            url: url.clone(),
            reason: e.to_string(),
        })?;
    if answer.id.is_empty() || answer.id.contains(['/', '+', '#']) {
        return Err(RegisterError::BadAnswer {
            url,
            reason: format!("worker id {:?} cannot be used in MQTT topics", answer.id),
        });
    }
    Ok(answer)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Resolves once `true` is sent (or the sender is gone).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// Registration retries: 1 s doubling up to [`MAX_BACKOFF`].
const REGISTER_BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), MAX_BACKOFF);
/// How long a connection to the broker may take (TCP and MQTT CONNECT/CONNACK). rumqttc's 5 s
/// default gave up on connects that were progressing when thousands of workers connected at
/// once, and every abandoned attempt cost the broker a disconnection and a new connect
/// (issue 20).
const BROKER_CONNECT_TIMEOUT_SECS: u64 = 20;
/// Broker reconnects: 500 ms doubling up to 10 s.
const BROKER_BACKOFF: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));

/// Registers, retrying with capped backoff until it works or `shutdown` is set. The body
/// carries the id the worker had before, so the cluster keeps its identity.
pub async fn register(
    http: &reqwest::Client,
    config: &Config,
    mut body: NodeInfo,
    previous: Option<&Identity>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Identity> {
    if let Some(previous) = previous {
        body.id.clone_from(&previous.id);
        body.worker_secret = if previous.worker_secret.is_empty() {
            previous.mqtt_password.clone()
        } else {
            previous.worker_secret.clone()
        };
    }
    let mut wait = REGISTER_BACKOFF.base;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match register_once(http, config, &body).await {
            Ok(answer) => {
                let broker_host = match &config.mqtt_host {
                    Some(h) => h.clone(),
                    None => {
                        let named = answer.broker_host(&config.cluster.host);
                        if named == "0.0.0.0" || named == "::" {
                            config.cluster.host.clone()
                        } else {
                            named.to_owned()
                        }
                    }
                };
                if let Some(p) = previous
                    && p.id != answer.id
                {
                    tracing::warn!(old = %p.id, new = %answer.id, "the cluster gave this worker a new id");
                }
                tracing::info!(id = %answer.id, broker = %format!("{broker_host}:{}", answer.mqtt_broker_port), "registered with the cluster");
                // The root hands a worker id the same subnet every time; when this answer has
                // none (the cluster's root link is down), keep the one from before.
                let same_worker = previous.filter(|p| p.id == answer.id);
                let (subnet, subnet_v6, subnet_prefix_len) = match (answer.subnet, answer.subnet_v6)
                {
                    (Some(v4), Some(v6)) => (Some(v4), Some(v6), answer.subnet_prefix_len),
                    _ => same_worker.map_or((None, None, None), |p| {
                        (p.subnet, p.subnet_v6, p.subnet_prefix_len)
                    }),
                };
                let prefix_len =
                    subnet_prefix_len.unwrap_or(oakestra_net::ipam::WORKER_SUBNET_IPV4_PREFIX_LEN);
                match subnet {
                    Some(s) => {
                        tracing::info!(subnet = %format!("{s}/{prefix_len}"), "overlay subnet")
                    }
                    None => tracing::warn!(
                        "the cluster gave no overlay subnet (is it linked to a root?); \
                         instances get no overlay address until the worker registers again"
                    ),
                }
                return Some(Identity {
                    subnet,
                    subnet_v6,
                    subnet_prefix_len,
                    id: answer.id,
                    cluster: config.cluster.authority(),
                    broker_host,
                    broker_port: answer.mqtt_broker_port,
                    mqtt_username: answer.mqtt_username,
                    mqtt_password: answer.mqtt_password,
                    worker_secret: answer.worker_secret,
                });
            }
            Err(e) => {
                if matches!(e, RegisterError::Refused { status: 409, .. }) && !body.id.is_empty() {
                    // The cluster knows this id under another secret (state copied from
                    // another worker, or the cluster's records were replaced): start over as
                    // a new worker rather than retry what cannot succeed.
                    tracing::warn!(old = %body.id, "{e}");
                    body.id.clear();
                    body.worker_secret.clear();
                    continue;
                }
                if attempt == 1 || attempt.is_power_of_two() {
                    tracing::warn!(
                        "registration failed (attempt {attempt}, next in {wait:?}; instances keep running): {e}"
                    );
                } else {
                    tracing::debug!("registration failed (attempt {attempt}): {e}");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped(shutdown) => return None,
        }
        wait = REGISTER_BACKOFF.next(wait);
    }
}

/// Publishes status reports on the current MQTT session, if any.
#[derive(Debug, Default)]
pub struct MqttReporter {
    session: Mutex<Option<(AsyncClient, String)>>,
    connected: AtomicBool,
    /// The overlay, which gets the table query answers.
    overlay: std::sync::OnceLock<Arc<crate::overlay::Overlay>>,
}

impl crate::overlay::NetPublisher for MqttReporter {
    fn publish(&self, topic: NodeTopic, payload: Vec<u8>) {
        if !self.is_connected() {
            return;
        }
        if let Some((client, id)) = self.session()
            && let Err(e) =
                client.try_publish(topic.for_node(&id), QoS::AtLeastOnce, false, payload)
        {
            tracing::warn!("{} not sent: {e}", topic.for_node(&id));
        }
    }
}

impl MqttReporter {
    fn set_session(&self, session: Option<(AsyncClient, String)>) {
        *self
            .session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = session;
    }

    fn session(&self) -> Option<(AsyncClient, String)> {
        self.session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Hands table query answers to `overlay`.
    pub fn set_overlay(&self, overlay: Arc<crate::overlay::Overlay>) {
        let _ = self.overlay.set(overlay);
    }

    /// `true` while the broker session is up.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

impl Reporter for MqttReporter {
    fn job_status(&self, report: JobStatusReport) {
        if !self.is_connected() {
            return; // sent with the snapshot on reconnect
        }
        if let Some((client, id)) = self.session()
            && let Err(e) = client.try_publish(
                NodeTopic::Job.for_node(&id),
                QoS::AtLeastOnce,
                false,
                report.to_bytes(),
            )
        {
            tracing::warn!("status report not sent now (it goes with the next snapshot): {e}");
        }
    }
}

/// How an MQTT session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// Shutdown was requested.
    Shutdown,
    /// The broker rejects the credentials: register again.
    Rejected,
}

/// Runs one MQTT session with `identity` until shutdown or until the broker keeps rejecting
/// the credentials. Reconnects by itself (capped backoff) while the broker is unreachable.
pub async fn session(
    engine: &Arc<Engine>,
    reporter: &Arc<MqttReporter>,
    identity: &Identity,
    collector: &mut InfoCollector,
    config: &Config,
    shutdown: &mut watch::Receiver<bool>,
) -> SessionEnd {
    let mut options = MqttOptions::new(
        format!("{}-ne", identity.id),
        identity.broker_host.clone(),
        identity.broker_port,
    );
    options.set_keep_alive(Duration::from_secs(20));
    options.set_clean_session(true);
    options.set_max_packet_size(1 << 20, 1 << 20);
    if !identity.mqtt_username.is_empty() {
        options.set_credentials(
            identity.mqtt_username.clone(),
            identity.mqtt_password.clone(),
        );
    }
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    let mut network = eventloop.network_options();
    network.set_connection_timeout(BROKER_CONNECT_TIMEOUT_SECS);
    eventloop.set_network_options(network);
    reporter.set_session(Some((client.clone(), identity.id.clone())));
    let deploy_topic = NodeTopic::ControlDeploy.for_node(&identity.id);
    let delete_topic = NodeTopic::ControlDelete.for_node(&identity.id);
    let info_topic = NodeTopic::Information.for_node(&identity.id);
    let resources_topic = NodeTopic::JobsResources.for_node(&identity.id);
    let table_topic = NodeTopic::NetTableQueryResult.for_node(&identity.id);
    let logs_topic = NodeTopic::ControlLogs.for_node(&identity.id);
    let memory_total = collector.memory_total_mb();

    let mut ticker = tokio::time::interval(config.report_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut wait = BROKER_BACKOFF.base;
    let mut rejections = 0u32;
    let mut failures = 0u32;
    let mut backoff_stop = shutdown.clone();
    let mut usage_task: Option<tokio::task::JoinHandle<()>> = None;
    let end = loop {
        tokio::select! {
            _ = stopped(shutdown) => break SessionEnd::Shutdown,
            _ = ticker.tick(), if reporter.is_connected() => {
                let info = collector.sample();
                engine.metrics().set_usage(info.cpu_percent, info.memory_percent);
                if client.try_publish(&info_topic, QoS::AtMostOnce, false, info.to_bytes()).is_ok() {
                    Metrics::inc(&engine.metrics().information_sent);
                }
                // Usage is gathered beside the loop, which must keep polling the broker (a
                // hundred instances' stats take a moment); one collection at a time.
                if usage_task.as_ref().is_none_or(|t| t.is_finished()) {
                    let (engine, client, topic) =
                        (Arc::clone(engine), client.clone(), resources_topic.clone());
                    usage_task = Some(tokio::spawn(async move {
                        let usage = engine.resources(memory_total).await;
                        engine.metrics().set_instances(&usage.services);
                        if !usage.services.is_empty()
                            && client.try_publish(&topic, QoS::AtMostOnce, false, usage.to_bytes()).is_ok()
                        {
                            Metrics::inc(&engine.metrics().resources_sent);
                        }
                    }));
                }
            }
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    if ack.code != ConnectReturnCode::Success {
                        continue;
                    }
                    if failures > 0 {
                        tracing::info!("connected to the broker again");
                    } else {
                        tracing::info!(broker = %format!("{}:{}", identity.broker_host, identity.broker_port), "connected to the broker");
                    }
                    failures = 0;
                    rejections = 0;
                    wait = BROKER_BACKOFF.base;
                    // Subscribe before anything is published on this connection: the broker
                    // handles a connection's packets in order, so the cluster never sees this
                    // worker report (and deploy to it) before its control topics are live.
                    // Nothing is queued while disconnected, so the queue has room for them.
                    for topic in [&deploy_topic, &delete_topic, &logs_topic] {
                        if let Err(e) = client.try_subscribe(topic.as_str(), QoS::AtLeastOnce) {
                            tracing::warn!("cannot subscribe to {topic}: {e}");
                        }
                    }
                    if reporter.overlay.get().is_some()
                        && let Err(e) = client.try_subscribe(table_topic.as_str(), QoS::AtLeastOnce)
                    {
                        tracing::warn!("cannot subscribe to {table_topic}: {e}");
                    }
                    reporter.connected.store(true, Ordering::Relaxed);
                    engine.metrics().mqtt_connected.store(1, Ordering::Relaxed);
                    let client = client.clone();
                    let job_topic = NodeTopic::Job.for_node(&identity.id);
                    let snapshot = engine.status_snapshot();
                    let info = collector.sample();
                    let info_topic = info_topic.clone();
                    // Not inline: these calls wait for room in the request queue, which this
                    // loop drains.
                    tokio::spawn(async move {
                        let _ = client.publish(&info_topic, QoS::AtMostOnce, false, info.to_bytes()).await;
                        for report in snapshot {
                            let _ = client.publish(&job_topic, QoS::AtLeastOnce, false, report.to_bytes()).await;
                        }
                    });
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let engine = Arc::clone(engine);
                    if publish.topic == deploy_topic {
                        match DeployCommand::from_bytes(&publish.payload) {
                            Ok(cmd) => {
                                tracing::info!(job = %cmd.job_name, instance = cmd.instance_number, "deploy");
                                tokio::spawn(async move { engine.deploy(cmd).await });
                            }
                            Err(e) => tracing::warn!("ignored a deploy message: {e}"),
                        }
                    } else if publish.topic == delete_topic {
                        match DeleteCommand::from_bytes(&publish.payload) {
                            Ok(cmd) => {
                                tracing::info!(job = %cmd.job_name, instance = cmd.instance_number, "delete");
                                tokio::spawn(async move { engine.delete(cmd).await });
                            }
                            Err(e) => tracing::warn!("ignored a delete message: {e}"),
                        }
                    } else if publish.topic == logs_topic {
                        match LogsRequest::from_bytes(&publish.payload) {
                            Ok(request) => {
                                let (client, topic) =
                                    (client.clone(), NodeTopic::Logs.for_node(&identity.id));
                                // Off the loop: reading a long log takes a moment, and
                                // `publish` waits for room in the queue this loop drains.
                                tokio::spawn(async move {
                                    let reply = crate::logs::answer(engine.runtime().as_ref(), request).await;
                                    if let Err(e) = client.publish(&topic, QoS::AtLeastOnce, false, reply.to_bytes()).await {
                                        tracing::warn!("{topic} not sent: {e}");
                                    }
                                });
                            }
                            Err(e) => tracing::warn!("ignored a log request: {e}"),
                        }
                    } else if publish.topic == table_topic
                        && let Some(overlay) = reporter.overlay.get()
                    {
                        match oakestra_proto::mqtt::TableQueryResult::from_bytes(&publish.payload) {
                            Ok(result) => overlay.on_table_result(result),
                            Err(e) => tracing::warn!("ignored a table query answer: {e}"),
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    reporter.connected.store(false, Ordering::Relaxed);
                    engine.metrics().mqtt_connected.store(0, Ordering::Relaxed);
                    failures += 1;
                    let rejected = matches!(
                        &e,
                        rumqttc::ConnectionError::ConnectionRefused(
                            ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword
                        )
                    );
                    if rejected {
                        rejections += 1;
                        if rejections >= 3 {
                            tracing::warn!("the broker rejects this worker's credentials; registering again");
                            break SessionEnd::Rejected;
                        }
                    }
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::warn!(
                            "broker {}:{} unavailable (attempt {failures}, next in {wait:?}; instances keep running): {e}",
                            identity.broker_host, identity.broker_port
                        );
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stopped(&mut backoff_stop) => break SessionEnd::Shutdown,
                    }
                    wait = BROKER_BACKOFF.next(wait);
                }
            },
        }
    };
    reporter.connected.store(false, Ordering::Relaxed);
    engine.metrics().mqtt_connected.store(0, Ordering::Relaxed);
    reporter.set_session(None);
    if end == SessionEnd::Shutdown {
        let _ = client.try_disconnect();
        // Let the DISCONNECT go out.
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            while eventloop.poll().await.is_ok() {}
        })
        .await;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped() {
        let mut d = REGISTER_BACKOFF.base;
        for _ in 0..10 {
            d = REGISTER_BACKOFF.next(d);
        }
        assert_eq!(d, MAX_BACKOFF);
    }
}
