//! A minimal QMP client: connect, negotiate capabilities, run one command.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Runs `command` (e.g. `system_powerdown`, `quit`) on the QMP socket at `socket`.
pub async fn execute(socket: &Path, command: &str, timeout: Duration) -> Result<(), String> {
    tokio::time::timeout(timeout, execute_inner(socket, command))
        .await
        .map_err(|_| format!("QMP {command} on {} timed out", socket.display()))?
}

/// Whether a QMP server answers on `socket` (its greeting and capabilities negotiation).
pub async fn answers(socket: &Path, timeout: Duration) -> bool {
    execute(socket, "query-status", timeout).await.is_ok()
}

async fn execute_inner(socket: &Path, command: &str) -> Result<(), String> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| format!("connecting to QMP {}: {e}", socket.display()))?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut next = async || -> Result<serde_json::Value, String> {
        loop {
            let line = lines
                .next_line()
                .await
                .map_err(|e| format!("reading QMP: {e}"))?
                .ok_or_else(|| "QMP closed the connection".to_owned())?;
            let value: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| format!("QMP sent {line:?}: {e}"))?;
            // Asynchronous events (SHUTDOWN, POWERDOWN, …) interleave with replies.
            if value.get("event").is_none() {
                return Ok(value);
            }
        }
    };
    let greeting = next().await?;
    if greeting.get("QMP").is_none() {
        return Err(format!("not a QMP greeting: {greeting}"));
    }
    for cmd in ["qmp_capabilities", command] {
        let request = format!("{{\"execute\":\"{cmd}\"}}\n");
        write
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("writing QMP: {e}"))?;
        let reply = next().await;
        match reply {
            Ok(value) if value.get("return").is_some() => {}
            Ok(value) => return Err(format!("QMP {cmd} failed: {value}")),
            // `quit` may close the socket before its reply arrives.
            Err(_) if cmd == "quit" => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
