//! The SLA v2.0 deployment descriptor: typed model, parser and validator.
//!
//! [`parse_and_validate`] takes descriptor text and returns either the typed [`Sla`] or
//! **every** rule violation, each with the JSON pointer of the offending field:
//!
//! ```
//! let text = r#"{"sla_version":"v2.0","customerID":"Admin","applications":[{
//!     "application_name":"demo","application_namespace":"test","microservices":[{
//!     "microservice_name":"web-server","microservice_namespace":"test",
//!     "virtualization":"container","code":"nginx","port":"80:80/tcpx"}]}]}"#;
//! let errors = oakestra_core::sla::parse_and_validate(text).unwrap_err();
//! let paths: Vec<&str> = errors.violations().iter().map(|v| v.path.as_str()).collect();
//! assert_eq!(paths, [
//!     "/applications/0/microservices/0/microservice_name",
//!     "/applications/0/microservices/0/port",
//! ]);
//! ```
//!
//! The rules are listed in the crate README. A missing or unknown `sla_version` is reported
//! alone (path `/sla_version`, see [`SlaErrors::is_version_error`]), because the rules of an
//! unknown version are unknown.

mod address;
mod build;

/// The most entries each list of a descriptor may have, by its key: what one request may
/// make the root do is bounded (a longer list is a violation naming the limit).
pub const LIST_LIMITS: &[(&str, usize)] = &[
    ("applications", 1_000),
    ("microservices", 1_000),
    ("cmd", 1_024),
    ("environment", 1_024),
    ("constraints", 64),
    ("con_constraints", 64),
    ("connectivity", 64),
    ("volumes", 64),
    ("arch", 16),
];

/// The limit [`LIST_LIMITS`] sets for the list under `key`, if any.
pub fn max_entries(key: &str) -> Option<usize> {
    LIST_LIMITS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, max)| *max)
}
mod ports;
pub mod probe;
mod types;

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use address::{
    AddressError, RR_IPV4_NET, RR_IPV6_NET, check_rr_ip, check_rr_ip_v6, in_rr_ipv4_net,
    in_rr_ipv6_net,
};
pub use ports::{PORT_SYNTAX, PortMapping, PortSpec, PortSpecError, Protocol, parse_port_mappings};
pub use probe::{Probe, ProbeAction};
pub use types::{
    Addresses, Application, ConConstraint, Connectivity, Constraint, ConstraintKind, Extra,
    InstanceAddressRange, MAX_REPLICAS, Microservice, MicroserviceList, RestartPolicy, Sla,
    SlaVersion, Virtualization, Volume,
};

/// The path of the version field, where version errors are reported.
pub const VERSION_PATH: &str = "/sla_version";

/// One broken rule: where (a JSON pointer, `""` for the whole document) and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[error("{path}: {message}")]
pub struct Violation {
    /// JSON pointer (RFC 6901) of the offending value, e.g. `/applications/0/microservices/1/port`.
    pub path: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

/// Every violation found in one descriptor (never empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SlaErrors(pub Vec<Violation>);

impl SlaErrors {
    /// The violations, in document order.
    pub fn violations(&self) -> &[Violation] {
        &self.0
    }

    /// `true` when the descriptor was rejected because `sla_version` is missing or unsupported
    /// (Oakestra's "KeyError" class, distinct from schema errors).
    pub fn is_version_error(&self) -> bool {
        self.0.iter().any(|v| v.path == VERSION_PATH)
    }

    /// `true` when the text was not JSON at all.
    pub fn is_syntax_error(&self) -> bool {
        matches!(self.0.as_slice(), [v] if v.path.is_empty() && v.message.starts_with("invalid JSON"))
    }

    /// Consumes the list.
    pub fn into_violations(self) -> Vec<Violation> {
        self.0
    }
}

impl fmt::Display for SlaErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SlaErrors {}

impl IntoIterator for SlaErrors {
    type Item = Violation;
    type IntoIter = std::vec::IntoIter<Violation>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

fn parse_json(json: &str) -> Result<Value, SlaErrors> {
    serde_json::from_str(json).map_err(|e| {
        let text = e.to_string();
        // serde_json appends " at line L column C"; we state the position ourselves.
        let reason = text
            .rfind(" at line ")
            .map_or(text.as_str(), |i| &text[..i]);
        SlaErrors(vec![Violation {
            path: String::new(),
            message: format!(
                "invalid JSON at line {}, column {}: {reason}",
                e.line(),
                e.column()
            ),
        }])
    })
}

/// Parses descriptor text and validates it. Malformed JSON is one violation at path `""`
/// that names the line and column of the syntax error.
pub fn parse_and_validate(json: &str) -> Result<Sla, SlaErrors> {
    build::build_sla(parse_json(json)?)
}

/// Validates an already parsed descriptor.
pub fn validate_value(value: &Value) -> Result<Sla, SlaErrors> {
    build::build_sla(value.clone())
}

/// Like [`validate_value`] but consumes the value, saving a copy.
pub fn validate_owned(value: Value) -> Result<Sla, SlaErrors> {
    build::build_sla(value)
}

/// Parses and validates the dashboard's variant, `{"microservices": [...]}`, with the same
/// microservice rules (paths start at `/microservices`).
pub fn parse_microservices(json: &str) -> Result<MicroserviceList, SlaErrors> {
    build::build_microservice_list(parse_json(json)?)
}

/// Validates an already parsed dashboard variant (see [`parse_microservices`]).
pub fn validate_microservices_value(value: &Value) -> Result<MicroserviceList, SlaErrors> {
    build::build_microservice_list(value.clone())
}
