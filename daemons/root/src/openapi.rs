//! The API documentation pages. The OpenAPI document itself is generated from the handlers
//! (`#[utoipa::path]` on each, collected by [`crate::api::api_routes`]), so it cannot drift
//! from the code.
//!
//! Swagger UI at `/api/docs` is a small HTML page that loads the Swagger UI scripts from a
//! CDN *in the user's browser* and points them at `/docs/openapi.json`: the root ships no UI
//! assets (they cannot be fetched at build time here). Without internet access the page
//! still links the raw spec.

/// The `/api/docs` page.
pub const SWAGGER_UI: &str = r##"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Oakestra-rs root API</title>
  <link rel="stylesheet" href="https://unpkg.com/swagger-ui-dist@5/swagger-ui.css">
</head>
<body>
  <noscript>This page needs JavaScript. The OpenAPI document is at <a href="/docs/openapi.json">/docs/openapi.json</a>.</noscript>
  <div id="swagger-ui">
    <p style="font-family:sans-serif;margin:2em">Loading Swagger UI from unpkg.com&hellip; If it does not
    appear (no internet access), read the OpenAPI document at <a href="/docs/openapi.json">/docs/openapi.json</a>.</p>
  </div>
  <script src="https://unpkg.com/swagger-ui-dist@5/swagger-ui-bundle.js" crossorigin></script>
  <script>
    if (window.SwaggerUIBundle) {
      window.ui = SwaggerUIBundle({ url: "/docs/openapi.json", dom_id: "#swagger-ui", deepLinking: true });
    }
  </script>
</body>
</html>
"##;
