//! Authentication, roles, ownership, users and organizations, against the real binary.

#[macro_use]
mod api_common;

use api_common::{Backend, Root, assert_error, clientsrvr_named, jwt_claims, one_service_app};
use oakestra_client::{NewUser, OrganizationSpec, UserUpdate};
use serde_json::json;

async fn login_tokens_refresh_and_token_errors(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::start_on(dir.path(), backend).await;
    let raw = root.raw();

    let (status, body) = raw
        .post(
            "/api/auth/login",
            None,
            r#"{"username":"Admin","password":"Admin"}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let access = body["token"].as_str().unwrap().to_owned();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    let claims = jwt_claims(&access);
    assert_eq!(claims["sub"], "Admin");
    assert_eq!(claims["user"], "Admin");
    assert_eq!(claims["type"], "access");
    assert_eq!(claims["fresh"], false);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        600
    );
    assert_eq!(claims["nbf"], claims["iat"]);
    assert!(claims["jti"].is_string());
    assert_eq!(claims["organization"].as_str().unwrap().len(), 24);
    let roles: Vec<&str> = claims["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        [
            "Admin",
            "Organization_Admin",
            "Application_Provider",
            "Infrastructure_Provider"
        ]
    );
    let rclaims = jwt_claims(&refresh);
    assert_eq!(rclaims["type"], "refresh");
    assert_eq!(
        rclaims["exp"].as_u64().unwrap() - rclaims["iat"].as_u64().unwrap(),
        30 * 24 * 3600
    );

    // Refresh: only with the refresh token.
    let (status, body) = raw.post("/api/auth/refresh", Some(&refresh), "").await;
    assert_eq!(status, 200, "{body}");
    let new_access = body["token"].as_str().unwrap();
    assert_eq!(raw.get("/api/applications", Some(new_access)).await.0, 200);
    let msg = assert_error(&raw.post("/api/auth/refresh", Some(&access), "").await, 401);
    assert!(msg.contains("refresh"), "{msg}");
    let msg = assert_error(&raw.get("/api/applications", Some(&refresh)).await, 401);
    assert!(msg.contains("access"), "{msg}");

    // Login errors.
    let msg = assert_error(
        &raw.post(
            "/api/auth/login",
            None,
            r#"{"username":"Admin","password":"nope"}"#,
        )
        .await,
        401,
    );
    assert!(msg.contains("wrong"), "{msg}");
    assert_error(
        &raw.post(
            "/api/auth/login",
            None,
            r#"{"username":"nobody","password":"x"}"#,
        )
        .await,
        401,
    );
    assert_error(&raw.post("/api/auth/login", None, "").await, 400);
    assert_error(
        &raw.post("/api/auth/login", None, r#"{"username":"Admin"}"#)
            .await,
        400,
    );
    let msg = assert_error(
        &raw.post(
            "/api/auth/login",
            None,
            r#"{"username":"Admin","password":"Admin","organization_name":"nope"}"#,
        )
        .await,
        404,
    );
    assert!(msg.contains("nope"), "{msg}");

    // Missing, malformed and forged tokens.
    let msg = assert_error(&raw.get("/api/applications", None).await, 401);
    assert!(msg.contains("Authorization"), "{msg}");
    assert_error(&raw.get("/api/applications", Some("garbage")).await, 401);
    let mut forged: Vec<String> = access.split('.').map(str::to_owned).collect();
    forged[2] = "AAAA".into();
    assert_error(
        &raw.get("/api/applications", Some(&forged.join("."))).await,
        401,
    );
    assert_error(
        &raw.get("/api/service/65f1a2b3c4d5e6f708192a3b", None).await,
        401,
    );

    // The client refreshes and re-logs in by itself.
    let client = root.admin().await;
    let first = client.access_token().await.unwrap();
    client.refresh().await.unwrap();
    assert_ne!(client.access_token().await.unwrap(), first);
    client.set_tokens("garbage", None).await;
    // No refresh token and a bad access token: the stored credentials log in again on 401.
    assert!(client.applications().await.unwrap().is_empty());
}

/// Seconds since the epoch.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Sleeps until the root's clock (this machine's) has passed `exp`: the token is expired.
async fn wait_past(exp: u64) {
    while now_secs() <= exp {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A real, validly signed access token that has expired: the root answers 401 saying so, the
/// refresh token still gets a new one, and the typed client renews by itself (with the
/// refresh token, or by logging in again when that is refused too).
async fn expired_access_token_is_401_and_the_client_renews_it(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::start_on_with_args(dir.path(), backend, &["--access-token-ttl", "3s"]).await;
    let raw = root.raw();

    let (status, body) = raw
        .post(
            "/api/auth/login",
            None,
            r#"{"username":"Admin","password":"Admin"}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let access = body["token"].as_str().unwrap().to_owned();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    let claims = jwt_claims(&access);
    let exp = claims["exp"].as_u64().unwrap();
    assert_eq!(
        exp - claims["iat"].as_u64().unwrap(),
        3,
        "--access-token-ttl"
    );
    assert_eq!(raw.get("/api/applications", Some(&access)).await.0, 200);

    wait_past(exp).await;
    let msg = assert_error(&raw.get("/api/applications", Some(&access)).await, 401);
    assert!(
        msg.contains(&format!("the token expired at {exp}")) && msg.contains("/api/auth/refresh"),
        "{msg}"
    );
    // A write with it changes nothing.
    let sla = clientsrvr_named("late", false).to_string();
    let msg = assert_error(
        &raw.post("/api/application", Some(&access), &sla).await,
        401,
    );
    assert!(msg.contains("expired"), "{msg}");
    // The refresh token outlives it and gets a working access token.
    let (status, body) = raw.post("/api/auth/refresh", Some(&refresh), "").await;
    assert_eq!(status, 200, "{body}");
    let renewed = body["token"].as_str().unwrap();
    let (status, apps) = raw.get("/api/applications", Some(renewed)).await;
    assert_eq!(status, 200, "{apps}");
    assert_eq!(apps, json!([]), "the refused write created nothing");

    // The typed client: its token expires while it is idle; the next call still works.
    let client = root.admin().await;
    let first = client.access_token().await.unwrap();
    let first_exp = jwt_claims(&first)["exp"].as_u64().unwrap();
    wait_past(first_exp).await;
    assert_error(&raw.get("/api/applications", Some(&first)).await, 401);
    assert!(client.applications().await.unwrap().is_empty());
    let second = client.access_token().await.unwrap();
    assert_ne!(second, first);
    assert!(jwt_claims(&second)["exp"].as_u64().unwrap() > now_secs());
    // Expired access token and a refresh token the root refuses: it logs in again.
    client.set_tokens(&first, Some(&access)).await;
    let created = client
        .create_applications(&clientsrvr_named("renewed", false))
        .await
        .unwrap();
    assert_eq!(created.len(), 1);
    let third = client.access_token().await.unwrap();
    assert!(third != first && third != access);
    assert_eq!(raw.get("/api/applications", Some(&third)).await.0, 200);
}

async fn roles_and_ownership(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::start_on(dir.path(), backend).await;
    let admin = root.admin().await;
    let raw = root.raw();

    let alice_user = admin
        .register(&NewUser {
            name: "alice".into(),
            password: "wonderland".into(),
            email: "alice@example.org".into(),
            roles: vec!["Application_Provider".into()],
        })
        .await
        .unwrap();
    assert_eq!(alice_user.name, "alice");
    assert_eq!(alice_user.roles, ["Application_Provider"]);
    let (_, raw_user) = raw
        .get(
            "/api/user/alice",
            Some(&admin.access_token().await.unwrap()),
        )
        .await;
    assert!(raw_user["_id"]["$oid"].is_string(), "{raw_user}");
    assert!(
        raw_user.get("password").is_none(),
        "hash leaked: {raw_user}"
    );

    // Registration errors.
    let dup = admin
        .register(&NewUser {
            name: "alice".into(),
            password: "x".into(),
            email: String::new(),
            roles: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(dup.status(), Some(409), "{dup}");
    let empty = admin
        .register(&NewUser {
            name: String::new(),
            password: "x".into(),
            email: String::new(),
            roles: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(empty.status(), Some(400), "{empty}");
    let bad_role = admin
        .register(&NewUser {
            name: "bob".into(),
            password: "x".into(),
            email: String::new(),
            roles: vec!["Emperor".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(bad_role.status(), Some(400), "{bad_role}");

    let alice = root.client();
    alice.login("alice", "wonderland").await.unwrap();
    let at = alice.access_token().await.unwrap();
    assert_eq!(jwt_claims(&at)["roles"], json!(["Application_Provider"]));
    assert_eq!(
        alice.permissions("alice").await.unwrap(),
        ["Application_Provider"]
    );
    assert_eq!(
        alice.permissions("Admin").await.unwrap_err().status(),
        Some(403)
    );

    // Admin-only endpoints are 403 for alice.
    for path in [
        "/api/applications",
        "/api/services",
        "/api/users",
        "/api/organization",
    ] {
        let msg = assert_error(&raw.get(path, Some(&at)).await, 403);
        assert!(msg.contains("Admin"), "{path}: {msg}");
    }
    assert_error(
        &raw.post(
            "/api/auth/register",
            Some(&at),
            r#"{"name":"eve","password":"x","email":"","roles":[]}"#,
        )
        .await,
        403,
    );
    assert_error(&raw.delete("/api/user/Admin", Some(&at)).await, 403);

    // Admin's application is invisible to alice: 404 everywhere.
    let apps = admin
        .create_applications(&clientsrvr_named("adminapp", true))
        .await
        .unwrap();
    let app_id = apps[0].id.to_string();
    let svc_id = apps[0].microservices[0].to_string();
    for (method, path) in [
        ("GET", format!("/api/application/{app_id}")),
        ("DELETE", format!("/api/application/{app_id}")),
        ("GET", format!("/api/services/{app_id}")),
        ("GET", format!("/api/service/{svc_id}")),
        ("DELETE", format!("/api/service/{svc_id}")),
        ("POST", format!("/api/service/{svc_id}/instance")),
        ("DELETE", format!("/api/service/{svc_id}/instance/0")),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let answer = raw.send(m, &path, Some(&at), None).await;
        assert_error(&answer, 404);
    }
    assert_error(
        &raw.put(
            &format!("/api/application/{app_id}"),
            Some(&at),
            r#"{"application_name":"stolen","application_namespace":"test"}"#,
        )
        .await,
        404,
    );
    // Adding services to someone else's application.
    let mut sla = one_service_app("x", "extra", None);
    sla["applications"][0]["applicationID"] = json!(app_id);
    assert_eq!(
        alice.create_services(&sla).await.unwrap_err().status(),
        Some(404)
    );
    // Still intact for Admin.
    let back = admin.application(&app_id).await.unwrap();
    assert_eq!(back.application_name, "adminapp");
    assert_eq!(admin.application_services(&app_id).await.unwrap().len(), 2);

    // Alice may reuse the same name: names are unique per user.
    let mine = alice
        .create_applications(&clientsrvr_named("adminapp", false))
        .await
        .unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].user_id, "alice");
    let alice_id = alice_user.id.to_string();
    let listed = alice.user_applications(&alice_id).await.unwrap();
    assert_eq!(listed.len(), 1);
    let admin_id = admin.user("Admin").await.unwrap().id.to_string();
    assert_eq!(
        alice
            .user_applications(&admin_id)
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );
    // Admin sees everything, and alice's apps by her id.
    assert_eq!(admin.applications().await.unwrap().len(), 2);
    assert_eq!(admin.services().await.unwrap().len(), 4);
    assert_eq!(admin.user_applications(&alice_id).await.unwrap().len(), 1);
    // Alice reads her own account, not Admin's.
    assert_eq!(
        alice.user("alice").await.unwrap().email,
        "alice@example.org"
    );
    assert_eq!(alice.user("Admin").await.unwrap_err().status(), Some(403));
}

async fn users_organizations_and_passwords(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::start_on(dir.path(), backend).await;
    let admin = root.admin().await;

    let carol = admin
        .register(&NewUser {
            name: "carol".into(),
            password: "pw1".into(),
            email: String::new(),
            roles: vec![],
        })
        .await
        .unwrap();

    // Password change by the user herself.
    let c = root.client();
    c.login("carol", "pw1").await.unwrap();
    assert_eq!(
        c.change_password("carol", "wrong", "pw2")
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );
    assert_eq!(
        c.change_password("carol", "pw1", "pw1")
            .await
            .unwrap_err()
            .status(),
        Some(400)
    );
    c.change_password("carol", "pw1", "pw2").await.unwrap();
    assert_eq!(
        root.client()
            .login("carol", "pw1")
            .await
            .unwrap_err()
            .status(),
        Some(401)
    );
    root.client().login("carol", "pw2").await.unwrap();

    // Admin changes her roles and password (hashed, never shown).
    admin
        .update_user(
            "carol",
            &UserUpdate {
                email: Some("carol@example.org".into()),
                password: Some("pw3".into()),
                roles: Some(vec!["Admin".into()]),
                ..UserUpdate::default()
            },
        )
        .await
        .unwrap();
    let c3 = root.client();
    c3.login("carol", "pw3").await.unwrap();
    assert_eq!(c3.permissions("carol").await.unwrap(), ["Admin"]);
    assert_eq!(c3.users().await.unwrap().len(), 2);
    assert_eq!(
        admin
            .update_user("nobody", &UserUpdate::default())
            .await
            .unwrap_err()
            .status(),
        Some(404)
    );

    // Organizations.
    let orgs = admin.organizations().await.unwrap();
    assert_eq!(orgs.len(), 1);
    assert_eq!(orgs[0].name, "root");
    let root_org_id = orgs[0].id.to_string();
    assert_eq!(
        admin.organization_users(&root_org_id).await.unwrap().len(),
        2
    );
    let edge = admin
        .create_organization(&OrganizationSpec {
            name: "edge".into(),
            member: vec![oakestra_client::Member {
                user_id: carol.id.to_string(),
                roles: vec!["Application_Provider".into()],
            }],
        })
        .await
        .unwrap();
    assert_eq!(
        admin
            .create_organization(&OrganizationSpec {
                name: "edge".into(),
                member: vec![],
            })
            .await
            .unwrap_err()
            .status(),
        Some(409)
    );
    let ce = root.client();
    ce.login_to("carol", "pw3", Some("edge")).await.unwrap();
    assert_eq!(
        jwt_claims(&ce.access_token().await.unwrap())["organization"],
        json!(edge.id.to_string())
    );
    assert_eq!(
        ce.permissions("carol").await.unwrap(),
        ["Application_Provider"]
    );
    admin
        .update_organization(
            &edge.id.to_string(),
            &OrganizationSpec {
                name: "edge2".into(),
                member: vec![],
            },
        )
        .await
        .unwrap();
    assert_eq!(
        admin
            .organization_users(&edge.id.to_string())
            .await
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        admin
            .delete_organization(&root_org_id)
            .await
            .unwrap_err()
            .status(),
        Some(409)
    );
    admin
        .delete_organization(&edge.id.to_string())
        .await
        .unwrap();
    assert_eq!(
        admin
            .delete_organization(&edge.id.to_string())
            .await
            .unwrap_err()
            .status(),
        Some(404)
    );

    // Deleting users.
    assert_eq!(
        admin.delete_user("Admin").await.unwrap_err().status(),
        Some(409)
    );
    let remaining = admin.delete_user("carol").await.unwrap();
    assert_eq!(remaining.len(), 1);
    assert_eq!(
        root.client()
            .login("carol", "pw3")
            .await
            .unwrap_err()
            .status(),
        Some(401)
    );
    // Her token no longer passes admin checks.
    assert_eq!(c3.users().await.unwrap_err().status(), Some(401));

    // Password reset by mail is not offered.
    let raw = root.raw();
    assert_error(
        &raw.post("/api/user", None, r#"{"username":"Admin","domain":"x"}"#)
            .await,
        501,
    );
}

async fn tokens_survive_a_restart(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut root = Root::start_on(dir.path(), backend).await;
    let admin = root.admin().await;
    let token = admin.access_token().await.unwrap();
    root.restart();
    let raw = root.raw();
    assert_eq!(raw.get("/api/applications", Some(&token)).await.0, 200);
    // The default account is created once, not again.
    let admin = root.admin().await;
    assert_eq!(admin.users().await.unwrap().len(), 1);
}

async fn login_raw(raw: &api_common::Raw, user: &str, password: &str) -> (String, String) {
    let (status, body) = raw
        .post(
            "/api/auth/login",
            None,
            &json!({"username": user, "password": password}).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    (
        body["token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

/// Issue 19, item 5: a demoted Admin, a deleted user, a changed password and a new user under
/// a deleted user's name, each checked on the very next request (tokens were valid for their
/// whole 10 minutes before).
async fn revocation_takes_effect_on_the_next_request(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::start_on(dir.path(), backend).await;
    let admin = root.admin().await;
    let raw = root.raw();
    let dora = |roles: Vec<String>| NewUser {
        name: "dora".into(),
        password: "pw1".into(),
        email: String::new(),
        roles,
    };
    admin.register(&dora(vec!["Admin".into()])).await.unwrap();
    let (token, refresh) = login_raw(&raw, "dora", "pw1").await;
    assert_eq!(raw.get("/api/users", Some(&token)).await.0, 200);

    // Demoted: the Admin token dies at once, and so does its refresh token.
    admin
        .update_user(
            "dora",
            &UserUpdate {
                roles: Some(vec![]),
                ..UserUpdate::default()
            },
        )
        .await
        .unwrap();
    let (status, body) = raw.get("/api/users", Some(&token)).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("revoked"),
        "{body}"
    );
    assert_eq!(
        raw.post("/api/auth/refresh", Some(&refresh), "").await.0,
        401
    );
    let (token, _) = login_raw(&raw, "dora", "pw1").await;
    assert_eq!(raw.get("/api/users", Some(&token)).await.0, 403);
    assert_eq!(raw.get("/api/user/dora", Some(&token)).await.0, 200);

    // Her own password change: every other session dies, the answer carries new tokens.
    let (other, _) = login_raw(&raw, "dora", "pw1").await;
    let (status, body) = raw
        .post(
            "/api/user/dora",
            Some(&token),
            r#"{"oldPassword":"pw1","newPassword":"pw2"}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let fresh = body["token"].as_str().unwrap().to_owned();
    assert_eq!(raw.get("/api/user/dora", Some(&other)).await.0, 401);
    assert_eq!(raw.get("/api/user/dora", Some(&token)).await.0, 401);
    assert_eq!(raw.get("/api/user/dora", Some(&fresh)).await.0, 200);

    // She owns an application; deleted, her token cannot create another.
    let app = one_service_app("doraapp", "web", None);
    let (status, body) = raw
        .post("/api/application", Some(&fresh), &app.to_string())
        .await;
    assert_eq!(status, 200, "{body}");
    admin.delete_user("dora").await.unwrap();
    let other_app = one_service_app("doraapp2", "web", None);
    let (status, body) = raw
        .post("/api/application", Some(&fresh), &other_app.to_string())
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no longer exists"),
        "{body}"
    );

    // Her name cannot be given to a new user while her application exists...
    let err = admin.register(&dora(vec![])).await.unwrap_err();
    assert_eq!(err.status(), Some(409));
    assert!(err.to_string().contains("deleted user"), "{err}");
    let apps = admin.applications().await.unwrap();
    for app in apps.iter().filter(|a| a.user_id == "dora") {
        admin.delete_application(&app.id.to_string()).await.unwrap();
    }
    // ...and once it is gone, the new dora sees nothing of the old one, and the old token
    // stays refused although the name exists again.
    let new_dora = admin.register(&dora(vec![])).await.unwrap();
    let (token, _) = login_raw(&raw, "dora", "pw1").await;
    let (status, body) = raw
        .get(&format!("/api/applications/{}", new_dora.id), Some(&token))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, json!([]));
    let (status, body) = raw.get("/api/user/dora", Some(&fresh)).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("earlier, deleted user"),
        "{body}"
    );
}

on_every_backend!(
    login_tokens_refresh_and_token_errors,
    roles_and_ownership,
    users_organizations_and_passwords,
    tokens_survive_a_restart,
    revocation_takes_effect_on_the_next_request,
    expired_access_token_is_401_and_the_client_renews_it
);
