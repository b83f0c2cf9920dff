//! Issue 19: the OpenAPI document describes what the server does — what schemathesis
//! (tests/schemathesis) found, pinned here one by one: 401 on every protected operation, the
//! descriptor's required `sla_version`, the documented ranges refused outside them, non-empty
//! names, and the answers that were a 400 for a schema-valid request.

#[allow(unused_macros)]
mod api_common;

use api_common::{Root, assert_error, one_service_app};
use serde_json::{Value, json};

fn param<'a>(spec: &'a Value, path: &str, method: &str, name: &str) -> &'a Value {
    spec["paths"][path][method]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_says_what_the_server_does() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::start(dir.path());
    let admin = root.admin().await;
    let token = admin.access_token().await.unwrap();
    let raw = root.raw();
    let (status, spec) = raw.get("/docs/openapi.json", None).await;
    assert_eq!(status, 200);

    // Every operation that needs a token documents the 401 it answers without one.
    let mut secured = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op["security"].as_array().is_some_and(|s| !s.is_empty()) {
                secured += 1;
                assert!(
                    op["responses"].get("401").is_some(),
                    "{method} {path} does not document its 401"
                );
            }
        }
    }
    assert!(secured > 30, "{secured} protected operations");
    let (status, _) = raw
        .send(reqwest::Method::PUT, "/api/service/x", None, None)
        .await;
    assert_eq!(status, 401);

    // The descriptor: sla_version is required, names have their syntax, lists their limits.
    let sla = &spec["paths"]["/api/application"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"];
    assert_eq!(sla["properties"]["sla_version"]["enum"], json!(["v2.0"]));
    assert!(
        sla["required"]
            .as_array()
            .unwrap()
            .contains(&json!("sla_version"))
    );
    let app = &sla["properties"]["applications"]["items"];
    assert_eq!(
        app["properties"]["application_name"]["pattern"],
        "^[a-zA-Z0-9]{1,30}$"
    );
    let ms = &app["properties"]["microservices"]["items"];
    assert_eq!(ms["properties"]["cmd"]["maxItems"], 1024);
    assert_eq!(ms["properties"]["memory"]["minimum"], 0);
    let service_sla = &spec["paths"]["/api/service"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"];
    assert!(
        service_sla["properties"]["applications"]["items"]["required"]
            .as_array()
            .unwrap()
            .contains(&json!("applicationID"))
    );
    let (status, body) = raw
        .post(
            "/api/application",
            Some(&token),
            r#"{"customerID":"Admin","applications":[]}"#,
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["violations"][0]["path"], "/sla_version");

    // Documented ranges, refused outside them.
    let limit = param(&spec, "/api/events", "get", "limit");
    assert_eq!(
        (&limit["schema"]["minimum"], &limit["schema"]["maximum"]),
        (&json!(1), &json!(10000))
    );
    assert_eq!(
        raw.get("/api/events?limit=10000", Some(&token)).await.0,
        200
    );
    for bad in ["0", "10001"] {
        assert_error(
            &raw.get(&format!("/api/events?limit={bad}"), Some(&token))
                .await,
            400,
        );
    }
    let count = param(&spec, "/api/service/{service_id}/instance", "post", "count");
    assert_eq!(
        (&count["schema"]["minimum"], &count["schema"]["maximum"]),
        (&json!(1), &json!(10000))
    );
    // The replicas body says the range the server enforces (a schemathesis finding).
    let replicas = &spec["components"]["schemas"]["ScaleRequest"]["properties"]["replicas"];
    assert_eq!(
        (&replicas["minimum"], &replicas["maximum"]),
        (&json!(0), &json!(10000)),
        "{replicas}"
    );
    let tail = param(
        &spec,
        "/api/service/{service_id}/instance/{instance_number}/logs",
        "get",
        "tail",
    );
    assert_eq!(
        (&tail["schema"]["minimum"], &tail["schema"]["maximum"]),
        (&json!(1), &json!(10000))
    );
    let number = param(
        &spec,
        "/api/service/{service_id}/instance/{instance_number}",
        "delete",
        "instance_number",
    );
    assert_eq!(number["schema"]["minimum"], -1);

    // Non-empty names and passwords, role names.
    let schemas = &spec["components"]["schemas"];
    assert_eq!(
        schemas["RegisterRequest"]["properties"]["name"]["minLength"],
        1
    );
    assert_eq!(
        schemas["RegisterRequest"]["properties"]["password"]["minLength"],
        1
    );
    assert_eq!(
        schemas["OrganizationRequest"]["properties"]["name"]["pattern"],
        "\\S"
    );
    assert_eq!(
        schemas["RegisterRequest"]["properties"]["roles"]["items"]["enum"],
        json!([
            "Admin",
            "Organization_Admin",
            "Application_Provider",
            "Infrastructure_Provider"
        ])
    );

    // Answers that were a 400 to a schema-valid request.
    let (status, body) = raw
        .post(
            "/api/user/Admin",
            Some(&token),
            r#"{"oldPassword":"wrong","newPassword":"x"}"#,
        )
        .await;
    assert_eq!(status, 403, "wrong old password: {body}");
    let (status, body) = raw
        .post(
            "/api/organization",
            Some(&token),
            r#"{"name":"o1","member":[{"user_id":"Admin","roles":[]}]}"#,
        )
        .await;
    assert_eq!(status, 404, "unknown member: {body}");
    let (status, body) = raw.post("/api/join-tokens", Some(&token), "null").await;
    assert_eq!(status, 200, "null body: {body}");
    assert_eq!(body["name"], "cluster");
    assert_error(&raw.post("/api/join-tokens", Some(&token), "[]").await, 400);
    // Unknown fields are refused, each named by its path; the document says so.
    assert_eq!(sla["additionalProperties"], false);
    assert_eq!(ms["additionalProperties"], false);
    let mut typo = one_service_app("typoapp", "web", None);
    typo["applications"][0]["microservices"][0]["memroy"] = json!(100);
    typo["vendor"] = json!("x");
    let (status, body) = raw
        .post("/api/application", Some(&token), &typo.to_string())
        .await;
    assert_eq!(status, 422, "{body}");
    let paths: Vec<&str> = body["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/vendor", "/applications/0/microservices/0/memroy"]);
    assert!(
        body["message"].as_str().unwrap().contains("violations"),
        "{body}"
    );
    // Oakestra's published examples are accepted as they are.
    for (name, text) in [
        (
            "clientsrvr",
            include_str!("../../../examples/sla-clientsrvr-container.json"),
        ),
        (
            "tail",
            include_str!("../../../examples/sla-clientsrvr-tail.json"),
        ),
        (
            "unikernel",
            include_str!("../../../examples/sla-nginx-unikernel.json"),
        ),
    ] {
        let mut sla: Value = serde_json::from_str(text).unwrap();
        // Unique names and addresses for this user: only the application names change.
        for (i, app) in sla["applications"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .enumerate()
        {
            app["application_name"] = json!(format!("{name}{i}"));
            if let Some(list) = app["microservices"].as_array_mut() {
                for ms in list {
                    ms.as_object_mut().unwrap().remove("addresses");
                }
            }
        }
        let (status, body) = raw
            .post("/api/application", Some(&token), &sla.to_string())
            .await;
        assert_eq!(status, 200, "{name}: {body}");
    }

    // A descriptor the document accepts and the server too.
    let (status, body) = raw
        .post(
            "/api/application",
            Some(&token),
            &one_service_app("docapp", "web", None).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}
