//! A command run inside a running container (exec probes, issue 18): the container's own
//! process settings (user, environment, working directory) with other arguments, no stdio,
//! its exit code awaited, the process removed afterwards.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use containerd_client::services::v1::{
    DeleteProcessRequest, ExecProcessRequest, KillRequest, StartRequest, WaitRequest,
};

use super::{ContainerdRuntime, backend, rpc_error};
use crate::{InstanceId, RuntimeError};

/// The type of an OCI process spec in an `Any`.
const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

static EXEC_IDS: AtomicU64 = AtomicU64::new(0);

impl ContainerdRuntime {
    pub(super) async fn exec_inner(
        &self,
        id: &InstanceId,
        argv: &[String],
        timeout: Duration,
    ) -> Result<i32, RuntimeError> {
        let cid = id.to_string();
        let container = self
            .get_container(&cid)
            .await?
            .ok_or_else(|| RuntimeError::NotFound(cid.clone()))?;
        let spec: serde_json::Value = container
            .spec
            .as_ref()
            .and_then(|any| serde_json::from_slice(&any.value).ok())
            .ok_or_else(|| backend(format!("exec in {cid}"), "the container has no OCI spec"))?;
        let mut process = spec
            .get("process")
            .cloned()
            .unwrap_or_else(|| serde_json::json!({"cwd": "/"}));
        process["args"] = serde_json::json!(argv);
        process["terminal"] = serde_json::Value::Bool(false);
        let exec_id = format!(
            "oakestra-exec-{}-{}",
            std::process::id(),
            EXEC_IDS.fetch_add(1, Ordering::Relaxed)
        );
        let conn = self.conn();
        let mut tasks = conn.client.tasks();
        tasks
            .exec(conn.request(ExecProcessRequest {
                container_id: cid.clone(),
                stdin: String::new(),
                stdout: String::new(),
                stderr: String::new(),
                terminal: false,
                spec: Some(prost_types::Any {
                    type_url: PROCESS_TYPE_URL.to_owned(),
                    value: serde_json::to_vec(&process).unwrap_or_default(),
                }),
                exec_id: exec_id.clone(),
            }))
            .await
            .map_err(|s| backend(format!("exec in {cid}"), rpc_error("task exec", &s)))?;
        let outcome = async {
            // Wait is registered before the start, so a quick exit is not missed.
            let mut waiter = conn.client.tasks();
            let wait = waiter.wait(conn.request(WaitRequest {
                container_id: cid.clone(),
                exec_id: exec_id.clone(),
            }));
            let mut starter = conn.client.tasks();
            let start = starter.start(conn.request(StartRequest {
                container_id: cid.clone(),
                exec_id: exec_id.clone(),
            }));
            let (waited, started) = tokio::join!(tokio::time::timeout(timeout, wait), start);
            started.map_err(|s| backend(format!("exec in {cid}"), rpc_error("exec start", &s)))?;
            match waited {
                Err(_) => Err(backend(
                    format!("exec in {cid}"),
                    format!("{argv:?} did not finish within {timeout:?}"),
                )),
                Ok(Err(s)) => Err(backend(
                    format!("exec in {cid}"),
                    rpc_error("exec wait", &s),
                )),
                Ok(Ok(r)) => Ok(i32::try_from(r.into_inner().exit_status).unwrap_or(255)),
            }
        }
        .await;
        if outcome.is_err() {
            let _ = tasks
                .kill(conn.request(KillRequest {
                    container_id: cid.clone(),
                    exec_id: exec_id.clone(),
                    signal: 9,
                    all: false,
                }))
                .await;
        }
        let _ = tasks
            .delete_process(conn.request(DeleteProcessRequest {
                container_id: cid,
                exec_id,
            }))
            .await;
        outcome
    }
}
