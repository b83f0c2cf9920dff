//! `/api/join-tokens` (Admin): cluster join tokens created, listed and revoked on a running
//! root, and the created token is one the root accepts from a cluster.

#[macro_use]
mod api_common;

use api_common::{Backend, Root, assert_error};
use oakestra_client::NewUser;

async fn join_tokens_over_the_api(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut root = Root::start_on(dir.path(), backend).await;
    let admin = root.admin().await;
    let raw = root.raw();

    // The bootstrap token exists from the first start.
    let before = admin.join_tokens().await.unwrap();
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0].name, "bootstrap");

    let created = admin.create_join_token(Some("edge-berlin")).await.unwrap();
    assert!(created.token.starts_with("oakjoin_"), "{created:?}");
    assert_eq!(created.name, "edge-berlin");
    let unnamed = admin.create_join_token(None).await.unwrap();
    assert_eq!(unnamed.name, "cluster");
    assert_ne!(unnamed.token, created.token);

    // Listed by id and name, never with the secret.
    let token = admin.access_token().await.unwrap();
    let (status, listed) = raw.get("/api/join-tokens", Some(&token)).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed.as_array().unwrap().len(), 3);
    assert!(!listed.to_string().contains(&created.token), "{listed}");
    assert!(!listed.to_string().contains("hash"), "{listed}");

    // An empty body is fine; a body of the wrong shape is a 400.
    let (status, body) = raw.post("/api/join-tokens", Some(&token), "").await;
    assert_eq!(status, 200, "{body}");
    assert_error(
        &raw.post("/api/join-tokens", Some(&token), r#"{"name": 3}"#)
            .await,
        400,
    );

    // Admin only.
    assert_error(&raw.post("/api/join-tokens", None, "").await, 401);
    admin
        .register(&NewUser {
            name: "alice".into(),
            password: "wonderland".into(),
            email: String::new(),
            roles: vec!["Application_Provider".into()],
        })
        .await
        .unwrap();
    let alice = root.client();
    alice.login("alice", "wonderland").await.unwrap();
    assert_eq!(
        alice.create_join_token(None).await.unwrap_err().status(),
        Some(403)
    );
    assert_eq!(alice.join_tokens().await.unwrap_err().status(), Some(403));

    // Revoke; a second time it is not found.
    admin.revoke_join_token(&unnamed.id).await.unwrap();
    assert_eq!(
        admin
            .revoke_join_token(&unnamed.id)
            .await
            .unwrap_err()
            .status(),
        Some(404)
    );
    let left = admin.join_tokens().await.unwrap();
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(left.iter().all(|t| t.id != unnamed.id), "{left:?}");
    assert!(left.iter().any(|t| t.id == created.id), "{left:?}");

    // The token is stored: with the root stopped, the store accepts it as a cluster's and
    // refuses the revoked one.
    if backend == Backend::Redb {
        root.kill();
        let store = oakestra_store::open(&format!(
            "redb:{}",
            dir.path().join("oakestra.redb").display()
        ))
        .await
        .unwrap();
        let record = oakestra_root::tokens::verify(store.as_ref(), &created.token)
            .await
            .unwrap();
        assert_eq!(record.name, "edge-berlin");
        assert!(
            oakestra_root::tokens::verify(store.as_ref(), &unnamed.token)
                .await
                .is_err()
        );
    }
}

on_every_backend!(join_tokens_over_the_api);
