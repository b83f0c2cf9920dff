//! Addresses inside one worker's subnets: the bridge and the containers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::error::IpamError;
use super::holder::Holder;
use super::plan::PoolKind;
use super::pool::Pool;
use super::subnet::WorkerSubnets;

/// The namespace addresses of one container on a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ContainerAddresses {
    /// In the worker's /26: base+2 … base+62.
    pub ipv4: Ipv4Addr,
    /// In the worker's /120: base+2 … base+0xff.
    pub ipv6: Ipv6Addr,
}

/// The container address pools of one worker (kept by the worker, persisted so that a restart
/// of the node keeps every running container's address).
///
/// The bridge has base+1 in both families; containers get base+2 upward. In the /26 that gives
/// 61 IPv4 addresses (base+63 is the broadcast address), in the /120 254 IPv6 addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WorkerAddressesState")]
pub struct WorkerAddresses {
    subnets: WorkerSubnets,
    ipv4: Pool,
    ipv6: Pool,
}

impl WorkerAddresses {
    /// Empty pools inside `subnets`.
    pub fn new(subnets: WorkerSubnets) -> Self {
        Self {
            subnets,
            ipv4: Pool::new(PoolKind::ContainerIpv4 {
                subnet: subnets.ipv4,
            }),
            ipv6: Pool::new(PoolKind::ContainerIpv6 {
                subnet: subnets.ipv6,
            }),
        }
    }

    /// The worker's subnets.
    pub fn subnets(&self) -> WorkerSubnets {
        self.subnets
    }

    /// The bridge's IPv4: base + 1.
    pub fn bridge_ipv4(&self) -> Ipv4Addr {
        self.subnets.ipv4.bridge()
    }

    /// The bridge's IPv6: base + 1.
    pub fn bridge_ipv6(&self) -> Ipv6Addr {
        self.subnets.ipv6.bridge()
    }

    /// The IPv4 container pool.
    pub fn ipv4_pool(&self) -> &Pool {
        &self.ipv4
    }

    /// The IPv4 container pool, for single-pool operations.
    pub fn ipv4_pool_mut(&mut self) -> &mut Pool {
        &mut self.ipv4
    }

    /// The IPv6 container pool.
    pub fn ipv6_pool(&self) -> &Pool {
        &self.ipv6
    }

    /// The IPv6 container pool, for single-pool operations.
    pub fn ipv6_pool_mut(&mut self) -> &mut Pool {
        &mut self.ipv6
    }

    /// Gives a container (named by `holder`, normally its instance) one IPv4 and one IPv6; the
    /// same ones again if it holds them. On failure nothing changes.
    pub fn assign(&mut self, holder: &Holder) -> Result<ContainerAddresses, IpamError> {
        self.ipv4.check_allocate(holder)?;
        self.ipv6.check_allocate(holder)?;
        let ipv4 = self.ipv4.allocate(holder.clone())?;
        let ipv6 = self.ipv6.allocate(holder.clone())?;
        match (ipv4, ipv6) {
            (IpAddr::V4(ipv4), IpAddr::V6(ipv6)) => Ok(ContainerAddresses { ipv4, ipv6 }),
            _ => unreachable!("container pools never mix families"),
        }
    }

    /// Releases the container addresses of `holder`.
    pub fn release(&mut self, holder: &Holder) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
        let v4 = self.ipv4.release_holder(holder).and_then(|a| match a {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        });
        let v6 = self.ipv6.release_holder(holder).and_then(|a| match a {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        });
        (v4, v6)
    }

    /// Who holds container address `address`.
    pub fn holder_of(&self, address: IpAddr) -> Option<&Holder> {
        self.ipv4
            .holder_of(address)
            .or_else(|| self.ipv6.holder_of(address))
    }

    #[cfg(test)]
    pub(crate) fn assert_consistent(&self) {
        self.ipv4.assert_consistent();
        self.ipv6.assert_consistent();
    }
}

#[derive(Deserialize)]
struct WorkerAddressesState {
    subnets: WorkerSubnets,
    ipv4: Pool,
    ipv6: Pool,
}

impl TryFrom<WorkerAddressesState> for WorkerAddresses {
    type Error = IpamError;

    fn try_from(state: WorkerAddressesState) -> Result<Self, Self::Error> {
        let expect_v4 = PoolKind::ContainerIpv4 {
            subnet: state.subnets.ipv4,
        };
        let expect_v6 = PoolKind::ContainerIpv6 {
            subnet: state.subnets.ipv6,
        };
        for (pool, expected) in [(&state.ipv4, expect_v4), (&state.ipv6, expect_v6)] {
            if pool.kind() != expected {
                return Err(IpamError::CorruptState {
                    pool: expected,
                    detail: format!("the field holds a {} pool instead", pool.kind()),
                });
            }
        }
        Ok(Self {
            subnets: state.subnets,
            ipv4: state.ipv4,
            ipv6: state.ipv6,
        })
    }
}
