//! Worker subnets: a validated IPv4 /26 and IPv6 /120 from the worker ranges of the plan.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::IpamError;
use super::plan::{PoolKind, WORKER_SUBNET_IPV4_PREFIX_LEN, WORKER_SUBNET_IPV6_PREFIX_LEN};

/// One worker's IPv4 subnet: a /26 between `10.18.0.0` and `10.29.255.192`.
/// Serialised as `"10.18.0.64/26"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Ipv4Subnet(Ipv4Addr);

/// One worker's IPv6 subnet: a /120 between `fc00::` and `fdfd:ffff:ffff:ffff:ffff:ffff:ffff:ff00`.
/// Serialised as `"fc00::100/120"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Ipv6Subnet(Ipv6Addr);

/// The pair of subnets a worker gets when it registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WorkerSubnets {
    /// The worker's IPv4 /26.
    pub ipv4: Ipv4Subnet,
    /// The worker's IPv6 /120.
    pub ipv6: Ipv6Subnet,
}

/// Checks that `base` is the base of a subnet slot of a worker pool.
fn check_worker_base(kind: PoolKind, field: &str, base: IpAddr) -> Result<(), IpamError> {
    kind.slot_of(base)
        .map(|_| ())
        .map_err(|misfit| IpamError::from_misfit(kind, field, base, misfit))
}

/// Splits `"a.b.c.d/26"` (or a bare base address) into address text and checks the prefix length.
fn split_prefix<'a>(
    field: &str,
    text: &'a str,
    prefix_len: u8,
    example: &'static str,
) -> Result<&'a str, IpamError> {
    match text.split_once('/') {
        None => Ok(text),
        Some((addr, len)) if len == prefix_len.to_string() => Ok(addr),
        Some(_) => Err(IpamError::Unparsable {
            field: field.to_owned(),
            value: text.to_owned(),
            expected: "a worker subnet with the plan's prefix length",
            example,
        }),
    }
}

impl Ipv4Subnet {
    /// The subnet with base address `base`, if that is a /26 base inside the worker range.
    pub fn new(base: Ipv4Addr) -> Result<Self, IpamError> {
        check_worker_base(
            PoolKind::WorkerSubnetIpv4,
            "worker IPv4 subnet",
            IpAddr::V4(base),
        )?;
        Ok(Self(base))
    }

    /// The base (network) address, e.g. `10.18.0.64`.
    pub fn base(self) -> Ipv4Addr {
        self.0
    }

    /// The prefix length, always 26.
    pub fn prefix_len(self) -> u8 {
        WORKER_SUBNET_IPV4_PREFIX_LEN
    }

    /// The worker bridge's address: base + 1.
    pub fn bridge(self) -> Ipv4Addr {
        Ipv4Addr::from_bits(self.0.to_bits() + 1)
    }

    /// The broadcast address: base + 63.
    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from_bits(self.0.to_bits() + 63)
    }

    /// Whether `address` lies inside this subnet.
    pub fn contains(self, address: Ipv4Addr) -> bool {
        address.to_bits() >> 6 == self.0.to_bits() >> 6
    }
}

impl Ipv6Subnet {
    /// The subnet with base address `base`, if that is a /120 base inside the worker range.
    pub fn new(base: Ipv6Addr) -> Result<Self, IpamError> {
        check_worker_base(
            PoolKind::WorkerSubnetIpv6,
            "worker IPv6 subnet",
            IpAddr::V6(base),
        )?;
        Ok(Self(base))
    }

    /// The base address, e.g. `fc00::100`.
    pub fn base(self) -> Ipv6Addr {
        self.0
    }

    /// The prefix length, always 120.
    pub fn prefix_len(self) -> u8 {
        WORKER_SUBNET_IPV6_PREFIX_LEN
    }

    /// The worker bridge's address: base + 1.
    pub fn bridge(self) -> Ipv6Addr {
        Ipv6Addr::from_bits(self.0.to_bits() + 1)
    }

    /// Whether `address` lies inside this subnet.
    pub fn contains(self, address: Ipv6Addr) -> bool {
        address.to_bits() >> 8 == self.0.to_bits() >> 8
    }
}

impl fmt::Display for Ipv4Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0, WORKER_SUBNET_IPV4_PREFIX_LEN)
    }
}

impl fmt::Display for Ipv6Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0, WORKER_SUBNET_IPV6_PREFIX_LEN)
    }
}

impl FromStr for Ipv4Subnet {
    type Err = IpamError;

    /// Parses `"10.18.0.64/26"` or the bare base `"10.18.0.64"` (as Oakestra's MQTT payload sends it).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const FIELD: &str = "worker IPv4 subnet";
        const EXAMPLE: &str = "10.18.0.64/26";
        let addr = split_prefix(FIELD, text, WORKER_SUBNET_IPV4_PREFIX_LEN, EXAMPLE)?;
        let base = addr.parse().map_err(|_| IpamError::Unparsable {
            field: FIELD.to_owned(),
            value: text.to_owned(),
            expected: "an IPv4 /26",
            example: EXAMPLE,
        })?;
        Self::new(base)
    }
}

impl FromStr for Ipv6Subnet {
    type Err = IpamError;

    /// Parses `"fc00::100/120"` or the bare base `"fc00::100"`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const FIELD: &str = "worker IPv6 subnet";
        const EXAMPLE: &str = "fc00::100/120";
        let addr = split_prefix(FIELD, text, WORKER_SUBNET_IPV6_PREFIX_LEN, EXAMPLE)?;
        let base = addr.parse().map_err(|_| IpamError::Unparsable {
            field: FIELD.to_owned(),
            value: text.to_owned(),
            expected: "an IPv6 /120",
            example: EXAMPLE,
        })?;
        Self::new(base)
    }
}

impl From<Ipv4Subnet> for String {
    fn from(subnet: Ipv4Subnet) -> Self {
        subnet.to_string()
    }
}

impl From<Ipv6Subnet> for String {
    fn from(subnet: Ipv6Subnet) -> Self {
        subnet.to_string()
    }
}

impl TryFrom<String> for Ipv4Subnet {
    type Error = IpamError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl TryFrom<String> for Ipv6Subnet {
    type Error = IpamError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_or_without_prefix_length() {
        let a: Ipv4Subnet = "10.18.0.64/26".parse().unwrap();
        assert_eq!(a, "10.18.0.64".parse().unwrap());
        assert_eq!(a.to_string(), "10.18.0.64/26");
        assert_eq!(a.bridge(), Ipv4Addr::new(10, 18, 0, 65));
        assert_eq!(a.broadcast(), Ipv4Addr::new(10, 18, 0, 127));
        assert!(a.contains(Ipv4Addr::new(10, 18, 0, 100)));
        assert!(!a.contains(Ipv4Addr::new(10, 18, 0, 128)));
        let b: Ipv6Subnet = "fc00::100/120".parse().unwrap();
        assert_eq!(b.bridge(), "fc00::101".parse::<Ipv6Addr>().unwrap());
        assert!(b.contains("fc00::1ff".parse().unwrap()));
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"10.18.0.64/26\"");
        assert_eq!(
            serde_json::from_str::<Ipv6Subnet>("\"fc00::100/120\"").unwrap(),
            b
        );
    }

    #[test]
    fn rejects_subnets_outside_the_plan() {
        for bad in [
            "10.18.0.65/26",
            "10.30.0.0/26",
            "10.17.255.192",
            "10.18.0.0/24",
            "x",
        ] {
            let err = bad.parse::<Ipv4Subnet>().unwrap_err();
            assert!(!err.to_string().is_empty(), "{bad}");
        }
        assert!("fdfe::/120".parse::<Ipv6Subnet>().is_err());
        assert!("fc00::1/120".parse::<Ipv6Subnet>().is_err());
        assert!(serde_json::from_str::<Ipv4Subnet>("\"10.30.0.0/26\"").is_err());
    }
}
