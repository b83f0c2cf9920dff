//! Configuration: flags, environment variables and an optional TOML file, in that order of
//! precedence.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use oakestra_runtime::FakeConfig;
use oakestra_runtime::containerd::RegistryCredentials;
use serde::Deserialize;

// Defined beside the measuring it replaces; part of the configuration.
pub use crate::info::SimulatedResources;

/// Default port of the cluster's worker registration API.
pub const DEFAULT_CLUSTER_PORT: u16 = 10100;
/// Default interval of `information` and `jobs/resources` reports.
pub const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_secs(2);
/// Default address of the metrics endpoint.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:10101";
/// Longest wait between two registration attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where the cluster's registration API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterAddress {
    /// Host name or address.
    pub host: String,
    /// Port of `POST /api/node/register`.
    pub port: u16,
}

impl ClusterAddress {
    /// Parses `HOST`, `HOST:PORT`, `[V6]` or `[V6]:PORT` (an `http://` prefix is accepted).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let text = text
            .strip_prefix("http://")
            .unwrap_or(text)
            .trim_end_matches('/');
        if text.is_empty() {
            return Err("the cluster address is empty; write HOST or HOST:PORT".into());
        }
        if text.contains("://") {
            return Err(format!(
                "{text:?}: only plain http is supported; write HOST or HOST:PORT"
            ));
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{text:?}: missing ']' after an IPv6 address"))?;
            (host, after.strip_prefix(':'))
        } else if text.matches(':').count() > 1 {
            (text, None)
        } else {
            match text.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (text, None),
            }
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("{text:?}: port {p:?} is not a number from 1 to 65535"))?,
            None => DEFAULT_CLUSTER_PORT,
        };
        if host.is_empty() || port == 0 {
            return Err(format!("{text:?}: write HOST or HOST:PORT"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }

    /// `host:port` for URLs (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for ClusterAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.authority())
    }
}

/// Default socket of containerd.
pub const DEFAULT_CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";

/// Default containerd namespace of the worker.
pub const DEFAULT_CONTAINERD_NAMESPACE: &str = "oakestra";

/// Which runtime runs the instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// containerd when its socket answers, plus qemu unikernels when qemu is installed,
    /// routed by virtualization (the binary's default).
    Auto,
    /// Containers only, through containerd.
    Containerd,
    /// qemu unikernels only.
    Unikernel,
    /// In-memory fake (tests, simulation): runs nothing. The default of [`Config::new`], which
    /// `oak up` and `oak sim` use.
    #[default]
    Fake,
}

/// Whether instances get the overlay network (issue 8): their own network namespace with an
/// address from the worker's subnet, behind the worker's bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OverlayMode {
    /// On with a real runtime (`containerd`, `unikernel` or `auto`); a host where it cannot be
    /// set up runs the instances without it (warning).
    #[default]
    Auto,
    /// Always on; the worker does not start when the host network cannot be set up.
    On,
    /// Off: containers get an isolated namespace with loopback only (Oakestra without its
    /// NetManager).
    Off,
    /// The in-memory data plane (tests, simulation): addresses are handed out, nothing is
    /// created on the host.
    Fake,
}

/// The resolved configuration of a worker.
#[derive(Debug, Clone)]
pub struct Config {
    /// The cluster's registration API.
    pub cluster: ClusterAddress,
    /// The cluster's worker join token.
    pub token: String,
    /// State directory (identity, desired instances, fake runtime state).
    pub data_dir: PathBuf,
    /// The runtime.
    pub runtime: RuntimeKind,
    /// Settings of the fake runtime.
    pub fake: FakeConfig,
    /// containerd's gRPC socket.
    pub containerd_socket: PathBuf,
    /// containerd namespace of the worker's containers, images and snapshots (two workers on
    /// one containerd need two namespaces).
    pub containerd_namespace: String,
    /// Registries (`host[:port]`) pulled from over plain HTTP besides loopback ones.
    pub insecure_registries: Vec<String>,
    /// Credentials per registry host (`docker.io`, `reg.lan:5000`).
    pub registry_credentials: HashMap<String, RegistryCredentials>,
    /// Name the worker registers with (default: the host name).
    pub name: String,
    /// `"LAT,LON"` of the worker.
    pub location: Option<String>,
    /// Address the worker reports (default: the local address of the route to the cluster).
    pub advertise_ip: Option<String>,
    /// Broker host to dial instead of the one the cluster names.
    pub mqtt_host: Option<String>,
    /// Interval of `information` and `jobs/resources`.
    pub report_interval: Duration,
    /// Advertise these instead of measuring the host (the simulator).
    pub simulated: Option<SimulatedResources>,
    /// Grace period of a stop before the task is killed.
    pub stop_grace: Duration,
    /// Where `GET /metrics` is served; `None`: nowhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// When set, `GET /metrics` needs `Authorization: Bearer <this>`.
    pub metrics_token: Option<String>,
    /// PEM certificate(s) of the CA that signed the cluster's worker API certificate: when set,
    /// the worker registers over HTTPS and trusts only these (the cluster runs with
    /// `--tls-cert`/`--tls-key`); `None`: plain HTTP.
    pub cluster_ca: Option<PathBuf>,
    /// The overlay network (`auto` for the binary, `off` from [`Config::new`]).
    pub overlay: OverlayMode,
    /// Tag of the overlay's host names (bridge `<tag>br`, namespaces `<tag>-…`, chains
    /// `<TAG>-…`); two workers on one host need two tags.
    pub overlay_tag: String,
    /// UDP port of the overlay's DNS responder on the bridge address (`0`: none).
    pub dns_port: u16,
    /// UDP port of the service-IP tunnel (Oakestra's 50103).
    pub tunnel_port: u16,
    /// MTU of the overlay (bridge, veths, TUN device); `None`: detected from the underlay
    /// link that carries the tunnel, minus the tunnel's 40 bytes (60 over IPv6).
    pub overlay_mtu: Option<u32>,
    /// RTTs that replace the measured ones for closest IPs, by worker host address
    /// (`--rtt-override`, a test and diagnostic hook).
    pub rtt_override: BTreeMap<IpAddr, Duration>,
}

impl Config {
    /// A configuration with defaults for everything but the cluster, token and data directory.
    pub fn new(cluster: ClusterAddress, token: impl Into<String>, data_dir: PathBuf) -> Self {
        Self {
            cluster,
            token: token.into(),
            data_dir,
            runtime: RuntimeKind::Fake,
            fake: FakeConfig::default(),
            containerd_socket: PathBuf::from(DEFAULT_CONTAINERD_SOCKET),
            containerd_namespace: DEFAULT_CONTAINERD_NAMESPACE.to_owned(),
            insecure_registries: Vec::new(),
            registry_credentials: HashMap::new(),
            name: crate::info::hostname(),
            location: None,
            advertise_ip: None,
            mqtt_host: None,
            report_interval: DEFAULT_REPORT_INTERVAL,
            simulated: None,
            stop_grace: Duration::from_secs(5),
            metrics_listen: None,
            metrics_token: None,
            cluster_ca: None,
            // Embedders (`oak up`, `oak sim`, tests) turn it on explicitly; the binary's default
            // is `auto` (see `Cli::resolve`).
            overlay: OverlayMode::Off,
            overlay_tag: oakestra_net::dataplane::Naming::DEFAULT_TAG.to_owned(),
            tunnel_port: oakestra_net::dataplane::tunnel::DEFAULT_TUNNEL_PORT,
            overlay_mtu: None,
            dns_port: crate::overlay::DEFAULT_DNS_PORT,
            rtt_override: BTreeMap::new(),
        }
    }
}

/// The value of `--rtt-override`: `HOST_IP=MS[,HOST_IP=MS…]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RttOverrides(pub BTreeMap<IpAddr, Duration>);

/// Parses `HOST_IP=MS[,HOST_IP=MS…]` (milliseconds, fractions allowed; empty: none).
pub fn parse_rtt_override(text: &str) -> Result<RttOverrides, String> {
    let mut out = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (host, ms) = item.split_once('=').ok_or_else(|| {
            format!(
                "{item:?} is not HOST_IP=MS; write e.g. 10.0.0.2=5 (5 ms to the worker at 10.0.0.2)"
            )
        })?;
        let host: IpAddr = host.trim().parse().map_err(|_| {
            format!("{host:?} in {item:?} is not an IP address; give the worker's host address")
        })?;
        let ms: f64 = ms
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0 && *v < 3_600_000.0)
            .ok_or_else(|| {
                format!("{ms:?} in {item:?} is not a number of milliseconds (0 up to an hour)")
            })?;
        out.insert(host, Duration::from_secs_f64(ms / 1000.0));
    }
    Ok(RttOverrides(out))
}

/// `$XDG_STATE_HOME/oakestra-node`, else `$HOME/.local/state/oakestra-node`, else
/// `./oakestra-node-data`.
pub fn default_data_dir() -> PathBuf {
    oakestra_daemon::default_data_dir(
        oakestra_daemon::data_dir::Base::State,
        "oakestra-node",
        "oakestra-node-data",
    )
}

pub use oakestra_core::duration::parse_duration;

fn parse_cluster(text: &str) -> Result<ClusterAddress, String> {
    ClusterAddress::parse(text)
}

/// Command line of `oakestra-node`.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "oakestra-node",
    version,
    about = "Oakestra-rs worker: registers with a cluster, runs the instances it is given and reports on them over MQTT",
    after_help = "Every flag can also be set in the TOML file given by --config (same names, with \
                  underscores: cluster, token, data_dir, runtime, containerd_socket, \
                  insecure_registries, name, location, advertise_ip, mqtt_host, report_interval, \
                  stop_grace, metrics_listen, metrics_token, cluster_ca, overlay, overlay_tag, tunnel_port, overlay_mtu, dns_port, rtt_override); registry credentials only there, as \
                  [registry_credentials.\"HOST\"] with username and password. Flags win over the \
                  environment, the environment over the file."
)]
pub struct Cli {
    /// TOML file with any of the settings below.
    #[arg(long, env = "OAKESTRA_NODE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The cluster orchestrator: HOST or HOST:PORT of its worker API [default port: 10100].
    #[arg(long, env = "OAKESTRA_NODE_CLUSTER", value_parser = parse_cluster)]
    pub cluster: Option<ClusterAddress>,
    /// The cluster's worker join token (sent as Authorization: Bearer on registration).
    #[arg(long, env = "OAKESTRA_NODE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// State directory: the worker's identity and MQTT credentials, its desired instances and
    /// the fake runtime's instances [default: $XDG_STATE_HOME/oakestra-node, else
    /// ~/.local/state/oakestra-node, else ./oakestra-node-data].
    #[arg(long, env = "OAKESTRA_NODE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Runtime that runs the instances [default: auto]. `auto`: containerd when its socket
    /// answers plus qemu unikernels when qemu is installed, routed by the instance's
    /// virtualization; `fake` runs nothing real: instances "run" until stopped (for tests and
    /// simulation).
    #[arg(long, env = "OAKESTRA_NODE_RUNTIME", value_enum)]
    pub runtime: Option<RuntimeKind>,
    /// containerd's socket [default: /run/containerd/containerd.sock].
    #[arg(long, env = "OAKESTRA_NODE_CONTAINERD_SOCKET")]
    pub containerd_socket: Option<PathBuf>,
    /// containerd namespace of the worker's containers [default: oakestra].
    #[arg(long, env = "OAKESTRA_NODE_CONTAINERD_NAMESPACE")]
    pub containerd_namespace: Option<String>,
    /// A registry (HOST[:PORT]) to pull from over plain HTTP (loopback ones always are);
    /// repeat the flag, or separate with commas in the environment variable.
    // The text is also the flag's --help, so `HOST[:PORT]` stays as users read it.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(
        long = "insecure-registry",
        env = "OAKESTRA_NODE_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub insecure_registries: Vec<String>,
    /// Name to register with [default: the host name].
    #[arg(long, env = "OAKESTRA_NODE_NAME")]
    pub name: Option<String>,
    /// Location of the worker as "LAT,LON" (for geo-aware scheduling).
    #[arg(long, env = "OAKESTRA_NODE_LOCATION")]
    pub location: Option<String>,
    /// Address to report to the cluster [default: the local address of the route to the
    /// cluster].
    #[arg(long, env = "OAKESTRA_NODE_ADVERTISE_IP")]
    pub advertise_ip: Option<String>,
    /// Broker host to dial instead of the one the cluster names (e.g. behind NAT).
    #[arg(long, env = "OAKESTRA_NODE_MQTT_HOST")]
    pub mqtt_host: Option<String>,
    /// Interval of the `information` and `jobs/resources` reports [default: 2s].
    #[arg(long, env = "OAKESTRA_NODE_REPORT_INTERVAL", value_parser = parse_duration)]
    pub report_interval: Option<Duration>,
    /// How long a stopped instance may take to exit before it is killed [default: 5s].
    #[arg(long, env = "OAKESTRA_NODE_STOP_GRACE", value_parser = parse_duration)]
    pub stop_grace: Option<Duration>,
    /// Address of the Prometheus metrics endpoint (GET /metrics); `off` disables it
    /// [default: 127.0.0.1:10101].
    #[arg(long, env = "OAKESTRA_NODE_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Require `Authorization: Bearer <token>` on GET /metrics (for a worker whose metrics
    /// listen beyond loopback) [default: none, /metrics is open].
    #[arg(long, env = "OAKESTRA_NODE_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Register with the cluster over HTTPS, trusting only the CA certificate(s) in this PEM
    /// file (pins the cluster's `--tls-cert`) [default: plain HTTP].
    #[arg(long, env = "OAKESTRA_NODE_CLUSTER_CA")]
    pub cluster_ca: Option<PathBuf>,
    /// Log lines as text for people or as JSON lines (time, level, target, fields, message)
    /// for Loki or any log shipper.
    #[arg(long, env = "OAKESTRA_NODE_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: oakestra_daemon::LogFormat,
    /// Fake runtime: how long each start takes [default: 0ms].
    #[arg(long, env = "OAKESTRA_NODE_FAKE_START_LATENCY", value_parser = parse_duration)]
    pub fake_start_latency: Option<Duration>,
    /// Fake runtime: every N-th start fails (0 = never) [default: 0].
    #[arg(long, env = "OAKESTRA_NODE_FAKE_FAIL_EVERY")]
    pub fake_fail_every: Option<u32>,
    /// The overlay network of the instances [default: auto]: `auto` is on when containers run
    /// in containerd, `off` turns it off, `on` requires it, `fake` is in memory (tests).
    #[arg(long, env = "OAKESTRA_NODE_OVERLAY", value_enum)]
    pub overlay: Option<OverlayMode>,
    /// Tag of the overlay's bridge, namespaces and firewall chains (1–8 lowercase letters or
    /// digits) [default: oakrs]; two workers on one host need two tags.
    #[arg(long, env = "OAKESTRA_NODE_OVERLAY_TAG")]
    pub overlay_tag: Option<String>,
    /// UDP port of the service-IP tunnel between workers [default: 50103].
    #[arg(long, env = "OAKESTRA_NODE_TUNNEL_PORT")]
    pub tunnel_port: Option<u16>,
    /// MTU of the overlay's bridge, veths and TUN device, 1280–65000 [default: detected: the
    /// MTU of the link that holds the worker's address (else of the route to the cluster)
    /// minus the tunnel's 40 bytes over IPv4, 60 over IPv6; 1450 when there is no such link].
    /// Set it when a link further along the path is smaller than this host's own.
    #[arg(long, env = "OAKESTRA_NODE_OVERLAY_MTU", value_parser = clap::value_parser!(u32).range(1280..=65000))]
    pub overlay_mtu: Option<u32>,
    /// UDP port of the overlay's DNS responder on the bridge address, answering
    /// `<service>.<servicens>.<app>.<appns>` with the service's rr_ip [default: 53; 0: off].
    #[arg(long, env = "OAKESTRA_NODE_DNS_PORT")]
    pub dns_port: Option<u16>,
    /// Test/diagnostic hook: use these RTTs (milliseconds) instead of measuring them, for the
    /// workers at these host addresses, this worker's own included (its local instances
    /// otherwise count as 0 ms). Closest IPs then pick instances by these values. Format:
    /// HOST_IP=MS[,HOST_IP=MS…], e.g. 10.0.0.1=50,10.0.0.2=1 [default: none].
    #[arg(long, env = "OAKESTRA_NODE_RTT_OVERRIDE", value_parser = parse_rtt_override)]
    pub rtt_override: Option<RttOverrides>,
}

/// The TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    cluster: Option<String>,
    token: Option<String>,
    data_dir: Option<PathBuf>,
    runtime: Option<RuntimeKind>,
    containerd_socket: Option<PathBuf>,
    containerd_namespace: Option<String>,
    insecure_registries: Option<Vec<String>>,
    registry_credentials: Option<HashMap<String, RegistryCredentials>>,
    name: Option<String>,
    location: Option<String>,
    advertise_ip: Option<String>,
    mqtt_host: Option<String>,
    report_interval: Option<String>,
    stop_grace: Option<String>,
    fake_start_latency: Option<String>,
    fake_fail_every: Option<u32>,
    metrics_listen: Option<String>,
    metrics_token: Option<String>,
    cluster_ca: Option<PathBuf>,
    overlay: Option<OverlayMode>,
    overlay_tag: Option<String>,
    tunnel_port: Option<u16>,
    overlay_mtu: Option<u32>,
    dns_port: Option<u16>,
    rtt_override: Option<String>,
}

fn read_file(path: &Path) -> Result<FileSettings, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))
}

impl Cli {
    /// Resolves flags, environment and file into a [`Config`]; the error says what is missing
    /// or wrong and how to give it.
    pub fn resolve(self) -> Result<Config, String> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let in_file = |what: &str, e: String| format!("config file, {what}: {e}");
        let cluster = match (self.cluster, file.cluster) {
            (Some(c), _) => c,
            (None, Some(text)) => {
                ClusterAddress::parse(&text).map_err(|e| in_file("cluster", e))?
            }
            (None, None) => {
                return Err(
                    "no cluster given: pass --cluster HOST[:PORT] (or OAKESTRA_NODE_CLUSTER, or \
                     `cluster` in the --config file)"
                        .into(),
                );
            }
        };
        let token = self.token.or(file.token).ok_or_else(|| {
            "no join token given: pass --token T (or OAKESTRA_NODE_TOKEN, or `token` in the \
             --config file); the cluster prints its worker token at start"
                .to_owned()
        })?;
        let data_dir = self
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(default_data_dir);
        let mut config = Config::new(cluster, token, data_dir);
        // A worker started from the command line runs real workloads unless told otherwise.
        config.runtime = self.runtime.or(file.runtime).unwrap_or(RuntimeKind::Auto);
        if let Some(socket) = self.containerd_socket.or(file.containerd_socket) {
            config.containerd_socket = socket;
        }
        if let Some(namespace) = self.containerd_namespace.or(file.containerd_namespace) {
            if namespace.trim().is_empty() {
                return Err("--containerd-namespace must not be empty".into());
            }
            config.containerd_namespace = namespace;
        }
        config.insecure_registries = if self.insecure_registries.is_empty() {
            file.insecure_registries.unwrap_or_default()
        } else {
            self.insecure_registries
        };
        config.insecure_registries.retain(|r| !r.trim().is_empty());
        config.registry_credentials = file.registry_credentials.unwrap_or_default();
        if let Some(name) = self.name.or(file.name) {
            config.name = name;
        }
        config.location = self.location.or(file.location);
        config.advertise_ip = self.advertise_ip.or(file.advertise_ip);
        config.mqtt_host = self.mqtt_host.or(file.mqtt_host);
        let duration = |flag: Option<Duration>, text: Option<String>, what: &str| match (flag, text)
        {
            (Some(d), _) => Ok(Some(d)),
            (None, Some(t)) => parse_duration(&t).map(Some).map_err(|e| in_file(what, e)),
            (None, None) => Ok(None),
        };
        if let Some(d) = duration(
            self.report_interval,
            file.report_interval,
            "report_interval",
        )? {
            if d.is_zero() {
                return Err("--report-interval must be more than 0".into());
            }
            config.report_interval = d;
        }
        if let Some(d) = duration(self.stop_grace, file.stop_grace, "stop_grace")? {
            config.stop_grace = d;
        }
        if let Some(d) = duration(
            self.fake_start_latency,
            file.fake_start_latency,
            "fake_start_latency",
        )? {
            config.fake.start_latency = d;
        }
        if let Some(n) = self.fake_fail_every.or(file.fake_fail_every) {
            config.fake.fail_every_nth_start = n;
        }
        if let Some(location) = &config.location {
            validate_location(location)?;
        }
        config.overlay = self.overlay.or(file.overlay).unwrap_or_default();
        if let Some(tag) = self.overlay_tag.or(file.overlay_tag) {
            oakestra_net::dataplane::Naming::new(&tag)
                .map_err(|e| format!("--overlay-tag: {e}"))?;
            config.overlay_tag = tag;
        }
        if let Some(port) = self.tunnel_port.or(file.tunnel_port) {
            config.tunnel_port = port;
        }
        if let Some(mtu) = self.overlay_mtu.or(file.overlay_mtu) {
            if !(oakestra_net::dataplane::DataPlaneConfig::MIN_MTU..=65_000).contains(&mtu) {
                return Err(format!(
                    "overlay_mtu {mtu} in the configuration file: must be 1280–65000 (IPv6 needs                      1280 on every link)"
                ));
            }
            config.overlay_mtu = Some(mtu);
        }
        if let Some(port) = self.dns_port.or(file.dns_port) {
            config.dns_port = port;
        }
        let file_override = file
            .rtt_override
            .as_deref()
            .map(parse_rtt_override)
            .transpose()
            .map_err(|e| format!("rtt_override in the configuration file: {e}"))?;
        if let Some(RttOverrides(map)) = self.rtt_override.or(file_override) {
            config.rtt_override = map;
        }
        let metrics = self
            .metrics_listen
            .or(file.metrics_listen)
            .unwrap_or_else(|| DEFAULT_METRICS_LISTEN.to_owned());
        config.metrics_listen = if metrics == "off" {
            None
        } else {
            Some(metrics.parse().map_err(|_| {
                format!(
                    "--metrics-listen {metrics:?} is not an address like 127.0.0.1:10101 (or `off`)"
                )
            })?)
        };
        config.metrics_token = self
            .metrics_token
            .or(file.metrics_token)
            .filter(|t| !t.trim().is_empty());
        config.cluster_ca = self.cluster_ca.or(file.cluster_ca);
        Ok(config)
    }
}

/// `"LAT,LON"` with latitude in [-90, 90] and longitude in [-180, 180].
pub fn validate_location(text: &str) -> Result<(), String> {
    let bad = || format!("location {text:?} must be \"LAT,LON\", e.g. \"48.26,11.67\"");
    let (lat, lon) = text.split_once(',').ok_or_else(bad)?;
    let lat: f64 = lat.trim().parse().map_err(|_| bad())?;
    let lon: f64 = lon.trim().parse().map_err(|_| bad())?;
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_addresses() {
        let a = ClusterAddress::parse("10.0.0.1").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("10.0.0.1", 10100));
        let a = ClusterAddress::parse("http://example.org:8080/").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("example.org", 8080));
        let a = ClusterAddress::parse("[::1]:9").unwrap();
        assert_eq!(a.authority(), "[::1]:9");
        assert_eq!(ClusterAddress::parse("::1").unwrap().port, 10100);
        assert!(ClusterAddress::parse("host:http").is_err());
        assert!(ClusterAddress::parse("").is_err());
        assert!(ClusterAddress::parse("https://x").is_err());
    }

    #[test]
    fn flags_win_over_the_file_and_missing_values_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(
            &file,
            "cluster = \"c.example:1\"\ntoken = \"from-file\"\nreport_interval = \"5s\"\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "oakestra-node",
            "--config",
            file.to_str().unwrap(),
            "--token",
            "flag",
        ])
        .unwrap();
        let config = cli.resolve().unwrap();
        assert_eq!(config.token, "flag");
        assert_eq!(config.cluster.port, 1);
        assert_eq!(config.report_interval, Duration::from_secs(5));

        let err = Cli::try_parse_from(["oakestra-node", "--token", "t"])
            .unwrap()
            .resolve();
        assert!(err.unwrap_err().contains("--cluster"));
        let err = Cli::try_parse_from(["oakestra-node", "--cluster", "x:notaport"]).unwrap_err();
        assert!(err.to_string().contains("not a number"), "{err}");
        std::fs::write(&file, "clustr = \"x\"\n").unwrap();
        let err = Cli::try_parse_from(["oakestra-node", "--config", file.to_str().unwrap()])
            .unwrap()
            .resolve()
            .unwrap_err();
        assert!(err.contains("clustr"), "{err}");
    }

    #[test]
    fn runtime_defaults_to_auto_and_takes_containerd_settings() {
        let cli = Cli::try_parse_from(["oakestra-node", "--cluster", "c", "--token", "t"]).unwrap();
        let config = cli.resolve().unwrap();
        assert_eq!(config.runtime, RuntimeKind::Auto);
        assert_eq!(
            config.containerd_socket,
            PathBuf::from(DEFAULT_CONTAINERD_SOCKET)
        );
        // The library default stays the fake runtime (oak up, oak sim, tests).
        assert_eq!(
            Config::new(config.cluster.clone(), "t", "d".into()).runtime,
            RuntimeKind::Fake
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(
            &file,
            "cluster = \"c\"\ntoken = \"t\"\nruntime = \"containerd\"\n\
             containerd_socket = \"/x/c.sock\"\ninsecure_registries = [\"reg.lan:5000\"]\n\
             [registry_credentials.\"ghcr.io\"]\nusername = \"u\"\npassword = \"p\"\n",
        )
        .unwrap();
        let config = Cli::try_parse_from(["oakestra-node", "--config", file.to_str().unwrap()])
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(config.runtime, RuntimeKind::Containerd);
        assert_eq!(config.containerd_socket, PathBuf::from("/x/c.sock"));
        assert_eq!(config.insecure_registries, vec!["reg.lan:5000"]);
        assert_eq!(config.registry_credentials["ghcr.io"].username, "u");

        let config = Cli::try_parse_from([
            "oakestra-node",
            "--config",
            file.to_str().unwrap(),
            "--runtime",
            "unikernel",
            "--insecure-registry",
            "a:1",
            "--insecure-registry",
            "b:2",
        ])
        .unwrap()
        .resolve()
        .unwrap();
        assert_eq!(config.runtime, RuntimeKind::Unikernel);
        assert_eq!(config.insecure_registries, vec!["a:1", "b:2"]);
        assert!(Cli::try_parse_from(["oakestra-node", "--runtime", "docker"]).is_err());
    }

    #[test]
    fn rtt_overrides_parse_and_bad_ones_are_explained() {
        let parsed = parse_rtt_override("10.0.0.1=50, 10.0.0.2=0.5,fd00::1=0").unwrap();
        assert_eq!(
            parsed.0.into_iter().collect::<Vec<_>>(),
            vec![
                ("10.0.0.1".parse().unwrap(), Duration::from_millis(50)),
                ("10.0.0.2".parse().unwrap(), Duration::from_micros(500)),
                ("fd00::1".parse().unwrap(), Duration::ZERO),
            ]
        );
        assert!(parse_rtt_override("").unwrap().0.is_empty());
        for (bad, says) in [
            ("10.0.0.1", "is not HOST_IP=MS"),
            ("worker1=5", "is not an IP address"),
            ("10.0.0.1=-1", "not a number of milliseconds"),
            ("10.0.0.1=fast", "not a number of milliseconds"),
        ] {
            let err = parse_rtt_override(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let cli = Cli::try_parse_from([
            "oakestra-node",
            "--cluster",
            "c",
            "--token",
            "t",
            "--rtt-override",
            "192.0.2.7=3",
        ])
        .unwrap();
        let config = cli.resolve().unwrap();
        assert_eq!(
            config.rtt_override.get(&"192.0.2.7".parse().unwrap()),
            Some(&Duration::from_millis(3))
        );
    }

    #[test]
    fn the_overlay_mtu_is_detected_unless_set_by_flag_env_or_file() {
        let base = ["oakestra-node", "--cluster", "c", "--token", "t"];
        let config = Cli::try_parse_from(base).unwrap().resolve().unwrap();
        assert_eq!(config.overlay_mtu, None, "detected by default");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(
            &file,
            "overlay_mtu = 1360
",
        )
        .unwrap();
        let with_file = [&base[..], &["--config", file.to_str().unwrap()]].concat();
        let config = Cli::try_parse_from(&with_file).unwrap().resolve().unwrap();
        assert_eq!(config.overlay_mtu, Some(1360));
        let flag = [&with_file[..], &["--overlay-mtu", "1400"]].concat();
        let config = Cli::try_parse_from(&flag).unwrap().resolve().unwrap();
        assert_eq!(
            config.overlay_mtu,
            Some(1400),
            "the flag wins over the file"
        );

        let err =
            Cli::try_parse_from([&base[..], &["--overlay-mtu", "1000"]].concat()).unwrap_err();
        assert!(err.to_string().contains("1280"), "{err}");
        std::fs::write(
            &file,
            "overlay_mtu = 70000
",
        )
        .unwrap();
        let err = Cli::try_parse_from(&with_file)
            .unwrap()
            .resolve()
            .unwrap_err();
        assert!(err.contains("1280–65000"), "{err}");
    }

    #[test]
    fn locations() {
        assert!(validate_location("48.26,11.67").is_ok());
        assert!(validate_location("91,0").is_err());
        assert!(validate_location("x").is_err());
    }
}
