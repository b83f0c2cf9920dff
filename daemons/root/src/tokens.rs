//! Join tokens: what a cluster presents to `Register` (DESIGN.md §4.3).
//!
//! A token is `oakjoin_` followed by 64 random hex digits (256 bits). It is shown once, when it
//! is created; the store keeps only its SHA-256 (hex) with a name, so a leaked database does not
//! let anyone join. A fast hash is right here: the token is random, not a password, so there
//! is nothing to brute-force.
//!
//! **1-DOC default.** On start the root calls [`ensure_bootstrap_token`]: when the store holds
//! no join token at all, it creates one named `bootstrap` and writes it to
//! `<data-dir>/cluster-join-token` (mode 0600). A cluster on the same machine (or `oak up`)
//! reads that file and joins with no configuration. Once any token exists the file is left
//! alone; revoking every token and restarting the root makes a new bootstrap token.
//!
//! `oakestra-root token create [--name N]` is [`create_cli`]; it prints the token once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use oakestra_store::{JoinTokenRecord, Store, StoreError};
use sha2::{Digest, Sha256};

/// Every token starts with this, so a token is recognisable in configuration files.
pub const TOKEN_PREFIX: &str = "oakjoin_";

/// File in the data directory that holds the bootstrap token.
pub const BOOTSTRAP_TOKEN_FILE: &str = "cluster-join-token";

/// Name of the token the root creates on first start.
pub const BOOTSTRAP_TOKEN_NAME: &str = "bootstrap";

/// A join-token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The presented token is empty, malformed, unknown or revoked.
    #[error(
        "join token {shown} is not valid: {reason}; create one on the root with \
         `oakestra-root token create` (or use the bootstrap token in <data-dir>/{BOOTSTRAP_TOKEN_FILE}) \
         and configure the cluster with it"
    )]
    Invalid {
        /// The token with its secret part masked.
        shown: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No token has this id.
    #[error("join token {0:?} not found; `oakestra-root token list` shows the existing ones")]
    NotFound(String),
    /// The random number generator of the OS failed.
    #[error("cannot create a join token: the operating system's random source failed: {0}")]
    Random(String),
    /// The bootstrap token file could not be written.
    #[error(
        "cannot write the bootstrap join token to {path}: {source}; check that the data directory exists and is writable"
    )]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A token just created: the only moment its secret is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedToken {
    /// Token id (for `list` and `revoke`).
    pub id: String,
    /// Its name.
    pub name: String,
    /// The token itself, to hand to the cluster.
    pub token: String,
}

/// A stored token as `list` shows it (never the hash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenInfo {
    /// Token id.
    pub id: String,
    /// Name given at creation.
    pub name: String,
    /// Creation time, ISO 8601 UTC.
    pub created_at: String,
}

/// Hex SHA-256 of a token: what the store keeps.
pub fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.trim().as_bytes()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// `n` random bytes from the OS, as hex.
pub(crate) fn random_hex(n: usize) -> Result<String, TokenError> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| TokenError::Random(e.to_string()))?;
    Ok(hex(&buf))
}

/// The token with its secret masked, for error messages and logs.
fn mask(token: &str) -> String {
    let t = token.trim();
    if t.is_empty() {
        return "\"\"".to_owned();
    }
    let visible: String = t.chars().take(TOKEN_PREFIX.len() + 4).collect();
    format!("\"{visible}…\"")
}

/// Seconds since the epoch as ISO 8601 UTC (`2026-01-02T03:04:05Z`).
pub(crate) fn iso8601_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = oakestra_daemon::calendar::civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub(crate) fn now_secs_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Creates a token named `name` and stores its hash. The returned secret is not kept anywhere.
pub async fn create(store: &dyn Store, name: &str) -> Result<CreatedToken, TokenError> {
    let token = format!("{TOKEN_PREFIX}{}", random_hex(32)?);
    let id = random_hex(6)?;
    let record = JoinTokenRecord {
        id: id.clone(),
        name: name.to_owned(),
        hash: hash_token(&token),
        created_at: iso8601_utc(now_secs_f64() as u64),
    };
    store.create_join_token(&record).await?;
    Ok(CreatedToken {
        id,
        name: name.to_owned(),
        token,
    })
}

/// `oakestra-root token create [--name N]`: creates a token and returns the text to print
/// (the token on its own first line, so scripts can take `head -1`).
pub async fn create_cli(store: Arc<dyn Store>, name: Option<String>) -> Result<String, TokenError> {
    let name = name.unwrap_or_else(|| "cluster".to_owned());
    let created = create(store.as_ref(), &name).await?;
    Ok(format!(
        "{}\n# join token {:?} (id {}): give it to the cluster orchestrator; it is shown only \
         this once. Revoke it with `oakestra-root token revoke {}`.",
        created.token, created.name, created.id, created.id
    ))
}

/// Every stored token (without secrets or hashes), oldest first.
pub async fn list(store: &dyn Store) -> Result<Vec<TokenInfo>, TokenError> {
    let mut out: Vec<TokenInfo> = store
        .list_join_tokens()
        .await?
        .into_iter()
        .map(|t| TokenInfo {
            id: t.id,
            name: t.name,
            created_at: t.created_at,
        })
        .collect();
    out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// Revokes (deletes) the token with this id. Clusters already registered keep their id; they
/// need a valid token the next time they register.
pub async fn revoke(store: &dyn Store, id: &str) -> Result<(), TokenError> {
    match store.delete_join_token(id).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Err(TokenError::NotFound(id.to_owned())),
        Err(e) => Err(e.into()),
    }
}

/// Checks a presented token; returns its record when it is valid.
pub async fn verify(store: &dyn Store, token: &str) -> Result<JoinTokenRecord, TokenError> {
    let t = token.trim();
    let invalid = |reason| TokenError::Invalid {
        shown: mask(t),
        reason,
    };
    if t.is_empty() {
        return Err(invalid("no token was given"));
    }
    if !t.starts_with(TOKEN_PREFIX) {
        return Err(invalid("it does not start with \"oakjoin_\""));
    }
    store
        .join_token_by_hash(&hash_token(t))
        .await?
        .ok_or_else(|| invalid("it is unknown or was revoked"))
}

/// What [`ensure_bootstrap_token`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// The store had no token: one was created and written to this file.
    Created {
        /// The file holding the token.
        path: PathBuf,
        /// The token.
        token: String,
    },
    /// Tokens exist already; nothing was changed.
    Existing,
}

/// The 1-DOC default (see the module docs): creates the `bootstrap` token and writes it to
/// `<data_dir>/cluster-join-token` when the store holds no join token at all.
pub async fn ensure_bootstrap_token(
    store: &dyn Store,
    data_dir: &Path,
) -> Result<Bootstrap, TokenError> {
    if !store.list_join_tokens().await?.is_empty() {
        return Ok(Bootstrap::Existing);
    }
    let created = create(store, BOOTSTRAP_TOKEN_NAME).await?;
    let path = data_dir.join(BOOTSTRAP_TOKEN_FILE);
    write_private(&path, &format!("{}\n", created.token)).map_err(|source| TokenError::File {
        path: path.clone(),
        source,
    })?;
    Ok(Bootstrap::Created {
        path,
        token: created.token,
    })
}

/// Writes a file readable only by its owner (the token is a credential).
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

/// Reads the bootstrap token a root wrote to `data_dir`, if any (for a cluster on the same
/// machine, and for `oak up`).
pub fn read_bootstrap_token(data_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(data_dir.join(BOOTSTRAP_TOKEN_FILE)).ok()?;
    let token = text.lines().next()?.trim();
    (!token.is_empty()).then(|| token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oakestra_store::MemoryStore;

    #[test]
    fn iso_dates_are_right() {
        assert_eq!(iso8601_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601_utc(1_798_765_445), "2027-01-01T01:04:05Z");
    }

    #[tokio::test]
    async fn create_verify_list_revoke() {
        let store: Arc<dyn Store> = MemoryStore::shared();
        let t = create(store.as_ref(), "edge").await.unwrap();
        assert!(t.token.starts_with(TOKEN_PREFIX));
        assert_eq!(t.token.len(), TOKEN_PREFIX.len() + 64);
        let rec = verify(store.as_ref(), &format!(" {} \n", t.token))
            .await
            .unwrap();
        assert_eq!(rec.id, t.id);
        assert_ne!(rec.hash, t.token, "only the hash is stored");
        let listed = list(store.as_ref()).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "edge");

        let e = verify(store.as_ref(), "oakjoin_00001111")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("unknown or was revoked"), "{e}");
        assert!(!e.to_string().contains("1111"), "secret masked: {e}");
        let e = verify(store.as_ref(), "").await.unwrap_err();
        assert!(e.to_string().contains("no token"), "{e}");

        revoke(store.as_ref(), &t.id).await.unwrap();
        assert!(verify(store.as_ref(), &t.token).await.is_err());
        assert!(matches!(
            revoke(store.as_ref(), &t.id).await,
            Err(TokenError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn cli_prints_the_token_first() {
        let store: Arc<dyn Store> = MemoryStore::shared();
        let out = create_cli(store.clone(), Some("lab".into())).await.unwrap();
        let token = out.lines().next().unwrap();
        verify(store.as_ref(), token).await.unwrap();
        assert!(out.contains("\"lab\""));
    }

    #[tokio::test]
    async fn bootstrap_token_is_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = MemoryStore::shared();
        let Bootstrap::Created { path, token } = ensure_bootstrap_token(store.as_ref(), dir.path())
            .await
            .unwrap()
        else {
            panic!("expected a new token");
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(read_bootstrap_token(dir.path()).as_deref(), Some(&*token));
        verify(store.as_ref(), &token).await.unwrap();
        assert_eq!(
            ensure_bootstrap_token(store.as_ref(), dir.path())
                .await
                .unwrap(),
            Bootstrap::Existing
        );
        assert_eq!(list(store.as_ref()).await.unwrap().len(), 1);
    }
}
