//! The default backend: one redb file (`<data-dir>/oakestra.redb`), one table per collection.
//!
//! Every [`Store::commit`] batch is applied all or nothing, and `Ok` only after it is on disk.
//! redb serialises write transactions and gives readers MVCC snapshots. Blocking redb calls run
//! on `tokio::task::spawn_blocking` (reads) or on the store's writer thread (commits), never on
//! the runtime's worker threads.
//!
//! **Group commit.** A durable redb commit costs an fsync (≈3 ms on the development disk), and
//! redb has one writer at a time, so one transaction per batch caps a store at a few hundred
//! batches per second however many clients wait (issue 19: 32 concurrent creators queued for
//! ≈1 s). The writer thread therefore takes every batch queued while the previous commit was on
//! its way to disk and applies them, in arrival order, in one transaction with one fsync. Each
//! batch keeps its own all-or-nothing result: its expectations are checked before any of its
//! writes is applied ([`apply_batch`]), against the effect of the batches before it in the same
//! transaction, so a refused batch writes nothing and the others still commit. Only a failure
//! of the backend itself (a write or the commit failing) fails the whole group.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableError,
    WriteTransaction,
};
use serde_json::Value;

use crate::document::{Atomicity, Collection, Doc, Write};
use crate::error::StoreError;
use crate::memory::apply_batch;
use crate::store::Store;

/// The file name inside a data directory.
pub const REDB_FILE_NAME: &str = "oakestra.redb";

/// Key: document id. Value: (revision, JSON text).
type Table = TableDefinition<'static, &'static str, (u64, &'static [u8])>;

fn table(collection: Collection) -> Table {
    TableDefinition::new(collection.name())
}

/// A [`Store`] in one redb file.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    path: PathBuf,
    writer: std::sync::mpsc::Sender<CommitRequest>,
}

/// One batch waiting for the writer thread.
struct CommitRequest {
    writes: Vec<Write>,
    /// `false` for [`Store::commit_relaxed`]: the batch may ride on a later durable commit.
    durable: bool,
    done: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
}

/// At most this many batches share one transaction, so that one group's latency stays bounded.
const MAX_GROUP: usize = 256;

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish()
    }
}

fn backend(path: &Path, what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!(
        "redb file {}: {what} failed: {e}; check that the disk is writable and not full",
        path.display()
    ))
}

impl RedbStore {
    /// Opens (or creates) the redb file at `path`, creating missing parent directories.
    /// Blocking: call it before the runtime serves requests, or through
    /// [`RedbStore::open_async`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let open_err = |reason: String, hint: &str| StoreError::Open {
            location: path.display().to_string(),
            reason,
            hint: hint.to_owned(),
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            private_dir(parent).map_err(|e| {
                open_err(
                    format!("cannot create directory {}: {e}", parent.display()),
                    "choose a data directory the daemon may write to (--data-dir)",
                )
            })?;
        }
        let db = Database::create(&path).map_err(|e| {
            let hint = match &e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    "another process (or another store in this process) has the file open; stop it or use another data directory"
                }
                redb::DatabaseError::UpgradeRequired(_) => {
                    "the file was written by an older store format; upgrade it with the matching tool or start from an empty data directory"
                }
                _ => {
                    "check the path and its permissions; if the file is not a redb database, move it away"
                }
            };
            open_err(e.to_string(), hint)
        })?;
        // The file holds secrets (the root's token signing key, password hashes): owner only.
        owner_only(&path, "it holds secrets").map_err(|e| {
            open_err(
                format!(
                    "cannot make {} readable by its owner only: {e}",
                    path.display()
                ),
                "run the daemon as the file's owner, or fix its permissions (chmod 600)",
            )
        })?;
        // Create every table up front so readers never meet a missing one.
        let tx = db
            .begin_write()
            .map_err(|e| open_err(e.to_string(), "check the file"))?;
        for c in Collection::ALL {
            tx.open_table(table(c))
                .map_err(|e| open_err(e.to_string(), "check the file"))?;
        }
        tx.commit()
            .map_err(|e| open_err(e.to_string(), "check that the disk is writable"))?;
        let db = Arc::new(db);
        let writer = spawn_writer(Arc::downgrade(&db), path.clone()).map_err(|e| {
            open_err(
                format!("cannot start the store's writer thread: {e}"),
                "the process is out of threads or memory",
            )
        })?;
        Ok(Self { db, path, writer })
    }

    /// [`RedbStore::open`] on a blocking thread.
    pub async fn open_async(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || Self::open(path))
            .await
            .map_err(|e| StoreError::Backend(format!("opening the redb file panicked: {e}")))?
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database, &Path) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || f(&db, &path))
            .await
            .map_err(|e| StoreError::Backend(format!("a redb operation panicked: {e}")))?
    }
}

fn decode(collection: Collection, id: &str, rev: u64, json: &[u8]) -> Result<Doc, StoreError> {
    let body = serde_json::from_slice(json).map_err(|e| StoreError::Corrupt {
        kind: collection.kind(),
        id: id.to_owned(),
        reason: format!("invalid JSON: {e}"),
    })?;
    Ok(Doc {
        id: id.to_owned(),
        rev,
        body,
    })
}

fn scan(
    db: &Database,
    path: &Path,
    collection: Collection,
    keep: impl Fn(&Doc) -> bool,
) -> Result<Vec<Doc>, StoreError> {
    let tx = db.begin_read().map_err(|e| backend(path, "read", e))?;
    let t = match tx.open_table(table(collection)) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(backend(path, "open table", e)),
    };
    let mut out = Vec::new();
    for entry in t.iter().map_err(|e| backend(path, "scan", e))? {
        let (k, v) = entry.map_err(|e| backend(path, "scan", e))?;
        let (rev, json) = v.value();
        let doc = decode(collection, k.value(), rev, json)?;
        if keep(&doc) {
            out.push(doc);
        }
    }
    Ok(out)
}

#[async_trait]
impl Store for RedbStore {
    fn describe(&self) -> String {
        format!("redb file {}", self.path.display())
    }

    fn atomicity(&self) -> Atomicity {
        Atomicity::MultiDocument
    }

    async fn get(&self, collection: Collection, id: &str) -> Result<Option<Doc>, StoreError> {
        let id = id.to_owned();
        self.blocking(move |db, path| {
            let tx = db.begin_read().map_err(|e| backend(path, "read", e))?;
            let t = match tx.open_table(table(collection)) {
                Ok(t) => t,
                Err(TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(backend(path, "open table", e)),
            };
            match t.get(id.as_str()).map_err(|e| backend(path, "read", e))? {
                Some(v) => {
                    let (rev, json) = v.value();
                    Ok(Some(decode(collection, &id, rev, json)?))
                }
                None => Ok(None),
            }
        })
        .await
    }

    async fn list(&self, collection: Collection) -> Result<Vec<Doc>, StoreError> {
        self.blocking(move |db, path| scan(db, path, collection, |_| true))
            .await
    }

    async fn find_eq(
        &self,
        collection: Collection,
        field: &str,
        value: &Value,
    ) -> Result<Vec<Doc>, StoreError> {
        let (field, value) = (field.to_owned(), value.clone());
        self.blocking(move |db, path| {
            scan(db, path, collection, |d| d.body.get(&field) == Some(&value))
        })
        .await
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.enqueue(writes, true).await
    }

    async fn commit_relaxed(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.enqueue(writes, false).await
    }
}

impl RedbStore {
    /// Hands a batch to the writer thread and waits for its result.
    async fn enqueue(&self, writes: Vec<Write>, durable: bool) -> Result<(), StoreError> {
        let stopped = || {
            StoreError::Backend(format!(
                "redb file {}: the store's writer thread stopped; restart the daemon",
                self.path.display()
            ))
        };
        let (done, result) = tokio::sync::oneshot::channel();
        self.writer
            .send(CommitRequest {
                writes,
                durable,
                done,
            })
            .map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }
}

/// Starts the thread that applies every commit (see the module documentation). It holds the
/// database weakly, so dropping the last [`RedbStore`] closes the file at once, and it ends
/// when the last sender is gone.
fn spawn_writer(
    db: std::sync::Weak<Database>,
    path: PathBuf,
) -> std::io::Result<std::sync::mpsc::Sender<CommitRequest>> {
    let (tx, rx) = std::sync::mpsc::channel::<CommitRequest>();
    std::thread::Builder::new()
        .name("redb-writer".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut group = vec![first];
                while group.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(r) => group.push(r),
                        Err(_) => break,
                    }
                }
                let Some(db) = db.upgrade() else {
                    for r in group {
                        let _ = r.done.send(Err(StoreError::Backend(format!(
                            "redb file {}: the store is closed",
                            path.display()
                        ))));
                    }
                    continue;
                };
                // A panic fails this group's callers (their result senders are dropped), not
                // every later commit.
                let answers = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    commit_group(&db, &path, group)
                }));
                // Let go of the file before answering: a caller that drops its store on the
                // answer may reopen the file at once.
                drop(db);
                for (done, result) in answers.into_iter().flatten() {
                    let _ = done.send(result);
                }
            }
        })?;
    Ok(tx)
}

type Answer = (
    tokio::sync::oneshot::Sender<Result<(), StoreError>>,
    Result<(), StoreError>,
);

/// Applies `group` in one transaction; the answer for each request.
fn commit_group(db: &Database, path: &Path, group: Vec<CommitRequest>) -> Vec<Answer> {
    let durable = group.iter().any(|r| r.durable);
    let (batches, senders): (Vec<_>, Vec<_>) =
        group.into_iter().map(|r| (r.writes, r.done)).unzip();
    let results = match begin(db, path, durable) {
        Ok(tx) => apply_group(tx, path, batches),
        Err(e) => vec![Err(e); batches.len()],
    };
    senders.into_iter().zip(results).collect()
}

fn begin(db: &Database, path: &Path, durable: bool) -> Result<WriteTransaction, StoreError> {
    let mut tx = db.begin_write().map_err(|e| backend(path, "write", e))?;
    if !durable {
        tx.set_durability(Durability::None)
            .map_err(|e| backend(path, "write", e))?;
    }
    Ok(tx)
}

/// Every batch of the group in `tx`, then one commit: each batch's own result, or the
/// backend's error for all of them.
fn apply_group(
    tx: WriteTransaction,
    path: &Path,
    batches: Vec<Vec<Write>>,
) -> Vec<Result<(), StoreError>> {
    let n = batches.len();
    let tables = std::cell::RefCell::new(std::collections::HashMap::new());
    let mut results = Vec::with_capacity(n);
    let mut fatal = None;
    {
        let open = |c: Collection| -> Result<(), StoreError> {
            let mut tables = tables.borrow_mut();
            if let std::collections::hash_map::Entry::Vacant(v) = tables.entry(c) {
                v.insert(
                    tx.open_table(table(c))
                        .map_err(|e| backend(path, "open table", e))?,
                );
            }
            Ok(())
        };
        for writes in batches {
            let result = apply_batch(
                writes,
                |c, id| {
                    open(c)?;
                    let tables = tables.borrow();
                    let t = &tables[&c];
                    let rev = t
                        .get(id)
                        .map_err(|e| backend(path, "read", e))?
                        .map(|v| v.value().0);
                    Ok(rev)
                },
                |c, id, rev, body| {
                    open(c)?;
                    let json = serde_json::to_vec(&body).map_err(|e| StoreError::Invalid {
                        kind: c.kind(),
                        what: format!("{id:?} cannot be encoded: {e}"),
                    })?;
                    let mut tables = tables.borrow_mut();
                    let t = tables.get_mut(&c).expect("opened above");
                    t.insert(id, (rev, json.as_slice()))
                        .map_err(|e| backend(path, "write", e))?;
                    Ok(())
                },
                |c, id| {
                    open(c)?;
                    let mut tables = tables.borrow_mut();
                    let t = tables.get_mut(&c).expect("opened above");
                    t.remove(id).map_err(|e| backend(path, "delete", e))?;
                    Ok(())
                },
            );
            match result {
                // Refused by its expectations, checked before any of its writes: nothing of
                // this batch was applied, the group goes on.
                Err(e @ (StoreError::Conflict { .. } | StoreError::Stale { .. })) => {
                    results.push(Err(e))
                }
                Ok(()) => results.push(Ok(())),
                // Anything else may have left part of this batch applied: abort them all.
                Err(e) => {
                    fatal = Some(e);
                    break;
                }
            }
        }
    }
    // Tables borrow the transaction: close them before committing or aborting.
    drop(tables);
    if let Some(e) = fatal {
        let _ = tx.abort();
        return vec![Err(e); n];
    }
    match tx.commit() {
        Ok(()) => results,
        Err(e) => vec![Err(backend(path, "commit", e)); n],
    }
}

/// Creates `dir` and its missing parents, new ones readable by their owner only (0700).
/// Existing directories are left as they are.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Makes `path` readable and writable by its owner only (0600) if group or others may read
/// or write it, saying so with `why` ("it holds secrets"): a file created by an older
/// version, or copied, may be. Used for the store file and by the root for its key file.
pub fn owner_only(path: &Path, why: &str) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            tracing::warn!(
                "{} was readable by others (mode {:o}); {why}, so it is now 0600",
                path.display(),
                mode & 0o777
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::Expect;
    use serde_json::json;

    fn request(
        writes: Vec<Write>,
    ) -> (
        CommitRequest,
        tokio::sync::oneshot::Receiver<Result<(), StoreError>>,
    ) {
        let (done, rx) = tokio::sync::oneshot::channel();
        (
            CommitRequest {
                writes,
                durable: true,
                done,
            },
            rx,
        )
    }

    #[tokio::test]
    async fn a_refused_batch_in_a_group_writes_nothing_and_the_others_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path().join("oakestra.redb")).unwrap();
        let c = Collection::ALL[0];
        // B conflicts with A's insert in the same transaction; C is independent; D writes
        // two documents, the second of which is refused, so neither may appear.
        let (a, ra) = request(vec![Write::insert(c, "x", json!({"by": "a"}))]);
        let (b, rb) = request(vec![
            Write::insert(c, "b-only", json!({"by": "b"})),
            Write::insert(c, "x", json!({"by": "b"})),
        ]);
        let (cc, rc) = request(vec![Write::insert(c, "y", json!({"by": "c"}))]);
        let (d, rd) = request(vec![
            Write::insert(c, "d-only", json!({"by": "d"})),
            Write::check(c, "y", Expect::Rev(7)),
        ]);
        for (done, result) in commit_group(&store.db, &store.path, vec![a, b, cc, d]) {
            done.send(result).unwrap();
        }
        assert_eq!(ra.await.unwrap(), Ok(()));
        assert!(matches!(
            rb.await.unwrap(),
            Err(StoreError::Conflict { .. })
        ));
        assert_eq!(rc.await.unwrap(), Ok(()));
        assert!(matches!(rd.await.unwrap(), Err(StoreError::Stale { .. })));
        assert_eq!(
            store.get(c, "x").await.unwrap().unwrap().body,
            json!({"by": "a"})
        );
        assert_eq!(store.get(c, "y").await.unwrap().unwrap().rev, 1);
        assert_eq!(store.get(c, "b-only").await.unwrap(), None);
        assert_eq!(store.get(c, "d-only").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_dropped_store_closes_its_file_so_it_can_be_opened_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oakestra.redb");
        let c = Collection::ALL[0];
        let store = RedbStore::open(&path).unwrap();
        store
            .commit(vec![Write::insert(c, "kept", json!({}))])
            .await
            .unwrap();
        drop(store);
        let again = RedbStore::open(&path).unwrap();
        assert!(again.get(c, "kept").await.unwrap().is_some());
    }
}
