//! The address plan: which pools exist, where they live and which addresses they never hand out.
//!
//! Every pool is a sequence of *slots* numbered from 0. A slot is one address (service, instance
//! and container pools) or one subnet (worker pools, where the slot's value is the subnet's base
//! address). The geometry maps slot numbers to address values and back with plain integer
//! arithmetic (`u32` addresses are widened to `u128`), so no pool is ever enumerated.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::subnet::{Ipv4Subnet, Ipv6Subnet};

/// Service IPv4 space: RR IPs and instance IPs share it (`10.30.0.0/16`).
pub const SERVICE_IPV4_NET: Ipv4Addr = Ipv4Addr::new(10, 30, 0, 0);
/// Prefix length of [`SERVICE_IPV4_NET`].
pub const SERVICE_IPV4_PREFIX_LEN: u8 = 16;
/// First base address of a worker IPv4 subnet.
pub const WORKER_SUBNETS_IPV4_FIRST: Ipv4Addr = Ipv4Addr::new(10, 18, 0, 0);
/// Last address of the worker IPv4 subnet space (inclusive).
pub const WORKER_SUBNETS_IPV4_LAST: Ipv4Addr = Ipv4Addr::new(10, 29, 255, 255);
/// The plan's worker IPv4 slot: a worker gets one /26 by default (Oakestra's), or the aligned
/// run of /26 slots that makes up a larger subnet (see [`super::Ipv4Subnet`]).
pub const WORKER_SUBNET_IPV4_PREFIX_LEN: u8 = 26;
/// Service IPv6 space (`fdff::/16`): instance addresses outside the RR range.
pub const SERVICE_IPV6_NET: Ipv6Addr = Ipv6Addr::new(0xfdff, 0, 0, 0, 0, 0, 0, 0);
/// Prefix length of [`SERVICE_IPV6_NET`].
pub const SERVICE_IPV6_PREFIX_LEN: u8 = 16;
/// Round-robin IPv6 range (`fdff:2000::/21`), carved out of [`SERVICE_IPV6_NET`].
pub const RR_IPV6_NET: Ipv6Addr = Ipv6Addr::new(0xfdff, 0x2000, 0, 0, 0, 0, 0, 0);
/// Prefix length of [`RR_IPV6_NET`].
pub const RR_IPV6_PREFIX_LEN: u8 = 21;
/// First base address of a worker IPv6 subnet (the start of `fc00::/7`).
pub const WORKER_SUBNETS_IPV6_FIRST: Ipv6Addr = Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0);
/// Worker IPv6 subnets stop below this address (`fdfe::/16` is kept free, `fdff::/16` is services).
pub const WORKER_SUBNETS_IPV6_END: Ipv6Addr = Ipv6Addr::new(0xfdfe, 0, 0, 0, 0, 0, 0, 0);
/// The plan's worker IPv6 slot: a /120 by default, scaled like the IPv4 subnet.
pub const WORKER_SUBNET_IPV6_PREFIX_LEN: u8 = 120;

const SERVICE_IPV4_BASE: u128 = u32::from_be_bytes([10, 30, 0, 0]) as u128;
const SERVICE_IPV4_SIZE: u128 = 1 << 16;
const WORKER_V4_FIRST: u128 = u32::from_be_bytes([10, 18, 0, 0]) as u128;
const WORKER_V4_END: u128 = u32::from_be_bytes([10, 30, 0, 0]) as u128;
const SERVICE_IPV6_BASE: u128 = 0xfdff << 112;
const SERVICE_IPV6_SIZE: u128 = 1 << 112;
const RR_IPV6_BASE: u128 = SERVICE_IPV6_BASE | (0x2000 << 96);
const RR_IPV6_SIZE: u128 = 1 << 107;
const WORKER_V6_FIRST: u128 = 0xfc00 << 112;
const WORKER_V6_END: u128 = 0xfdfe << 112;
/// Slot width (log2 of the number of addresses) of a worker IPv4 /26.
const WORKER_V4_SHIFT: u32 = 32 - WORKER_SUBNET_IPV4_PREFIX_LEN as u32;
/// Slot width (log2 of the number of addresses) of a worker IPv6 /120.
const WORKER_V6_SHIFT: u32 = 128 - WORKER_SUBNET_IPV6_PREFIX_LEN as u32;

/// Which pool an address belongs to. Container pools carry the worker subnet they live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolKind {
    /// `10.30.0.1`–`10.30.255.254`: RR IPv4 of services and IPv4 of instances.
    ServiceIpv4,
    /// `fdff::/16` without `fdff::` and without the RR range: IPv6 of instances.
    InstanceIpv6,
    /// `fdff:2000::/21` without `fdff:2000::`: RR IPv6 of services.
    RrIpv6,
    /// /26 subnets from `10.18.0.0` to `10.29.255.192`, one per worker.
    WorkerSubnetIpv4,
    /// /120 subnets from `fc00::` to `fdfd:ffff:…:ff00`, one per worker.
    WorkerSubnetIpv6,
    /// Container IPv4 inside one worker subnet: base+2 … base+62 for a /26.
    ContainerIpv4 {
        /// The worker subnet the addresses come from.
        subnet: Ipv4Subnet,
    },
    /// Container IPv6 inside one worker subnet: base+2 … base+0xff for a /120.
    ContainerIpv6 {
        /// The worker subnet the addresses come from.
        subnet: Ipv6Subnet,
    },
}

/// A run of slots: `count` slots starting at address value `first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    first: u128,
    count: u128,
}

/// Where a pool's slots are. At most two segments (the instance IPv6 pool skips the RR range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    v6: bool,
    /// log2 of the addresses per slot: 0 for addresses, 6 for a /26, 8 for a /120.
    shift: u32,
    segments: [Segment; 2],
}

/// Why an address cannot be a slot of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Misfit {
    /// Not in the pool's address space at all (or the wrong family).
    Outside,
    /// In the space, but one of the addresses the plan never hands out.
    Excluded(&'static str),
    /// Inside a subnet slot but not its base address.
    NotSubnetBase,
}

impl PoolKind {
    pub(crate) fn geometry(self) -> Geometry {
        let one = |first, count, shift, v6| Geometry {
            v6,
            shift,
            segments: [Segment { first, count }, Segment { first: 0, count: 0 }],
        };
        match self {
            Self::ServiceIpv4 => one(SERVICE_IPV4_BASE + 1, SERVICE_IPV4_SIZE - 2, 0, false),
            Self::InstanceIpv6 => {
                let after_rr = RR_IPV6_BASE + RR_IPV6_SIZE;
                Geometry {
                    v6: true,
                    shift: 0,
                    segments: [
                        Segment {
                            first: SERVICE_IPV6_BASE + 1,
                            count: RR_IPV6_BASE - SERVICE_IPV6_BASE - 1,
                        },
                        Segment {
                            first: after_rr,
                            count: SERVICE_IPV6_BASE + SERVICE_IPV6_SIZE - after_rr,
                        },
                    ],
                }
            }
            Self::RrIpv6 => one(RR_IPV6_BASE + 1, RR_IPV6_SIZE - 1, 0, true),
            Self::WorkerSubnetIpv4 => one(
                WORKER_V4_FIRST,
                (WORKER_V4_END - WORKER_V4_FIRST) >> WORKER_V4_SHIFT,
                WORKER_V4_SHIFT,
                false,
            ),
            Self::WorkerSubnetIpv6 => one(
                WORKER_V6_FIRST,
                (WORKER_V6_END - WORKER_V6_FIRST) >> WORKER_V6_SHIFT,
                WORKER_V6_SHIFT,
                true,
            ),
            Self::ContainerIpv4 { subnet } => {
                // base+0 is the network, +1 the bridge, the last the broadcast address.
                one(
                    u128::from(subnet.base().to_bits()) + 2,
                    u128::from(subnet.size()) - 3,
                    0,
                    false,
                )
            }
            Self::ContainerIpv6 { subnet } => {
                // base+0 is the subnet-router anycast address, +1 the bridge.
                one(subnet.base().to_bits() + 2, subnet.size() - 2, 0, true)
            }
        }
    }

    /// The addresses this pool hands out, for messages.
    pub fn range(self) -> String {
        let g = self.geometry();
        let last = |s: Segment| s.first + ((s.count - 1) << g.shift);
        let first = g.segments[0];
        match self {
            Self::ServiceIpv4 => format!(
                "{}–{} (10.30.0.0/16 without its network and broadcast addresses)",
                g.address(first.first),
                g.address(last(first)),
            ),
            Self::InstanceIpv6 => "fdff::1–fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff \
                 (fdff::/16 without fdff:: and without the RR range fdff:2000::/21)"
                .to_owned(),
            Self::RrIpv6 => format!(
                "{}–{} (fdff:2000::/21 without fdff:2000::)",
                g.address(first.first),
                g.address(last(first)),
            ),
            Self::WorkerSubnetIpv4 | Self::WorkerSubnetIpv6 => format!(
                "{}/{} … {}/{}",
                g.address(first.first),
                g.prefix_len(),
                g.address(last(first)),
                g.prefix_len(),
            ),
            Self::ContainerIpv4 { subnet } => format!(
                "{}–{} (inside {subnet}; the network, bridge (+1) and broadcast addresses are never handed out)",
                g.address(first.first),
                g.address(last(first)),
            ),
            Self::ContainerIpv6 { subnet } => format!(
                "{}–{} (inside {subnet}; +0 and the bridge +1 are never handed out)",
                g.address(first.first),
                g.address(last(first)),
            ),
        }
    }

    /// Whether slots are whole subnets rather than single addresses.
    pub fn holds_subnets(self) -> bool {
        matches!(self, Self::WorkerSubnetIpv4 | Self::WorkerSubnetIpv6)
    }

    /// Why `value` is in this pool's space but never a slot, if it is one of those addresses.
    fn exclusion(self, value: u128) -> Option<&'static str> {
        match self {
            Self::ServiceIpv4 if value == SERVICE_IPV4_BASE => {
                Some("the network address of 10.30.0.0/16")
            }
            Self::ServiceIpv4 if value == SERVICE_IPV4_BASE + SERVICE_IPV4_SIZE - 1 => {
                Some("the broadcast address of 10.30.0.0/16")
            }
            Self::InstanceIpv6 if value == SERVICE_IPV6_BASE => {
                Some("the subnet-router anycast address of fdff::/16")
            }
            Self::InstanceIpv6 if (RR_IPV6_BASE..RR_IPV6_BASE + RR_IPV6_SIZE).contains(&value) => {
                Some("in the RR IPv6 range fdff:2000::/21, which only RR IPv6 addresses use")
            }
            Self::RrIpv6 if value == RR_IPV6_BASE => {
                Some("the subnet-router anycast address of fdff:2000::/21")
            }
            Self::ContainerIpv4 { subnet } => {
                match value.checked_sub(u128::from(subnet.base().to_bits())) {
                    Some(0) => Some("the network address of the worker subnet"),
                    Some(1) => Some("the bridge address of the worker subnet"),
                    Some(n) if n == u128::from(subnet.size()) - 1 => {
                        Some("the broadcast address of the worker subnet")
                    }
                    _ => None,
                }
            }
            Self::ContainerIpv6 { subnet } => match value.checked_sub(subnet.base().to_bits()) {
                Some(0) => Some("the subnet-router anycast address of the worker subnet"),
                Some(1) => Some("the bridge address of the worker subnet"),
                _ => None,
            },
            _ => None,
        }
    }

    /// The address space the pool lives in, as an inclusive range of values.
    fn space(self) -> (u128, u128) {
        match self {
            Self::ServiceIpv4 => (SERVICE_IPV4_BASE, SERVICE_IPV4_BASE + SERVICE_IPV4_SIZE - 1),
            Self::InstanceIpv6 => (SERVICE_IPV6_BASE, SERVICE_IPV6_BASE + SERVICE_IPV6_SIZE - 1),
            Self::RrIpv6 => (RR_IPV6_BASE, RR_IPV6_BASE + RR_IPV6_SIZE - 1),
            Self::WorkerSubnetIpv4 => (WORKER_V4_FIRST, WORKER_V4_END - 1),
            Self::WorkerSubnetIpv6 => (WORKER_V6_FIRST, WORKER_V6_END - 1),
            Self::ContainerIpv4 { subnet } => {
                let base = u128::from(subnet.base().to_bits());
                (base, base + u128::from(subnet.size()) - 1)
            }
            Self::ContainerIpv6 { subnet } => {
                let base = subnet.base().to_bits();
                (base, base + subnet.size() - 1)
            }
        }
    }

    /// The slot whose value is exactly `address`, or why there is none.
    pub(crate) fn slot_of(self, address: IpAddr) -> Result<u128, Misfit> {
        let g = self.geometry();
        let value = g.value(address).ok_or(Misfit::Outside)?;
        let (low, high) = self.space();
        if !(low..=high).contains(&value) {
            return Err(Misfit::Outside);
        }
        if let Some(reason) = self.exclusion(value) {
            return Err(Misfit::Excluded(reason));
        }
        let slot = g.slot_containing(value).ok_or(Misfit::Outside)?;
        if g.slot_value(slot) != value {
            return Err(Misfit::NotSubnetBase);
        }
        Ok(slot)
    }

    /// The slot that contains `address` (for subnet pools: any address inside the subnet).
    pub(crate) fn slot_containing(self, address: IpAddr) -> Option<u128> {
        let g = self.geometry();
        g.slot_containing(g.value(address)?)
    }
}

impl fmt::Display for PoolKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ServiceIpv4 => f.write_str("service IPv4"),
            Self::InstanceIpv6 => f.write_str("instance IPv6"),
            Self::RrIpv6 => f.write_str("RR IPv6"),
            Self::WorkerSubnetIpv4 => f.write_str("worker subnet IPv4"),
            Self::WorkerSubnetIpv6 => f.write_str("worker subnet IPv6"),
            Self::ContainerIpv4 { subnet } => write!(f, "container IPv4 of worker subnet {subnet}"),
            Self::ContainerIpv6 { subnet } => write!(f, "container IPv6 of worker subnet {subnet}"),
        }
    }
}

impl Geometry {
    pub(crate) fn capacity(&self) -> u128 {
        self.segments[0].count + self.segments[1].count
    }

    pub(crate) fn prefix_len(&self) -> u32 {
        if self.v6 {
            128 - self.shift
        } else {
            32 - self.shift
        }
    }

    /// The address value of slot `slot` (which must be below the capacity).
    pub(crate) fn slot_value(&self, slot: u128) -> u128 {
        let [a, b] = self.segments;
        if slot < a.count {
            a.first + (slot << self.shift)
        } else {
            b.first + ((slot - a.count) << self.shift)
        }
    }

    fn slot_containing(&self, value: u128) -> Option<u128> {
        let mut before = 0;
        for s in self.segments {
            if value >= s.first && (value - s.first) >> self.shift < s.count {
                return Some(before + ((value - s.first) >> self.shift));
            }
            before += s.count;
        }
        None
    }

    pub(crate) fn address(&self, value: u128) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from_bits(value))
        } else {
            // Values of IPv4 pools are built from u32 addresses, so they fit.
            IpAddr::V4(Ipv4Addr::from_bits(value as u32))
        }
    }

    fn value(&self, address: IpAddr) -> Option<u128> {
        match (address, self.v6) {
            (IpAddr::V4(a), false) => Some(u128::from(a.to_bits())),
            (IpAddr::V6(a), true) => Some(a.to_bits()),
            _ => None,
        }
    }

    pub(crate) fn slot_address(&self, slot: u128) -> IpAddr {
        self.address(self.slot_value(slot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacities_follow_from_the_plan() {
        assert_eq!(PoolKind::ServiceIpv4.geometry().capacity(), 65_534);
        assert_eq!(PoolKind::RrIpv6.geometry().capacity(), (1 << 107) - 1);
        assert_eq!(
            PoolKind::InstanceIpv6.geometry().capacity(),
            (1 << 112) - (1 << 107) - 1
        );
        // 12 /16s of /26s: 12 * 1024.
        assert_eq!(PoolKind::WorkerSubnetIpv4.geometry().capacity(), 12_288);
        // fc00:: up to (not including) fdfe:: is 0x1fe * 2^112 addresses, in /120s of 2^8.
        assert_eq!(
            PoolKind::WorkerSubnetIpv6.geometry().capacity(),
            0x1fe << 104
        );
    }

    #[test]
    fn instance_ipv6_slots_skip_the_rr_range() {
        let g = PoolKind::InstanceIpv6.geometry();
        let last_before_rr = RR_IPV6_BASE - SERVICE_IPV6_BASE - 2;
        assert_eq!(
            g.slot_address(last_before_rr),
            "fdff:1fff:ffff:ffff:ffff:ffff:ffff:ffff"
                .parse::<IpAddr>()
                .unwrap()
        );
        assert_eq!(
            g.slot_address(last_before_rr + 1),
            "fdff:2800::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            g.slot_address(g.capacity() - 1),
            "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
                .parse::<IpAddr>()
                .unwrap()
        );
        let probe = "fdff:2800::".parse().unwrap();
        assert_eq!(
            PoolKind::InstanceIpv6.slot_of(probe),
            Ok(last_before_rr + 1)
        );
    }

    #[test]
    fn slot_of_rejects_with_a_reason() {
        let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(PoolKind::ServiceIpv4.slot_of(v4("10.30.0.1")), Ok(0));
        assert!(matches!(
            PoolKind::ServiceIpv4.slot_of(v4("10.30.0.0")),
            Err(Misfit::Excluded(_))
        ));
        assert!(matches!(
            PoolKind::ServiceIpv4.slot_of(v4("10.30.255.255")),
            Err(Misfit::Excluded(_))
        ));
        assert_eq!(
            PoolKind::ServiceIpv4.slot_of(v4("10.31.0.1")),
            Err(Misfit::Outside)
        );
        assert_eq!(
            PoolKind::ServiceIpv4.slot_of(v4("fdff::1")),
            Err(Misfit::Outside)
        );
        assert_eq!(PoolKind::WorkerSubnetIpv4.slot_of(v4("10.18.0.64")), Ok(1));
        assert_eq!(
            PoolKind::WorkerSubnetIpv4.slot_of(v4("10.18.0.65")),
            Err(Misfit::NotSubnetBase)
        );
        assert_eq!(
            PoolKind::WorkerSubnetIpv4.slot_containing(v4("10.18.0.65")),
            Some(1)
        );
        assert!(matches!(
            PoolKind::InstanceIpv6.slot_of(v4("fdff:2000::9")),
            Err(Misfit::Excluded(_))
        ));
        assert!(matches!(
            PoolKind::RrIpv6.slot_of(v4("fdff:2000::")),
            Err(Misfit::Excluded(_))
        ));
        assert_eq!(
            PoolKind::RrIpv6.slot_of(v4("fdff:2800::")),
            Err(Misfit::Outside)
        );
    }
}
