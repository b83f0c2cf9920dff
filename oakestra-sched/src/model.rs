//! The scheduler's inputs and output. These types are the research API: they travel as JSON to
//! external schedulers, so field names are snake_case and stable, every field is always
//! serialised, and every field but `name` has a default when deserialising.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which orchestrator asks: the root chooses a cluster, a cluster chooses a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Candidates are clusters with aggregated resources.
    Root,
    /// Candidates are workers.
    #[default]
    Cluster,
}

impl Level {
    /// The noun for `n` candidates at this level, for messages.
    pub fn candidates_noun(self, n: usize) -> &'static str {
        match (self, n) {
            (Level::Root, 1) => "cluster",
            (Level::Root, _) => "clusters",
            (Level::Cluster, 1) => "worker",
            (Level::Cluster, _) => "workers",
        }
    }
}

/// A point on earth in degrees. JSON: `{"lat": 48.14, "long": 11.58}`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct GeoPoint {
    /// Latitude in degrees, −90..90.
    pub lat: f64,
    /// Longitude in degrees, −180..180.
    pub long: f64,
}

/// The SLA writes locations as `"lat,long"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "location {input:?} is not \"lat,long\" in degrees (lat in -90..90, long in -180..180): {reason}"
)]
pub struct GeoPointParseError {
    /// The text that failed to parse.
    pub input: String,
    /// What was wrong with it.
    pub reason: &'static str,
}

impl FromStr for GeoPoint {
    type Err = GeoPointParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| GeoPointParseError {
            input: s.to_owned(),
            reason,
        };
        let (lat, long) = s.split_once(',').ok_or_else(|| err("no comma"))?;
        let lat: f64 = lat
            .trim()
            .parse()
            .map_err(|_| err("latitude is not a number"))?;
        let long: f64 = long
            .trim()
            .parse()
            .map_err(|_| err("longitude is not a number"))?;
        if !(-90.0..=90.0).contains(&lat) {
            return Err(err("latitude out of range"));
        }
        if !(-180.0..=180.0).contains(&long) {
            return Err(err("longitude out of range"));
        }
        Ok(GeoPoint { lat, long })
    }
}

impl fmt::Display for GeoPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.lat, self.long)
    }
}

/// Vivaldi network coordinates: the predicted RTT between two nodes in milliseconds is the
/// euclidean distance of `vector`s plus both `height`s (the access-link delay).
/// JSON: `{"vector": [12.0, -3.5], "height": 0.8}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Vivaldi {
    /// Position in the latency space, milliseconds per dimension.
    #[serde(default)]
    pub vector: Vec<f64>,
    /// Height above the space, milliseconds.
    #[serde(default)]
    pub height: f64,
}

/// A free-capacity triple: the largest free resources of any one worker of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct WorkerCapacity {
    /// Free CPU cores.
    #[serde(default)]
    pub vcpus: f64,
    /// Free memory, MB.
    #[serde(default)]
    pub memory_mb: u64,
    /// Free GPUs.
    #[serde(default)]
    pub gpus: u32,
}

fn default_true() -> bool {
    true
}

/// Something an instance can be placed on: a worker (cluster level) or a cluster with
/// aggregated resources (root level, see [`Candidate::cluster_of`]).
///
/// Free CPU is `cpu_cores × (100 − cpu_load_percent) / 100`: `cpu_load_percent` is the share
/// of the cores that is taken — reserved by placed instances (and the system reserve) under
/// reservation-based capacity, measured under Oakestra's usage-based capacity (see
/// [`crate::capacity`]). `cpu_usage_percent` is what the candidate measures; it ranks
/// candidates but does not decide whether an instance fits. A default candidate (and one read
/// from JSON without `active`) is active and has no resources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Unique name (worker id/hostname, or cluster name). Ties are broken by it.
    pub name: String,
    /// Logical CPU cores (sum over active workers for a cluster).
    #[serde(default)]
    pub cpu_cores: f64,
    /// Share of the cores not available for new instances, 0–100 %.
    #[serde(default)]
    pub cpu_load_percent: f64,
    /// Measured CPU usage, 0–100 % (ranks candidates: the less busy wins a tie).
    #[serde(default)]
    pub cpu_usage_percent: f64,
    /// Total memory, MB.
    #[serde(default)]
    pub memory_total_mb: u64,
    /// Free memory, MB.
    #[serde(default)]
    pub memory_free_mb: u64,
    /// Number of GPUs.
    #[serde(default)]
    pub gpus: u32,
    /// GPUs not assigned to an instance.
    #[serde(default)]
    pub gpus_free: u32,
    /// Supported virtualizations, e.g. `["container", "unikernel"]` (`docker` means `container`).
    #[serde(default)]
    pub virtualization: Vec<String>,
    /// Architectures, e.g. `["amd64"]`; a cluster lists those of its workers.
    /// `x86_64`/`amd64` and `aarch64`/`arm64` are treated as the same.
    #[serde(default)]
    pub arch: Vec<String>,
    /// CSI driver names available.
    #[serde(default)]
    pub csi_drivers: Vec<String>,
    /// Add-ons supported (for the SLA's `addons` constraint).
    #[serde(default)]
    pub addons: Vec<String>,
    /// Where it is.
    #[serde(default)]
    pub location: Option<GeoPoint>,
    /// Vivaldi network coordinates.
    #[serde(default)]
    pub vivaldi: Option<Vivaldi>,
    /// Measured round-trip times in ms to named peers: other candidates, or user areas.
    /// A measurement wins over a Vivaldi estimate.
    #[serde(default)]
    pub rtt_ms: BTreeMap<String, f64>,
    /// Inactive candidates are never chosen.
    #[serde(default = "default_true")]
    pub active: bool,
    /// Root level: the largest free resources of any single worker of the cluster (per
    /// dimension; they may come from different workers). A cluster where no one worker fits
    /// is never chosen. `None` at cluster level or when unknown.
    #[serde(default)]
    pub max_worker_free: Option<WorkerCapacity>,
}

impl Default for Candidate {
    fn default() -> Self {
        Candidate {
            name: String::new(),
            cpu_cores: 0.0,
            cpu_load_percent: 0.0,
            cpu_usage_percent: 0.0,
            memory_total_mb: 0,
            memory_free_mb: 0,
            gpus: 0,
            gpus_free: 0,
            virtualization: Vec::new(),
            arch: Vec::new(),
            csi_drivers: Vec::new(),
            addons: Vec::new(),
            location: None,
            vivaldi: None,
            rtt_ms: BTreeMap::new(),
            active: true,
            max_worker_free: None,
        }
    }
}

impl Candidate {
    /// Free CPU cores.
    #[inline]
    pub fn free_vcpus(&self) -> f64 {
        self.cpu_cores * (100.0 - self.cpu_load_percent) / 100.0
    }

    /// How busy the candidate is for ranking: the larger of the taken share and the measured
    /// usage, 0–100 %.
    #[inline]
    pub fn busy_percent(&self) -> f64 {
        self.cpu_load_percent.max(self.cpu_usage_percent)
    }
}

/// A place the instance must be close to, in network terms: a user area, or a node running an
/// instance of another service.
///
/// The latency from a candidate to an endpoint is, in this order: 0 if the endpoint is a
/// placed instance on that very candidate; the candidate's measured `rtt_ms[name]`; the Vivaldi
/// estimate when both have coordinates. Otherwise it is unknown, and the candidate does not
/// satisfy the constraint.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Endpoint {
    /// Key into the candidates' `rtt_ms` tables (area name, or candidate name of the node that
    /// runs the instance).
    #[serde(default)]
    pub name: String,
    /// Geographic position, if known.
    #[serde(default)]
    pub location: Option<GeoPoint>,
    /// Network coordinates, if known.
    #[serde(default)]
    pub vivaldi: Option<Vivaldi>,
}

/// SLA `geo`: the candidate must be within `threshold_km` (great-circle) of `location`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GeoConstraint {
    /// Centre of the allowed area.
    pub location: GeoPoint,
    /// Radius, km.
    pub threshold_km: f64,
}

/// SLA `latency` (service-to-user): the RTT from the candidate to `user` at most `threshold_ms`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LatencyConstraint {
    /// Where the users are.
    pub user: Endpoint,
    /// Maximum RTT, ms.
    pub threshold_ms: f64,
}

/// SLA `connectivity` (service-to-service): the RTT from the candidate to the closest already
/// placed instance of `target_service` at most `threshold_ms`. With no placed instances the
/// constraint holds trivially (the target will be placed later under its own constraints).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ConnectivityConstraint {
    /// The target service (its name or id; informational).
    #[serde(default)]
    pub target_service: String,
    /// Maximum RTT, ms.
    pub threshold_ms: f64,
    /// Where the target's instances run now (filled in by the orchestrator).
    #[serde(default)]
    pub instances: Vec<Endpoint>,
}

/// Placement constraints. Empty lists mean "no constraint".
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Constraints {
    /// Cluster level, `direct`: only these workers (the SLA's `node` list `a;b;c`).
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Root level, `direct`: only this cluster.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Root level, `clusters`: only these clusters.
    #[serde(default)]
    pub clusters: Vec<String>,
    /// `addons`: the candidate must support all of these.
    #[serde(default)]
    pub addons: Vec<String>,
    /// `geo`: all must hold.
    #[serde(default)]
    pub geo: Vec<GeoConstraint>,
    /// `latency` to users: all must hold.
    #[serde(default)]
    pub latency: Vec<LatencyConstraint>,
    /// `connectivity` to other services: all must hold.
    #[serde(default)]
    pub connectivity: Vec<ConnectivityConstraint>,
}

impl Constraints {
    /// Whether the request asks for anything latency-related (S2U or S2S with placed instances).
    pub fn has_latency(&self) -> bool {
        !self.latency.is_empty() || self.connectivity.iter().any(|c| !c.instances.is_empty())
    }
}

/// What to place: one instance of a service.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PlacementRequest {
    /// Who asks; decides which name constraints apply and which statuses a failure uses.
    #[serde(default)]
    pub level: Level,
    /// The service (job name); for logs and external schedulers, not used by the built-ins.
    #[serde(default)]
    pub service: String,
    /// CPU cores wanted (may be fractional).
    #[serde(default)]
    pub vcpus: f64,
    /// Memory wanted, MB.
    #[serde(default)]
    pub memory_mb: u64,
    /// GPUs wanted.
    #[serde(default)]
    pub vgpus: u32,
    /// `container` (alias `docker`), `unikernel`, … Empty means any.
    #[serde(default)]
    pub virtualization: String,
    /// Allowed architectures; the candidate must have one of them. Empty means any.
    #[serde(default)]
    pub arch: Vec<String>,
    /// CSI drivers the volumes need; the candidate must have all of them.
    #[serde(default)]
    pub csi_drivers: Vec<String>,
    /// Placement constraints.
    #[serde(default)]
    pub constraints: Constraints,
}

/// A successful placement. An external scheduler only has to answer `{"candidate": "<name>"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// Name of the chosen candidate.
    pub candidate: String,
    /// Its position in the candidate list, if the scheduler reports it.
    #[serde(default)]
    pub index: Option<usize>,
    /// Expected RTT (sum over latency and connectivity constraints), ms, when there are any.
    #[serde(default)]
    pub expected_latency_ms: Option<f64>,
    /// Great-circle distance (sum over geo constraints), km, when there are any.
    #[serde(default)]
    pub distance_km: Option<f64>,
}

/// What an external scheduler receives: `{"request": {…}, "candidates": [{…}, …]}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PlacementInput {
    /// What to place.
    pub request: PlacementRequest,
    /// Where it may go.
    pub candidates: Vec<Candidate>,
}
