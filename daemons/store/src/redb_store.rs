//! The default backend: one redb file (`<data-dir>/oakestra.redb`), one table per collection.
//!
//! Every [`Store::commit`] is one redb write transaction with immediate durability: all writes
//! of the batch or none, and `Ok` only after the commit is on disk. redb serialises write
//! transactions and gives readers MVCC snapshots. Blocking redb calls run on
//! `tokio::task::spawn_blocking`, never on the runtime's worker threads.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableError};
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
}

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
        Ok(Self {
            db: Arc::new(db),
            path,
        })
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
        self.blocking(move |db, path| {
            let tx = db.begin_write().map_err(|e| backend(path, "write", e))?;
            let tables = std::cell::RefCell::new(std::collections::HashMap::new());
            let result = {
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
                apply_batch(
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
                )
            };
            // Tables borrow the transaction: close them before committing or aborting.
            drop(tables);
            match result {
                Ok(()) => tx.commit().map_err(|e| backend(path, "commit", e)),
                Err(e) => {
                    tx.abort().map_err(|e| backend(path, "abort", e))?;
                    Err(e)
                }
            }
        })
        .await
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
