//! `oakestra-cluster`: the cluster orchestrator (DESIGN.md §4.3–4.4).
//!
//! * [`root_link`]: gRPC client of the root (`Register` + `Session`), reconnecting with backoff;
//! * [`broker`]: the embedded MQTT broker (rumqttd) with per-worker credentials, or an
//!   external one (mosquitto); [`mqtt`]: the cluster's own MQTT client;
//! * [`http`]: `POST /api/node/register`, `GET /api/cluster/status`, `/metrics`, `/health`;
//! * [`state`]: the worker registry, placement bookkeeping and self-healing, pure and driven
//!   by an explicit clock; [`cluster`]: the actor that owns it, persists it
//!   (`oakestra-store`) and executes its effects; [`sched`]: built-in or external scheduler.
//!
//! [`run`] starts everything and runs until `shutdown` resolves.

#![deny(missing_docs)]

pub mod broker;
pub mod cluster;
pub mod config;
pub mod http;
pub mod inbox;
pub mod metrics;
pub mod mqtt;
pub mod root_link;
pub mod sched;
pub mod state;
pub mod tables;
pub mod workers_report;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;

use tokio::sync::{mpsc, watch};

pub use config::{Config, MqttMode};

/// The generated cluster-link types and client (`oakestra.cluster.v1`), from the contract crate.
pub use oakestra_proto::grpc as proto;

/// Why the cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory or a file in it.
    #[error("data directory {path}: {reason}")]
    DataDir {
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
    /// The store.
    #[error(transparent)]
    Store(#[from] oakestra_store::StoreError),
    /// The embedded broker.
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    /// The TLS certificate or key of the HTTP API.
    #[error("TLS of the HTTP API: {0}; check --tls-cert and --tls-key")]
    Tls(String),
    /// The HTTP listener.
    #[error("cannot listen on {addr} for the HTTP API: {reason}; choose another --listen")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// How the cluster itself reaches the broker.
enum BrokerConnection {
    /// The embedded broker's in-process link.
    Local(broker::LocalLink),
    /// A client of an external broker.
    Client(mqtt::ClientSettings),
}

/// Reads the workers' join token from `<data_dir>/worker-join-token`, creating it (mode 0600)
/// on first start.
pub fn worker_join_token(data_dir: &Path) -> Result<String, StartError> {
    let path = data_dir.join(config::WORKER_JOIN_TOKEN_FILE);
    let err = |e: std::io::Error| StartError::DataDir {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let token = broker::random_secret();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path).map_err(err)?;
    std::io::Write::write_all(&mut file, format!("{token}\n").as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)?;
    tracing::info!(
        "created the worker join token in {} (workers register with it)",
        path.display()
    );
    Ok(token)
}

/// Starts the cluster orchestrator and runs it until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let files = oakestra_daemon::http::raise_file_limit();
    tracing::debug!(?files, "open-file limit");
    oakestra_daemon::private::dir(&config.data_dir).map_err(|e| StartError::DataDir {
        path: config.data_dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let worker_token = match &config.worker_join_token {
        Some(t) => t.clone(),
        None => worker_join_token(&config.data_dir)?,
    };
    let store = oakestra_store::open(&config.store).await?;
    let credentials = broker::Credentials::default();
    let metrics = metrics::Metrics::new();

    // The broker, and how this process and the workers reach it.
    let (connection, advert) = match &config.mqtt {
        MqttMode::Embedded(addr) => {
            let link = broker::start_embedded(*addr, credentials.clone())?;
            tracing::info!("embedded MQTT broker on {addr}");
            (
                BrokerConnection::Local(link),
                cluster::BrokerAdvert {
                    host: config.mqtt_advertise_host.clone(),
                    port: addr.port(),
                    per_worker_credentials: true,
                    ..Default::default()
                },
            )
        }
        MqttMode::External { host, port } => (
            BrokerConnection::Client(mqtt::ClientSettings {
                client_id: format!("oakestra-cluster-{}", config.name),
                host: host.clone(),
                port: *port,
                username: config.mqtt_username.clone(),
                password: config.mqtt_password.clone(),
            }),
            cluster::BrokerAdvert {
                host: if config.mqtt_advertise_host.is_empty() {
                    host.clone()
                } else {
                    config.mqtt_advertise_host.clone()
                },
                port: *port,
                per_worker_credentials: false,
                shared_username: config.mqtt_worker_username.clone().unwrap_or_default(),
                shared_password: config.mqtt_worker_password.clone().unwrap_or_default(),
            },
        ),
    };

    let (commands_tx, commands_rx) = mpsc::channel(4096);
    let (mqtt_tx, mqtt_rx) = mpsc::unbounded_channel();
    let (root_tx, mut root_rx) = mpsc::unbounded_channel();
    let timing = state::Timing {
        worker_timeout: config.worker_timeout,
        backoff_base: config.backoff_base,
        backoff_cap: config.backoff_cap,
        ..state::Timing::default()
    };
    let placer = sched::Placer::new(config.scheduler.clone(), config.scheduler_timeout);
    let mut actor = cluster::Actor::load(
        config.name.clone(),
        store,
        timing,
        cluster::Outputs {
            mqtt: mqtt_tx,
            root: root_tx,
        },
        placer,
        credentials,
        advert,
        metrics.clone(),
    )
    .await?;
    actor.set_inbox(commands_tx.clone());
    actor.set_capacity(config.capacity);
    let reports = inbox::Inbox::counting(metrics.mqtt_messages.clone());
    actor.set_reports(reports.clone());
    tokio::spawn(actor.run(commands_rx));
    match connection {
        BrokerConnection::Local(link) => {
            mqtt::start_local(link, reports, commands_tx.clone(), mqtt_rx)
        }
        BrokerConnection::Client(settings) => {
            mqtt::start(settings, reports, commands_tx.clone(), mqtt_rx)
        }
    }

    let subnets = root_link::SubnetSource::default();
    let (link_state_tx, link_state_rx) = watch::channel(root_link::LinkState {
        address: config.root.clone(),
        ..Default::default()
    });
    match &config.root {
        Some(root) => {
            let settings = root_link::LinkSettings {
                root: root.clone(),
                register: proto::RegisterRequest {
                    name: config.name.clone(),
                    location: config.location.clone(),
                    join_token: config.join_token.clone().unwrap_or_default(),
                    manager_address: String::new(),
                    manager_port: u32::from(config.listen.port()),
                    network_port: 0,
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                },
                backoff_base: std::time::Duration::from_millis(250),
                backoff_cap: std::time::Duration::from_secs(10),
                subnets: subnets.clone(),
            };
            tokio::spawn(root_link::run(
                settings,
                commands_tx.clone(),
                root_rx,
                link_state_tx,
                metrics.clone(),
            ));
        }
        None => {
            tracing::info!("no --root: running without a root orchestrator");
            tokio::spawn(async move { while root_rx.recv().await.is_some() {} });
        }
    }

    let tls = match &config.tls {
        Some(files) => {
            Some(oakestra_daemon::tls::acceptor(&files.cert, &files.key).map_err(StartError::Tls)?)
        }
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartError::Listen {
            addr: config.listen,
            reason: e.to_string(),
        })?;
    tracing::info!(
        name = %config.name,
        scheduler = %config.scheduler,
        "cluster API on {}",
        config.listen
    );
    let app = http::router(http::Api {
        commands: commands_tx,
        worker_token_sha256: broker::sha256_hex(&worker_token),
        metrics,
        metrics_token: config.metrics_token.as_deref().map(std::sync::Arc::from),
        root: link_state_rx,
        subnets,
    });
    oakestra_daemon::http::serve_tls(listener, app, config.http, tls, shutdown, "the cluster API")
        .await;
    Ok(())
}
