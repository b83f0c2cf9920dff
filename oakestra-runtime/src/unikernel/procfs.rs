//! Process facts from /proc: liveness (guarded against pid reuse), CPU time and RSS.

use std::path::Path;

/// Clock ticks per second of /proc/<pid>/stat (USER_HZ; 100 on every mainstream Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// Whether `pid` runs and its command line mentions `marker` (the instance directory), so a
/// reused pid is not mistaken for the instance. Zombies have an empty command line.
pub fn alive_with(pid: u32, marker: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| String::from_utf8_lossy(&raw).contains(marker))
        .unwrap_or(false)
}

/// The pid in a pid file.
pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// CPU seconds used (user + system) and seconds since the process started.
pub fn cpu_times(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // state is field 3 of the full line, so utime (14), stime (15), starttime (22) are 11, 12, 19 here.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let start: f64 = fields.get(19)?.parse().ok()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((
        (utime + stime) / TICKS_PER_SECOND,
        (uptime - start / TICKS_PER_SECOND).max(0.0),
    ))
}

/// Resident memory in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let (cpu, age) = cpu_times(me).unwrap();
        assert!(cpu >= 0.0 && age >= 0.0);
        assert!(rss_bytes(me).unwrap() > 0);
        assert!(!alive_with(me, "no-such-marker-in-the-cmdline"));
    }
}
