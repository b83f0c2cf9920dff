//! The network payloads (`reference/oakestra-net.md` §1.6): worker subnets, deployed
//! services, table queries and their answers, interests and update signals.

use super::*;

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
