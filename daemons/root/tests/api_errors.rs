//! Every error case of the REST API: bad input gets a clear JSON error and changes nothing.

#[macro_use]
mod api_common;

use api_common::{Backend, Root, assert_error, clientsrvr_named, one_service_app};
use serde_json::{Value, json};

async fn admin_token(root: &Root) -> String {
    root.admin().await.access_token().await.unwrap()
}

async fn bad_bodies_are_rejected_with_their_reason(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::start_on(dir.path(), backend).await;
    let t = admin_token(&root).await;
    let raw = root.raw();

    // Malformed JSON → 400 with the position.
    let msg = assert_error(
        &raw.post("/api/application", Some(&t), r#"{"sla_version": "#)
            .await,
        400,
    );
    assert!(msg.contains("not valid JSON"), "{msg}");
    assert_error(&raw.post("/api/application", Some(&t), "").await, 400);

    // Invalid SLA → 422 with every violation and its path.
    let mut sla: Value = clientsrvr_named("bad", false);
    sla["applications"][0]["microservices"][0]["microservice_name"] = json!("not valid!");
    sla["applications"][0]["microservices"][1]["port"] = json!("80:80/tcpx");
    sla["applications"][0]["microservices"][1]["memory"] = json!("lots");
    sla["applications"][0]["microservices"][1]["restart_policy"] = json!("sometimes");
    sla["applications"][0]["microservices"][1]["replicas"] = json!(10_001);
    sla["applications"][0]["microservices"][1]["readiness_probe"] =
        json!({"http_get": {"port": 0}, "period": 0});
    sla["applications"][0]["microservices"][0]["liveness_probe"] = json!({"exec": ["true"]});
    let (status, body) = raw
        .post("/api/application", Some(&t), &sla.to_string())
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], 422);
    assert_eq!(body["status"], "Unprocessable Entity");
    let paths: Vec<&str> = body["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["path"].as_str().unwrap())
        .collect();
    for expected in [
        "/applications/0/microservices/0/microservice_name",
        "/applications/0/microservices/1/port",
        "/applications/0/microservices/1/memory",
        "/applications/0/microservices/1/restart_policy",
        "/applications/0/microservices/1/replicas",
        "/applications/0/microservices/1/readiness_probe/http_get/port",
        "/applications/0/microservices/1/readiness_probe/period",
    ] {
        assert!(paths.contains(&expected), "{expected} missing in {paths:?}");
    }
    for v in body["violations"].as_array().unwrap() {
        assert!(!v["message"].as_str().unwrap().is_empty());
    }
    assert!(
        !paths.iter().any(|p| p.contains("liveness_probe")),
        "a valid probe is a known field: {paths:?}"
    );

    // Missing or unknown sla_version → 422 naming it (Oakestra: 500).
    let mut no_version = clientsrvr_named("nov", false);
    no_version.as_object_mut().unwrap().remove("sla_version");
    let (status, body) = raw
        .post("/api/application", Some(&t), &no_version.to_string())
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["violations"][0]["path"], "/sla_version");
    no_version["sla_version"] = json!("v9");
    let (status, body) = raw
        .post("/api/application", Some(&t), &no_version.to_string())
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["message"].as_str().unwrap().contains("v2.0"), "{body}");

    // Two services with the same name in one application.
    let mut twins = clientsrvr_named("twins", false);
    twins["applications"][0]["microservices"][1]["microservice_name"] = json!("curl");
    let (status, body) = raw
        .post("/api/application", Some(&t), &twins.to_string())
        .await;
    assert_eq!(status, 422, "{body}");

    // No application at all.
    let (status, _) = raw
        .post(
            "/api/application",
            Some(&t),
            r#"{"sla_version":"v2.0","customerID":"Admin","applications":[]}"#,
        )
        .await;
    assert_eq!(status, 422);

    // Over 1 MiB → 413.
    let mut huge = clientsrvr_named("huge", false);
    huge["padding"] = json!("x".repeat(1 << 20));
    let msg = assert_error(
        &raw.post("/api/application", Some(&t), &huge.to_string())
            .await,
        413,
    );
    assert!(msg.contains("1 MiB"), "{msg}");

    // Nothing was created by any of this.
    let (status, apps) = raw.get("/api/applications", Some(&t)).await;
    assert_eq!(status, 200);
    assert_eq!(apps, json!([]));
}

async fn conflicts_are_409_and_creation_is_all_or_nothing(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::start_on(dir.path(), backend).await;
    let t = admin_token(&root).await;
    let raw = root.raw();

    let (status, body) = raw
        .post(
            "/api/application",
            Some(&t),
            &clientsrvr_named("first", true).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let nginx_id = body[0]["microservices"][1]["$oid"]
        .as_str()
        .or_else(|| body[0]["microservices"][1].as_str())
        .unwrap()
        .to_owned();

    // Same name and namespace → 409.
    let msg = assert_error(
        &raw.post(
            "/api/application",
            Some(&t),
            &clientsrvr_named("first", false).to_string(),
        )
        .await,
        409,
    );
    assert!(msg.contains("first"), "{msg}");

    // rr_ip in use → 409 naming the holder.
    let msg = assert_error(
        &raw.post(
            "/api/application",
            Some(&t),
            &one_service_app("second", "web", Some("10.30.55.55")).to_string(),
        )
        .await,
        409,
    );
    assert!(msg.contains("10.30.55.55"), "{msg}");
    assert!(
        msg.contains(&nginx_id) || msg.contains("clientsrvr") || msg.contains("first"),
        "the message should name the service holding the address: {msg}"
    );

    // Another user asking for the same address learns that it is taken, not by what:
    // neither the holder's id nor its names leak (issue 19, item 6).
    let other = root.admin().await;
    other
        .register(&oakestra_client::NewUser {
            name: "mallory".into(),
            password: "pw".into(),
            email: String::new(),
            roles: vec!["Application_Provider".into()],
        })
        .await
        .unwrap();
    let mallory = root.client();
    mallory.login("mallory", "pw").await.unwrap();
    let mt = mallory.access_token().await.unwrap();
    let msg = assert_error(
        &raw.post(
            "/api/application",
            Some(&mt),
            &one_service_app("probe", "web", Some("10.30.55.55")).to_string(),
        )
        .await,
        409,
    );
    assert!(msg.contains("10.30.55.55"), "{msg}");
    assert!(
        !msg.contains(&nginx_id) && !msg.contains("clientsrvr") && !msg.contains("first"),
        "a 409 names another user's service: {msg}"
    );

    // A descriptor with two applications, the second conflicting: nothing is kept.
    let mut both = one_service_app("okapp", "web", Some("10.30.1.1"));
    let conflicting = one_service_app("badapp", "web", Some("10.30.55.55"));
    both["applications"]
        .as_array_mut()
        .unwrap()
        .push(conflicting["applications"][0].clone());
    assert_error(
        &raw.post("/api/application", Some(&t), &both.to_string())
            .await,
        409,
    );
    let (_, apps) = raw.get("/api/applications", Some(&t)).await;
    let names: Vec<&str> = apps
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["application_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["first"],
        "a failed descriptor left something behind"
    );
    // ... and the first application's address was released again.
    let (status, body) = raw
        .post(
            "/api/application",
            Some(&t),
            &one_service_app("okapp", "web", Some("10.30.1.1")).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Adding a service with an existing name to an application → 409.
    let mut sla = one_service_app("ignored", "curl", None);
    sla["applications"][0]["applicationID"] = body[0]["applicationID"].clone();
    let (_, apps) = raw.get("/api/applications", Some(&t)).await;
    let first_id = apps[0]["applicationID"].clone();
    sla["applications"][0]["applicationID"] = first_id;
    assert_error(
        &raw.post("/api/service", Some(&t), &sla.to_string()).await,
        409,
    );
    // Without applicationID → 422.
    let no_id = one_service_app("x", "y", None);
    assert_error(
        &raw.post("/api/service", Some(&t), &no_id.to_string()).await,
        422,
    );
}

async fn unknown_ids_and_routes_are_404(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::start_on(dir.path(), backend).await;
    let t = admin_token(&root).await;
    let raw = root.raw();
    let unknown = "65f1a2b3c4d5e6f708192a3b";
    for path in [
        format!("/api/application/{unknown}"),
        "/api/application/not-an-id".to_owned(),
        format!("/api/service/{unknown}"),
        format!("/api/services/{unknown}"),
        format!("/api/applications/{unknown}"),
        format!("/api/users/{unknown}"),
        "/api/user/nobody".to_owned(),
        "/api/nothing/here".to_owned(),
    ] {
        let msg = assert_error(&raw.get(&path, Some(&t)).await, 404);
        assert!(!msg.is_empty(), "{path}");
    }
    for path in [
        format!("/api/application/{unknown}"),
        format!("/api/service/{unknown}"),
        format!("/api/organization/{unknown}"),
    ] {
        assert_error(&raw.delete(&path, Some(&t)).await, 404);
    }
    // Instance deploy/undeploy on an unknown service: 404, not Oakestra's 200.
    assert_error(
        &raw.post(&format!("/api/service/{unknown}/instance"), Some(&t), "")
            .await,
        404,
    );
    assert_error(
        &raw.delete(&format!("/api/service/{unknown}/instance/0"), Some(&t))
            .await,
        404,
    );
    // Replicas: an unknown service is a 404, a bad count a 400 that says what is allowed.
    assert_error(
        &raw.put(
            &format!("/api/service/{unknown}/replicas"),
            Some(&t),
            r#"{"replicas": 2}"#,
        )
        .await,
        404,
    );
    let (_, apps) = raw
        .post(
            "/api/application",
            Some(&t),
            &one_service_app("scaled", "web", None).to_string(),
        )
        .await;
    let app = apps
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["application_name"] == "scaled")
        .unwrap()["_id"]["$oid"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, services) = raw.get(&format!("/api/services/{app}"), Some(&t)).await;
    let service = services[0]["_id"]["$oid"].as_str().unwrap().to_owned();
    let path = format!("/api/service/{service}/replicas");
    for bad in [
        r#"{"replicas": 10001}"#,
        r#"{"replicas": "2"}"#,
        r#"{"replicas": -1}"#,
        r#"{"replicas": 2.5}"#,
        "{}",
    ] {
        let msg = assert_error(&raw.put(&path, Some(&t), bad).await, 400);
        assert!(msg.contains("0 to 10000"), "{bad}: {msg}");
    }
    // 2.0 is the whole number 2 in JSON (a schemathesis finding); unknown keys are ignored.
    let (status, body) = raw
        .put(&path, Some(&t), r#"{"replicas": 2.0, "other": {}}"#)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["instances"], json!([0, 1]));
    assert_eq!(body["deployed"], json!([0, 1]));
    let (_, record) = raw.get(&format!("/api/service/{service}"), Some(&t)).await;
    assert_eq!(record["replicas"], 2);
    assert_eq!(record["instance_list"].as_array().unwrap().len(), 2);
    // Wrong method: 405 with the usual body.
    assert_error(&raw.delete("/api/applications", Some(&t)).await, 405);
}

async fn instances_deploy_and_undeploy(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::start_on(dir.path(), backend).await;
    let admin = root.admin().await;
    let t = admin.access_token().await.unwrap();
    let raw = root.raw();
    let apps = admin
        .create_applications(&clientsrvr_named("inst", false))
        .await
        .unwrap();
    let sid = apps[0].microservices[0].to_string();

    let first = admin.deploy_instance(&sid).await.unwrap();
    assert_eq!(first.message, "ok");
    let n0 = first.instance.unwrap().instance_number;
    let second = admin.deploy_instance(&sid).await.unwrap();
    assert_eq!(second.instance.unwrap().instance_number, n0 + 1);
    let service = admin.service(&sid).await.unwrap();
    assert_eq!(service.instance_list.len(), 2);
    assert!(service.status.is_some());

    admin.undeploy_instance(&sid, Some(n0)).await.unwrap();
    let msg = assert_error(
        &raw.delete(&format!("/api/service/{sid}/instance/{n0}"), Some(&t))
            .await,
        404,
    );
    assert!(msg.contains("instance"), "{msg}");
    assert_error(
        &raw.delete(&format!("/api/service/{sid}/instance/abc"), Some(&t))
            .await,
        400,
    );
    admin.deploy_instance(&sid).await.unwrap();
    admin.undeploy_instance(&sid, None).await.unwrap();
    assert!(admin.service(&sid).await.unwrap().instance_list.is_empty());
    // Numbers are never reused.
    let again = admin.deploy_instance(&sid).await.unwrap();
    assert_eq!(again.instance.unwrap().instance_number, n0 + 3);
}

/// Issue 19, item 6: the framework's own rejections come in the `{code, status, message}`
/// shape like every other error (they were plain text).
async fn framework_rejections_are_json_errors(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::start_on(dir.path(), backend).await;
    let t = admin_token(&root).await;
    let raw = root.raw();
    for (path, expected) in [
        (
            "/api/service/65f1a2b3c4d5e6f708192a3b/usage?since=1&since=2",
            "since",
        ),
        (
            "/api/service/65f1a2b3c4d5e6f708192a3b/usage?step=-1",
            "step",
        ),
        ("/api/service/%FF", "UTF-8"),
    ] {
        let (status, body) = raw.get(path, Some(&t)).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["code"], 400, "{path}: {body}");
        assert_eq!(body["status"], "Bad Request", "{path}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{path}: {body}");
    }
}

on_every_backend!(
    framework_rejections_are_json_errors,
    bad_bodies_are_rejected_with_their_reason,
    conflicts_are_409_and_creation_is_all_or_nothing,
    unknown_ids_and_routes_are_404,
    instances_deploy_and_undeploy
);
