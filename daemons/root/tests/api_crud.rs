//! Full application → service CRUD with the Oakestra JSON shapes, the docs, metrics, health
//! and slash-tolerant routing.

#[macro_use]
mod api_common;

use api_common::{Backend, CLIENTSRVR, Root, assert_error, one_service_app};
use oakestra_client::ApplicationUpdate;
use serde_json::{Value, json};

async fn clientsrvr_application_and_services_crud(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::start_on(dir.path(), backend).await;
    let admin = root.admin().await;
    let t = admin.access_token().await.unwrap();
    let raw = root.raw();

    // Create from the example descriptor, raw, to check the exact shapes.
    let (status, apps) = raw.post("/api/application", Some(&t), CLIENTSRVR).await;
    assert_eq!(status, 200, "{apps}");
    let app = &apps[0];
    let app_id = app["_id"]["$oid"].as_str().unwrap().to_owned();
    assert_eq!(app["applicationID"], json!(app_id));
    assert_eq!(app["application_name"], "clientsrvr");
    assert_eq!(app["application_namespace"], "test");
    assert_eq!(
        app["application_desc"],
        "Simple demo with curl client and Nginx server"
    );
    assert_eq!(app["userId"], "Admin");
    let service_ids: Vec<String> = app["microservices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(service_ids.len(), 2);

    // GET /api/application/<id> answers the application (Oakestra: null).
    let (status, got) = raw
        .get(&format!("/api/application/{app_id}"), Some(&t))
        .await;
    assert_eq!(status, 200);
    assert_eq!(&got, app);

    // Services: Oakestra's job documents.
    let (status, services) = raw.get(&format!("/api/services/{app_id}"), Some(&t)).await;
    assert_eq!(status, 200);
    let services = services.as_array().unwrap();
    assert_eq!(services.len(), 2);
    let nginx = &services[1];
    assert_eq!(nginx["_id"]["$oid"], json!(service_ids[1]));
    assert_eq!(nginx["microserviceID"], json!(service_ids[1]));
    assert_eq!(nginx["applicationID"], json!(app_id));
    assert_eq!(nginx["microservice_name"], "nginx");
    assert_eq!(nginx["service_name"], "nginx");
    assert_eq!(nginx["app_name"], "clientsrvr");
    assert_eq!(nginx["app_ns"], "test");
    assert_eq!(nginx["job_name"], "clientsrvr.test.nginx.test");
    assert_eq!(nginx["image"], "docker.io/library/nginx:latest");
    assert_eq!(nginx["code"], "docker.io/library/nginx:latest");
    assert_eq!(nginx["RR_ip"], "10.30.55.55");
    assert_eq!(nginx["port"], "80:80/tcp");
    assert_eq!(nginx["instance_list"], json!([]));
    assert_eq!(
        services[0]["cmd"],
        json!(["sh", "-c", "curl 10.30.55.55 ; sleep 5"])
    );
    let (status, one) = raw
        .get(&format!("/api/service/{}", service_ids[1]), Some(&t))
        .await;
    assert_eq!(status, 200);
    assert_eq!(&one, nginx);

    // The typed client reads the same documents.
    let typed = admin.application_services(&app_id).await.unwrap();
    assert_eq!(typed[1].job_name, "clientsrvr.test.nginx.test");
    assert_eq!(admin.services().await.unwrap().len(), 2);

    // Add a service to the application.
    let mut extra = one_service_app("ignored", "redis", None);
    extra["applications"][0]["applicationID"] = json!(app_id);
    let created = admin.create_services(&extra).await.unwrap();
    assert_eq!(created.deployed_services.len(), 1);
    assert!(created.failed_services.is_empty());
    let redis_id = created.job_id.clone();
    let redis = admin.service(&redis_id).await.unwrap();
    assert_eq!(redis.job_name, "clientsrvr.test.redis.test");
    let app_now = admin.application(&app_id).await.unwrap();
    assert_eq!(app_now.microservices.len(), 3);

    // Update the application.
    admin
        .update_application(
            &app_id,
            &ApplicationUpdate {
                application_name: "renamed".into(),
                application_namespace: "prod".into(),
                application_desc: Some("new".into()),
                microservices: None,
            },
        )
        .await
        .unwrap();
    let renamed = admin.application(&app_id).await.unwrap();
    assert_eq!(renamed.application_name, "renamed");
    assert_eq!(renamed.application_desc, "new");
    assert_eq!(renamed.microservices.len(), 3, "services are kept");
    let bad = admin
        .update_application(
            &app_id,
            &ApplicationUpdate {
                application_name: "no way!".into(),
                application_namespace: "prod".into(),
                application_desc: None,
                microservices: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(bad.status(), Some(422));
    // The old name is free, but nginx's rr_ip is still held by the renamed application.
    let held = admin
        .create_applications(&serde_json::from_str::<Value>(CLIENTSRVR).unwrap())
        .await
        .unwrap_err();
    assert_eq!(held.status(), Some(409), "{held}");
    assert!(held.message().unwrap().contains("10.30.55.55"), "{held}");
    // Service update is not supported: 501 with a message.
    assert_error(
        &raw.put(&format!("/api/service/{redis_id}"), Some(&t), "{}")
            .await,
        501,
    );

    // Delete one service, then the application with the rest.
    admin.delete_service(&redis_id).await.unwrap();
    assert_eq!(
        admin.service(&redis_id).await.unwrap_err().status(),
        Some(404)
    );
    assert_eq!(
        admin
            .application(&app_id)
            .await
            .unwrap()
            .microservices
            .len(),
        2
    );
    admin.delete_application(&app_id).await.unwrap();
    assert_eq!(
        admin.application(&app_id).await.unwrap_err().status(),
        Some(404)
    );
    for id in &service_ids {
        assert_eq!(admin.service(id).await.unwrap_err().status(), Some(404));
    }
    assert!(admin.services().await.unwrap().is_empty());
    // The rr_ip is free again: the example can be created once more.
    let again = admin
        .create_applications(&serde_json::from_str::<Value>(CLIENTSRVR).unwrap())
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
}

async fn trailing_slashes_docs_metrics_health_and_clusters(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::start_on(dir.path(), backend).await;
    let t = root.admin().await.access_token().await.unwrap();
    let raw = root.raw();

    for path in [
        "/api/applications",
        "/api/applications/",
        "/api/services/",
        "/api/clusters/",
        "/api/clusters",
        "/api/clusters/active",
        "/api/clusters/active/",
    ] {
        let (status, body) = raw.get(path, Some(&t)).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body, json!([]), "{path}");
    }
    let (status, body) = raw
        .post(
            "/api/auth/login/",
            None,
            r#"{"username":"Admin","password":"Admin"}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = raw.post("/api/application/", Some(&t), CLIENTSRVR).await;
    assert_eq!(status, 200, "{body}");

    // OpenAPI document generated from the handlers: every endpoint is in it.
    let (status, spec) = raw.get("/docs/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let paths = spec["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/auth/login", "post"),
        ("/api/auth/refresh", "post"),
        ("/api/auth/register", "post"),
        ("/api/permission/{username}", "get"),
        ("/api/user/{username}", "get"),
        ("/api/user/{username}", "put"),
        ("/api/user/{username}", "delete"),
        ("/api/user/{username}", "post"),
        ("/api/users", "get"),
        ("/api/users/{organization_id}", "get"),
        ("/api/organization", "get"),
        ("/api/organization", "post"),
        ("/api/organization/{organization_id}", "put"),
        ("/api/organization/{organization_id}", "delete"),
        ("/api/application", "post"),
        ("/api/application/{application_id}", "get"),
        ("/api/application/{application_id}", "put"),
        ("/api/application/{application_id}", "delete"),
        ("/api/applications", "get"),
        ("/api/applications/{user_id}", "get"),
        ("/api/service", "post"),
        ("/api/service/{service_id}", "get"),
        ("/api/service/{service_id}", "delete"),
        ("/api/services", "get"),
        ("/api/services/{application_id}", "get"),
        ("/api/service/{service_id}/instance", "post"),
        (
            "/api/service/{service_id}/instance/{instance_number}",
            "delete",
        ),
        ("/api/clusters", "get"),
        ("/api/clusters/active", "get"),
        ("/health", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
    let description = spec["info"]["description"].as_str().unwrap();
    assert!(
        description.contains("Deliberate differences"),
        "{description}"
    );

    let html = reqwest::get(format!("{}/api/docs", root.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("/docs/openapi.json"));

    let (status, health) = raw.get("/health", None).await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");

    let metrics = reqwest::get(format!("{}/metrics", root.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"oakestra_root_http_requests_total{method="POST",route="/api/application",status="200"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains("oakestra_root_http_request_duration_seconds_bucket"));
}

on_every_backend!(
    clientsrvr_application_and_services_crud,
    trailing_slashes_docs_metrics_health_and_clusters
);
