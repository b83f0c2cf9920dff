//! The unikernel runtime against real qemu (TCG where KVM does not work), with the test image
//! of `scripts/fixtures/unikernel-image.sh` (a Debian kernel and a busybox initramfs) served
//! over HTTP on loopback. Missing qemu or fixture is a failure that says to run scripts/setup.
//!
//! qemu boots are slow under TCG (~6–10 s), so the lifecycle test boots three guests at once
//! and drives every guest-side check through them.

mod support;

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use oakestra_runtime::unikernel::{UnikernelConfig, UnikernelRuntime, unikernel_available};
use oakestra_runtime::{ExitEvent, InstanceId, InstanceState, Runtime};
use support::{KillGuests, MARKER, fixture, serve, spec, wait_for_log};

/// A loopback URL on which nothing listens (a port just bound and released).
fn unreachable_url(file: &str) -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}/{file}")
}

async fn next_exit(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<ExitEvent>,
    within: Duration,
) -> ExitEvent {
    tokio::time::timeout(within, events.recv())
        .await
        .expect("no exit event in time")
        .expect("exit stream closed")
}

/// Three guests booted at once from one uncached image: one serves and runs, one powers off
/// (exit 0), one exits through isa-debug-exit with 5. Then: the running one is re-adopted by
/// a new runtime on the same data directory, stopped through QMP and deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lifecycle_exit_codes_readoption_stop_and_delete() {
    let server = serve(fixture(), Duration::from_millis(300));
    let data = tempfile::tempdir().unwrap();
    let _guests = KillGuests(data.path().to_path_buf());
    // A small log limit: the serving guest's boot messages (no `quiet`) rotate its log.
    let config = UnikernelConfig {
        log_max_bytes: 8 << 10,
        ..UnikernelConfig::new(data.path())
    };
    let rt = UnikernelRuntime::new(config.clone()).unwrap();
    let probe_started = Instant::now();
    let kvm = rt.uses_kvm().await;
    eprintln!(
        "accelerator: {} (probe {:?})",
        if kvm { "KVM" } else { "TCG" },
        probe_started.elapsed()
    );
    let mut events = rt.exit_events();

    let serving = spec(
        "serving",
        &server.url,
        &["console=ttyS0", "oak.marker=serving"],
    );
    let poweroff = spec(
        "poweroff",
        &server.url,
        &[
            "console=ttyS0",
            "quiet",
            "oak.marker=zero",
            "oak.files=1",
            "oak.exit=0",
        ],
    );
    let failing = spec(
        "failing",
        &server.url,
        &["console=ttyS0", "quiet", "oak.marker=five", "oak.exit=5"],
    );
    let boot_started = Instant::now();
    let (a, b, c) = tokio::join!(rt.start(&serving), rt.start(&poweroff), rt.start(&failing));
    let (inc_serving, inc_poweroff, inc_failing) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        1,
        "three concurrent starts of one image download it once"
    );
    assert_eq!(rt.downloads(), 1);
    assert!(matches!(
        rt.start(&serving).await,
        Err(oakestra_runtime::RuntimeError::AlreadyExists(_))
    ));

    wait_for_log(
        &rt,
        &serving.id,
        &format!("{MARKER} serving"),
        Duration::from_secs(180),
    )
    .await;
    eprintln!(
        "boot to marker (3 guests at once): {:?}",
        boot_started.elapsed()
    );
    wait_for_log(
        &rt,
        &serving.id,
        "OAK-UNIKERNEL-SERVING",
        Duration::from_secs(30),
    )
    .await;
    let instance_dir = data.path().join("instances").join(serving.id.to_string());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !instance_dir.join("console.log.1").exists() {
        assert!(Instant::now() < deadline, "the console log was not rotated");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = rt.logs_tail(&serving.id, 64 << 10).await.unwrap();
    assert!(log.contains("OAK-UNIKERNEL-SERVING"), "{log}");

    let mut exits = vec![
        next_exit(&mut events, Duration::from_secs(180)).await,
        next_exit(&mut events, Duration::from_secs(180)).await,
    ];
    exits.sort_by_key(|e| e.exit_code);
    assert_eq!(
        exits,
        vec![
            ExitEvent {
                id: poweroff.id.clone(),
                incarnation: inc_poweroff,
                exit_code: 0
            },
            ExitEvent {
                id: failing.id.clone(),
                incarnation: inc_failing,
                exit_code: 5
            },
        ]
    );

    // The image's files/ reached the guest over virtio-9p (fs0); the guest's write landed in
    // the instance's own copy, not in the cached image.
    let log = rt.logs_tail(&poweroff.id, 64 << 10).await.unwrap();
    assert!(
        log.contains("OAK-UNIKERNEL-FILES hello from the image"),
        "{log}"
    );
    let written = data
        .path()
        .join("instances")
        .join(poweroff.id.to_string())
        .join("files/from-guest");
    assert_eq!(
        std::fs::read_to_string(&written).unwrap(),
        "written by zero\n"
    );
    for image in std::fs::read_dir(data.path().join("images")).unwrap() {
        let image = image.unwrap().path();
        assert!(image.join("files/hello.txt").exists(), "{image:?}");
        assert!(!image.join("files/from-guest").exists(), "{image:?}");
    }

    let stats = rt.stats(&serving.id).await.unwrap();
    assert!(stats.memory_bytes > 10 << 20, "qemu RSS: {stats:?}");
    assert!(stats.cpu_percent >= 0.0);
    let listed = rt.list().await.unwrap();
    assert_eq!(listed.len(), 3);
    let state_of = |id: &InstanceId| listed.iter().find(|s| &s.spec.id == id).unwrap().state;
    assert_eq!(state_of(&serving.id), InstanceState::Running);
    assert_eq!(state_of(&failing.id), InstanceState::Exited { code: 5 });

    // A worker restart: a new runtime on the same data directory adopts what is there.
    drop(events);
    drop(rt);
    let rt = UnikernelRuntime::new(config).unwrap();
    let listed = rt.list().await.unwrap();
    let adopted = listed.iter().find(|s| s.spec.id == serving.id).unwrap();
    assert_eq!(adopted.incarnation, inc_serving);
    assert_eq!(adopted.state, InstanceState::Running);
    let zero = listed.iter().find(|s| s.spec.id == poweroff.id).unwrap();
    assert_eq!(zero.state, InstanceState::Exited { code: 0 });
    let five = listed.iter().find(|s| s.spec.id == failing.id).unwrap();
    assert_eq!(five.state, InstanceState::Exited { code: 5 });
    assert!(
        rt.logs_tail(&serving.id, 4096)
            .await
            .unwrap()
            .contains(MARKER)
    );
    let next = rt
        .start(&spec("again", &unreachable_url("x.tar.gz"), &[]))
        .await;
    assert!(next.is_err());

    // Stop through QMP: busybox ignores the ACPI power button, so after the grace period the
    // runtime quits qemu and reports a termination.
    let mut events = rt.exit_events();
    let stop_started = Instant::now();
    rt.stop(&serving.id, Duration::from_secs(1)).await.unwrap();
    eprintln!("stop with 1 s grace: {:?}", stop_started.elapsed());
    let exit = next_exit(&mut events, Duration::from_secs(10)).await;
    assert_eq!(
        exit,
        ExitEvent {
            id: serving.id.clone(),
            incarnation: inc_serving,
            exit_code: 143
        }
    );
    rt.stop(&serving.id, Duration::from_secs(1)).await.unwrap();

    for s in [&serving, &poweroff, &failing] {
        rt.delete(&s.id).await.unwrap();
    }
    assert!(rt.list().await.unwrap().is_empty());
    let left: Vec<_> = std::fs::read_dir(data.path().join("instances"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "instance directories left: {left:?}");
    let sockets: Vec<_> = std::fs::read_dir(data.path().join("qmp"))
        .unwrap()
        .collect();
    assert!(sockets.is_empty(), "QMP sockets left: {sockets:?}");
    assert!(matches!(
        rt.delete(&serving.id).await,
        Err(oakestra_runtime::RuntimeError::NotFound(_))
    ));
}

/// A worker restart for real: a first process (this test re-run with `HELPER_DATA` set) starts
/// a guest and exits; the guest keeps running, and a runtime in this process adopts it, reads its
/// log and stats, stops it through QMP and gets the exit code that the orphaned wrapper recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readoption_after_the_worker_process_died() {
    if let (Some(data), Ok(url)) = (std::env::var_os(HELPER_DATA), std::env::var(HELPER_URL)) {
        // The first worker process: start one guest and exit without stopping it.
        let rt = UnikernelRuntime::new(UnikernelConfig::new(PathBuf::from(data))).unwrap();
        let s = spec(
            "adopted",
            &url,
            &["console=ttyS0", "quiet", "oak.marker=adopted"],
        );
        rt.start(&s).await.unwrap();
        return;
    }
    let server = serve(fixture(), Duration::ZERO);
    let data = tempfile::tempdir().unwrap();
    let _guests = KillGuests(data.path().to_path_buf());
    let status = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "readoption_after_the_worker_process_died",
            "--nocapture",
        ])
        .env(HELPER_DATA, data.path())
        .env(HELPER_URL, &server.url)
        .status()
        .await
        .unwrap();
    assert!(
        status.success(),
        "the first worker process failed: {status}"
    );

    let rt = UnikernelRuntime::new(UnikernelConfig::new(data.path())).unwrap();
    let adopted = rt.list().await.unwrap();
    assert_eq!(adopted.len(), 1, "{adopted:?}");
    let id = adopted[0].spec.id.clone();
    assert_eq!(adopted[0].state, InstanceState::Running);
    let incarnation = adopted[0].incarnation;
    wait_for_log(
        &rt,
        &id,
        &format!("{MARKER} adopted"),
        Duration::from_secs(120),
    )
    .await;
    assert!(rt.stats(&id).await.unwrap().memory_bytes > 10 << 20);
    let next = rt
        .start(&spec("second", &unreachable_url("x.tar.gz"), &[]))
        .await;
    assert!(next.is_err(), "unreachable image must fail");

    let mut events = rt.exit_events();
    rt.stop(&id, Duration::from_millis(500)).await.unwrap();
    assert_eq!(
        next_exit(&mut events, Duration::from_secs(10)).await,
        ExitEvent {
            id: id.clone(),
            incarnation,
            exit_code: 143
        }
    );
    rt.delete(&id).await.unwrap();
    assert!(rt.list().await.unwrap().is_empty());
}

const HELPER_DATA: &str = "OAK_UK_TEST_HELPER_DATA";
const HELPER_URL: &str = "OAK_UK_TEST_HELPER_URL";

/// Bad input fails with a message that says what was wrong; no guest boots here.
#[tokio::test]
async fn bad_images_are_explained() {
    assert!(
        unikernel_available(),
        "qemu is not installed: run scripts/setup"
    );
    let data = tempfile::tempdir().unwrap();
    let _guests = KillGuests(data.path().to_path_buf());
    let rt = UnikernelRuntime::new(UnikernelConfig::new(data.path())).unwrap();
    assert_eq!(rt.virtualizations(), vec!["unikernel".to_owned()]);

    let mut arm_only = spec("arm", &unreachable_url("arm.tar.gz"), &[]);
    arm_only.arch = vec!["arm64".into()];
    let err = rt.start(&arm_only).await.unwrap_err().to_string();
    assert!(
        err.contains("code has no entry for arch amd64; it lists arm64"),
        "{err}"
    );

    let url = unreachable_url("kernel.tar.gz");
    let err = rt
        .ensure_image(&spec("down", &url, &[]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&url) && err.contains("cannot download") && err.contains("refused"),
        "{err}"
    );
    assert!(rt.list().await.unwrap().is_empty());

    // An archive without a kernel.
    let mut tarball = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut header = tar::Header::new_gnu();
    header.set_size(5);
    header.set_mode(0o644);
    header.set_cksum();
    tarball
        .append_data(&mut header, "README", &b"hello"[..])
        .unwrap();
    let body = tarball.into_inner().unwrap().finish().unwrap();
    let server = serve(body, Duration::ZERO);
    let err = rt
        .start(&spec("nokernel", &server.url, &[]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no `kernel` file") && err.contains("README"),
        "{err}"
    );

    // A kernel qemu cannot load: the start fails with qemu's own message.
    let mut tarball = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut header = tar::Header::new_gnu();
    header.set_size(8);
    header.set_mode(0o644);
    header.set_cksum();
    tarball
        .append_data(&mut header, "kernel", &b"garbage\n"[..])
        .unwrap();
    let garbage = serve(
        tarball.into_inner().unwrap().finish().unwrap(),
        Duration::ZERO,
    );
    let err = rt
        .start(&spec("garbage", &garbage.url, &[]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("qemu exited during start") && err.contains("invalid kernel header"),
        "{err}"
    );
    assert!(rt.list().await.unwrap().is_empty());

    // A worker without qemu advertises no unikernel support and says why a start fails.
    let no_qemu_dir = tempfile::tempdir().unwrap();
    let without = UnikernelRuntime::new(UnikernelConfig {
        qemu_dir: Some(no_qemu_dir.path().to_path_buf()),
        ..UnikernelConfig::new(data.path().join("without"))
    })
    .unwrap();
    assert!(without.virtualizations().is_empty());
    let err = without
        .start(&spec("noqemu", &garbage.url, &[]))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not installed"), "{err}");

    let mut docker = spec("docker", &server.url, &[]);
    docker.virtualization = "docker".into();
    let err = rt.start(&docker).await.unwrap_err().to_string();
    assert!(
        err.contains("not supported by the unikernel runtime"),
        "{err}"
    );
}
