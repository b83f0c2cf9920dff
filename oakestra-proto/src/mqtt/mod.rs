//! MQTT payloads between a cluster and its workers (Oakestra's topics and JSON shapes).
//!
//! Every payload carries `wire_version` ([`WireVersion`], currently 1). Oakestra's own
//! components do not send it; a missing version reads as 1, and Oakestra ignores the extra key.
//! Numbers that Oakestra sends as strings (`cpu_percent`, `disk`, `host_port`, …) are accepted
//! in both forms and always emitted as numbers. Go's `null` for an empty list reads as empty.

pub mod logs;
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
    /// Base address of the worker's overlay IPv4 /26 from the root's IPAM (our addition;
    /// Oakestra hands it out later over MQTT `net/subnet`). Absent when the cluster has no root
    /// or the root did not answer; the worker then runs without the overlay until it registers
    /// again. The same worker id keeps its subnet across registrations.
    #[serde(
        rename = "NODE_SUBNET",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub subnet: Option<std::net::Ipv4Addr>,
    /// Base address of the worker's overlay IPv6 /120 (with `subnet`).
    #[serde(
        rename = "NODE_SUBNET_V6",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub subnet_v6: Option<std::net::Ipv6Addr>,
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

/// The `METHOD` of a [`SubnetRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubnetMethod {
    /// Ask for a subnet.
    #[serde(rename = "GET")]
    Get,
    /// Give the subnet back.
    #[serde(rename = "DELETE")]
    Delete,
}

/// `nodes/<id>/net/subnet`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetRequest {
    /// Schema version.
    #[serde(default)]
    pub wire_version: WireVersion,
    /// What to do.
    #[serde(rename = "METHOD")]
    pub method: SubnetMethod,
}

impl Payload for SubnetRequest {
    const TOPIC: NodeTopic = NodeTopic::NetSubnet;
}

/// `nodes/<id>/net/subnetwork/result`: the worker's /26 and /120.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetResult {
    /// Schema version.
    #[serde(default)]
    pub wire_version: WireVersion,
    /// Base of the worker's IPv4 /26.
    pub address: Ipv4Addr,
    /// Base of the worker's IPv6 /120.
    pub addressv6: Ipv6Addr,
}

impl Payload for SubnetResult {
    const TOPIC: NodeTopic = NodeTopic::NetSubnetworkResult;
}

/// `nodes/<id>/net/service/deployed` and `…/address-changed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDeployed {
    /// Schema version.
    #[serde(default)]
    pub wire_version: WireVersion,
    /// The job name.
    pub appname: String,
    /// `"DEPLOYED"` (empty for address changes).
    #[serde(default)]
    pub status: String,
    /// Instance number.
    #[serde(deserialize_with = "lenient::number")]
    pub instance_number: u32,
    /// Instance address in the worker subnet (empty for address changes).
    #[serde(default)]
    pub nsip: String,
    /// IPv6 instance address in the worker subnet.
    #[serde(default)]
    pub nsipv6: String,
    /// Worker tunnel port (Oakestra sends `"50103"`).
    #[serde(deserialize_with = "lenient::number")]
    pub host_port: u16,
    /// Worker address.
    pub host_ip: String,
}

impl Payload for ServiceDeployed {
    const TOPIC: NodeTopic = NodeTopic::NetServiceDeployed;
}

/// `nodes/<id>/net/tablequery/request`: exactly one of `sname` and `sip` is non-empty.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TableQueryRequest {
    /// Schema version.
    #[serde(default)]
    pub wire_version: WireVersion,
    /// Job name to resolve.
    #[serde(default)]
    pub sname: String,
    /// Service IP to resolve.
    #[serde(default)]
    pub sip: String,
}

impl TableQueryRequest {
    /// The key the answer will carry as `query_key`.
    pub fn query_key(&self) -> &str {
        if self.sip.is_empty() {
            &self.sname
        } else {
            &self.sip
        }
    }
}

impl Payload for TableQueryRequest {
    const TOPIC: NodeTopic = NodeTopic::NetTableQueryRequest;
}

/// Which service address a [`ServiceIp`] is (Oakestra's `IpType`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IpType {
    /// `"RR"`: the service's round-robin address.
    #[serde(rename = "RR")]
    RoundRobin,
    /// `"Closest"`: the service's closest address (Oakestra names it but never sends it).
    #[serde(rename = "Closest")]
    Closest,
    /// `"instance_ip"` (Oakestra's older workers: `"InstanceNumber"`): the instance's own.
    #[serde(rename = "instance_ip", alias = "InstanceNumber")]
    Instance,
    /// Any other kind, kept as sent.
    #[serde(untagged)]
    Other(String),
}

/// A service address of an instance in a table entry. An absent address is `""` on the wire
/// (Oakestra's spelling); unparsable text reads as absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceIp {
    /// Which address this is.
    #[serde(rename = "IpType")]
    pub ip_type: IpType,
    /// IPv4.
    #[serde(
        rename = "Address",
        default,
        deserialize_with = "lenient::option_ip",
        serialize_with = "lenient::ip_or_empty"
    )]
    pub address: Option<Ipv4Addr>,
    /// IPv6.
    #[serde(
        rename = "Address_v6",
        default,
        deserialize_with = "lenient::option_ip",
        serialize_with = "lenient::ip_or_empty"
    )]
    pub address_v6: Option<Ipv6Addr>,
}

impl ServiceIp {
    /// The `service_ip` list of a table entry, in Oakestra's order: the RR pair, then the
    /// instance's own pair, then the closest pair when the service has one.
    pub fn list(addresses: &ServiceAddresses) -> Vec<ServiceIp> {
        let entry = |ip_type, address, address_v6| ServiceIp {
            ip_type,
            address,
            address_v6,
        };
        let mut ips = vec![
            entry(IpType::RoundRobin, addresses.rr_ip, addresses.rr_ip_v6),
            entry(
                IpType::Instance,
                addresses.instance_ip,
                addresses.instance_ip_v6,
            ),
        ];
        if addresses.has_closest() {
            ips.push(entry(
                IpType::Closest,
                addresses.closest_ip,
                addresses.closest_ip_v6,
            ));
        }
        ips
    }

    /// Whether `ip` is this entry's IPv4 or IPv6 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => self.address == Some(v4),
            IpAddr::V6(v6) => self.address_v6 == Some(v6),
        }
    }
}

/// One instance in a [`TableQueryResult`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableEntryInstance {
    /// Instance number.
    #[serde(deserialize_with = "lenient::number")]
    pub instance_number: u32,
    /// Address in the hosting worker's subnet.
    #[serde(default)]
    pub namespace_ip: String,
    /// IPv6 address in the hosting worker's subnet.
    #[serde(default)]
    pub namespace_ip_v6: String,
    /// Hosting worker's address.
    #[serde(default)]
    pub host_ip: String,
    /// Hosting worker's tunnel port.
    #[serde(default, deserialize_with = "lenient::number")]
    pub host_port: u16,
    /// Service addresses, ending with the instance's own address.
    #[serde(default, deserialize_with = "lenient::null_as_default")]
    pub service_ip: Vec<ServiceIp>,
    /// Other keys (`worker_id`, `cluster_id`, …), kept.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `nodes/<id>/net/tablequery/result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableQueryResult {
    /// Schema version.
    #[serde(default)]
    pub wire_version: WireVersion,
    /// The job name (`null` when an IP query found nothing).
    #[serde(default)]
    pub app_name: Option<String>,
    /// The instances.
    #[serde(default, deserialize_with = "lenient::null_as_default")]
    pub instance_list: Vec<TableEntryInstance>,
    /// `sip` or `sname` of the request.
    pub query_key: String,
}

impl Payload for TableQueryResult {
    const TOPIC: NodeTopic = NodeTopic::NetTableQueryResult;
}

/// `nodes/<id>/net/interest/remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterestRemove {
    /// Schema version.
    #[serde(default)]
    pub wire_version: WireVersion,
    /// Job name or IP the worker no longer needs.
    pub appname: String,
}

impl Payload for InterestRemove {
    const TOPIC: NodeTopic = NodeTopic::NetInterestRemove;
}

/// What changed in a job (payload of `jobs/<job_name>/updates_available`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpdateKind {
    /// An instance was added or moved.
    #[serde(rename = "DEPLOYMENT")]
    Deployment,
    /// An instance was removed.
    #[serde(rename = "UNDEPLOYMENT")]
    Undeployment,
}

/// `jobs/<job_name>/updates_available`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdatesAvailable {
    /// Schema version.
    #[serde(default)]
    pub wire_version: WireVersion,
    /// What changed.
    #[serde(rename = "type")]
    pub kind: UpdateKind,
}
