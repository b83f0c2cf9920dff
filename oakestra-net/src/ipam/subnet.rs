//! Worker subnets: a validated IPv4 /22–/26 and IPv6 /116–/120 from the worker ranges of the plan.
//!
//! The plan's slot is a /26 (IPv4) and a /120 (IPv6); a worker with prefix /P holds the
//! 2^(26−P) aligned slots that make up its /P, and the IPv6 subnet scales the same way
//! (/(P+94)). A bare base address (as Oakestra and older roots send it) is a /26 resp. /120.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::IpamError;
use super::plan::{PoolKind, WORKER_SUBNET_IPV4_PREFIX_LEN, WORKER_SUBNET_IPV6_PREFIX_LEN};

/// The shortest worker IPv4 prefix (the largest subnet): a /22, 1,021 instances.
pub const WORKER_SUBNET_IPV4_MIN_PREFIX_LEN: u8 = 22;

/// The IPv6 prefix length that goes with worker IPv4 prefix `ipv4_prefix_len`: the /120 scales
/// with the /26, so /26 ↔ /120, /24 ↔ /118, /22 ↔ /116.
pub fn worker_ipv6_prefix_len(ipv4_prefix_len: u8) -> u8 {
    ipv4_prefix_len + (WORKER_SUBNET_IPV6_PREFIX_LEN - WORKER_SUBNET_IPV4_PREFIX_LEN)
}

/// How many plan slots (/26 resp. /120) a worker subnet of IPv4 prefix `ipv4_prefix_len` spans.
pub(crate) fn slots_for(ipv4_prefix_len: u8) -> u128 {
    1 << (WORKER_SUBNET_IPV4_PREFIX_LEN - ipv4_prefix_len)
}

/// Checks a worker IPv4 prefix length: 22 ≤ P ≤ 26.
pub fn check_worker_prefix_len(prefix_len: u8) -> Result<(), IpamError> {
    if (WORKER_SUBNET_IPV4_MIN_PREFIX_LEN..=WORKER_SUBNET_IPV4_PREFIX_LEN).contains(&prefix_len) {
        Ok(())
    } else {
        Err(IpamError::Unparsable {
            field: "worker subnet prefix length".to_owned(),
            value: prefix_len.to_string(),
            expected: "a prefix length from 22 (1,021 instances per worker) to 26 (61, Oakestra's)",
            example: "24",
        })
    }
}

/// One worker's IPv4 subnet: a /22 … /26 between `10.18.0.0` and `10.29.255.255`, aligned to its
/// size. Serialised as `"10.18.0.64/26"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Ipv4Subnet {
    base: Ipv4Addr,
    prefix_len: u8,
}

/// One worker's IPv6 subnet: a /116 … /120 between `fc00::` and
/// `fdfd:ffff:ffff:ffff:ffff:ffff:ffff:ffff`, aligned to its size. Serialised as `"fc00::100/120"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Ipv6Subnet {
    base: Ipv6Addr,
    prefix_len: u8,
}

/// The pair of subnets a worker gets when it registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WorkerSubnets {
    /// The worker's IPv4 subnet (a /26 by default).
    pub ipv4: Ipv4Subnet,
    /// The worker's IPv6 subnet (a /120 by default).
    pub ipv6: Ipv6Subnet,
}

impl WorkerSubnets {
    /// How many instances the worker can hold: the IPv4 subnet's container addresses (the IPv6
    /// subnet always has more).
    pub fn instance_capacity(&self) -> u32 {
        self.ipv4.instance_capacity()
    }
}

/// Checks that `base` is the base of a subnet slot of a worker pool, and aligned to `2^shift`
/// slots.
fn check_worker_base(
    kind: PoolKind,
    field: &str,
    base: IpAddr,
    prefix_len: u8,
    host_bits: u32,
) -> Result<(), IpamError> {
    let v4_len = match base {
        IpAddr::V4(_) => Some(prefix_len),
        IpAddr::V6(_) => {
            prefix_len.checked_sub(WORKER_SUBNET_IPV6_PREFIX_LEN - WORKER_SUBNET_IPV4_PREFIX_LEN)
        }
    };
    if v4_len.is_none_or(|len| check_worker_prefix_len(len).is_err()) {
        let (expected, example) = match base {
            IpAddr::V4(_) => (
                "a prefix length from 22 (1,021 instances per worker) to 26 (61, Oakestra's)",
                "24",
            ),
            IpAddr::V6(_) => ("a prefix length from 116 to 120", "118"),
        };
        return Err(IpamError::Unparsable {
            field: format!("{field} prefix length"),
            value: prefix_len.to_string(),
            expected,
            example,
        });
    }
    kind.slot_of(base)
        .map_err(|misfit| IpamError::from_misfit(kind, field, base, misfit))?;
    let bits = match base {
        IpAddr::V4(a) => u128::from(a.to_bits()),
        IpAddr::V6(a) => a.to_bits(),
    };
    if bits & ((1 << host_bits) - 1) != 0 {
        return Err(IpamError::NotSubnetBase {
            field: field.to_owned(),
            pool: kind,
            address: base,
            prefix_len: u32::from(prefix_len),
            range: kind.range(),
        });
    }
    Ok(())
}

/// Splits `"a.b.c.d/26"` (or a bare base address, which is a `default_len`) into address text
/// and prefix length.
fn split_prefix<'a>(
    field: &str,
    text: &'a str,
    default_len: u8,
    example: &'static str,
) -> Result<(&'a str, u8), IpamError> {
    match text.split_once('/') {
        None => Ok((text, default_len)),
        Some((addr, len)) => match len.parse() {
            Ok(len) => Ok((addr, len)),
            Err(_) => Err(IpamError::Unparsable {
                field: field.to_owned(),
                value: text.to_owned(),
                expected: "a worker subnet with a prefix length",
                example,
            }),
        },
    }
}

impl Ipv4Subnet {
    /// The /26 with base address `base`, if that is a /26 base inside the worker range.
    pub fn new(base: Ipv4Addr) -> Result<Self, IpamError> {
        Self::with_prefix(base, WORKER_SUBNET_IPV4_PREFIX_LEN)
    }

    /// The subnet `base/prefix_len` (22 ≤ prefix_len ≤ 26), if `base` is aligned to it and
    /// inside the worker range.
    pub fn with_prefix(base: Ipv4Addr, prefix_len: u8) -> Result<Self, IpamError> {
        check_worker_base(
            PoolKind::WorkerSubnetIpv4,
            "worker IPv4 subnet",
            IpAddr::V4(base),
            prefix_len,
            32 - u32::from(prefix_len.min(32)),
        )?;
        Ok(Self { base, prefix_len })
    }

    /// The base (network) address, e.g. `10.18.0.64`.
    pub fn base(self) -> Ipv4Addr {
        self.base
    }

    /// The prefix length, 26 by default.
    pub fn prefix_len(self) -> u8 {
        self.prefix_len
    }

    /// How many addresses the subnet has (64 for a /26).
    pub fn size(self) -> u32 {
        1 << (32 - self.prefix_len)
    }

    /// How many container addresses it hands out: all but the network, bridge and broadcast
    /// addresses (61 for a /26, 253 for a /24).
    pub fn instance_capacity(self) -> u32 {
        self.size() - 3
    }

    /// The worker bridge's address: base + 1.
    pub fn bridge(self) -> Ipv4Addr {
        Ipv4Addr::from_bits(self.base.to_bits() + 1)
    }

    /// The broadcast address: the last of the subnet (base + 63 for a /26).
    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from_bits(self.base.to_bits() + self.size() - 1)
    }

    /// Whether `address` lies inside this subnet.
    pub fn contains(self, address: Ipv4Addr) -> bool {
        let host = 32 - u32::from(self.prefix_len);
        address.to_bits() >> host == self.base.to_bits() >> host
    }
}

impl Ipv6Subnet {
    /// The /120 with base address `base`, if that is a /120 base inside the worker range.
    pub fn new(base: Ipv6Addr) -> Result<Self, IpamError> {
        Self::with_prefix(base, WORKER_SUBNET_IPV6_PREFIX_LEN)
    }

    /// The subnet `base/prefix_len` (116 ≤ prefix_len ≤ 120), if `base` is aligned to it and
    /// inside the worker range.
    pub fn with_prefix(base: Ipv6Addr, prefix_len: u8) -> Result<Self, IpamError> {
        check_worker_base(
            PoolKind::WorkerSubnetIpv6,
            "worker IPv6 subnet",
            IpAddr::V6(base),
            prefix_len,
            128 - u32::from(prefix_len.min(128)),
        )?;
        Ok(Self { base, prefix_len })
    }

    /// The base address, e.g. `fc00::100`.
    pub fn base(self) -> Ipv6Addr {
        self.base
    }

    /// The prefix length, 120 by default.
    pub fn prefix_len(self) -> u8 {
        self.prefix_len
    }

    /// How many addresses the subnet has (256 for a /120).
    pub fn size(self) -> u128 {
        1 << (128 - self.prefix_len)
    }

    /// The worker bridge's address: base + 1.
    pub fn bridge(self) -> Ipv6Addr {
        Ipv6Addr::from_bits(self.base.to_bits() + 1)
    }

    /// Whether `address` lies inside this subnet.
    pub fn contains(self, address: Ipv6Addr) -> bool {
        let host = 128 - u32::from(self.prefix_len);
        address.to_bits() >> host == self.base.to_bits() >> host
    }
}

impl fmt::Display for Ipv4Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix_len)
    }
}

impl fmt::Display for Ipv6Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix_len)
    }
}

impl FromStr for Ipv4Subnet {
    type Err = IpamError;

    /// Parses `"10.18.0.64/26"`, `"10.18.4.0/24"` or the bare base `"10.18.0.64"` (a /26, as
    /// Oakestra's MQTT payload sends it).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const FIELD: &str = "worker IPv4 subnet";
        const EXAMPLE: &str = "10.18.0.64/26";
        let (addr, len) = split_prefix(FIELD, text, WORKER_SUBNET_IPV4_PREFIX_LEN, EXAMPLE)?;
        let base = addr.parse().map_err(|_| IpamError::Unparsable {
            field: FIELD.to_owned(),
            value: text.to_owned(),
            expected: "an IPv4 /22 … /26",
            example: EXAMPLE,
        })?;
        Self::with_prefix(base, len)
    }
}

impl FromStr for Ipv6Subnet {
    type Err = IpamError;

    /// Parses `"fc00::100/120"`, `"fc00::400/118"` or the bare base `"fc00::100"` (a /120).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const FIELD: &str = "worker IPv6 subnet";
        const EXAMPLE: &str = "fc00::100/120";
        let (addr, len) = split_prefix(FIELD, text, WORKER_SUBNET_IPV6_PREFIX_LEN, EXAMPLE)?;
        let base = addr.parse().map_err(|_| IpamError::Unparsable {
            field: FIELD.to_owned(),
            value: text.to_owned(),
            expected: "an IPv6 /116 … /120",
            example: EXAMPLE,
        })?;
        Self::with_prefix(base, len)
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
            "10.18.0.64/24",
            "10.18.0.0/21",
            "10.18.0.0/27",
            "x",
        ] {
            let err = bad.parse::<Ipv4Subnet>().unwrap_err();
            assert!(!err.to_string().is_empty(), "{bad}");
        }
        assert!("fdfe::/120".parse::<Ipv6Subnet>().is_err());
        assert!("fc00::1/120".parse::<Ipv6Subnet>().is_err());
        assert!(serde_json::from_str::<Ipv4Subnet>("\"10.30.0.0/26\"").is_err());
    }

    #[test]
    fn larger_subnets_are_aligned_and_scale_in_both_families() {
        let a: Ipv4Subnet = "10.18.4.0/24".parse().unwrap();
        assert_eq!(a.prefix_len(), 24);
        assert_eq!(a.instance_capacity(), 253);
        assert_eq!(a.broadcast(), Ipv4Addr::new(10, 18, 4, 255));
        assert!(a.contains(Ipv4Addr::new(10, 18, 4, 200)));
        assert!(!a.contains(Ipv4Addr::new(10, 18, 5, 0)));
        assert_eq!(a.to_string(), "10.18.4.0/24");
        assert_eq!(
            serde_json::from_str::<Ipv4Subnet>("\"10.18.4.0/24\"").unwrap(),
            a
        );
        let b: Ipv6Subnet = "fc00::400/118".parse().unwrap();
        assert_eq!(b.size(), 1024);
        assert!(b.contains("fc00::7ff".parse().unwrap()));
        assert!(!b.contains("fc00::800".parse().unwrap()));
        assert!("fc00::100/118".parse::<Ipv6Subnet>().is_err());
        let err = "fc00::/121".parse::<Ipv6Subnet>().unwrap_err().to_string();
        assert!(err.contains("from 116 to 120"), "{err}");
        let err = "10.18.0.0/27"
            .parse::<Ipv4Subnet>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("from 22"), "{err}");
        assert_eq!(worker_ipv6_prefix_len(24), 118);
        assert_eq!(worker_ipv6_prefix_len(26), 120);
        assert_eq!(slots_for(22), 16);
        // The last /22 of the range still fits.
        assert!("10.29.252.0/22".parse::<Ipv4Subnet>().is_ok());
        let err = check_worker_prefix_len(21).unwrap_err().to_string();
        assert!(err.contains("from 22"), "{err}");
    }
}
