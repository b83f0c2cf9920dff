//! The overlay with real runtimes. Containers: the engine on the test containerd
//! (scripts/fixtures) with the real data plane. The container runs in the namespace the overlay made for it: its httpd
//! answers on the instance's overlay address and, through the DNAT rule of its port mapping, on
//! the worker's bridge address; delete removes the namespace. Root; its own tag, subnet and
//! containerd namespace, and a guard that removes everything also on failure.
//!
//! Unikernels: the engine on the qemu runtime (the busybox test guest of
//! scripts/fixtures/unikernel-image.sh) with the real data plane: qemu runs in the instance's
//! namespace with a virtio-net device on a TAP there; the guest's httpd answers on the instance's
//! overlay address and through its port mapping, and delete removes namespace and guest.

#[path = "../../../oakestra-runtime/tests/containerd_support/mod.rs"]
mod containerd_support;
#[path = "support/dns_upstream.rs"]
mod dns_upstream;
#[path = "../../../oakestra-runtime/tests/support/mod.rs"]
mod unikernel_support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oakestra_core::status::DeploymentStatus;
use oakestra_net::dataplane::{Attachment, DataPlane, DataPlaneConfig, LinuxDataPlane, Naming};
use oakestra_net::ipam::{Ipv4Subnet, Ipv6Subnet, WorkerSubnets};
use oakestra_node::engine::{Engine, Reporter};
use oakestra_node::overlay::{Overlay, PlaneKind};
use oakestra_node::state::{NodeState, StateFile};
use oakestra_proto::mqtt::{DeleteCommand, DeployCommand, JobStatusReport};
use oakestra_runtime::containerd::ContainerdRuntime;
use oakestra_runtime::{InstanceId, Runtime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Default)]
struct Reports(Mutex<Vec<JobStatusReport>>);

impl Reporter for Reports {
    fn job_status(&self, report: JobStatusReport) {
        self.0.lock().unwrap().push(report);
    }
}

/// Tears the test's network down on a thread of its own (outside the test's runtime).
struct Cleanup(Option<DataPlaneConfig>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Some(config) = self.0.take() else { return };
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    if let Ok(plane) = LinuxDataPlane::new(config) {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(10), plane.teardown_host())
                                .await;
                    }
                });
        })
        .join();
    }
}

/// `GET /` on `to`, or why not.
async fn get(to: SocketAddr) -> Result<String, String> {
    let talk = async {
        let mut s = tokio::net::TcpStream::connect(to).await?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    tokio::time::timeout(Duration::from_secs(5), talk)
        .await
        .map_err(|_| format!("{to}: no answer within 5 s"))?
        .map_err(|e| format!("{to}: {e}"))
}

/// Polls `GET /` on `to` until it answers (the httpd needs a moment to start), at most 30 s.
async fn get_eventually(to: SocketAddr) -> String {
    let mut last = String::new();
    for _ in 0..60 {
        match get(to).await {
            Ok(page) => return page,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{to} never answered: {last}");
}

/// One worker's engine with the real data plane on a /26 of 10.29.65.0–10.29.127.255 (the
/// other node tests use 10.29.0.0/18, the oakestra-net tests 10.18–10.28 and 10.29.128.0/17;
/// 10.29.64.0/24 is the larger subnet of [`Worker::start_sized`]); `letter` keeps the names of
/// two tests of this process apart. The runtime gets its networks from the overlay through
/// `attach`.
struct Worker {
    engine: Arc<Engine>,
    reports: Arc<Reports>,
    overlay: Arc<Overlay>,
    subnet: std::net::Ipv4Addr,
    _cleanup: Cleanup,
}

impl Worker {
    async fn start(
        letter: char,
        dir: &std::path::Path,
        runtime: Arc<dyn Runtime>,
        prepare: impl FnOnce(&Arc<Overlay>),
        attach: impl FnOnce(&Arc<Overlay>),
    ) -> Worker {
        let pid = std::process::id();
        let slot = 260 + pid % 252;
        let subnets = WorkerSubnets {
            ipv4: Ipv4Subnet::new(std::net::Ipv4Addr::new(
                10,
                29,
                (slot / 4) as u8,
                ((slot % 4) * 64) as u8,
            ))
            .unwrap(),
            ipv6: Ipv6Subnet::new(format!("fc00::3:{:x}:100", pid % 0xffff).parse().unwrap())
                .unwrap(),
        };
        Self::start_sized(letter, dir, runtime, subnets, prepare, attach).await
    }

    /// [`Worker::start`] on `subnets`.
    async fn start_sized(
        letter: char,
        dir: &std::path::Path,
        runtime: Arc<dyn Runtime>,
        subnets: WorkerSubnets,
        prepare: impl FnOnce(&Arc<Overlay>),
        attach: impl FnOnce(&Arc<Overlay>),
    ) -> Worker {
        let pid = std::process::id();
        let mut config = DataPlaneConfig::new(subnets);
        config.naming = Naming::new(&format!("{letter}{}", pid % 1_000_000)).unwrap();
        let cleanup = Cleanup(Some(config.clone()));
        let overlay = Overlay::new(PlaneKind::Linux {
            naming: config.naming.clone(),
            mtu: DataPlaneConfig::DEFAULT_MTU,
        });
        prepare(&overlay);
        overlay.enable_subnets(subnets, &[]).await.unwrap();
        attach(&overlay);
        let reports = Arc::new(Reports::default());
        let engine = Engine::new(
            runtime,
            StateFile::new(dir),
            NodeState::default(),
            reports.clone(),
            "127.0.0.1".into(),
            Duration::from_secs(2),
        );
        engine.set_network(overlay.clone());
        engine.spawn_exit_watcher();
        Worker {
            engine,
            reports,
            overlay,
            subnet: subnets.ipv4.base(),
            _cleanup: cleanup,
        }
    }

    /// Deploys `deploy` and asserts it runs; returns its network.
    async fn deploy_running(&self, deploy: serde_json::Value) -> Attachment {
        self.engine
            .deploy(serde_json::from_value::<DeployCommand>(deploy).unwrap())
            .await;
        let status = self.reports.0.lock().unwrap().last().cloned().unwrap();
        assert_eq!(
            status.status,
            DeploymentStatus::Running,
            "{}",
            status.status_detail
        );
        self.overlay.plane().unwrap().attachments()[0].clone()
    }

    /// The worker's bridge address.
    fn bridge(&self) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::from(u32::from(self.subnet) + 1)
    }

    /// Deletes instance 0 of `job` and asserts its network is gone.
    async fn delete_and_check_gone(&self, id: &str, job: &str, attachment: &Attachment) {
        self.engine
            .delete(
                serde_json::from_value::<DeleteCommand>(serde_json::json!({
                    "_id": id, "job_name": job, "instance_number": 0
                }))
                .unwrap(),
            )
            .await;
        assert!(
            self.overlay
                .netns_of(&InstanceId::new(job.to_owned(), 0))
                .is_none()
        );
        assert!(!attachment.netns.exists(), "namespace removed");
        assert!(self.overlay.plane().unwrap().attachments().is_empty());
        assert!(get(SocketAddr::from((attachment.ipv4, 80))).await.is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_runs_in_its_overlay_namespace_and_is_reachable() {
    let fixtures = containerd_support::fixtures();
    let image = containerd_support::shared_image(&fixtures).await;
    let dir = tempfile::tempdir().unwrap();
    let mut containerd = containerd_support::config(&fixtures, &dir.path().join("logs"));
    containerd.namespace = containerd_support::unique("overlay-test-");
    let runtime = ContainerdRuntime::connect(containerd).await.unwrap();
    let resolver_target = runtime.clone();
    let worker = Worker::start(
        'c',
        dir.path(),
        Arc::new(runtime),
        |_| {},
        |overlay| resolver_target.set_netns_resolver(overlay.resolver()),
    )
    .await;

    let host_port = 30_000 + (std::process::id() % 20_000) as u16;
    let job = containerd_support::unique("app.ns.web");
    let attachment = worker
        .deploy_running(serde_json::json!({
            "_id": "6b026d263370213c22d0dac7", "job_name": job, "instance_number": 0,
            "image": image, "virtualization": "docker",
            "environment": ["INSTANCE_NAME=overlay-0"], "port": format!("{host_port}:80")
        }))
        .await;
    assert_eq!(
        attachment.ipv4,
        std::net::Ipv4Addr::from(u32::from(worker.subnet) + 2)
    );

    // The httpd in the container answers on the overlay address: it runs in that namespace.
    let page = get_eventually(SocketAddr::from((attachment.ipv4, 80))).await;
    assert!(page.contains("hello from overlay-0"), "{page}");
    // And through the port mapping on the worker's own (bridge) address.
    let page = get_eventually(SocketAddr::from((worker.bridge(), host_port))).await;
    assert!(page.contains("hello from overlay-0"), "{page}");

    worker
        .delete_and_check_gone("6b026d263370213c22d0dac7", &job, &attachment)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unikernel_runs_in_its_overlay_namespace_and_is_reachable() {
    let server = unikernel_support::serve(unikernel_support::fixture(), Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let _guests = unikernel_support::KillGuests(dir.path().to_path_buf());
    let runtime = oakestra_runtime::unikernel::UnikernelRuntime::new(
        oakestra_runtime::unikernel::UnikernelConfig::new(dir.path().join("uk")),
    )
    .unwrap();
    let resolver_target = runtime.clone();
    let worker = Worker::start(
        'u',
        dir.path(),
        Arc::new(runtime.clone()),
        |_| {},
        |overlay| resolver_target.set_network_resolver(overlay.guest_resolver()),
    )
    .await;

    let host_port = 30_000 + (std::process::id() % 20_000) as u16 + 1;
    let job = containerd_support::unique("app.ns.uk");
    let attachment = worker
        .deploy_running(serde_json::json!({
            "_id": "6b026d263370213c22d0dac8", "job_name": job, "instance_number": 0,
            "image": server.url, "virtualization": "unikernel", "arch": ["amd64"],
            "cmd": ["console=ttyS0", "oak.marker=overlay"], "memory": 128,
            "port": format!("{host_port}:80")
        }))
        .await;
    let id = InstanceId::new(job.clone(), 0);
    unikernel_support::wait_for_log(
        &runtime,
        &id,
        "OAK-UNIKERNEL-SERVING",
        Duration::from_secs(180),
    )
    .await;
    let log = runtime.logs_tail(&id, 1 << 20).await.unwrap_or_default();
    assert!(
        log.contains("OAK-UNIKERNEL-NET 192.168.127.2"),
        "the guest configured its network: {log}"
    );
    // The guest is the instance: its httpd answers on the instance's overlay address...
    let page = get_eventually(SocketAddr::from((attachment.ipv4, 80))).await;
    assert!(page.contains("unikernel overlay"), "{page}");
    // ...and through the port mapping on the worker's bridge address.
    let page = get_eventually(SocketAddr::from((worker.bridge(), host_port))).await;
    assert!(page.contains("unikernel overlay"), "{page}");

    worker
        .delete_and_check_gone("6b026d263370213c22d0dac8", &job, &attachment)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_on_a_systemd_resolved_host_resolves_external_and_service_names() {
    let fixtures = containerd_support::fixtures();
    let image = containerd_support::shared_image(&fixtures).await;
    let dir = tempfile::tempdir().unwrap();
    // The host of Ubuntu's default: its resolv.conf lists only systemd-resolved's stub, which
    // no instance can reach; a stub resolver there knows the test name.
    let upstream =
        dns_upstream::Upstream::start("127.0.0.53:53", &[("test.example", [192, 0, 2, 77])]).await;
    let resolv = dir.path().join("host-resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n",
    )
    .unwrap();
    let mut containerd = containerd_support::config(&fixtures, &dir.path().join("logs"));
    containerd.namespace = containerd_support::unique("overlay-dns-");
    let runtime = ContainerdRuntime::connect(containerd).await.unwrap();
    let resolver_target = runtime.clone();
    let logs = runtime.clone();
    let worker = Worker::start(
        'd',
        dir.path(),
        Arc::new(runtime),
        |overlay| {
            overlay.set_dns(oakestra_node::overlay::DnsListen::Bridge(53));
            overlay.set_host_resolv_conf(&resolv);
        },
        |overlay| resolver_target.set_netns_resolver(overlay.resolver()),
    )
    .await;
    // A service the cluster's table would name: `dnsweb.ns.app.ns` → its rr_ip.
    worker.overlay.on_table_result(
        serde_json::from_value(serde_json::json!({
            "app_name": "app.ns.dnsweb.ns", "query_key": "app.ns.dnsweb.ns",
            "instance_list": [{
                "instance_number": 0, "namespace_ip": "10.29.255.2",
                "host_ip": "192.0.2.1", "host_port": 50103,
                "service_ip": [{"IpType": "RR", "Address": "10.30.55.56"},
                               {"IpType": "instance_ip", "Address": "10.30.0.9"}]
            }]
        }))
        .unwrap(),
    );

    let job = containerd_support::unique("app.ns.dns");
    let asks = "while true; do nslookup test.example; nslookup dnsweb.ns.app.ns; sleep 1; done";
    worker
        .deploy_running(serde_json::json!({
            "_id": "6b026d263370213c22d0dac9", "job_name": job, "instance_number": 0,
            "image": image, "virtualization": "docker", "cmd": ["sh", "-c", asks]
        }))
        .await;
    let id = InstanceId::new(job.clone(), 0);
    let mut log = String::new();
    for _ in 0..60 {
        log = logs.logs_tail(&id, 1 << 16).await.unwrap_or_default();
        if log.contains("192.0.2.77") && log.contains("10.30.55.56") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The external name through the responder's forwarding to the stub, the service name
    // from the overlay's table.
    assert!(
        log.contains("Address: 192.0.2.77"),
        "the container's log: {log}"
    );
    assert!(
        log.contains("Address: 10.30.55.56"),
        "the container's log: {log}"
    );
    assert!(upstream.queries() >= 1, "the stub was asked");
    worker
        .engine
        .delete(
            serde_json::from_value::<DeleteCommand>(serde_json::json!({
                "_id": "6b026d263370213c22d0dac9", "job_name": job, "instance_number": 0
            }))
            .unwrap(),
        )
        .await;
}

/// Issue 21: one worker with a larger subnet (a /24, as the root's `--worker-subnet-prefix 24`
/// hands out) runs 100 real containers on the overlay, more than a /26's 61: each gets its own
/// address in the /24 (past the /26's boundary too) and its httpd answers there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_with_a_24_runs_100_containers_on_the_overlay() {
    const INSTANCES: u32 = 100;
    let fixtures = containerd_support::fixtures();
    let image = containerd_support::shared_image(&fixtures).await;
    let dir = tempfile::tempdir().unwrap();
    let mut containerd = containerd_support::config(&fixtures, &dir.path().join("logs"));
    containerd.namespace = containerd_support::unique("overlay-100-");
    let runtime = ContainerdRuntime::connect(containerd).await.unwrap();
    let resolver_target = runtime.clone();
    // 10.29.64.0/24 is this test's alone (see `Worker::start`); fc00::3:ffff:0/118 too (the
    // other tests' IPv6 /120s are fc00::3:<pid % 0xffff>:100).
    let subnets = WorkerSubnets {
        ipv4: "10.29.64.0/24".parse().unwrap(),
        ipv6: "fc00::3:ffff:0/118".parse().unwrap(),
    };
    assert_eq!(subnets.instance_capacity(), 253);
    let worker = Worker::start_sized(
        'h',
        dir.path(),
        Arc::new(runtime),
        subnets,
        |_| {},
        |overlay| resolver_target.set_netns_resolver(overlay.resolver()),
    )
    .await;

    let job = containerd_support::unique("app.ns.many");
    let id_of = |n: u32| format!("6b026d26337021{n:010x}");
    let started = tokio::time::Instant::now();
    for n in 0..INSTANCES {
        worker
            .engine
            .deploy(
                serde_json::from_value::<DeployCommand>(serde_json::json!({
                    "_id": id_of(n), "job_name": job, "instance_number": n,
                    "image": image, "virtualization": "docker",
                    "environment": [format!("INSTANCE_NAME=many-{n}")]
                }))
                .unwrap(),
            )
            .await;
        let status = worker.reports.0.lock().unwrap().last().cloned().unwrap();
        assert_eq!(
            (status.instance, status.status),
            (n, DeploymentStatus::Running),
            "instance {n}: {}",
            status.status_detail
        );
    }
    let deployed = started.elapsed();

    let attachments = worker.overlay.plane().unwrap().attachments();
    assert_eq!(attachments.len(), INSTANCES as usize);
    let mut addresses: Vec<std::net::Ipv4Addr> = attachments.iter().map(|a| a.ipv4).collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(
        addresses.len(),
        INSTANCES as usize,
        "every address is distinct"
    );
    assert!(addresses.iter().all(|a| subnets.ipv4.contains(*a)));
    // base+2 … base+101: across the /26 boundary (base+63, base+64 are ordinary here).
    assert_eq!(addresses.first(), Some(&"10.29.64.2".parse().unwrap()));
    assert_eq!(addresses.last(), Some(&"10.29.64.101".parse().unwrap()));

    // Every container's httpd answers on its overlay address.
    let started = tokio::time::Instant::now();
    for a in &attachments {
        let n = a.key.number();
        let page = get_eventually(SocketAddr::from((a.ipv4, 80))).await;
        assert!(
            page.contains(&format!("hello from many-{n}\n")),
            "{}: {page}",
            a.ipv4
        );
    }
    let answered = started.elapsed();

    // Deleted at once (each stop waits out the grace period of an httpd that ignores SIGTERM
    // as PID 1; one after the other that is 100 × 2 s).
    let started = tokio::time::Instant::now();
    let mut deletes = tokio::task::JoinSet::new();
    for n in 0..INSTANCES {
        let engine = worker.engine.clone();
        let command = serde_json::from_value::<DeleteCommand>(serde_json::json!({
            "_id": id_of(n), "job_name": job, "instance_number": n
        }))
        .unwrap();
        deletes.spawn(async move { engine.delete(command).await });
    }
    while let Some(done) = deletes.join_next().await {
        done.unwrap();
    }
    assert!(worker.overlay.plane().unwrap().attachments().is_empty());
    eprintln!(
        "{INSTANCES} containers on one /24 worker: deployed in {deployed:?}, all answered in \
         {answered:?}, deleted in {:?}",
        started.elapsed()
    );
}
