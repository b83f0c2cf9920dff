//! `oakestra-node`: the worker (DESIGN.md §4.4, §6). This is the NodeEngine control path: it
//! registers with a cluster, connects to the cluster's MQTT broker with the credentials it got,
//! runs the instances it is sent through a [`Runtime`], and reports
//! `information`, `jobs/resources` and `job` status changes. Container instances get their own
//! network namespace on the worker's overlay subnet ([`overlay`]).
//!
//! Library first: [`start`] runs a worker inside any tokio runtime (tests, `oak up`, `oak sim`)
//! and [`run`] is what the binary calls.
//!
//! * [`config`] — flags, environment, TOML file.
//! * [`engine`] — instances, desired state, status reports, re-adoption after a restart.
//! * [`state`] — the state file (identity and desired instances, written atomically).
//! * [`info`] — what the worker reports about itself, from procfs.
//! * [`link`] — registration and the MQTT session.
//! * [`metrics`] — Prometheus metrics on `GET /metrics`.
//! * [`overlay`] — the instances' network namespaces (`oakestra_net`'s data plane).

#![deny(missing_docs)]

pub mod config;
pub mod dns_forward;
pub mod engine;
pub mod host_io;
pub mod info;
pub mod link;
pub mod logs;
pub mod metrics;
pub mod overlay;
pub mod state;

use std::sync::Arc;

use oakestra_proto::mqtt::NodeInfo;
use oakestra_runtime::{
    ContainerdConfig, ContainerdRuntime, FakeRuntime, RoutingRuntime, Runtime, RuntimeError,
    UnikernelConfig, UnikernelRuntime, unikernel_available,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{Cli, ClusterAddress, Config, OverlayMode, RuntimeKind, SimulatedResources};
pub use engine::Engine;

use crate::info::InfoCollector;
use crate::link::{MqttReporter, SessionEnd};
use crate::state::{StateError, StateFile};

/// File of the fake runtime's instances inside the data directory: they survive a restart of
/// the worker, as containers survive a restart of a real worker agent.
pub const FAKE_RUNTIME_FILE: &str = "fake-runtime.json";
/// Directory of the unikernel runtime (images, instances, QMP sockets) inside the data
/// directory; short, because a unix socket path holds at most 107 bytes.
pub const UNIKERNEL_DIR: &str = "uk";
/// Directory of the containers' logs inside the data directory.
pub const CONTAINER_LOG_DIR: &str = "logs";
/// Longest unikernel directory whose QMP sockets (`qmp/<16 hex>.sock`) still fit a unix
/// socket path.
const MAX_UNIKERNEL_DIR_LEN: usize = 107 - "/qmp/0123456789abcdef.sock".len();

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The data directory is unusable.
    #[error("cannot use the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The state file is unreadable.
    #[error(transparent)]
    State(#[from] StateError),
    /// The runtime failed.
    #[error("runtime: {0}")]
    Runtime(#[from] RuntimeError),
    /// No runtime the worker was asked for is usable.
    #[error("{0}")]
    NoRuntime(String),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Http(String),
    /// `--overlay on` and the host network cannot be set up.
    #[error(
        "overlay network: {0} (run as root with iptables installed, or start with --overlay off)"
    )]
    Overlay(String),
}

/// Whether `config` asks for the real overlay (`Some(true)`), the in-memory one
/// (`Some(false)`) or none.
fn overlay_wanted(config: &Config) -> Option<bool> {
    match config.overlay {
        OverlayMode::Off => None,
        OverlayMode::Fake => Some(false),
        OverlayMode::On => Some(true),
        OverlayMode::Auto => match config.runtime {
            RuntimeKind::Containerd | RuntimeKind::Auto | RuntimeKind::Unikernel => Some(true),
            RuntimeKind::Fake => None,
        },
    }
}

/// The overlay `config` asks for, if any, with MTU `mtu` when it is the real one.
fn overlay_for(config: &Config, mtu: u32) -> Result<Option<Arc<overlay::Overlay>>, NodeError> {
    let kind = match overlay_wanted(config) {
        None => return Ok(None),
        Some(false) => overlay::PlaneKind::Fake,
        Some(true) => overlay::PlaneKind::Linux {
            naming: oakestra_net::dataplane::Naming::new(&config.overlay_tag)
                .map_err(|e| NodeError::Overlay(e.to_string()))?,
            mtu,
        },
    };
    Ok(Some(overlay::Overlay::new(kind)))
}

/// The overlay's MTU: `--overlay-mtu`, else the underlay's MTU minus the tunnel's overhead,
/// the underlay being the link that holds `public_ip` (the address other workers reach the
/// tunnel at) or, when none does (behind NAT), the link of the route to the cluster; the
/// fixed default when neither is found (a worker reaching its cluster over loopback).
async fn overlay_mtu(config: &Config, public_ip: &str) -> u32 {
    use oakestra_net::dataplane::{DataPlaneConfig, LinuxDataPlane};
    if let Some(mtu) = config.overlay_mtu {
        tracing::info!(mtu, "overlay MTU set by --overlay-mtu");
        return mtu;
    }
    let local = public_ip.parse().ok();
    // The cluster's address, also when it is given by name.
    let toward = match config.cluster.host.parse() {
        Ok(ip) => Some(ip),
        Err(_) => tokio::net::lookup_host((config.cluster.host.as_str(), config.cluster.port))
            .await
            .ok()
            .and_then(|mut found| found.next())
            .map(|a| a.ip()),
    };
    match LinuxDataPlane::detect_underlay(local, toward).await {
        Ok(Some(underlay)) => {
            let mtu = underlay.overlay_mtu();
            tracing::info!(
                link = %underlay.link,
                underlay_mtu = underlay.mtu,
                mtu,
                "overlay MTU follows the underlay (change it with --overlay-mtu)"
            );
            mtu
        }
        Ok(None) => {
            tracing::info!(
                mtu = DataPlaneConfig::DEFAULT_MTU,
                "no underlay link found for {public_ip}: default overlay MTU (change it with \
                 --overlay-mtu)"
            );
            DataPlaneConfig::DEFAULT_MTU
        }
        Err(e) => {
            tracing::warn!(
                mtu = DataPlaneConfig::DEFAULT_MTU,
                "cannot read the underlay's MTU ({e}): default overlay MTU (set it with \
                 --overlay-mtu)"
            );
            DataPlaneConfig::DEFAULT_MTU
        }
    }
}

/// Brings the overlay up on the worker's subnet; with `--overlay auto` a failure only warns
/// (containers then run without it).
async fn enable_overlay(
    overlay: &overlay::Overlay,
    mode: OverlayMode,
    subnets: Result<oakestra_net::ipam::WorkerSubnets, oakestra_net::ipam::IpamError>,
    keep: &[oakestra_runtime::InstanceId],
) -> Result<(), NodeError> {
    let enabled = match subnets {
        Ok(subnets) => overlay.enable_subnets(subnets, keep).await,
        Err(e) => Err(e.into()),
    };
    match enabled {
        Ok(()) => Ok(()),
        Err(e) if mode == OverlayMode::On => Err(NodeError::Overlay(e.to_string())),
        Err(e) => {
            tracing::warn!(
                "overlay network unavailable, containers run without it: {e} (run as root with \
                 iptables installed, or start with --overlay off to silence this)"
            );
            Ok(())
        }
    }
}

/// A worker running in the background.
#[derive(Debug)]
pub struct RunningNode {
    /// The engine (statuses, tests).
    pub engine: Arc<Engine>,
    /// The worker id once registered.
    pub id: watch::Receiver<Option<String>>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningNode {
    /// Stops reporting and disconnects. Instances keep running in the runtime; a new worker
    /// on the same data directory re-adopts them.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// Waits until the worker stops (after a shutdown request).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// A handle that stops the worker when sent `true`.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }

    /// Waits until the worker has registered and returns its id.
    pub async fn registered(&self) -> Option<String> {
        let mut id = self.id.clone();
        id.wait_for(|i| i.is_some()).await.ok()?.clone()
    }
}

fn containerd_config(config: &Config) -> ContainerdConfig {
    ContainerdConfig {
        socket: config.containerd_socket.clone(),
        namespace: config.containerd_namespace.clone(),
        log_dir: config.data_dir.join(CONTAINER_LOG_DIR),
        insecure_registries: config.insecure_registries.clone(),
        credentials: config.registry_credentials.clone(),
        ..ContainerdConfig::default()
    }
}

/// Where the unikernel runtime keeps its state: `<data dir>/uk`, or a short directory under
/// /tmp named after the data directory when that path is too long for QMP sockets.
pub fn unikernel_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    let dir = data_dir.join(UNIKERNEL_DIR);
    if dir.as_os_str().len() <= MAX_UNIKERNEL_DIR_LEN {
        return dir;
    }
    // FNV-1a: stable across builds, so a restarted worker finds the same directory.
    let hash = data_dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    let short = std::env::temp_dir().join(format!("oak-uk-{hash:016x}"));
    tracing::warn!(
        "the data directory is too long for unikernel QMP sockets; unikernels live in {}",
        short.display()
    );
    short
}

fn unikernel_runtime(
    config: &Config,
    net: Option<&oakestra_runtime::unikernel::GuestNetResolver>,
) -> Result<UnikernelRuntime, NodeError> {
    let runtime = UnikernelRuntime::new(UnikernelConfig::new(unikernel_dir(&config.data_dir)))?;
    if let Some(net) = net {
        runtime.set_network_resolver(Arc::clone(net));
    }
    Ok(runtime)
}

/// The runtime `config` asks for. `auto` routes between containerd (when its socket answers)
/// and qemu unikernels (when qemu is installed), and fails when neither is there.
async fn build_runtime(
    config: &Config,
    netns: Option<oakestra_runtime::containerd::NetnsResolver>,
    guest_net: Option<oakestra_runtime::unikernel::GuestNetResolver>,
) -> Result<Arc<dyn Runtime>, NodeError> {
    match config.runtime {
        RuntimeKind::Fake => {
            let mut fake = config.fake.clone();
            if fake.state_file.is_none() {
                fake.state_file = Some(config.data_dir.join(FAKE_RUNTIME_FILE));
            }
            Ok(Arc::new(FakeRuntime::new(fake)?))
        }
        RuntimeKind::Containerd => {
            let runtime = ContainerdRuntime::connect(containerd_config(config))
                .await
                .map_err(|e| {
                    NodeError::NoRuntime(format!(
                        "--runtime containerd: {e}. Install and start containerd (e.g. `apt \
                         install containerd`), point --containerd-socket at it, or run with \
                         --runtime fake"
                    ))
                })?;
            if let Some(resolver) = netns {
                runtime.set_netns_resolver(resolver);
            }
            // Routed even alone: the router maps Oakestra's container names (`container`,
            // the SLA's, and `docker`) to what containerd runs.
            Ok(Arc::new(RoutingRuntime::new(vec![Arc::new(runtime)])))
        }
        RuntimeKind::Unikernel => {
            if !unikernel_available() {
                return Err(NodeError::NoRuntime(
                    "--runtime unikernel: qemu is not installed (no qemu-system-* for this \
                     architecture on PATH); install it (e.g. `apt install qemu-system-x86`) or \
                     run with --runtime fake"
                        .into(),
                ));
            }
            Ok(Arc::new(unikernel_runtime(config, guest_net.as_ref())?))
        }
        RuntimeKind::Auto => {
            let mut runtimes: Vec<Arc<dyn Runtime>> = Vec::new();
            let containerd_problem =
                match ContainerdRuntime::connect(containerd_config(config)).await {
                    Ok(runtime) => {
                        tracing::info!(
                            socket = %config.containerd_socket.display(),
                            snapshotter = runtime.snapshotter(),
                            "containers run in containerd"
                        );
                        if let Some(resolver) = netns {
                            runtime.set_netns_resolver(resolver);
                        }
                        runtimes.push(Arc::new(runtime));
                        None
                    }
                    Err(e) => {
                        tracing::warn!("no containers on this worker: {e}");
                        Some(e.to_string())
                    }
                };
            if unikernel_available() {
                let runtime = unikernel_runtime(config, guest_net.as_ref())?;
                tracing::info!(dir = %runtime.config().data_dir.display(), "unikernels run in qemu");
                runtimes.push(Arc::new(runtime));
            } else {
                tracing::info!("no unikernels on this worker: qemu is not installed");
            }
            if runtimes.is_empty() {
                return Err(NodeError::NoRuntime(format!(
                    "--runtime auto found nothing to run instances with: containerd is not \
                     usable ({}) and qemu is not installed. Install and start containerd (e.g. \
                     `apt install containerd`) or give its socket with --containerd-socket, \
                     install qemu (e.g. `apt install qemu-system-x86`) for unikernels, or run \
                     with --runtime fake for a worker that runs nothing real",
                    containerd_problem.unwrap_or_default()
                )));
            }
            Ok(Arc::new(RoutingRuntime::new(runtimes)))
        }
    }
}

/// Starts a worker: loads its state, re-adopts its instances, then registers and connects in
/// the background (retrying while the cluster is unreachable; instances keep running).
pub async fn start(config: Config) -> Result<RunningNode, NodeError> {
    oakestra_daemon::private::dir(&config.data_dir).map_err(|source| NodeError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let file = StateFile::new(&config.data_dir);
    let saved = file.load()?;
    let public_ip = match config.advertise_ip.clone() {
        Some(ip) => ip,
        None => {
            // May resolve the cluster's host name: blocking, so off the async threads.
            let (host, port) = (config.cluster.host.clone(), config.cluster.port);
            tokio::task::spawn_blocking(move || info::local_ip_towards(&host, port))
                .await
                .unwrap_or_else(|_| "127.0.0.1".to_owned())
        }
    };
    let mtu = match overlay_wanted(&config) {
        Some(true) => Some(overlay_mtu(&config, &public_ip).await),
        _ => None,
    };
    let overlay = overlay_for(
        &config,
        mtu.unwrap_or(oakestra_net::dataplane::DataPlaneConfig::DEFAULT_MTU),
    )?;
    let runtime = build_runtime(
        &config,
        overlay.as_ref().map(|o| o.resolver()),
        overlay.as_ref().map(|o| o.guest_resolver()),
    )
    .await?;
    // The overlay comes up now when the worker knows its subnet from before (a restart),
    // keeping the namespaces of the instances that should still run.
    let saved_subnet = saved.identity.as_ref().and_then(|i| i.subnets());
    let keep: Vec<oakestra_runtime::InstanceId> = saved
        .instances
        .values()
        .filter(|e| !e.deleting && e.wants_running())
        .map(|e| e.id())
        .collect();
    let reporter = Arc::new(MqttReporter::default());
    let engine = Engine::new(
        Arc::clone(&runtime),
        file,
        saved,
        reporter.clone(),
        public_ip.clone(),
        config.stop_grace,
    );
    if let Some(overlay) = &overlay {
        // The service-IP tunnel, reached by other workers at the address this one reports.
        if let Ok(ip) = public_ip.parse::<std::net::IpAddr>() {
            overlay.set_tunnel(
                std::net::SocketAddr::from(([0, 0, 0, 0], config.tunnel_port)),
                std::net::SocketAddr::new(ip, config.tunnel_port),
            );
        }
        if config.dns_port != 0 {
            overlay.set_dns(overlay::DnsListen::Bridge(config.dns_port));
        }
        if !config.rtt_override.is_empty() {
            tracing::info!(overrides = ?config.rtt_override, "RTTs for closest IPs overridden");
            overlay.set_rtt_overrides(config.rtt_override.clone());
        }
        overlay.set_publisher(reporter.clone());
        reporter.set_overlay(overlay.clone());
        engine.set_network(overlay.clone());
        if let Some(subnet) = saved_subnet {
            enable_overlay(overlay, config.overlay, subnet, &keep).await?;
        }
    }
    engine.spawn_exit_watcher();
    engine.recover().await?;
    let metrics_server = config.metrics_listen.map(|addr| {
        tokio::spawn(metrics::serve(
            addr,
            Arc::clone(&engine),
            config.metrics_token.clone(),
            config.data_dir.clone(),
        ))
    });

    let base = NodeInfo {
        host: config.name.clone(),
        ip: public_ip,
        architecture: info::go_arch().to_owned(),
        virtualization: runtime.virtualizations(),
        location: config.location.clone(),
        overlay_mtu: mtu,
        ..NodeInfo::default()
    };
    let mut collector = match &config.simulated {
        Some(resources) => InfoCollector::simulated(base, resources.clone()),
        None => InfoCollector::host(base),
    };
    let http = registration_client(config.cluster_ca.as_deref())?;
    let (shutdown, mut stop) = watch::channel(false);
    let (id_tx, id) = watch::channel(None);
    let task_engine = Arc::clone(&engine);
    let task = tokio::spawn(async move {
        let engine = task_engine;
        loop {
            let previous = engine.identity();
            let body = collector.sample();
            let Some(identity) =
                link::register(&http, &config, body, previous.as_ref(), &mut stop).await
            else {
                break;
            };
            collector.set_id(&identity.id);
            metrics::Metrics::inc(&engine.metrics().registrations);
            engine.set_identity(identity.clone()).await;
            if let (Some(overlay), Some(subnets)) = (&overlay, identity.subnets())
                && overlay.plane().is_none()
                && let Err(e) = enable_overlay(overlay, config.overlay, subnets, &[]).await
            {
                tracing::error!("{e}; instances start without the overlay");
            }
            let _ = id_tx.send(Some(identity.id.clone()));
            match link::session(
                &engine,
                &reporter,
                &identity,
                &mut collector,
                &config,
                &mut stop,
            )
            .await
            {
                SessionEnd::Shutdown => break,
                SessionEnd::Rejected => continue,
            }
        }
        if let Some(server) = metrics_server {
            server.abort();
        }
    });
    Ok(RunningNode {
        engine,
        id,
        shutdown,
        task,
    })
}

/// Runs a worker until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), NodeError> {
    let node = start(config).await?;
    let stopper = node.shutdown_handle();
    tokio::spawn(async move {
        oakestra_daemon::shutdown_signal().await;
        tracing::info!("shutting down; instances keep running and are re-adopted on restart");
        let _ = stopper.send(true);
    });
    node.wait().await;
    Ok(())
}

/// The HTTP client of the registration: with `cluster_ca`, HTTPS only, trusting only the CA
/// certificate(s) in that PEM file (the worker pins its cluster).
fn registration_client(cluster_ca: Option<&std::path::Path>) -> Result<reqwest::Client, NodeError> {
    let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10));
    if let Some(path) = cluster_ca {
        let bad = |e: String| {
            NodeError::Http(format!(
                "--cluster-ca {}: {e}; give the PEM certificate of the CA that signed the \
                 cluster's --tls-cert",
                path.display()
            ))
        };
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no certificate in the file".into()));
        }
        builder = builder.tls_built_in_root_certs(false).https_only(true);
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| NodeError::Http(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unikernel_dir_is_short_enough_for_qmp_sockets() {
        let short = std::path::Path::new("/var/lib/oakestra-node");
        assert_eq!(unikernel_dir(short), short.join(UNIKERNEL_DIR));
        let long = std::path::PathBuf::from(format!("/{}", "d".repeat(120)));
        let dir = unikernel_dir(&long);
        assert!(
            dir.as_os_str().len() <= MAX_UNIKERNEL_DIR_LEN,
            "{}",
            dir.display()
        );
        assert_eq!(dir, unikernel_dir(&long), "stable across calls");
    }
}
