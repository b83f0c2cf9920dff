//! containerd start latency (figures in benches/RESULTS.md): with the image cached, `start()`
//! until the task runs and `delete()`, 20 times; plus one uncached pull from the loopback
//! registry and a cached `ensure_image`. A bench target without the libtest harness:
//!
//! ```sh
//! cargo bench -p oakestra-runtime --bench containerd_start
//! ```
//!
//! Needs root and the fixtures of `scripts/setup` (the test containerd and registry of
//! `tests/containerd_support/`). Run without `--bench` (as `cargo test --benches` does), it only
//! prints how to run it.

#[path = "../tests/containerd_support/mod.rs"]
mod containerd_support;

use std::time::Duration;

use containerd_support::*;
use oakestra_runtime::Runtime;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!(
            "benchmark containerd start latency: run with `cargo bench -p oakestra-runtime --bench containerd_start`"
        );
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(start_latency_of_a_cached_image());
}

async fn start_latency_of_a_cached_image() {
    let f = fixtures();
    let image = shared_image(&f).await;
    let logs = tempfile::tempdir().unwrap();
    let rt = runtime(&f, logs.path()).await;
    rt.ensure_image(&spec(&image, &[])).await.unwrap();
    let marker = unique("bench");
    let fresh = push(
        &f.registry,
        &format!("oaktest/{marker}"),
        "v1",
        &build_image(&marker),
    )
    .await;
    let t = tokio::time::Instant::now();
    rt.ensure_image(&spec(&fresh, &[])).await.unwrap();
    let pull = t.elapsed();
    let t = tokio::time::Instant::now();
    rt.ensure_image(&spec(&fresh, &[])).await.unwrap();
    let cached = t.elapsed();
    println!(
        "uncached pull (1.2 MB layer from the loopback registry, unpack): {:.0} ms; cached ensure_image: {:.3} ms",
        pull.as_secs_f64() * 1000.0,
        cached.as_secs_f64() * 1000.0
    );
    let mut starts = Vec::new();
    let mut deletes = Vec::new();
    for _ in 0..20 {
        let s = spec(&image, &["sleep", "600"]);
        let t = tokio::time::Instant::now();
        rt.start(&s).await.unwrap();
        starts.push(t.elapsed());
        let t = tokio::time::Instant::now();
        rt.delete(&s.id).await.unwrap();
        deletes.push(t.elapsed());
    }
    starts.sort();
    deletes.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "containerd start→running (cached image, n=20): p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms; delete p50 {:.0} ms",
        ms(starts[10]),
        ms(starts[18]),
        ms(starts[19]),
        ms(deletes[10])
    );
}
