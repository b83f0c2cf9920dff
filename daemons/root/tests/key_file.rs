//! Issue 19, item 1: the token signing key is sealed in the store with the key file
//! (`--key-file`, default `<data-dir>/root.key`). Whoever reads the store file cannot forge a
//! token; a restart keeps tokens valid; a store with its key in clear is migrated; a wrong,
//! missing or malformed key file stops the start with a clear message.

#[allow(unused_macros)]
mod api_common;

use std::path::Path;
use std::process::{Command, Stdio};

use api_common::{Root, jwt_claims};
use jsonwebtoken::{EncodingKey, Header, encode};
use oakestra_root::sealing::SealingKey;
use oakestra_store::SigningKey;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `claims` signed with HS256 under `key`.
fn sign(claims: &serde_json::Value, key: &[u8]) -> String {
    encode(
        &Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(key),
    )
    .unwrap()
}

/// The signing key record as stored (the root must be stopped: redb locks its file).
async fn stored_key(data_dir: &Path) -> SigningKey {
    let store = oakestra_store::open(&format!(
        "redb:{}",
        data_dir.join(oakestra_store::REDB_FILE_NAME).display()
    ))
    .await
    .unwrap();
    store
        .signing_key(oakestra_root::SIGNING_KEY_NAME)
        .await
        .unwrap()
        .unwrap()
}

/// Runs the root binary on `data_dir` expecting it to refuse to start; its stderr.
fn refused_start(data_dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_oakestra-root"))
        .args(["--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .env_remove("OAKESTRA_ROOT_CONFIG")
        .env_remove("OAKESTRA_ROOT_KEY_FILE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the root started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_file_does_not_give_away_the_signing_key() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut root = Root::start(dir.path());
    let token = root.admin().await.access_token().await.unwrap();
    let claims = jwt_claims(&token);
    root.kill();

    let key_file = dir.path().join("root.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let stored = stored_key(dir.path()).await;
    assert_eq!(stored.algorithm, oakestra_root::SEALED_SIGNING_KEY);
    let sealing = SealingKey::read(&key_file).unwrap();
    let clear = sealing
        .open("oakestra-root signing_key/jwt-hs256", &stored.key)
        .unwrap();
    assert_eq!(clear.len(), 32);
    let file = std::fs::read(dir.path().join(oakestra_store::REDB_FILE_NAME)).unwrap();
    assert!(!contains(&file, &clear), "the key in binary");
    assert!(!contains(&file, hex(&clear).as_bytes()), "the key in hex");
    assert!(
        contains(&file, hex(&stored.key).as_bytes()),
        "the sealed key is there"
    );

    root.restart();
    let raw = root.raw();
    // The token issued before the restart is still valid; the key it was signed with signs
    // valid tokens (so the refusals below are about the key, not the claims).
    assert_eq!(raw.get("/api/users", Some(&token)).await.0, 200);
    assert_eq!(
        raw.get("/api/users", Some(&sign(&claims, &clear))).await.0,
        200
    );
    // Whatever the store file holds, as a signing key, is refused.
    for key in [stored.key.clone(), hex(&stored.key).into_bytes()] {
        let forged = sign(&claims, &key);
        assert_eq!(raw.get("/api/users", Some(&forged)).await.0, 401);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_stored_in_clear_is_replaced_by_a_sealed_one() {
    let dir = tempfile::tempdir().unwrap();
    // A store as versions before sealing wrote it: the signing key in clear.
    let old_key = [7u8; 32];
    {
        let store = oakestra_store::open(&format!(
            "redb:{}",
            dir.path().join(oakestra_store::REDB_FILE_NAME).display()
        ))
        .await
        .unwrap();
        let clear = SigningKey {
            algorithm: "HS256".into(),
            key: old_key.to_vec(),
            created_at: String::new(),
        };
        store
            .get_or_insert_signing_key(oakestra_root::SIGNING_KEY_NAME, &clear)
            .await
            .unwrap();
    }
    let mut root = Root::start(dir.path());
    let token = root.admin().await.access_token().await.unwrap();
    let claims = jwt_claims(&token);
    let raw = root.raw();
    assert_eq!(raw.get("/api/users", Some(&token)).await.0, 200);
    // The clear key (readable by whoever read the old store file) signs nothing valid now.
    assert_eq!(
        raw.get("/api/users", Some(&sign(&claims, &old_key)))
            .await
            .0,
        401
    );
    root.kill();
    let stored = stored_key(dir.path()).await;
    assert_eq!(stored.algorithm, oakestra_root::SEALED_SIGNING_KEY);
    assert!(dir.path().join("root.key").exists());
    // Sealed once: a restart keeps the new key and its tokens.
    root.restart();
    assert_eq!(root.raw().get("/api/users", Some(&token)).await.0, 200);
    root.kill();
    assert_eq!(stored_key(dir.path()).await, stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_missing_or_malformed_key_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut root = Root::start(dir.path());
    root.kill();
    let key_file = dir.path().join("root.key");
    let original = std::fs::read(&key_file).unwrap();

    // Another valid key.
    std::fs::remove_file(&key_file).unwrap();
    SealingKey::create(&key_file).unwrap();
    let err = refused_start(dir.path());
    assert!(
        err.contains("root.key") && err.contains("not the key file the store was sealed with"),
        "{err}"
    );

    // No key file: not silently replaced by a new one.
    std::fs::remove_file(&key_file).unwrap();
    let err = refused_start(dir.path());
    assert!(
        err.contains("root.key") && err.contains("does not exist") && err.contains("--key-file"),
        "{err}"
    );
    assert!(!key_file.exists());

    // Not a key.
    std::fs::write(&key_file, "hunter2\n").unwrap();
    let err = refused_start(dir.path());
    assert!(err.contains("64 hex digits"), "{err}");

    // The original file again: the root starts, on a key file given by --key-file too.
    let elsewhere = tempfile::tempdir().unwrap();
    let moved = elsewhere.path().join("sealing.key");
    std::fs::write(&moved, &original).unwrap();
    std::fs::remove_file(&key_file).unwrap();
    root.extra_args = vec!["--key-file".into(), moved.display().to_string()];
    root.restart();
    root.admin().await;
    assert!(!key_file.exists());
}
