//! Pure IP address management: every address the platform hands out.
//!
//! The plan (Oakestra's, see `DESIGN.md` §4.5), with the addresses that are never handed out:
//!
//! | pool | space | handed out | first |
//! |---|---|---|---|
//! | [`PoolKind::ServiceIpv4`] (RR + instance IPv4) | `10.30.0.0/16` | all but `.0.0` and `.255.255` | `10.30.0.1` |
//! | [`PoolKind::InstanceIpv6`] | `fdff::/16` | all but `fdff::` and the RR range | `fdff::1` |
//! | [`PoolKind::RrIpv6`] | `fdff:2000::/21` | all but `fdff:2000::` | `fdff:2000::1` |
//! | [`PoolKind::WorkerSubnetIpv4`] | `10.18.0.0`–`10.29.255.255` | 12 288 /26 slots | `10.18.0.0/26` |
//! | [`PoolKind::WorkerSubnetIpv6`] | `fc00::` up to `fdfe::` | 0x1fe·2^104 /120 slots | `fc00::/120` |
//! | [`PoolKind::ContainerIpv4`] | a worker /26 (/22–/26) | base+2 … base+62 (61; 253 in a /24) | `10.18.0.2` |
//! | [`PoolKind::ContainerIpv6`] | a worker /120 (/116–/120) | base+2 … base+0xff (254) | `fc00::2` |
//!
//! A worker's subnet is a /26 and a /120 by default (Oakestra's); with
//! [`AddressManager::assign_worker_sized`] it is a /P (22 ≤ P ≤ 26), the aligned run of 2^(26−P)
//! /26 slots, and an IPv6 /(P+94) of as many /120 slots.
//!
//! The bridge of a worker is base+1 in both families.
//!
//! The state ([`AddressManager`] at the root, [`WorkerAddresses`] on a worker) is a plain serde
//! value: a store loads it, calls one method and writes it back in one transaction. Only held
//! addresses and a cursor are persisted; loading rebuilds and checks every index, so a restart
//! cannot hand out an address twice.

mod error;
mod holder;
mod manager;
mod plan;
mod pool;
mod slots;
mod subnet;
mod worker;

#[cfg(test)]
mod size_tests;
#[cfg(test)]
mod tests;

pub use error::IpamError;
pub use holder::{Holder, HolderKeyError};
pub use manager::{
    AddressManager, InstanceAddresses, RootPool, ServiceAddresses, ServiceIpRequest, ServiceIps,
};
pub use plan::{
    PoolKind, RR_IPV6_NET, RR_IPV6_PREFIX_LEN, SERVICE_IPV4_NET, SERVICE_IPV4_PREFIX_LEN,
    SERVICE_IPV6_NET, SERVICE_IPV6_PREFIX_LEN, WORKER_SUBNET_IPV4_PREFIX_LEN,
    WORKER_SUBNET_IPV6_PREFIX_LEN, WORKER_SUBNETS_IPV4_FIRST, WORKER_SUBNETS_IPV4_LAST,
    WORKER_SUBNETS_IPV6_END, WORKER_SUBNETS_IPV6_FIRST,
};
pub use pool::Pool;
pub use subnet::{
    Ipv4Subnet, Ipv6Subnet, WORKER_SUBNET_IPV4_MIN_PREFIX_LEN, WorkerSubnets,
    check_worker_prefix_len, worker_ipv6_prefix_len,
};
pub use worker::{ContainerAddresses, WorkerAddresses};
