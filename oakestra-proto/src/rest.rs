//! Request and response bodies of the root's REST API that `oakestra-core` does not define:
//! logins, accounts, organizations, clusters as the API shows them, join tokens, and the small
//! answers of some endpoints. The root serves these types and `oakestra-client` reads them, so
//! the two cannot drift apart.
//!
//! The structs a client reads keep unknown keys in `extra`, so a newer root does not break an
//! older client. With the feature `openapi` the bodies the root serves derive
//! `utoipa::ToSchema`, under the names the root's OpenAPI spec has always used.

use oakestra_core::ids::{ObjectId, oid_format};
use oakestra_core::model::{InstanceRecord, MetricSample};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What `POST /api/auth/login` takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginRequest {
    /// User name.
    #[cfg_attr(feature = "openapi", schema(example = "Admin"))]
    pub username: String,
    /// Password.
    #[cfg_attr(feature = "openapi", schema(example = "Admin"))]
    pub password: String,
    /// Organization to log in to (default `root`); the token's roles are the user's roles there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_name: Option<String>,
}

/// The two tokens of a login (`POST /api/auth/login`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = LoginResponse))]
pub struct Tokens {
    /// Access token (HS256 JWT, 10 minutes).
    pub token: String,
    /// Refresh token (30 days), for `POST /api/auth/refresh`.
    pub refresh_token: String,
    /// `true` when this is the account `Admin` logging in with the default password `Admin`:
    /// change it (`POST /api/user/Admin`). The dashboard shows a banner while it is. Not in
    /// Oakestra's answer (absent reads as `false`).
    #[serde(default)]
    pub default_password: bool,
}

/// What `POST /api/auth/refresh` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = RefreshResponse))]
pub struct Refreshed {
    /// New access token.
    pub token: String,
}

/// What `GET /api/permission/<username>` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = RolesResponse))]
pub struct Roles {
    /// Roles in the token's organization.
    pub roles: Vec<String>,
}

/// A user account as the API shows it (never with its password hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Id, `{"$oid": …}` on the wire.
    #[serde(rename = "_id", with = "oid_format")]
    pub id: ObjectId,
    /// User name.
    pub name: String,
    /// E-mail address.
    #[serde(default)]
    pub email: String,
    /// Creation time, `dd/mm/YYYY HH:MM`.
    #[serde(default)]
    pub created_at: String,
    /// Roles in the organization of the caller's token.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Other keys.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What `POST /api/auth/register` takes. Other keys (Oakestra's dashboard also sends
/// `created_at`) are ignored: the root sets the creation time itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = RegisterRequest))]
pub struct NewUser {
    /// User name (unique).
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub name: String,
    /// Password (stored as an argon2 hash).
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub password: String,
    /// E-mail address.
    #[serde(default)]
    pub email: String,
    /// Roles in the caller's organization.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// A change to a user (`PUT /api/user/<name>`); unset fields stay as they are.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = UserUpdateRequest))]
pub struct UserUpdate {
    /// New e-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// New password (the root stores its argon2 hash; Oakestra stores it in clear text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub password: Option<String>,
    /// New roles in the caller's organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// Other fields, stored as they are (`name` and `_id` cannot be changed).
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub extra: Map<String, Value>,
}

/// What `POST /api/user/<name>` takes: a user changing their own password. Oakestra's
/// spelling, `{"oldPassword", "newPassword"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PasswordChange {
    /// The current password.
    pub old_password: String,
    /// The new one (not empty, not the old one).
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub new_password: String,
}

/// A member of an organization, as the API and the store show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = MemberDoc))]
pub struct Member {
    /// The user's id (24 hex digits).
    pub user_id: String,
    /// Roles in the organization.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// An organization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Organization {
    /// Id, `{"$oid": …}` on the wire.
    #[serde(rename = "_id", with = "oid_format")]
    pub id: ObjectId,
    /// Name (unique).
    pub name: String,
    /// Members.
    #[serde(default)]
    pub member: Vec<Member>,
    /// Other keys.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A new organization or the new state of one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = OrganizationRequest))]
pub struct OrganizationSpec {
    /// Name (unique; not empty or only white space).
    #[cfg_attr(feature = "openapi", schema(pattern = r"\S"))]
    pub name: String,
    /// Members.
    #[serde(default)]
    pub member: Vec<Member>,
}

/// A change to an application (`PUT /api/application/<id>`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = ApplicationUpdateRequest))]
pub struct ApplicationUpdate {
    /// New name (`^[a-zA-Z0-9]{1,30}$`).
    pub application_name: String,
    /// New namespace (`^[a-zA-Z0-9]{1,30}$`).
    pub application_namespace: String,
    /// New description (unchanged when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_desc: Option<String>,
    /// Ignored by the root (Oakestra's dashboard sends it): services are added with
    /// `POST /api/service` and removed with `DELETE /api/service/<id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<String>>))]
    pub microservices: Option<Value>,
}

/// A cluster as `GET /api/clusters` shows it: Oakestra's resource fields plus the aliases the
/// CLIs and the dashboard read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// Id (a plain string).
    #[serde(rename = "_id")]
    pub id: String,
    /// Name.
    pub cluster_name: String,
    /// Location.
    #[serde(default)]
    pub cluster_location: String,
    /// Whether its link to the root is up.
    #[serde(default)]
    pub active: bool,
    /// Active workers.
    #[serde(default)]
    pub active_nodes: u64,
    /// Cores over all workers.
    #[serde(default)]
    pub total_cpu_cores: u64,
    /// Memory over all workers (MB).
    #[serde(default)]
    pub memory_in_mb: u64,
    /// Mean CPU use in percent.
    #[serde(default)]
    pub aggregated_cpu_percent: f64,
    /// Runtimes the workers offer.
    #[serde(default)]
    pub virtualization: Vec<String>,
    /// Seconds since the epoch of the last message from the cluster.
    #[serde(default)]
    pub last_modified_timestamp: Option<f64>,
    /// Every other key (candidate_name, vcpus, memory, cpu_percent, …).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A worker of a cluster as `GET /api/clusters/<id>/workers` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = WorkerView))]
pub struct ClusterWorker {
    /// Worker id (as in an instance's `worker_id`).
    pub id: String,
    /// Hostname.
    #[serde(default)]
    pub host: String,
    /// Address it reported.
    #[serde(default)]
    pub ip: String,
    /// Reported within the cluster's worker timeout.
    #[serde(default)]
    pub active: bool,
    /// Seconds since its last report.
    #[serde(default)]
    pub seconds_since_report: f64,
    /// Logical cores.
    #[serde(default)]
    pub cpu_cores: f64,
    /// Measured CPU usage, 0–100 %.
    #[serde(default)]
    pub cpu_percent: f64,
    /// vCPUs its instances reserve.
    #[serde(default)]
    pub vcpus_reserved: f64,
    /// vCPUs left to place.
    #[serde(default)]
    pub vcpus_allocatable: f64,
    /// Total memory, MB.
    #[serde(default)]
    pub memory_in_mb: u64,
    /// Measured free memory, MB.
    #[serde(default)]
    pub memory_free_in_mb: u64,
    /// Memory its instances reserve, MB.
    #[serde(default)]
    pub memory_reserved_in_mb: u64,
    /// Memory left to place, MB.
    #[serde(default)]
    pub memory_allocatable_in_mb: u64,
    /// GPUs.
    #[serde(default)]
    pub gpus: u32,
    /// Architecture.
    #[serde(default)]
    pub architecture: String,
    /// Runtimes it offers.
    #[serde(default)]
    pub virtualization: Vec<String>,
    /// Instances placed on it.
    #[serde(default)]
    pub instances: u32,
    /// MTU of its overlay network (detected from its underlay or set with `--overlay-mtu`);
    /// absent when it runs no overlay or did not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay_mtu: Option<u32>,
}

/// What `POST /api/service` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceCreation {
    /// Id of the last service created.
    pub job_id: String,
    /// The services created.
    #[serde(default)]
    pub deployed_services: Vec<ServiceOutcome>,
    /// Always empty: creation is all or nothing, failures are errors.
    #[serde(default)]
    pub failed_services: Vec<ServiceOutcome>,
    /// Other keys (the root sends none; kept for newer roots).
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub extra: Map<String, Value>,
}

/// One entry of [`ServiceCreation`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceOutcome {
    /// Microservice name.
    pub service_name: String,
    /// HTTP-like status of this service (always 200 from this root).
    pub status: u16,
    /// Its id.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = String, required = true))]
    pub service_id: Option<String>,
}

/// What `POST /api/service/<id>/instance` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = DeployResponse))]
pub struct DeployAnswer {
    /// `"ok"`.
    pub message: String,
    /// The new instance: `instance_number`, `status` (`CLUSTER_SCHEDULED`, or the negative
    /// scheduling status such as `NoActiveClusterWithCapacity` when nothing fits) and
    /// `status_detail`. Always present in this root's answers.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object, required = true))]
    pub instance: Option<InstanceRecord>,
    /// Only with `?count=N`: every instance created, in number order (`instance` is then
    /// the first of them). Absent without `count`, so the answer stays Oakestra's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<Object>>))]
    pub instances: Option<Vec<InstanceRecord>>,
}

/// Most instances one `POST /api/service/<id>/instance?count=N` creates.
pub const MAX_DEPLOY_COUNT: u32 = 10_000;

/// Body of `PUT /api/service/<id>/replicas`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScaleRequest {
    /// The desired number of instances, 0 to 10,000 (`oakestra_core::sla::MAX_REPLICAS`).
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 10000))]
    pub replicas: u32,
}

/// What `PUT /api/service/<id>/replicas` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScaleAnswer {
    /// The desired number of instances now recorded in the service's SLA (`replicas`).
    pub replicas: u32,
    /// Numbers of the instances the service has after the change (neither `COMPLETED` nor
    /// `UNDEPLOYED`), ascending.
    pub instances: Vec<u32>,
    /// Numbers of the instances this request created.
    #[serde(default)]
    pub deployed: Vec<u32>,
    /// Numbers of the instances this request undeployed (the highest numbered first).
    #[serde(default)]
    pub removed: Vec<u32>,
}

/// A `{"message": …}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = MessageBody))]
pub struct Message {
    /// What happened.
    pub message: String,
}

impl Message {
    /// `{"message": text}`.
    pub fn new(text: impl Into<String>) -> Message {
        Message {
            message: text.into(),
        }
    }
}

/// What `POST /api/join-tokens` takes (the body may also be empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewJoinToken {
    /// A name to recognise the token by (default `cluster`).
    #[serde(default)]
    pub name: Option<String>,
}

/// A cluster join token just created by `POST /api/join-tokens` (Oakestra-rs only): the only
/// time its secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedJoinToken {
    /// Token id (for listing and revoking).
    pub id: String,
    /// Its name.
    pub name: String,
    /// The token, for the cluster orchestrator's `--join-token`.
    pub token: String,
}

/// A stored cluster join token as `GET /api/join-tokens` shows it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = JoinTokenView))]
pub struct JoinTokenInfo {
    /// Token id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Creation time, ISO 8601 UTC.
    #[serde(default)]
    pub created_at: String,
}

/// One instance's usage history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceUsage {
    /// The instance.
    pub instance_number: u32,
    /// CPU percent, `[{value, timestamp}]` (Oakestra's shape).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub cpu_history: Vec<MetricSample>,
    /// Memory percent of the worker's memory, same shape.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub memory_history: Vec<MetricSample>,
}

/// What `GET /api/service/<id>/usage` answers (Oakestra-rs only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceUsage {
    /// The service.
    pub service_id: String,
    /// Start of the range, seconds since the epoch.
    pub since: u32,
    /// End of the range.
    pub until: u32,
    /// Grid step, seconds.
    pub step: u32,
    /// One entry per instance.
    pub instances: Vec<InstanceUsage>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn new_user_ignores_created_at_and_defaults_email_and_roles() {
        let user: NewUser = serde_json::from_value(
            json!({"name": "carol", "password": "pw", "created_at": "01/01/2024 10:00"}),
        )
        .unwrap();
        assert_eq!(user.email, "");
        assert!(user.roles.is_empty());
        assert_eq!(
            serde_json::to_string(&user).unwrap(),
            r#"{"name":"carol","password":"pw","email":"","roles":[]}"#
        );
    }

    #[test]
    fn user_update_sends_only_what_is_set_and_keeps_other_fields() {
        assert_eq!(serde_json::to_string(&UserUpdate::default()).unwrap(), "{}");
        let update: UserUpdate =
            serde_json::from_value(json!({"email": "c@x.org", "name": "carol", "city": "Munich"}))
                .unwrap();
        assert_eq!(update.email.as_deref(), Some("c@x.org"));
        assert_eq!(update.password, None);
        assert_eq!(update.extra.len(), 2);
        assert_eq!(update.extra["city"], "Munich");
        assert_eq!(
            serde_json::to_value(&update).unwrap(),
            json!({"email": "c@x.org", "name": "carol", "city": "Munich"})
        );
    }

    #[test]
    fn password_change_uses_oakestras_camel_case() {
        let change = PasswordChange {
            old_password: "a".into(),
            new_password: "b".into(),
        };
        assert_eq!(
            serde_json::to_string(&change).unwrap(),
            r#"{"oldPassword":"a","newPassword":"b"}"#
        );
    }

    #[test]
    fn application_update_keeps_microservices_out_unless_given() {
        let update = ApplicationUpdate {
            application_name: "app".into(),
            application_namespace: "ns".into(),
            ..ApplicationUpdate::default()
        };
        assert_eq!(
            serde_json::to_string(&update).unwrap(),
            r#"{"application_name":"app","application_namespace":"ns"}"#
        );
        let read: ApplicationUpdate = serde_json::from_value(json!({
            "application_name": "app", "application_namespace": "ns",
            "application_desc": "d", "microservices": ["x"]
        }))
        .unwrap();
        assert_eq!(read.application_desc.as_deref(), Some("d"));
        assert_eq!(read.microservices, Some(json!(["x"])));
    }
}
