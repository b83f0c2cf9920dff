//! Instance logs: the logger script the shim runs for every task, and the rotation of logs
//! that grew past the limit (see [`crate::logfile`]).

use std::path::Path;
use std::sync::Weak;
use std::time::Duration;

use super::{ContainerdRuntime, Inner};
use crate::InstanceId;
use crate::logfile::LogFile;

/// Rotates instance logs that grew past the limit.
pub(super) async fn rotate_loop(weak: Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        let runtime = ContainerdRuntime { inner };
        let ids: Vec<InstanceId> = runtime
            .state()
            .tracked
            .values()
            .map(|t| t.id.clone())
            .collect();
        let limit = runtime.inner.config.log_max_bytes;
        let logs: Vec<LogFile> = ids.iter().map(|id| runtime.log(id)).collect();
        drop(runtime);
        let _ = tokio::task::spawn_blocking(move || {
            for log in logs {
                // The shim appends (O_APPEND), so it goes on writing at the new end.
                let _ = log.rotate_if_larger(limit);
            }
        })
        .await;
    }
}

/// The container logger the shim runs (`binary://` logging): fd 3 is the task's stdout, fd 4
/// its stderr, a byte on fd 5 tells the shim it is ready. Both streams are appended to the log
/// as they come, each by its own `cat` (the shell execs the second), until the task's side
/// closes them; the shim, a subreaper, reaps them. (The shim's own
/// `file://` logging gives both streams one writer that the first stream to end closes, so the
/// other stream's last output was now and then lost.) The logger lives with the task, not with
/// the worker, so logs keep flowing while a worker restarts.
pub(super) const LOGGER_SCRIPT: &str =
    "# oakestra-runtime: container logger, run by the containerd shim as `sh <this> <log>`.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
printf r >&5
exec 5>&-
cat <&3 >>\"$1\" 3<&- 4<&- &
exec cat <&4 >>\"$1\" 3<&- 4<&-
";
pub(super) const LOGGER_SCRIPT_NAME: &str = ".oakestra-logger.sh";

/// Percent-escapes a path for a URI query (the shim decodes it; `+` would become a space).
fn query_escape(path: &Path) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(b) {
            out.push(char::from(*b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

impl ContainerdRuntime {
    /// The shim's log URI for a task logging to `log`: our logger script (written when the
    /// runtime starts), run by `/bin/sh` (`binary:///bin/sh?<script>=<log>`, which the shim
    /// runs as `sh <script> <log>`).
    pub(super) fn logger_uri(&self, log: &Path) -> String {
        let script = self.inner.config.log_dir.join(LOGGER_SCRIPT_NAME);
        format!(
            "binary:///bin/sh?{}={}",
            query_escape(&script),
            query_escape(log)
        )
    }

    /// The log of instance `id`.
    pub(super) fn log(&self, id: &InstanceId) -> LogFile {
        LogFile::new(self.log_path(id))
    }
}
