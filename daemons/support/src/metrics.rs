//! The Prometheus side of every daemon: encoding a `prometheus-client` registry and the
//! optional bearer token that protects `GET /metrics` where it listens beyond loopback
//! (`--metrics-token`, the same flag on root, cluster and worker).

use prometheus_client::registry::Registry;

/// Content type of the Prometheus text format (what the worker's hand-written metrics are).
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of `prometheus-client`'s OpenMetrics text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The registry in OpenMetrics text (empty if a collector failed to encode).
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}

/// Whether a scrape may read the metrics: always when no token is configured, otherwise only
/// with `Authorization: Bearer <token>` (`authorization` is that header's value).
pub fn authorized(token: Option<&str>, authorization: Option<&str>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let Some(given) = authorization.and_then(|v| v.trim().strip_prefix("Bearer ")) else {
        return false;
    };
    constant_time_eq(given.trim().as_bytes(), token.as_bytes())
}

/// The body of a 401 answer: what the scraper must send.
pub fn unauthorized_message(daemon: &str) -> String {
    format!("GET /metrics needs Authorization: Bearer <the {daemon}'s --metrics-token>")
}

/// Compares without stopping at the first differing byte, so the time taken does not tell an
/// attacker how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_token_means_open() {
        assert!(authorized(None, None));
        assert!(authorized(None, Some("Bearer anything")));
    }

    #[test]
    fn a_token_needs_the_exact_bearer() {
        let t = Some("s3cret");
        assert!(authorized(t, Some("Bearer s3cret")));
        assert!(authorized(t, Some(" Bearer s3cret ")));
        assert!(!authorized(t, None));
        assert!(!authorized(t, Some("Bearer s3cre")));
        assert!(!authorized(t, Some("Bearer s3cretX")));
        assert!(!authorized(t, Some("Basic s3cret")));
        assert!(!authorized(t, Some("s3cret")));
    }

    #[test]
    fn encodes_a_registry() {
        let mut registry = Registry::with_prefix("oakestra_test");
        let c = prometheus_client::metrics::counter::Counter::<u64>::default();
        c.inc();
        registry.register("things", "Things", c);
        let text = encode(&registry);
        assert!(text.contains("oakestra_test_things_total 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
