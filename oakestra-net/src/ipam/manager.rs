//! The root's address manager: every pool the control plane hands addresses from.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::error::IpamError;
use super::holder::Holder;
use super::plan::{PoolKind, WORKER_SUBNET_IPV4_PREFIX_LEN, WORKER_SUBNET_IPV6_PREFIX_LEN};
use super::pool::Pool;
use super::subnet::{Ipv4Subnet, Ipv6Subnet, WorkerSubnets, check_worker_prefix_len, slots_for};

/// The pools of the [`AddressManager`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RootPool {
    /// RR IPv4 of services and IPv4 of instances (one shared pool, as in Oakestra).
    ServiceIpv4,
    /// IPv6 of instances.
    InstanceIpv6,
    /// RR IPv6 of services.
    RrIpv6,
    /// One IPv4 subnet per worker (a /26 by default).
    WorkerSubnetIpv4,
    /// One IPv6 subnet per worker (a /120 by default).
    WorkerSubnetIpv6,
}

impl RootPool {
    /// Every pool, in a fixed order.
    pub const ALL: [Self; 5] = [
        Self::ServiceIpv4,
        Self::InstanceIpv6,
        Self::RrIpv6,
        Self::WorkerSubnetIpv4,
        Self::WorkerSubnetIpv6,
    ];

    /// The pool's kind.
    pub fn kind(self) -> PoolKind {
        match self {
            Self::ServiceIpv4 => PoolKind::ServiceIpv4,
            Self::InstanceIpv6 => PoolKind::InstanceIpv6,
            Self::RrIpv6 => PoolKind::RrIpv6,
            Self::WorkerSubnetIpv4 => PoolKind::WorkerSubnetIpv4,
            Self::WorkerSubnetIpv6 => PoolKind::WorkerSubnetIpv6,
        }
    }
}

/// The RR addresses of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceAddresses {
    /// RR IPv4, in 10.30.0.0/16.
    pub rr_ipv4: Ipv4Addr,
    /// RR IPv6, in fdff:2000::/21.
    pub rr_ipv6: Ipv6Addr,
}

/// What a service asks for: user-given addresses (`None`: allocate one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceIpRequest {
    /// `rr_ip`.
    pub rr_ip: Option<Ipv4Addr>,
    /// `rr_ip_v6`.
    pub rr_ip_v6: Option<Ipv6Addr>,
    /// `closest_ip`.
    pub closest_ip: Option<Ipv4Addr>,
    /// `closest_ip_v6`.
    pub closest_ip_v6: Option<Ipv6Addr>,
}

/// Every service IP of a service: the round-robin pair and the closest pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceIps {
    /// RR IPv4, in 10.30.0.0/16.
    pub rr_ipv4: Ipv4Addr,
    /// RR IPv6, in fdff:2000::/21.
    pub rr_ipv6: Ipv6Addr,
    /// Closest IPv4, from the same pool as the RR IPv4.
    pub closest_ipv4: Ipv4Addr,
    /// Closest IPv6, from the same pool as the RR IPv6.
    pub closest_ipv6: Ipv6Addr,
}

/// The addresses of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InstanceAddresses {
    /// Instance IPv4, in 10.30.0.0/16.
    pub ipv4: Ipv4Addr,
    /// Instance IPv6, in fdff::/16 outside the RR range.
    pub ipv6: Ipv6Addr,
}

/// All addresses the control plane hands out, as one plain value.
///
/// The store keeps it and the caller makes each change atomic: load the state, call one method,
/// write the state back, all in one store transaction (see the crate README). Every method that
/// fails leaves the state unchanged, including the two-pool methods (`assign_*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "AddressManagerState")]
pub struct AddressManager {
    service_ipv4: Pool,
    instance_ipv6: Pool,
    rr_ipv6: Pool,
    worker_subnet_ipv4: Pool,
    worker_subnet_ipv6: Pool,
}

/// How a two-pool method gets each address.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// The holder's current address, or the next free one.
    Any,
    /// A user-given address of `field`.
    Given {
        field: &'static str,
        address: IpAddr,
    },
}

impl Want {
    fn new(field: &'static str, address: Option<impl Into<IpAddr>>) -> Self {
        address.map_or(Self::Any, |a| Self::Given {
            field,
            address: a.into(),
        })
    }
}

impl Default for AddressManager {
    fn default() -> Self {
        Self::new()
    }
}

impl AddressManager {
    /// Every pool empty.
    pub fn new() -> Self {
        Self {
            service_ipv4: Pool::new(PoolKind::ServiceIpv4),
            instance_ipv6: Pool::new(PoolKind::InstanceIpv6),
            rr_ipv6: Pool::new(PoolKind::RrIpv6),
            worker_subnet_ipv4: Pool::new(PoolKind::WorkerSubnetIpv4),
            worker_subnet_ipv6: Pool::new(PoolKind::WorkerSubnetIpv6),
        }
    }

    /// One pool, for lookups.
    pub fn pool(&self, pool: RootPool) -> &Pool {
        match pool {
            RootPool::ServiceIpv4 => &self.service_ipv4,
            RootPool::InstanceIpv6 => &self.instance_ipv6,
            RootPool::RrIpv6 => &self.rr_ipv6,
            RootPool::WorkerSubnetIpv4 => &self.worker_subnet_ipv4,
            RootPool::WorkerSubnetIpv6 => &self.worker_subnet_ipv6,
        }
    }

    /// One pool, for single-pool operations (allocate, reserve, release).
    pub fn pool_mut(&mut self, pool: RootPool) -> &mut Pool {
        match pool {
            RootPool::ServiceIpv4 => &mut self.service_ipv4,
            RootPool::InstanceIpv6 => &mut self.instance_ipv6,
            RootPool::RrIpv6 => &mut self.rr_ipv6,
            RootPool::WorkerSubnetIpv4 => &mut self.worker_subnet_ipv4,
            RootPool::WorkerSubnetIpv6 => &mut self.worker_subnet_ipv6,
        }
    }

    /// Who holds `address`, and in which pool. Any address inside a worker subnet names the worker.
    pub fn holder_of(&self, address: IpAddr) -> Option<(RootPool, &Holder)> {
        RootPool::ALL.into_iter().find_map(|pool| {
            self.pool(pool)
                .holder_of(address)
                .map(|holder| (pool, holder))
        })
    }

    /// Gives service `job_name` its RR IPv4 and RR IPv6. A user-given `rr_ip` / `rr_ip_v6` is
    /// validated (it parses and lies in 10.30.0.0/16 resp. fdff:2000::/21, and is not held by
    /// anyone else) and reserved; otherwise the next free address is allocated. Calling it again
    /// for the same service returns the same addresses (a re-deploy). Takes the addresses as a
    /// user wrote them; [`Self::assign_service_ips`] takes typed ones.
    pub fn assign_service(
        &mut self,
        job_name: &str,
        rr_ip: Option<&str>,
        rr_ip_v6: Option<&str>,
    ) -> Result<ServiceAddresses, IpamError> {
        let parse = |pool: RootPool, field: &str, text: Option<&str>| {
            text.map(|t| self.pool(pool).parse(field, t)).transpose()
        };
        let rr_ip = parse(RootPool::ServiceIpv4, "rr_ip", rr_ip)?;
        let rr_ip_v6 = parse(RootPool::RrIpv6, "rr_ip_v6", rr_ip_v6)?;
        let holder = Holder::service(job_name);
        let (v4, v6) = self.assign_pair(
            RootPool::ServiceIpv4,
            Want::new("rr_ip", rr_ip),
            RootPool::RrIpv6,
            Want::new("rr_ip_v6", rr_ip_v6),
            &holder,
        )?;
        Ok(ServiceAddresses {
            rr_ipv4: as_v4(v4),
            rr_ipv6: as_v6(v6),
        })
    }

    /// Gives service `job_name` its RR **and** closest addresses, all or nothing. Each
    /// user-given address is validated like a user-given `rr_ip` (lies in the pool, held by no
    /// one else, not given twice in the request) and reserved **before** anything is
    /// allocated, so a given address never collides with one allocated in the same call. The
    /// closest IPs are held by [`Holder::Closest`]. Calling it again for the same service
    /// returns the same addresses.
    pub fn assign_service_ips(
        &mut self,
        job_name: &str,
        request: ServiceIpRequest,
    ) -> Result<ServiceIps, IpamError> {
        let [Some(a), Some(b), Some(c), Some(d)] = self.service_ips(job_name, request, true)?
        else {
            unreachable!("with allocation every address is applied")
        };
        Ok(ServiceIps {
            rr_ipv4: as_v4(a),
            rr_ipv6: as_v6(b),
            closest_ipv4: as_v4(c),
            closest_ipv6: as_v6(d),
        })
    }

    /// Reserves only the user-given addresses of `request` for service `job_name` (checked as
    /// in [`Self::assign_service_ips`], all or nothing) and allocates nothing. A caller that
    /// assigns several services at once reserves every service's given addresses first, so
    /// that no service's allocation takes an address another one asks for.
    pub fn reserve_given_service_ips(
        &mut self,
        job_name: &str,
        request: ServiceIpRequest,
    ) -> Result<(), IpamError> {
        self.service_ips(job_name, request, false).map(|_| ())
    }

    /// The addresses of a service's four slots (rr v4, rr v6, closest v4, closest v6): the
    /// given ones reserved, the others allocated when `allocate` (else left out).
    fn service_ips(
        &mut self,
        job_name: &str,
        request: ServiceIpRequest,
        allocate: bool,
    ) -> Result<[Option<IpAddr>; 4], IpamError> {
        let rr = Holder::service(job_name);
        let closest = Holder::closest(job_name);
        let wants = [
            (
                RootPool::ServiceIpv4,
                Want::new("rr_ip", request.rr_ip),
                &rr,
            ),
            (
                RootPool::RrIpv6,
                Want::new("rr_ip_v6", request.rr_ip_v6),
                &rr,
            ),
            (
                RootPool::ServiceIpv4,
                Want::new("closest_ip", request.closest_ip),
                &closest,
            ),
            (
                RootPool::RrIpv6,
                Want::new("closest_ip_v6", request.closest_ip_v6),
                &closest,
            ),
        ];
        let wanted = |k: usize| allocate || matches!(wants[k].1, Want::Given { .. });
        // Check everything first: each address on its own, then the pairs sharing a pool.
        let mut given = [None; 4];
        for (k, (pool, want, holder)) in wants.iter().enumerate() {
            if wanted(k) {
                given[k] = self.check(*pool, *want, holder)?;
            }
        }
        for (a, b) in [(0, 2), (1, 3)] {
            if let (Some(x), Some(y)) = (given[a], given[b])
                && x == y
            {
                let field = |k: usize| match wants[k].1 {
                    Want::Given { field, .. } => field.to_owned(),
                    Want::Any => String::new(),
                };
                return Err(IpamError::GivenTwice {
                    first: field(a),
                    second: field(b),
                    address: x,
                });
            }
        }
        for pool in [RootPool::ServiceIpv4, RootPool::RrIpv6] {
            let new_slots = (0..4)
                .filter(|k| wanted(*k))
                .filter(|k| {
                    wants[*k].0 == pool && self.pool(pool).address_of(wants[*k].2).is_none()
                })
                .count();
            self.pool(pool).check_room(new_slots)?;
        }
        // Given addresses first, then allocations (which step over them). After the checks
        // none of these can fail.
        let mut out = [None; 4];
        let order = (0..4)
            .filter(|k| given[*k].is_some())
            .chain((0..4).filter(|k| given[*k].is_none() && wanted(*k)));
        for k in order {
            let (pool, _, holder) = wants[k];
            out[k] = Some(self.apply(pool, given[k], holder)?);
        }
        Ok(out)
    }

    /// Releases the closest addresses of service `job_name` (those it held).
    pub fn release_closest(&mut self, job_name: &str) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
        let holder = Holder::closest(job_name);
        self.release_pair(RootPool::ServiceIpv4, RootPool::RrIpv6, &holder)
    }

    /// Releases the RR addresses of service `job_name` (those it held).
    pub fn release_service(&mut self, job_name: &str) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
        let holder = Holder::service(job_name);
        self.release_pair(RootPool::ServiceIpv4, RootPool::RrIpv6, &holder)
    }

    /// Gives instance `number` of service `job_name` its IPv4 and IPv6 (the same ones again if
    /// it already holds them).
    pub fn assign_instance(
        &mut self,
        job_name: &str,
        number: u32,
    ) -> Result<InstanceAddresses, IpamError> {
        let holder = Holder::instance(job_name, number);
        let (v4, v6) = self.assign_pair(
            RootPool::ServiceIpv4,
            Want::Any,
            RootPool::InstanceIpv6,
            Want::Any,
            &holder,
        )?;
        Ok(InstanceAddresses {
            ipv4: as_v4(v4),
            ipv6: as_v6(v6),
        })
    }

    /// Releases the addresses of instance `number` of service `job_name`.
    pub fn release_instance(
        &mut self,
        job_name: &str,
        number: u32,
    ) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
        let holder = Holder::instance(job_name, number);
        self.release_pair(RootPool::ServiceIpv4, RootPool::InstanceIpv6, &holder)
    }

    /// Gives worker `worker_id` its IPv4 /26 and IPv6 /120 (Oakestra's size). A worker that
    /// registers again with the same id while it still holds them gets the same subnets back.
    pub fn assign_worker(&mut self, worker_id: &str) -> Result<WorkerSubnets, IpamError> {
        self.assign_worker_sized(worker_id, WORKER_SUBNET_IPV4_PREFIX_LEN)
    }

    /// Gives worker `worker_id` an IPv4 subnet of `prefix_len` (22 … 26) and the IPv6 subnet of
    /// the same number of /120 slots (/116 … /120), each aligned to its size. A worker that
    /// still holds subnets gets them back unchanged, whatever their size: the size applies to
    /// workers that get their subnets after it changed. On failure nothing changes.
    pub fn assign_worker_sized(
        &mut self,
        worker_id: &str,
        prefix_len: u8,
    ) -> Result<WorkerSubnets, IpamError> {
        check_worker_prefix_len(prefix_len)?;
        let holder = Holder::worker(worker_id);
        // A worker that holds a subnet in one family keeps its size in the other too.
        let count = self
            .worker_subnet_ipv4
            .span_of(&holder)
            .or_else(|| self.worker_subnet_ipv6.span_of(&holder))
            .map_or(slots_for(prefix_len), |(_, n)| n);
        self.worker_subnet_ipv4
            .check_allocate_span(&holder, count)?;
        self.worker_subnet_ipv6
            .check_allocate_span(&holder, count)?;
        self.worker_subnet_ipv4
            .allocate_span(holder.clone(), count)?;
        self.worker_subnet_ipv6.allocate_span(holder, count)?;
        // The pools hand out only valid, aligned worker subnet bases, so this cannot fail.
        self.worker_subnets(worker_id)
            .ok_or_else(|| IpamError::CorruptState {
                pool: PoolKind::WorkerSubnetIpv4,
                detail: format!(
                    "worker {worker_id} holds an IPv4 and an IPv6 subnet of different sizes"
                ),
            })
    }

    /// The subnets worker `worker_id` holds, if it holds both (of the same size).
    pub fn worker_subnets(&self, worker_id: &str) -> Option<WorkerSubnets> {
        let holder = Holder::worker(worker_id);
        let (v4, n4) = self.worker_subnet_ipv4.span_of(&holder)?;
        let (v6, n6) = self.worker_subnet_ipv6.span_of(&holder)?;
        let v4 = subnet_v4(v4, n4)?;
        let v6 = subnet_v6(v6, n6)?;
        (n4 == n6).then_some(WorkerSubnets { ipv4: v4, ipv6: v6 })
    }

    /// Releases the subnets of worker `worker_id` (when it is removed for good).
    pub fn release_worker(&mut self, worker_id: &str) -> (Option<Ipv4Subnet>, Option<Ipv6Subnet>) {
        let holder = Holder::worker(worker_id);
        let v4 = self.worker_subnet_ipv4.span_of(&holder);
        let v6 = self.worker_subnet_ipv6.span_of(&holder);
        self.release_pair(
            RootPool::WorkerSubnetIpv4,
            RootPool::WorkerSubnetIpv6,
            &holder,
        );
        (
            v4.and_then(|(a, n)| subnet_v4(a, n)),
            v6.and_then(|(a, n)| subnet_v6(a, n)),
        )
    }

    /// Checks both pools first, then changes them, so a failure changes nothing.
    fn assign_pair(
        &mut self,
        first: RootPool,
        first_want: Want,
        second: RootPool,
        second_want: Want,
        holder: &Holder,
    ) -> Result<(IpAddr, IpAddr), IpamError> {
        let first_given = self.check(first, first_want, holder)?;
        let second_given = self.check(second, second_want, holder)?;
        let a = self.apply(first, first_given, holder)?;
        let b = self.apply(second, second_given, holder)?;
        Ok((a, b))
    }

    fn check(
        &self,
        pool: RootPool,
        want: Want,
        holder: &Holder,
    ) -> Result<Option<IpAddr>, IpamError> {
        let pool = self.pool(pool);
        match want {
            Want::Any => pool.check_allocate(holder).map(|()| None),
            Want::Given { field, address } => {
                pool.check_reserve(holder, address, field)?;
                Ok(Some(address))
            }
        }
    }

    fn apply(
        &mut self,
        pool: RootPool,
        given: Option<IpAddr>,
        holder: &Holder,
    ) -> Result<IpAddr, IpamError> {
        let pool = self.pool_mut(pool);
        match given {
            None => pool.allocate(holder.clone()),
            Some(address) => pool.reserve(holder.clone(), address).map(|()| address),
        }
    }

    fn release_pair(
        &mut self,
        v4: RootPool,
        v6: RootPool,
        holder: &Holder,
    ) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
        let a = self.pool_mut(v4).release_holder(holder).map(as_v4);
        let b = self.pool_mut(v6).release_holder(holder).map(as_v6);
        (a, b)
    }

    #[cfg(test)]
    pub(crate) fn assert_consistent(&self) {
        for pool in RootPool::ALL {
            self.pool(pool).assert_consistent();
        }
    }
}

/// The IPv4 worker subnet of `slots` /26 slots starting at `base`.
fn subnet_v4(base: IpAddr, slots: u128) -> Option<Ipv4Subnet> {
    let prefix = WORKER_SUBNET_IPV4_PREFIX_LEN.checked_sub(u8::try_from(slots.ilog2()).ok()?)?;
    Ipv4Subnet::with_prefix(as_v4(base), prefix).ok()
}

/// The IPv6 worker subnet of `slots` /120 slots starting at `base`.
fn subnet_v6(base: IpAddr, slots: u128) -> Option<Ipv6Subnet> {
    let prefix = WORKER_SUBNET_IPV6_PREFIX_LEN.checked_sub(u8::try_from(slots.ilog2()).ok()?)?;
    Ipv6Subnet::with_prefix(as_v6(base), prefix).ok()
}

/// The address of an IPv4 pool. Pools never mix families, so the other arm cannot happen.
fn as_v4(address: IpAddr) -> Ipv4Addr {
    match address {
        IpAddr::V4(a) => a,
        IpAddr::V6(a) => unreachable!("IPv4 pool returned {a}"),
    }
}

/// The address of an IPv6 pool.
fn as_v6(address: IpAddr) -> Ipv6Addr {
    match address {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => unreachable!("IPv6 pool returned {a}"),
    }
}

/// The persisted form; each pool is checked on its own, then that it sits in the right field.
#[derive(Deserialize)]
struct AddressManagerState {
    service_ipv4: Pool,
    instance_ipv6: Pool,
    rr_ipv6: Pool,
    worker_subnet_ipv4: Pool,
    worker_subnet_ipv6: Pool,
}

impl TryFrom<AddressManagerState> for AddressManager {
    type Error = IpamError;

    fn try_from(state: AddressManagerState) -> Result<Self, Self::Error> {
        let manager = Self {
            service_ipv4: state.service_ipv4,
            instance_ipv6: state.instance_ipv6,
            rr_ipv6: state.rr_ipv6,
            worker_subnet_ipv4: state.worker_subnet_ipv4,
            worker_subnet_ipv6: state.worker_subnet_ipv6,
        };
        for pool in RootPool::ALL {
            let found = manager.pool(pool).kind();
            if found != pool.kind() {
                return Err(IpamError::CorruptState {
                    pool: pool.kind(),
                    detail: format!("the field holds a {found} pool instead"),
                });
            }
        }
        Ok(manager)
    }
}
