//! The OCI runtime spec (config.json) of an instance, built from its [`InstanceSpec`] and the
//! image configuration: command, environment, privileges, network namespace and the cgroup
//! limits from `memory` (MB) and `vcpus` (a CPU quota) that Oakestra never applies.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::InstanceSpec;

/// The parts of an OCI image configuration a container start needs.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ImageConfig {
    /// `config` of the image configuration JSON.
    #[serde(default)]
    pub config: ImageRunConfig,
    /// `rootfs` (diff ids).
    #[serde(default)]
    pub rootfs: ImageRootfs,
}

/// `config` of an image configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageRunConfig {
    /// `KEY=VALUE`.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// Entrypoint.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// Default arguments.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// Working directory.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// `uid[:gid]`.
    #[serde(default)]
    pub user: Option<String>,
}

/// `rootfs` of an image configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ImageRootfs {
    /// Uncompressed layer digests, bottom first.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// Where the container's network comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkSetup {
    /// The host's network (no network namespace).
    Host,
    /// A new, empty network namespace (loopback only), as Oakestra without its overlay.
    Isolated,
    /// Join this namespace (the NetManager's, `/var/run/netns/<name>`).
    Join(String),
}

/// Default capabilities of an unprivileged container (Docker's set).
const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability, for privileged containers.
const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
];

const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// CPU period of the quota, µs.
pub const CPU_PERIOD_US: u64 = 100_000;

/// The process arguments: `cmd` replaces entrypoint and arguments (as in Oakestra), otherwise
/// the image's entrypoint followed by its cmd.
pub fn process_args(spec: &InstanceSpec, image: &ImageConfig) -> Result<Vec<String>, String> {
    if !spec.cmd.is_empty() {
        return Ok(spec.cmd.clone());
    }
    let mut args = image.config.entrypoint.clone().unwrap_or_default();
    args.extend(image.config.cmd.clone().unwrap_or_default());
    if args.is_empty() {
        return Err("the image has no entrypoint or cmd; set cmd in the service".into());
    }
    Ok(args)
}

/// The environment: the image's, then `HOSTNAME`, then the service's (later keys win).
pub fn environment(spec: &InstanceSpec, image: &ImageConfig, hostname: &str) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    let mut set = |entry: &str| {
        let key = entry.split_once('=').map_or(entry, |(k, _)| k);
        env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
        env.push(entry.to_string());
    };
    set("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for e in image.config.env.iter().flatten() {
        set(e);
    }
    set(&format!("HOSTNAME={hostname}"));
    for e in &spec.env {
        set(e);
    }
    env
}

fn user(image: &ImageConfig) -> (u32, u32) {
    let user = image.config.user.as_deref().unwrap_or("");
    let (u, g) = user.split_once(':').unwrap_or((user, ""));
    let uid = u.parse().unwrap_or(0);
    let gid = g.parse().unwrap_or(uid);
    if !user.is_empty() && u.parse::<u32>().is_err() && u != "root" {
        tracing::warn!("image user {user:?} is not numeric; running as root");
    }
    (uid, gid)
}

/// Where iproute2's convention keeps a namespace's own copy of `/etc/<file>`:
/// `/etc/netns/<name>/<file>` for a container joining `/run/netns/<name>` (what `ip netns exec`
/// bind-mounts too). The worker's overlay writes the instance's `resolv.conf` there, pointing
/// at its DNS responder.
pub fn namespace_file(network: &NetworkSetup, file: &str) -> Option<std::path::PathBuf> {
    let NetworkSetup::Join(path) = network else {
        return None;
    };
    let name = Path::new(path).file_name()?;
    let file = Path::new(file).file_name()?;
    Some(Path::new("/etc/netns").join(name).join(file))
}

/// The runtime spec JSON. `cgroups_path` is the container's cgroup (cgroupfs form).
pub fn runtime_spec(
    spec: &InstanceSpec,
    image: &ImageConfig,
    network: &NetworkSetup,
    cgroups_path: &str,
) -> Result<Value, String> {
    let hostname = format!("instance-{}", spec.id.instance);
    let args = process_args(spec, image)?;
    let env = environment(spec, image, &hostname);
    let (uid, gid) = user(image);
    let caps: Vec<&str> = if spec.privileged {
        ALL_CAPS.to_vec()
    } else {
        DEFAULT_CAPS.to_vec()
    };
    let cwd = image
        .config
        .working_dir
        .clone()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/".into());

    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
    ];
    let sys_ro = if spec.privileged { "rw" } else { "ro" };
    if *network == NetworkSetup::Host {
        // A sysfs of the host's network namespace cannot be mounted from a new user-less
        // container without net ns; bind the host's.
        mounts.push(json!({"destination": "/sys", "type": "bind", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", sys_ro]}));
    } else {
        mounts.push(json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", sys_ro]}));
    }
    mounts.push(json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}));
    for file in ["/etc/resolv.conf", "/etc/hosts"] {
        let source = namespace_file(network, file)
            .filter(|f| f.exists())
            .unwrap_or_else(|| Path::new(file).to_path_buf());
        if source.exists() {
            mounts.push(json!({"destination": file, "type": "bind", "source": source, "options": ["rbind", "ro"]}));
        }
    }

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    match network {
        NetworkSetup::Host => {}
        NetworkSetup::Isolated => namespaces.push(json!({"type": "network"})),
        NetworkSetup::Join(path) => namespaces.push(json!({"type": "network", "path": path})),
    }

    let mut resources = serde_json::Map::new();
    let devices = if spec.privileged {
        json!([{"allow": true, "access": "rwm"}])
    } else {
        json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 7, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 8, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 9, "access": "rwm"},
            {"allow": true, "type": "c", "major": 5, "minor": 0, "access": "rwm"},
            {"allow": true, "type": "c", "major": 5, "minor": 1, "access": "rwm"},
            {"allow": true, "type": "c", "major": 5, "minor": 2, "access": "rwm"},
            {"allow": true, "type": "c", "major": 136, "access": "rwm"},
            {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rwm"}
        ])
    };
    resources.insert("devices".into(), devices);
    if spec.memory_limit_mb > 0 {
        let bytes = spec.memory_limit_mb.saturating_mul(1 << 20);
        // swap == limit: no swap on top of the limit, so the limit really bounds the task.
        resources.insert("memory".into(), json!({"limit": bytes, "swap": bytes}));
    }
    if spec.cpu_limit > 0.0 {
        let quota = (spec.cpu_limit * CPU_PERIOD_US as f64).round().max(1000.0) as i64;
        resources.insert(
            "cpu".into(),
            json!({"quota": quota, "period": CPU_PERIOD_US}),
        );
    }

    let mut linux = json!({
        "namespaces": namespaces,
        "resources": resources,
        "cgroupsPath": cgroups_path,
    });
    if !spec.privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
    }

    Ok(json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": !spec.privileged,
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": hostname,
        "mounts": mounts,
        "linux": linux,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InstanceId;

    fn spec() -> InstanceSpec {
        InstanceSpec {
            id: InstanceId::new("a.b.c.d", 3),
            image: "busybox".into(),
            virtualization: "docker".into(),
            cmd: vec![],
            env: vec!["A=1".into(), "PATH=/custom".into()],
            ports: vec![],
            memory_limit_mb: 64,
            cpu_limit: 0.5,
            storage_mb: 0,
            one_shot: false,
            privileged: false,
            arch: vec![],
            platform: None,
        }
    }

    fn image() -> ImageConfig {
        serde_json::from_value(json!({
            "config": {"Env": ["PATH=/bin", "B=2"], "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"], "WorkingDir": "/w"},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:aa"]}
        }))
        .unwrap()
    }

    #[test]
    fn cmd_replaces_entrypoint_and_args() {
        let mut s = spec();
        assert_eq!(
            process_args(&s, &image()).unwrap(),
            ["/bin/sh", "-c", "echo hi"]
        );
        s.cmd = vec!["sleep".into(), "1".into()];
        assert_eq!(process_args(&s, &image()).unwrap(), ["sleep", "1"]);
        s.cmd.clear();
        assert!(
            process_args(&s, &ImageConfig::default())
                .unwrap_err()
                .contains("set cmd")
        );
    }

    #[test]
    fn service_environment_overrides_the_image() {
        let env = environment(&spec(), &image(), "instance-3");
        assert!(env.contains(&"PATH=/custom".to_string()), "{env:?}");
        assert!(env.contains(&"B=2".to_string()));
        assert!(env.contains(&"A=1".to_string()));
        assert!(env.contains(&"HOSTNAME=instance-3".to_string()));
        assert_eq!(env.iter().filter(|e| e.starts_with("PATH=")).count(), 1);
    }

    #[test]
    fn limits_become_cgroup_resources() {
        let v = runtime_spec(&spec(), &image(), &NetworkSetup::Isolated, "/oakestra/x").unwrap();
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(v["linux"]["resources"]["cpu"]["period"], 100_000);
        assert_eq!(v["linux"]["cgroupsPath"], "/oakestra/x");
        assert_eq!(v["process"]["cwd"], "/w");
        assert_eq!(v["hostname"], "instance-3");
        let ns = v["linux"]["namespaces"].as_array().unwrap();
        assert!(
            ns.iter()
                .any(|n| n["type"] == "network" && n.get("path").is_none())
        );
    }

    #[test]
    fn a_joined_namespace_gets_its_own_resolv_conf_by_iproute2_convention() {
        let joined = NetworkSetup::Join("/var/run/netns/tag-app.ns.web.ns.0".into());
        assert_eq!(
            namespace_file(&joined, "/etc/resolv.conf"),
            Some(std::path::PathBuf::from(
                "/etc/netns/tag-app.ns.web.ns.0/resolv.conf"
            ))
        );
        assert_eq!(
            namespace_file(&NetworkSetup::Isolated, "/etc/resolv.conf"),
            None
        );
        assert_eq!(namespace_file(&NetworkSetup::Host, "/etc/hosts"), None);
    }

    #[test]
    fn privileged_and_joined_network() {
        let mut s = spec();
        s.privileged = true;
        s.memory_limit_mb = 0;
        s.cpu_limit = 0.0;
        let v = runtime_spec(
            &s,
            &image(),
            &NetworkSetup::Join("/var/run/netns/x".into()),
            "/o/x",
        )
        .unwrap();
        assert!(v["linux"]["resources"].get("memory").is_none());
        assert!(v["linux"]["resources"].get("cpu").is_none());
        assert!(v["linux"].get("maskedPaths").is_none());
        let caps = v["process"]["capabilities"]["bounding"].as_array().unwrap();
        assert!(caps.iter().any(|c| c == "CAP_SYS_ADMIN"));
        let ns = v["linux"]["namespaces"].as_array().unwrap();
        assert!(ns.iter().any(|n| n["path"] == "/var/run/netns/x"));
        let host = runtime_spec(&s, &image(), &NetworkSetup::Host, "/o/x").unwrap();
        assert!(
            !host["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["type"] == "network")
        );
    }
}
