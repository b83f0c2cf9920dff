//! Instances on the overlay: enabling the data plane, attaching an instance's network before
//! it starts (namespace, veth, resolv.conf) and detaching it after it is removed.

use super::*;

impl Overlay {
    /// Brings the data plane up on the /26 at `subnet` and the /120 at `subnet_v6`; see
    /// [`Self::enable_subnets`].
    pub async fn enable(
        &self,
        subnet: std::net::Ipv4Addr,
        subnet_v6: std::net::Ipv6Addr,
        keep: &[InstanceId],
    ) -> Result<(), DataPlaneError> {
        let subnets = WorkerSubnets {
            ipv4: Ipv4Subnet::new(subnet)?,
            ipv6: Ipv6Subnet::new(subnet_v6)?,
        };
        self.enable_subnets(subnets, keep).await
    }

    /// Brings the data plane up on `subnets` (once; later calls do nothing) and reconciles
    /// with the host: the namespaces of `keep` stay, everything else of ours goes.
    pub async fn enable_subnets(
        &self,
        subnets: WorkerSubnets,
        keep: &[InstanceId],
    ) -> Result<(), DataPlaneError> {
        if self.plane.get().is_some() {
            return Ok(());
        }
        let plane: Arc<dyn DataPlane> = match &self.kind {
            PlaneKind::Fake => Arc::new(FakeDataPlane::new(subnets)),
            PlaneKind::Linux { naming, mtu } => {
                let mut config = DataPlaneConfig::new(subnets);
                config.naming = naming.clone();
                config.mtu = *mtu;
                Arc::new(LinuxDataPlane::new(config)?)
            }
        };
        plane.setup_host().await?;
        let keep: Vec<InstanceKey> = keep.iter().filter_map(|id| key_of(id).ok()).collect();
        let adopted = plane.reconcile(&keep).await?;
        {
            let mut paths = self.paths();
            for a in &adopted {
                let id = InstanceId::new(a.key.service(), a.key.number());
                paths.insert(id.to_string(), a.netns.display().to_string());
            }
        }
        tracing::info!(
            subnet = %subnets.ipv4,
            adopted = adopted.len(),
            "overlay network up"
        );
        let tunnel_at = *self.tunnel_at.lock().unwrap_or_else(|p| p.into_inner());
        let local = tunnel_at.map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |(_, a)| a);
        let proxy = Arc::clone(
            self.proxy
                .get_or_init(|| Arc::new(Mutex::new(Proxy::new(local)))),
        );
        if let (PlaneKind::Linux { naming, mtu }, Some((listen, _))) = (&self.kind, tunnel_at) {
            let (misses_tx, mut misses) = tokio::sync::mpsc::unbounded_channel::<IpAddr>();
            let tunnel = oakestra_net::dataplane::tunnel::Tunnel::start(
                oakestra_net::dataplane::tunnel::TunnelConfig {
                    device: format!("{}tun", naming.tag()),
                    listen,
                    mtu: *mtu,
                },
                proxy,
                Some(misses_tx),
            )
            .await?;
            let _ = self.probes.set(tunnel.probes());
            let _ = self.tunnel_stats.set(tunnel.stats());
            *self.tunnel.lock().unwrap_or_else(|p| p.into_inner()) = Some(tunnel);
            // Service IPs the table lacks: ask the cluster; the packet that missed is lost,
            // its retransmission finds the entry (no other traffic waits meanwhile).
            let me = self.this.clone();
            tokio::spawn(async move {
                while let Some(ip) = misses.recv().await {
                    let Some(overlay) = me.upgrade() else {
                        return;
                    };
                    overlay.query(TableQueryRequest {
                        wire_version: WireVersion::CURRENT,
                        sname: String::new(),
                        sip: ip.to_string(),
                    });
                }
            });
        }
        // The cluster pushes changes to the services this worker follows; asking for every
        // entry again now and then repairs a push lost while the broker link was down.
        let me = self.this.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(TABLE_REFRESH);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(overlay) = me.upgrade() else { return };
                overlay.refresh();
            }
        });
        // RTTs for closest IPs: the workers in the table are probed periodically.
        let me = self.this.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(RTT_PROBE_INTERVAL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(overlay) = me.upgrade() else { return };
                overlay.probe_round().await;
            }
        });
        // Another caller may have won the race; its plane is equivalent.
        let _ = self.plane.set(plane);
        if let Err(e) = self.start_dns(subnets.ipv4.bridge()).await {
            tracing::warn!(
                "{e}; instances resolve no service names (free the port or choose another with --dns-port, 0 for none)"
            );
        }
        Ok(())
    }

    /// Before an instance starts: its namespace, address and port mappings. Nothing to do
    /// when the overlay is not up (no subnet yet) or the instance is not a container.
    pub async fn attach(&self, deploy: &DeployCommand) -> Result<(), String> {
        let Some(plane) = self.plane.get() else {
            return Ok(());
        };
        if !uses_overlay(deploy) {
            return Ok(());
        }
        let id = InstanceId::new(deploy.job_name.clone(), deploy.instance_number);
        let ports: Vec<PortForward> = deploy
            .port_mappings()
            .map_err(|e| format!("port mappings of {id}: {e}"))?;
        let key = key_of(&id).map_err(|e| e.to_string())?;
        let attachment = plane
            .attach(&key, &ports)
            .await
            .map_err(|e| format!("network of {id}: {e}"))?;
        tracing::info!(instance = %id, ipv4 = %attachment.ipv4, "instance network ready");
        if is_guest(deploy) {
            let guest = plane
                .add_guest(&key)
                .await
                .map_err(|e| format!("network of {id}'s virtual machine: {e}"))?;
            self.guests
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(
                    id.to_string(),
                    oakestra_runtime::unikernel::GuestNet {
                        netns: attachment.netns.clone(),
                        tap: guest.tap.clone(),
                        kernel_arg: guest.kernel_arg(),
                    },
                );
        } else {
            self.write_resolv_conf(&id, &attachment.netns);
        }
        self.paths()
            .insert(id.to_string(), attachment.netns.display().to_string());
        // Tell the cluster where the instance is, and load the service's own entries (the
        // proxy needs the sender's instance IP).
        if let Some(endpoint) = self.advertised() {
            let report = ServiceDeployed {
                wire_version: WireVersion::CURRENT,
                appname: deploy.job_name.clone(),
                status: "DEPLOYED".into(),
                instance_number: deploy.instance_number,
                nsip: attachment.ipv4.to_string(),
                nsipv6: attachment.ipv6.to_string(),
                host_port: endpoint.port(),
                host_ip: endpoint.ip().to_string(),
            };
            self.publish(NodeTopic::NetServiceDeployed, report.to_bytes());
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&deploy.job_name);
            self.query(TableQueryRequest {
                wire_version: WireVersion::CURRENT,
                sname: deploy.job_name.clone(),
                sip: String::new(),
            });
        }
        Ok(())
    }

    /// Points the instance's resolver at the DNS responder: `/etc/netns/<namespace>/
    /// resolv.conf`, which the container runtime mounts as the container's
    /// `/etc/resolv.conf` (and `ip netns exec` uses too). Only when the responder listens on
    /// the bridge at port 53, since `resolv.conf` cannot name a port; otherwise the container
    /// keeps the host's file. Removed with the namespace.
    pub(super) fn write_resolv_conf(&self, id: &InstanceId, netns: &std::path::Path) {
        let Some(at) = self.dns_addr() else { return };
        let (std::net::IpAddr::V4(bridge), 53, PlaneKind::Linux { .. }) =
            (at.ip(), at.port(), &self.kind)
        else {
            return;
        };
        let Some(name) = netns.file_name().and_then(|n| n.to_str()) else {
            return;
        };
        let host = std::fs::read_to_string(self.host_resolv_conf()).unwrap_or_default();
        let contents = dns::resolv_conf(bridge, &host, &id.to_string());
        match oakestra_net::dataplane::netns::write_resolv_conf(name, &contents) {
            Ok(path) => tracing::debug!(instance = %id, path = %path.display(), "resolv.conf"),
            Err(e) => {
                tracing::warn!(instance = %id, "writing its resolv.conf: {e}; it uses the host's")
            }
        }
    }

    /// After an instance was removed: its network goes too.
    pub async fn detach(&self, id: &InstanceId) {
        self.paths().remove(&id.to_string());
        self.guests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id.to_string());
        let Some(plane) = self.plane.get() else {
            return;
        };
        let Ok(key) = key_of(id) else {
            return;
        };
        if let Err(e) = plane.detach(&key).await {
            tracing::warn!(instance = %id, "removing its network: {e}");
        }
    }
}
