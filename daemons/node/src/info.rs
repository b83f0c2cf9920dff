//! What the worker says about itself: static facts collected once at start (host name,
//! architecture, cores, total memory, cgroup limits) and, every tick, CPU and memory use from
//! two small procfs reads (`/proc/stat`, `/proc/meminfo`). No host rescans, no subprocesses.

use std::net::{IpAddr, UdpSocket};
use std::path::{Path, PathBuf};

use oakestra_proto::mqtt::NodeInfo;

/// CPU time counters of the first line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    /// Sum of all fields (jiffies).
    pub total: u64,
    /// idle + iowait.
    pub idle: u64,
}

/// Parses the aggregate `cpu ` line of `/proc/stat`.
pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if fields.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is already
    // counted in user/nice, so it is left out of the total.
    let total = fields.iter().take(8).sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Some(CpuTimes { total, idle })
}

/// CPU use in percent between two samples.
pub fn cpu_percent(before: CpuTimes, after: CpuTimes) -> f64 {
    let total = after.total.saturating_sub(before.total);
    if total == 0 {
        return 0.0;
    }
    let idle = after.idle.saturating_sub(before.idle).min(total);
    100.0 * (total - idle) as f64 / total as f64
}

/// Total and available memory from `/proc/meminfo`, in kB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemInfo {
    /// The `MemTotal` line: all usable memory.
    pub total_kb: u64,
    /// MemAvailable (MemFree on kernels without it).
    pub available_kb: u64,
}

/// Parses `/proc/meminfo`.
pub fn parse_meminfo(text: &str) -> Option<MemInfo> {
    let mut total = None;
    let mut available = None;
    let mut free = None;
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let key = parts.next();
        let value = parts.next().and_then(|v| v.parse::<u64>().ok());
        match key {
            Some("MemTotal:") => total = value,
            Some("MemAvailable:") => available = value,
            Some("MemFree:") => free = value,
            _ => {}
        }
    }
    Some(MemInfo {
        total_kb: total?,
        available_kb: available.or(free)?,
    })
}

/// A cgroup v2 `memory.max` value in bytes (`max` = none).
pub fn parse_memory_max(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// A cgroup v2 `cpu.max` value (`QUOTA PERIOD`) in cores (`max` = none).
pub fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut parts = text.split_whitespace();
    let quota: f64 = parts.next()?.parse().ok()?;
    let period: f64 = parts.next().unwrap_or("100000").parse().ok()?;
    (period > 0.0).then_some(quota / period)
}

/// The cgroup v2 directory of this process, from `/proc/self/cgroup` (`0::/path`).
fn own_cgroup_dir() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/')))
}

/// The host name, from the kernel (no subprocess).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "worker".to_owned())
}

/// Go's name of this machine's architecture (`amd64`, `arm64`, …), as Oakestra reports it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

/// Resources the worker advertises instead of what it measures (simulated workers).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SimulatedResources {
    /// Logical cores.
    pub vcpus: u32,
    /// Total memory, MB.
    pub memory_mb: u64,
    /// CPU use reported every tick, percent.
    pub cpu_percent: f64,
}

/// The local address the kernel would use to reach `host:port` (a connected UDP socket sends
/// nothing). Falls back to loopback.
pub fn local_ip_towards(host: &str, port: u16) -> String {
    let probe = || -> std::io::Result<IpAddr> {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.connect((host, port))?;
        Ok(socket.local_addr()?.ip())
    };
    match probe() {
        Ok(ip) if !ip.is_unspecified() => ip.to_string(),
        _ => "127.0.0.1".to_owned(),
    }
}

/// Produces the `information` payload every tick.
#[derive(Debug)]
pub struct InfoCollector {
    base: NodeInfo,
    source: Source,
}

#[derive(Debug)]
enum Source {
    Host {
        last_cpu: Option<CpuTimes>,
        /// Memory limit of our cgroup, kB, when below the host's memory.
        memory_cap_kb: Option<u64>,
    },
    Simulated(SimulatedResources),
}

impl InfoCollector {
    /// Measures the host (static facts now, usage each tick).
    pub fn host(mut base: NodeInfo) -> Self {
        let cgroup = own_cgroup_dir();
        let read = |name: &str| {
            cgroup
                .as_ref()
                .and_then(|d| std::fs::read_to_string(d.join(name)).ok())
        };
        let memory_cap_kb = read("memory.max")
            .as_deref()
            .and_then(parse_memory_max)
            .map(|b| b / 1024);
        let cores = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        let cpu_cap = read("cpu.max").as_deref().and_then(parse_cpu_max);
        base.vcpus = match cpu_cap {
            Some(c) if c >= 1.0 => (c.floor() as u32).min(cores),
            _ => cores,
        };
        let mut collector = Self {
            base,
            source: Source::Host {
                last_cpu: None,
                memory_cap_kb,
            },
        };
        // Prime the CPU counters so the first report has a window.
        let _ = collector.sample();
        collector
    }

    /// Reports the given resources instead of measuring (simulated workers).
    pub fn simulated(mut base: NodeInfo, resources: SimulatedResources) -> Self {
        base.vcpus = resources.vcpus;
        Self {
            base,
            source: Source::Simulated(resources),
        }
    }

    /// The static part (registration body).
    pub fn base(&self) -> &NodeInfo {
        &self.base
    }

    /// Sets the id once registered.
    pub fn set_id(&mut self, id: &str) {
        id.clone_into(&mut self.base.id);
    }

    /// A full report with fresh usage numbers (the static part plus CPU and memory use).
    pub fn sample(&mut self) -> NodeInfo {
        let mut info = self.base.clone();
        match &mut self.source {
            Source::Host {
                last_cpu,
                memory_cap_kb,
            } => {
                // procfs reads are served from kernel memory; they do not block on a disk.
                if let Some(now) = std::fs::read_to_string("/proc/stat")
                    .ok()
                    .as_deref()
                    .and_then(parse_proc_stat)
                {
                    if let Some(before) = *last_cpu {
                        info.cpu_percent = round2(cpu_percent(before, now));
                    }
                    *last_cpu = Some(now);
                }
                if let Some(mem) = std::fs::read_to_string("/proc/meminfo")
                    .ok()
                    .as_deref()
                    .and_then(parse_meminfo)
                {
                    let total = memory_cap_kb
                        .filter(|cap| *cap < mem.total_kb)
                        .unwrap_or(mem.total_kb);
                    let available = mem.available_kb.min(total);
                    info.memory = available / 1024;
                    info.memory_total = Some(total / 1024);
                    info.memory_percent = if total > 0 {
                        round2(100.0 * (total - available) as f64 / total as f64)
                    } else {
                        0.0
                    };
                }
            }
            Source::Simulated(resources) => {
                info.cpu_percent = resources.cpu_percent;
                info.memory = resources.memory_mb;
                info.memory_total = Some(resources.memory_mb);
                info.memory_percent = 0.0;
            }
        }
        info
    }

    /// Total memory in MB (for per-instance memory percentages).
    pub fn memory_total_mb(&self) -> u64 {
        match &self.source {
            Source::Simulated(r) => r.memory_mb,
            Source::Host { memory_cap_kb, .. } => {
                let host = std::fs::read_to_string("/proc/meminfo")
                    .ok()
                    .as_deref()
                    .and_then(parse_meminfo)
                    .map(|m| m.total_kb)
                    .unwrap_or(0);
                memory_cap_kb.filter(|c| *c < host).unwrap_or(host) / 1024
            }
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_and_cpu_percent() {
        let a = parse_proc_stat(
            "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 50 0 50 350 50 0 0 0 0 0\nintr 1\n",
        )
        .unwrap();
        assert_eq!(
            a,
            CpuTimes {
                total: 1000,
                idle: 800
            }
        );
        let b = parse_proc_stat("cpu  150 0 150 1450 150 0 0 0 0 0\n").unwrap();
        // 900 jiffies passed, 800 idle → 11.1 %.
        assert!((cpu_percent(a, b) - 100.0 / 9.0).abs() < 1e-9);
        assert_eq!(cpu_percent(b, b), 0.0);
        assert_eq!(cpu_percent(b, a), 0.0);
        assert!(parse_proc_stat("intr 1\n").is_none());
        assert!(parse_proc_stat("cpu  1 x 3 4\n").is_none());
    }

    #[test]
    fn meminfo_and_cgroup_files() {
        let m = parse_meminfo(
            "MemTotal:       16000000 kB\nMemFree:         1000000 kB\nMemAvailable:    8000000 kB\n",
        )
        .unwrap();
        assert_eq!(
            m,
            MemInfo {
                total_kb: 16_000_000,
                available_kb: 8_000_000
            }
        );
        let old = parse_meminfo("MemTotal: 100 kB\nMemFree: 40 kB\n").unwrap();
        assert_eq!(old.available_kb, 40);
        assert!(parse_meminfo("Buffers: 1 kB\n").is_none());
        assert_eq!(parse_memory_max("max\n"), None);
        assert_eq!(parse_memory_max("1073741824\n"), Some(1 << 30));
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("200000 100000\n"), Some(2.0));
    }

    #[test]
    fn host_sample_has_sane_numbers() {
        let mut c = InfoCollector::host(NodeInfo::default());
        let info = c.sample();
        assert!(info.vcpus >= 1);
        assert!(info.memory_total.unwrap() > 0);
        assert!((0.0..=100.0).contains(&info.memory_percent));
        assert!((0.0..=100.0).contains(&info.cpu_percent));
        assert!(!hostname().is_empty());
        assert_eq!(local_ip_towards("127.0.0.1", 10100), "127.0.0.1");
    }

    #[test]
    fn simulated_sample_reports_the_configuration() {
        let mut c = InfoCollector::simulated(
            NodeInfo::default(),
            SimulatedResources {
                vcpus: 8,
                memory_mb: 4096,
                cpu_percent: 3.0,
            },
        );
        let info = c.sample();
        assert_eq!((info.vcpus, info.memory, info.cpu_percent), (8, 4096, 3.0));
    }
}
