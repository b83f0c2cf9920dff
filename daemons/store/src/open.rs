//! `open`: a store from the `--store` setting.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::StoreError;
use crate::memory::MemoryStore;
use crate::redb_store::{REDB_FILE_NAME, RedbStore};
use crate::store::Store;

/// Opens the store named by `location`:
/// * `mongodb://host:port/db` (or `mongodb+srv://…`) — MongoDB;
/// * `redb:/path/file.redb` or a plain path — a redb file; an existing directory means
///   `<dir>/oakestra.redb`;
/// * `memory:` — the in-memory fake (nothing persisted; tests and simulations).
///
/// The error says which location failed, why, and what to do.
pub async fn open(location: &str) -> Result<Arc<dyn Store>, StoreError> {
    let location = location.trim();
    if location.starts_with("mongodb://") || location.starts_with("mongodb+srv://") {
        return open_mongo(location).await;
    }
    if location == "memory:" || location == "memory" {
        return Ok(MemoryStore::shared());
    }
    let path = match location.strip_prefix("redb:") {
        Some(p) => PathBuf::from(p.strip_prefix("//").unwrap_or(p)),
        None => {
            if let Some((scheme, _)) = location.split_once("://") {
                return Err(StoreError::Open {
                    location: location.to_owned(),
                    reason: format!("unknown store scheme {scheme:?}"),
                    hint: "use mongodb://host:port/db, redb:/path/oakestra.redb, a plain path, or memory:".into(),
                });
            }
            PathBuf::from(location)
        }
    };
    if path.as_os_str().is_empty() {
        return Err(StoreError::Open {
            location: location.to_owned(),
            reason: "no path given".into(),
            hint: format!(
                "give a file such as /var/lib/oakestra/{REDB_FILE_NAME} or a data directory"
            ),
        });
    }
    let file = redb_file(&path);
    Ok(Arc::new(RedbStore::open_async(file).await?))
}

/// The redb file for a path: the path itself, or `<dir>/oakestra.redb` for a directory.
pub fn redb_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join(REDB_FILE_NAME)
    } else {
        path.to_path_buf()
    }
}

#[cfg(feature = "mongodb")]
async fn open_mongo(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(crate::mongo::MongoStore::open(url).await?))
}

#[cfg(not(feature = "mongodb"))]
async fn open_mongo(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    Err(StoreError::Open {
        location: url.to_owned(),
        reason: "this build has no MongoDB support".into(),
        hint: "rebuild with the `mongodb` feature of oakestra-store, or use the default redb store"
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn locations_pick_the_backend() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path().to_str().unwrap()).await.unwrap();
        assert!(s.describe().contains("oakestra.redb"), "{}", s.describe());
        drop(s);
        let file = dir.path().join("x.redb");
        let s = open(&format!("redb:{}", file.display())).await.unwrap();
        assert!(s.describe().contains("x.redb"));
        assert!(file.exists());
        assert!(open("memory:").await.unwrap().describe().contains("memory"));
        let e = open("postgres://db/x").await.unwrap_err().to_string();
        assert!(e.contains("postgres") && e.contains("mongodb://"), "{e}");
        let e = open("redb:").await.unwrap_err().to_string();
        assert!(e.contains("no path"), "{e}");
    }
}
