//! The generic core every backend implements: collections of JSON documents keyed by a string
//! id, each with a revision counter, and a batch of revision-checked writes.

use serde_json::Value;

/// A collection of documents. Each backend maps it to a table (redb) or a collection (MongoDB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Collection {
    /// [`crate::UserRecord`]s, keyed by the user's object id.
    Users,
    /// [`crate::OrganizationRecord`]s, keyed by object id.
    Organizations,
    /// [`oakestra_core::model::ApplicationRecord`]s, keyed by object id.
    Applications,
    /// [`oakestra_core::model::ServiceRecord`]s (jobs) with their instance lists.
    Services,
    /// [`crate::ClusterRecord`]s, keyed by the string cluster id.
    Clusters,
    /// [`crate::JoinTokenRecord`]s, keyed by token id.
    JoinTokens,
    /// Singletons: the IPAM state, signing keys.
    Meta,
    /// Claims on unique names (`<collection>/<key>` → record id), written in the same commit
    /// as the record that holds the name.
    UniqueKeys,
    /// A cluster orchestrator's registered workers (`oakestra-cluster`), keyed by worker id.
    Workers,
    /// The instances a cluster orchestrator manages (`oakestra-cluster`), keyed by
    /// `<job id>/<instance number>`.
    ClusterInstances,
    /// The root's event log, keyed by the event id zero-padded to 20 digits (ids sort in
    /// order), with retention (`oakestra-root`'s monitor).
    Events,
    /// The root's per-instance usage history, keyed by `<service id>/<instance number>`.
    UsageHistory,
}

impl Collection {
    /// Every collection.
    pub const ALL: [Collection; 12] = [
        Collection::Users,
        Collection::Organizations,
        Collection::Applications,
        Collection::Services,
        Collection::Clusters,
        Collection::JoinTokens,
        Collection::Meta,
        Collection::UniqueKeys,
        Collection::Workers,
        Collection::ClusterInstances,
        Collection::Events,
        Collection::UsageHistory,
    ];

    /// Table / collection name in the backends.
    pub fn name(self) -> &'static str {
        match self {
            Collection::Users => "users",
            Collection::Organizations => "organizations",
            Collection::Applications => "applications",
            Collection::Services => "services",
            Collection::Clusters => "clusters",
            Collection::JoinTokens => "join_tokens",
            Collection::Meta => "meta",
            Collection::UniqueKeys => "unique_keys",
            Collection::Workers => "workers",
            Collection::ClusterInstances => "cluster_instances",
            Collection::Events => "events",
            Collection::UsageHistory => "usage_history",
        }
    }

    /// The record kind, for error messages.
    pub fn kind(self) -> &'static str {
        match self {
            Collection::Users => "user",
            Collection::Organizations => "organization",
            Collection::Applications => "application",
            Collection::Services => "service",
            Collection::Clusters => "cluster",
            Collection::JoinTokens => "join token",
            Collection::Meta => "document",
            Collection::UniqueKeys => "unique name",
            Collection::Workers => "worker",
            Collection::ClusterInstances => "cluster instance",
            Collection::Events => "event",
            Collection::UsageHistory => "usage history",
        }
    }

    /// Whether ids in this collection are object ids (stored as BSON ObjectId in MongoDB, so
    /// `_id` keeps Oakestra's `{"$oid": …}` shape).
    pub fn has_object_ids(self) -> bool {
        matches!(
            self,
            Collection::Users
                | Collection::Organizations
                | Collection::Applications
                | Collection::Services
        )
    }
}

/// A stored document with its revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    /// Key within its collection.
    pub id: String,
    /// Revision: 1 after the first write, +1 on every write.
    pub rev: u64,
    /// The document as JSON (the record's own serde form, including its `_id`).
    pub body: Value,
}

/// The precondition of one [`Write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No precondition.
    Any,
    /// The document must not exist (an insert). Failing gives [`crate::StoreError::Conflict`].
    Absent,
    /// The document must exist with exactly this revision. Failing gives
    /// [`crate::StoreError::Stale`].
    Rev(u64),
}

/// What one [`Write`] does.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Store this body (revision becomes previous + 1, or 1 for a new document).
    Put(Value),
    /// Remove the document (no error if it is absent and the expectation is [`Expect::Any`]).
    Delete,
    /// Write nothing; only check the expectation.
    Check,
}

/// One revision-checked write of a [`crate::Store::commit`] batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// Target collection.
    pub collection: Collection,
    /// Target id.
    pub id: String,
    /// Precondition.
    pub expect: Expect,
    /// The change.
    pub op: Op,
    /// The body the writer read before this write, if any. Backends without multi-document
    /// transactions use it to roll back the earlier writes of a batch that failed part-way.
    pub before: Option<Value>,
}

impl Write {
    /// Insert a new document; conflict if the id exists.
    pub fn insert(collection: Collection, id: impl Into<String>, body: Value) -> Self {
        Self::new(collection, id, Expect::Absent, Op::Put(body))
    }

    /// Replace the document that had revision `rev` (and body `before`).
    pub fn replace(
        collection: Collection,
        id: impl Into<String>,
        rev: u64,
        before: Value,
        body: Value,
    ) -> Self {
        let mut w = Self::new(collection, id, Expect::Rev(rev), Op::Put(body));
        w.before = Some(before);
        w
    }

    /// Insert or overwrite, without a precondition.
    pub fn upsert(collection: Collection, id: impl Into<String>, body: Value) -> Self {
        Self::new(collection, id, Expect::Any, Op::Put(body))
    }

    /// Delete the document that had revision `rev` (and body `before`).
    pub fn delete(collection: Collection, id: impl Into<String>, rev: u64, before: Value) -> Self {
        let mut w = Self::new(collection, id, Expect::Rev(rev), Op::Delete);
        w.before = Some(before);
        w
    }

    /// Delete the document if it exists.
    pub fn delete_any(collection: Collection, id: impl Into<String>) -> Self {
        Self::new(collection, id, Expect::Any, Op::Delete)
    }

    /// Only check that the document is in the expected state.
    pub fn check(collection: Collection, id: impl Into<String>, expect: Expect) -> Self {
        Self::new(collection, id, expect, Op::Check)
    }

    /// A write from its parts.
    pub fn new(collection: Collection, id: impl Into<String>, expect: Expect, op: Op) -> Self {
        Self {
            collection,
            id: id.into(),
            expect,
            op,
            before: None,
        }
    }
}

/// What a backend guarantees for a [`crate::Store::commit`] batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Atomicity {
    /// The whole batch is applied or none of it, durably, isolated from concurrent batches
    /// (memory, redb).
    MultiDocument,
    /// Each write is an atomic compare-and-set on one document; the batch is applied in order
    /// and a failure part-way is rolled back best-effort. A crash part-way can leave the first
    /// writes of a batch applied, so writers order batches so that such leftovers are invisible
    /// to readers and removed by `crate::Store::repair` (MongoDB without a replica set).
    PerDocument,
}

/// Applies one write to an in-memory map after checking its expectation: shared by the
/// backends that check a whole batch first and then apply it.
pub(crate) fn check_expectation(
    write: &Write,
    current_rev: Option<u64>,
) -> Result<(), crate::StoreError> {
    let kind = write.collection.kind();
    match (write.expect, current_rev) {
        (Expect::Any, _) | (Expect::Absent, None) => Ok(()),
        (Expect::Absent, Some(_)) => Err(crate::StoreError::Conflict {
            kind,
            what: format!("{kind} {:?} already exists", write.id),
        }),
        (Expect::Rev(want), Some(have)) if want == have => Ok(()),
        (Expect::Rev(_), _) => Err(crate::StoreError::Stale {
            kind,
            id: write.id.clone(),
        }),
    }
}
