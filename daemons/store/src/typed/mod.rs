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
//! * `Store::repair` deletes such leftovers at start-up.

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

mod applications;
mod clusters;
mod ipam;
mod users;

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

/// What `repair` removed.
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
}

impl dyn Store {
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
