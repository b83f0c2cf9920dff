//! SLA validation throughput: parse + validate the clientsrvr descriptor from text.
//! Target: at least 100,000 descriptors per second on one core.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const CLIENTSRVR: &str = include_str!("../../examples/sla-clientsrvr-container.json");
const UNIKERNEL: &str = include_str!("../../examples/sla-nginx-unikernel.json");

fn sla_validation(c: &mut Criterion) {
    let mut group = c.benchmark_group("sla");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_and_validate/clientsrvr", |b| {
        b.iter(|| oakestra_core::sla::parse_and_validate(black_box(CLIENTSRVR)).unwrap())
    });
    group.bench_function("parse_and_validate/unikernel", |b| {
        b.iter(|| oakestra_core::sla::parse_and_validate(black_box(UNIKERNEL)).unwrap())
    });
    let invalid = CLIENTSRVR
        .replace("\"nginx\"", "\"ngi.nx\"")
        .replace("80:80/tcp", "80:0");
    group.bench_function("parse_and_validate/clientsrvr_invalid", |b| {
        b.iter(|| oakestra_core::sla::parse_and_validate(black_box(&invalid)).unwrap_err())
    });
    let value: serde_json::Value = serde_json::from_str(CLIENTSRVR).unwrap();
    group.bench_function("validate_value/clientsrvr", |b| {
        b.iter(|| oakestra_core::sla::validate_value(black_box(&value)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, sla_validation);
criterion_main!(benches);
