//! One microservice: its fields, the unikernel rules, and volumes.

use super::*;

impl Checker {
    pub(super) fn microservice(&mut self, m: Map<String, Value>) -> Option<Microservice> {
        let mut m = Fields::new(m);
        let id = m.take("microserviceID");
        let microservice_id = self.string("microserviceID", id, "an empty string");
        if let Some(id) = &microservice_id
            && !id.is_empty()
        {
            self.report(
                Some("microserviceID"),
                format!(
                    "must be empty (\"\") or absent: the orchestrator assigns service ids, found {id:?}"
                ),
            );
        }
        let name = m.take("microservice_name");
        let name = self.name("microservice_name", name);
        let namespace = m.take("microservice_namespace");
        let namespace = self.name("microservice_namespace", namespace);

        let virtualization = m.take("virtualization");
        let virtualization = self
            .req_string(
                "virtualization",
                virtualization,
                "a string such as \"container\", \"unikernel\" or \"crosvm\"",
            )
            .and_then(|s| {
                if s.is_empty() {
                    self.report(
                        Some("virtualization"),
                        "must not be empty: use \"container\", \"unikernel\" or \"crosvm\"",
                    );
                    None
                } else {
                    Some(Virtualization::from_name(&s))
                }
            });

        let code = m.take("code");
        let code = self
            .req_string(
                "code",
                code,
                "a string: the container image, or comma-separated kernel URLs for unikernels",
            )
            .and_then(|s| {
                if s.trim().is_empty() {
                    self.report(
                        Some("code"),
                        "must not be empty: give the container image (e.g. \"docker.io/library/nginx:latest\") or, for unikernels, the kernel URLs",
                    );
                    None
                } else {
                    Some(s)
                }
            });

        let memory = m.take("memory");
        let memory = self.uint("memory", memory, "memory in MB");
        let vcpus = m.take("vcpus");
        let vcpus = self.uint("vcpus", vcpus, "the number of CPU cores");
        let vgpus = m.take("vgpus");
        let vgpus = self.uint("vgpus", vgpus, "the number of GPUs");
        let vtpus = m.take("vtpus");
        let vtpus = self.uint("vtpus", vtpus, "the number of TPUs");
        let bandwidth_in = m.take("bandwidth_in");
        let bandwidth_in = self.uint("bandwidth_in", bandwidth_in, "inbound bandwidth");
        let bandwidth_out = m.take("bandwidth_out");
        let bandwidth_out = self.uint("bandwidth_out", bandwidth_out, "outbound bandwidth");
        let storage = m.take("storage");
        let storage = self.uint("storage", storage, "storage in MiB");
        let state = m.take("state");
        let state = self.string("state", state, "a string");

        let port = m.take("port");
        let port = self
            .string(
                "port",
                port,
                "a string of `host[:container][/tcp|udp]` entries joined by `;` (e.g. \"80:8080/tcp\")",
            )
            .and_then(|s| match s.parse::<PortSpec>() {
                Ok(spec) => Some(spec),
                Err(e) => {
                    self.report(Some("port"), e.to_string());
                    None
                }
            });

        let one_shot = m.take("one_shot");
        let one_shot = self.boolean("one_shot", one_shot);
        let restart_policy = m.take("restart_policy");
        let restart_policy = self
            .string(
                "restart_policy",
                restart_policy,
                "one of \"always\", \"on-failure\", \"never\"",
            )
            .and_then(|s| match RestartPolicy::from_name(&s) {
                Some(p) => Some(p),
                None => {
                    self.report(
                        Some("restart_policy"),
                        format!(
                            "unknown restart policy {s:?}: use one of \"always\", \"on-failure\", \"never\""
                        ),
                    );
                    None
                }
            });
        if one_shot == Some(true) && restart_policy == Some(RestartPolicy::Always) {
            self.report(
                Some("restart_policy"),
                "\"always\" contradicts one_shot: true (exit code 0 completes a one-shot \
                 instance); use \"on-failure\" or drop one_shot",
            );
        }
        let replicas = m.take("replicas");
        let replicas = self
            .uint("replicas", replicas, "the number of instances")
            .and_then(|n| match u32::try_from(n) {
                Ok(n) if n <= MAX_REPLICAS => Some(n),
                _ => {
                    self.report(
                        Some("replicas"),
                        format!("must be at most {MAX_REPLICAS}, found {n}"),
                    );
                    None
                }
            });
        let liveness_probe = m.take("liveness_probe");
        let liveness_probe = self.probe("liveness_probe", liveness_probe);
        let readiness_probe = m.take("readiness_probe");
        let readiness_probe = self.probe("readiness_probe", readiness_probe);
        if virtualization == Some(Virtualization::Unikernel) {
            for (key, probe) in [
                ("liveness_probe", &liveness_probe),
                ("readiness_probe", &readiness_probe),
            ] {
                if let Some(p) = probe
                    && matches!(p.action, crate::sla::ProbeAction::Exec(_))
                {
                    self.report(
                        Some(key),
                        "exec probes need a container: a unikernel runs no command on request; \
                         use http_get or tcp",
                    );
                }
            }
        }
        let privileged = m.take("privileged");
        let privileged = self.boolean("privileged", privileged);
        let cmd = m.take("cmd");
        let cmd = self.string_array("cmd", cmd, "the command and its arguments");
        let environment = m.take("environment");
        let environment = self.string_array("environment", environment, "\"KEY=VALUE\" entries");
        if let Some(env) = &environment {
            self.at(Seg::Key("environment"), |c| {
                for (i, entry) in env.iter().enumerate() {
                    let key = entry.split_once('=').map(|(k, _)| k);
                    if key.is_none_or(str::is_empty) {
                        c.at(Seg::Index(i), |c| {
                            c.report(
                                None,
                                format!(
                                    "{entry:?} is not an environment entry: use \"KEY=VALUE\" with a non-empty KEY"
                                ),
                            )
                        });
                    }
                }
            });
        }
        let args = m.take("args");
        let args = self.string_array("args", args, "arguments");
        let added_files = m.take("added_files");
        let added_files = self.string_array("added_files", added_files, "file names");
        let strategy = m.take("sla_violation_strategy");
        let sla_violation_strategy = self.string("sla_violation_strategy", strategy, "a string");
        let target_node = m.take("target_node");
        let target_node = self.string("target_node", target_node, "a string");

        let addresses = m.take("addresses");
        let addresses = self
            .object("addresses", addresses, "with rr_ip and/or rr_ip_v6")
            .map(|a| self.at(Seg::Key("addresses"), |c| c.addresses(a)));
        let volumes = m.take("volumes");
        let volumes = self.object_array("volumes", volumes, "a volume", |c, _, m| c.volume(m));
        let constraints = m.take("constraints");
        let constraints =
            self.object_array("constraints", constraints, "a constraint", |c, _, m| {
                c.constraint(m)
            });
        let connectivity = m.take("connectivity");
        let connectivity =
            self.object_array("connectivity", connectivity, "a connectivity", |c, _, m| {
                c.connectivity(m)
            });

        let arch_value = m.take("arch");
        let arch_given = arch_value.is_some();
        let arch = self.string_array("arch", arch_value, "CPU architectures such as \"amd64\"");
        if let Some(arch) = &arch {
            self.at(Seg::Key("arch"), |c| {
                for (i, a) in arch.iter().enumerate() {
                    if a.trim().is_empty() {
                        c.at(Seg::Index(i), |c| {
                            c.report(None, "must not be empty: name a CPU architecture such as \"amd64\" or \"arm64\"")
                        });
                    }
                }
            });
        }
        if virtualization == Some(Virtualization::Unikernel) {
            self.unikernel_rules(arch_given, arch.as_deref(), code.as_deref());
        }

        Some(Microservice {
            microservice_id,
            microservice_name: name?,
            microservice_namespace: namespace?,
            virtualization: virtualization?,
            code: code?,
            memory,
            vcpus,
            vgpus,
            vtpus,
            bandwidth_in,
            bandwidth_out,
            storage,
            state,
            port,
            one_shot,
            restart_policy,
            replicas,
            liveness_probe,
            readiness_probe,
            privileged,
            cmd,
            environment,
            args,
            added_files,
            sla_violation_strategy,
            target_node,
            addresses: addresses.flatten(),
            volumes,
            constraints,
            connectivity,
            arch,
            extra: m.into_extra(),
        })
    }

    pub(super) fn unikernel_rules(
        &mut self,
        arch_given: bool,
        arch: Option<&[String]>,
        code: Option<&str>,
    ) {
        if !arch_given {
            self.report(
                Some("arch"),
                "is required for unikernel services: a list of CPU architectures (e.g. [\"amd64\"]), one per comma-separated kernel URL in code",
            );
            return;
        }
        let (Some(arch), Some(code)) = (arch, code) else {
            return;
        };
        if arch.is_empty() {
            self.report(
                Some("arch"),
                "must name at least one CPU architecture for a unikernel service (e.g. [\"amd64\"])",
            );
            return;
        }
        let urls: Vec<&str> = code.split(',').map(str::trim).collect();
        if let Some(i) = urls.iter().position(|u| u.is_empty()) {
            self.report(
                Some("code"),
                format!(
                    "entry {i} of the comma-separated kernel URLs is empty; give one URL per architecture"
                ),
            );
        } else if urls.len() != arch.len() {
            self.report(
                Some("arch"),
                format!(
                    "has {} entr{} but code has {} comma-separated kernel URL{}; a unikernel service needs exactly one URL per architecture, in the same order",
                    arch.len(),
                    if arch.len() == 1 { "y" } else { "ies" },
                    urls.len(),
                    if urls.len() == 1 { "" } else { "s" },
                ),
            );
        }
    }

    pub(super) fn volume(&mut self, m: Map<String, Value>) -> Option<Volume> {
        let mut m = Fields::new(m);
        let volume_id = m.take("volume_id");
        let volume_id = self.req_string("volume_id", volume_id, "a string (the volume id)");
        let csi_driver = m.take("csi_driver");
        let csi_driver =
            self.req_string("csi_driver", csi_driver, "a string (the CSI driver name)");
        let mount_path = m.take("mount_path");
        let mount_path = self.string("mount_path", mount_path, "a string (a path)");
        let config = m.take("config");
        let config = self.object("config", config, "driver configuration");
        Some(Volume {
            volume_id: volume_id?,
            csi_driver: csi_driver?,
            mount_path,
            config,
            extra: m.into_extra(),
        })
    }
}
