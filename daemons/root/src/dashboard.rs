//! The web dashboard (DESIGN.md §8) and the static files of the API documentation: embedded
//! in the binary and served by the REST API's server, so neither needs the internet or a
//! separate web server.
//!
//! The dashboard (`dashboard/` beside `src/`) is plain HTML, CSS and JavaScript modules with
//! no build step: it calls the public REST API from the browser with the same tokens, roles
//! and errors as every other client. `/` is its page; its files are under `/dashboard/`.
//! Swagger UI (`assets/swagger-ui/`, vendored from npm `swagger-ui-dist`, kept gzip-compressed)
//! is under `/api/docs/`.
//!
//! Every file is sent gzip-compressed to clients that accept it (the dashboard's are
//! compressed once, on first use), with an `ETag` so that a reload costs a `304`, and with
//! `Content-Security-Policy` on the HTML pages: scripts, styles and requests only from the
//! root itself.

use std::io::{Read, Write};
use std::sync::LazyLock;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, ETAG, IF_NONE_MATCH, VARY,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

/// How an embedded file is stored.
#[derive(Debug, Clone, Copy)]
pub enum Stored {
    /// As it is served.
    Plain(&'static [u8]),
    /// gzip-compressed (large vendored files).
    Gzip(&'static [u8]),
}

/// A file the root serves.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// URL path.
    pub path: &'static str,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The bytes.
    pub stored: Stored,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

macro_rules! dashboard_file {
    ($path:literal, $file:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            stored: Stored::Plain(include_bytes!(concat!("../dashboard/", $file))),
        }
    };
}

/// Every embedded file.
pub const ASSETS: &[Asset] = &[
    dashboard_file!("/", "index.html", HTML),
    dashboard_file!("/dashboard/style.css", "style.css", CSS),
    dashboard_file!("/dashboard/app.js", "app.js", JS),
    dashboard_file!("/dashboard/api.js", "api.js", JS),
    dashboard_file!("/dashboard/ui.js", "ui.js", JS),
    dashboard_file!("/dashboard/chart.js", "chart.js", JS),
    dashboard_file!("/dashboard/apps.js", "apps.js", JS),
    dashboard_file!("/dashboard/service.js", "service.js", JS),
    dashboard_file!("/dashboard/infra.js", "infra.js", JS),
    dashboard_file!("/dashboard/admin.js", "admin.js", JS),
    Asset {
        path: "/api/docs",
        content_type: HTML,
        stored: Stored::Plain(crate::openapi::SWAGGER_UI.as_bytes()),
    },
    Asset {
        path: "/api/docs/swagger-init.js",
        content_type: JS,
        stored: Stored::Plain(crate::openapi::SWAGGER_INIT.as_bytes()),
    },
    Asset {
        path: "/api/docs/swagger-ui-bundle.js",
        content_type: JS,
        stored: Stored::Gzip(include_bytes!(
            "../assets/swagger-ui/swagger-ui-bundle.js.gz"
        )),
    },
    Asset {
        path: "/api/docs/swagger-ui.css",
        content_type: CSS,
        stored: Stored::Gzip(include_bytes!("../assets/swagger-ui/swagger-ui.css.gz")),
    },
];

/// The dashboard's pages: only the root's own scripts, styles and API; no framing.
const DASHBOARD_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// Swagger UI sets inline styles; everything else as for the dashboard.
const DOCS_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// A file ready to send: its gzip form, its plain form when stored plain, its `ETag`.
struct Prepared {
    gzip: Bytes,
    plain: Option<Bytes>,
    etag: HeaderValue,
}

fn prepare(asset: &Asset) -> Prepared {
    let (stored, gzip, plain) = match asset.stored {
        Stored::Plain(bytes) => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            encoder
                .write_all(bytes)
                .expect("compressing into memory does not fail");
            let gzip = encoder
                .finish()
                .expect("compressing into memory does not fail");
            (bytes, Bytes::from(gzip), Some(Bytes::from_static(bytes)))
        }
        Stored::Gzip(bytes) => (bytes, Bytes::from_static(bytes), None),
    };
    let digest = Sha256::digest(stored);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    Prepared {
        gzip,
        plain,
        etag: HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header"),
    }
}

static PREPARED: LazyLock<Vec<Prepared>> = LazyLock::new(|| ASSETS.iter().map(prepare).collect());

/// Whether `Accept-Encoding` allows gzip (`gzip` or `*`, not with `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                let p = p.trim().replace(' ', "");
                p == "q=0" || p == "q=0.0" || p == "q=0.00" || p == "q=0.000"
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

/// Whether `If-None-Match` names `etag`.
fn not_modified(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let Ok(etag) = etag.to_str() else {
        return false;
    };
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == etag
        })
}

fn gunzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len() * 4);
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out)?;
    Ok(out)
}

/// The answer for asset `index` to a request with `headers`.
fn respond(index: usize, headers: &HeaderMap) -> Response {
    let asset = &ASSETS[index];
    let prepared = &PREPARED[index];
    let mut builder = Response::builder()
        .header(CONTENT_TYPE, asset.content_type)
        .header(CACHE_CONTROL, "no-cache")
        .header(ETAG, prepared.etag.clone())
        .header(VARY, "Accept-Encoding")
        .header(HeaderName::from_static("x-content-type-options"), "nosniff");
    if asset.content_type == HTML {
        let csp = if asset.path == "/" {
            DASHBOARD_CSP
        } else {
            DOCS_CSP
        };
        builder = builder
            .header(HeaderName::from_static("content-security-policy"), csp)
            .header(HeaderName::from_static("referrer-policy"), "no-referrer");
    }
    if not_modified(headers, &prepared.etag) {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .expect("valid response");
    }
    let body = if accepts_gzip(headers) {
        builder = builder.header(CONTENT_ENCODING, "gzip");
        prepared.gzip.clone()
    } else if let Some(plain) = &prepared.plain {
        plain.clone()
    } else {
        // A client without gzip (rare: every browser has it): decompress for it.
        match gunzip(&prepared.gzip) {
            Ok(plain) => Bytes::from(plain),
            Err(e) => {
                return crate::error::ApiError::internal(format!(
                    "the embedded file {} cannot be decompressed: {e}",
                    asset.path
                ))
                .into_response();
            }
        }
    };
    builder.body(Body::from(body)).expect("valid response")
}

/// The routes of every embedded file.
pub fn routes() -> Router {
    ASSETS
        .iter()
        .enumerate()
        .fold(Router::new(), |router, (index, asset)| {
            router.route(
                asset.path,
                get(move |headers: HeaderMap| async move { respond(index, &headers) }),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn gzip_negotiation() {
        assert!(accepts_gzip(&headers(&[(
            "accept-encoding",
            "gzip, deflate, br"
        )])));
        assert!(accepts_gzip(&headers(&[(
            "accept-encoding",
            "br;q=1.0, gzip;q=0.8"
        )])));
        assert!(accepts_gzip(&headers(&[("accept-encoding", "*")])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "gzip;q=0")])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "identity")])));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn etags_match_with_and_without_weak_prefix() {
        let etag = HeaderValue::from_static("\"abc\"");
        assert!(not_modified(
            &headers(&[("if-none-match", "\"abc\"")]),
            &etag
        ));
        assert!(not_modified(
            &headers(&[("if-none-match", "W/\"abc\", \"x\"")]),
            &etag
        ));
        assert!(!not_modified(
            &headers(&[("if-none-match", "\"abd\"")]),
            &etag
        ));
    }

    #[test]
    fn every_stored_gzip_file_decompresses() {
        for asset in ASSETS {
            if let Stored::Gzip(bytes) = asset.stored {
                let plain = gunzip(bytes).unwrap();
                assert!(plain.len() > bytes.len(), "{}", asset.path);
            }
        }
    }
}
