//! What the REST API needs from the rest of the root to create, deploy, undeploy and delete
//! services: address reservation (IPAM) and instance placement on clusters.
//!
//! The API calls it through this trait so that the handlers do not depend on how instances
//! reach clusters, and so that the API can run before and without the cluster link (the
//! [`StoreOnly`] implementation).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use oakestra_core::ids::{ClusterId, ObjectId};
use oakestra_core::model::{InstanceRecord, ServiceRecord};
use oakestra_core::status::{DeploymentStatus, NegativeSchedulingStatus, Status};
use oakestra_store::{Store, StoreError};

use axum::http::StatusCode;

use crate::addresses::{self, AddressError};
use crate::cluster_link::ClusterLink;
use crate::error::ApiError;
use crate::instances::InstanceError;

/// Address and instance operations on services.
#[async_trait]
pub trait ServiceLifecycle: Send + Sync + fmt::Debug + 'static {
    /// Reserves the service's user-given `rr_ip`/`rr_ip_v6` (or allocates them) for user
    /// `owner`. A 409 [`ApiError`] names the service holding a requested address when it is
    /// `owner`'s, and names no other user's.
    async fn reserve_service_addresses(
        &self,
        service: &mut ServiceRecord,
        owner: &str,
    ) -> Result<(), ApiError>;

    /// Reserves the addresses of several services, all or nothing (so two services of one
    /// descriptor asking for the same `rr_ip` conflict too). The default reserves one by one
    /// and releases on failure.
    async fn reserve_services(
        &self,
        services: &mut [ServiceRecord],
        owner: &str,
    ) -> Result<(), ApiError> {
        for i in 0..services.len() {
            if let Err(e) = self
                .reserve_service_addresses(&mut services[i], owner)
                .await
            {
                for s in &services[..i] {
                    let _ = self.release_service(s).await;
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Releases what [`Self::reserve_service_addresses`] reserved, after a failed creation or
    /// once the service is deleted from the store: its instances (as listed in `service`) are
    /// undeployed on their clusters and every address of the service is freed.
    async fn release_service(&self, service: &ServiceRecord) -> Result<(), ApiError>;

    /// Creates one more instance of a stored service and places it; returns the instance
    /// with its scheduling status (a negative status when no cluster fits).
    async fn deploy_instance(&self, service_id: ObjectId) -> Result<InstanceRecord, ApiError>;

    /// Creates `count` more instances of a stored service and places them (`?count=N`);
    /// returns them in number order. The default deploys them one by one; the cluster link
    /// does it as one batch.
    async fn deploy_instances(
        &self,
        service_id: ObjectId,
        count: u32,
    ) -> Result<Vec<InstanceRecord>, ApiError> {
        let mut created = Vec::with_capacity(count as usize);
        for _ in 0..count {
            created.push(self.deploy_instance(service_id).await?);
        }
        Ok(created)
    }

    /// Undeploys instance `n`, or every instance with `None`. 404 when `n` does not exist.
    async fn undeploy_instance(&self, service_id: ObjectId, n: Option<u32>)
    -> Result<(), ApiError>;

    /// The last `tail_lines` lines of instance `n`'s log, read on demand by its worker through
    /// `cluster`, waiting at most `wait`. `Err` says why there is none (no cluster link, the
    /// cluster or worker did not answer in time, the worker has no such instance); the caller
    /// then falls back to the tail of the last usage report. The default has no cluster link.
    async fn worker_logs(
        &self,
        cluster: &ClusterId,
        service_id: &ObjectId,
        n: u32,
        tail_lines: u32,
        wait: Duration,
    ) -> Result<String, String> {
        let _ = (service_id, n, tail_lines, wait);
        Err(format!("the root has no link to cluster {cluster}"))
    }
    /// The workers of `cluster`, asked on demand, waiting at most `wait`: 503 when the cluster
    /// is not connected (the default has no cluster link), 504 when it does not answer.
    async fn cluster_workers(
        &self,
        cluster: &ClusterId,
        wait: Duration,
    ) -> Result<Vec<super::clusters::WorkerView>, ApiError> {
        let _ = wait;
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the root has no link to cluster {cluster}"),
        ))
    }

    /// The event log and usage history this lifecycle records into (`None`: it records
    /// nothing, the API gets an empty one of its own).
    fn monitor(&self) -> Option<Arc<crate::monitor::Monitor>> {
        None
    }
}

/// A lifecycle with no cluster link: rr_ips are checked for uniqueness against the stored
/// services, and deploy requests end in `NoActiveClusterWithCapacity`. Used by API tests of
/// the root alone.
#[derive(Debug)]
pub struct StoreOnly {
    store: Arc<dyn Store>,
}

impl StoreOnly {
    /// Over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

fn store_error(e: StoreError) -> ApiError {
    crate::api::store_error(e)
}

#[async_trait]
impl ServiceLifecycle for StoreOnly {
    async fn reserve_service_addresses(
        &self,
        service: &mut ServiceRecord,
        _owner: &str,
    ) -> Result<(), ApiError> {
        if service.rr_ip.is_none() && service.rr_ip_v6.is_none() {
            return Ok(());
        }
        for other in self.store.list_all_services().await.map_err(store_error)? {
            if other.id == service.id {
                continue;
            }
            if service.rr_ip.is_some() && other.rr_ip == service.rr_ip {
                return Err(ApiError::conflict(format!(
                    "rr_ip {} is already used by another service",
                    service.rr_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
                )));
            }
            if service.rr_ip_v6.is_some() && other.rr_ip_v6 == service.rr_ip_v6 {
                return Err(ApiError::conflict(format!(
                    "rr_ip_v6 {} is already used by another service",
                    service.rr_ip_v6.unwrap_or(std::net::Ipv6Addr::UNSPECIFIED),
                )));
            }
        }
        Ok(())
    }

    async fn release_service(&self, _service: &ServiceRecord) -> Result<(), ApiError> {
        Ok(())
    }

    async fn deploy_instance(&self, service_id: ObjectId) -> Result<InstanceRecord, ApiError> {
        self.store
            .update_service(service_id, |s: &mut ServiceRecord| {
                let n = s.next_instance_progressive_number;
                s.next_instance_progressive_number += 1;
                let mut instance =
                    InstanceRecord::new(n, NegativeSchedulingStatus::NoActiveClusterWithCapacity);
                instance.status_detail = Some("no cluster is connected to this root".into());
                s.status = Some(Status::from(
                    NegativeSchedulingStatus::NoActiveClusterWithCapacity,
                ));
                s.status_detail = instance.status_detail.clone();
                s.instance_list.push(instance.clone());
                Ok::<_, StoreError>(instance)
            })
            .await
            .map_err(store_error)
    }

    async fn undeploy_instance(
        &self,
        service_id: ObjectId,
        n: Option<u32>,
    ) -> Result<(), ApiError> {
        self.store
            .update_service(service_id, |s: &mut ServiceRecord| {
                match n {
                    None => s.instance_list.clear(),
                    Some(n) => {
                        let before = s.instance_list.len();
                        s.instance_list.retain(|i| i.instance_number != n);
                        if s.instance_list.len() == before {
                            return Err(ApiError::not_found(format!(
                                "service {service_id} has no instance {n}"
                            )));
                        }
                    }
                }
                if s.instance_list.is_empty() {
                    s.status = Some(Status::from(DeploymentStatus::Undeployed));
                    s.status_detail = Some("every instance was undeployed".into());
                }
                Ok(())
            })
            .await
    }
}

/// The API status of an instance or address failure.
fn instance_error(e: InstanceError) -> ApiError {
    match e {
        InstanceError::ServiceNotFound(_) | InstanceError::InstanceNotFound { .. } => {
            ApiError::not_found(e.to_string())
        }
        InstanceError::Constraints(_) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
        InstanceError::Addresses(a) => address_error(a),
        InstanceError::Store(s) => store_error(s),
    }
}

fn address_error(e: AddressError) -> ApiError {
    match e {
        AddressError::InUse { .. } => ApiError::conflict(e.to_string()),
        AddressError::Invalid(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        AddressError::Exhausted(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        AddressError::Corrupt(_) => ApiError::internal(e.to_string()),
        AddressError::Store(s) => store_error(s),
    }
}

/// The real lifecycle: addresses in the root IPAM, instances placed on connected clusters.
#[async_trait]
impl ServiceLifecycle for ClusterLink {
    fn monitor(&self) -> Option<Arc<crate::monitor::Monitor>> {
        Some(Arc::clone(ClusterLink::monitor(self)))
    }

    async fn worker_logs(
        &self,
        cluster: &ClusterId,
        service_id: &ObjectId,
        n: u32,
        tail_lines: u32,
        wait: Duration,
    ) -> Result<String, String> {
        self.fetch_logs(cluster, &service_id.to_string(), n, tail_lines, wait)
            .await
            .map_err(|e| e.to_string())
    }

    async fn cluster_workers(
        &self,
        cluster: &ClusterId,
        wait: Duration,
    ) -> Result<Vec<super::clusters::WorkerView>, ApiError> {
        use crate::cluster_link::AskError;
        match self.fetch_workers(cluster, wait).await {
            Ok(workers) => Ok(workers.into_iter().map(worker_view).collect()),
            Err(e @ AskError::Timeout { .. }) => {
                Err(ApiError::new(StatusCode::GATEWAY_TIMEOUT, e.to_string()))
            }
            Err(e @ AskError::NotConnected(_)) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{e}: its workers are known only while it is; see GET /api/clusters"),
            )),
            Err(e @ AskError::Refused(_)) => Err(ApiError::internal(e.to_string())),
        }
    }

    async fn reserve_service_addresses(
        &self,
        service: &mut ServiceRecord,
        owner: &str,
    ) -> Result<(), ApiError> {
        self.reserve_services(std::slice::from_mut(service), owner)
            .await
    }

    async fn reserve_services(
        &self,
        services: &mut [ServiceRecord],
        owner: &str,
    ) -> Result<(), ApiError> {
        addresses::reserve_for_services_of(self.store().as_ref(), services, Some(owner))
            .await
            .map_err(address_error)
    }

    async fn release_service(&self, service: &ServiceRecord) -> Result<(), ApiError> {
        ClusterLink::release_service(self, service)
            .await
            .map_err(instance_error)
    }

    async fn deploy_instance(&self, service_id: ObjectId) -> Result<InstanceRecord, ApiError> {
        ClusterLink::deploy_instance(self, service_id)
            .await
            .map(|outcome| outcome.instance)
            .map_err(instance_error)
    }

    async fn deploy_instances(
        &self,
        service_id: ObjectId,
        count: u32,
    ) -> Result<Vec<InstanceRecord>, ApiError> {
        ClusterLink::deploy_instances(self, service_id, count)
            .await
            .map(|outcomes| outcomes.into_iter().map(|o| o.instance).collect())
            .map_err(instance_error)
    }

    async fn undeploy_instance(
        &self,
        service_id: ObjectId,
        n: Option<u32>,
    ) -> Result<(), ApiError> {
        ClusterLink::undeploy_instance(self, service_id, n)
            .await
            .map(|_| ())
            .map_err(instance_error)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        store_error(e)
    }
}

fn worker_view(w: oakestra_proto::grpc::WorkerSummary) -> super::clusters::WorkerView {
    super::clusters::WorkerView {
        id: w.id,
        host: w.host,
        ip: w.ip,
        active: w.active,
        seconds_since_report: w.seconds_since_report,
        cpu_cores: w.cpu_cores,
        cpu_percent: w.cpu_usage_percent,
        vcpus_reserved: w.vcpus_reserved,
        vcpus_allocatable: w.vcpus_allocatable,
        memory_in_mb: w.memory_total_mb,
        memory_free_in_mb: w.memory_free_mb,
        memory_reserved_in_mb: w.memory_reserved_mb,
        memory_allocatable_in_mb: w.memory_allocatable_mb,
        gpus: w.gpus,
        architecture: w.arch,
        virtualization: w.virtualization,
        instances: w.instances,
        overlay_mtu: (w.overlay_mtu > 0).then_some(w.overlay_mtu),
    }
}
