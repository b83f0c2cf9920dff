//! Nothing acknowledged is lost when the process dies: a child process (this test binary,
//! re-executed) writes to a redb store and prints an acknowledgement after each write returns;
//! the parent SIGKILLs it mid-stream, reopens the file and checks every acknowledged record.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use oakestra_core::ids::ObjectId;
use oakestra_core::model::InstanceRecord;
use oakestra_core::status::PositiveSchedulingStatus;
use oakestra_store::{RedbStore, Store, StoreError, conformance};

const CHILD_ENV: &str = "OAKESTRA_STORE_DURABILITY_CHILD";
const OWNER: &str = "durable";
/// Acknowledged iterations to wait for before the kill.
const KILL_AFTER: usize = 25;

/// The writer: `acknowledged_writes_survive_sigkill` re-executed with `CHILD_ENV` set runs this
/// instead of its checks (one test, two roles, so no test passes without checking anything).
async fn write_until_killed(path: std::ffi::OsString) {
    let store: Arc<dyn Store> = Arc::new(RedbStore::open_async(path).await.unwrap());
    // Bounded: the parent kills us long before this ends.
    for i in 0..100_000 {
        store
            .create_user(&conformance::sample_user(&format!("u{i}")))
            .await
            .unwrap();
        let (app, services) = conformance::sample_application(OWNER, &format!("a{i}"));
        store.create_application(&app, &services).await.unwrap();
        let sid = services[0].id;
        store
            .update_service(sid, |s| {
                let n = s.next_instance_progressive_number;
                s.next_instance_progressive_number += 1;
                s.instance_list.push(InstanceRecord::new(
                    n,
                    PositiveSchedulingStatus::ClusterScheduled,
                ));
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap();
        // Printed only after every write above returned, i.e. was acknowledged.
        println!("ACK {i} {} {sid}", app.id);
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(write_until_killed(path));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oakestra.redb");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "acknowledged_writes_survive_sigkill",
            "--nocapture",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked: Vec<(usize, ObjectId, ObjectId)> = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let Some(rest) = line.strip_prefix("ACK ") else {
            continue;
        };
        let parts: Vec<&str> = rest.split(' ').collect();
        acked.push((
            parts[0].parse().unwrap(),
            parts[1].parse().unwrap(),
            parts[2].parse().unwrap(),
        ));
        if acked.len() >= KILL_AFTER {
            break;
        }
    }
    assert!(
        acked.len() >= KILL_AFTER,
        "the writer stopped after {} acknowledgements",
        acked.len()
    );
    // SIGKILL while the writer is in the middle of its next writes.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the writer was killed: {status:?}");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store: Arc<dyn Store> = Arc::new(RedbStore::open_async(&path).await.unwrap());
        for (i, app_id, sid) in &acked {
            let user = store.user_by_name(&format!("u{i}")).await.unwrap();
            assert!(user.is_some(), "acknowledged user u{i} lost");
            let app = store
                .get_application(*app_id)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("acknowledged application a{i} lost"));
            assert_eq!(app.application_name, format!("a{i}"));
            assert_eq!(app.user_id, OWNER);
            let services = store.list_services(*app_id).await.unwrap();
            assert_eq!(services.len(), 2, "services of a{i}");
            let s = store.get_service(*sid).await.unwrap().unwrap();
            assert_eq!(s.next_instance_progressive_number, 1, "instance of a{i}");
            assert_eq!(s.instance_list.len(), 1);
        }
        // Whatever the kill interrupted was either fully committed or not at all.
        assert!(store.repair().await.unwrap().is_clean());
    });
}
