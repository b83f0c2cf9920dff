//! The typed API, written once over the [`Store`] primitives as inherent methods of
//! `dyn Store`, so every backend behaves the same.
//!
//! Consistency rules that make the API safe on backends without multi-document transactions
//! (see [`Atomicity::PerDocument`]):
//! * a service is visible only while its application exists and lists it in `microservices`;
//!   writes create services before the application that references them and remove the
//!   reference before deleting the service, so a crash part-way leaves only invisible leftovers;
//! * a unique name (user, organization, cluster, application per user) is a claim document in
//!   [`Collection::UniqueKeys`] written before its record; a claim whose record does not hold
//!   the name (a leftover) is ignored and replaced;
//! * [`Store::repair`](dyn Store::repair) deletes such leftovers at start-up.

use std::collections::BTreeSet;

use oakestra_core::ids::{ClusterId, ObjectId};
use oakestra_core::model::{ApplicationRecord, ServiceRecord};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::document::{Atomicity, Collection, Doc, Write};
use crate::error::StoreError;
use crate::records::{ClusterRecord, JoinTokenRecord, OrganizationRecord, SigningKey, UserRecord};
use crate::store::Store;

/// How often an optimistic read-modify-write is retried before [`StoreError::Stale`] is
/// returned. Conflicts need concurrent writers of the same document, so this is never reached
/// in practice.
pub const MAX_ATTEMPTS: usize = 128;

const IPAM_ID: &str = "ipam";

/// A record type with its collection, id and unique names.
pub trait Record: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// Where records of this type live.
    const COLLECTION: Collection;

    /// The key of this record in its collection.
    fn record_id(&self) -> String;

    /// Names that must be unique among records of this type.
    fn unique_keys(&self) -> Vec<String> {
        Vec::new()
    }

    /// A unique key for error messages.
    fn describe_key(key: &str) -> String {
        format!("name {key:?}")
    }
}

impl Record for ApplicationRecord {
    const COLLECTION: Collection = Collection::Applications;

    fn record_id(&self) -> String {
        self.id.to_string()
    }

    fn unique_keys(&self) -> Vec<String> {
        vec![app_key(
            &self.user_id,
            &self.application_name,
            &self.application_namespace,
        )]
    }

    fn describe_key(key: &str) -> String {
        match serde_json::from_str::<[String; 3]>(key) {
            Ok([user, name, ns]) => {
                format!("application {name:?} in namespace {ns:?} of user {user:?}")
            }
            Err(_) => format!("name {key:?}"),
        }
    }
}

fn app_key(user: &str, name: &str, namespace: &str) -> String {
    json!([user, name, namespace]).to_string()
}

impl Record for ServiceRecord {
    const COLLECTION: Collection = Collection::Services;

    fn record_id(&self) -> String {
        self.id.to_string()
    }
}

impl Record for UserRecord {
    const COLLECTION: Collection = Collection::Users;

    fn record_id(&self) -> String {
        self.id.to_string()
    }

    fn unique_keys(&self) -> Vec<String> {
        vec![self.name.clone()]
    }
}

impl Record for OrganizationRecord {
    const COLLECTION: Collection = Collection::Organizations;

    fn record_id(&self) -> String {
        self.id.to_string()
    }

    fn unique_keys(&self) -> Vec<String> {
        vec![self.name.clone()]
    }
}

impl Record for ClusterRecord {
    const COLLECTION: Collection = Collection::Clusters;

    fn record_id(&self) -> String {
        self.id.0.clone()
    }

    fn unique_keys(&self) -> Vec<String> {
        vec![self.name.clone()]
    }
}

impl Record for JoinTokenRecord {
    const COLLECTION: Collection = Collection::JoinTokens;

    fn record_id(&self) -> String {
        self.id.clone()
    }
}

/// What [`repair`](dyn Store::repair) removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Services deleted because their application is gone or does not list them.
    pub orphan_services: Vec<String>,
    /// Application references to services that do not exist, removed.
    pub dangling_service_refs: usize,
    /// Unique-name claims whose record does not hold the name, deleted.
    pub dangling_unique_keys: usize,
}

impl RepairReport {
    /// True when nothing needed repair.
    pub fn is_clean(&self) -> bool {
        self.orphan_services.is_empty()
            && self.dangling_service_refs == 0
            && self.dangling_unique_keys == 0
    }
}

fn decode<R: DeserializeOwned>(collection: Collection, doc: &Doc) -> Result<R, StoreError> {
    R::deserialize(&doc.body).map_err(|e| StoreError::Corrupt {
        kind: collection.kind(),
        id: doc.id.clone(),
        reason: e.to_string(),
    })
}

fn encode<R: Serialize>(collection: Collection, id: &str, rec: &R) -> Result<Value, StoreError> {
    serde_json::to_value(rec).map_err(|e| StoreError::Invalid {
        kind: collection.kind(),
        what: format!("{id:?} cannot be encoded: {e}"),
    })
}

fn claim_id(collection: Collection, key: &str) -> String {
    format!("{}/{key}", collection.name())
}

fn claim_body(collection: Collection, key: &str, target: &str) -> Value {
    json!({
        "_id": claim_id(collection, key),
        "collection": collection.name(),
        "key": key,
        "target": target,
    })
}

fn meta_body(id: &str, field: &str, value: Value) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("_id".into(), Value::String(id.into()));
    m.insert(field.into(), value);
    Value::Object(m)
}

fn signing_key_id(name: &str) -> String {
    format!("signing_key/{name}")
}

/// Lets a retry loop give up on a persistently contended document.
fn stale(collection: Collection, id: &str) -> StoreError {
    StoreError::Stale {
        kind: collection.kind(),
        id: id.to_owned(),
    }
}

impl dyn Store {
    // ----- generic record operations -------------------------------------------------------

    /// The record with this id.
    pub async fn get_record<R: Record>(&self, id: &str) -> Result<Option<R>, StoreError> {
        match self.get(R::COLLECTION, id).await? {
            Some(doc) => Ok(Some(decode(R::COLLECTION, &doc)?)),
            None => Ok(None),
        }
    }

    /// Every record of a type, ordered by id.
    pub async fn list_records<R: Record>(&self) -> Result<Vec<R>, StoreError> {
        let docs = self.list(R::COLLECTION).await?;
        docs.iter().map(|d| decode(R::COLLECTION, d)).collect()
    }

    /// Records whose top-level JSON `field` equals `value`, ordered by id.
    pub async fn find_records<R: Record>(
        &self,
        field: &str,
        value: &Value,
    ) -> Result<Vec<R>, StoreError> {
        let docs = self.find_eq(R::COLLECTION, field, value).await?;
        docs.iter().map(|d| decode(R::COLLECTION, d)).collect()
    }

    /// The record that holds unique name `key`, if any.
    pub async fn find_by_unique_key<R: Record>(&self, key: &str) -> Result<Option<R>, StoreError> {
        let Some(claim) = self
            .get(Collection::UniqueKeys, &claim_id(R::COLLECTION, key))
            .await?
        else {
            return Ok(None);
        };
        let Some(target) = claim.body.get("target").and_then(Value::as_str) else {
            return Ok(None);
        };
        let holder: Option<R> = self.get_record(target).await?;
        Ok(holder.filter(|h| h.unique_keys().iter().any(|k| k == key)))
    }

    /// Fails with [`StoreError::Conflict`] if another record holds `key`; removes a leftover
    /// claim that no record holds.
    async fn ensure_claimable<R: Record>(&self, key: &str) -> Result<(), StoreError> {
        let cid = claim_id(R::COLLECTION, key);
        let Some(claim) = self.get(Collection::UniqueKeys, &cid).await? else {
            return Ok(());
        };
        let target = claim
            .body
            .get("target")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let holder: Option<R> = self.get_record(&target).await?;
        if holder.is_some_and(|h| h.unique_keys().iter().any(|k| k == key)) {
            return Err(StoreError::Conflict {
                kind: R::COLLECTION.kind(),
                what: format!(
                    "{} is already used by {} {target}",
                    R::describe_key(key),
                    R::COLLECTION.kind()
                ),
            });
        }
        if self.atomicity() == Atomicity::PerDocument {
            // The claim may belong to a write still in flight (claim written, record not yet),
            // so it cannot be taken over here; a crash leftover is removed by `repair`.
            return Err(StoreError::Conflict {
                kind: R::COLLECTION.kind(),
                what: format!(
                    "{} is being taken by a concurrent write of {} {target} (or is left over from a crash; restarting runs the repair that frees it)",
                    R::describe_key(key),
                    R::COLLECTION.kind()
                ),
            });
        }
        let leftover = Write::delete(Collection::UniqueKeys, cid, claim.rev, claim.body);
        match self.commit(vec![leftover]).await {
            Ok(()) | Err(StoreError::Stale { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Writes that release the claims on `keys` held by `target` (read first, so a claim that
    /// someone else took over in the meantime is left alone).
    async fn release_claims<R: Record>(
        &self,
        keys: &[String],
        target: &str,
    ) -> Result<Vec<Write>, StoreError> {
        let mut writes = Vec::new();
        for key in keys {
            let cid = claim_id(R::COLLECTION, key);
            if let Some(claim) = self.get(Collection::UniqueKeys, &cid).await?
                && claim.body.get("target").and_then(Value::as_str) == Some(target)
            {
                writes.push(Write::delete(
                    Collection::UniqueKeys,
                    cid,
                    claim.rev,
                    claim.body,
                ));
            }
        }
        Ok(writes)
    }

    /// After a failed insert: the proper conflict if one of `keys` is now held by another
    /// record, else `None` (the caller retries or reports its own error).
    async fn claim_conflict<R: Record>(
        &self,
        keys: &[String],
    ) -> Result<Option<StoreError>, StoreError> {
        for key in keys {
            if let Err(e) = self.ensure_claimable::<R>(key).await {
                if e.is_conflict() {
                    return Ok(Some(e));
                }
                return Err(e);
            }
        }
        Ok(None)
    }

    /// Inserts a new record. [`StoreError::Conflict`] if its id or a unique name is taken.
    pub async fn insert_record<R: Record>(&self, rec: &R) -> Result<(), StoreError> {
        let id = rec.record_id();
        let body = encode(R::COLLECTION, &id, rec)?;
        let keys = rec.unique_keys();
        let mut last = None;
        for _ in 0..3 {
            for key in &keys {
                self.ensure_claimable::<R>(key).await?;
            }
            let mut writes: Vec<Write> = keys
                .iter()
                .map(|k| {
                    Write::insert(Collection::UniqueKeys, claim_id(R::COLLECTION, k), {
                        claim_body(R::COLLECTION, k, &id)
                    })
                })
                .collect();
            writes.push(Write::insert(R::COLLECTION, id.clone(), body.clone()));
            match self.commit(writes).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_conflict() || e.is_stale() => {
                    if let Some(conflict) = self.claim_conflict::<R>(&keys).await? {
                        return Err(conflict);
                    }
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| stale(R::COLLECTION, &id)))
    }

    /// Read-modify-write of one record under optimistic concurrency: reads it, runs `f` on it,
    /// and writes it back only if its revision is unchanged, retrying from the read otherwise.
    /// `f` may therefore run more than once: keep it free of side effects outside the record.
    /// If `f` returns `Err`, nothing is written. If it leaves the record unchanged, nothing is
    /// written either. Unique names that `f` changes are claimed and released in the same
    /// commit. [`StoreError::NotFound`] if the record does not exist.
    pub async fn update_record<R, T, E>(
        &self,
        id: &str,
        mut f: impl FnMut(&mut R) -> Result<T, E> + Send,
    ) -> Result<T, E>
    where
        R: Record,
        T: Send,
        E: From<StoreError> + Send,
    {
        let kind = R::COLLECTION.kind();
        for _ in 0..MAX_ATTEMPTS {
            let Some(doc) = self.get(R::COLLECTION, id).await? else {
                return Err(StoreError::NotFound {
                    kind,
                    id: id.to_owned(),
                }
                .into());
            };
            let before: R = decode(R::COLLECTION, &doc)?;
            let mut rec = before.clone();
            let out = f(&mut rec)?;
            let body = encode(R::COLLECTION, id, &rec)?;
            if body == doc.body {
                return Ok(out);
            }
            if rec.record_id() != id {
                return Err(StoreError::Invalid {
                    kind,
                    what: format!(
                        "an update of {id:?} changed its id to {:?}",
                        rec.record_id()
                    ),
                }
                .into());
            }
            let old_keys: BTreeSet<String> = before.unique_keys().into_iter().collect();
            let new_keys: BTreeSet<String> = rec.unique_keys().into_iter().collect();
            let added: Vec<String> = new_keys.difference(&old_keys).cloned().collect();
            let removed: Vec<String> = old_keys.difference(&new_keys).cloned().collect();
            for key in &added {
                self.ensure_claimable::<R>(key).await?;
            }
            let mut writes: Vec<Write> = added
                .iter()
                .map(|k| {
                    Write::insert(
                        Collection::UniqueKeys,
                        claim_id(R::COLLECTION, k),
                        claim_body(R::COLLECTION, k, id),
                    )
                })
                .collect();
            writes.push(Write::replace(R::COLLECTION, id, doc.rev, doc.body, body));
            writes.extend(self.release_claims::<R>(&removed, id).await?);
            match self.commit(writes).await {
                Ok(()) => return Ok(out),
                Err(e) if e.is_stale() || e.is_conflict() => {
                    if let Some(conflict) = self.claim_conflict::<R>(&added).await? {
                        return Err(conflict.into());
                    }
                    tokio::task::yield_now().await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(stale(R::COLLECTION, id).into())
    }

    /// Deletes a record and releases its unique names; returns what was deleted.
    pub async fn delete_record<R: Record>(&self, id: &str) -> Result<R, StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(doc) = self.get(R::COLLECTION, id).await? else {
                return Err(StoreError::NotFound {
                    kind: R::COLLECTION.kind(),
                    id: id.to_owned(),
                });
            };
            let rec: R = decode(R::COLLECTION, &doc)?;
            let mut writes = vec![Write::delete(R::COLLECTION, id, doc.rev, doc.body)];
            writes.extend(self.release_claims::<R>(&rec.unique_keys(), id).await?);
            match self.commit(writes).await {
                Ok(()) => return Ok(rec),
                Err(e) if e.is_stale() => tokio::task::yield_now().await,
                Err(e) => return Err(e),
            }
        }
        Err(stale(R::COLLECTION, id))
    }

    // ----- users and organizations ---------------------------------------------------------

    /// A user by id.
    pub async fn get_user(&self, id: ObjectId) -> Result<Option<UserRecord>, StoreError> {
        self.get_record(&id.to_string()).await
    }

    /// A user by (unique) name.
    pub async fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        self.find_by_unique_key(name).await
    }

    /// Every user.
    pub async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.list_records().await
    }

    /// Creates a user. [`StoreError::Conflict`] if the name is taken.
    pub async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        self.insert_record(user).await
    }

    /// Read-modify-write of a user (see [`update_record`](dyn Store::update_record)).
    pub async fn update_user<T: Send, E: From<StoreError> + Send>(
        &self,
        id: ObjectId,
        f: impl FnMut(&mut UserRecord) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        self.update_record(&id.to_string(), f).await
    }

    /// Deletes a user, then removes it from every organization (one commit per organization).
    pub async fn delete_user(&self, id: ObjectId) -> Result<UserRecord, StoreError> {
        let user = self.delete_record::<UserRecord>(&id.to_string()).await?;
        let uid = id.to_string();
        for org in self.list_organizations().await? {
            if org.members.iter().any(|m| m.user_id == uid) {
                let res = self
                    .update_organization(org.id, |o| {
                        o.members.retain(|m| m.user_id != uid);
                        Ok::<_, StoreError>(())
                    })
                    .await;
                match res {
                    Ok(()) | Err(StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(user)
    }

    /// An organization by id.
    pub async fn get_organization(
        &self,
        id: ObjectId,
    ) -> Result<Option<OrganizationRecord>, StoreError> {
        self.get_record(&id.to_string()).await
    }

    /// An organization by (unique) name.
    pub async fn organization_by_name(
        &self,
        name: &str,
    ) -> Result<Option<OrganizationRecord>, StoreError> {
        self.find_by_unique_key(name).await
    }

    /// Every organization.
    pub async fn list_organizations(&self) -> Result<Vec<OrganizationRecord>, StoreError> {
        self.list_records().await
    }

    /// Creates an organization. [`StoreError::Conflict`] if the name is taken.
    pub async fn create_organization(&self, org: &OrganizationRecord) -> Result<(), StoreError> {
        self.insert_record(org).await
    }

    /// Read-modify-write of an organization.
    pub async fn update_organization<T: Send, E: From<StoreError> + Send>(
        &self,
        id: ObjectId,
        f: impl FnMut(&mut OrganizationRecord) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        self.update_record(&id.to_string(), f).await
    }

    /// Deletes an organization.
    pub async fn delete_organization(
        &self,
        id: ObjectId,
    ) -> Result<OrganizationRecord, StoreError> {
        self.delete_record(&id.to_string()).await
    }

    // ----- applications and services -------------------------------------------------------

    /// Creates an application together with its services, all or nothing. The application's
    /// `microservices` gets every service id appended (if missing); each service must name the
    /// application in `application_id`. [`StoreError::Conflict`] if the user already has an
    /// application with this name and namespace, or an id is taken. Returns the stored
    /// application.
    ///
    /// On [`Atomicity::PerDocument`] backends the services are written first and the
    /// application last, so a crash part-way leaves only invisible services for
    /// [`repair`](dyn Store::repair).
    pub async fn create_application(
        &self,
        app: &ApplicationRecord,
        services: &[ServiceRecord],
    ) -> Result<ApplicationRecord, StoreError> {
        let mut app = app.clone();
        for s in services {
            if s.application_id != app.id {
                return Err(StoreError::Invalid {
                    kind: "service",
                    what: format!(
                        "service {} names application {} but is created with application {}",
                        s.id, s.application_id, app.id
                    ),
                });
            }
            if !app.microservices.contains(&s.id) {
                app.microservices.push(s.id);
            }
        }
        let app_id = app.id.to_string();
        let app_body = encode(Collection::Applications, &app_id, &app)?;
        let keys = app.unique_keys();
        let mut last = None;
        for _ in 0..3 {
            for key in &keys {
                self.ensure_claimable::<ApplicationRecord>(key).await?;
            }
            let mut writes = Vec::with_capacity(services.len() + 2);
            for s in services {
                let sid = s.id.to_string();
                let body = encode(Collection::Services, &sid, s)?;
                writes.push(Write::insert(Collection::Services, sid, body));
            }
            for k in &keys {
                writes.push(Write::insert(
                    Collection::UniqueKeys,
                    claim_id(Collection::Applications, k),
                    claim_body(Collection::Applications, k, &app_id),
                ));
            }
            writes.push(Write::insert(
                Collection::Applications,
                app_id.clone(),
                app_body.clone(),
            ));
            match self.commit(writes).await {
                Ok(()) => return Ok(app),
                Err(e) if e.is_conflict() || e.is_stale() => {
                    if let Some(c) = self.claim_conflict::<ApplicationRecord>(&keys).await? {
                        return Err(c);
                    }
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| stale(Collection::Applications, &app_id)))
    }

    /// An application by id.
    pub async fn get_application(
        &self,
        id: ObjectId,
    ) -> Result<Option<ApplicationRecord>, StoreError> {
        self.get_record(&id.to_string()).await
    }

    /// Every application, ordered by id (= creation time).
    pub async fn list_applications(&self) -> Result<Vec<ApplicationRecord>, StoreError> {
        self.list_records().await
    }

    /// The applications of one user (`userId` = user name).
    pub async fn list_applications_of(
        &self,
        user: &str,
    ) -> Result<Vec<ApplicationRecord>, StoreError> {
        self.find_records("userId", &Value::String(user.to_owned()))
            .await
    }

    /// The application of `user` with this name and namespace.
    pub async fn application_by_name(
        &self,
        user: &str,
        name: &str,
        namespace: &str,
    ) -> Result<Option<ApplicationRecord>, StoreError> {
        self.find_by_unique_key(&app_key(user, name, namespace))
            .await
    }

    /// Read-modify-write of an application. Renaming it to a name the user already uses gives
    /// [`StoreError::Conflict`].
    pub async fn update_application<T: Send, E: From<StoreError> + Send>(
        &self,
        id: ObjectId,
        f: impl FnMut(&mut ApplicationRecord) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        self.update_record(&id.to_string(), f).await
    }

    /// Deletes an application and its services; returns both so the caller can undeploy
    /// instances and release addresses. The application goes first, so on
    /// [`Atomicity::PerDocument`] backends a crash part-way leaves only invisible services.
    pub async fn delete_application(
        &self,
        id: ObjectId,
    ) -> Result<(ApplicationRecord, Vec<ServiceRecord>), StoreError> {
        let app_id = id.to_string();
        for _ in 0..MAX_ATTEMPTS {
            let Some(doc) = self.get(Collection::Applications, &app_id).await? else {
                return Err(StoreError::NotFound {
                    kind: "application",
                    id: app_id,
                });
            };
            let app: ApplicationRecord = decode(Collection::Applications, &doc)?;
            let services = self.list_services(id).await?;
            let mut writes = vec![Write::delete(
                Collection::Applications,
                &app_id,
                doc.rev,
                doc.body,
            )];
            writes.extend(
                self.release_claims::<ApplicationRecord>(&app.unique_keys(), &app_id)
                    .await?,
            );
            // Every service naming this application, listed or not (leftovers included).
            let all = self
                .find_eq(
                    Collection::Services,
                    "applicationID",
                    &Value::String(app_id.clone()),
                )
                .await?;
            for s in all {
                writes.push(Write::delete(Collection::Services, s.id, s.rev, s.body));
            }
            match self.commit(writes).await {
                Ok(()) => return Ok((app, services)),
                Err(e) if e.is_stale() => tokio::task::yield_now().await,
                Err(e) => return Err(e),
            }
        }
        Err(stale(Collection::Applications, &app_id))
    }

    /// Whether `service` is visible: its application exists and lists it.
    async fn is_visible(&self, service: &ServiceRecord) -> Result<bool, StoreError> {
        Ok(self
            .get_application(service.application_id)
            .await?
            .is_some_and(|a| a.microservices.contains(&service.id)))
    }

    /// A service (job) by id; `None` also for a leftover whose application does not list it.
    pub async fn get_service(&self, id: ObjectId) -> Result<Option<ServiceRecord>, StoreError> {
        match self.get_record::<ServiceRecord>(&id.to_string()).await? {
            Some(s) if self.is_visible(&s).await? => Ok(Some(s)),
            _ => Ok(None),
        }
    }

    /// The services of an application, in the order of its `microservices` list (empty if the
    /// application does not exist).
    pub async fn list_services(&self, app_id: ObjectId) -> Result<Vec<ServiceRecord>, StoreError> {
        let Some(app) = self.get_application(app_id).await? else {
            return Ok(Vec::new());
        };
        let found: Vec<ServiceRecord> = self
            .find_records("applicationID", &Value::String(app_id.to_string()))
            .await?;
        Ok(app
            .microservices
            .iter()
            .filter_map(|sid| found.iter().find(|s| s.id == *sid).cloned())
            .collect())
    }

    /// Every visible service, ordered by id.
    pub async fn list_all_services(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        let listed: BTreeSet<ObjectId> = self
            .list_applications()
            .await?
            .into_iter()
            .flat_map(|a| a.microservices)
            .collect();
        let mut all: Vec<ServiceRecord> = self.list_records().await?;
        all.retain(|s| listed.contains(&s.id));
        Ok(all)
    }

    /// Adds a service to an existing application: the service is written, then the
    /// application's `microservices` gets its id (one commit where the backend can).
    /// [`StoreError::NotFound`] if the application does not exist.
    pub async fn add_service(&self, service: &ServiceRecord) -> Result<(), StoreError> {
        let sid = service.id.to_string();
        let app_id = service.application_id.to_string();
        let body = encode(Collection::Services, &sid, service)?;
        for _ in 0..MAX_ATTEMPTS {
            let Some(doc) = self.get(Collection::Applications, &app_id).await? else {
                return Err(StoreError::NotFound {
                    kind: "application",
                    id: app_id,
                });
            };
            let mut app: ApplicationRecord = decode(Collection::Applications, &doc)?;
            if !app.microservices.contains(&service.id) {
                app.microservices.push(service.id);
            }
            let app_body = encode(Collection::Applications, &app_id, &app)?;
            let writes = vec![
                Write::insert(Collection::Services, &sid, body.clone()),
                Write::replace(
                    Collection::Applications,
                    &app_id,
                    doc.rev,
                    doc.body,
                    app_body,
                ),
            ];
            match self.commit(writes).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_stale() => tokio::task::yield_now().await,
                Err(e) => return Err(e),
            }
        }
        Err(stale(Collection::Applications, &app_id))
    }

    /// Read-modify-write of one service under optimistic concurrency, e.g. "take the next
    /// instance number and record the instance" in one step (see
    /// [`update_record`](dyn Store::update_record)). [`StoreError::NotFound`] if the service
    /// does not exist or is not visible.
    pub async fn update_service<T: Send, E: From<StoreError> + Send>(
        &self,
        id: ObjectId,
        f: impl FnMut(&mut ServiceRecord) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        if self.get_service(id).await?.is_none() {
            return Err(StoreError::NotFound {
                kind: "service",
                id: id.to_string(),
            }
            .into());
        }
        self.update_record(&id.to_string(), f).await
    }

    /// Deletes a service: its id is removed from the application first, then the service
    /// document (one commit where the backend can). Returns the deleted service.
    pub async fn delete_service(&self, id: ObjectId) -> Result<ServiceRecord, StoreError> {
        let sid = id.to_string();
        for _ in 0..MAX_ATTEMPTS {
            let not_found = || StoreError::NotFound {
                kind: "service",
                id: sid.clone(),
            };
            let Some(sdoc) = self.get(Collection::Services, &sid).await? else {
                return Err(not_found());
            };
            let service: ServiceRecord = decode(Collection::Services, &sdoc)?;
            let app_id = service.application_id.to_string();
            let Some(adoc) = self.get(Collection::Applications, &app_id).await? else {
                return Err(not_found());
            };
            let mut app: ApplicationRecord = decode(Collection::Applications, &adoc)?;
            if !app.microservices.contains(&id) {
                return Err(not_found());
            }
            app.microservices.retain(|m| *m != id);
            let app_body = encode(Collection::Applications, &app_id, &app)?;
            let writes = vec![
                Write::replace(
                    Collection::Applications,
                    &app_id,
                    adoc.rev,
                    adoc.body,
                    app_body,
                ),
                Write::delete(Collection::Services, &sid, sdoc.rev, sdoc.body),
            ];
            match self.commit(writes).await {
                Ok(()) => return Ok(service),
                Err(e) if e.is_stale() => tokio::task::yield_now().await,
                Err(e) => return Err(e),
            }
        }
        Err(stale(Collection::Services, &sid))
    }

    // ----- IPAM ----------------------------------------------------------------------------

    /// The IPAM state (`T::default()` before the first update). `T` is the address manager
    /// of `oakestra_net::ipam` at the root, or any serde value.
    pub async fn ipam<T: DeserializeOwned + Default>(&self) -> Result<T, StoreError> {
        match self.get(Collection::Meta, IPAM_ID).await? {
            Some(doc) => decode_field(&doc, "state"),
            None => Ok(T::default()),
        }
    }

    /// Read-modify-write of the IPAM state under optimistic concurrency, like
    /// [`update_record`](dyn Store::update_record): `f` may run more than once, `Err` writes
    /// nothing.
    pub async fn update_ipam<T, R, E>(
        &self,
        mut f: impl FnMut(&mut T) -> Result<R, E> + Send,
    ) -> Result<R, E>
    where
        T: Serialize + DeserializeOwned + Default + Send,
        R: Send,
        E: From<StoreError> + Send,
    {
        let _serialized = match self.ipam_lock() {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        for _ in 0..MAX_ATTEMPTS {
            let doc = self.get(Collection::Meta, IPAM_ID).await?;
            let mut state: T = match &doc {
                Some(d) => decode_field(d, "state")?,
                None => T::default(),
            };
            let out = f(&mut state)?;
            let body = meta_body(IPAM_ID, "state", encode(Collection::Meta, IPAM_ID, &state)?);
            let write = match doc {
                Some(d) if d.body == body => return Ok(out),
                Some(d) => Write::replace(Collection::Meta, IPAM_ID, d.rev, d.body, body),
                None => Write::insert(Collection::Meta, IPAM_ID, body),
            };
            match self.commit(vec![write]).await {
                Ok(()) => return Ok(out),
                Err(e) if e.is_stale() || e.is_conflict() => tokio::task::yield_now().await,
                Err(e) => return Err(e.into()),
            }
        }
        Err(stale(Collection::Meta, IPAM_ID).into())
    }

    /// Read-modify-write of one service and the IPAM state together, e.g. "take the next
    /// instance number, allocate its addresses, record the instance". Atomic on
    /// [`Atomicity::MultiDocument`] backends. On [`Atomicity::PerDocument`] backends the IPAM
    /// state is written first, IPAM updates of this process are serialised
    /// ([`Store::ipam_lock`]), and a failed service write rolls the IPAM write back before the
    /// retry; only a crash in between can leak the allocated addresses (held in IPAM,
    /// referenced by no instance) — never hand one out twice.
    pub async fn update_service_with_ipam<T, R, E>(
        &self,
        id: ObjectId,
        mut f: impl FnMut(&mut ServiceRecord, &mut T) -> Result<R, E> + Send,
    ) -> Result<R, E>
    where
        T: Serialize + DeserializeOwned + Default + Send,
        R: Send,
        E: From<StoreError> + Send,
    {
        let sid = id.to_string();
        let not_found = || StoreError::NotFound {
            kind: "service",
            id: sid.clone(),
        };
        let _serialized = match self.ipam_lock() {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        for _ in 0..MAX_ATTEMPTS {
            let ipam_doc = self.get(Collection::Meta, IPAM_ID).await?;
            let Some(sdoc) = self.get(Collection::Services, &sid).await? else {
                return Err(not_found().into());
            };
            let mut service: ServiceRecord = decode(Collection::Services, &sdoc)?;
            if !self.is_visible(&service).await? {
                return Err(not_found().into());
            }
            let mut state: T = match &ipam_doc {
                Some(d) => decode_field(d, "state")?,
                None => T::default(),
            };
            let out = f(&mut service, &mut state)?;
            if service.id != id {
                return Err(StoreError::Invalid {
                    kind: "service",
                    what: format!("an update of {sid} changed its id"),
                }
                .into());
            }
            let ipam_body = meta_body(IPAM_ID, "state", encode(Collection::Meta, IPAM_ID, &state)?);
            let service_body = encode(Collection::Services, &sid, &service)?;
            let mut writes = Vec::with_capacity(2);
            match ipam_doc {
                Some(d) if d.body == ipam_body => {}
                Some(d) => writes.push(Write::replace(
                    Collection::Meta,
                    IPAM_ID,
                    d.rev,
                    d.body,
                    ipam_body,
                )),
                None => writes.push(Write::insert(Collection::Meta, IPAM_ID, ipam_body)),
            }
            if service_body != sdoc.body {
                writes.push(Write::replace(
                    Collection::Services,
                    &sid,
                    sdoc.rev,
                    sdoc.body,
                    service_body,
                ));
            }
            if writes.is_empty() {
                return Ok(out);
            }
            match self.commit(writes).await {
                Ok(()) => return Ok(out),
                Err(e) if e.is_stale() || e.is_conflict() => tokio::task::yield_now().await,
                Err(e) => return Err(e.into()),
            }
        }
        Err(stale(Collection::Services, &sid).into())
    }

    // ----- clusters ------------------------------------------------------------------------

    /// A cluster by id.
    pub async fn get_cluster(&self, id: &ClusterId) -> Result<Option<ClusterRecord>, StoreError> {
        self.get_record(id.as_str()).await
    }

    /// A cluster by (unique) name.
    pub async fn cluster_by_name(&self, name: &str) -> Result<Option<ClusterRecord>, StoreError> {
        self.find_by_unique_key(name).await
    }

    /// Every cluster, ordered by id.
    pub async fn list_clusters(&self) -> Result<Vec<ClusterRecord>, StoreError> {
        self.list_records().await
    }

    /// Creates a cluster. [`StoreError::Conflict`] if the id or name is taken.
    pub async fn create_cluster(&self, cluster: &ClusterRecord) -> Result<(), StoreError> {
        self.insert_record(cluster).await
    }

    /// Registration: if a cluster named `candidate.name` exists, `refresh` is applied to it
    /// (its id is kept); otherwise `candidate` is created. Safe against concurrent
    /// registrations of the same name. Returns the stored cluster.
    pub async fn register_cluster(
        &self,
        candidate: &ClusterRecord,
        mut refresh: impl FnMut(&mut ClusterRecord) + Send,
    ) -> Result<ClusterRecord, StoreError> {
        let mut last = None;
        for attempt in 0..MAX_ATTEMPTS {
            if let Some(existing) = self.cluster_by_name(&candidate.name).await? {
                let res = self
                    .update_record(existing.id.as_str(), |c: &mut ClusterRecord| {
                        refresh(c);
                        Ok::<_, StoreError>(c.clone())
                    })
                    .await;
                match res {
                    Err(StoreError::NotFound { .. }) => continue,
                    other => return other,
                }
            }
            match self.insert_record(candidate).await {
                Ok(()) => return Ok(candidate.clone()),
                // Another registration of the name is in flight: wait for it to land.
                Err(e @ StoreError::Conflict { .. }) => {
                    last = Some(e);
                    let wait = (attempt as u64 + 1).min(20);
                    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| stale(Collection::Clusters, candidate.id.as_str())))
    }

    /// Read-modify-write of a cluster.
    pub async fn update_cluster<T: Send, E: From<StoreError> + Send>(
        &self,
        id: &ClusterId,
        f: impl FnMut(&mut ClusterRecord) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        self.update_record(id.as_str(), f).await
    }

    /// Deletes a cluster.
    pub async fn delete_cluster(&self, id: &ClusterId) -> Result<ClusterRecord, StoreError> {
        self.delete_record(id.as_str()).await
    }

    // ----- join tokens and signing keys -----------------------------------------------------

    /// Stores a new join token. [`StoreError::Conflict`] if the id is taken.
    pub async fn create_join_token(&self, token: &JoinTokenRecord) -> Result<(), StoreError> {
        self.insert_record(token).await
    }

    /// A join token by id.
    pub async fn join_token(&self, id: &str) -> Result<Option<JoinTokenRecord>, StoreError> {
        self.get_record(id).await
    }

    /// The join token with this hash.
    pub async fn join_token_by_hash(
        &self,
        hash: &str,
    ) -> Result<Option<JoinTokenRecord>, StoreError> {
        Ok(self
            .find_records::<JoinTokenRecord>("hash", &Value::String(hash.to_owned()))
            .await?
            .into_iter()
            .next())
    }

    /// Every join token.
    pub async fn list_join_tokens(&self) -> Result<Vec<JoinTokenRecord>, StoreError> {
        self.list_records().await
    }

    /// Deletes (revokes) a join token.
    pub async fn delete_join_token(&self, id: &str) -> Result<JoinTokenRecord, StoreError> {
        self.delete_record(id).await
    }

    /// The signing key called `name`, if one was stored.
    pub async fn signing_key(&self, name: &str) -> Result<Option<SigningKey>, StoreError> {
        match self.get(Collection::Meta, &signing_key_id(name)).await? {
            Some(doc) => Ok(Some(decode_field(&doc, "key")?)),
            None => Ok(None),
        }
    }

    /// The signing key called `name`; stores `candidate` first if there is none. Two
    /// concurrent starts get the same key: the insert is conditional on absence.
    pub async fn get_or_insert_signing_key(
        &self,
        name: &str,
        candidate: &SigningKey,
    ) -> Result<SigningKey, StoreError> {
        let id = signing_key_id(name);
        for _ in 0..MAX_ATTEMPTS {
            if let Some(key) = self.signing_key(name).await? {
                return Ok(key);
            }
            let body = meta_body(&id, "key", encode(Collection::Meta, &id, candidate)?);
            match self
                .commit(vec![Write::insert(Collection::Meta, &id, body)])
                .await
            {
                Ok(()) => return Ok(candidate.clone()),
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
        Err(stale(Collection::Meta, &id))
    }

    // ----- maintenance ---------------------------------------------------------------------

    /// Removes what a crash part-way through a multi-document write can leave on a
    /// [`Atomicity::PerDocument`] backend: services whose application is gone or does not list
    /// them, application references to missing services, and unique-name claims no record
    /// holds. Run it at start-up, before serving requests (a service being added concurrently
    /// would look like a leftover). Harmless and cheap on the other backends.
    pub async fn repair(&self) -> Result<RepairReport, StoreError> {
        let mut report = RepairReport::default();
        let apps: Vec<ApplicationRecord> = self.list_records().await?;
        let services = self.list(Collection::Services).await?;
        let existing: BTreeSet<String> = services.iter().map(|d| d.id.clone()).collect();
        let listed: BTreeSet<String> = apps
            .iter()
            .flat_map(|a| a.microservices.iter().map(ObjectId::to_string))
            .collect();
        for doc in services {
            if !listed.contains(&doc.id) {
                let id = doc.id.clone();
                match self
                    .commit(vec![Write::delete(
                        Collection::Services,
                        doc.id,
                        doc.rev,
                        doc.body,
                    )])
                    .await
                {
                    Ok(()) => report.orphan_services.push(id),
                    Err(e) if e.is_stale() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        for app in apps {
            if app
                .microservices
                .iter()
                .any(|m| !existing.contains(&m.to_string()))
            {
                let removed = self
                    .update_application(app.id, |a| {
                        let before = a.microservices.len();
                        a.microservices
                            .retain(|m| existing.contains(&m.to_string()));
                        Ok::<_, StoreError>(before - a.microservices.len())
                    })
                    .await;
                match removed {
                    Ok(n) => report.dangling_service_refs += n,
                    Err(StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        for claim in self.list(Collection::UniqueKeys).await? {
            let held = self.claim_is_held(&claim).await?;
            if !held {
                match self
                    .commit(vec![Write::delete(
                        Collection::UniqueKeys,
                        claim.id,
                        claim.rev,
                        claim.body,
                    )])
                    .await
                {
                    Ok(()) => report.dangling_unique_keys += 1,
                    Err(e) if e.is_stale() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(report)
    }

    async fn claim_is_held(&self, claim: &Doc) -> Result<bool, StoreError> {
        let field = |f: &str| {
            claim
                .body
                .get(f)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let (collection, key, target) = (field("collection"), field("key"), field("target"));
        async fn holds<R: Record>(
            store: &dyn Store,
            target: &str,
            key: &str,
        ) -> Result<bool, StoreError> {
            Ok(store
                .get_record::<R>(target)
                .await?
                .is_some_and(|r| r.unique_keys().iter().any(|k| k == key)))
        }
        match collection.as_str() {
            "users" => holds::<UserRecord>(self, &target, &key).await,
            "organizations" => holds::<OrganizationRecord>(self, &target, &key).await,
            "applications" => holds::<ApplicationRecord>(self, &target, &key).await,
            "clusters" => holds::<ClusterRecord>(self, &target, &key).await,
            _ => Ok(false),
        }
    }

    /// Whether a write batch on this store is all-or-nothing.
    pub fn is_transactional(&self) -> bool {
        self.atomicity() == Atomicity::MultiDocument
    }
}

fn decode_field<T: DeserializeOwned>(doc: &Doc, field: &str) -> Result<T, StoreError> {
    let value = doc.body.get(field).ok_or_else(|| StoreError::Corrupt {
        kind: Collection::Meta.kind(),
        id: doc.id.clone(),
        reason: format!("field {field:?} is missing"),
    })?;
    T::deserialize(value).map_err(|e| StoreError::Corrupt {
        kind: Collection::Meta.kind(),
        id: doc.id.clone(),
        reason: e.to_string(),
    })
}
