//! The API documentation pages. The OpenAPI document itself is generated from the handlers
//! (`#[utoipa::path]` on each, collected by [`crate::api::api_routes`]), so it cannot drift
//! from the code.
//!
//! Swagger UI at `/api/docs` is this page plus the Swagger UI files vendored in
//! `assets/swagger-ui/` (npm `swagger-ui-dist`, see its README there), all embedded in the
//! binary and served by [`crate::dashboard`]: the docs work with no internet access.

/// The `/api/docs` page.
pub const SWAGGER_UI: &str = r##"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Oakestra-rs root API</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="/api/docs/swagger-ui.css">
</head>
<body>
  <noscript>This page needs JavaScript. The OpenAPI document is at <a href="/docs/openapi.json">/docs/openapi.json</a>.</noscript>
  <div id="swagger-ui"></div>
  <script src="/api/docs/swagger-ui-bundle.js"></script>
  <script src="/api/docs/swagger-init.js"></script>
</body>
</html>
"##;

/// Starts Swagger UI on the generated document (a file of its own: the page's
/// Content-Security-Policy allows no inline script). No validator badge: it would call an
/// outside service.
pub const SWAGGER_INIT: &str = r##"window.ui = SwaggerUIBundle({
  url: "/docs/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null
});
"##;

use serde_json::{Value, json};

/// What the `#[utoipa::path]` annotations cannot say, added to the generated document:
///
/// * every operation that needs a token answers 401 without a valid one;
/// * role names are one of [`crate::auth::roles::ALL`];
/// * the deployment descriptors (`POST /api/application`, `POST /api/service`) have the
///   shape [`sla_schema`] describes instead of "any object".
pub fn complete(doc: &mut Value) {
    let error_body = json!({
        "description": "No token, or one that is invalid, expired or revoked",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    });
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, op) in item.iter_mut() {
                let secured = op
                    .get("security")
                    .and_then(Value::as_array)
                    .is_some_and(|s| !s.is_empty());
                if let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut)
                    && secured
                    && !responses.contains_key("401")
                {
                    responses.insert("401".into(), error_body.clone());
                }
                let sla = match (method.as_str(), path.as_str()) {
                    ("post", "/api/application") => Some(sla_schema(false)),
                    ("post", "/api/service") => Some(sla_schema(true)),
                    _ => None,
                };
                if let (Some(schema), Some(content)) = (
                    sla,
                    op.pointer_mut("/requestBody/content/application~1json"),
                ) {
                    content["schema"] = schema;
                }
            }
        }
    }
    let roles: Vec<&str> = crate::auth::roles::ALL.to_vec();
    for pointer in [
        "/components/schemas/RegisterRequest/properties/roles/items",
        "/components/schemas/MemberDoc/properties/roles/items",
        "/components/schemas/UserUpdateRequest/allOf/1/properties/roles/items",
    ] {
        if let Some(items) = doc.pointer_mut(pointer) {
            items["enum"] = json!(roles);
        }
    }
}

/// The deployment descriptor (SLA v2.0) as JSON Schema: its fields (no others: unknown fields
/// are refused, see `api/unknown_fields.rs`), required fields, name syntax, list limits ([`oakestra_core::sla::LIST_LIMITS`]) and number ranges. The rules
/// that span fields — unique microservice names, a unikernel's one kernel URL per `arch`,
/// `rr_ip` ranges, the `port` syntax ([`oakestra_core::sla::PORT_SYNTAX`]) — are checked by the
/// root and answered with 422 and every violation's path. `services`: the body of `POST
/// /api/service`, whose applications name the existing application by `applicationID`.
pub fn sla_schema(services: bool) -> Value {
    let limit = |key: &str| oakestra_core::sla::max_entries(key).unwrap_or(usize::MAX);
    let name = json!({"type": "string", "pattern": "^[a-zA-Z0-9]{1,30}$"});
    let string = json!({"type": "string"});
    let strings =
        |key: &str| json!({"type": "array", "items": {"type": "string"}, "maxItems": limit(key)});
    let any_strings = json!({"type": "array", "items": {"type": "string"}});
    let whole = json!({"type": "integer", "minimum": 0, "maximum": u64::MAX});
    let number = json!({"type": "number", "minimum": 0});
    let not_blank = json!({"type": "string", "pattern": "\\S"});
    let constraint = json!({
        "type": "object",
        "required": ["type"],
        "additionalProperties": false,
        "properties": {
            "type": string, "area": string, "cluster": string, "node": string,
            "location": string, "threshold": number, "rigidness": number,
            "convergence_time": whole, "needs": any_strings, "allowed": any_strings,
        },
    });
    let connectivity = json!({
        "type": "object",
        "required": ["target_microservice_id", "con_constraints"],
        "additionalProperties": false,
        "properties": {
            "target_microservice_id": string,
            "con_constraints": {
                "type": "array",
                "maxItems": limit("con_constraints"),
                "items": {
                    "type": "object",
                    "required": ["type", "threshold", "rigidness", "convergence_time"],
                    "additionalProperties": false,
                    "properties": {
                        "type": string, "threshold": number, "rigidness": number,
                        "convergence_time": whole,
                    },
                },
            },
        },
    });
    let addresses = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "rr_ip": string, "rr_ip_v6": string, "closest_ip": string, "closest_ip_v6": string,
            "instances": {"type": "array", "items": {
                "type": "object",
                "additionalProperties": false,
                "properties": {"from": string, "to": string, "start": string},
            }},
        },
    });
    let probe = |liveness: bool| {
        use oakestra_core::sla::probe as p;
        let port = json!({"type": "integer", "minimum": 1, "maximum": 65535, "description": "The container port"});
        let seconds = |min: f64, default: f64, what: &str| json!({"type": "number", "minimum": min, "maximum": p::MAX_INTERVAL_S, "default": default, "description": what});
        let threshold = |default: u32, what: &str| json!({"type": "integer", "minimum": 1, "maximum": p::MAX_THRESHOLD, "default": default, "description": what});
        let mut success = threshold(
            p::DEFAULT_SUCCESS_THRESHOLD,
            "Successes in a row that make a failing probe pass",
        );
        if liveness {
            success["maximum"] = json!(1);
        }
        json!({
            "type": "object",
            "description": if liveness {
                "Our extension (issue 18): the worker restarts the instance when this probe fails failure_threshold times in a row"
            } else {
                "Our extension (issue 18): the instance is left out of its service IPs' balancing until this probe passes"
            },
            "additionalProperties": false,
            "oneOf": [{"required": ["exec"]}, {"required": ["http_get"]}, {"required": ["tcp"]}],
            "properties": {
                "exec": {"type": "array", "minItems": 1, "maxItems": p::MAX_EXEC_ARGS, "items": {"type": "string", "pattern": "\\S"}, "description": "A command run in the container; exit code 0 passes"},
                "http_get": {
                    "type": "object", "required": ["port"], "additionalProperties": false,
                    "description": "GET on the instance's port; a 2xx or 3xx status passes",
                    "properties": {"port": port, "path": {"type": "string", "pattern": "^/[^\\s\\u0000-\\u001f\\u007f-\\u009f]*$", "maxLength": p::MAX_HTTP_PATH, "default": "/"}},
                },
                "tcp": {
                    "type": "object", "required": ["port"], "additionalProperties": false,
                    "description": "A TCP connection to the instance's port; accepted passes",
                    "properties": {"port": port},
                },
                "period": seconds(p::MIN_INTERVAL_S, p::DEFAULT_PERIOD_S, "Seconds between attempts"),
                "timeout": seconds(p::MIN_INTERVAL_S, p::DEFAULT_TIMEOUT_S, "Seconds an attempt may take"),
                "initial_delay": seconds(0.0, p::DEFAULT_INITIAL_DELAY_S, "Seconds after the start before the first attempt"),
                "failure_threshold": threshold(p::DEFAULT_FAILURE_THRESHOLD, "Failures in a row that make a passing probe fail"),
                "success_threshold": success,
            },
        })
    };
    let restart_policy = json!({"type": "string", "enum": oakestra_core::sla::RestartPolicy::NAMES, "description": "Our extension (issue 18): when the worker restarts an exited instance"});
    let replicas = json!({"type": "integer", "minimum": 0, "maximum": oakestra_core::sla::MAX_REPLICAS, "description": "Our extension (issue 18): instances the root keeps running"});
    let mut microservice = json!({
        "type": "object",
        "required": ["microservice_name", "microservice_namespace", "virtualization", "code"],
        "additionalProperties": false,
        "properties": {
            "microserviceID": {"type": "string", "maxLength": 0, "description": "Empty or absent: the root assigns service ids"},
            "microservice_name": name,
            "microservice_namespace": name,
            "virtualization": {"type": "string", "minLength": 1, "description": "\"container\", \"unikernel\" or \"crosvm\""},
            "code": {"type": "string", "pattern": "\\S", "description": "The container image, or comma-separated kernel URLs for unikernels"},
            "memory": whole, "vcpus": whole, "vgpus": whole, "vtpus": whole,
            "bandwidth_in": whole, "bandwidth_out": whole, "storage": whole,
            "state": string,
            "port": {"type": "string", "description": oakestra_core::sla::PORT_SYNTAX},
            "one_shot": {"type": "boolean"}, "privileged": {"type": "boolean"},
            "cmd": strings("cmd"),
            "environment": {"type": "array", "maxItems": limit("environment"), "items": {"type": "string", "pattern": "^[^=]+="}},
            "args": any_strings, "added_files": any_strings,
            "sla_violation_strategy": string, "target_node": string,
            "addresses": addresses,
            "volumes": {
                "type": "array",
                "maxItems": limit("volumes"),
                "items": {
                    "type": "object",
                    "required": ["volume_id", "csi_driver"],
                    "additionalProperties": false,
                    "properties": {"volume_id": string, "csi_driver": string, "mount_path": string, "config": {"type": "object"}},
                },
            },
            "constraints": {"type": "array", "maxItems": limit("constraints"), "items": constraint},
            "connectivity": {"type": "array", "maxItems": limit("connectivity"), "items": connectivity},
            "arch": {"type": "array", "maxItems": limit("arch"), "items": not_blank},
        },
    });
    // Our extensions (issue 18), added apart: one json! this size reaches the macro's
    // recursion limit.
    for (key, schema) in [
        ("restart_policy", restart_policy),
        ("replicas", replicas),
        ("liveness_probe", probe(true)),
        ("readiness_probe", probe(false)),
    ] {
        microservice["properties"][key] = schema;
    }
    let mut application = json!({
        "type": "object",
        "required": ["application_name", "application_namespace", "microservices"],
        "additionalProperties": false,
        "properties": {
            "applicationID": string,
            "application_name": name,
            "application_namespace": name,
            "application_desc": string,
            "microservices": {"type": "array", "maxItems": limit("microservices"), "items": microservice},
        },
    });
    if services {
        application["required"] = json!([
            "applicationID",
            "application_name",
            "application_namespace",
            "microservices"
        ]);
        application["properties"]["applicationID"] = json!({"type": "string", "minLength": 1});
    }
    json!({
        "type": "object",
        "description": "SLA v2.0 deployment descriptor (see the root README for every rule)",
        "required": ["sla_version", "customerID", "applications"],
        "additionalProperties": false,
        "properties": {
            "sla_version": {"type": "string", "enum": ["v2.0"]},
            "customerID": string,
            "applications": {"type": "array", "minItems": 1, "maxItems": limit("applications"), "items": application},
            "args": any_strings,
        },
    })
}
