//! The embedded MQTT broker (rumqttd) and the credentials it accepts.
//!
//! Every client must log in: the cluster itself with a password generated at start, each
//! worker with the username (its id) and password it got at registration. Anonymous
//! connections are refused, so nobody without credentials can publish on `nodes/#`.
//! rumqttd has no topic ACLs: a registered worker could publish on another worker's topics.
//! With mosquitto, the ACL in the README closes that (`pattern readwrite nodes/%u/#`).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, RwLock};

use oakestra_proto::mqtt::NodeTopic;
use rumqttd::{Broker, ConnectionSettings, RouterConfig, SegmentConfig, ServerSettings};
use sha2::{Digest, Sha256};

/// Usernames and the SHA-256 of their passwords, shared with the broker's auth callback.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    inner: Arc<RwLock<HashMap<String, String>>>,
}

/// SHA-256 of a secret, hex.
pub fn sha256_hex(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random secret: 32 hex digits (128 bits).
pub fn random_secret() -> String {
    let mut buf = [0u8; 16];
    // The OS RNG failing is not recoverable; a fixed secret would be worse.
    getrandom::fill(&mut buf).expect("the operating system's random number generator failed");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

impl Credentials {
    /// Allows `username` with the password whose SHA-256 is `password_sha256`.
    pub fn allow_hashed(&self, username: &str, password_sha256: &str) {
        if let Ok(mut map) = self.inner.write() {
            map.insert(username.to_owned(), password_sha256.to_owned());
        }
    }

    /// Whether the login is valid (constant-time comparison of the digests).
    pub fn check(&self, username: &str, password: &str) -> bool {
        let Ok(map) = self.inner.read() else {
            return false;
        };
        let Some(expected) = map.get(username) else {
            return false;
        };
        let given = sha256_hex(password);
        expected.len() == given.len()
            && expected
                .bytes()
                .zip(given.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// The broker could not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "embedded MQTT broker cannot listen on {addr}: {reason}; choose another --mqtt-listen, \
     stop what uses the port (e.g. a system mosquitto), or use --mqtt mqtt://HOST:PORT"
)]
pub struct BrokerError {
    /// The address.
    pub addr: SocketAddr,
    /// Why it could not be started (the bind or broker error as text).
    pub reason: String,
}

/// The cluster's own connection to the embedded broker: an in-process link, no TCP (and so no
/// Nagle/delayed-ACK stalls between the broker and the cluster).
pub type LocalLink = (rumqttd::local::LinkTx, rumqttd::local::LinkRx);

/// What the broker keeps of the messages on one subscription filter (its in-memory log, read
/// by every subscriber of the filter): once a log holds `max_segment_count` segments of
/// `max_segment_size` bytes, the oldest segment is dropped. A filter's log lives as long as the
/// broker, so this bounds the broker's memory: every worker's own control filters and the
/// cluster's filters over all workers each keep at most this much.
pub const DEFAULT_SEGMENT: SegmentConfig = SegmentConfig {
    max_segment_size: 1024 * 1024,
    max_segment_count: 4,
};

/// Per-filter retention for the cluster's subscriptions over all workers. Heartbeats and
/// usage reports arrive from every worker every few seconds and only the newest counts (see
/// [`crate::inbox`]): a small log, so thousands of workers do not fill tens of MB with
/// reports nobody will read again. Status reports must never be skipped by a reader that
/// falls behind: a large log. Log replies can be large single messages.
fn segments() -> HashMap<String, SegmentConfig> {
    let size = |max_segment_size, max_segment_count| SegmentConfig {
        max_segment_size,
        max_segment_count,
    };
    HashMap::from([
        (
            NodeTopic::Information.all_nodes_filter(),
            size(256 * 1024, 2),
        ),
        (
            NodeTopic::JobsResources.all_nodes_filter(),
            size(256 * 1024, 2),
        ),
        (NodeTopic::Job.all_nodes_filter(), size(8 * 1024 * 1024, 4)),
        (NodeTopic::Logs.all_nodes_filter(), size(8 * 1024 * 1024, 2)),
    ])
}

/// Starts rumqttd on `addr` in its own threads (it runs until the process exits) and returns
/// the cluster's in-process link to it.
pub fn start_embedded(
    addr: SocketAddr,
    credentials: Credentials,
) -> Result<LocalLink, BrokerError> {
    // rumqttd only logs a bind failure from its server thread; check first for a clear error.
    drop(TcpListener::bind(addr).map_err(|e| BrokerError {
        addr,
        reason: e.to_string(),
    })?);
    let mut connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: 4 * 1024 * 1024,
        max_inflight_count: 500,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    connections.set_auth_handler(move |_client_id: String, user: String, pass: String| {
        let ok = credentials.check(&user, &pass);
        if !ok {
            tracing::warn!(user = %user, "MQTT login refused");
        }
        async move { ok }
    });
    let server = ServerSettings {
        name: "oakestra-v4".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let config = rumqttd::Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_010,
            max_outgoing_packet_count: 1000,
            max_segment_size: DEFAULT_SEGMENT.max_segment_size,
            max_segment_count: DEFAULT_SEGMENT.max_segment_count,
            custom_segment: Some(segments()),
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Default::default()
    };
    let mut broker = Broker::new(config);
    let link = broker.link("oakestra-cluster").map_err(|e| BrokerError {
        addr,
        reason: format!("the cluster's local link was refused: {e}"),
    })?;
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!("embedded MQTT broker stopped: {e}");
            }
        })
        .map_err(|e| BrokerError {
            addr,
            reason: e.to_string(),
        })?;
    Ok(link)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_check_hashes() {
        let c = Credentials::default();
        c.allow_hashed("w1", &sha256_hex("secret"));
        assert!(c.check("w1", "secret"));
        assert!(!c.check("w1", "Secret"));
        assert!(!c.check("w2", "secret"));
        assert!(!c.check("", ""));
        assert_eq!(random_secret().len(), 32);
    }
}
