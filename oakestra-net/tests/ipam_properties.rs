//! Properties of the address manager under arbitrary sequences of operations:
//! - no address is ever held twice, and the pools hold exactly what a simple model says;
//! - every release makes the address available again;
//! - serialising and deserialising the state in the middle changes nothing: a twin that goes
//!   through serde_json gives identical results to one that never does.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use oakestra_net::ipam::{AddressManager, Holder, IpamError, RootPool, WorkerAddresses};
use proptest::prelude::*;

/// A small window of candidate addresses per pool (including excluded and misaligned ones), so
/// that reservations collide with allocations often.
fn candidate(pool: RootPool, n: u8) -> IpAddr {
    let n = u32::from(n);
    match pool {
        RootPool::ServiceIpv4 => IpAddr::V4(Ipv4Addr::from_bits(
            u32::from(Ipv4Addr::new(10, 30, 0, 0)) + n,
        )),
        RootPool::InstanceIpv6 => IpAddr::V6(Ipv6Addr::from_bits((0xfdff << 112) + u128::from(n))),
        RootPool::RrIpv6 => IpAddr::V6(Ipv6Addr::from_bits((0xfdff2000 << 96) + u128::from(n))),
        // Every third candidate is not a subnet base.
        RootPool::WorkerSubnetIpv4 => IpAddr::V4(Ipv4Addr::from_bits(
            u32::from(Ipv4Addr::new(10, 18, 0, 0)) + n / 3 * 64 + u32::from(n % 3 == 2),
        )),
        RootPool::WorkerSubnetIpv6 => IpAddr::V6(Ipv6Addr::from_bits(
            (0xfc00 << 112) + u128::from(n / 3 * 256 + u32::from(n % 3 == 2)),
        )),
    }
}

fn holder(n: u8) -> Holder {
    match n % 3 {
        0 => Holder::service(format!("app.ns.s{}.ns", n / 3)),
        1 => Holder::instance("app.ns.svc.ns", u32::from(n / 3)),
        _ => Holder::worker(format!("w{}", n / 3)),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Allocate {
        pool: usize,
        holder: u8,
    },
    Reserve {
        pool: usize,
        holder: u8,
        address: u8,
    },
    Release {
        pool: usize,
        address: u8,
    },
    ReleaseHolder {
        pool: usize,
        holder: u8,
    },
    AssignService {
        service: u8,
        rr_ip: Option<u8>,
        rr_ip_v6: Option<u8>,
    },
    AssignInstance {
        number: u8,
    },
    AssignWorker {
        worker: u8,
        /// 22–26: the root's --worker-subnet-prefix at the time.
        prefix_len: u8,
    },
    ReleaseService {
        service: u8,
    },
    ReleaseInstance {
        number: u8,
    },
    ReleaseWorker {
        worker: u8,
    },
    RoundTrip,
}

fn op() -> impl Strategy<Value = Op> {
    let pool = 0..RootPool::ALL.len();
    let small = 0u8..24;
    prop_oneof![
        4 => (pool.clone(), small.clone()).prop_map(|(pool, holder)| Op::Allocate { pool, holder }),
        4 => (pool.clone(), small.clone(), small.clone())
            .prop_map(|(pool, holder, address)| Op::Reserve { pool, holder, address }),
        3 => (pool.clone(), small.clone()).prop_map(|(pool, address)| Op::Release { pool, address }),
        2 => (pool, small.clone()).prop_map(|(pool, holder)| Op::ReleaseHolder { pool, holder }),
        2 => (0u8..8, proptest::option::of(0u8..24), proptest::option::of(0u8..24))
            .prop_map(|(service, rr_ip, rr_ip_v6)| Op::AssignService { service, rr_ip, rr_ip_v6 }),
        2 => (0u8..8).prop_map(|number| Op::AssignInstance { number }),
        2 => (0u8..8, prop_oneof![3 => Just(26u8), 1 => 22u8..26])
            .prop_map(|(worker, prefix_len)| Op::AssignWorker { worker, prefix_len }),
        1 => (0u8..8).prop_map(|service| Op::ReleaseService { service }),
        1 => (0u8..8).prop_map(|number| Op::ReleaseInstance { number }),
        1 => (0u8..8).prop_map(|worker| Op::ReleaseWorker { worker }),
        1 => Just(Op::RoundTrip),
    ]
}

/// What an operation returned, comparable between the twins.
type Outcome = Result<String, IpamError>;

fn apply(ipam: &mut AddressManager, op: &Op) -> Outcome {
    let job = |n: u8| format!("app.ns.s{n}.ns");
    let text = |pool, n| candidate(pool, n).to_string();
    match *op {
        Op::Allocate { pool, holder: h } => ipam
            .pool_mut(RootPool::ALL[pool])
            .allocate(holder(h))
            .map(|a| a.to_string()),
        Op::Reserve {
            pool,
            holder: h,
            address,
        } => {
            let pool = RootPool::ALL[pool];
            ipam.pool_mut(pool)
                .reserve(holder(h), candidate(pool, address))
                .map(|()| String::new())
        }
        Op::Release { pool, address } => {
            let pool = RootPool::ALL[pool];
            Ok(format!(
                "{:?}",
                ipam.pool_mut(pool).release(candidate(pool, address))
            ))
        }
        Op::ReleaseHolder { pool, holder: h } => Ok(format!(
            "{:?}",
            ipam.pool_mut(RootPool::ALL[pool])
                .release_holder(&holder(h))
        )),
        Op::AssignService {
            service,
            rr_ip,
            rr_ip_v6,
        } => {
            let rr_ip = rr_ip.map(|n| text(RootPool::ServiceIpv4, n));
            let rr_ip_v6 = rr_ip_v6.map(|n| text(RootPool::RrIpv6, n));
            ipam.assign_service(&job(service), rr_ip.as_deref(), rr_ip_v6.as_deref())
                .map(|a| format!("{a:?}"))
        }
        Op::AssignInstance { number } => ipam
            .assign_instance("app.ns.svc.ns", u32::from(number))
            .map(|a| format!("{a:?}")),
        Op::AssignWorker { worker, prefix_len } => ipam
            .assign_worker_sized(&format!("w{worker}"), prefix_len)
            .map(|a| format!("{a:?}")),
        Op::ReleaseService { service } => Ok(format!("{:?}", ipam.release_service(&job(service)))),
        Op::ReleaseInstance { number } => Ok(format!(
            "{:?}",
            ipam.release_instance("app.ns.svc.ns", u32::from(number))
        )),
        Op::ReleaseWorker { worker } => {
            Ok(format!("{:?}", ipam.release_worker(&format!("w{worker}"))))
        }
        Op::RoundTrip => Ok(String::new()),
    }
}

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(value: &T) -> T {
    serde_json::from_str(&serde_json::to_string(value).unwrap()).unwrap()
}

/// Everything held, per pool, read back through the public API.
fn holdings(ipam: &AddressManager) -> Vec<BTreeMap<IpAddr, Holder>> {
    RootPool::ALL
        .iter()
        .map(|&pool| {
            ipam.pool(pool)
                .iter()
                .map(|(a, h)| (a, h.clone()))
                .collect()
        })
        .collect()
}

fn check_invariants(ipam: &AddressManager) -> Result<(), TestCaseError> {
    for pool in RootPool::ALL {
        let p = ipam.pool(pool);
        let mut seen_holders = BTreeMap::new();
        let mut count = 0;
        for (address, h) in p.iter() {
            count += 1;
            // One address per holder and pool, and both lookups agree.
            prop_assert!(
                seen_holders.insert(h.clone(), address).is_none(),
                "{h} holds two addresses"
            );
            prop_assert_eq!(p.holder_of(address), Some(h));
            prop_assert_eq!(p.address_of(h), Some(address));
            prop_assert_eq!(ipam.holder_of(address), Some((pool, h)));
        }
        prop_assert_eq!(count, p.len());
        if pool == RootPool::WorkerSubnetIpv4 || pool == RootPool::WorkerSubnetIpv6 {
            // Worker subnets of any size never overlap: the address after each one's last slot
            // is not inside it, and the next held base lies at or beyond that end.
            let mut ends: Vec<(u128, u128)> = p
                .iter()
                .map(|(a, h)| {
                    let (_, slots) = p.span_of(h).unwrap();
                    let (value, width) = match a {
                        IpAddr::V4(v) => (u128::from(v.to_bits()), 64),
                        IpAddr::V6(v) => (v.to_bits(), 256),
                    };
                    prop_assert_eq!(value % (slots * width), 0, "{} is aligned to its size", a);
                    Ok((value, value + slots * width))
                })
                .collect::<Result<_, TestCaseError>>()?;
            ends.sort();
            for w in ends.windows(2) {
                prop_assert!(w[0].1 <= w[1].0, "worker subnets overlap: {:?}", w);
            }
        }
        // The next address handed out is never a held one.
        if let Some(next) = p.next_available() {
            prop_assert_eq!(p.holder_of(next), None);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn operations_never_double_allocate_and_survive_serde(ops in proptest::collection::vec(op(), 1..120)) {
        let mut plain = AddressManager::new();
        let mut persisted = AddressManager::new();
        for op in &ops {
            let before = holdings(&plain);
            let outcome = apply(&mut plain, op);
            if matches!(op, Op::RoundTrip) {
                persisted = round_trip(&persisted);
            }
            let twin_outcome = apply(&mut persisted, op);
            prop_assert_eq!(&outcome, &twin_outcome, "twins diverged at {:?}", op);
            prop_assert_eq!(&plain, &persisted);
            check_invariants(&plain)?;

            let after = holdings(&plain);
            if outcome.is_err() {
                prop_assert_eq!(&before, &after, "a failed {:?} changed the state", op);
            }
            // No held address changed hands without being released first.
            for (index, (pool_before, pool_after)) in before.iter().zip(&after).enumerate() {
                let pool = RootPool::ALL[index];
                for (address, h) in pool_after {
                    if let Some(old) = pool_before.get(address) {
                        prop_assert_eq!(old, h, "{} changed holder", address);
                    }
                }
                // Every address released by this step can be reserved again at once.
                for address in pool_before.keys().filter(|a| !pool_after.contains_key(a)) {
                    let mut probe = plain.clone();
                    let reserved = probe.pool_mut(pool).reserve(Holder::service("probe"), *address);
                    prop_assert!(reserved.is_ok(), "{} was released but cannot be reserved: {:?}", address, reserved);
                }
            }
        }
        // And a final round trip of the whole state is lossless.
        prop_assert_eq!(round_trip(&plain), plain);
    }
}

/// Next-fit over the 61 container addresses of one /26, as a list: the oracle for allocation.
#[derive(Debug, Default)]
struct NextFitModel {
    held: BTreeMap<u32, u8>,
    cursor: u32,
}

impl NextFitModel {
    const CAPACITY: u32 = 61;

    fn allocate(&mut self, holder: u8) -> Option<u32> {
        if let Some((&slot, _)) = self.held.iter().find(|&(_, &h)| h == holder) {
            return Some(slot);
        }
        let slot = (0..Self::CAPACITY)
            .map(|k| (self.cursor + k) % Self::CAPACITY)
            .find(|slot| !self.held.contains_key(slot))?;
        self.held.insert(slot, holder);
        self.cursor = (slot + 1) % Self::CAPACITY;
        Some(slot)
    }

    fn release(&mut self, holder: u8) -> Option<u32> {
        let slot = *self.held.iter().find(|&(_, &h)| h == holder)?.0;
        self.held.remove(&slot);
        Some(slot)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The container pool of a worker follows the next-fit model exactly, through exhaustion,
    /// wrap-around and serde round trips.
    #[test]
    fn container_pool_matches_the_next_fit_model(
        ops in proptest::collection::vec((any::<bool>(), 0u8..80, any::<bool>()), 1..400)
    ) {
        let mut ipam = AddressManager::new();
        let subnets = ipam.assign_worker("w").unwrap();
        let base = u32::from(subnets.ipv4.base());
        let mut node = WorkerAddresses::new(subnets);
        let mut model = NextFitModel::default();
        for (allocate, h, round_trip_first) in ops {
            if round_trip_first {
                node = round_trip(&node);
            }
            let holder = Holder::instance("s", u32::from(h));
            if allocate {
                let expected = model.allocate(h).map(|slot| Ipv4Addr::from_bits(base + 2 + slot));
                match node.assign(&holder) {
                    Ok(addresses) => prop_assert_eq!(Some(addresses.ipv4), expected),
                    Err(IpamError::Exhausted { capacity, .. }) => {
                        prop_assert_eq!(expected, None);
                        prop_assert_eq!(capacity, 61);
                    }
                    Err(other) => prop_assert!(false, "unexpected error {other}"),
                }
            } else {
                let expected = model.release(h).map(|slot| Ipv4Addr::from_bits(base + 2 + slot));
                prop_assert_eq!(node.release(&holder).0, expected);
            }
            prop_assert_eq!(node.ipv4_pool().len(), model.held.len());
        }
    }
}
