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
