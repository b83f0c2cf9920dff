//! The containerd runtime against a real containerd and a real registry (fixtures started by
//! `scripts/fixtures/`; needs root, as the worker does).

mod containerd_support;

use std::time::Duration;

use containerd_support::*;
use oakestra_runtime::{InstanceState, Runtime, RuntimeError};

const LIMIT: Duration = Duration::from_secs(30);

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
