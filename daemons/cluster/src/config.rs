//! Configuration: flags, environment (`OAKESTRA_CLUSTER_*`) and an optional TOML file, with
//! defaults that make the 1-DOC case work with no configuration.
// The doc comments of the flags are also their --help texts, written for people
// (`<data-dir>`, `LAT,LON[,RADIUS_KM]`), not rustdoc links or HTML.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use oakestra_sched::capacity::{CapacityMode, CapacityPolicy};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::sched::SchedulerChoice;

/// Default root gRPC port.
pub const ROOT_GRPC_PORT: u16 = 50052;
/// Default MQTT port.
pub const MQTT_PORT: u16 = 10003;
/// The file, in the data dir, holding the workers' join token.
pub const WORKER_JOIN_TOKEN_FILE: &str = "worker-join-token";
/// The file in the root's data dir holding its bootstrap cluster join token.
pub const ROOT_BOOTSTRAP_TOKEN_FILE: &str = "cluster-join-token";

/// Where the MQTT broker is.
#[derive(Debug, Clone, PartialEq)]
pub enum MqttMode {
    /// rumqttd inside this process, listening on the address.
    Embedded(SocketAddr),
    /// An external broker (mosquitto, …) at `host:port`.
    External {
        /// Broker host.
        host: String,
        /// Broker port.
        port: u16,
    },
}

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Cluster name (unique at the root; what `direct` cluster constraints name).
    pub name: String,
    /// Free text or `LAT,LON[,RADIUS_KM]`.
    pub location: String,
    /// Root gRPC address `host:port`; none: run without a root (workers and healing only).
    pub root: Option<String>,
    /// The root's cluster join token.
    pub join_token: Option<String>,
    /// HTTP API address (worker registration, status, metrics).
    pub listen: SocketAddr,
    /// The broker.
    pub mqtt: MqttMode,
    /// Host workers should dial for the broker (empty: the host they used for registration).
    pub mqtt_advertise_host: String,
    /// The cluster's own MQTT credentials on an external broker.
    pub mqtt_username: Option<String>,
    /// Password for `mqtt_username`.
    pub mqtt_password: Option<String>,
    /// Credentials handed to workers on an external broker (the embedded broker gives each
    /// worker its own).
    pub mqtt_worker_username: Option<String>,
    /// Password for `mqtt_worker_username`.
    pub mqtt_worker_password: Option<String>,
    /// Data directory (store, worker join token, broker credentials).
    pub data_dir: PathBuf,
    /// Store location (`mongodb://…`, a redb path, `memory:`); default `<data-dir>/cluster.redb`.
    pub store: String,
    /// Worker join token (default: generated on first start and kept in the data dir).
    pub worker_join_token: Option<String>,
    /// Which algorithm places instances on this cluster's workers.
    pub scheduler: SchedulerChoice,
    /// External scheduler timeout.
    pub scheduler_timeout: Duration,
    /// A worker silent for longer is inactive.
    pub worker_timeout: Duration,
    /// First redeploy delay after a failure.
    pub backoff_base: Duration,
    /// Longest redeploy delay.
    pub backoff_cap: Duration,
    /// How free capacity is computed (reservations by default).
    pub capacity: CapacityPolicy,
    /// When set, `GET /metrics` needs `Authorization: Bearer <this>`.
    pub metrics_token: Option<String>,
    /// Timeouts and the connection limit of the HTTP API.
    pub http: oakestra_daemon::http::HttpLimits,
    /// TLS on the HTTP API (worker registration): certificate chain and private key (PEM);
    /// `None`: plain HTTP. Workers pin it with `oakestra-node --cluster-ca`.
    pub tls: Option<TlsFiles>,
}

/// The PEM files of a TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Config {
    /// Defaults with state in `data_dir` and every port on loopback chosen by the caller.
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Config {
            name: "cluster".into(),
            location: String::new(),
            root: None,
            join_token: None,
            listen: SocketAddr::from(([0, 0, 0, 0], 10100)),
            mqtt: MqttMode::Embedded(SocketAddr::from(([0, 0, 0, 0], MQTT_PORT))),
            mqtt_advertise_host: String::new(),
            mqtt_username: None,
            mqtt_password: None,
            mqtt_worker_username: None,
            mqtt_worker_password: None,
            store: data_dir.join("cluster.redb").display().to_string(),
            data_dir,
            worker_join_token: None,
            scheduler: SchedulerChoice::default(),
            scheduler_timeout: Duration::from_secs(5),
            worker_timeout: Duration::from_secs(10),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(30),
            capacity: CapacityPolicy::default(),
            metrics_token: None,
            http: oakestra_daemon::http::HttpLimits::default(),
            tls: None,
        }
    }
}

pub use oakestra_core::duration::parse_duration;

/// `mqtt://host:port`, `host:port`, or `embedded`.
fn parse_mqtt(s: &str) -> Result<Option<(String, u16)>, String> {
    let s = s.trim();
    if s.is_empty() || s == "embedded" {
        return Ok(None);
    }
    let rest = s.strip_prefix("mqtt://").unwrap_or(s);
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse()
                .map_err(|_| format!("--mqtt {s:?}: port {p:?} is not a number"))?,
        ),
        None => (rest, MQTT_PORT),
    };
    if host.is_empty() {
        return Err(format!("--mqtt {s:?}: no host; use mqtt://host:port"));
    }
    Ok(Some((host.to_owned(), port)))
}

fn with_default_port(addr: &str, port: u16) -> String {
    let addr = addr.trim();
    let addr = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("grpc://"))
        .unwrap_or(addr);
    if addr
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        addr.to_owned()
    } else {
        format!("{addr}:{port}")
    }
}

/// `oakestra-cluster`: the cluster orchestrator.
///
/// Settings come from flags, then a TOML file (`--config`, keys as the long flag names with
/// `_` or `-`), then `OAKESTRA_CLUSTER_*` environment variables, then the defaults.
#[derive(Debug, Parser)]
#[command(name = "oakestra-cluster", version, about, args_override_self = true)]
pub struct Args {
    /// TOML file with any of the settings below.
    #[arg(long, env = "OAKESTRA_CLUSTER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Cluster name, unique at the root (what `direct` cluster constraints name).
    #[arg(long, env = "OAKESTRA_CLUSTER_NAME", default_value = "cluster")]
    pub name: String,
    /// Location: free text or "LAT,LON[,RADIUS_KM]".
    #[arg(long, env = "OAKESTRA_CLUSTER_LOCATION", default_value = "")]
    pub location: String,
    /// Root orchestrator gRPC address HOST[:50052]. Without it the cluster runs alone.
    #[arg(long, env = "OAKESTRA_CLUSTER_ROOT")]
    pub root: Option<String>,
    /// The root's cluster join token (`oakestra-root token create`).
    #[arg(long, env = "OAKESTRA_CLUSTER_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// File holding the root's cluster join token, e.g. <root data dir>/cluster-join-token
    /// (1-DOC). Default when neither token option is given: the root's default data dir.
    #[arg(long, env = "OAKESTRA_CLUSTER_JOIN_TOKEN_FILE")]
    pub join_token_file: Option<PathBuf>,
    /// HTTP API (worker registration, /api/cluster/status, /metrics, /health).
    #[arg(long, env = "OAKESTRA_CLUSTER_LISTEN", default_value = "0.0.0.0:10100")]
    pub listen: SocketAddr,
    /// MQTT broker: "embedded" (rumqttd in this process) or mqtt://HOST:PORT (external).
    #[arg(long, env = "OAKESTRA_CLUSTER_MQTT", default_value = "embedded")]
    pub mqtt: String,
    /// Where the embedded broker listens.
    #[arg(
        long,
        env = "OAKESTRA_CLUSTER_MQTT_LISTEN",
        default_value = "0.0.0.0:10003"
    )]
    pub mqtt_listen: SocketAddr,
    /// Broker host the workers are told to dial (default: the host they registered with).
    #[arg(long, env = "OAKESTRA_CLUSTER_MQTT_ADVERTISE", default_value = "")]
    pub mqtt_advertise: String,
    /// The cluster's own username on an external broker.
    #[arg(long, env = "OAKESTRA_CLUSTER_MQTT_USERNAME")]
    pub mqtt_username: Option<String>,
    /// The cluster's own password on an external broker.
    #[arg(long, env = "OAKESTRA_CLUSTER_MQTT_PASSWORD", hide_env_values = true)]
    pub mqtt_password: Option<String>,
    /// Username handed to workers on an external broker.
    #[arg(long, env = "OAKESTRA_CLUSTER_MQTT_WORKER_USERNAME")]
    pub mqtt_worker_username: Option<String>,
    /// Password handed to workers on an external broker.
    #[arg(
        long,
        env = "OAKESTRA_CLUSTER_MQTT_WORKER_PASSWORD",
        hide_env_values = true
    )]
    pub mqtt_worker_password: Option<String>,
    /// Data directory [default: $XDG_DATA_HOME/oakestra-cluster or ~/.local/share/oakestra-cluster].
    #[arg(long, env = "OAKESTRA_CLUSTER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Store: mongodb://HOST:PORT/DB, a redb file, or memory: [default: <data-dir>/cluster.redb].
    #[arg(long, env = "OAKESTRA_CLUSTER_STORE")]
    pub store: Option<String>,
    /// Workers' join token [default: generated once, kept in <data-dir>/worker-join-token].
    #[arg(
        long,
        env = "OAKESTRA_CLUSTER_WORKER_JOIN_TOKEN",
        hide_env_values = true
    )]
    pub worker_join_token: Option<String>,
    /// best_fit, first_fit, least_loaded, ldp, or external:http://HOST:PORT/PATH.
    #[arg(long, env = "OAKESTRA_CLUSTER_SCHEDULER", default_value = "best_fit")]
    pub scheduler: SchedulerChoice,
    /// How long an external scheduler may take.
    #[arg(long, env = "OAKESTRA_CLUSTER_SCHEDULER_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub scheduler_timeout: Duration,
    /// A worker silent for longer is inactive and its instances are rescheduled.
    #[arg(long, env = "OAKESTRA_CLUSTER_WORKER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub worker_timeout: Duration,
    /// First delay of the redeploy backoff (doubles per failed attempt).
    #[arg(long, env = "OAKESTRA_CLUSTER_BACKOFF_BASE", default_value = "1s", value_parser = parse_duration)]
    pub backoff_base: Duration,
    /// Longest redeploy delay.
    #[arg(long, env = "OAKESTRA_CLUSTER_BACKOFF_CAP", default_value = "30s", value_parser = parse_duration)]
    pub backoff_cap: Duration,
    /// Free capacity of a worker: `reservations` (its cores and memory minus the system reserve
    /// minus what the instances placed on it ask for; measured usage only ranks workers) or
    /// `usage` (Oakestra's: cores × (1 − measured load)).
    #[arg(
        long,
        env = "OAKESTRA_CLUSTER_CAPACITY",
        default_value = "reservations"
    )]
    pub capacity: CapacityMode,
    /// Cores each worker keeps for its own system, never given to instances.
    #[arg(
        long,
        env = "OAKESTRA_CLUSTER_SYSTEM_RESERVED_CPUS",
        default_value_t = 0.0
    )]
    pub system_reserved_cpus: f64,
    /// Memory each worker keeps for its own system, MB.
    #[arg(
        long,
        env = "OAKESTRA_CLUSTER_SYSTEM_RESERVED_MEMORY_MB",
        default_value_t = 0
    )]
    pub system_reserved_memory_mb: u64,
    /// Overload guard: a worker whose measured CPU usage is at or above this percentage
    /// (1–100) takes no new instance [default: none].
    #[arg(long, env = "OAKESTRA_CLUSTER_MAX_LOAD")]
    pub max_load: Option<f64>,
    /// Require `Authorization: Bearer <token>` on GET /metrics (for a cluster whose API port
    /// is reachable beyond loopback) [default: none, /metrics is open].
    #[arg(long, env = "OAKESTRA_CLUSTER_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Connections the HTTP API serves at once; one more gets a 503. Capped to what the
    /// open-file limit allows.
    #[arg(
        long,
        env = "OAKESTRA_CLUSTER_MAX_CONNECTIONS",
        default_value_t = oakestra_daemon::http::HttpLimits::DEFAULT_MAX_CONNECTIONS
    )]
    pub max_connections: usize,
    /// Time a client has to send a request head (and an idle kept-alive connection stays open).
    #[arg(long, env = "OAKESTRA_CLUSTER_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// Serve the HTTP API (worker registration) over TLS with this certificate chain (PEM);
    /// needs --tls-key [default: plain HTTP].
    #[arg(long, env = "OAKESTRA_CLUSTER_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "OAKESTRA_CLUSTER_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Log lines as text for people or as JSON lines (time, level, target, fields, message)
    /// for Loki or any log shipper.
    #[arg(long, env = "OAKESTRA_CLUSTER_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: oakestra_daemon::LogFormat,
}

/// A bad setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file could not be read or parsed.
    #[error("config file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A value is wrong.
    #[error("{0}")]
    Invalid(String),
}

/// Parses the command line, with the TOML file's settings below the flags.
pub fn args_from_env() -> Result<Args, ConfigError> {
    let argv = oakestra_daemon::layered::argv_with_file(
        std::env::args().collect(),
        "OAKESTRA_CLUSTER_CONFIG",
    )
    .map_err(|e| ConfigError::File {
        path: e.path,
        reason: e.reason,
    })?;
    Ok(Args::parse_from(argv))
}

fn default_data_dir(leaf: &str) -> PathBuf {
    oakestra_daemon::default_data_dir(
        oakestra_daemon::data_dir::Base::Data,
        leaf,
        &format!("{leaf}-data"),
    )
}

impl Args {
    /// The configuration, with the join token read from its file when needed.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let data_dir = self
            .data_dir
            .unwrap_or_else(|| default_data_dir("oakestra-cluster"));
        let mut config = Config::with_data_dir(data_dir);
        config.name = self.name.trim().to_owned();
        if config.name.is_empty() {
            return Err(ConfigError::Invalid("--name must not be empty".into()));
        }
        config.location = self.location;
        config.root = self.root.map(|r| with_default_port(&r, ROOT_GRPC_PORT));
        config.join_token = match (self.join_token, self.join_token_file) {
            (Some(t), _) => Some(t.trim().to_owned()),
            (None, Some(file)) => Some(
                std::fs::read_to_string(&file)
                    .map_err(|e| {
                        ConfigError::Invalid(format!(
                            "--join-token-file {}: {e}; give the file the root wrote \
                             (<root data dir>/{ROOT_BOOTSTRAP_TOKEN_FILE}) or --join-token",
                            file.display()
                        ))
                    })?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => std::fs::read_to_string(
                default_data_dir("oakestra-root").join(ROOT_BOOTSTRAP_TOKEN_FILE),
            )
            .ok()
            .map(|t| t.trim().to_owned()),
        };
        if config.root.is_some() && config.join_token.as_deref().is_none_or(str::is_empty) {
            return Err(ConfigError::Invalid(
                "--root needs a join token: --join-token T, --join-token-file F, or \
                 OAKESTRA_CLUSTER_JOIN_TOKEN (create one with `oakestra-root token create`)"
                    .into(),
            ));
        }
        config.listen = self.listen;
        config.mqtt = match parse_mqtt(&self.mqtt).map_err(ConfigError::Invalid)? {
            None => MqttMode::Embedded(self.mqtt_listen),
            Some((host, port)) => MqttMode::External { host, port },
        };
        config.mqtt_advertise_host = self.mqtt_advertise;
        config.mqtt_username = self.mqtt_username;
        config.mqtt_password = self.mqtt_password;
        config.mqtt_worker_username = self.mqtt_worker_username;
        config.mqtt_worker_password = self.mqtt_worker_password;
        if let Some(store) = self.store {
            config.store = store;
        }
        config.worker_join_token = self.worker_join_token;
        config.scheduler = self.scheduler;
        config.scheduler_timeout = self.scheduler_timeout;
        config.worker_timeout = self.worker_timeout;
        config.backoff_base = self.backoff_base;
        config.backoff_cap = self.backoff_cap;
        config.metrics_token = self.metrics_token.filter(|t| !t.trim().is_empty());
        config.http.max_connections = self.max_connections.max(1);
        config.http.header_read_timeout = self.header_read_timeout;
        config.tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid(
                    "--tls-cert and --tls-key (tls_cert, tls_key) go together: give both, or \
                     neither for plain HTTP"
                        .into(),
                ));
            }
        };
        config.capacity = capacity_policy(
            self.capacity,
            self.system_reserved_cpus,
            self.system_reserved_memory_mb,
            self.max_load,
        )
        .map_err(ConfigError::Invalid)?;
        Ok(config)
    }
}

/// The capacity settings, checked: what `--capacity`, `--system-reserved-*` and `--max-load`
/// (here and in `oak up`) may hold.
pub fn capacity_policy(
    mode: CapacityMode,
    system_reserved_cpus: f64,
    system_reserved_memory_mb: u64,
    max_load: Option<f64>,
) -> Result<CapacityPolicy, String> {
    if !(system_reserved_cpus.is_finite() && system_reserved_cpus >= 0.0) {
        return Err(format!(
            "--system-reserved-cpus {system_reserved_cpus}: give a number of cores ≥ 0, e.g. 0.5"
        ));
    }
    if let Some(max) = max_load
        && !(max > 0.0 && max <= 100.0)
    {
        return Err(format!(
            "--max-load {max}: give a CPU usage percentage in 1–100, e.g. 95"
        ));
    }
    Ok(CapacityPolicy {
        mode,
        system_reserved_vcpus: system_reserved_cpus,
        system_reserved_memory_mb,
        max_load_percent: max_load,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_addresses_parse() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("3 parsecs").is_err());
        assert_eq!(with_default_port("root.lan", 50052), "root.lan:50052");
        assert_eq!(with_default_port("10.0.0.1:6000", 50052), "10.0.0.1:6000");
        assert_eq!(parse_mqtt("embedded").unwrap(), None);
        assert_eq!(
            parse_mqtt("mqtt://127.0.0.1:1883").unwrap(),
            Some(("127.0.0.1".into(), 1883))
        );
        assert!(parse_mqtt("mqtt://:1883").is_err());
    }

    #[test]
    fn capacity_settings_are_checked() {
        let ok = capacity_policy(CapacityMode::Usage, 0.5, 256, Some(95.0)).unwrap();
        assert_eq!(ok.mode, CapacityMode::Usage);
        assert_eq!(ok.max_load_percent, Some(95.0));
        assert!(
            capacity_policy(CapacityMode::Reservations, -1.0, 0, None)
                .unwrap_err()
                .contains("--system-reserved-cpus")
        );
        assert!(
            capacity_policy(CapacityMode::Reservations, 0.0, 0, Some(120.0))
                .unwrap_err()
                .contains("--max-load 120")
        );
    }

    #[test]
    fn toml_file_sits_below_the_flags() {
        let dir = std::env::temp_dir().join(format!("oak-cluster-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cluster.toml");
        std::fs::write(
            &file,
            "name = \"from-file\"\nworker_timeout = \"4s\"\nscheduler = \"first_fit\"\n",
        )
        .unwrap();
        let argv = oakestra_daemon::layered::argv_with_file(
            vec![
                "oakestra-cluster".to_owned(),
                format!("--config={}", file.display()),
                "--name".to_owned(),
                "from-flag".to_owned(),
            ],
            "OAKESTRA_TEST_UNSET",
        )
        .unwrap();
        let config = Args::parse_from(argv).into_config().unwrap();
        assert_eq!(config.name, "from-flag");
        assert_eq!(config.worker_timeout, Duration::from_secs(4));
        assert_eq!(config.scheduler.to_string(), "first_fit");
        std::fs::write(&file, "name = [1]\n").unwrap();
        let e = oakestra_daemon::layered::argv_with_file(
            vec![
                "oakestra-cluster".to_owned(),
                format!("--config={}", file.display()),
            ],
            "OAKESTRA_TEST_UNSET",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("name") && e.contains("cluster.toml"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn root_needs_a_token() {
        let e = Args::parse_from([
            "oakestra-cluster",
            "--root",
            "10.0.0.1",
            "--join-token-file",
            "/nonexistent/t",
        ])
        .into_config()
        .unwrap_err()
        .to_string();
        assert!(e.contains("--join-token-file /nonexistent/t"), "{e}");
        let c = Args::parse_from([
            "oakestra-cluster",
            "--root",
            "10.0.0.1",
            "--join-token",
            "t",
        ])
        .into_config()
        .unwrap();
        assert_eq!(c.root.as_deref(), Some("10.0.0.1:50052"));
    }
}
