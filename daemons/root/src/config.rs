//! Configuration: flags, environment variables and an optional TOML file, in that order of
//! precedence, with defaults that need no configuration at all (1-DOC).
// The doc comments of the flags are also their --help texts, written for people
// (`<data-dir>`, `LAT,LON[,RADIUS_KM]`), not rustdoc links or HTML.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

/// Default REST API address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:10000";
/// Default gRPC address for clusters.
pub const DEFAULT_GRPC_LISTEN: &str = "0.0.0.0:50052";
/// Default time after which a silent cluster is inactive.
pub const DEFAULT_CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default lifetime of an access token (Oakestra's 10 minutes).
pub const DEFAULT_ACCESS_TOKEN_TTL: Duration = crate::auth::ACCESS_TOKEN_TTL;
/// File name of the embedded store inside the data directory.
pub const REDB_FILE: &str = oakestra_store::REDB_FILE_NAME;

/// Where the root keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// An embedded redb file.
    Redb(PathBuf),
    /// A MongoDB server (`mongodb://host:port/db`).
    Mongo(String),
    /// Nothing persisted (`memory:`; tests and simulations).
    Memory,
}

impl StoreLocation {
    /// `mongodb://…` or `mongodb+srv://…` is MongoDB, `memory:` the in-memory store, and
    /// anything else (optionally prefixed `redb:`) a redb file path; an existing directory
    /// means the file `oakestra.redb` inside it.
    pub fn parse(text: &str) -> Self {
        let text = text.trim();
        if text.starts_with("mongodb://") || text.starts_with("mongodb+srv://") {
            StoreLocation::Mongo(text.to_owned())
        } else if text == "memory:" || text == "memory" {
            StoreLocation::Memory
        } else {
            let path = PathBuf::from(text.strip_prefix("redb:").unwrap_or(text));
            StoreLocation::Redb(oakestra_store::redb_file(&path))
        }
    }
}

/// The certificate chain and private key (PEM files) the REST API serves TLS with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The resolved configuration of a root orchestrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// REST API address.
    pub listen: SocketAddr,
    /// gRPC address clusters dial.
    pub grpc_listen: SocketAddr,
    /// Directory for the embedded store and other state.
    pub data_dir: PathBuf,
    /// The store.
    pub store: StoreLocation,
    /// The key file that seals the secrets kept in the store (the token signing key):
    /// created at first start; a store sealed with it cannot be used without it.
    pub key_file: PathBuf,
    /// A cluster silent for longer is inactive and its instances are rescheduled.
    pub cluster_timeout: Duration,
    /// Lifetime of the access tokens the root issues (whole seconds, at least one).
    pub access_token_ttl: Duration,
    /// A second address serving the dashboard (and the API it calls), e.g. `0.0.0.0:80`
    /// where Oakestra's dashboard is; the dashboard is always on `listen` too.
    pub dashboard_listen: Option<SocketAddr>,
    /// When set, `GET /metrics` needs `Authorization: Bearer <this>`.
    pub metrics_token: Option<String>,
    /// Timeouts and the connection limit of the REST API and dashboard listeners.
    pub http: oakestra_daemon::http::HttpLimits,
    /// TLS on the REST API and dashboard listeners (`None`: plain HTTP).
    pub tls: Option<TlsFiles>,
    /// IPv4 prefix length of the overlay subnet of workers that get theirs after a change
    /// (22–26; the IPv6 subnet scales with it); workers that hold one keep it.
    pub worker_subnet_prefix: u8,
}

/// Default worker subnet prefix: a /26 (61 instances per worker), Oakestra's, so a root that
/// shares a worker range with Oakestra tooling or runs many small workers hands out what
/// Oakestra would. 12,288 workers fit in 10.18.0.0–10.29.255.255 with /26s, 3,072 with /24s.
pub const DEFAULT_WORKER_SUBNET_PREFIX: u8 = oakestra_net::ipam::WORKER_SUBNET_IPV4_PREFIX_LEN;

/// A worker subnet prefix length: 22 (1,021 instances per worker) to 26 (61).
pub fn parse_worker_subnet_prefix(text: &str) -> Result<u8, String> {
    let text = text.trim();
    let len = text.strip_prefix('/').unwrap_or(text);
    let bad = || {
        format!(
            "{text:?} is not a worker subnet prefix length; give 22 to 26: 26 (61 instances per \
             worker, Oakestra's), 25 (125), 24 (253), 23 (509) or 22 (1,021)"
        )
    };
    let len: u8 = len.parse().map_err(|_| bad())?;
    oakestra_net::ipam::check_worker_prefix_len(len).map_err(|_| bad())?;
    Ok(len)
}

impl Default for Config {
    fn default() -> Self {
        let data_dir = default_data_dir();
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default"),
            grpc_listen: DEFAULT_GRPC_LISTEN.parse().expect("valid default"),
            store: StoreLocation::Redb(data_dir.join(REDB_FILE)),
            key_file: data_dir.join(crate::sealing::KEY_FILE_NAME),
            data_dir,
            cluster_timeout: DEFAULT_CLUSTER_TIMEOUT,
            access_token_ttl: DEFAULT_ACCESS_TOKEN_TTL,
            dashboard_listen: None,
            metrics_token: None,
            http: oakestra_daemon::http::HttpLimits::default(),
            tls: None,
            worker_subnet_prefix: DEFAULT_WORKER_SUBNET_PREFIX,
        }
    }
}

impl Config {
    /// The default configuration with its state in `data_dir` (tests, `oak up`).
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Self {
            store: StoreLocation::Redb(data_dir.join(REDB_FILE)),
            key_file: data_dir.join(crate::sealing::KEY_FILE_NAME),
            data_dir,
            ..Self::default()
        }
    }
}

/// `$XDG_DATA_HOME/oakestra-root`, else `$HOME/.local/share/oakestra-root`, else
/// `./oakestra-data`.
pub fn default_data_dir() -> PathBuf {
    oakestra_daemon::default_data_dir(
        oakestra_daemon::data_dir::Base::Data,
        "oakestra-root",
        "oakestra-data",
    )
}

pub use oakestra_core::duration::parse_duration;

/// An access-token lifetime: a duration of at least one second (tokens carry whole seconds).
pub fn parse_token_ttl(text: &str) -> Result<Duration, String> {
    let ttl = parse_duration(text)?;
    if ttl < Duration::from_secs(1) {
        return Err(format!(
            "{text:?} is shorter than 1s; an access token lives whole seconds, e.g. \"10m\" or \"30s\""
        ));
    }
    Ok(Duration::from_secs(ttl.as_secs()))
}

/// Command line of `oakestra-root`.
#[derive(Debug, Parser)]
#[command(
    name = "oakestra-root",
    version,
    about = "Oakestra-rs root orchestrator: the REST API users talk to and the gRPC endpoint clusters dial"
)]
pub struct Cli {
    /// Settings shared by the server and the subcommands.
    #[command(flatten)]
    pub settings: Settings,
    /// What to do (default: run the root).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Join tokens for clusters.
    Token {
        /// What to do with tokens.
        #[command(subcommand)]
        action: TokenAction,
    },
}

/// Token subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Create a join token and print it (it is shown only this once).
    Create {
        /// A name that says what the token is for.
        #[arg(long)]
        name: Option<String>,
    },
    /// List the join tokens (ids and names, never the secrets).
    List,
    /// Revoke a join token by id.
    Revoke {
        /// The token id, as `token list` shows it.
        id: String,
    },
}

/// Flags and environment variables; unset ones come from the file or the defaults.
#[derive(Debug, Clone, Default, Args)]
pub struct Settings {
    /// TOML file with any of: listen, grpc_listen, data_dir, store, key_file, cluster_timeout,
    /// access_token_ttl, dashboard_listen, metrics_token, max_connections,
    /// header_read_timeout, worker_subnet_prefix, tls_cert, tls_key.
    #[arg(long, env = "OAKESTRA_ROOT_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// REST API address [default: 0.0.0.0:10000].
    #[arg(long, env = "OAKESTRA_ROOT_LISTEN", global = true)]
    pub listen: Option<SocketAddr>,
    /// gRPC address clusters dial [default: 0.0.0.0:50052].
    #[arg(long, env = "OAKESTRA_ROOT_GRPC_LISTEN", global = true)]
    pub grpc_listen: Option<SocketAddr>,
    /// State directory [default: $XDG_DATA_HOME/oakestra-root, else
    /// ~/.local/share/oakestra-root, else ./oakestra-data].
    #[arg(long, env = "OAKESTRA_ROOT_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// A redb file path, a MongoDB URL (mongodb://host:port/db) or `memory:`
    /// [default: <data-dir>/oakestra.redb].
    #[arg(long, env = "OAKESTRA_ROOT_STORE", global = true)]
    pub store: Option<String>,
    /// The key file sealing the token signing key in the store (64 hex digits, 0600; created
    /// at first start; replicas sharing a store need the same file) [default:
    /// <data-dir>/root.key].
    #[arg(long, env = "OAKESTRA_ROOT_KEY_FILE", global = true)]
    pub key_file: Option<PathBuf>,
    /// A cluster silent for longer is inactive [default: 30s].
    #[arg(long, env = "OAKESTRA_ROOT_CLUSTER_TIMEOUT", value_parser = parse_duration, global = true)]
    pub cluster_timeout: Option<Duration>,
    /// Lifetime of access tokens; clients refresh them with the refresh token (30 days)
    /// [default: 10m].
    #[arg(long, env = "OAKESTRA_ROOT_ACCESS_TOKEN_TTL", value_parser = parse_token_ttl, global = true)]
    pub access_token_ttl: Option<Duration>,
    /// Also serve the dashboard (and the API it calls) on this address, e.g. 0.0.0.0:80
    /// [default: only on --listen].
    #[arg(long, env = "OAKESTRA_ROOT_DASHBOARD_LISTEN", global = true)]
    pub dashboard_listen: Option<SocketAddr>,
    /// Require `Authorization: Bearer <token>` on GET /metrics (for a root whose API port is
    /// reachable beyond loopback) [default: none, /metrics is open].
    #[arg(
        long,
        env = "OAKESTRA_ROOT_METRICS_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub metrics_token: Option<String>,
    /// Connections the REST API (and the dashboard listener) serve at once; one more gets a
    /// 503. Capped to what the open-file limit allows [default: 4096].
    #[arg(long, env = "OAKESTRA_ROOT_MAX_CONNECTIONS", global = true)]
    pub max_connections: Option<usize>,
    /// Time a client has to send a request head (and an idle kept-alive connection stays
    /// open), e.g. `10s` [default: 10s].
    #[arg(long, env = "OAKESTRA_ROOT_HEADER_READ_TIMEOUT", value_parser = parse_duration, global = true)]
    pub header_read_timeout: Option<Duration>,
    /// Serve the REST API (and dashboard) over TLS with this certificate chain (PEM); needs
    /// --tls-key [default: plain HTTP].
    #[arg(long, env = "OAKESTRA_ROOT_TLS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "OAKESTRA_ROOT_TLS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,
    /// Overlay subnet size of workers, as an IPv4 prefix length from 22 to 26: a /26 holds 61
    /// instances (Oakestra's), a /24 253, a /22 1,021; the IPv6 subnet scales with it. Applies
    /// to workers that get their subnet after a change; the others keep theirs [default: 26].
    #[arg(long, env = "OAKESTRA_ROOT_WORKER_SUBNET_PREFIX", value_parser = parse_worker_subnet_prefix, global = true)]
    pub worker_subnet_prefix: Option<u8>,
    /// Log lines as text for people or as JSON lines (time, level, target, fields, message)
    /// for Loki or any log shipper.
    #[arg(
        long,
        env = "OAKESTRA_ROOT_LOG_FORMAT",
        value_enum,
        default_value_t,
        global = true
    )]
    pub log_format: oakestra_daemon::LogFormat,
}

/// The TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<SocketAddr>,
    grpc_listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    store: Option<String>,
    key_file: Option<PathBuf>,
    cluster_timeout: Option<String>,
    access_token_ttl: Option<String>,
    dashboard_listen: Option<SocketAddr>,
    metrics_token: Option<String>,
    max_connections: Option<usize>,
    header_read_timeout: Option<String>,
    worker_subnet_prefix: Option<u8>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("invalid configuration file {path}: {message}")]
    Invalid {
        /// Which file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Settings {
    /// Flags and environment over the file over the defaults.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let file_timeout = match &file.cluster_timeout {
            Some(t) => Some(parse_duration(t).map_err(|message| ConfigError::Invalid {
                path: self.config.clone().unwrap_or_default(),
                message: format!("cluster_timeout: {message}"),
            })?),
            None => None,
        };
        let file_token_ttl = match &file.access_token_ttl {
            Some(t) => Some(parse_token_ttl(t).map_err(|message| ConfigError::Invalid {
                path: self.config.clone().unwrap_or_default(),
                message: format!("access_token_ttl: {message}"),
            })?),
            None => None,
        };
        let file_header_timeout = match &file.header_read_timeout {
            Some(t) => Some(parse_duration(t).map_err(|message| ConfigError::Invalid {
                path: self.config.clone().unwrap_or_default(),
                message: format!("header_read_timeout: {message}"),
            })?),
            None => None,
        };
        if let Some(len) = file.worker_subnet_prefix {
            parse_worker_subnet_prefix(&len.to_string()).map_err(|message| {
                ConfigError::Invalid {
                    path: self.config.clone().unwrap_or_default(),
                    message: format!("worker_subnet_prefix: {message}"),
                }
            })?;
        }
        let defaults = Config::default();
        let data_dir = self
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or(defaults.data_dir);
        let store = match self.store.clone().or(file.store) {
            Some(s) => StoreLocation::parse(&s),
            None => StoreLocation::Redb(data_dir.join(REDB_FILE)),
        };
        let key_file = self
            .key_file
            .clone()
            .or(file.key_file)
            .unwrap_or_else(|| data_dir.join(crate::sealing::KEY_FILE_NAME));
        let tls = match (
            self.tls_cert.clone().or(file.tls_cert),
            self.tls_key.clone().or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid {
                    path: self.config.clone().unwrap_or_default(),
                    message: "--tls-cert and --tls-key (tls_cert, tls_key) go together: give \
                              both, or neither for plain HTTP"
                        .into(),
                });
            }
        };
        Ok(Config {
            key_file,
            tls,
            listen: self.listen.or(file.listen).unwrap_or(defaults.listen),
            grpc_listen: self
                .grpc_listen
                .or(file.grpc_listen)
                .unwrap_or(defaults.grpc_listen),
            data_dir,
            store,
            cluster_timeout: self
                .cluster_timeout
                .or(file_timeout)
                .unwrap_or(defaults.cluster_timeout),
            access_token_ttl: self
                .access_token_ttl
                .or(file_token_ttl)
                .unwrap_or(defaults.access_token_ttl),
            dashboard_listen: self.dashboard_listen.or(file.dashboard_listen),
            metrics_token: self
                .metrics_token
                .clone()
                .or(file.metrics_token)
                .filter(|t| !t.trim().is_empty()),
            http: oakestra_daemon::http::HttpLimits {
                max_connections: self
                    .max_connections
                    .or(file.max_connections)
                    .unwrap_or(defaults.http.max_connections)
                    .max(1),
                header_read_timeout: self
                    .header_read_timeout
                    .or(file_header_timeout)
                    .unwrap_or(defaults.http.header_read_timeout),
                ..defaults.http
            },
            worker_subnet_prefix: self
                .worker_subnet_prefix
                .or(file.worker_subnet_prefix)
                .unwrap_or(defaults.worker_subnet_prefix),
        })
    }
}

fn read_file(path: &Path) -> Result<FileSettings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Invalid {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("3 days").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn defaults_need_no_configuration() {
        let cfg = Cli::try_parse_from(["oakestra-root"])
            .unwrap()
            .settings
            .resolve()
            .unwrap();
        assert_eq!(cfg.listen.port(), 10000);
        assert_eq!(cfg.grpc_listen.port(), 50052);
        assert_eq!(cfg.cluster_timeout, Duration::from_secs(30));
        assert_eq!(cfg.access_token_ttl, Duration::from_secs(600));
        assert_eq!(cfg.store, StoreLocation::Redb(cfg.data_dir.join(REDB_FILE)));
        assert_eq!(cfg.dashboard_listen, None);
    }

    #[test]
    fn key_file_in_the_data_dir_unless_given_by_flag_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let cfg = Cli::try_parse_from(["oakestra-root", "--data-dir", data.to_str().unwrap()])
            .unwrap()
            .settings
            .resolve()
            .unwrap();
        assert_eq!(cfg.key_file, data.join("root.key"));
        let file = dir.path().join("root.toml");
        std::fs::write(&file, "key_file = \"/etc/oakestra/root.key\"\n").unwrap();
        let from_file = Cli::try_parse_from(["oakestra-root", "--config", file.to_str().unwrap()])
            .unwrap()
            .settings
            .resolve()
            .unwrap();
        assert_eq!(from_file.key_file, Path::new("/etc/oakestra/root.key"));
        let from_flag = Cli::try_parse_from([
            "oakestra-root",
            "--config",
            file.to_str().unwrap(),
            "--key-file",
            "/k",
        ])
        .unwrap()
        .settings
        .resolve()
        .unwrap();
        assert_eq!(from_flag.key_file, Path::new("/k"));
    }

    #[test]
    fn dashboard_listen_from_flag_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("root.toml");
        std::fs::write(&file, "dashboard_listen = \"127.0.0.1:8080\"\n").unwrap();
        let from_file = Cli::try_parse_from(["oakestra-root", "--config", file.to_str().unwrap()])
            .unwrap()
            .settings
            .resolve()
            .unwrap();
        assert_eq!(
            from_file.dashboard_listen,
            Some("127.0.0.1:8080".parse().unwrap())
        );
        let from_flag = Cli::try_parse_from([
            "oakestra-root",
            "--config",
            file.to_str().unwrap(),
            "--dashboard-listen",
            "0.0.0.0:80",
        ])
        .unwrap()
        .settings
        .resolve()
        .unwrap();
        assert_eq!(
            from_flag.dashboard_listen,
            Some("0.0.0.0:80".parse().unwrap())
        );
    }

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("root.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1\"\ncluster_timeout = \"5s\"\nstore = \"mongodb://db:27017/oak\"\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "oakestra-root",
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:2",
        ])
        .unwrap();
        let cfg = cli.settings.resolve().unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:2".parse().unwrap());
        assert_eq!(cfg.cluster_timeout, Duration::from_secs(5));
        assert_eq!(
            cfg.store,
            StoreLocation::Mongo("mongodb://db:27017/oak".into())
        );

        std::fs::write(&file, "lisen = \"x\"\n").unwrap();
        let err = cli.settings.resolve().unwrap_err().to_string();
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn access_token_ttl_from_flag_or_file_and_never_below_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("root.toml");
        std::fs::write(&file, "access_token_ttl = \"2m\"\n").unwrap();
        let from_file = Cli::try_parse_from(["oakestra-root", "--config", file.to_str().unwrap()])
            .unwrap()
            .settings
            .resolve()
            .unwrap();
        assert_eq!(from_file.access_token_ttl, Duration::from_secs(120));
        let from_flag = Cli::try_parse_from([
            "oakestra-root",
            "--config",
            file.to_str().unwrap(),
            "--access-token-ttl",
            "3s",
        ])
        .unwrap()
        .settings
        .resolve()
        .unwrap();
        assert_eq!(from_flag.access_token_ttl, Duration::from_secs(3));

        let err = Cli::try_parse_from(["oakestra-root", "--access-token-ttl", "500ms"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("shorter than 1s"), "{err}");
        std::fs::write(&file, "access_token_ttl = \"0s\"\n").unwrap();
        let err = Cli::try_parse_from(["oakestra-root", "--config", file.to_str().unwrap()])
            .unwrap()
            .settings
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("access_token_ttl") && err.contains("shorter than 1s"),
            "{err}"
        );
        assert_eq!(parse_token_ttl("1500ms"), Ok(Duration::from_secs(1)));
    }

    #[test]
    fn token_subcommand() {
        let cli =
            Cli::try_parse_from(["oakestra-root", "token", "create", "--name", "edge"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Token {
                action: TokenAction::Create { name: Some(ref n) }
            }) if n == "edge"
        ));
    }

    #[test]
    fn worker_subnet_prefix_from_flag_env_or_file_defaults_to_oakestras_26() {
        let resolve = |args: &[&str]| {
            let mut argv = vec!["oakestra-root"];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv).map(|cli| cli.settings.resolve())
        };
        let default = resolve(&[]).unwrap().unwrap();
        assert_eq!(default.worker_subnet_prefix, 26);
        let from_flag = resolve(&["--worker-subnet-prefix", "24"]).unwrap().unwrap();
        assert_eq!(from_flag.worker_subnet_prefix, 24);
        assert_eq!(parse_worker_subnet_prefix("/23"), Ok(23));
        for bad in ["21", "27", "x", "-1"] {
            let err = parse_worker_subnet_prefix(bad).unwrap_err();
            assert!(err.contains("24 (253)"), "{err}");
        }
        assert!(resolve(&["--worker-subnet-prefix", "20"]).is_err());

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("root.toml");
        std::fs::write(&file, "worker_subnet_prefix = 22\n").unwrap();
        let path = file.to_str().unwrap();
        let from_file = resolve(&["--config", path]).unwrap().unwrap();
        assert_eq!(from_file.worker_subnet_prefix, 22);
        // The flag wins over the file.
        let both = resolve(&["--config", path, "--worker-subnet-prefix", "25"])
            .unwrap()
            .unwrap();
        assert_eq!(both.worker_subnet_prefix, 25);
        std::fs::write(&file, "worker_subnet_prefix = 27\n").unwrap();
        let err = resolve(&["--config", path])
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(err.contains("worker_subnet_prefix"), "{err}");
    }
}
