//! The root's address management (DESIGN.md §4.5): the IPAM of `oakestra_net::ipam`, persisted
//! in the store and changed only inside the store's atomic updates, so two requests (or two
//! roots on one MongoDB) never hand out the same address.
//!
//! * Service creation: [`reserve_for_services`] reserves each user-given `rr_ip` / `rr_ip_v6` /
//!   `closest_ip` / `closest_ip_v6` and allocates the ones not given, for all services of a
//!   request or none; every given address of the request is reserved before anything is
//!   allocated. The REST side calls it before it stores the services, and
//!   [`release_services`] if storing fails.
//! * Instance creation and removal happen in `cluster_link/instances.rs`, in the same store
//!   update as the instance record (`assign_instance`, `release_instance`).
//! * Service deletion: `ClusterLink::release_service` frees the RR, closest and instance
//!   addresses.
//!
//! Holders are keyed by the service **id** (24 hex digits), which is unique and stable; errors
//! name the service by its job name.

use std::net::IpAddr;

use oakestra_core::ids::ObjectId;
use oakestra_core::model::ServiceRecord;
use oakestra_net::ipam::{AddressManager, Holder, InstanceAddresses, IpamError, ServiceIpRequest};
use oakestra_store::{Store, StoreError};

/// An address operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    /// A user-given address is taken (REST: 409 Conflict).
    #[error(
        "{field} {address} is already used by {holder}; choose another address or leave {field} out to get a free one"
    )]
    InUse {
        /// `rr_ip`, `rr_ip_v6`, `closest_ip` or `closest_ip_v6`.
        field: &'static str,
        /// The address.
        address: IpAddr,
        /// Who has it, e.g. `service app.ns.svc.ns` or `instance 2 of service app.ns.svc.ns`.
        holder: String,
    },
    /// A user-given address is not acceptable (REST: 422).
    #[error("{0}")]
    Invalid(IpamError),
    /// A pool is full (REST: 503).
    #[error("{0}")]
    Exhausted(IpamError),
    /// The stored IPAM state is unusable (REST: 500).
    #[error("{0}")]
    Corrupt(IpamError),
    /// The store failed (REST: 500).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Holder of a service's RR addresses.
pub fn service_holder(service: ObjectId) -> Holder {
    Holder::service(service.to_string())
}

/// Holder of an instance's addresses.
pub fn instance_holder(service: ObjectId, number: u32) -> Holder {
    Holder::instance(service.to_string(), number)
}

/// Raw IPAM error → [`AddressError`], naming the holder by `name_of(service id)` when it can.
fn classify(e: IpamError, name_of: &dyn Fn(&str) -> Option<String>) -> AddressError {
    match e {
        IpamError::AlreadyHeld {
            ref field,
            address,
            ref holder,
            ..
        } => {
            let field = match field.as_str() {
                "rr_ip_v6" => "rr_ip_v6",
                "closest_ip" => "closest_ip",
                "closest_ip_v6" => "closest_ip_v6",
                _ => "rr_ip",
            };
            let named = |id: &str| {
                name_of(id).map_or_else(|| id.to_owned(), |name| format!("{name} (id {id})"))
            };
            let holder = match holder {
                Holder::Service(id) => format!("service {}", named(id)),
                Holder::Closest(id) => format!("service {} (its closest IP)", named(id)),
                Holder::Instance { service, number } => {
                    format!("instance {number} of service {}", named(service))
                }
                Holder::Worker(id) => format!("worker {id}"),
            };
            AddressError::InUse {
                field,
                address,
                holder,
            }
        }
        IpamError::Exhausted { .. } => AddressError::Exhausted(e),
        IpamError::CorruptState { .. } => AddressError::Corrupt(e),
        other => AddressError::Invalid(other),
    }
}

/// Internal error of an IPAM closure: the store's, or an IPAM one still to be classified.
#[derive(Debug)]
pub(crate) enum IpamStep {
    Store(StoreError),
    Ipam(IpamError),
}

impl From<StoreError> for IpamStep {
    fn from(e: StoreError) -> Self {
        IpamStep::Store(e)
    }
}

impl IpamStep {
    /// The error for the user: a holder in the batch or owned by `owner` (or any holder when
    /// `owner` is `None`) is named with its id; another user's is not (no names or ids of
    /// other users' objects leak through a 409).
    async fn resolve(
        self,
        store: &dyn Store,
        batch: &[ServiceRecord],
        owner: Option<&str>,
    ) -> AddressError {
        match self {
            IpamStep::Store(e) => AddressError::Store(e),
            IpamStep::Ipam(e) => {
                let holder_id = match &e {
                    IpamError::AlreadyHeld {
                        holder:
                            Holder::Service(id)
                            | Holder::Closest(id)
                            | Holder::Instance { service: id, .. },
                        ..
                    } => Some(id.clone()),
                    _ => None,
                };
                let mut name = None;
                if let Some(id) = &holder_id {
                    name = batch
                        .iter()
                        .find(|s| s.id.to_string() == *id)
                        .map(|s| s.job_name.clone());
                    if name.is_none()
                        && let Ok(oid) = id.parse::<ObjectId>()
                        && let Ok(Some(s)) = store.get_service(oid).await
                    {
                        let visible = match owner {
                            None => true,
                            Some(user) => matches!(
                                store.get_application(s.application_id).await,
                                Ok(Some(app)) if app.user_id == user
                            ),
                        };
                        if !visible {
                            return match classify(e, &|_| None) {
                                AddressError::InUse { field, address, .. } => AddressError::InUse {
                                    field,
                                    address,
                                    holder: "a service of another user".to_owned(),
                                },
                                other => other,
                            };
                        }
                        name = Some(s.job_name);
                    }
                }
                classify(e, &|_| name.clone())
            }
        }
    }
}

/// Gives every service its RR and closest addresses, all or nothing: user-given `rr_ip` /
/// `rr_ip_v6` / `closest_ip` / `closest_ip_v6` are reserved, missing ones allocated, and the
/// records' `rr_ip` / `rr_ip_v6` / `closest_ip` / `closest_ip_v6` set. Calling it again for
/// services that hold their addresses already is harmless (same addresses).
pub async fn reserve_for_services(
    store: &dyn Store,
    services: &mut [ServiceRecord],
) -> Result<(), AddressError> {
    reserve_for_services_of(store, services, None).await
}

/// [`reserve_for_services`] for services of user `owner`: a conflict with another user's
/// service does not name it.
pub async fn reserve_for_services_of(
    store: &dyn Store,
    services: &mut [ServiceRecord],
    owner: Option<&str>,
) -> Result<(), AddressError> {
    // What each service holds already, else what its SLA gives. The SLA keeps its closest
    // addresses as the user wrote them; the validator has checked that they parse.
    fn given<T: std::str::FromStr>(sla: Option<&String>) -> Option<T> {
        sla.and_then(|t| t.trim().parse().ok())
    }
    let wanted: Vec<(ObjectId, ServiceIpRequest)> = services
        .iter()
        .map(|s| {
            let sla = s.microservice.addresses.as_ref();
            let request = ServiceIpRequest {
                rr_ip: s.rr_ip,
                rr_ip_v6: s.rr_ip_v6,
                closest_ip: s
                    .closest_ip
                    .or_else(|| given(sla.and_then(|a| a.closest_ip.as_ref()))),
                closest_ip_v6: s
                    .closest_ip_v6
                    .or_else(|| given(sla.and_then(|a| a.closest_ip_v6.as_ref()))),
            };
            (s.id, request)
        })
        .collect();
    // Relaxed: the services' records are committed durably next (which makes this durable
    // too); a crash before that loses only reservations nobody holds.
    let result = store
        .update_ipam_relaxed(|ipam: &mut AddressManager| {
            // Every user-given address of the batch first, so that no service's allocation
            // takes an address another service of the batch asks for.
            for (id, request) in &wanted {
                ipam.reserve_given_service_ips(&id.to_string(), *request)
                    .map_err(IpamStep::Ipam)?;
            }
            let mut out = Vec::with_capacity(wanted.len());
            for (id, request) in &wanted {
                let a = ipam
                    .assign_service_ips(&id.to_string(), *request)
                    .map_err(IpamStep::Ipam)?;
                out.push(a);
            }
            Ok::<_, IpamStep>(out)
        })
        .await;
    match result {
        Ok(assigned) => {
            for (s, a) in services.iter_mut().zip(assigned) {
                s.rr_ip = Some(a.rr_ipv4);
                s.rr_ip_v6 = Some(a.rr_ipv6);
                s.closest_ip = Some(a.closest_ipv4);
                s.closest_ip_v6 = Some(a.closest_ipv6);
            }
            Ok(())
        }
        Err(e) => Err(e.resolve(store, services, owner).await),
    }
}

/// Frees the RR and closest addresses and every instance address of these services (e.g. after a failed
/// creation, or on deletion).
pub async fn release_services(
    store: &dyn Store,
    services: &[ServiceRecord],
) -> Result<(), AddressError> {
    let targets: Vec<(ObjectId, Vec<u32>)> = services
        .iter()
        .map(|s| {
            (
                s.id,
                s.instance_list.iter().map(|i| i.instance_number).collect(),
            )
        })
        .collect();
    store
        .update_ipam(|ipam: &mut AddressManager| {
            for (id, numbers) in &targets {
                let sid = id.to_string();
                ipam.release_service(&sid);
                ipam.release_closest(&sid);
                for n in numbers {
                    ipam.release_instance(&sid, *n);
                }
            }
            Ok::<_, StoreError>(())
        })
        .await?;
    Ok(())
}

/// Releases the addresses held for services that do not exist: what a root that crashed
/// between reserving a descriptor's addresses and storing its services left behind. Run at
/// start, before anything is served. Returns how many holders (a service's RR addresses, its
/// closest addresses, an instance's addresses) were released.
pub async fn release_orphans(store: &dyn Store) -> Result<usize, StoreError> {
    let services: std::collections::HashSet<String> = store
        .list_all_services()
        .await?
        .iter()
        .map(|s| s.id.to_string())
        .collect();
    store
        .update_ipam(|ipam: &mut AddressManager| {
            let mut orphans: Vec<(oakestra_net::ipam::RootPool, Holder)> = Vec::new();
            for pool in oakestra_net::ipam::RootPool::ALL {
                for (_, holder) in ipam.pool(pool).iter() {
                    let service = match holder {
                        Holder::Service(s) | Holder::Closest(s) => s,
                        Holder::Instance { service, .. } => service,
                        Holder::Worker(_) => continue,
                    };
                    if !services.contains(service) {
                        orphans.push((pool, holder.clone()));
                    }
                }
            }
            let mut distinct = std::collections::HashSet::new();
            for (pool, holder) in &orphans {
                ipam.pool_mut(*pool).release_holder(holder);
                distinct.insert(holder.clone());
            }
            Ok::<_, StoreError>(distinct.len())
        })
        .await
}

/// Gives instance `number` of `service` its IPv4 and IPv6, inside a store update.
pub(crate) fn assign_instance(
    ipam: &mut AddressManager,
    service: ObjectId,
    number: u32,
) -> Result<InstanceAddresses, IpamError> {
    ipam.assign_instance(&service.to_string(), number)
}

/// Frees the addresses of instance `number` of `service`, inside a store update.
pub(crate) fn release_instance(ipam: &mut AddressManager, service: ObjectId, number: u32) {
    ipam.release_instance(&service.to_string(), number);
}

/// Classifies an IPAM error from an instance allocation.
pub(crate) fn instance_error(e: IpamError) -> AddressError {
    classify(e, &|_| None)
}

/// Who holds `address` in the root's pools, as text (for diagnostics and tests).
pub async fn holder_of(store: &dyn Store, address: IpAddr) -> Result<Option<String>, StoreError> {
    let ipam: AddressManager = store.ipam().await?;
    Ok(ipam.holder_of(address).map(|(_, h)| h.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oakestra_core::sla::parse_and_validate;
    use oakestra_store::MemoryStore;
    use std::sync::Arc;

    fn services() -> Vec<ServiceRecord> {
        let sla = parse_and_validate(include_str!(
            "../../../examples/sla-clientsrvr-container.json"
        ))
        .unwrap();
        let app = &sla.applications[0];
        let app_id = oakestra_store::new_object_id();
        app.microservices
            .iter()
            .map(|m| ServiceRecord::new(oakestra_store::new_object_id(), app_id, app, m))
            .collect()
    }

    #[tokio::test]
    async fn rr_ips_are_reserved_or_allocated_and_conflicts_name_the_holder() {
        let store: Arc<dyn Store> = MemoryStore::shared();
        let mut first = services();
        let given: Vec<_> = first.iter().map(|s| s.rr_ip).collect();
        reserve_for_services(store.as_ref(), &mut first)
            .await
            .unwrap();
        for (s, g) in first.iter().zip(&given) {
            assert!(s.rr_ip.is_some() && s.rr_ip_v6.is_some());
            if let Some(g) = g {
                assert_eq!(s.rr_ip, Some(*g), "user-given rr_ip kept");
            }
        }
        // Idempotent for the same services.
        let mut again = first.clone();
        reserve_for_services(store.as_ref(), &mut again)
            .await
            .unwrap();
        assert_eq!(again, first);

        // The same descriptor again (new ids): the user-given rr_ip is taken.
        let mut second = services();
        let err = reserve_for_services(store.as_ref(), &mut second)
            .await
            .unwrap_err();
        let AddressError::InUse { field, holder, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(*field, "rr_ip");
        // The first batch is not stored as services, so the holder is named by id.
        assert!(holder.starts_with("service "), "{holder}");
        // Nothing of the failed batch was kept.
        let ipam: AddressManager = store.ipam().await.unwrap();
        for s in &second {
            assert!(
                ipam.pool(oakestra_net::ipam::RootPool::RrIpv6)
                    .address_of(&service_holder(s.id))
                    .is_none()
            );
        }

        // Released addresses can be reserved again.
        release_services(store.as_ref(), &first).await.unwrap();
        reserve_for_services(store.as_ref(), &mut second)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn addresses_of_services_that_were_never_stored_are_released() {
        let store: Arc<dyn Store> = MemoryStore::shared();
        let mut batch = services();
        reserve_for_services(store.as_ref(), &mut batch)
            .await
            .unwrap();
        // Only the first service is stored (its application too), as if the root died
        // between the address reservation and the commit of the others.
        let kept = batch[0].clone();
        let mut app = oakestra_core::model::ApplicationRecord::new(
            kept.application_id,
            "u",
            &parse_and_validate(include_str!(
                "../../../examples/sla-clientsrvr-container.json"
            ))
            .unwrap()
            .applications[0],
        );
        app.microservices.clear();
        store
            .create_application(&app, std::slice::from_ref(&kept))
            .await
            .unwrap();
        // An instance of a lost service held addresses too.
        let lost = batch[1].id;
        store
            .update_ipam(|ipam: &mut AddressManager| {
                assign_instance(ipam, lost, 0).map_err(|e| StoreError::Invalid {
                    kind: "ipam",
                    what: e.to_string(),
                })
            })
            .await
            .unwrap();
        let released = release_orphans(store.as_ref()).await.unwrap();
        // Per lost service: its RR holder, its closest holder and (the second) an instance.
        assert_eq!(released, 2 * (batch.len() - 1) + 1);
        let rr = |s: &ServiceRecord| IpAddr::V4(s.rr_ip.unwrap());
        assert!(
            holder_of(store.as_ref(), rr(&kept))
                .await
                .unwrap()
                .is_some()
        );
        for s in &batch[1..] {
            assert_eq!(holder_of(store.as_ref(), rr(s)).await.unwrap(), None);
        }
        assert_eq!(release_orphans(store.as_ref()).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn conflicts_inside_one_batch_name_the_service() {
        let store: Arc<dyn Store> = MemoryStore::shared();
        let mut batch = services();
        let rr = "10.30.77.77".parse().unwrap();
        for s in &mut batch {
            s.rr_ip = Some(rr);
        }
        let err = reserve_for_services(store.as_ref(), &mut batch)
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&batch[0].job_name), "{msg}");
        assert!(msg.contains("10.30.77.77"), "{msg}");
        let ipam: AddressManager = store.ipam().await.unwrap();
        assert!(ipam.holder_of(rr.into()).is_none(), "all or nothing");
    }

    #[tokio::test]
    async fn every_service_gets_a_closest_ip_given_or_allocated_and_loses_it_on_release() {
        let store: Arc<dyn Store> = MemoryStore::shared();
        let mut batch = services();
        // The first service asks for its closest IPs, the second gets free ones.
        let addresses = batch[0].microservice.addresses.get_or_insert_default();
        addresses.closest_ip = Some("10.30.66.66".into());
        addresses.closest_ip_v6 = Some("fdff:2000::66".into());
        reserve_for_services(store.as_ref(), &mut batch)
            .await
            .unwrap();
        assert_eq!(batch[0].closest_ip, Some("10.30.66.66".parse().unwrap()));
        assert_eq!(
            batch[0].closest_ip_v6,
            Some("fdff:2000::66".parse().unwrap())
        );
        let mut seen = std::collections::HashSet::new();
        for s in &batch {
            for a in [
                IpAddr::from(s.rr_ip.unwrap()),
                s.rr_ip_v6.unwrap().into(),
                s.closest_ip.unwrap().into(),
                s.closest_ip_v6.unwrap().into(),
            ] {
                assert!(seen.insert(a), "{a} handed out twice");
            }
            let holder = holder_of(store.as_ref(), s.closest_ip.unwrap().into())
                .await
                .unwrap();
            assert_eq!(holder, Some(format!("the closest IP of service {}", s.id)));
            // Shown next to the RR_ip in the service JSON.
            let json = serde_json::to_value(s).unwrap();
            assert_eq!(json["Closest_ip"], s.closest_ip.unwrap().to_string());
            assert_eq!(json["Closest_ip_v6"], s.closest_ip_v6.unwrap().to_string());
        }
        // Idempotent.
        let mut again = batch.clone();
        reserve_for_services(store.as_ref(), &mut again)
            .await
            .unwrap();
        assert_eq!(again, batch);

        // Another service asking for a taken closest IP: 409-style error naming field and holder.
        let mut other = services();
        for s in &mut other {
            s.rr_ip = None;
        }
        other[1]
            .microservice
            .addresses
            .get_or_insert_default()
            .closest_ip = Some("10.30.66.66".into());
        let err = reserve_for_services(store.as_ref(), &mut other)
            .await
            .unwrap_err();
        let AddressError::InUse { field, holder, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(*field, "closest_ip");
        assert!(holder.contains("its closest IP"), "{holder}");
        // An invalid one is refused (422), naming the field.
        other[1]
            .microservice
            .addresses
            .get_or_insert_default()
            .closest_ip = Some("192.168.1.1".into());
        let err = reserve_for_services(store.as_ref(), &mut other)
            .await
            .unwrap_err();
        assert!(matches!(err, AddressError::Invalid(_)), "{err}");
        assert!(
            err.to_string().starts_with("closest_ip 192.168.1.1"),
            "{err}"
        );

        // Released with the service: the closest IPs can be taken by another service.
        release_services(store.as_ref(), &batch).await.unwrap();
        assert_eq!(
            holder_of(store.as_ref(), "10.30.66.66".parse().unwrap())
                .await
                .unwrap(),
            None
        );
        other[1]
            .microservice
            .addresses
            .get_or_insert_default()
            .closest_ip = Some("10.30.66.66".into());
        reserve_for_services(store.as_ref(), &mut other)
            .await
            .unwrap();
        assert_eq!(other[1].closest_ip, Some("10.30.66.66".parse().unwrap()));
    }

    #[tokio::test]
    async fn a_given_address_is_not_taken_by_an_allocation_of_the_same_request() {
        let store: Arc<dyn Store> = MemoryStore::shared();
        let mut batch = services();
        // curl (first) gets everything allocated; nginx asks for the very first free addresses
        // as its closest IPs.
        batch[1].rr_ip = None;
        let addresses = batch[1].microservice.addresses.get_or_insert_default();
        addresses.closest_ip = Some("10.30.0.1".into());
        addresses.closest_ip_v6 = Some("fdff:2000::1".into());
        reserve_for_services(store.as_ref(), &mut batch)
            .await
            .unwrap();
        assert_eq!(batch[1].closest_ip, Some("10.30.0.1".parse().unwrap()));
        assert_eq!(
            batch[1].closest_ip_v6,
            Some("fdff:2000::1".parse().unwrap())
        );
        assert_ne!(batch[0].rr_ip, batch[1].closest_ip);
    }
}
