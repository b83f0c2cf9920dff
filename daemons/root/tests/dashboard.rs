//! The dashboard and the API docs' files, against the real binary: `/` and every file it
//! loads are served with their content types, gzip-compressed when the client accepts it,
//! revalidated by `ETag`, under a Content-Security-Policy that allows only the root itself;
//! no embedded file loads anything from another host (the docs work offline); the login
//! answer says when Admin still has the default password (the dashboard's banner); and
//! `--dashboard-listen` serves the dashboard and the API on a second address.

#[macro_use]
mod api_common;

use std::io::Read;
use std::net::TcpListener;

use api_common::{Backend, Root};
use reqwest::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, ETAG, IF_NONE_MATCH};

struct Fetched {
    status: u16,
    content_type: String,
    encoding: Option<String>,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Fetched {
    /// The body as text, decompressed when it came gzip-encoded.
    fn text(&self) -> String {
        let bytes = if self.encoding.as_deref() == Some("gzip") {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(self.body.as_slice())
                .read_to_end(&mut out)
                .expect("a valid gzip body");
            out
        } else {
            self.body.clone()
        };
        String::from_utf8(bytes).expect("UTF-8 text")
    }
}

async fn fetch(base: &str, path: &str, gzip: bool) -> Fetched {
    let mut req = reqwest::Client::new().get(format!("{base}{path}"));
    if gzip {
        req = req.header(ACCEPT_ENCODING, "gzip, deflate, br");
    }
    let resp = req.send().await.expect("request");
    let header = |name| {
        resp.headers()
            .get(name)
            .map(|v: &reqwest::header::HeaderValue| v.to_str().unwrap().to_owned())
    };
    Fetched {
        status: resp.status().as_u16(),
        content_type: header(CONTENT_TYPE).unwrap_or_default(),
        encoding: header(CONTENT_ENCODING),
        headers: resp.headers().clone(),
        body: resp.bytes().await.expect("body").to_vec(),
    }
}

/// The values of `attr="/…"` in an HTML page (the root's own files it loads).
fn local_refs(html: &str, attr: &str) -> Vec<String> {
    let needle = format!("{attr}=\"/");
    html.match_indices(&needle)
        .map(|(i, _)| {
            let rest = &html[i + needle.len() - 1..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .collect()
}

/// The modules a dashboard script imports (`from './x.js'`), as paths.
fn imports(js: &str) -> Vec<String> {
    js.match_indices("from './")
        .map(|(i, _)| {
            let rest = &js[i + "from './".len()..];
            format!("/dashboard/{}", &rest[..rest.find('\'').unwrap()])
        })
        .collect()
}

/// URLs to other hosts in a text; the SVG namespace name is a name, not something fetched.
fn external_urls(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for scheme in ["http://", "https://", "//unpkg", "//cdn"] {
        for (i, _) in text.match_indices(scheme) {
            let url: String = text[i..]
                .chars()
                .take_while(|c| !c.is_whitespace() && !"'\"`)<>".contains(*c))
                .collect();
            if url != "http://www.w3.org/2000/svg" {
                found.push(url);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_files_are_served_embedded_with_types_and_no_external_urls() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::start(dir.path());
    let base = root.url.clone();

    // The page, compressed for a browser and plain for a client without gzip.
    let page = fetch(&base, "/", true).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.content_type, "text/html; charset=utf-8");
    assert_eq!(page.encoding.as_deref(), Some("gzip"));
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(
        csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert_eq!(page.headers["x-content-type-options"], "nosniff");
    let html = page.text();
    assert!(html.contains("<main id=\"main\""), "{html}");
    let plain = fetch(&base, "/", false).await;
    assert_eq!(plain.encoding, None);
    assert_eq!(String::from_utf8(plain.body.clone()).unwrap(), html);
    assert!(page.body.len() < plain.body.len());

    // A reload with the ETag costs a 304 and no body.
    let etag = page.headers[ETAG].to_str().unwrap().to_owned();
    let again = reqwest::Client::new()
        .get(format!("{base}/"))
        .header(IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 304);
    assert!(again.bytes().await.unwrap().is_empty());

    // Every file the page loads, and every module those import, with its type.
    let mut files = local_refs(&html, "src");
    files.extend(local_refs(&html, "href"));
    let mut checked = Vec::new();
    let mut texts = vec![("/".to_owned(), html.clone())];
    while let Some(path) = files.pop() {
        if checked.contains(&path) || path.starts_with("/api/docs") {
            continue;
        }
        let file = fetch(&base, &path, true).await;
        assert_eq!(file.status, 200, "{path}");
        let expected = if path.ends_with(".js") {
            "text/javascript; charset=utf-8"
        } else if path.ends_with(".css") {
            "text/css; charset=utf-8"
        } else {
            panic!("unexpected file {path} in the page");
        };
        assert_eq!(file.content_type, expected, "{path}");
        assert_eq!(file.encoding.as_deref(), Some("gzip"), "{path}");
        let text = file.text();
        if path.ends_with(".js") {
            files.extend(imports(&text));
        }
        texts.push((path.clone(), text));
        checked.push(path);
    }
    for module in [
        "app", "api", "ui", "chart", "apps", "service", "infra", "admin",
    ] {
        assert!(
            checked.contains(&format!("/dashboard/{module}.js")),
            "module {module} not reached from the page: {checked:?}"
        );
    }
    assert!(checked.contains(&"/dashboard/style.css".to_owned()));

    // Nothing the dashboard loads or calls is on another host.
    for (path, text) in &texts {
        assert_eq!(external_urls(text), Vec::<String>::new(), "{path}");
    }

    // An unknown file is the API's JSON 404.
    let missing = fetch(&base, "/dashboard/nope.js", false).await;
    assert_eq!(missing.status, 404);
    assert!(missing.content_type.starts_with("application/json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_docs_work_offline_from_embedded_swagger_ui() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::start(dir.path());
    let base = root.url.clone();

    let page = fetch(&base, "/api/docs", true).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.content_type, "text/html; charset=utf-8");
    let html = page.text();
    assert_eq!(external_urls(&html), Vec::<String>::new(), "{html}");
    let scripts = local_refs(&html, "src");
    assert_eq!(
        scripts,
        [
            "/api/docs/swagger-ui-bundle.js",
            "/api/docs/swagger-init.js"
        ]
    );
    assert_eq!(
        local_refs(&html, "href"),
        ["/api/docs/swagger-ui.css", "/docs/openapi.json"]
    );

    let init = fetch(&base, "/api/docs/swagger-init.js", true).await;
    assert_eq!(init.content_type, "text/javascript; charset=utf-8");
    let init = init.text();
    assert!(init.contains("\"/docs/openapi.json\"") && init.contains("validatorUrl: null"));
    assert_eq!(external_urls(&init), Vec::<String>::new());

    // The vendored bundle: stored compressed, sent as it is to a browser, decompressed for
    // a client without gzip.
    let bundle = fetch(&base, "/api/docs/swagger-ui-bundle.js", true).await;
    assert_eq!(bundle.status, 200);
    assert_eq!(bundle.content_type, "text/javascript; charset=utf-8");
    assert_eq!(bundle.encoding.as_deref(), Some("gzip"));
    let text = bundle.text();
    assert!(text.contains("SwaggerUIBundle"));
    for cdn in ["unpkg.com", "jsdelivr", "cdnjs", "googleapis"] {
        assert!(!text.contains(cdn), "the bundle refers to {cdn}");
    }
    let plain = fetch(&base, "/api/docs/swagger-ui-bundle.js", false).await;
    assert_eq!(plain.encoding, None);
    assert_eq!(plain.body.len(), text.len());
    let css = fetch(&base, "/api/docs/swagger-ui.css", true).await;
    assert_eq!(css.content_type, "text/css; charset=utf-8");
    assert!(css.text().contains(".swagger-ui"));

    // Both with and without the trailing slash, as every path of the root.
    assert_eq!(fetch(&base, "/api/docs/", false).await.status, 200);
    // The document the page shows.
    let spec = fetch(&base, "/docs/openapi.json", false).await;
    assert_eq!(spec.status, 200);
    let spec: serde_json::Value = serde_json::from_slice(&spec.body).unwrap();
    assert!(spec["paths"]["/api/auth/login"]["post"].is_object());
    let login = &spec["components"]["schemas"]["LoginResponse"]["properties"];
    assert!(login["default_password"].is_object(), "{login}");
    // Request bodies defined once in oakestra-proto keep the names the spec always had.
    let schemas = &spec["components"]["schemas"];
    for (name, field) in [
        ("RegisterRequest", "password"),
        ("UserUpdateRequest", "roles"),
        ("ApplicationUpdateRequest", "application_namespace"),
        ("PasswordChange", "oldPassword"),
    ] {
        // A flattened map makes the schema an `allOf`: look for the property anywhere in it.
        let schema = &schemas[name];
        let has = |s: &serde_json::Value| s["properties"][field].is_object();
        let found = has(schema)
            || schema["allOf"]
                .as_array()
                .is_some_and(|parts| parts.iter().any(has));
        assert!(found, "{name}.{field} missing: {schema}");
    }
}

on_every_backend!(login_says_when_admin_still_has_the_default_password);

async fn login_says_when_admin_still_has_the_default_password(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::start_on(dir.path(), backend).await;
    let raw = root.raw();
    let login = |password: &'static str| {
        let raw = &raw;
        async move {
            raw.post(
                "/api/auth/login",
                None,
                &format!(r#"{{"username":"Admin","password":"{password}"}}"#),
            )
            .await
        }
    };
    let (status, body) = login("Admin").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["default_password"], true);
    let token = body["token"].as_str().unwrap().to_owned();

    // Another user is never flagged, whatever its password.
    let (status, body) = raw
        .post(
            "/api/auth/register",
            Some(&token),
            r#"{"name":"alice","password":"Admin","roles":["Application_Provider"]}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = raw
        .post(
            "/api/auth/login",
            None,
            r#"{"username":"alice","password":"Admin"}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["default_password"], false);

    let (status, body) = raw
        .post(
            "/api/user/Admin",
            Some(&token),
            r#"{"oldPassword":"Admin","newPassword":"a better one"}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = login("a better one").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["default_password"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_listen_serves_the_dashboard_and_its_api_on_a_second_address() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let root = Root::start_on_with_args(
        dir.path(),
        Backend::Redb,
        &["--dashboard-listen", &format!("127.0.0.1:{port}")],
    )
    .await;
    let second = format!("http://127.0.0.1:{port}");
    assert_ne!(second, root.url);
    let page = fetch(&second, "/", false).await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("/dashboard/app.js"));
    let (status, body) = api_common::Raw {
        http: reqwest::Client::new(),
        base: second,
    }
    .post(
        "/api/auth/login",
        None,
        r#"{"username":"Admin","password":"Admin"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["token"].is_string());
}
