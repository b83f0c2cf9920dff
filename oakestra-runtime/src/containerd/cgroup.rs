//! What the runtime reads of a container's cgroup (CPU time, memory in use, OOM kills), on the
//! unified (v2) and the legacy (v1) hierarchy. The files are read through [`CgroupFs`], so the
//! parsing is tested with `FakeCgroupFs` without a cgroup of our own.

use std::fmt;

/// The cgroup file system, by path relative to its root (`/sys/fs/cgroup`).
pub trait CgroupFs: Send + Sync + fmt::Debug {
    /// Whether `path` exists.
    fn exists(&self, path: &str) -> bool;
    /// The contents of file `path`, `None` when it cannot be read.
    fn read(&self, path: &str) -> Option<String>;
}

/// The host's `/sys/fs/cgroup`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SysFsCgroup;

const ROOT: &str = "/sys/fs/cgroup";

impl CgroupFs for SysFsCgroup {
    fn exists(&self, path: &str) -> bool {
        std::path::Path::new(ROOT).join(path).exists()
    }

    fn read(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(std::path::Path::new(ROOT).join(path)).ok()
    }
}

/// Whether the hierarchy is the unified (v2) one.
fn v2(fs: &dyn CgroupFs) -> bool {
    fs.exists("cgroup.controllers")
}

fn read_u64(fs: &dyn CgroupFs, path: &str) -> Option<u64> {
    fs.read(path)?.trim().parse().ok()
}

/// The value of `key` in a flat keyed file (`key value` lines).
fn keyed(fs: &dyn CgroupFs, path: &str, key: &str) -> Option<u64> {
    fs.read(path)?.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Whether the kernel OOM-killed a task of `cgroup` (a cgroupfs path such as
/// `/oakestra/<container>`).
pub(super) fn oom_killed(fs: &dyn CgroupFs, cgroup: &str) -> bool {
    let rel = cgroup.trim_start_matches('/');
    let kills = if v2(fs) {
        keyed(fs, &format!("{rel}/memory.events"), "oom_kill")
    } else {
        keyed(fs, &format!("memory/{rel}/memory.oom_control"), "oom_kill")
    };
    kills.is_some_and(|n| n > 0)
}

/// CPU time used (ns) and memory in use (bytes) of `cgroup`; `None` without CPU accounting
/// (no such cgroup).
pub(super) fn usage(fs: &dyn CgroupFs, cgroup: &str) -> Option<(u64, u64)> {
    let rel = cgroup.trim_start_matches('/');
    if v2(fs) {
        let cpu = keyed(fs, &format!("{rel}/cpu.stat"), "usage_usec")? * 1000;
        let mem = read_u64(fs, &format!("{rel}/memory.current")).unwrap_or(0);
        Some((cpu, mem))
    } else {
        let cpu = read_u64(fs, &format!("cpuacct/{rel}/cpuacct.usage"))
            .or_else(|| read_u64(fs, &format!("cpu,cpuacct/{rel}/cpuacct.usage")))?;
        let mem = read_u64(fs, &format!("memory/{rel}/memory.usage_in_bytes")).unwrap_or(0);
        Some((cpu, mem))
    }
}

/// A cgroup file system in memory that records which files were read.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct FakeCgroupFs {
    files: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
    reads: std::sync::Mutex<Vec<String>>,
}

#[cfg(test)]
impl FakeCgroupFs {
    /// A file system holding `files` (path, contents).
    pub fn with(files: &[(&str, &str)]) -> Self {
        let fake = Self::default();
        for (path, contents) in files {
            fake.set(path, contents);
        }
        fake
    }

    /// Writes file `path`.
    pub fn set(&self, path: &str, contents: &str) {
        self.files
            .lock()
            .unwrap()
            .insert(path.to_owned(), contents.to_owned());
    }

    /// The files read so far, in order.
    pub fn reads(&self) -> Vec<String> {
        self.reads.lock().unwrap().clone()
    }
}

#[cfg(test)]
impl CgroupFs for FakeCgroupFs {
    fn exists(&self, path: &str) -> bool {
        self.files.lock().unwrap().contains_key(path)
    }

    fn read(&self, path: &str) -> Option<String> {
        self.reads.lock().unwrap().push(path.to_owned());
        self.files.lock().unwrap().get(path).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPU_STAT: &str = "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n";

    #[test]
    fn v2_reads_cpu_stat_memory_current_and_memory_events() {
        let fs = FakeCgroupFs::with(&[
            ("cgroup.controllers", "cpu memory"),
            ("oakestra/app.instance.0/cpu.stat", CPU_STAT),
            ("oakestra/app.instance.0/memory.current", "4096\n"),
            (
                "oakestra/app.instance.0/memory.events",
                "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
            ),
        ]);
        assert_eq!(
            usage(&fs, "/oakestra/app.instance.0"),
            Some((2_500_000, 4096))
        );
        assert!(oom_killed(&fs, "/oakestra/app.instance.0"));
        assert!(
            fs.reads()
                .contains(&"oakestra/app.instance.0/memory.events".to_owned())
        );
        // No OOM kill recorded, and no cgroup at all.
        fs.set(
            "oakestra/app.instance.0/memory.events",
            "oom 0\noom_kill 0\n",
        );
        assert!(!oom_killed(&fs, "/oakestra/app.instance.0"));
        assert_eq!(usage(&fs, "/oakestra/gone"), None);
        assert!(!oom_killed(&fs, "/oakestra/gone"));
    }

    #[test]
    fn v2_without_memory_accounting_reports_zero_memory() {
        let fs = FakeCgroupFs::with(&[("cgroup.controllers", "cpu"), ("c/cpu.stat", CPU_STAT)]);
        assert_eq!(usage(&fs, "c"), Some((2_500_000, 0)));
        // A cpu.stat without usage_usec is no CPU accounting.
        fs.set("c/cpu.stat", "user_usec 1\n");
        assert_eq!(usage(&fs, "c"), None);
    }

    #[test]
    fn v1_reads_cpuacct_in_either_mount_and_the_memory_controller() {
        let fs = FakeCgroupFs::with(&[
            ("cpuacct/oakestra/x/cpuacct.usage", "123456789\n"),
            ("memory/oakestra/x/memory.usage_in_bytes", "8192\n"),
            (
                "memory/oakestra/x/memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
            ),
        ]);
        assert_eq!(usage(&fs, "/oakestra/x"), Some((123_456_789, 8192)));
        assert!(oom_killed(&fs, "/oakestra/x"));
        assert!(!fs.reads().iter().any(|r| r.ends_with("cpu.stat")));

        let combined = FakeCgroupFs::with(&[("cpu,cpuacct/oakestra/y/cpuacct.usage", "7")]);
        assert_eq!(usage(&combined, "/oakestra/y"), Some((7, 0)));
        assert_eq!(
            combined.reads(),
            [
                "cpuacct/oakestra/y/cpuacct.usage",
                "cpu,cpuacct/oakestra/y/cpuacct.usage",
                "memory/oakestra/y/memory.usage_in_bytes"
            ]
        );
        assert!(!oom_killed(&combined, "/oakestra/y"));
    }
}
