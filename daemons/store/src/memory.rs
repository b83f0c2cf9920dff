//! `MemoryStore`: the in-memory fake of [`Store`], for tests and `oak sim`. Same semantics as
//! the durable backends (multi-document atomic commits), nothing persisted.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::Value;

use crate::document::{Atomicity, Collection, Doc, Op, Write, check_expectation};
use crate::error::StoreError;
use crate::store::Store;

type Tables = HashMap<Collection, BTreeMap<String, (u64, Value)>>;

/// Keeps everything in a map behind a mutex (never held across an `.await`).
#[derive(Debug, Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
    commits: std::sync::atomic::AtomicU64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store as `Arc<dyn Store>`.
    pub fn shared() -> Arc<dyn Store> {
        Arc::new(Self::new())
    }

    /// How many batches [`Store::commit`] was called with (applied or refused): what a
    /// durable backend would have paid a commit for. Tests check batching with it.
    pub fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        // A panic while holding the lock cannot leave a half-applied batch (batches are
        // checked before anything is applied), so a poisoned map is still consistent.
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Checks every expectation of a batch against `current`, then applies all of it with `put`
/// and `delete`. Shared by the backends whose transactions make a batch atomic: nothing is
/// applied unless every expectation holds.
pub(crate) fn apply_batch(
    writes: Vec<Write>,
    mut current: impl FnMut(Collection, &str) -> Result<Option<u64>, StoreError>,
    mut put: impl FnMut(Collection, &str, u64, Value) -> Result<(), StoreError>,
    mut delete: impl FnMut(Collection, &str) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    // Later writes in the batch see the effect of earlier ones on the same document.
    let mut staged: HashMap<(Collection, String), Option<u64>> = HashMap::new();
    let mut new_revs = Vec::with_capacity(writes.len());
    for w in &writes {
        let key = (w.collection, w.id.clone());
        let rev = match staged.get(&key) {
            Some(r) => *r,
            None => current(w.collection, &w.id)?,
        };
        check_expectation(w, rev)?;
        let after = match &w.op {
            Op::Put(_) => Some(rev.unwrap_or(0) + 1),
            Op::Delete => None,
            Op::Check => rev,
        };
        new_revs.push(after.unwrap_or(0));
        staged.insert(key, after);
    }
    for (w, rev) in writes.into_iter().zip(new_revs) {
        match w.op {
            Op::Put(body) => put(w.collection, &w.id, rev, body)?,
            Op::Delete => delete(w.collection, &w.id)?,
            Op::Check => {}
        }
    }
    Ok(())
}

#[async_trait]
impl Store for MemoryStore {
    fn describe(&self) -> String {
        "in-memory store (nothing is persisted)".into()
    }

    fn atomicity(&self) -> Atomicity {
        Atomicity::MultiDocument
    }

    async fn get(&self, collection: Collection, id: &str) -> Result<Option<Doc>, StoreError> {
        let tables = self.lock();
        Ok(tables
            .get(&collection)
            .and_then(|t| t.get(id))
            .map(|(rev, body)| Doc {
                id: id.to_owned(),
                rev: *rev,
                body: body.clone(),
            }))
    }

    async fn list(&self, collection: Collection) -> Result<Vec<Doc>, StoreError> {
        let tables = self.lock();
        Ok(tables
            .get(&collection)
            .map(|t| {
                t.iter()
                    .map(|(id, (rev, body))| Doc {
                        id: id.clone(),
                        rev: *rev,
                        body: body.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn find_eq(
        &self,
        collection: Collection,
        field: &str,
        value: &Value,
    ) -> Result<Vec<Doc>, StoreError> {
        let tables = self.lock();
        Ok(tables
            .get(&collection)
            .map(|t| {
                t.iter()
                    .filter(|(_, (_, body))| body.get(field) == Some(value))
                    .map(|(id, (rev, body))| Doc {
                        id: id.clone(),
                        rev: *rev,
                        body: body.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut guard = self.lock();
        let tables = std::cell::RefCell::new(&mut *guard);
        apply_batch(
            writes,
            |c, id| {
                Ok(tables
                    .borrow()
                    .get(&c)
                    .and_then(|t| t.get(id))
                    .map(|(rev, _)| *rev))
            },
            |c, id, rev, body| {
                tables
                    .borrow_mut()
                    .entry(c)
                    .or_default()
                    .insert(id.to_owned(), (rev, body));
                Ok(())
            },
            |c, id| {
                if let Some(t) = tables.borrow_mut().get_mut(&c) {
                    t.remove(id);
                }
                Ok(())
            },
        )
    }
}
