//! The qemu side: which binary, KVM or TCG, the command line, and how qemu's exit status
//! becomes the instance's exit code.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

/// How guests are accelerated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    /// Probe KVM once per process and use it when it works and is faster than TCG.
    #[default]
    Auto,
    /// Always `-enable-kvm -cpu host`.
    Kvm,
    /// Always TCG (software emulation).
    Tcg,
}

/// The qemu binary for this worker's architecture.
pub fn qemu_binary_name() -> String {
    format!("qemu-system-{}", std::env::consts::ARCH)
}

/// Where `name` is on `PATH` (or in `dir` when given), if it is there.
pub fn find_binary(name: &str, dir: Option<&Path>) -> Option<PathBuf> {
    let dirs: Vec<PathBuf> = match dir {
        Some(d) => vec![d.to_path_buf()],
        None => std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default(),
    };
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// Whether this worker can run unikernels: `qemu-system-<arch>` is installed. The worker
/// advertises `unikernel` in its virtualizations only then.
pub fn unikernel_available() -> bool {
    find_binary(&qemu_binary_name(), None).is_some()
}

/// A multiboot image of 39 bytes whose code writes 0x2a to the isa-debug-exit port, so
/// qemu exits with status (0x2a << 1) | 1 = 85. It goes through the firmware and the kernel
/// loader like a real `-kernel` boot, in a few hundred ms.
fn probe_image() -> Vec<u8> {
    const MAGIC: u32 = 0x1BAD_B002;
    const FLAGS: u32 = 1 << 16; // the load addresses below are valid
    const LOAD: u32 = 0x10_0000;
    let checksum = 0u32.wrapping_sub(MAGIC.wrapping_add(FLAGS));
    let header = [MAGIC, FLAGS, checksum, LOAD, LOAD, 0, 0, LOAD + 32];
    let mut image: Vec<u8> = header.iter().flat_map(|w| w.to_le_bytes()).collect();
    // mov al, 0x2a; out 0xf4, al; hlt; jmp back to the hlt
    image.extend_from_slice(&[0xB0, 0x2A, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD]);
    image
}

/// qemu's exit status for the probe guest.
const PROBE_EXIT: i32 = (0x2a << 1) | 1;

/// Runs the probe guest with `accel` args; how long it took, or None when it failed or did
/// not finish within `timeout`.
async fn run_probe(
    qemu: &Path,
    image: &Path,
    accel: &[&str],
    timeout: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let mut child = tokio::process::Command::new(qemu)
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-m",
            "32",
        ])
        .args(accel)
        .arg("-kernel")
        .arg(image)
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x01"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.code() == Some(PROBE_EXIT) => Some(started.elapsed()),
        Ok(_) => None,
        Err(_) => {
            let _ = child.kill().await;
            None
        }
    }
}

static PROBED_KVM: OnceCell<bool> = OnceCell::const_new();

/// Whether guests get KVM. `Auto` probes once per process: `/dev/kvm` must open, a KVM guest
/// must finish the probe within `timeout`, and not be slower than the same guest under TCG
/// (on hosts where nested KVM traps nearly everything, a KVM guest boots far slower than
/// emulation, or hangs). Non-x86 hosts check `/dev/kvm` only.
pub async fn use_kvm(accel: Accel, qemu: &Path, scratch: &Path, timeout: Duration) -> bool {
    match accel {
        Accel::Kvm => return true,
        Accel::Tcg => return false,
        Accel::Auto => {}
    }
    *PROBED_KVM
        .get_or_init(|| async {
            let kvm_opens = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_ok();
            if !kvm_opens {
                tracing::info!("unikernel: /dev/kvm is not usable; guests run under TCG");
                return false;
            }
            if std::env::consts::ARCH != "x86_64" {
                return true;
            }
            let image = scratch.join("kvm-probe.multiboot");
            if let Err(e) = tokio::fs::write(&image, probe_image()).await {
                tracing::warn!("unikernel: cannot write the KVM probe image: {e}; using TCG");
                return false;
            }
            let kvm = run_probe(qemu, &image, &["-enable-kvm", "-cpu", "host"], timeout).await;
            let tcg = run_probe(qemu, &image, &["-accel", "tcg"], timeout).await;
            let _ = tokio::fs::remove_file(&image).await;
            let verdict = match (kvm, tcg) {
                (Some(k), Some(t)) => k <= t,
                (Some(_), None) => true,
                (None, _) => false,
            };
            tracing::info!(
                "unikernel: KVM probe {kvm:?}, TCG probe {tcg:?}: guests run under {}",
                if verdict { "KVM" } else { "TCG" }
            );
            verdict
        })
        .await
}

/// What one qemu process is started with.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    /// `-name`.
    pub name: &'a str,
    /// `-m`, MB.
    pub memory_mb: u64,
    /// `-smp`.
    pub vcpus: u32,
    /// `-kernel`.
    pub kernel: &'a Path,
    /// `-initrd`.
    pub initrd: Option<&'a Path>,
    /// `-append`, when non-empty.
    pub append: String,
    /// virtio-9p shares: (mount tag, host directory).
    pub shares: Vec<(String, PathBuf)>,
    /// The serial console log.
    pub console: &'a Path,
    /// The QMP socket.
    pub qmp: &'a Path,
    /// `-pidfile`.
    pub pidfile: &'a Path,
    /// KVM or TCG.
    pub kvm: bool,
    /// A TAP device (in the network namespace qemu runs in) for a virtio-net device.
    pub tap: Option<&'a str>,
}

/// qemu's arguments for `launch`.
pub fn args(launch: &Launch<'_>) -> Vec<String> {
    let path = |p: &Path| p.display().to_string();
    let mut args: Vec<String> = vec![
        "-name".into(),
        launch.name.into(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
    ];
    if std::env::consts::ARCH != "x86_64" {
        args.extend(["-machine".into(), "virt".into()]);
    }
    if launch.kvm {
        args.extend(["-enable-kvm".into(), "-cpu".into(), "host".into()]);
    } else {
        args.extend(["-accel".into(), "tcg".into()]);
    }
    args.extend([
        "-m".into(),
        launch.memory_mb.to_string(),
        "-smp".into(),
        launch.vcpus.to_string(),
        "-kernel".into(),
        path(launch.kernel),
    ]);
    if let Some(initrd) = launch.initrd {
        args.extend(["-initrd".into(), path(initrd)]);
    }
    if !launch.append.is_empty() {
        args.extend(["-append".into(), launch.append.clone()]);
    }
    if let Some(tap) = launch.tap {
        args.extend([
            "-netdev".into(),
            format!("tap,id=net0,ifname={tap},script=no,downscript=no"),
            "-device".into(),
            "virtio-net-pci,netdev=net0".into(),
        ]);
    }
    for (tag, dir) in &launch.shares {
        args.extend([
            "-fsdev".into(),
            format!("local,id={tag},path={},security_model=none", path(dir)),
            "-device".into(),
            format!("virtio-9p-pci,fsdev={tag},mount_tag={tag}"),
        ]);
    }
    args.extend([
        "-chardev".into(),
        format!("file,id=console,path={},append=on", path(launch.console)),
        "-serial".into(),
        "chardev:console".into(),
    ]);
    if std::env::consts::ARCH == "x86_64" {
        args.extend([
            "-device".into(),
            "isa-debug-exit,iobase=0xf4,iosize=0x04".into(),
        ]);
    }
    args.extend([
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", path(launch.qmp)),
        "-pidfile".into(),
        path(launch.pidfile),
    ]);
    args
}

/// The instance's exit code from qemu's exit status (as a shell reports it: 128 + signal
/// for a killed qemu). `forced`: the runtime had to `quit` qemu after the stop grace.
///
/// | qemu status | meaning | exit code |
/// |---|---|---|
/// | 0 | the guest powered off | 0 (143 when the runtime forced a `quit`) |
/// | 2n+1, n in 1..=63 | the guest wrote n to isa-debug-exit (port 0xf4) | n |
/// | 1 | qemu failed, or the guest wrote 0 to the port | 1 |
/// | ≥ 128 | qemu was killed by signal s = status - 128 | status (137 = SIGKILL) |
pub fn exit_code(status: i32, forced: bool) -> i32 {
    match status {
        0 if forced => 143,
        3..=127 if status % 2 == 1 => (status - 1) / 2,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_qemu_status_to_exit_codes() {
        assert_eq!(exit_code(0, false), 0);
        assert_eq!(exit_code(0, true), 143);
        assert_eq!(exit_code(3, false), 1);
        assert_eq!(exit_code(11, false), 5);
        assert_eq!(exit_code(127, false), 63);
        assert_eq!(exit_code(1, false), 1);
        assert_eq!(exit_code(137, true), 137);
        assert_eq!(exit_code(2, false), 2);
    }

    #[test]
    fn probe_image_is_a_valid_multiboot_header() {
        let image = probe_image();
        let word = |i: usize| u32::from_le_bytes(image[i * 4..i * 4 + 4].try_into().unwrap());
        assert_eq!(word(0), 0x1BAD_B002);
        assert_eq!(word(0).wrapping_add(word(1)).wrapping_add(word(2)), 0);
        assert_eq!(image.len(), 39);
    }

    #[test]
    fn args_carry_limits_kernel_and_console() {
        let p = Path::new;
        let args = args(&Launch {
            name: "a.b.c.d.instance.0",
            memory_mb: 100,
            vcpus: 2,
            kernel: p("/img/kernel"),
            initrd: Some(p("/img/initrd")),
            append: "console=ttyS0 x=1".into(),
            shares: vec![("fs0".into(), PathBuf::from("/i/files"))],
            console: p("/i/console.log"),
            qmp: p("/q/x.sock"),
            pidfile: p("/i/qemu.pid"),
            kvm: false,
            tap: Some("tap0"),
        })
        .join(" ");
        for part in [
            "-m 100",
            "-smp 2",
            "-kernel /img/kernel",
            "-initrd /img/initrd",
            "-accel tcg",
            "path=/i/console.log,append=on",
            "-qmp unix:/q/x.sock,server=on,wait=off",
            "-fsdev local,id=fs0,path=/i/files,security_model=none",
            "-device virtio-9p-pci,fsdev=fs0,mount_tag=fs0",
            "-netdev tap,id=net0,ifname=tap0,script=no,downscript=no",
            "-device virtio-net-pci,netdev=net0",
        ] {
            assert!(args.contains(part), "{part} missing in {args}");
        }
        assert!(!args.contains("enable-kvm"));
    }
}
