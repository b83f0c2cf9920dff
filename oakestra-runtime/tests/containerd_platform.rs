//! The SLA's `platform` through a real pull: a multi-platform index in the loopback registry
//! (two manifests, both runnable here, told apart by their `/etc/marker`), pulled for the
//! worker's own platform and for another one; each instance runs the image of its platform, and
//! both images are held side by side. Fixtures as in `containerd_runtime.rs` (needs root).

mod containerd_support;

use std::time::Duration;

use containerd_support::*;
use oakestra_runtime::Runtime;
use sha2::{Digest, Sha256};

const LIMIT: Duration = Duration::from_secs(30);

fn digest(bytes: &[u8]) -> String {
    let mut out = String::from("sha256:");
    for b in Sha256::digest(bytes) {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Pushes an OCI index `<repo>:<tag>` whose `linux/<host arch>` entry is `native` and whose
/// `linux/arm/v6` entry is `other` (both already pushed under their own tags).
async fn push_index(registry: &str, repo: &str, tag: &str, native: &TestImage, other: &TestImage) {
    let arch = oakestra_runtime::containerd::registry::host_arch();
    let entry = |m: &TestImage, platform: serde_json::Value| {
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest(&m.manifest), "size": m.manifest.len(), "platform": platform
        })
    };
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            entry(other, serde_json::json!({"os": "linux", "architecture": "arm", "variant": "v6"})),
            entry(native, serde_json::json!({"os": "linux", "architecture": arch})),
        ]
    }))
    .unwrap();
    let put = reqwest::Client::new()
        .put(format!("http://{registry}/v2/{repo}/manifests/{tag}"))
        .header("content-type", "application/vnd.oci.image.index.v1+json")
        .body(index)
        .timeout(LIMIT)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "index upload: {}", put.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sla_platform_picks_the_index_entry_and_is_cached_beside_the_native_one() {
    let f = fixtures();
    let repo = format!("oaktest/{}", unique("platform"));
    let native = build_image(&format!("{repo}-native"));
    let other = build_image(&format!("{repo}-armv6"));
    push(&f.registry, &repo, "native", &native).await;
    push(&f.registry, &repo, "armv6", &other).await;
    push_index(&f.registry, &repo, "multi", &native, &other).await;
    let image = format!("{}/{repo}:multi", f.registry);

    let logs = tempfile::tempdir().unwrap();
    let rt = runtime(&f, logs.path()).await;
    let mut events = rt.exit_events();
    let show_marker = ["sh", "-c", "echo marker=$(cat /etc/marker)"];

    // No platform: this worker's entry.
    let plain = spec(&image, &show_marker);
    rt.start(&plain).await.unwrap();
    assert_eq!(exit_of(&mut events, &plain.id, LIMIT).await.exit_code, 0);
    let log = wait_log(&rt, &plain.id, "marker=").await;
    assert!(log.contains(&format!("marker={repo}-native")), "{log}");

    // platform linux/arm/v6: that entry (runnable here, as the test built it from this
    // machine's busybox), pulled separately and kept beside the native image.
    let pulls = rt.pulls_performed();
    let mut arm = spec(&image, &show_marker);
    arm.platform = Some("linux/arm/v6".into());
    rt.start(&arm).await.unwrap();
    assert_eq!(exit_of(&mut events, &arm.id, LIMIT).await.exit_code, 0);
    let log = wait_log(&rt, &arm.id, "marker=").await;
    assert!(log.contains(&format!("marker={repo}-armv6")), "{log}");
    assert_eq!(rt.pulls_performed(), pulls + 1);

    // Both are cached: no more pulls for either.
    rt.ensure_image(&plain).await.unwrap();
    rt.ensure_image(&arm).await.unwrap();
    assert_eq!(rt.pulls_performed(), pulls + 1);

    // A platform the index lacks: the error names what it has.
    let mut missing = spec(&image, &show_marker);
    missing.platform = Some("linux/s390x".into());
    let err = rt.ensure_image(&missing).await.unwrap_err().to_string();
    assert!(err.contains("has no linux/s390x image"), "{err}");
    assert!(err.contains("linux/arm/v6"), "{err}");

    for s in [&plain, &arm] {
        rt.delete(&s.id).await.unwrap();
    }
}
