//! The `Store` trait: a handful of primitives each backend implements.

use std::fmt;

use async_trait::async_trait;
use serde_json::Value;

use crate::document::{Atomicity, Collection, Doc, Write};
use crate::error::StoreError;

/// Persistent state of the root (and cluster) orchestrator.
///
/// Backends implement only these primitives over collections of JSON documents with revision
/// counters. The typed API the daemons use — users, organizations, applications with their
/// services, instances, clusters, IPAM, signing keys, join tokens — is written once on top of
/// them as inherent methods of `dyn Store` (see [`crate::typed`]), so it behaves the same on
/// every backend. Use it as `Arc<dyn Store>`.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Which backend and where, for logs (`"redb file /var/lib/oakestra/oakestra.redb"`).
    fn describe(&self) -> String;

    /// What [`Store::commit`] guarantees on this backend.
    fn atomicity(&self) -> Atomicity;

    /// One document, or `None`.
    async fn get(&self, collection: Collection, id: &str) -> Result<Option<Doc>, StoreError>;

    /// Every document of a collection, ordered by id.
    async fn list(&self, collection: Collection) -> Result<Vec<Doc>, StoreError>;

    /// Documents whose top-level `field` equals `value`, ordered by id. The default scans
    /// [`Store::list`]; backends with indexes or server-side filters override it.
    async fn find_eq(
        &self,
        collection: Collection,
        field: &str,
        value: &Value,
    ) -> Result<Vec<Doc>, StoreError> {
        let mut docs = self.list(collection).await?;
        docs.retain(|d| d.body.get(field) == Some(value));
        Ok(docs)
    }

    /// Applies a batch of revision-checked writes, in order. A failed expectation gives
    /// [`StoreError::Conflict`] (insert of an existing id) or [`StoreError::Stale`] (revision
    /// changed). Returning `Ok` means the batch is durable. See [`Atomicity`] for what happens
    /// to a batch that fails part-way.
    async fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError>;

    /// [`Store::commit`] for a batch whose loss in a crash the daemon repairs at its next start
    /// (an address reservation whose records were never stored): `Ok` means it is applied and
    /// visible, and it becomes durable no later than the next [`Store::commit`] that returns.
    /// Saves the fsync of a commit that a durable one follows anyway. Defaults to
    /// [`Store::commit`].
    async fn commit_relaxed(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.commit(writes).await
    }

    /// On [`Atomicity::PerDocument`] backends: a lock the typed API holds around every
    /// read-modify-write of the IPAM state, so that within one process a batch that fails
    /// after its IPAM write can always roll that write back (nobody else wrote IPAM in
    /// between). Multi-document backends need none.
    fn ipam_lock(&self) -> Option<&tokio::sync::Mutex<()>> {
        None
    }
}
