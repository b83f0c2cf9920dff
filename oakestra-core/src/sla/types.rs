//! The typed deployment descriptor (SLA v2.0).
//!
//! Every object keeps the keys it does not know in `extra`, so a descriptor round-trips
//! unchanged. Optional fields that were absent stay absent when serialised.
//! Deserialising these types directly with serde does **not** validate them; use
//! [`crate::sla::parse_and_validate`] for user input.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::ports::PortSpec;

/// Keys a descriptor object carries that this model does not name.
pub type Extra = Map<String, Value>;

/// Writes whole floats as integers (`100`, not `100.0`) so descriptors round-trip unchanged.
fn compact_f64<S: Serializer>(v: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        serializer.serialize_i64(*v as i64)
    } else {
        serializer.serialize_f64(*v)
    }
}

fn compact_opt_f64<S: Serializer>(v: &Option<f64>, serializer: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => compact_f64(v, serializer),
        None => serializer.serialize_none(),
    }
}

/// Supported descriptor versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SlaVersion {
    /// `"v2.0"`, the only version Oakestra accepts today.
    #[default]
    V2,
}

impl SlaVersion {
    /// The string written in `sla_version`.
    pub fn as_str(self) -> &'static str {
        match self {
            SlaVersion::V2 => "v2.0",
        }
    }
}

impl fmt::Display for SlaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for SlaVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SlaVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        match s.as_str() {
            "v2.0" => Ok(SlaVersion::V2),
            other => Err(serde::de::Error::custom(format!(
                "unsupported sla_version \"{other}\"; the supported version is \"v2.0\""
            ))),
        }
    }
}

/// The whole descriptor: who submits it and the applications it describes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sla {
    /// Descriptor version (`"v2.0"`).
    pub sla_version: SlaVersion,
    /// Submitting customer (not checked against the caller).
    #[serde(rename = "customerID")]
    pub customer_id: String,
    /// Applications (may be empty).
    pub applications: Vec<Application>,
    /// Unused by the control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Unknown keys, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The dashboard's variant of a descriptor: only a `microservices` list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MicroserviceList {
    /// The services.
    pub microservices: Vec<Microservice>,
    /// Unknown keys, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One application: a named group of microservices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Application {
    /// Existing application id (needed only when adding services to an existing app).
    #[serde(
        rename = "applicationID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub application_id: Option<String>,
    /// Name, `^[a-zA-Z0-9]{1,30}$`.
    pub application_name: String,
    /// Namespace, `^[a-zA-Z0-9]{1,30}$`.
    pub application_namespace: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_desc: Option<String>,
    /// The services of the application (may be empty).
    pub microservices: Vec<Microservice>,
    /// Unknown keys, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// How a service runs. Any other string is kept as [`Virtualization::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Virtualization {
    /// `"container"` (run by the `docker`/containerd runtime).
    Container,
    /// `"unikernel"` (qemu); `code` holds one kernel URL per `arch` entry.
    Unikernel,
    /// `"crosvm"` micro-VM.
    Crosvm,
    /// Any other value, kept as written.
    Other(String),
}

impl Virtualization {
    /// Parses the descriptor string; never fails.
    pub fn from_name(s: &str) -> Self {
        match s {
            "container" => Self::Container,
            "unikernel" => Self::Unikernel,
            "crosvm" => Self::Crosvm,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The string written in the descriptor.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Container => "container",
            Self::Unikernel => "unikernel",
            Self::Crosvm => "crosvm",
            Self::Other(s) => s,
        }
    }

    /// The runtime name workers advertise and deploy messages carry (`container` becomes `docker`).
    pub fn runtime_name(&self) -> &str {
        match self {
            Self::Container => "docker",
            other => other.as_str(),
        }
    }

    /// `true` for `container` and its runtime alias `docker`.
    pub fn is_container(&self) -> bool {
        matches!(self, Self::Container) || self.as_str() == "docker"
    }
}

impl fmt::Display for Virtualization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Virtualization {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Virtualization {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Ok(Self::from_name(&s))
    }
}

/// One microservice of an application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Microservice {
    /// Must be empty or absent in a submitted descriptor (the orchestrator assigns it).
    #[serde(
        rename = "microserviceID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub microservice_id: Option<String>,
    /// Name, `^[a-zA-Z0-9]{1,30}$`, unique within its application.
    pub microservice_name: String,
    /// Namespace, `^[a-zA-Z0-9]{1,30}$`.
    pub microservice_namespace: String,
    /// Runtime kind.
    pub virtualization: Virtualization,
    /// Container image reference, or comma-separated kernel URLs for unikernels.
    pub code: String,
    /// Memory in MB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// CPU cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u64>,
    /// GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vgpus: Option<u64>,
    /// TPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtpus: Option<u64>,
    /// Informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_in: Option<u64>,
    /// Informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_out: Option<u64>,
    /// Storage in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<u64>,
    /// Unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Published ports, `host[:container][/tcp|udp]` joined by `;`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSpec>,
    /// Exit code 0 means `COMPLETED` (not restarted) instead of `DEAD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_shot: Option<bool>,
    /// When the worker restarts an exited instance (our extension; absent: Oakestra's
    /// behaviour, see [`RestartPolicy`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    /// Desired number of instances the root keeps placed and running (our extension; absent:
    /// instances are only deployed one by one, as in Oakestra). At most [`MAX_REPLICAS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// Restart the instance when this probe fails (our extension, issue 18).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<super::probe::Probe>,
    /// Keep the instance out of its service IPs' balancing until this probe passes (our
    /// extension, issue 18; absent: ready when `RUNNING`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<super::probe::Probe>,
    /// Run with extended privileges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    /// Container command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Environment, `KEY=VALUE` entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Vec<String>>,
    /// Unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Unused by the control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_files: Option<Vec<String>>,
    /// Unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla_violation_strategy: Option<String>,
    /// Unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_node: Option<String>,
    /// Service addresses (round-robin IPs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Addresses>,
    /// CSI volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<Volume>>,
    /// Placement constraints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Vec<Constraint>>,
    /// Service-to-service requirements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connectivity: Option<Vec<Connectivity>>,
    /// CPU architectures; required for unikernels, one per `code` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<Vec<String>>,
    /// Unknown keys (e.g. `platform`, `vm_images`), kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Microservice {
    /// `app.appns.service.servicens` for this service inside `app`.
    pub fn job_name(&self, app: &Application) -> String {
        crate::naming::job_name(
            &app.application_name,
            &app.application_namespace,
            &self.microservice_name,
            &self.microservice_namespace,
        )
    }

    /// The `code` field split at commas (one URL per arch for unikernels).
    pub fn code_entries(&self) -> impl Iterator<Item = &str> {
        self.code.split(',').map(str::trim)
    }

    /// For unikernels: the kernel URL for `arch` (the entry at the same index as `arch`).
    pub fn kernel_for_arch(&self, arch: &str) -> Option<&str> {
        let index = self.arch.as_ref()?.iter().position(|a| a == arch)?;
        self.code_entries().nth(index)
    }

    /// The published port mappings (empty when there are none).
    pub fn port_mappings(&self) -> &[super::PortMapping] {
        self.port.as_ref().map(PortSpec::mappings).unwrap_or(&[])
    }

    /// `environment` split into `(KEY, VALUE)` pairs.
    pub fn environment_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.environment
            .iter()
            .flatten()
            .map(|e| e.split_once('=').unwrap_or((e.as_str(), "")))
    }
}

/// The largest `replicas` a microservice may ask for.
pub const MAX_REPLICAS: u32 = 10_000;

/// `restart_policy`: what the worker does when an instance's main process exits.
///
/// With a policy, the worker restarts the instance on the same worker after an exponential
/// back-off and counts the restarts; after too many restarts within a window it reports the
/// instance `FAILED` and the cluster places it again (possibly elsewhere). Without one
/// (absent), Oakestra's behaviour stays exactly as it is: an exit is reported `DEAD` (for a
/// `one_shot` service, exit code 0 is `COMPLETED`) and the cluster places the instance again
/// after its own back-off. `one_shot: true` is thus what `on-failure` does, restarted by the
/// cluster instead of the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Restart after every exit, whatever its code.
    Always,
    /// Restart after a non-zero exit code; exit code 0 is `COMPLETED`.
    OnFailure,
    /// Never restart: exit code 0 is `COMPLETED`, any other `DEAD`, and both stay so.
    Never,
}

impl RestartPolicy {
    /// Every policy, as written in the descriptor.
    pub const NAMES: [&'static str; 3] = ["always", "on-failure", "never"];

    /// Parses the descriptor string.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "always" => Some(Self::Always),
            "on-failure" => Some(Self::OnFailure),
            "never" => Some(Self::Never),
            _ => None,
        }
    }

    /// The string written in the descriptor.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::OnFailure => "on-failure",
            Self::Never => "never",
        }
    }

    /// Whether an exit with `code` is followed by a restart.
    pub fn restarts_after(self, code: i32) -> bool {
        match self {
            Self::Always => true,
            Self::OnFailure => code != 0,
            Self::Never => false,
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Addresses of a service.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Addresses {
    /// Round-robin service IPv4, inside 10.30.0.0/16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rr_ip: Option<Ipv4Addr>,
    /// Round-robin service IPv6, inside fdff:2000::/21.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rr_ip_v6: Option<Ipv6Addr>,
    /// Unused by Oakestra; kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closest_ip: Option<String>,
    /// Unused by Oakestra; kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closest_ip_v6: Option<String>,
    /// Unused by Oakestra; kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<Vec<InstanceAddressRange>>,
    /// Unknown keys, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// An `addresses.instances` entry (unused by Oakestra; kept).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct InstanceAddressRange {
    /// Range start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Range end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// First address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// Unknown keys, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A CSI volume the service mounts; candidates must advertise `csi_driver`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    /// Volume id.
    pub volume_id: String,
    /// CSI driver name.
    pub csi_driver: String,
    /// Mount point inside the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
    /// Driver-specific configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Map<String, Value>>,
    /// Unknown keys, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The `type` of a placement constraint. Unknown types are kept as [`ConstraintKind::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConstraintKind {
    /// `direct`: place on the named `cluster` and/or `node` (`;`-separated hostnames).
    Direct,
    /// `clusters`: only the clusters listed in `allowed`.
    Clusters,
    /// `geo`: within `threshold` km of `location`/`area`.
    Geo,
    /// `latency`: at most `threshold` ms from users in `area`.
    Latency,
    /// `addons`: candidates must support every entry of `needs`.
    Addons,
    /// Any other type, kept as written.
    Other(String),
}

impl ConstraintKind {
    /// Parses the `type` string; never fails.
    pub fn from_name(s: &str) -> Self {
        match s {
            "direct" => Self::Direct,
            "clusters" => Self::Clusters,
            "geo" => Self::Geo,
            "latency" => Self::Latency,
            "addons" => Self::Addons,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The string written in `type`.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Direct => "direct",
            Self::Clusters => "clusters",
            Self::Geo => "geo",
            Self::Latency => "latency",
            Self::Addons => "addons",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for ConstraintKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ConstraintKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ConstraintKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Ok(Self::from_name(&s))
    }
}

/// A placement constraint. Which fields matter depends on [`Constraint::kind`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Constraint {
    /// Constraint type.
    #[serde(rename = "type")]
    pub kind: ConstraintKind,
    /// User area (geo, latency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area: Option<String>,
    /// Target cluster name (direct).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Target worker hostname(s), `;`-separated (direct).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// `"lat,lon"` point (geo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// km for geo, ms for latency.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "compact_opt_f64"
    )]
    pub threshold: Option<f64>,
    /// How strictly the constraint applies.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "compact_opt_f64"
    )]
    pub rigidness: Option<f64>,
    /// Seconds the system may take to meet the constraint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub convergence_time: Option<u64>,
    /// Required addons (addons).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs: Option<Vec<String>>,
    /// Allowed cluster names (clusters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<String>>,
    /// Unknown keys, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Constraint {
    /// The worker hostnames of a `direct` constraint (`node` split at `;`, blanks dropped).
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.node
            .iter()
            .flat_map(|n| n.split(';'))
            .map(str::trim)
            .filter(|n| !n.is_empty())
    }
}

/// A service-to-service requirement towards another microservice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connectivity {
    /// The other service.
    pub target_microservice_id: String,
    /// The requirements.
    pub con_constraints: Vec<ConConstraint>,
    /// Unknown keys, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One requirement of a [`Connectivity`] entry. All four fields are required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConConstraint {
    /// Requirement type (e.g. `latency`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Threshold (ms for latency).
    #[serde(serialize_with = "compact_f64")]
    pub threshold: f64,
    /// How strictly the requirement applies.
    #[serde(serialize_with = "compact_f64")]
    pub rigidness: f64,
    /// Seconds the system may take to meet it.
    pub convergence_time: u64,
    /// Unknown keys, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}
