//! MQTT payloads between a cluster and its workers (Oakestra's topics and JSON shapes).
//!
//! Every payload carries `wire_version` ([`WireVersion`], currently 1). Oakestra's own
//! components do not send it; a missing version reads as 1, and Oakestra ignores the extra key.
//! Numbers that Oakestra sends as strings (`cpu_percent`, `disk`, `host_port`, …) are accepted
//! in both forms and always emitted as numbers. Go's `null` for an empty list reads as empty.

pub mod logs;
mod net;
pub mod topic;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use oakestra_core::addresses::ServiceAddresses;
use oakestra_core::lenient;
use oakestra_core::resources::CsiDriver;
use oakestra_core::sla::{Extra, PortMapping, PortSpecError, Volume, parse_port_mappings};
use oakestra_core::status::{DeploymentStatus, Status};

pub use logs::{LogsReply, LogsRequest, MAX_LOG_REQUEST_BYTES, last_lines};
pub use net::{
    InterestRemove, IpType, ServiceDeployed, ServiceIp, SubnetMethod, SubnetRequest, SubnetResult,
    TableEntryInstance, TableQueryRequest, TableQueryResult, UpdateKind, UpdatesAvailable,
};
pub use topic::{ALL_NODES_NET_FILTER, NodeTopic, Topic, TopicError};

/// Version of the payload schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WireVersion(pub u32);

impl WireVersion {
    /// The version this crate writes.
    pub const CURRENT: WireVersion = WireVersion(1);
}

impl Default for WireVersion {
    /// A payload without a version (from an Oakestra component) is version 1.
    fn default() -> Self {
        WireVersion::CURRENT
    }
}

impl fmt::Display for WireVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

impl Serialize for WireVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for WireVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        lenient::number(deserializer).map(WireVersion)
    }
}

/// Which topic a payload belongs on.
pub trait Payload: Serialize + for<'de> Deserialize<'de> {
    /// The per-node topic that carries this payload.
    const TOPIC: NodeTopic;

    /// Encodes the payload as JSON bytes.
    fn to_bytes(&self) -> Vec<u8> {
        // Serialising these plain structs cannot fail: all map keys are strings.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a payload from JSON bytes.
    fn from_bytes(bytes: &[u8]) -> Result<Self, WireError> {
        serde_json::from_slice(bytes).map_err(|source| WireError {
            topic: Self::TOPIC,
            source,
        })
    }
}

/// A payload that could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("invalid payload on nodes/<id>/{}: {source}", topic.suffix())]
pub struct WireError {
    /// Where it arrived.
    pub topic: NodeTopic,
    /// What was wrong.
    #[source]
    pub source: serde_json::Error,
}

/// A worker's description of itself: the body of `POST /api/node/register` and, with only
/// the dynamic fields filled, of `nodes/<id>/information`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Schema version.
    #[serde(default)]
    pub wire_version: WireVersion,
    /// Id (empty before registration).
    #[serde(default)]
    pub id: String,
    /// Proof that a worker registering again under `id` is that worker: the `WORKER_SECRET`
    /// of its last registration (older workers send their MQTT password). Never stored.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub worker_secret: String,
    /// Hostname.
    #[serde(default)]
    pub host: String,
    /// Address of the worker.
    #[serde(default)]
    pub ip: String,
    /// Worker port.
    #[serde(
        default,
        deserialize_with = "lenient::option_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub port: Option<u16>,
    /// Kernel, OS, uptime … (free-form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_info: Option<Value>,
    /// CPU use, 0-100.
    #[serde(default, deserialize_with = "lenient::number")]
    pub cpu_percent: f64,
    /// Logical cores.
    #[serde(default, deserialize_with = "lenient::number")]
    pub vcpus: u32,
    /// GOARCH-style architecture.
    #[serde(default)]
    pub architecture: String,
    /// Memory use, 0-100.
    #[serde(default, deserialize_with = "lenient::number")]
    pub memory_percent: f64,
    /// **Available** memory in MB (Oakestra's meaning of `memory`).
    #[serde(default, deserialize_with = "lenient::number")]
    pub memory: u64,
    /// Total memory in MB (our addition).
    #[serde(
        default,
        deserialize_with = "lenient::option_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory_total: Option<u64>,
    /// Disk usage per partition (free-form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_info: Option<Value>,
    /// Interfaces (free-form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_info: Option<Value>,
    /// GPU driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_driver: Option<String>,
    /// GPU use, 0-100.
    #[serde(
        default,
        deserialize_with = "lenient::option_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub gpu_usage: Option<f64>,
    /// Number of GPUs.
    #[serde(default, deserialize_with = "lenient::number")]
    pub vgpus: u32,
    /// GPU temperature.
    #[serde(
        default,
        deserialize_with = "lenient::option_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub gpu_temp: Option<f64>,
    /// GPU memory use, 0-100.
    #[serde(
        default,
        deserialize_with = "lenient::option_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub vram_percent: Option<f64>,
    /// Total GPU memory (MiB).
    #[serde(
        default,
        deserialize_with = "lenient::option_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub vram: Option<u64>,
    /// Runtimes (`docker`, `unikernel`, …).
    #[serde(default, deserialize_with = "lenient::null_as_default")]
    pub virtualization: Vec<String>,
    /// Addons.
    #[serde(default, deserialize_with = "lenient::null_as_default")]
    pub supported_addons: Vec<String>,
    /// CSI drivers.
    #[serde(default, deserialize_with = "lenient::null_as_default")]
    pub csi_drivers: Vec<CsiDriver>,
    /// `"LAT,LON"` of the worker, when configured (our addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// MTU of the worker's overlay network (bridge, veths, TUN device): its `--overlay-mtu` or
    /// what it detected from its underlay; absent without an overlay (our addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay_mtu: Option<u32>,
    /// Other keys (Go's untagged `Overlay`, `NetManagerPort`, …), kept.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Payload for NodeInfo {
    const TOPIC: NodeTopic = NodeTopic::Information;
}

/// Answer to `POST /api/node/register`.
///
/// The request body is a [`NodeInfo`] (identity + static resources; `id` empty or the id the
/// worker got before, to keep it across restarts) and carries the cluster's worker join token
/// as `Authorization: Bearer <token>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// Schema version.
    #[serde(default)]
    pub wire_version: WireVersion,
    /// The worker's id.
    pub id: String,
    /// Broker port (Oakestra sends `"10003"`; we send a number).
    #[serde(rename = "MQTT_BROKER_PORT", deserialize_with = "lenient::number")]
    pub mqtt_broker_port: u16,
    /// Broker host as the worker should dial it (our addition). Empty: the host the worker
    /// used to reach the cluster's HTTP API (Oakestra's behaviour).
    #[serde(
        rename = "MQTT_BROKER_HOST",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub mqtt_broker_host: String,
    /// MQTT username the worker must connect with (our addition; empty: anonymous).
    #[serde(
        rename = "MQTT_USERNAME",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub mqtt_username: String,
    /// MQTT password for `mqtt_username` (our addition).
    #[serde(
        rename = "MQTT_PASSWORD",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub mqtt_password: String,
    /// The worker's secret (our addition): what it sends as `worker_secret` to register again
    /// under its id. Equal to the MQTT password when the cluster gives each worker its own.
    #[serde(
        rename = "WORKER_SECRET",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub worker_secret: String,
    /// Base address of the worker's overlay IPv4 subnet from the root's IPAM (our addition;
    /// Oakestra hands it out later over MQTT `net/subnet`). Absent when the cluster has no root
    /// or the root did not answer; the worker then runs without the overlay until it registers
    /// again. The same worker id keeps its subnet across registrations.
    #[serde(
        rename = "NODE_SUBNET",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub subnet: Option<std::net::Ipv4Addr>,
    /// Base address of the worker's overlay IPv6 subnet (with `subnet`).
    #[serde(
        rename = "NODE_SUBNET_V6",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub subnet_v6: Option<std::net::Ipv6Addr>,
    /// Prefix length of `subnet`, 22–26 (the IPv6 subnet's is this + 94). Absent (a cluster
    /// before subnet sizes): 26, i.e. a /26 and a /120.
    #[serde(
        rename = "NODE_SUBNET_PREFIX",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub subnet_prefix_len: Option<u8>,
}

impl RegisterResponse {
    /// The broker host to dial: `mqtt_broker_host`, or `cluster_host` (the host the worker
    /// used for `POST /api/node/register`) when the cluster did not name one.
    pub fn broker_host<'a>(&'a self, cluster_host: &'a str) -> &'a str {
        if self.mqtt_broker_host.is_empty() {
            cluster_host
        } else {
            &self.mqtt_broker_host
        }
    }
}

/// `nodes/<id>/job`: an instance changed status on the worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatusReport {
    /// Schema version.
    #[serde(default)]
    pub wire_version: WireVersion,
    /// The job name.
    pub sname: String,
    /// New status.
    pub status: DeploymentStatus,
    /// Detail (error text for `FAILED`).
    #[serde(default)]
    pub status_detail: String,
    /// Instance number.
    #[serde(deserialize_with = "lenient::number")]
    pub instance: u32,
    /// The worker's address.
    #[serde(default)]
    pub publicip: String,
    /// How often the worker restarted this instance under its restart policy (our addition).
    #[serde(
        default,
        deserialize_with = "lenient::number",
        skip_serializing_if = "is_zero"
    )]
    pub restart_count: u32,
    /// With `DEAD`: the worker restarts the instance itself after a back-off, so nobody else
    /// should place it again (our addition).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restarting: bool,
    /// Whether the instance passes its readiness probe (our addition): `Some(false)` keeps a
    /// `RUNNING` instance out of its service IPs' balancing. Absent (no readiness probe, or
    /// an older worker): ready when `RUNNING`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Payload for JobStatusReport {
    const TOPIC: NodeTopic = NodeTopic::Job;
}

/// One instance's usage in a [`ResourcesReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceUsage {
    /// CPU use in percent.
    #[serde(default, deserialize_with = "lenient::number")]
    pub cpu_percent: f64,
    /// Memory use in percent.
    #[serde(default, deserialize_with = "lenient::number")]
    pub memory_percent: f64,
    /// Disk use in bytes.
    #[serde(default, deserialize_with = "lenient::number")]
    pub disk: u64,
    /// Tail of the log.
    #[serde(default)]
    pub logs: String,
    /// The job name.
    pub job_name: String,
    /// Runtime name (`docker`, `unikernel`, …).
    #[serde(default)]
    pub virtualization: String,
    /// Instance number.
    #[serde(deserialize_with = "lenient::number")]
    pub instance: u32,
}

/// `nodes/<id>/jobs/resources`: usage of the instances of one runtime.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ResourcesReport {
    /// Schema version.
    #[serde(default)]
    pub wire_version: WireVersion,
    /// One entry per running instance.
    #[serde(default, deserialize_with = "lenient::null_as_default")]
    pub services: Vec<ServiceUsage>,
}

impl Payload for ResourcesReport {
    const TOPIC: NodeTopic = NodeTopic::JobsResources;
}

/// `nodes/<id>/control/deploy`: start instance `instance_number` of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployCommand {
    /// Schema version.
    #[serde(default)]
    pub wire_version: WireVersion,
    /// Job id.
    #[serde(rename = "_id")]
    pub id: String,
    /// `app.appns.service.servicens`.
    pub job_name: String,
    /// Which instance to start.
    #[serde(deserialize_with = "lenient::number")]
    pub instance_number: u32,
    /// Image, or comma-separated kernel URLs (one per `arch`).
    pub image: String,
    /// Runtime name (`docker`, `unikernel`, `crosvm`).
    pub virtualization: String,
    /// Command.
    #[serde(default, deserialize_with = "lenient::null_as_default")]
    pub cmd: Vec<String>,
    /// `KEY=VALUE` entries.
    #[serde(default, deserialize_with = "lenient::null_as_default")]
    pub environment: Vec<String>,
    /// Port string (see [`DeployCommand::port_mappings`]).
    #[serde(default)]
    pub port: String,
    /// CPU cores.
    #[serde(default, deserialize_with = "lenient::number")]
    pub vcpus: u32,
    /// GPUs.
    #[serde(default, deserialize_with = "lenient::number")]
    pub vgpus: u32,
    /// TPUs.
    #[serde(default, deserialize_with = "lenient::number")]
    pub vtpus: u32,
    /// Memory limit in MB (0 = none).
    #[serde(default, deserialize_with = "lenient::number")]
    pub memory: u64,
    /// Storage in MiB.
    #[serde(default, deserialize_with = "lenient::number")]
    pub storage: u64,
    /// Architectures, parallel to the kernel URLs of `image`.
    #[serde(default, deserialize_with = "lenient::null_as_default")]
    pub arch: Vec<String>,
    /// Pull platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// VM images (crosvm).
    #[serde(default, deserialize_with = "lenient::null_as_default")]
    pub vm_images: Vec<String>,
    /// CSI volumes.
    #[serde(default, deserialize_with = "lenient::null_as_default")]
    pub volumes: Vec<Volume>,
    /// Exit 0 means `COMPLETED`.
    #[serde(default)]
    pub one_shot: bool,
    /// The SLA's `restart_policy` (our addition): the worker restarts exited instances
    /// itself. Absent: every exit is reported and the cluster decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<oakestra_core::sla::RestartPolicy>,
    /// The SLA's `liveness_probe` (our addition): the worker restarts the instance when it
    /// fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<oakestra_core::sla::Probe>,
    /// The SLA's `readiness_probe` (our addition): the worker reports `ready` from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<oakestra_core::sla::Probe>,
    /// Extended privileges.
    #[serde(default)]
    pub privileged: bool,
    /// Job status at the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Status detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_detail: Option<String>,
    /// The instance's service addresses (`RR_ip`, `RR_ip_v6`, `Closest_ip`, `Closest_ip_v6`,
    /// `instance_ip`, `instance_ip_v6` on the wire, absent ones omitted).
    #[serde(flatten)]
    pub addresses: ServiceAddresses,
    /// Other keys of the job document, kept.
    #[serde(flatten)]
    pub extra: Extra,
}

impl DeployCommand {
    /// The parsed port mappings.
    pub fn port_mappings(&self) -> Result<Vec<PortMapping>, PortSpecError> {
        parse_port_mappings(&self.port)
    }

    /// The kernel URL for `arch` (unikernels: the `image` entry at the index of `arch`).
    pub fn kernel_for_arch(&self, arch: &str) -> Option<&str> {
        let index = self.arch.iter().position(|a| a == arch)?;
        self.image.split(',').map(str::trim).nth(index)
    }
}

impl Payload for DeployCommand {
    const TOPIC: NodeTopic = NodeTopic::ControlDeploy;
}

/// `nodes/<id>/control/delete`: stop and remove an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteCommand {
    /// Schema version.
    #[serde(default)]
    pub wire_version: WireVersion,
    /// The job name.
    pub job_name: String,
    /// Runtime name.
    #[serde(default)]
    pub virtualization: String,
    /// Which instance.
    #[serde(deserialize_with = "lenient::number")]
    pub instance_number: u32,
}

impl Payload for DeleteCommand {
    const TOPIC: NodeTopic = NodeTopic::ControlDelete;
}

/// `nodes/<id>/control/error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlError {
    /// Schema version.
    #[serde(default)]
    pub wire_version: WireVersion,
    /// E.g. `"Node not registered to the cluster"`.
    pub message: String,
}

impl Payload for ControlError {
    const TOPIC: NodeTopic = NodeTopic::ControlError;
}
