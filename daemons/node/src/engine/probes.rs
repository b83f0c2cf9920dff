//! Health probes (issue 18): the worker runs each instance's `liveness_probe` and
//! `readiness_probe` while that start of it runs. The verdicts come from the pure
//! [`ProbeTracker`]; this module does the I/O (a TCP connection, an HTTP GET, a command in the
//! container) and acts on them: a failing liveness probe stops the instance, and the exit
//! goes through the restart machinery; a readiness change is reported to the cluster, which
//! takes the instance out of (or back into) its service IPs' tables.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use oakestra_core::sla::probe::{ProbeTracker, Verdict, http_status_passes};
use oakestra_core::sla::{Probe, ProbeAction};
use oakestra_core::status::DeploymentStatus;
use oakestra_runtime::{InstanceId, Runtime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Engine;
use crate::metrics::Metrics;

/// Runs one probe attempt against an instance: the I/O seam of probes (the real one is
/// [`NetworkProber`]; tests use their own).
#[async_trait::async_trait]
pub trait Prober: Send + Sync + std::fmt::Debug {
    /// One attempt of `action` on instance `id`, reachable at `address` (its overlay address;
    /// none: the host's loopback), within `timeout`. `Err` says why it failed.
    async fn check(
        &self,
        id: &InstanceId,
        address: Option<IpAddr>,
        action: &ProbeAction,
        timeout: Duration,
    ) -> Result<(), String>;
}

/// Probes over the network (TCP, HTTP) and through the runtime (exec).
#[derive(Debug)]
pub struct NetworkProber {
    runtime: Arc<dyn Runtime>,
}

impl NetworkProber {
    /// Exec probes run through `runtime`.
    pub fn new(runtime: Arc<dyn Runtime>) -> Self {
        Self { runtime }
    }
}

async fn http_get(to: SocketAddr, path: &str) -> Result<(), String> {
    let mut stream = tokio::net::TcpStream::connect(to)
        .await
        .map_err(|e| format!("cannot connect to {to}: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {to}\r\nUser-Agent: oakestra-probe\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending to {to}: {e}"))?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading from {to}: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    let code: Option<u16> = line
        .strip_prefix("HTTP/")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok());
    match code {
        Some(code) if http_status_passes(code) => Ok(()),
        Some(code) => Err(format!("GET {path} answered {code}")),
        None => Err(format!("GET {path}: no HTTP status line in {line:?}")),
    }
}

#[async_trait::async_trait]
impl Prober for NetworkProber {
    async fn check(
        &self,
        id: &InstanceId,
        address: Option<IpAddr>,
        action: &ProbeAction,
        timeout: Duration,
    ) -> Result<(), String> {
        let ip = address.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        match action {
            ProbeAction::Tcp { port } => {
                let to = SocketAddr::new(ip, *port);
                tokio::net::TcpStream::connect(to)
                    .await
                    .map(drop)
                    .map_err(|e| format!("cannot connect to {to}: {e}"))
            }
            ProbeAction::HttpGet { port, path } => http_get(SocketAddr::new(ip, *port), path).await,
            ProbeAction::Exec(argv) => match self.runtime.exec(id, argv, timeout).await {
                Ok(0) => Ok(()),
                Ok(code) => Err(format!("exited with code {code}")),
                Err(e) => Err(e.to_string()),
            },
        }
    }
}

/// Which probe a loop runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Liveness,
    Readiness,
}

impl Engine {
    /// Starts the probes of `key`'s start `incarnation` (each ends with that start).
    pub(super) fn start_probes(&self, key: &str, incarnation: u64) {
        let Some(engine) = self.me.upgrade() else {
            return;
        };
        let (id, liveness, readiness) = {
            let state = self.lock();
            let Some(entry) = state.instances.get(key) else {
                return;
            };
            (
                entry.id(),
                entry.deploy.liveness_probe.clone(),
                entry.deploy.readiness_probe.clone(),
            )
        };
        for (kind, probe) in [(Kind::Liveness, liveness), (Kind::Readiness, readiness)] {
            if let Some(probe) = probe {
                let engine = Arc::clone(&engine);
                let (key, id) = (key.to_owned(), id.clone());
                tokio::spawn(async move {
                    engine.probe_loop(key, id, incarnation, probe, kind).await;
                });
            }
        }
    }

    /// Whether `key` still runs as start `incarnation`.
    fn runs(&self, key: &str, incarnation: u64) -> bool {
        self.lock().instances.get(key).is_some_and(|e| {
            !e.deleting
                && e.status == DeploymentStatus::Running
                && e.incarnation == Some(incarnation)
                && e.liveness_failure.is_none()
        })
    }

    async fn probe_loop(
        self: Arc<Self>,
        key: String,
        id: InstanceId,
        incarnation: u64,
        probe: Probe,
        kind: Kind,
    ) {
        let mut tracker = match kind {
            Kind::Liveness => ProbeTracker::liveness(&probe),
            Kind::Readiness => ProbeTracker::readiness(&probe),
        };
        let mut ticks = tokio::time::interval_at(
            tokio::time::Instant::now() + probe.initial_delay(),
            probe.period(),
        );
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if !self.runs(&key, incarnation) {
                return;
            }
            let address = self.network().and_then(|n| n.instance_address(&id));
            let prober = self.prober();
            let timeout = probe.timeout();
            let result = match tokio::time::timeout(
                timeout,
                prober.check(&id, address, &probe.action, timeout),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {timeout:?}")),
            };
            if !self.runs(&key, incarnation) {
                return;
            }
            let failures = tracker.failures() + u32::from(result.is_err());
            if let Err(why) = &result {
                tracing::debug!(instance = %key, probe = ?kind, "probe failed: {why}");
            }
            match (kind, tracker.record(result.is_ok())) {
                (Kind::Liveness, Some(Verdict::Failing)) => {
                    let why = format!(
                        "liveness probe failed: {}: {} ({failures} in a row)",
                        probe.action.describe(),
                        result.err().unwrap_or_default()
                    );
                    self.liveness_failed(&key, &id, incarnation, why).await;
                    return;
                }
                (Kind::Readiness, Some(verdict)) => {
                    let why = result.err().map(|e| {
                        format!("readiness probe failed: {}: {e}", probe.action.describe())
                    });
                    self.set_ready(&key, incarnation, verdict == Verdict::Passing, why)
                        .await;
                }
                _ => {}
            }
        }
    }

    /// Records and reports a readiness change of `key`'s start `incarnation`.
    async fn set_ready(&self, key: &str, incarnation: u64, ready: bool, why: Option<String>) {
        let report = {
            let mut state = self.lock();
            let Some(entry) = state.instances.get_mut(key) else {
                return;
            };
            if entry.incarnation != Some(incarnation) || entry.status != DeploymentStatus::Running {
                return;
            }
            entry.ready = Some(ready);
            entry.status_detail = why.unwrap_or_default();
            self.report_of(entry)
        };
        tracing::info!(instance = key, ready, detail = %report.status_detail, "readiness");
        Metrics::inc(if ready {
            &self.metrics.became_ready
        } else {
            &self.metrics.became_unready
        });
        self.reporter.job_status(report);
    }

    /// A failing liveness probe: the instance is stopped; its exit is then handled like any
    /// other (restarted after the back-off, see `after_exit`), with `why` as the reason.
    async fn liveness_failed(&self, key: &str, id: &InstanceId, incarnation: u64, why: String) {
        let lock = self.key_lock(key);
        let _guard = lock.lock().await;
        {
            let mut state = self.lock();
            let Some(entry) = state.instances.get_mut(key) else {
                return;
            };
            if entry.deleting
                || entry.incarnation != Some(incarnation)
                || entry.status != DeploymentStatus::Running
            {
                return;
            }
            entry.liveness_failure = Some(why.clone());
        }
        tracing::warn!(instance = key, "{why}; stopping it");
        Metrics::inc(&self.metrics.liveness_failures);
        if let Err(e) = self.runtime.stop(id, self.stop_grace).await {
            tracing::warn!(
                instance = key,
                "cannot stop it after its liveness probe failed: {e}"
            );
        }
    }
}
