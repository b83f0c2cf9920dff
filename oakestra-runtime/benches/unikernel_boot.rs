//! Unikernel boot benchmark (figures in benches/RESULTS.md): one guest at a time under real
//! qemu, `start()` latency (qemu up, QMP answering) and start → marker in the log, plus the
//! uncached image download + unpack and a cached `ensure_image`. A bench target without the
//! libtest harness:
//!
//! ```sh
//! cargo bench -p oakestra-runtime --bench unikernel_boot
//! ```
//!
//! Needs qemu and the test image of `scripts/setup` (the fixtures of `tests/support/`). Run
//! without `--bench` (as `cargo test --benches` does), it only prints how to run it.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use oakestra_runtime::Runtime;
use oakestra_runtime::unikernel::{UnikernelConfig, UnikernelRuntime};
use support::{KillGuests, MARKER, fixture, serve, spec, wait_for_log};

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!(
            "benchmark boot_to_marker: run with `cargo bench -p oakestra-runtime --bench unikernel_boot`"
        );
        return;
    }
    // What the `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]` it replaces had.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(bench_boot_to_marker());
}

/// One guest at a time: start() latency (qemu up, QMP answering) and start → marker in the
/// log, plus the uncached image download + unpack and a cached `ensure_image`.
async fn bench_boot_to_marker() {
    let server = serve(fixture(), Duration::ZERO);
    let data = tempfile::tempdir().unwrap();
    let _guests = KillGuests(data.path().to_path_buf());
    let rt = UnikernelRuntime::new(UnikernelConfig::new(data.path())).unwrap();
    let t = Instant::now();
    let kvm = rt.uses_kvm().await;
    eprintln!(
        "BENCH accelerator {} (probe {:?})",
        if kvm { "KVM" } else { "TCG" },
        t.elapsed()
    );
    let first = spec("bench", &server.url, &["console=ttyS0", "quiet"]);
    let t = Instant::now();
    rt.ensure_image(&first).await.unwrap();
    eprintln!(
        "BENCH uncached image (download 9 MB from loopback + unpack): {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    rt.ensure_image(&first).await.unwrap();
    eprintln!("BENCH cached ensure_image: {:?}", t.elapsed());
    for round in 0..3 {
        let s = spec(
            &format!("bench{round}"),
            &server.url,
            &["console=ttyS0", "quiet"],
        );
        let t = Instant::now();
        rt.start(&s).await.unwrap();
        let up = t.elapsed();
        wait_for_log(&rt, &s.id, MARKER, Duration::from_secs(120)).await;
        let marker = t.elapsed();
        let stats = rt.stats(&s.id).await.unwrap();
        let t = Instant::now();
        rt.delete(&s.id).await.unwrap();
        eprintln!(
            "BENCH round {round}: start() {up:?}, start → marker {marker:?}, qemu RSS {} MiB, delete {:?}",
            stats.memory_bytes >> 20,
            t.elapsed()
        );
    }
}
