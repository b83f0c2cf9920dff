//! Prometheus metrics of the worker on `GET /metrics`, served by a few lines over a tokio
//! listener (no HTTP framework: the worker's idle footprint matters more than routing).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use oakestra_core::status::DeploymentStatus;

/// What `GET /metrics` shows, produced anew on each scrape: the worker's engine, which owns
/// the [`Metrics`] and knows its instances and network.
pub trait MetricsSource: Send + Sync + 'static {
    /// The Prometheus text of the worker's own metrics (without the host's I/O counters).
    fn metrics_text(&self) -> String;
}

/// (job name, instance number, CPU %, memory %, disk bytes) of a running instance.
pub type InstanceUsage = (String, u32, f64, f64, u64);

/// Counters and gauges of one worker.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Deploy commands handled.
    pub deploys: AtomicU64,
    /// Deploys that ended `FAILED`.
    pub deploy_failures: AtomicU64,
    /// Sum of deploy durations (command → RUNNING), microseconds.
    pub deploy_micros: AtomicU64,
    /// Delete commands handled.
    pub deletes: AtomicU64,
    /// Exits observed (`DEAD` or `COMPLETED`).
    pub exits: AtomicU64,
    /// Restarts made under a restart policy.
    pub restarts: AtomicU64,
    /// Runs stopped because their liveness probe failed.
    pub liveness_failures: AtomicU64,
    /// Readiness probes that turned passing.
    pub became_ready: AtomicU64,
    /// Readiness probes that turned failing.
    pub became_unready: AtomicU64,
    /// Successful registrations.
    pub registrations: AtomicU64,
    /// `information` messages sent.
    pub information_sent: AtomicU64,
    /// `jobs/resources` messages sent.
    pub resources_sent: AtomicU64,
    /// 1 while the broker session is up.
    pub mqtt_connected: AtomicU64,
    /// The worker's last measured CPU and memory, percent.
    pub usage: std::sync::Mutex<(f64, f64)>,
    /// Each running instance's last measured usage: (job, instance, CPU %, memory %, disk B).
    pub instances: std::sync::Mutex<Vec<InstanceUsage>>,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Keeps the worker's last measured usage for the next scrape.
    pub fn set_usage(&self, cpu_percent: f64, memory_percent: f64) {
        *self.usage.lock().unwrap_or_else(|p| p.into_inner()) = (cpu_percent, memory_percent);
    }

    /// Keeps the instances' last measured usage for the next scrape.
    pub fn set_instances(&self, services: &[oakestra_proto::mqtt::ServiceUsage]) {
        *self.instances.lock().unwrap_or_else(|p| p.into_inner()) = services
            .iter()
            .map(|s| {
                (
                    s.job_name.clone(),
                    s.instance,
                    s.cpu_percent,
                    s.memory_percent,
                    s.disk,
                )
            })
            .collect();
    }

    fn render_usage(&self, out: &mut String) {
        use std::fmt::Write;
        let (cpu, memory) = *self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let _ = write!(
            out,
            "# HELP oakestra_node_cpu_percent CPU use of the worker, percent of all cores.\n\
             # TYPE oakestra_node_cpu_percent gauge\noakestra_node_cpu_percent {cpu}\n\
             # HELP oakestra_node_memory_percent Memory use of the worker, percent.\n\
             # TYPE oakestra_node_memory_percent gauge\noakestra_node_memory_percent {memory}\n"
        );
        let instances = self.instances.lock().unwrap_or_else(|p| p.into_inner());
        type Series = (&'static str, &'static str, fn(&InstanceUsage) -> f64);
        let series: [Series; 3] = [
            (
                "oakestra_node_instance_cpu_percent",
                "CPU use of a running instance, percent of one core.",
                |i| i.2,
            ),
            (
                "oakestra_node_instance_memory_percent",
                "Memory use of a running instance, percent of the worker's memory.",
                |i| i.3,
            ),
            (
                "oakestra_node_instance_disk_bytes",
                "Disk use of a running instance, bytes.",
                |i| i.4 as f64,
            ),
        ];
        for (name, help, value) in series {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n");
            for i in instances.iter() {
                let job = i.0.replace('\\', "\\\\").replace('"', "\\\"");
                let _ = writeln!(
                    out,
                    "{name}{{job_name=\"{job}\",instance_number=\"{}\"}} {}",
                    i.1,
                    value(i)
                );
            }
        }
    }

    /// The Prometheus text exposition of these metrics plus instance counts by status (from
    /// the instances' `statuses`) and the network's own lines (`network`).
    pub fn render(&self, statuses: &[(String, DeploymentStatus)], network: &str) -> String {
        use std::fmt::Write;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::with_capacity(2048);
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            );
        };
        counter(
            "oakestra_node_deploys_total",
            "Deploy commands handled.",
            get(&self.deploys),
        );
        counter(
            "oakestra_node_deploy_failures_total",
            "Deploys that ended FAILED.",
            get(&self.deploy_failures),
        );
        counter(
            "oakestra_node_deletes_total",
            "Delete commands handled.",
            get(&self.deletes),
        );
        counter(
            "oakestra_node_exits_total",
            "Instance exits observed.",
            get(&self.exits),
        );
        counter(
            "oakestra_node_restarts_total",
            "Instances restarted on this worker under their restart_policy.",
            get(&self.restarts),
        );
        counter(
            "oakestra_node_liveness_failures_total",
            "Instance runs stopped because their liveness probe failed.",
            get(&self.liveness_failures),
        );
        counter(
            "oakestra_node_became_ready_total",
            "Readiness probes that turned passing (the instance joined its service IPs).",
            get(&self.became_ready),
        );
        counter(
            "oakestra_node_became_unready_total",
            "Readiness probes that turned failing (the instance left its service IPs).",
            get(&self.became_unready),
        );
        counter(
            "oakestra_node_registrations_total",
            "Successful registrations with the cluster.",
            get(&self.registrations),
        );
        counter(
            "oakestra_node_information_sent_total",
            "information messages sent.",
            get(&self.information_sent),
        );
        counter(
            "oakestra_node_resources_sent_total",
            "jobs/resources messages sent.",
            get(&self.resources_sent),
        );
        let _ = write!(
            out,
            "# HELP oakestra_node_deploy_seconds_sum Time from deploy command to RUNNING, summed.\n\
             # TYPE oakestra_node_deploy_seconds_sum counter\noakestra_node_deploy_seconds_sum {}\n",
            get(&self.deploy_micros) as f64 / 1e6
        );
        let _ = write!(
            out,
            "# HELP oakestra_node_mqtt_connected Whether the broker session is up (1) or down (0).\n\
             # TYPE oakestra_node_mqtt_connected gauge\noakestra_node_mqtt_connected {}\n",
            get(&self.mqtt_connected)
        );
        let mut by_status = std::collections::BTreeMap::<String, u64>::new();
        for (_, status) in statuses {
            *by_status.entry(status.to_string()).or_default() += 1;
        }
        out.push_str(
            "# HELP oakestra_node_instances Instances the worker holds, by status.\n\
             # TYPE oakestra_node_instances gauge\n",
        );
        for (status, n) in by_status {
            let _ = writeln!(out, "oakestra_node_instances{{status=\"{status}\"}} {n}");
        }
        self.render_usage(&mut out);
        out.push_str(network);
        out
    }
}

/// Serves `GET /metrics` (and `GET /health`) on `addr` until the task is dropped. A bind
/// failure is logged, not fatal: metrics are optional for a worker.
pub async fn serve<S: MetricsSource>(
    addr: SocketAddr,
    engine: Arc<S>,
    token: Option<String>,
    data_dir: std::path::PathBuf,
) {
    let data_dir: Arc<std::path::Path> = Arc::from(data_dir);
    let token: Option<Arc<str>> = token.map(Arc::from);
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(
                "no metrics: cannot listen on {addr}: {e}; choose another --metrics-listen"
            );
            return;
        }
    };
    tracing::info!("metrics on http://{addr}/metrics");
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let engine = Arc::clone(&engine);
        let token = token.clone();
        let data_dir = Arc::clone(&data_dir);
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let mut len = 0;
            // Read until the end of the request head (or the buffer is full).
            while len < buf.len() {
                match tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    stream.read(&mut buf[len..]),
                )
                .await
                {
                    Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => {
                        len += n;
                        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                }
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let path = head.split_whitespace().nth(1).unwrap_or("");
            let authorized = oakestra_daemon::metrics::authorized(
                token.as_deref(),
                header(&head, "authorization"),
            );
            let (status, body) = match (head.starts_with("GET "), path) {
                (true, "/metrics") if !authorized => (
                    "401 Unauthorized",
                    oakestra_daemon::metrics::unauthorized_message("worker") + "\n",
                ),
                (true, "/metrics") => (
                    "200 OK",
                    engine.metrics_text() + &crate::host_io::render(&data_dir),
                ),
                (true, "/health") => ("200 OK", "ok\n".to_owned()),
                _ => (
                    "404 Not Found",
                    "only GET /metrics and /health\n".to_owned(),
                ),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// The value of header `name` (lower case) in a request head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}
