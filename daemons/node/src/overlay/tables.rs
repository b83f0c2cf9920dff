//! Service tables: table queries to the cluster, their answers turned into the proxy's
//! routes, periodic refreshes, RTT probes for "closest" balancing, and DNS answers for service
//! names (other names are forwarded to the host's resolvers).

use super::*;

impl Overlay {
    /// Gives the proxy the RTT of every worker in its table (and of this one): the override of
    /// its host if there is one, else the smoothed measurement, else none (unmeasured).
    pub(super) fn apply_rtts(&self, proxy: &mut Proxy) {
        let overrides = self
            .rtt_override
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let measured = self.probes.get().map(|p| p.rtts()).unwrap_or_default();
        let mut nodes = proxy.nodes();
        nodes.insert(proxy.local());
        nodes.extend(proxy.rtts().into_keys());
        for node in nodes {
            match overrides
                .get(&node.ip())
                .or_else(|| measured.get(&node))
                .copied()
            {
                Some(rtt) => proxy.set_rtt(node, rtt),
                None => proxy.clear_rtt(node),
            }
        }
    }

    /// Probes every other worker in the table once, then updates the proxy's RTTs (pongs of
    /// this round count from the next one on).
    pub(super) async fn probe_round(&self) {
        let Some(proxy) = self.proxy.get() else {
            return;
        };
        let (local, nodes) = {
            let p = proxy.lock().unwrap_or_else(|p| p.into_inner());
            (p.local(), p.nodes())
        };
        if let Some(probes) = self.probes.get() {
            for node in nodes.iter().filter(|n| **n != local) {
                probes.ping(*node).await;
            }
            // Workers no longer in the table are forgotten.
            for node in probes.rtts().into_keys() {
                if !nodes.contains(&node) {
                    probes.forget(node);
                }
            }
        }
        self.apply_rtts(&mut proxy.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Asks the cluster for a service by name or IP (`net/tablequery/request`), once while
    /// the answer is pending (again after [`QUERY_RETRY`] without one).
    pub fn query(&self, request: TableQueryRequest) {
        let key = request.query_key().to_owned();
        let now = tokio::time::Instant::now();
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending
                .get(&key)
                .is_some_and(|asked| now.duration_since(*asked) < QUERY_RETRY)
            {
                return;
            }
            pending.insert(key, now);
        }
        self.publish(NodeTopic::NetTableQueryRequest, request.to_bytes());
    }

    /// Asks again for every service in the table, so that instances that moved or died are
    /// followed (the cluster's answer lists only instances with a live network).
    pub fn refresh(&self) {
        let Some(proxy) = self.proxy.get() else {
            return;
        };
        let names = proxy.lock().unwrap_or_else(|p| p.into_inner()).job_names();
        for name in names {
            self.query(TableQueryRequest {
                wire_version: WireVersion::CURRENT,
                sname: name,
                sip: String::new(),
            });
        }
    }

    /// A table query answer or an update the cluster pushed (`net/tablequery/result`; a worker
    /// that asked about a service, or hosts one of its instances, gets the service's new table
    /// whenever its instances change): the service's instances replace what the proxy had.
    /// When the cluster says a service in the table no longer exists, it leaves the table and
    /// the cluster is told the worker no longer follows it (`net/interest/remove`).
    pub fn on_table_result(&self, result: TableQueryResult) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&result.query_key);
        let Some(proxy) = self.proxy.get() else {
            return;
        };
        let Some(mut routes) = routes_of(&result) else {
            let dropped = {
                let mut proxy = proxy.lock().unwrap_or_else(|p| p.into_inner());
                let known = proxy.service(&result.query_key).is_some();
                if known {
                    proxy.remove_service(&result.query_key);
                }
                known
            };
            if dropped {
                tracing::debug!(service = %result.query_key, "service gone: dropped from the table");
                let remove = InterestRemove {
                    wire_version: WireVersion::CURRENT,
                    appname: result.query_key.clone(),
                };
                self.publish(NodeTopic::NetInterestRemove, remove.to_bytes());
                self.table_changed.notify_waiters();
            }
            return;
        };
        tracing::debug!(service = %routes.job_name, instances = routes.instances.len(), "table entry");
        {
            let mut proxy = proxy.lock().unwrap_or_else(|p| p.into_inner());
            // An update without instances carries no addresses: the service keeps its rr_ip
            // and closest IP, so packets to them are refused rather than asked about again
            // and again.
            if let Some(known) = proxy.service(&routes.job_name) {
                routes.rr_ip = routes.rr_ip.or(known.rr_ip);
                routes.closest_ip = routes.closest_ip.or(known.closest_ip);
                routes.rr_ip_v6 = routes.rr_ip_v6.or(known.rr_ip_v6);
                routes.closest_ip_v6 = routes.closest_ip_v6.or(known.closest_ip_v6);
            }
            proxy.set_service(routes);
            // New workers get their override (or count as unmeasured) before any flow picks.
            self.apply_rtts(&mut proxy);
        }
        self.table_changed.notify_waiters();
    }

    /// The rr_ip and rr_ip_v6 of the first of `names` (job names) the table knows with
    /// either.
    pub(super) fn rr_ips_of(
        &self,
        names: &[String],
    ) -> Option<(Option<Ipv4Addr>, Option<Ipv6Addr>)> {
        let proxy = self.proxy.get()?.lock().unwrap_or_else(|p| p.into_inner());
        names.iter().find_map(|n| {
            let s = proxy.service(n)?;
            (s.rr_ip.is_some() || s.rr_ip_v6.is_some()).then_some((s.rr_ip, s.rr_ip_v6))
        })
    }

    /// The answer to a DNS query: from the table, else after asking the cluster for every
    /// job name the queried name may stand for and waiting up to [`DNS_WAIT`]; REFUSED for a
    /// name that cannot be a service's (not four labels), so a second `nameserver` answers it.
    /// A gets the service's rr_ip, AAAA its rr_ip_v6.
    pub async fn dns_answer(&self, query: &dns::Query) -> dns::Answer {
        if let Some(answer) = dns::unsupported(query) {
            return answer;
        }
        let names = dns::job_names_for(&query.name);
        if names.is_empty() {
            return dns::Answer::Refused;
        }
        let mut found = self.rr_ips_of(&names);
        if found.is_none() {
            for name in &names {
                self.query(TableQueryRequest {
                    wire_version: WireVersion::CURRENT,
                    sname: name.clone(),
                    sip: String::new(),
                });
            }
            found = tokio::time::timeout(DNS_WAIT, async {
                loop {
                    let changed = self.table_changed.notified();
                    tokio::pin!(changed);
                    changed.as_mut().enable();
                    if let Some(ips) = self.rr_ips_of(&names) {
                        return ips;
                    }
                    changed.await;
                }
            })
            .await
            .ok();
        }
        match (found, query.qtype) {
            (Some((Some(ip), _)), dns::TYPE_A) => dns::Answer::A(ip),
            (Some((_, Some(ip))), dns::TYPE_AAAA) => dns::Answer::Aaaa(ip),
            (Some(_), _) => dns::Answer::NoData,
            (None, _) => dns::Answer::NxDomain,
        }
    }

    /// Binds the DNS responder (when one is configured) and answers every query in a task of
    /// its own, so that a slow lookup holds up no other.
    pub(super) async fn start_dns(&self, bridge: Ipv4Addr) -> std::io::Result<()> {
        let listen = *self.dns_listen.lock().unwrap_or_else(|p| p.into_inner());
        let at = match (listen, &self.kind) {
            (None, _) => return Ok(()),
            (Some(DnsListen::At(at)), _) => at,
            (Some(DnsListen::Bridge(port)), PlaneKind::Linux { .. }) => {
                SocketAddr::from((bridge, port))
            }
            // The fake plane has no bridge to listen on.
            (Some(DnsListen::Bridge(_)), PlaneKind::Fake) => return Ok(()),
        };
        let socket = Arc::new(tokio::net::UdpSocket::bind(at).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("DNS responder on udp {at}: {e}"))
        })?);
        let bound = socket.local_addr()?;
        let _ = self.dns_addr.set(bound);
        tracing::info!(listen = %bound, "overlay DNS responder up");
        let me = self.this.clone();
        let forwarder = Arc::new(crate::dns_forward::Forwarder::new(self.host_resolv_conf()));
        let own = match bound.ip() {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1500];
            loop {
                let (n, from) = match socket.recv_from(&mut buf).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!("DNS responder: {e}");
                        continue;
                    }
                };
                let Some(overlay) = me.upgrade() else { return };
                let query = match dns::parse_query(&buf[..n]) {
                    Ok(q) => q,
                    Err(e) => {
                        tracing::debug!(%from, "DNS: {e}");
                        if let Some(reply) = dns::format_error(&buf[..n]) {
                            let _ = socket.send_to(&reply, from).await;
                        }
                        continue;
                    }
                };
                let socket = Arc::clone(&socket);
                let forwarder = Arc::clone(&forwarder);
                let raw = buf[..n].to_vec();
                tokio::spawn(async move {
                    let answer = overlay.dns_answer(&query).await;
                    tracing::debug!(name = %query.name, ?answer, "DNS");
                    // Not a service: the host's resolvers answer (service names win).
                    let forwarded = match answer {
                        dns::Answer::Refused | dns::Answer::NxDomain => {
                            forwarder.forward(&query, &raw, own).await
                        }
                        _ => None,
                    };
                    let reply = forwarded.unwrap_or_else(|| dns::response(&query, answer));
                    let _ = socket.send_to(&reply, from).await;
                });
            }
        });
        Ok(())
    }
}

/// The proxy's view of a table query answer: `None` when it names no service. IPv6 addresses
/// (`Address_v6`, `namespace_ip_v6`) are taken where present and valid; an instance without
/// them is reached over IPv4 only.
pub fn routes_of(result: &TableQueryResult) -> Option<ServiceRoutes> {
    let job_name = result.app_name.clone()?;
    let (mut rr_ip, mut closest_ip) = (None, None);
    let (mut rr_ip_v6, mut closest_ip_v6) = (None, None);
    let instances = result
        .instance_list
        .iter()
        .filter_map(|i| {
            let (mut instance_ip, mut instance_ip_v6) = (None, None);
            for a in &i.service_ip {
                let (to, to_v6) = match a.ip_type {
                    IpType::RoundRobin => (&mut rr_ip, &mut rr_ip_v6),
                    IpType::Closest => (&mut closest_ip, &mut closest_ip_v6),
                    IpType::Instance => (&mut instance_ip, &mut instance_ip_v6),
                    IpType::Other(_) => continue,
                };
                *to = a.address.or(*to);
                *to_v6 = a.address_v6.or(*to_v6);
            }
            Some(InstanceRoute {
                number: i.instance_number,
                instance_ip: instance_ip?,
                nsip: i.namespace_ip.parse().ok()?,
                instance_ip_v6,
                nsip_v6: i.namespace_ip_v6.parse().ok(),
                node: SocketAddr::new(i.host_ip.parse().ok()?, i.host_port),
            })
        })
        .collect();
    Some(ServiceRoutes {
        job_name,
        rr_ip,
        closest_ip,
        rr_ip_v6,
        closest_ip_v6,
        instances,
    })
}
