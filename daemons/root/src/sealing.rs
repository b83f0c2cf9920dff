//! Secrets sealed with a key-encryption key kept in a file beside (not inside) the store.
//!
//! The store holds secrets the root must read back in clear (the token signing key; later
//! user secrets): a copy of the store file, a backup or a MongoDB dump alone must not give
//! them away. Each is sealed with AES-256-GCM (`ring::aead`) under a 256-bit key read from a
//! key file (`--key-file`, default `<data-dir>/root.key`, 0600, created at first start):
//!
//! * sealed bytes are `nonce (12) ‖ ciphertext ‖ tag (16)`, with a random nonce per seal;
//! * a *purpose* string is bound to every seal as associated data, so a sealed value cannot be
//!   moved to another record (a signing key opened as a user secret fails);
//! * opening with another key, or altered bytes, fails ([`SealError::Open`]).
//!
//! The key file is 64 hex digits and a newline; replicas that share a store share the file.

use std::path::{Path, PathBuf};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// Length of a key-encryption key in bytes.
pub const KEY_LEN: usize = 32;

/// Default file name of the key file inside the data directory.
pub const KEY_FILE_NAME: &str = "root.key";

/// Bytes a seal adds to its plaintext (nonce and tag).
pub const OVERHEAD: usize = NONCE_LEN + 16;

/// Why a key file could not be used or a sealed value not opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The key file cannot be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file does not hold a key.
    #[error(
        "key file {path} is not a key: it must hold 64 hex digits (a 256-bit key); restore the \
         file the store was sealed with"
    )]
    Malformed {
        /// The key file.
        path: PathBuf,
    },
    /// The sealed bytes do not open with this key (another key, or altered bytes).
    #[error(
        "the sealed {purpose} does not open with this key (another key file, or altered bytes)"
    )]
    Open {
        /// What was sealed.
        purpose: String,
    },
}

/// A key-encryption key: seals and opens secrets.
pub struct SealingKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(..)")
    }
}

impl SealingKey {
    /// A key from its bytes.
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).expect("AES-256 takes 32-byte keys");
        Self {
            key: LessSafeKey::new(unbound),
        }
    }

    /// A new random key that is not written anywhere (a store that is not persisted).
    pub fn ephemeral() -> Self {
        Self::from_bytes(&crate::auth::random_bytes::<KEY_LEN>())
    }

    /// Reads the key file at `path`. A file group or others may read is made 0600 (with a
    /// warning), as the store file is.
    pub fn read(path: &Path) -> Result<Self, SealError> {
        let io = |source| SealError::Io {
            path: path.to_owned(),
            source,
        };
        let text = std::fs::read(path).map_err(io)?;
        oakestra_store::owner_only(path, "it is a key file").map_err(io)?;
        let malformed = || SealError::Malformed {
            path: path.to_owned(),
        };
        let text = std::str::from_utf8(&text).map_err(|_| malformed())?.trim();
        if text.len() != KEY_LEN * 2 {
            return Err(malformed());
        }
        let mut bytes = [0u8; KEY_LEN];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).map_err(|_| malformed())?;
        }
        Ok(Self::from_bytes(&bytes))
    }

    /// Creates a new random key file at `path` (0600, in a 0700 directory if the directory is
    /// new). Refuses to overwrite an existing file.
    pub fn create(path: &Path) -> Result<Self, SealError> {
        let io = |source| SealError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            oakestra_daemon::private::dir(dir).map_err(io)?;
        }
        let bytes = crate::auth::random_bytes::<KEY_LEN>();
        let mut text = String::with_capacity(KEY_LEN * 2 + 1);
        for b in bytes {
            text.push_str(&format!("{b:02x}"));
        }
        text.push('\n');
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(io)?;
        std::io::Write::write_all(&mut file, text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(Self::from_bytes(&bytes))
    }

    /// Seals `plaintext` for `purpose` (a name saying what it is, bound to the result).
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Vec<u8> {
        let nonce_bytes = crate::auth::random_bytes::<NONCE_LEN>();
        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(plaintext);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(purpose.as_bytes()),
                &mut out[NONCE_LEN..],
            )
            .expect("AES-GCM seals any plaintext shorter than 64 GiB");
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Opens what [`SealingKey::seal`] sealed for the same `purpose`.
    pub fn open(&self, purpose: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let fail = || SealError::Open {
            purpose: purpose.to_owned(),
        };
        if sealed.len() < OVERHEAD {
            return Err(fail());
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(purpose.as_bytes()), &mut buf)
            .map_err(|_| fail())?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bytes_open_with_the_key_and_purpose_only() {
        let key = SealingKey::ephemeral();
        let secret = b"the token signing key, 32 bytes!";
        let sealed = key.seal("signing_key/jwt-hs256", secret);
        assert_eq!(sealed.len(), secret.len() + OVERHEAD);
        assert!(!sealed.windows(secret.len()).any(|w| w == secret));
        assert_eq!(key.open("signing_key/jwt-hs256", &sealed).unwrap(), secret);
        // Two seals of the same secret differ (random nonce).
        assert_ne!(key.seal("signing_key/jwt-hs256", secret), sealed);
        // Another purpose, another key, altered or short bytes: refused.
        assert!(key.open("user_secret/alice", &sealed).is_err());
        assert!(
            SealingKey::ephemeral()
                .open("signing_key/jwt-hs256", &sealed)
                .is_err()
        );
        let mut altered = sealed.clone();
        altered[NONCE_LEN] ^= 1;
        assert!(key.open("signing_key/jwt-hs256", &altered).is_err());
        assert!(key.open("signing_key/jwt-hs256", &sealed[..10]).is_err());
    }

    #[test]
    fn key_files_are_created_owner_only_read_back_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/root.key");
        let created = SealingKey::create(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim().len(), 64);
        let read = SealingKey::read(&path).unwrap();
        assert_eq!(read.open("p", &created.seal("p", b"x")).unwrap(), b"x");
        assert!(matches!(
            SealingKey::create(&path),
            Err(SealError::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists
        ));
        // A world-readable key file is made 0600.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        SealingKey::read(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        // Not a key: a clear error naming the file.
        std::fs::write(&path, "not a key\n").unwrap();
        let err = SealingKey::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("root.key") && err.contains("64 hex digits"),
            "{err}"
        );
        let missing = SealingKey::read(&dir.path().join("absent.key")).unwrap_err();
        assert!(
            matches!(&missing, SealError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
        );
    }
}
