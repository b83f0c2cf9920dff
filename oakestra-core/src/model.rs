//! Records the control plane stores and shows: applications, services (jobs) and instances.
//!
//! Field names follow Oakestra's documents so the REST API keeps its JSON shape: `_id` of an
//! application or service is `{"$oid": "…"}`, other ids are plain strings.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::addresses::ServiceAddresses;
use crate::ids::{ClusterId, ObjectId, WorkerId, oid_format};
use crate::lenient;
use crate::naming::job_name;
use crate::sla::{Application, Extra, Microservice};
use crate::status::Status;

/// A stored application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplicationRecord {
    /// Own id, shown as `{"$oid": …}`.
    #[serde(rename = "_id", with = "oid_format")]
    pub id: ObjectId,
    /// The same id as a plain string (Oakestra repeats it).
    #[serde(rename = "applicationID")]
    pub application_id: ObjectId,
    /// Name.
    pub application_name: String,
    /// Namespace.
    pub application_namespace: String,
    /// Description (`""` when none was given).
    #[serde(default)]
    pub application_desc: String,
    /// Owner's user name.
    #[serde(rename = "userId")]
    pub user_id: String,
    /// Ids of the application's services.
    #[serde(default)]
    pub microservices: Vec<ObjectId>,
    /// Other keys of the SLA application object, kept.
    #[serde(flatten)]
    pub extra: Extra,
}

impl ApplicationRecord {
    /// A new record for `app` owned by `user_id`, with no services yet.
    pub fn new(id: ObjectId, user_id: impl Into<String>, app: &Application) -> Self {
        Self {
            id,
            application_id: id,
            application_name: app.application_name.clone(),
            application_namespace: app.application_namespace.clone(),
            application_desc: app.application_desc.clone().unwrap_or_default(),
            user_id: user_id.into(),
            microservices: Vec::new(),
            extra: app.extra.clone(),
        }
    }
}

/// A stored service (Oakestra's "job"): the SLA microservice plus generated fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// Own id, shown as `{"$oid": …}`.
    #[serde(rename = "_id", with = "oid_format")]
    pub id: ObjectId,
    /// Owning application.
    #[serde(rename = "applicationID")]
    pub application_id: ObjectId,
    /// Application name.
    pub app_name: String,
    /// Application namespace.
    pub app_ns: String,
    /// Microservice name.
    pub service_name: String,
    /// Microservice namespace.
    pub service_ns: String,
    /// `app.appns.service.servicens`.
    pub job_name: String,
    /// Image or kernel URLs (the SLA `code`).
    pub image: String,
    /// Round-robin IPv4 (user-given or allocated).
    #[serde(rename = "RR_ip", default, skip_serializing_if = "Option::is_none")]
    pub rr_ip: Option<Ipv4Addr>,
    /// Round-robin IPv6.
    #[serde(rename = "RR_ip_v6", default, skip_serializing_if = "Option::is_none")]
    pub rr_ip_v6: Option<Ipv6Addr>,
    /// Closest IPv4 (the SLA's `closest_ip` or allocated; same pool as `RR_ip`): a new
    /// connection to it reaches the instance with the lowest RTT from the client's worker.
    #[serde(
        rename = "Closest_ip",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub closest_ip: Option<Ipv4Addr>,
    /// Closest IPv6 (same pool as `RR_ip_v6`).
    #[serde(
        rename = "Closest_ip_v6",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub closest_ip_v6: Option<Ipv6Addr>,
    /// Job-level status (absent until the first deploy request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Human-readable detail of the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_detail: Option<String>,
    /// How many of its instances are ready — `RUNNING` and passing their readiness probe —
    /// out of `instance_list` (our addition, issue 18; absent until it has instances).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_instances: Option<u32>,
    /// Number the next instance gets.
    #[serde(default)]
    pub next_instance_progressive_number: u32,
    /// The instances.
    #[serde(default)]
    pub instance_list: Vec<InstanceRecord>,
    /// The SLA microservice as submitted (its `microserviceID` is set to [`Self::id`]).
    #[serde(flatten)]
    pub microservice: Microservice,
}

impl ServiceRecord {
    /// Instances that are ready (see [`InstanceRecord::is_ready`]), counted now.
    pub fn count_ready(&self) -> u32 {
        let n = self.instance_list.iter().filter(|i| i.is_ready()).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// The status with its readiness, as `oak` shows it: `RUNNING 2/3 ready`.
    pub fn status_with_readiness(&self) -> String {
        let status = self.status.map_or("-", |s| s.as_str());
        if self.instance_list.is_empty() {
            return status.to_owned();
        }
        format!(
            "{status} {}/{} ready",
            self.count_ready(),
            self.instance_list.len()
        )
    }

    /// A new record for `service` of `app`, as Oakestra's `generate_db_structure` builds it.
    pub fn new(
        id: ObjectId,
        application_id: ObjectId,
        app: &Application,
        service: &Microservice,
    ) -> Self {
        let mut microservice = service.clone();
        microservice.microservice_id = Some(id.to_string());
        let addresses = service.addresses.as_ref();
        Self {
            id,
            application_id,
            app_name: app.application_name.clone(),
            app_ns: app.application_namespace.clone(),
            service_name: service.microservice_name.clone(),
            service_ns: service.microservice_namespace.clone(),
            job_name: job_name(
                &app.application_name,
                &app.application_namespace,
                &service.microservice_name,
                &service.microservice_namespace,
            ),
            image: service.code.clone(),
            rr_ip: addresses.and_then(|a| a.rr_ip),
            rr_ip_v6: addresses.and_then(|a| a.rr_ip_v6),
            // The SLA's `closest_ip` is text; the root's IPAM validates and reserves it.
            closest_ip: None,
            closest_ip_v6: None,
            status: None,
            status_detail: None,
            ready_instances: None,
            next_instance_progressive_number: 0,
            instance_list: Vec::new(),
            microservice,
        }
    }

    /// The service addresses of instance `n`: the service's RR and closest pairs and the
    /// instance's own pair (absent while unassigned, or when there is no instance `n`).
    pub fn addresses(&self, n: u32) -> ServiceAddresses {
        let instance = self.instance(n);
        ServiceAddresses {
            rr_ip: self.rr_ip,
            rr_ip_v6: self.rr_ip_v6,
            closest_ip: self.closest_ip,
            closest_ip_v6: self.closest_ip_v6,
            instance_ip: instance.and_then(|i| i.instance_ip),
            instance_ip_v6: instance.and_then(|i| i.instance_ip_v6),
        }
    }

    /// The instance with number `n`.
    pub fn instance(&self, n: u32) -> Option<&InstanceRecord> {
        self.instance_list.iter().find(|i| i.instance_number == n)
    }

    /// Mutable access to the instance with number `n`.
    pub fn instance_mut(&mut self, n: u32) -> Option<&mut InstanceRecord> {
        self.instance_list
            .iter_mut()
            .find(|i| i.instance_number == n)
    }
}

/// One sample of a metric history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSample {
    /// The value. Oakestra's clients decode it as a string, so it is written as one; a number
    /// or a numeric string is accepted when read.
    #[serde(
        deserialize_with = "lenient::number",
        serialize_with = "lenient::f64_as_string"
    )]
    pub value: f64,
    /// ISO-8601 time of the sample.
    pub timestamp: String,
}

/// One instance of a service.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Number within the service (0, 1, …; never reused within a service).
    #[serde(deserialize_with = "lenient::number")]
    pub instance_number: u32,
    /// Current status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_detail: Option<String>,
    /// Cluster it was placed on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<ClusterId>,
    /// That cluster's location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_location: Option<String>,
    /// Worker it runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<WorkerId>,
    /// The worker's public address as it reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publicip: Option<String>,
    /// Worker address reachable by other workers (tunnel endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    /// Worker tunnel port.
    #[serde(
        default,
        deserialize_with = "lenient::option_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub host_port: Option<u16>,
    /// Instance service IPv4 (10.30.0.0/16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_ip: Option<Ipv4Addr>,
    /// Instance service IPv6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_ip_v6: Option<Ipv6Addr>,
    /// Address inside the worker's subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_ip: Option<Ipv4Addr>,
    /// IPv6 address inside the worker's subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_ip_v6: Option<Ipv6Addr>,
    /// CPU use in percent (written as a string, like Oakestra: the `oak` CLI decodes a string).
    #[serde(
        default,
        deserialize_with = "lenient::option_number",
        serialize_with = "lenient::option_f64_as_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu_percent: Option<f64>,
    /// Memory use in percent (written as a string, like Oakestra).
    #[serde(
        default,
        deserialize_with = "lenient::option_number",
        serialize_with = "lenient::option_f64_as_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory_percent: Option<f64>,
    /// Disk use in bytes.
    #[serde(
        default,
        deserialize_with = "lenient::option_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub disk: Option<u64>,
    /// Tail of the instance's log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<String>,
    /// How often its worker restarted it under the SLA's `restart_policy` (our addition; absent
    /// while 0). Counts the restarts on its current worker: a copy placed anew starts at 0.
    #[serde(
        default,
        deserialize_with = "lenient::number",
        skip_serializing_if = "is_zero"
    )]
    pub restart_count: u32,
    /// Whether it is in its service IPs' balancing (our addition, issue 18): `RUNNING` and
    /// passing its readiness probe, if it has one. Absent until its cluster first reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// Seconds since the epoch of the last update.
    #[serde(
        default,
        deserialize_with = "lenient::option_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_modified_timestamp: Option<f64>,
    /// Recent CPU samples (at most 100 are kept).
    #[serde(
        default,
        deserialize_with = "lenient::null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cpu_history: Vec<MetricSample>,
    /// Recent memory samples (at most 100 are kept).
    #[serde(
        default,
        deserialize_with = "lenient::null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub memory_history: Vec<MetricSample>,
    /// Other keys, kept.
    #[serde(flatten)]
    pub extra: Extra,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How many samples a metric history keeps.
pub const HISTORY_LEN: usize = 100;

impl InstanceRecord {
    /// `RUNNING` and not reported unready: in its service IPs' balancing.
    pub fn is_ready(&self) -> bool {
        self.status == Some(Status::RUNNING) && self.ready != Some(false)
    }

    /// A new instance with number `n` and a status.
    pub fn new(instance_number: u32, status: impl Into<Status>) -> Self {
        Self {
            instance_number,
            status: Some(status.into()),
            ..Self::default()
        }
    }

    /// Appends a sample to a history, keeping the last [`HISTORY_LEN`].
    pub fn push_sample(history: &mut Vec<MetricSample>, sample: MetricSample) {
        history.push(sample);
        if history.len() > HISTORY_LEN {
            let excess = history.len() - HISTORY_LEN;
            history.drain(..excess);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{DeploymentStatus, PositiveSchedulingStatus};

    fn sla() -> crate::sla::Sla {
        crate::sla::parse_and_validate(include_str!("../../examples/sla-clientsrvr-container.json"))
            .unwrap()
    }

    #[test]
    fn service_record_has_oakestra_shape() {
        let sla = sla();
        let app = &sla.applications[0];
        let app_id = ObjectId::from_parts(1, [0; 5], 1);
        let id = ObjectId::from_parts(1, [0; 5], 2);
        let mut rec = ServiceRecord::new(id, app_id, app, &app.microservices[1]);
        rec.instance_list.push(InstanceRecord::new(
            0,
            PositiveSchedulingStatus::ClusterScheduled,
        ));
        let json = serde_json::to_value(&rec).unwrap();
        assert_eq!(json["_id"]["$oid"], id.to_string());
        assert_eq!(json["applicationID"], app_id.to_string());
        assert_eq!(json["microserviceID"], id.to_string());
        assert_eq!(json["job_name"], "clientsrvr.test.nginx.test");
        assert_eq!(json["RR_ip"], "10.30.55.55");
        assert_eq!(json["image"], "docker.io/library/nginx:latest");
        assert_eq!(json["port"], "80:80/tcp");
        assert_eq!(json["instance_list"][0]["status"], "CLUSTER_SCHEDULED");
        let back: ServiceRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, rec);
    }

    #[test]
    fn instance_accepts_string_metrics_and_emits_numbers() {
        let inst: InstanceRecord = serde_json::from_str(
            r#"{"instance_number":"2","status":"RUNNING","cpu_percent":"12.345678",
                "memory_percent":"0.5","disk":"4096","host_port":"50103",
                "cpu_history":[{"value":"1.5","timestamp":"2026-01-01T00:00:00"}],
                "memory_history":null,"custom":1}"#,
        )
        .unwrap();
        assert_eq!(inst.instance_number, 2);
        assert_eq!(
            inst.status,
            Some(Status::Deployment(DeploymentStatus::Running))
        );
        assert_eq!(inst.cpu_percent, Some(12.345678));
        assert_eq!(inst.host_port, Some(50103));
        assert_eq!(inst.disk, Some(4096));
        let out = serde_json::to_value(&inst).unwrap();
        // Written as strings: Oakestra's Go CLI decodes these fields as `string`.
        assert_eq!(out["cpu_percent"], "12.345678");
        assert_eq!(out["host_port"], 50103);
        assert_eq!(out["cpu_history"][0]["value"], "1.5");
        let again: InstanceRecord = serde_json::from_value(out.clone()).unwrap();
        assert_eq!(again.cpu_percent, Some(12.345678));
        assert_eq!(out["custom"], 1);
        assert!(
            serde_json::from_str::<InstanceRecord>(r#"{"instance_number":0,"status":"BOGUS"}"#)
                .is_err()
        );
    }

    #[test]
    fn history_is_capped() {
        let mut h = Vec::new();
        for i in 0..150 {
            InstanceRecord::push_sample(
                &mut h,
                MetricSample {
                    value: f64::from(i),
                    timestamp: String::new(),
                },
            );
        }
        assert_eq!(h.len(), HISTORY_LEN);
        assert_eq!(h[0].value, 50.0);
    }
}
