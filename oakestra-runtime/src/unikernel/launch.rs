//! Starting an instance: its directory (a copy of the image's), the guest network, and qemu
//! under a shell wrapper in a process group of its own, with the console log.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::*;

/// Records qemu's exit status in `$OAK_EXIT_FILE` so that a runtime that did not start the
/// process (after a worker restart) still learns it.
const WRAPPER: &str = r#""$@"; s=$?; echo "$s" > "$OAK_EXIT_FILE.tmp" && mv "$OAK_EXIT_FILE.tmp" "$OAK_EXIT_FILE"; exit "$s""#;

impl UnikernelRuntime {
    pub(super) async fn launch(&self, spec: &InstanceSpec) -> Result<u64, RuntimeError> {
        let id_text = spec.id.to_string();
        let fail = |reason: String| RuntimeError::Start {
            id: id_text.clone(),
            reason,
        };
        let qemu_bin = self.shared.qemu.clone().ok_or_else(|| {
            fail(format!(
                "{} is not installed (Debian: qemu-system-x86 / qemu-system-arm; run scripts/setup)",
                qemu::qemu_binary_name()
            ))
        })?;
        let image = self.image_of(spec).await?;
        let kvm = self.uses_kvm().await;

        let dir = self.instance_dir(&spec.id);
        let qmp = self.qmp_path(&spec.id);
        if qmp.as_os_str().len() > 107 {
            return Err(fail(format!(
                "the QMP socket path {} is longer than a unix socket allows; use a shorter data directory",
                qmp.display()
            )));
        }
        let _ = tokio::fs::remove_dir_all(&dir).await;
        let _ = tokio::fs::remove_file(&qmp).await;
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| fail(format!("creating {}: {e}", dir.display())))?;
        let console = dir.join(log::CURRENT);
        let pidfile = dir.join("qemu.pid");
        let memory_mb = match spec.memory_limit_mb {
            0 => self.shared.config.default_memory_mb,
            mb => mb,
        };
        let vcpus = (spec.cpu_limit.ceil() as u32).max(1);
        // Each instance gets its own copy of the shared directories, so what a guest writes
        // stays with it and the cached image stays pristine.
        let mut shares = Vec::new();
        for (tag, source) in &image.shares {
            let copy = dir.join(source.file_name().unwrap_or_default());
            let (from, to) = (source.clone(), copy.clone());
            tokio::task::spawn_blocking(move || copy_dir(&from, &to))
                .await
                .map_err(|e| fail(format!("copying {}: {e}", source.display())))?
                .map_err(|e| fail(format!("copying {}: {e}", source.display())))?;
            shares.push((tag.clone(), copy));
        }
        let net = self.guest_net(&spec.id);
        let mut append = spec.cmd.join(" ");
        if let Some(net) = &net {
            if !append.is_empty() {
                append.push(' ');
            }
            append.push_str(&net.kernel_arg);
        }
        let args = qemu::args(&qemu::Launch {
            name: &id_text,
            memory_mb,
            vcpus,
            kernel: &image.kernel,
            initrd: image.initrd.as_deref(),
            append,
            tap: net.as_ref().map(|n| n.tap.as_str()),
            shares,
            console: &console,
            qmp: &qmp,
            pidfile: &pidfile,
            kvm,
        });
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&console)
            .map_err(|e| fail(format!("creating {}: {e}", console.display())))?;
        let log2 = log
            .try_clone()
            .map_err(|e| fail(format!("opening {}: {e}", console.display())))?;
        let incarnation = self.allocate_incarnation().await?;
        tracing::debug!(
            "unikernel: {id_text}: {} {}",
            qemu_bin.display(),
            args.join(" ")
        );
        // With a network, qemu runs in the instance's namespace, where its TAP is (nsenter
        // joins it and execs the wrapper, so the process tree is the same).
        let mut command = match &net {
            Some(net) => {
                let mut c = tokio::process::Command::new("nsenter");
                c.arg(format!("--net={}", net.netns.display()))
                    .arg("/bin/sh");
                c
            }
            None => tokio::process::Command::new("/bin/sh"),
        };
        let mut child = command
            .arg("-c")
            .arg(WRAPPER)
            .arg("oakestra-unikernel")
            .arg(&qemu_bin)
            .args(&args)
            .env("OAK_EXIT_FILE", dir.join("exit_status"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Its own process group: a Ctrl-C or stop of the worker does not reach qemu.
            .process_group(0)
            .spawn()
            .map_err(|e| fail(format!("spawning {}: {e}", qemu_bin.display())))?;
        let wrapper_pid = child.id().unwrap_or(0);
        let meta = Meta {
            spec: spec.clone(),
            incarnation,
            wrapper_pid,
        };
        let meta_json = serde_json::to_vec_pretty(&meta).unwrap_or_default();
        if let Err(e) = tokio::fs::write(dir.join("meta.json"), meta_json).await {
            kill_group(wrapper_pid).await;
            let _ = child.wait().await;
            return Err(fail(format!("writing meta.json: {e}")));
        }

        // Up when qemu wrote its pid file and answers on QMP; a qemu that exits before
        // writing its pid file failed to start (bad kernel, bad option).
        let deadline = Instant::now() + self.shared.config.start_timeout;
        loop {
            if pidfile.exists() && qmp::answers(&qmp, Duration::from_secs(1)).await {
                break;
            }
            if let Ok(Some(_)) = child.try_wait() {
                if pidfile.exists() {
                    break; // it ran, and already ended; the watcher reports the exit
                }
                let log = log::tail(&dir, 2000).unwrap_or_default();
                let _ = tokio::fs::remove_dir_all(&dir).await;
                return Err(fail(format!("qemu exited during start: {}", log.trim())));
            }
            if Instant::now() > deadline {
                kill_group(wrapper_pid).await;
                let _ = child.wait().await;
                let log = log::tail(&dir, 2000).unwrap_or_default();
                let _ = tokio::fs::remove_dir_all(&dir).await;
                return Err(fail(format!(
                    "qemu did not come up within {:?}: {}",
                    self.shared.config.start_timeout,
                    log.trim()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let (exited, _) = watch::channel(false);
        self.spawn_log_keeper(dir.clone(), exited.subscribe());
        self.lock().instances.insert(
            spec.id.clone(),
            Instance {
                spec: spec.clone(),
                incarnation,
                dir: dir.clone(),
                qmp,
                state: InstanceState::Running,
                exited,
                cpu_sample: None,
            },
        );
        let this = self.clone();
        let id = spec.id.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            let recorded = read_exit_status(&dir);
            let status = recorded.unwrap_or_else(|| match status {
                Ok(s) => s.code().unwrap_or_else(|| {
                    use std::os::unix::process::ExitStatusExt;
                    128 + s.signal().unwrap_or(9)
                }),
                Err(_) => LOST_EXIT_CODE,
            });
            this.exited(&id, incarnation, status);
        });
        tracing::info!(
            "unikernel: started {id_text} (incarnation {incarnation}, {}, {memory_mb} MB, {vcpus} vCPU)",
            if kvm { "KVM" } else { "TCG" }
        );
        Ok(incarnation)
    }
}

/// Copies the directory tree `from` to `to` (files, directories and symlinks).
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_dir(&source, &target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &target)?;
        } else {
            std::fs::copy(&source, &target)?;
        }
    }
    Ok(())
}
