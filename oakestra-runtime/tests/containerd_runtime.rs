//! The containerd runtime against a real containerd and a real registry (fixtures started by
//! `scripts/fixtures/`; needs root, as the worker does).

mod containerd_support;

use std::time::Duration;

use containerd_support::*;
use oakestra_runtime::{InstanceState, Runtime, RuntimeError};

const LIMIT: Duration = Duration::from_secs(30);

/// A task whose stdout ends before its stderr: everything it wrote to stderr afterwards is in
/// the log. (containerd 1.6's own `file://` logging closes the shared file when the first
/// stream ends, which lost exactly these lines; our logger writes each stream on its own.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stderr_written_after_stdout_closed_still_reaches_the_log() {
    let f = fixtures();
    let image = shared_image(&f).await;
    let logs = tempfile::tempdir().unwrap();
    let rt = runtime(&f, logs.path()).await;
    let mut events = rt.exit_events();
    let task = spec(
        &image,
        &[
            "sh",
            "-c",
            "echo on-stdout; exec 1>&-; sleep 0.3; echo late-on-stderr >&2; sleep 0.3; echo last-on-stderr >&2",
        ],
    );
    rt.ensure_image(&task).await.unwrap();
    rt.start(&task).await.unwrap();
    assert_eq!(exit_of(&mut events, &task.id, LIMIT).await.exit_code, 0);
    let log = wait_log(&rt, &task.id, "last-on-stderr").await;
    assert!(
        log.contains("on-stdout") && log.contains("late-on-stderr"),
        "{log}"
    );
    rt.delete(&task.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_runs_and_reports_exit_codes() {
    let f = fixtures();
    let image = shared_image(&f).await;
    let logs = tempfile::tempdir().unwrap();
    let rt = runtime(&f, logs.path()).await;
    let mut events = rt.exit_events();

    let ok = spec(
        &image,
        &["sh", "-c", "echo hello from $GREETING; echo to-stderr >&2"],
    );
    let mut ok = ok;
    ok.env.push("GREETING=oakestra".into());
    rt.ensure_image(&ok).await.unwrap();
    let incarnation = rt.start(&ok).await.unwrap();
    let exit = exit_of(&mut events, &ok.id, LIMIT).await;
    assert_eq!(exit.exit_code, 0);
    assert_eq!(exit.incarnation, incarnation);
    let log = wait_log(&rt, &ok.id, "to-stderr").await;
    assert!(log.contains("hello from oakestra"), "{log}");
    assert_eq!(rt.exit_reason(&ok.id, incarnation).await, None);

    let failing = spec(&image, &["sh", "-c", "exit 3"]);
    let incarnation = rt.start(&failing).await.unwrap();
    let exit = exit_of(&mut events, &failing.id, LIMIT).await;
    assert_eq!((exit.exit_code, exit.incarnation), (3, incarnation));

    // Exited instances are listed with their code until deleted.
    let listed = rt.list().await.unwrap();
    let entry = listed.iter().find(|s| s.spec.id == failing.id).unwrap();
    assert_eq!(entry.state, InstanceState::Exited { code: 3 });
    assert_eq!(entry.spec, failing);

    // A second start of an existing id is refused.
    assert!(matches!(
        rt.start(&failing).await,
        Err(RuntimeError::AlreadyExists(_))
    ));

    for s in [&ok, &failing] {
        rt.delete(&s.id).await.unwrap();
    }
    let listed = rt.list().await.unwrap();
    assert!(
        !listed
            .iter()
            .any(|s| s.spec.id == ok.id || s.spec.id == failing.id)
    );
    assert!(matches!(
        rt.delete(&ok.id).await,
        Err(RuntimeError::NotFound(_))
    ));
    assert!(!rt.log_path(&ok.id).exists(), "delete removes the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sends_sigterm_then_kills_after_the_grace_period() {
    let f = fixtures();
    let image = shared_image(&f).await;
    let logs = tempfile::tempdir().unwrap();
    let rt = runtime(&f, logs.path()).await;
    let mut events = rt.exit_events();

    // Handles SIGTERM: stops within the grace period with its own code.
    let polite = spec(
        &image,
        &[
            "sh",
            "-c",
            "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.1; done",
        ],
    );
    rt.start(&polite).await.unwrap();
    wait_log(&rt, &polite.id, "ready").await;
    let started = tokio::time::Instant::now();
    rt.stop(&polite.id, Duration::from_secs(10)).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(exit_of(&mut events, &polite.id, LIMIT).await.exit_code, 7);
    wait_log(&rt, &polite.id, "got-term").await;
    // Stopping an exited instance is a no-op.
    rt.stop(&polite.id, Duration::from_secs(1)).await.unwrap();

    // Ignores SIGTERM (a shell as PID 1 has no default handler): killed after the grace.
    let stubborn = spec(&image, &["sleep", "600"]);
    rt.start(&stubborn).await.unwrap();
    let started = tokio::time::Instant::now();
    rt.stop(&stubborn.id, Duration::from_millis(700))
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(700), "{took:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert_eq!(
        exit_of(&mut events, &stubborn.id, LIMIT).await.exit_code,
        137
    );

    // Delete stops a running instance first.
    let running = spec(&image, &["sleep", "600"]);
    rt.start(&running).await.unwrap();
    rt.delete(&running.id).await.unwrap();
    for s in [&polite, &stubborn] {
        rt.delete(&s.id).await.unwrap();
    }
    assert!(matches!(
        rt.stop(&running.id, Duration::from_secs(1)).await,
        Err(RuntimeError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_runtime_readopts_running_instances() {
    let f = fixtures();
    let image = shared_image(&f).await;
    let logs = tempfile::tempdir().unwrap();
    let mut httpd = spec(&image, &[]);
    httpd.env.push("INSTANCE_NAME=readopted".into());
    httpd.memory_limit_mb = 64;
    httpd.cpu_limit = 0.5;
    let first_incarnation = {
        let rt = runtime(&f, logs.path()).await;
        let n = rt.start(&httpd).await.unwrap();
        wait_log(&rt, &httpd.id, "serving on :80").await;
        let stats = rt.stats(&httpd.id).await.unwrap();
        assert!(stats.memory_bytes > 0, "{stats:?}");
        assert!(stats.cpu_percent >= 0.0, "{stats:?}");
        n
    };
    // The worker restarted: a new runtime finds the instance, running, with its spec.
    let rt = runtime(&f, logs.path()).await;
    let mut events = rt.exit_events();
    let listed = rt.list().await.unwrap();
    let entry = listed
        .iter()
        .find(|s| s.spec.id == httpd.id)
        .expect("listed after restart");
    assert_eq!(entry.state, InstanceState::Running);
    assert_eq!(entry.incarnation, first_incarnation);
    assert_eq!(entry.spec, httpd);
    let log = rt.logs_tail(&httpd.id, 1024).await.unwrap();
    assert!(log.contains("serving"), "{log}");
    // Its exit reaches the new runtime's subscribers with the old incarnation.
    rt.stop(&httpd.id, Duration::from_millis(300))
        .await
        .unwrap();
    let exit = exit_of(&mut events, &httpd.id, LIMIT).await;
    assert_eq!(exit.incarnation, first_incarnation);
    // New incarnations stay above the adopted ones.
    rt.delete(&httpd.id).await.unwrap();
    let again = rt.start(&httpd).await.unwrap();
    assert!(again > first_incarnation);
    rt.delete(&httpd.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deploys_of_an_uncached_image_pull_it_once() {
    let f = fixtures();
    let marker = unique("m");
    let image = push(
        &f.registry,
        &format!("oaktest/{marker}"),
        "v1",
        &build_image(&marker),
    )
    .await;
    let logs = tempfile::tempdir().unwrap();
    let rt = runtime(&f, logs.path()).await;
    let a = spec(&image, &["cat", "/etc/marker"]);
    let b = spec(&image, &["cat", "/etc/marker"]);
    let (ra, rb) = tokio::join!(rt.ensure_image(&a), rt.ensure_image(&b));
    ra.unwrap();
    rb.unwrap();
    assert_eq!(rt.pulls_performed(), 1);
    let mut events = rt.exit_events();
    let (sa, sb) = tokio::join!(rt.start(&a), rt.start(&b));
    sa.unwrap();
    sb.unwrap();
    assert_eq!(rt.pulls_performed(), 1, "starts reuse the pulled image");
    // Either may exit first: collect both.
    let mut codes = std::collections::HashMap::new();
    while codes.len() < 2 {
        let e = tokio::time::timeout(LIMIT, events.recv())
            .await
            .unwrap()
            .unwrap();
        if e.id == a.id || e.id == b.id {
            codes.insert(e.id, e.exit_code);
        }
    }
    assert!(codes.values().all(|c| *c == 0), "{codes:?}");
    for s in [&a, &b] {
        wait_log(&rt, &s.id, &marker).await;
        rt.delete(&s.id).await.unwrap();
    }
    // containerd keeps it: a restarted worker does not pull again.
    let fresh = runtime(&f, logs.path()).await;
    fresh.ensure_image(&a).await.unwrap();
    assert_eq!(fresh.pulls_performed(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_limit_is_enforced_and_an_oom_kill_reported() {
    let f = fixtures();
    let image = shared_image(&f).await;
    let logs = tempfile::tempdir().unwrap();
    let rt = runtime(&f, logs.path()).await;
    let mut events = rt.exit_events();
    // dd holds a 64 MiB buffer; the limit is 16 MB.
    let mut hog = spec(
        &image,
        &[
            "sh",
            "-c",
            "echo allocating; dd if=/dev/zero of=/dev/null bs=64M count=4",
        ],
    );
    hog.memory_limit_mb = 16;
    let incarnation = rt.start(&hog).await.unwrap();
    let exit = exit_of(&mut events, &hog.id, LIMIT).await;
    assert_ne!(
        exit.exit_code, 0,
        "the hog must not complete under its limit"
    );
    assert_eq!(
        rt.exit_reason(&hog.id, incarnation).await.as_deref(),
        Some("OOMKilled"),
        "exit code {}",
        exit.exit_code
    );
    wait_log(&rt, &hog.id, "OOMKilled").await;
    rt.delete(&hog.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_images_and_registries_are_explained() {
    let f = fixtures();
    let logs = tempfile::tempdir().unwrap();
    let rt = runtime(&f, logs.path()).await;

    let unknown = spec(&format!("{}/oaktest/no-such-image:v1", f.registry), &[]);
    let err = rt.ensure_image(&unknown).await.unwrap_err().to_string();
    assert!(
        err.contains("not found") && err.contains("no-such-image"),
        "{err}"
    );
    let err = rt.start(&unknown).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Image { .. }), "{err}");

    // A loopback port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = spec(&format!("127.0.0.1:{port}/oaktest/busybox:v1"), &[]);
    let err = rt.ensure_image(&unreachable).await.unwrap_err().to_string();
    assert!(
        err.contains("unreachable") && err.contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );

    let invalid = spec("Not A Reference", &[]);
    let err = rt.ensure_image(&invalid).await.unwrap_err().to_string();
    assert!(err.contains("invalid image reference"), "{err}");

    let image = shared_image(&f).await;
    let mut vm = spec(&image, &[]);
    vm.virtualization = "unikernel".into();
    assert!(matches!(
        rt.start(&vm).await,
        Err(RuntimeError::Unsupported { .. })
    ));
    // A command that does not exist: the start fails and leaves nothing behind.
    let missing = spec(&image, &["/no/such/binary"]);
    let err = rt.start(&missing).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Start { .. }), "{err}");
    assert!(err.to_string().contains("/no/such/binary"), "{err}");
    let listed = rt.list().await.unwrap();
    assert!(!listed.iter().any(|s| s.spec.id == missing.id));
}

#[tokio::test]
async fn an_absent_containerd_is_named() {
    let config = oakestra_runtime::ContainerdConfig {
        socket: "/nonexistent/containerd.sock".into(),
        ..Default::default()
    };
    let err = oakestra_runtime::ContainerdRuntime::connect(config)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent/containerd.sock") && err.contains("is containerd running"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_image_serves_a_page_naming_the_instance() {
    let f = fixtures();
    let image = shared_image(&f).await;
    let logs = tempfile::tempdir().unwrap();
    let mut config = config(&f, logs.path());
    config.default_network = oakestra_runtime::containerd::NetworkSetup::Host;
    let rt = oakestra_runtime::ContainerdRuntime::connect(config)
        .await
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut web = spec(&image, &[]);
    web.env.push(format!("PORT={port}"));
    web.env.push("INSTANCE_NAME=web-7".into());
    rt.start(&web).await.unwrap();
    wait_log(&rt, &web.id, "serving on").await;
    let mut body = String::new();
    for _ in 0..50 {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/")).await {
            body = r.text().await.unwrap_or_default();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rt.delete(&web.id).await.unwrap();
    assert_eq!(body.trim(), "hello from web-7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_credentials_are_used_and_wrong_ones_explained() {
    let f = fixtures();
    let marker = unique("auth");
    let image = push_as(
        &f.auth_registry,
        &format!("oaktest/{marker}"),
        "v1",
        &build_image(&marker),
        Some((AUTH_USER, AUTH_PASSWORD)),
    )
    .await;
    let logs = tempfile::tempdir().unwrap();
    let s = spec(&image, &["cat", "/etc/marker"]);

    let anonymous = runtime(&f, logs.path()).await;
    let err = anonymous.ensure_image(&s).await.unwrap_err().to_string();
    assert!(err.contains("needs credentials"), "{err}");

    let with = |password: &str| {
        let mut c = config(&f, logs.path());
        c.credentials.insert(
            f.auth_registry.clone(),
            oakestra_runtime::containerd::RegistryCredentials {
                username: AUTH_USER.into(),
                password: password.into(),
            },
        );
        c
    };
    let wrong = oakestra_runtime::ContainerdRuntime::connect(with("nope"))
        .await
        .unwrap();
    let err = wrong.ensure_image(&s).await.unwrap_err().to_string();
    assert!(err.contains("refused the credentials"), "{err}");

    let right = oakestra_runtime::ContainerdRuntime::connect(with(AUTH_PASSWORD))
        .await
        .unwrap();
    let mut events = right.exit_events();
    right.start(&s).await.unwrap();
    assert_eq!(exit_of(&mut events, &s.id, LIMIT).await.exit_code, 0);
    wait_log(&right, &s.id, &marker).await;
    right.delete(&s.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cpu_quota_caps_a_busy_loop() {
    let f = fixtures();
    let image = shared_image(&f).await;
    let logs = tempfile::tempdir().unwrap();
    let rt = runtime(&f, logs.path()).await;
    let mut busy = spec(&image, &["sh", "-c", "while :; do :; done"]);
    busy.cpu_limit = 0.2;
    rt.start(&busy).await.unwrap();
    rt.stats(&busy.id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stats = rt.stats(&busy.id).await.unwrap();
    rt.delete(&busy.id).await.unwrap();
    // 20 % of a core, with slack for the accounting period; an unlimited loop takes ~100 %
    // (less on a loaded machine, hence no tighter lower bound).
    assert!(
        stats.cpu_percent > 0.0 && stats.cpu_percent < 35.0,
        "{stats:?}"
    );
    assert!(stats.disk_bytes < 1 << 20, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_rotated_past_the_limit() {
    let f = fixtures();
    let image = shared_image(&f).await;
    let logs = tempfile::tempdir().unwrap();
    let mut config = config(&f, logs.path());
    config.log_max_bytes = 4096;
    let rt = oakestra_runtime::ContainerdRuntime::connect(config)
        .await
        .unwrap();
    // 20 kB at once, then a line per 100 ms.
    let chatty = spec(
        &image,
        &[
            "sh",
            "-c",
            "seq 1 4000; i=0; while :; do i=$((i+1)); echo tick-$i; sleep 0.1; done",
        ],
    );
    rt.start(&chatty).await.unwrap();
    wait_log(&rt, &chatty.id, "tick-1").await;
    // The rotation check runs every 5 s.
    let path = rt.log_path(&chatty.id);
    let mut rotated = path.clone().into_os_string();
    rotated.push(".1");
    for _ in 0..150 {
        if std::path::Path::new(&rotated).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let current = std::fs::metadata(&path).unwrap().len();
    let old = std::fs::read_to_string(&rotated).expect("rotated part exists");
    assert!(
        old.contains("\n4000\n"),
        "the big burst went to the rotated part"
    );
    assert!(
        current < 4096,
        "current part was truncated: {current} bytes"
    );
    // The tail reads across both parts.
    let tail = rt.logs_tail(&chatty.id, 64 * 1024).await.unwrap();
    assert!(
        tail.contains("\n3999\n") && tail.contains("tick-"),
        "{tail}"
    );
    rt.delete(&chatty.id).await.unwrap();
    assert!(!std::path::Path::new(&rotated).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_a_command_in_the_container_and_returns_its_exit_code() {
    let f = fixtures();
    let image = shared_image(&f).await;
    let logs = tempfile::tempdir().unwrap();
    let rt = runtime(&f, logs.path()).await;
    let mut events = rt.exit_events();
    let mut task = spec(
        &image,
        &["sh", "-c", "echo $GREETING > /greeting; sleep 60"],
    );
    task.env.push("GREETING=hello".into());
    rt.ensure_image(&task).await.unwrap();
    rt.start(&task).await.unwrap();
    let argv = |cmd: &str| vec!["sh".to_string(), "-c".to_string(), cmd.to_string()];
    let t = Duration::from_secs(10);
    // In the container: its files and its environment.
    let mut seen = None;
    for _ in 0..50 {
        match rt.exec(&task.id, &argv("test -e /greeting"), t).await {
            Ok(0) => {
                seen = Some(());
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("exec failed: {e}"),
        }
    }
    assert!(seen.is_some(), "the container's /greeting never appeared");
    assert_eq!(
        rt.exec(&task.id, &argv("test \"$GREETING\" = hello"), t)
            .await
            .unwrap(),
        0
    );
    assert_eq!(rt.exec(&task.id, &argv("exit 3"), t).await.unwrap(), 3);
    // Too slow: an error, and the process is gone.
    let slow = rt
        .exec(&task.id, &argv("sleep 30"), Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(slow.to_string().contains("did not finish"), "{slow}");
    // An exec's exit is not the container's.
    rt.stop(&task.id, Duration::ZERO).await.unwrap();
    let exit = exit_of(&mut events, &task.id, LIMIT).await;
    assert_eq!(exit.exit_code, 137);
    rt.delete(&task.id).await.unwrap();
    assert!(rt.exec(&task.id, &argv("true"), t).await.is_err());
}
