//! An in-memory [`DataPlane`] with the real one's bookkeeping (addresses, port clashes,
//! idempotence), for tests of its users. "Host state" survives a simulated crash when the same
//! [`FakeHost`] is handed to a new fake.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    Attachment, Bookkeeping, DataPlane, DataPlaneError, GuestNetwork, InstanceKey, Naming,
    PortForward, ipv4_offset,
};
use crate::ipam::WorkerSubnets;

/// What the fake "kernel" holds: whether the host is set up and the instance networks.
#[derive(Debug, Default, Clone)]
pub struct FakeHost {
    inner: Arc<Mutex<HostState>>,
}

#[derive(Debug, Default)]
struct HostState {
    host_up: bool,
    networks: BTreeMap<InstanceKey, Attachment>,
    guests: std::collections::BTreeSet<InstanceKey>,
}

impl FakeHost {
    fn lock(&self) -> MutexGuard<'_, HostState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the bridge and rules exist.
    pub fn host_up(&self) -> bool {
        self.lock().host_up
    }

    /// Instances whose namespace has a guest (unikernel) network.
    pub fn guests(&self) -> Vec<InstanceKey> {
        self.lock().guests.iter().cloned().collect()
    }

    /// The attached instance networks.
    pub fn networks(&self) -> Vec<Attachment> {
        self.lock().networks.values().cloned().collect()
    }
}

/// The fake data plane.
#[derive(Debug)]
pub struct FakeDataPlane {
    naming: Naming,
    host: FakeHost,
    book: Mutex<Bookkeeping>,
}

impl FakeDataPlane {
    /// A fake with a fresh host.
    pub fn new(subnets: WorkerSubnets) -> Self {
        Self::on_host(subnets, FakeHost::default())
    }

    /// A fake on `host` (e.g. the one of a "crashed" fake).
    pub fn on_host(subnets: WorkerSubnets, host: FakeHost) -> Self {
        Self {
            naming: Naming::default(),
            host,
            book: Mutex::new(Bookkeeping::new(subnets)),
        }
    }

    /// The fake host.
    pub fn host(&self) -> &FakeHost {
        &self.host
    }

    fn book(&self) -> MutexGuard<'_, Bookkeeping> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl DataPlane for FakeDataPlane {
    fn subnets(&self) -> WorkerSubnets {
        self.book().subnets()
    }

    async fn setup_host(&self) -> Result<(), DataPlaneError> {
        self.host.lock().host_up = true;
        Ok(())
    }

    async fn teardown_host(&self) -> Result<(), DataPlaneError> {
        let keys: Vec<InstanceKey> = self.host.lock().networks.keys().cloned().collect();
        for k in keys {
            self.detach(&k).await?;
        }
        self.host.lock().host_up = false;
        Ok(())
    }

    async fn attach(
        &self,
        key: &InstanceKey,
        ports: &[PortForward],
    ) -> Result<Attachment, DataPlaneError> {
        if !self.host.host_up() {
            return Err(DataPlaneError::InvalidConfig(
                "the host network is not set up; call setup_host first".into(),
            ));
        }
        let mut book = self.book();
        if let Some(a) = book.get(key) {
            return Ok(a.clone());
        }
        let addresses = book.plan(key, ports)?;
        let attachment = Attachment {
            key: key.clone(),
            netns: format!("/run/netns/{}", self.naming.netns(key)).into(),
            ipv4: addresses.ipv4,
            ipv6: addresses.ipv6,
            host_veth: self
                .naming
                .host_veth(ipv4_offset(book.subnets().ipv4.base(), addresses.ipv4)),
            ports: ports.to_vec(),
        };
        book.record(attachment.clone());
        self.host
            .lock()
            .networks
            .insert(key.clone(), attachment.clone());
        Ok(attachment)
    }

    async fn detach(&self, key: &InstanceKey) -> Result<(), DataPlaneError> {
        self.book().remove(key);
        let mut host = self.host.lock();
        host.networks.remove(key);
        host.guests.remove(key);
        Ok(())
    }

    async fn reconcile(&self, keep: &[InstanceKey]) -> Result<Vec<Attachment>, DataPlaneError> {
        let found = self.host.networks();
        let mut adopted = Vec::new();
        for a in found {
            if keep.contains(&a.key) && self.book().adopt(a.clone()).is_ok() {
                adopted.push(a);
            } else {
                self.book().remove(&a.key);
                let mut host = self.host.lock();
                host.networks.remove(&a.key);
                host.guests.remove(&a.key);
            }
        }
        Ok(adopted)
    }

    fn attachments(&self) -> Vec<Attachment> {
        self.book().all()
    }

    async fn add_guest(&self, key: &InstanceKey) -> Result<GuestNetwork, DataPlaneError> {
        let mut host = self.host.lock();
        if !host.networks.contains_key(key) {
            return Err(DataPlaneError::InvalidInstance(format!(
                "{key:?} has no network to add a guest to"
            )));
        }
        host.guests.insert(key.clone());
        Ok(GuestNetwork::standard())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::Protocol;
    use crate::ipam::{Ipv4Subnet, Ipv6Subnet};

    fn subnets() -> WorkerSubnets {
        WorkerSubnets {
            ipv4: Ipv4Subnet::new("10.18.0.0".parse().unwrap()).unwrap(),
            ipv6: Ipv6Subnet::new("fc00::".parse().unwrap()).unwrap(),
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn attach_detach_and_crash_recovery() {
        block_on(async {
            let host = FakeHost::default();
            let fake = FakeDataPlane::on_host(subnets(), host.clone());
            let k0 = InstanceKey::new("svc", 0).unwrap();
            let k1 = InstanceKey::new("svc", 1).unwrap();
            assert!(fake.attach(&k0, &[]).await.is_err(), "host not set up");
            fake.setup_host().await.unwrap();
            let port = PortForward {
                host: 8080,
                container: 80,
                protocol: Protocol::Tcp,
            };
            let a0 = fake.attach(&k0, &[port]).await.unwrap();
            assert_eq!(fake.attach(&k0, &[port]).await.unwrap(), a0, "idempotent");
            assert_eq!(a0.ipv4.to_string(), "10.18.0.2");
            assert_eq!(a0.host_veth, "oakrsv2");
            let a1 = fake.attach(&k1, &[]).await.unwrap();
            assert_eq!(a1.ipv4.to_string(), "10.18.0.3");
            drop(fake);

            // "Crash": a new fake on the same host keeps k0 only.
            let fake = FakeDataPlane::on_host(subnets(), host.clone());
            let adopted = fake.reconcile(std::slice::from_ref(&k0)).await.unwrap();
            assert_eq!(adopted, vec![a0.clone()]);
            assert_eq!(host.networks(), vec![a0.clone()]);
            let k2 = InstanceKey::new("svc", 2).unwrap();
            let a2 = fake.attach(&k2, &[]).await.unwrap();
            assert_ne!(a2.ipv4, a0.ipv4, "the adopted address is held");
            fake.detach(&k0).await.unwrap();
            fake.teardown_host().await.unwrap();
            assert!(host.networks().is_empty());
            assert!(!host.host_up());
        });
    }

    #[test]
    fn guests_need_a_network_and_go_with_it() {
        block_on(async {
            let host = FakeHost::default();
            let fake = FakeDataPlane::on_host(subnets(), host.clone());
            fake.setup_host().await.unwrap();
            let k = InstanceKey::new("uk", 0).unwrap();
            assert!(fake.add_guest(&k).await.is_err(), "no namespace yet");
            fake.attach(&k, &[]).await.unwrap();
            let guest = fake.add_guest(&k).await.unwrap();
            assert_eq!(guest, GuestNetwork::standard());
            assert_eq!(fake.add_guest(&k).await.unwrap(), guest, "idempotent");
            assert_eq!(guest.netmask().to_string(), "255.255.255.252");
            assert_eq!(host.guests(), vec![k.clone()]);
            fake.detach(&k).await.unwrap();
            assert!(host.guests().is_empty());
        });
    }
}
