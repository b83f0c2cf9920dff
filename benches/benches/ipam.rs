//! Address management throughput: allocate + release on pools that already hold many addresses,
//! and the cost of the load/store round trip a store does around each change.
//!
//! Run: `cargo bench -p oakestra-benches --bench ipam -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use oakestra_net::ipam::{AddressManager, Holder, Pool, PoolKind};

/// Addresses already held in the service IPv4 pool (of 65,534).
const HELD_SERVICE_IPS: u32 = 30_000;
/// Subnets already held in the worker subnet pool (of 12,288).
const HELD_WORKER_SUBNETS: u32 = 10_000;

fn pool_holding(kind: PoolKind, held: u32, holder: impl Fn(u32) -> Holder) -> Pool {
    let mut pool = Pool::new(kind);
    for n in 0..held {
        pool.allocate(holder(n)).expect("pool has room");
    }
    pool
}

fn allocate_release(c: &mut Criterion) {
    let mut group = c.benchmark_group("ipam");
    // One iteration is two operations: an allocation and a release.
    group.throughput(Throughput::Elements(2));

    let mut pool = pool_holding(PoolKind::ServiceIpv4, HELD_SERVICE_IPS, |n| {
        Holder::instance("app.ns.svc.ns", n)
    });
    let holder = Holder::instance("app.ns.svc.ns", u32::MAX);
    group.bench_function("instance_ipv4_allocate_release_30k_held", |b| {
        b.iter(|| {
            let address = pool
                .allocate(black_box(holder.clone()))
                .expect("pool has room");
            black_box(pool.release(black_box(address)))
        })
    });

    let mut pool = pool_holding(PoolKind::WorkerSubnetIpv4, HELD_WORKER_SUBNETS, |n| {
        Holder::worker(format!("worker-{n}"))
    });
    let holder = Holder::worker("worker-new");
    group.bench_function("worker_subnet_ipv4_allocate_release_10k_held", |b| {
        b.iter(|| {
            let subnet = pool
                .allocate(black_box(holder.clone()))
                .expect("pool has room");
            black_box(pool.release(black_box(subnet)))
        })
    });

    // The typed two-pool path the root uses: IPv4 + IPv6 of an instance, checked then applied.
    let mut ipam = AddressManager::new();
    for n in 0..HELD_SERVICE_IPS {
        ipam.assign_instance("app.ns.svc.ns", n)
            .expect("pool has room");
    }
    group.bench_function("assign_release_instance_v4_v6_30k_held", |b| {
        b.iter(|| {
            black_box(
                ipam.assign_instance(black_box("app.ns.svc.ns"), u32::MAX)
                    .expect("room"),
            );
            black_box(ipam.release_instance("app.ns.svc.ns", u32::MAX))
        })
    });
    group.finish();

    // What a store pays per transaction when it keeps the whole state as one JSON value.
    let mut group = c.benchmark_group("ipam_state");
    group.sample_size(20);
    let json = serde_json::to_string(&ipam).expect("serialises");
    group.bench_function("serialise_json_30k_instances", |b| {
        b.iter(|| serde_json::to_string(black_box(&ipam)).expect("serialises"))
    });
    group.bench_function("deserialise_json_30k_instances", |b| {
        b.iter(|| serde_json::from_str::<AddressManager>(black_box(&json)).expect("loads"))
    });
    group.finish();
    eprintln!(
        "ipam: JSON state with {HELD_SERVICE_IPS} instances is {} bytes",
        json.len()
    );
}

criterion_group!(benches, allocate_release);
criterion_main!(benches);
