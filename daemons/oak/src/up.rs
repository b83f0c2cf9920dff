//! `oak up`: the 1-DOC set-up in one process — root orchestrator, cluster orchestrator (with
//! its embedded MQTT broker) and worker(s), embedded stores, wired together with no
//! configuration. The worker runs real containers by default (`--runtime auto`: containerd,
//! plus qemu unikernels when qemu is installed) with the overlay network on, through the
//! containerd of `--containerd-socket` or, when none answers there, a containerd of its own
//! (see [`crate::own_containerd`]). `--runtime fake` runs the control plane alone.
// The doc comments of the arguments are also their --help texts, written for people
// (`HOST[:PORT]`, `<cluster data dir>`), not rustdoc links or HTML.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use tokio::sync::watch;

/// Flags of `oak up`.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// State of every component, in subdirectories root/, cluster/ and worker-N/
    /// [default: $XDG_DATA_HOME/oakestra, else ~/.local/share/oakestra, else ./oakestra-data].
    #[arg(long, env = "OAK_UP_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// REST API address of the root.
    #[arg(long, env = "OAK_UP_API_LISTEN", default_value = "0.0.0.0:10000")]
    pub api_listen: SocketAddr,
    /// gRPC address of the root (where other clusters join).
    #[arg(long, env = "OAK_UP_GRPC_LISTEN", default_value = "0.0.0.0:50052")]
    pub grpc_listen: SocketAddr,
    /// Worker API of the cluster (where other workers register).
    #[arg(long, env = "OAK_UP_CLUSTER_LISTEN", default_value = "0.0.0.0:10100")]
    pub cluster_listen: SocketAddr,
    /// Embedded MQTT broker of the cluster.
    #[arg(long, env = "OAK_UP_MQTT_LISTEN", default_value = "0.0.0.0:10003")]
    pub mqtt_listen: SocketAddr,
    /// Name of the cluster.
    #[arg(long, default_value = "local")]
    pub cluster_name: String,
    /// Workers to run in this process (see `--runtime`);
    /// 0 runs none, so real workers join instead.
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    /// In-process workers advertise this many cores (with 0 % load) instead of measuring the
    /// host (simulation; capacity is reservation-based, so a busy host is schedulable anyway).
    #[arg(long)]
    pub worker_cpus: Option<u32>,
    /// In-process workers advertise this much memory (MB) instead of measuring the host.
    #[arg(long)]
    pub worker_memory_mb: Option<u64>,
    /// Runtime of the in-process workers, as `oakestra-node --runtime`: `auto` (containers in
    /// containerd, plus qemu unikernels when qemu is installed), `containerd`, `unikernel`, or
    /// `fake` (instances are scheduled and reach RUNNING but run no code).
    #[arg(long, env = "OAK_UP_RUNTIME", value_enum, default_value = "auto")]
    pub runtime: oakestra_node::RuntimeKind,
    /// The instances' overlay network (service IPs 10.30.x.y, DNS, port mappings): `auto` is
    /// on with a real runtime; `on` refuses to start without it; `off`.
    #[arg(long, env = "OAK_UP_OVERLAY", value_enum, default_value = "auto")]
    pub overlay: oakestra_node::OverlayMode,
    /// Tag of the overlay's bridge, namespaces and firewall chains (1–8 lowercase letters or
    /// digits), so two set-ups on one host do not meet.
    #[arg(long, env = "OAK_UP_OVERLAY_TAG", default_value = oakestra_net::dataplane::Naming::DEFAULT_TAG)]
    pub overlay_tag: String,
    /// UDP port of the overlay tunnel between workers.
    #[arg(long, env = "OAK_UP_TUNNEL_PORT", default_value_t = oakestra_net::dataplane::tunnel::DEFAULT_TUNNEL_PORT)]
    pub tunnel_port: u16,
    /// containerd's socket, for `--runtime containerd|auto`. When nothing answers there,
    /// `oak up` runs a containerd of its own under `<data dir>/containerd` (needs root and the
    /// `containerd` and `runc` binaries).
    #[arg(
        long,
        env = "OAK_UP_CONTAINERD_SOCKET",
        default_value = oakestra_node::config::DEFAULT_CONTAINERD_SOCKET
    )]
    pub containerd_socket: PathBuf,
    /// containerd namespace of the workers' containers, images and snapshots; worker N > 0
    /// uses `<namespace>-N`, so in-process workers never share one.
    #[arg(
        long,
        env = "OAK_UP_CONTAINERD_NAMESPACE",
        default_value = oakestra_node::config::DEFAULT_CONTAINERD_NAMESPACE
    )]
    pub containerd_namespace: String,
    /// A registry (HOST[:PORT]) to pull from over plain HTTP (loopback registries always
    /// are); repeat the flag, or separate with commas in the environment variable.
    #[arg(
        long = "insecure-registry",
        env = "OAK_UP_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub insecure_registries: Vec<String>,
    /// How long a stopped instance may take to exit before it is killed.
    #[arg(long, env = "OAK_UP_STOP_GRACE", default_value = "5s", value_parser = oakestra_core::duration::parse_duration)]
    pub stop_grace: Duration,
    /// Scheduler of the cluster, as `oakestra-cluster --scheduler`: best_fit, first_fit,
    /// least_loaded, ldp (dashes work too), or external:http://HOST:PORT/PATH.
    #[arg(long, env = "OAK_UP_SCHEDULER", default_value = "best_fit")]
    pub scheduler: oakestra_cluster::sched::SchedulerChoice,
    /// How long an external scheduler may take to answer.
    #[arg(long, env = "OAK_UP_SCHEDULER_TIMEOUT", default_value = "5s", value_parser = oakestra_core::duration::parse_duration)]
    pub scheduler_timeout: Duration,
    /// Free capacity of a worker, as `oakestra-cluster --capacity`: `reservations` (cores and
    /// memory minus what placed instances ask for) or `usage` (Oakestra's measured load).
    #[arg(long, env = "OAK_UP_CAPACITY", default_value = "reservations")]
    pub capacity: oakestra_sched::capacity::CapacityMode,
    /// Cores each worker keeps for its own system.
    #[arg(long, env = "OAK_UP_SYSTEM_RESERVED_CPUS", default_value_t = 0.0)]
    pub system_reserved_cpus: f64,
    /// Memory each worker keeps for its own system, MB.
    #[arg(long, env = "OAK_UP_SYSTEM_RESERVED_MEMORY_MB", default_value_t = 0)]
    pub system_reserved_memory_mb: u64,
    /// Overload guard: a worker whose measured CPU usage is at or above this percentage takes
    /// no new instance [default: none].
    #[arg(long, env = "OAK_UP_MAX_LOAD")]
    pub max_load: Option<f64>,
    /// Where the built-in worker serves its Prometheus metrics (worker N: the port + N);
    /// off by default (the root's and the cluster's are on their API ports at /metrics).
    #[arg(long, env = "OAK_UP_WORKER_METRICS_LISTEN")]
    pub worker_metrics_listen: Option<SocketAddr>,
    /// Require `Authorization: Bearer <token>` on GET /metrics of the root, the cluster and
    /// the workers (as their `--metrics-token`) [default: none, /metrics is open].
    #[arg(long, env = "OAK_UP_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Log lines as text for people or as JSON lines (time, level, target, fields, message)
    /// for Loki or any log shipper.
    #[arg(long, env = "OAK_UP_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: oakestra_daemon::LogFormat,
}

impl UpArgs {
    /// Whether the in-process workers run real instances.
    fn real_runtime(&self) -> bool {
        self.workers > 0 && self.runtime != oakestra_node::RuntimeKind::Fake
    }

    /// `--runtime` as the user writes it.
    fn runtime_name(&self) -> String {
        use clap::ValueEnum;
        self.runtime
            .to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_owned())
    }
}

fn default_data_dir() -> PathBuf {
    oakestra_daemon::default_data_dir(
        oakestra_daemon::data_dir::Base::Data,
        "oakestra",
        "oakestra-data",
    )
}

/// `--metrics-token`, unless blank.
fn metrics_token(args: &UpArgs) -> Option<String> {
    args.metrics_token.clone().filter(|t| !t.trim().is_empty())
}

/// The address to show and dial for a listening address (`0.0.0.0` → loopback).
fn dialable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
    } else {
        addr
    }
}

/// The root's cluster join token: the bootstrap token file the root wrote on its first
/// start, or (when that file is gone) a new token, written back to the file.
async fn cluster_join_token(root: &oakestra_root::RunningRoot, root_dir: &Path) -> Result<String> {
    if let Some(token) = oakestra_root::tokens::read_bootstrap_token(root_dir) {
        return Ok(token);
    }
    let created = oakestra_root::tokens::create(root.store.as_ref(), "oak-up")
        .await
        .context("creating a cluster join token")?;
    let path = root_dir.join(oakestra_root::tokens::BOOTSTRAP_TOKEN_FILE);
    oakestra_daemon::private::write(&path, format!("{}\n", created.token).as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(created.token)
}

async fn wait_listening(addr: SocketAddr, what: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if tokio::time::Instant::now() > deadline {
            bail!("the {what} did not start listening on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Everything `oak up` started.
#[derive(Debug)]
pub struct Up {
    /// The root.
    pub root: oakestra_root::RunningRoot,
    /// Where the REST API answers.
    pub api: SocketAddr,
    /// The worker join token of the cluster.
    pub worker_token: String,
    /// The in-process workers.
    pub workers: Vec<oakestra_node::RunningNode>,
    /// The containerd `oak up` started, if it did.
    pub containerd: Option<crate::own_containerd::OwnContainerd>,
    cluster_stop: watch::Sender<bool>,
    cluster: tokio::task::JoinHandle<Result<(), oakestra_cluster::StartError>>,
}

impl Up {
    /// Stops the workers, the cluster and the root. Each gets a few seconds: a server that
    /// still waits for a peer's stream to end (the cluster's session with the root, whose
    /// background tasks outlive `oakestra_cluster::run`) is not waited for longer.
    pub async fn stop(self) -> Result<()> {
        const GRACE: Duration = Duration::from_secs(3);
        for worker in self.workers {
            if tokio::time::timeout(GRACE, worker.stop()).await.is_err() {
                tracing::warn!("a worker did not stop within {GRACE:?}");
            }
        }
        let _ = self.cluster_stop.send(true);
        if tokio::time::timeout(GRACE, self.cluster).await.is_err() {
            tracing::warn!("the cluster orchestrator did not stop within {GRACE:?}");
        }
        // The root's gRPC server waits for the cluster's session stream, which the cluster's
        // background link task keeps open; the process ends right after, so one second is enough.
        match tokio::time::timeout(Duration::from_secs(1), self.root.stop()).await {
            Ok(result) => result?,
            Err(_) => tracing::debug!("the root orchestrator did not stop within 1s"),
        }
        if let Some(containerd) = self.containerd {
            containerd.stop().await;
        }
        Ok(())
    }
}

/// The containerd socket the workers use: the configured one when it answers, else one of our
/// own (already running from an earlier `oak up`, or started now). `None` with the fake
/// runtime, or with `auto` when containerd is not wanted.
async fn containerd_for_workers(
    args: &UpArgs,
    data: &Path,
) -> Result<(PathBuf, Option<crate::own_containerd::OwnContainerd>)> {
    use crate::own_containerd::{Layout, OwnContainerd, answers, check_prerequisites, find_binary};
    let configured = args.containerd_socket.clone();
    let wants_containerd = matches!(
        args.runtime,
        oakestra_node::RuntimeKind::Auto | oakestra_node::RuntimeKind::Containerd
    );
    if !args.real_runtime() || !wants_containerd || answers(&configured).await {
        return Ok((configured, None));
    }
    let layout = Layout::under(data);
    let binary = check_prerequisites(crate::own_containerd::is_root(), &configured, find_binary)?;
    if answers(&layout.socket).await {
        // Left running by an `oak up` that was killed: use it (containers kept running in it).
        println!(
            "using the containerd already running on {}",
            layout.socket.display()
        );
        return Ok((layout.socket, None));
    }
    println!(
        "no containerd on {}: starting one of our own ({})",
        configured.display(),
        layout.dir.display()
    );
    let own = OwnContainerd::start(binary, layout).await?;
    Ok((own.socket.clone(), Some(own)))
}

/// Starts root, cluster and workers; returns once the workers registered.
pub async fn start(args: &UpArgs) -> Result<Up> {
    let data = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let root_dir = data.join("root");
    let cluster_dir = data.join("cluster");
    let capacity = oakestra_cluster::config::capacity_policy(
        args.capacity,
        args.system_reserved_cpus,
        args.system_reserved_memory_mb,
        args.max_load,
    )
    .map_err(anyhow::Error::msg)?;
    oakestra_net::dataplane::Naming::new(&args.overlay_tag)
        .map_err(|e| anyhow::anyhow!("--overlay-tag: {e}"))?;
    let (containerd_socket, containerd) = containerd_for_workers(args, &data).await?;

    let mut root_config = oakestra_root::Config::with_data_dir(&root_dir);
    root_config.listen = args.api_listen;
    root_config.grpc_listen = args.grpc_listen;
    root_config.metrics_token = metrics_token(args);
    let root = oakestra_root::start(root_config)
        .await
        .context("starting the root orchestrator")?;
    let grpc = root
        .grpc_addr
        .context("the root started without its cluster endpoint")?;
    let api = dialable(root.rest_addr);
    let cluster_token = cluster_join_token(&root, &root_dir).await?;

    std::fs::create_dir_all(&cluster_dir)
        .with_context(|| format!("creating {}", cluster_dir.display()))?;
    let worker_token = oakestra_cluster::worker_join_token(&cluster_dir)
        .context("reading the cluster's worker join token")?;
    let mut cluster_config = oakestra_cluster::Config::with_data_dir(&cluster_dir);
    cluster_config.name = args.cluster_name.clone();
    cluster_config.root = Some(dialable(grpc).to_string());
    cluster_config.join_token = Some(cluster_token);
    cluster_config.listen = args.cluster_listen;
    cluster_config.mqtt = oakestra_cluster::MqttMode::Embedded(args.mqtt_listen);
    cluster_config.worker_join_token = Some(worker_token.clone());
    cluster_config.scheduler = args.scheduler.clone();
    cluster_config.scheduler_timeout = args.scheduler_timeout;
    cluster_config.capacity = capacity;
    cluster_config.metrics_token = metrics_token(args);
    let (cluster_stop, mut stop) = watch::channel(false);
    let cluster = tokio::spawn(oakestra_cluster::run(cluster_config, async move {
        let _ = stop.wait_for(|s| *s).await.map(|_| ());
    }));
    let cluster_api = dialable(args.cluster_listen);
    let mut cluster = cluster;
    tokio::select! {
        ready = wait_listening(cluster_api, "cluster orchestrator") => ready?,
        ended = &mut cluster => match ended {
            Ok(Err(e)) => bail!("the cluster orchestrator stopped: {e}"),
            _ => bail!("the cluster orchestrator stopped"),
        },
    }

    let mut workers = Vec::new();
    for i in 0..args.workers {
        let address = oakestra_node::ClusterAddress {
            host: cluster_api.ip().to_string(),
            port: cluster_api.port(),
        };
        let mut config = oakestra_node::Config::new(
            address,
            worker_token.clone(),
            data.join(format!("worker-{i}")),
        );
        if args.workers > 1 {
            config.name = format!("{}-{i}", config.name);
        }
        config.runtime = args.runtime;
        config.containerd_socket = containerd_socket.clone();
        // One overlay per host network: the service range routes to one worker's proxy, so
        // further in-process workers run their instances without it.
        config.overlay = if i == 0 {
            args.overlay
        } else {
            oakestra_node::OverlayMode::Off
        };
        config.overlay_tag = args.overlay_tag.clone();
        config.tunnel_port = args.tunnel_port;
        config.containerd_namespace = if i == 0 {
            args.containerd_namespace.clone()
        } else {
            format!("{}-{i}", args.containerd_namespace)
        };
        config.insecure_registries = args.insecure_registries.clone();
        config.stop_grace = args.stop_grace;
        config.metrics_listen = args.worker_metrics_listen.map(|a| {
            SocketAddr::new(
                a.ip(),
                a.port().saturating_add(u16::try_from(i).unwrap_or(0)),
            )
        });
        config.metrics_token = metrics_token(args);
        if args.worker_cpus.is_some() || args.worker_memory_mb.is_some() {
            let mut host = oakestra_node::info::InfoCollector::host(Default::default());
            let measured = host.sample();
            config.simulated = Some(oakestra_node::SimulatedResources {
                vcpus: args.worker_cpus.unwrap_or(measured.vcpus),
                memory_mb: args
                    .worker_memory_mb
                    .unwrap_or(measured.memory_total.unwrap_or(measured.memory)),
                cpu_percent: 0.0,
            });
        }
        let node = oakestra_node::start(config)
            .await
            .with_context(|| format!("starting worker {i}"))?;
        workers.push(node);
    }
    for (i, worker) in workers.iter().enumerate() {
        tokio::time::timeout(Duration::from_secs(15), worker.registered())
            .await
            .with_context(|| format!("worker {i} did not register with the cluster"))?;
    }
    Ok(Up {
        root,
        api,
        worker_token,
        workers,
        containerd,
        cluster_stop,
        cluster,
    })
}

/// `oak up`: starts everything, prints where to go, runs until Ctrl-C.
pub async fn run(args: UpArgs) -> Result<()> {
    // Listen for Ctrl-C / SIGTERM from the start, so a signal during start-up stops cleanly.
    let (signalled, mut signal) = watch::channel(false);
    tokio::spawn(async move {
        oakestra_daemon::shutdown_signal().await;
        let _ = signalled.send(true);
    });
    let data = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let up = tokio::select! {
        up = start(&args) => up?,
        _ = signal.wait_for(|s| *s) => {
            println!("stopped during start-up");
            return Ok(());
        }
    };
    let api = up.api;
    println!(
        "Oakestra-rs is up: root, cluster {:?} and {} worker(s) in this process (1-DOC).",
        args.cluster_name,
        up.workers.len()
    );
    println!();
    println!("  dashboard  http://{api}/");
    println!("  API        http://{api}   (docs: http://{api}/api/docs)");
    println!("  login      user Admin, password Admin  -- change it now:");
    println!("             POST http://{api}/api/user/Admin with");
    println!(
        "             {{\"oldPassword\": \"Admin\", \"newPassword\": \"...\"}} (token from POST /api/auth/login)"
    );
    println!(
        "  workers    more join with: oakestra-node --cluster <this host>:{} --token {}",
        args.cluster_listen.port(),
        up.worker_token
    );
    println!("  state      {}", data.display());
    println!("  scheduler  {}", args.scheduler);
    if args.workers > 0 && args.runtime == oakestra_node::RuntimeKind::Fake {
        println!(
            "  note       the built-in worker uses the fake runtime: instances reach RUNNING but run no code (--runtime auto runs them)"
        );
    } else if args.workers > 0 {
        let containerd = match &up.containerd {
            Some(own) => format!("our own containerd on {}", own.socket.display()),
            None => "containerd".to_owned(),
        };
        println!("  runtime    {} via {containerd}", args.runtime_name());
        if args.workers > 1 && args.overlay != oakestra_node::OverlayMode::Off {
            println!(
                "  note       only worker 0 has the overlay network (one per host network); the others run instances without service IPs"
            );
        }
    }
    println!();
    println!("Press Ctrl-C to stop.");
    let _ = signal.wait_for(|s| *s).await.map(|_| ());
    println!("stopping…");
    up.stop().await
}
