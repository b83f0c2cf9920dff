//! Typed async client of the Oakestra-rs root REST API (DESIGN.md §4.1). It also works against
//! an Oakestra root, within the limits of Oakestra's quirks.
//!
//! ```no_run
//! # async fn demo() -> Result<(), oakestra_client::ClientError> {
//! let client = oakestra_client::Client::new("http://127.0.0.1:10000")?;
//! client.login("Admin", "Admin").await?;
//! let sla: serde_json::Value = serde_json::from_str(include_str!(
//!     "../../examples/sla-clientsrvr-container.json"
//! )).unwrap();
//! let apps = client.create_applications(&sla).await?;
//! for id in &apps[0].microservices {
//!     client.deploy_instance(&id.to_string()).await?;
//! }
//! # Ok(()) }
//! ```
//!
//! The client logs in once, refreshes the access token shortly before it expires (and once
//! more on a 401), and logs in again with the stored credentials when the refresh token is
//! no longer accepted. Every error from the root carries its status and message.

#![deny(missing_docs)]

mod accounts;
mod events;
mod infrastructure;
mod workloads;
use oakestra_proto::rest as types;

pub use events::{Event, EventQuery, EventStream};
pub use types::{InstanceUsage, ServiceUsage};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oakestra_core::model::{ApplicationRecord, ServiceRecord};
use oakestra_core::sla::Violation;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Mutex;

pub use types::{
    ApplicationUpdate, Cluster, ClusterWorker, CreatedJoinToken, DeployAnswer, JoinTokenInfo,
    Member, Message, NewUser, Organization, OrganizationSpec, ScaleAnswer, ServiceCreation,
    ServiceOutcome, Tokens, User, UserUpdate,
};
use types::{LoginRequest, NewJoinToken, PasswordChange, Refreshed, Roles};

/// Refresh the access token when it has less than this left.
const REFRESH_MARGIN_SECS: u64 = 15;

/// What went wrong talking to the root.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The root answered with an error status.
    #[error("{method} {path}: {status}: {message}")]
    Api {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
        /// HTTP status.
        status: u16,
        /// The root's message (or the raw body when it sent none).
        message: String,
        /// SLA violations of a 422 answer.
        violations: Vec<Violation>,
    },
    /// The root could not be reached or the connection broke.
    #[error("cannot reach the root orchestrator at {url}: {source}")]
    Transport {
        /// Request URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The answer is not what the API documents.
    #[error("unexpected answer to {method} {path}: {message}")]
    Decode {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
        /// What did not fit.
        message: String,
    },
    /// The base URL is not usable.
    #[error("invalid root URL {0:?}: expected e.g. http://127.0.0.1:10000")]
    BadUrl(String),
    /// A call that needs a token before `login` or `set_tokens`.
    #[error("not logged in: call login() first")]
    NotLoggedIn,
}

impl ClientError {
    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The root's message of an error answer.
    pub fn message(&self) -> Option<&str> {
        match self {
            ClientError::Api { message, .. } => Some(message),
            _ => None,
        }
    }

    /// The SLA violations of a 422 answer (empty otherwise).
    pub fn violations(&self) -> &[Violation] {
        match self {
            ClientError::Api { violations, .. } => violations,
            _ => &[],
        }
    }
}

/// Result of a client call.
pub type Result<T> = std::result::Result<T, ClientError>;

#[derive(Debug, Clone)]
struct Credentials {
    username: String,
    password: String,
    organization: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct Session {
    credentials: Option<Credentials>,
    access: Option<String>,
    access_exp: u64,
    refresh: Option<String>,
}

/// A connection to one root orchestrator. Cheap to share behind an `Arc`; calls may run
/// concurrently.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    session: Mutex<Session>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The `exp` claim of a JWT, read without checking the signature (only the root can check
/// it; the client just needs to know when to refresh).
fn token_expiry(token: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64url_decode(payload)?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    value.get("exp")?.as_u64()
}

fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Percent-encodes a path segment (ids and user names are plain, but be safe).
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// A client of the root at `base_url` (e.g. `http://127.0.0.1:10000`), not logged in.
    pub fn new(base_url: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|source| ClientError::Transport {
                url: base_url.to_owned(),
                source,
            })?;
        Self::with_http(base_url, http)
    }

    /// Like [`Client::new`] for a root serving TLS with a certificate signed by the CA in
    /// `ca_pem` (PEM; a self-signed certificate is its own CA): only that CA is trusted for
    /// this client (the certificate is pinned), not the system's.
    pub fn with_ca_cert(base_url: &str, ca_pem: &[u8]) -> Result<Self> {
        let transport = |source| ClientError::Transport {
            url: base_url.to_owned(),
            source,
        };
        let ca = reqwest::Certificate::from_pem(ca_pem).map_err(transport)?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .build()
            .map_err(transport)?;
        Self::with_http(base_url, http)
    }

    /// Like [`Client::new`] with a caller-configured `reqwest` client.
    pub fn with_http(base_url: &str, http: reqwest::Client) -> Result<Self> {
        let base = base_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::BadUrl(base_url.to_owned()));
        }
        Ok(Self {
            http,
            base,
            session: Mutex::new(Session::default()),
        })
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Logs in to organization `root` and keeps the tokens (and the credentials, to log in
    /// again when the refresh token is refused).
    pub async fn login(&self, username: &str, password: &str) -> Result<Tokens> {
        self.login_to(username, password, None).await
    }

    /// Logs in to `organization` (its name).
    pub async fn login_to(
        &self,
        username: &str,
        password: &str,
        organization: Option<&str>,
    ) -> Result<Tokens> {
        let credentials = Credentials {
            username: username.to_owned(),
            password: password.to_owned(),
            organization: organization.map(str::to_owned),
        };
        let tokens = self.fetch_tokens(&credentials).await?;
        let mut session = self.session.lock().await;
        session.credentials = Some(credentials);
        session.access_exp = token_expiry(&tokens.token).unwrap_or(u64::MAX);
        session.access = Some(tokens.token.clone());
        session.refresh = Some(tokens.refresh_token.clone());
        Ok(tokens)
    }

    async fn fetch_tokens(&self, c: &Credentials) -> Result<Tokens> {
        let body = LoginRequest {
            username: c.username.clone(),
            password: c.password.clone(),
            organization_name: c.organization.clone(),
        };
        self.send(Method::POST, "/api/auth/login", Some(&body), None)
            .await
    }

    /// Uses tokens obtained elsewhere (no credentials: when both expire, calls fail with 401).
    pub async fn set_tokens(&self, access: &str, refresh: Option<&str>) {
        let mut session = self.session.lock().await;
        session.access_exp = token_expiry(access).unwrap_or(u64::MAX);
        session.access = Some(access.to_owned());
        session.refresh = refresh.map(str::to_owned);
    }

    /// After the caller's own password change: the answer's tokens replace the session's, and
    /// stored credentials of `username` get the new password.
    pub(crate) async fn password_changed(&self, username: &str, new: &str, answer: &Value) {
        let mut session = self.session.lock().await;
        if let Some(c) = session.credentials.as_mut()
            && c.username == username
        {
            new.clone_into(&mut c.password);
        }
        if let Some(token) = answer.get("token").and_then(Value::as_str) {
            session.access_exp = token_expiry(token).unwrap_or(u64::MAX);
            session.access = Some(token.to_owned());
            if let Some(refresh) = answer.get("refresh_token").and_then(Value::as_str) {
                session.refresh = Some(refresh.to_owned());
            }
        }
    }

    /// The current access token, if logged in.
    pub async fn access_token(&self) -> Option<String> {
        self.session.lock().await.access.clone()
    }

    /// Exchanges the refresh token for a new access token now (the client also does this by
    /// itself when needed).
    pub async fn refresh(&self) -> Result<String> {
        let mut session = self.session.lock().await;
        self.renew(&mut session).await
    }

    /// Gets a new access token: with the refresh token, else (or when it is refused) with the
    /// stored credentials.
    async fn renew(&self, session: &mut Session) -> Result<String> {
        let mut last_error = ClientError::NotLoggedIn;
        if let Some(refresh) = session.refresh.clone() {
            match self
                .send::<Refreshed, ()>(Method::POST, "/api/auth/refresh", None, Some(&refresh))
                .await
            {
                Ok(r) => {
                    session.access_exp = token_expiry(&r.token).unwrap_or(u64::MAX);
                    session.access = Some(r.token.clone());
                    return Ok(r.token);
                }
                Err(e @ ClientError::Api { .. }) => last_error = e,
                Err(e) => return Err(e),
            }
        }
        if let Some(credentials) = session.credentials.clone() {
            let tokens = self.fetch_tokens(&credentials).await?;
            session.access_exp = token_expiry(&tokens.token).unwrap_or(u64::MAX);
            session.access = Some(tokens.token.clone());
            session.refresh = Some(tokens.refresh_token);
            return Ok(tokens.token);
        }
        Err(last_error)
    }

    /// A usable access token, refreshed if it is about to expire.
    async fn current_token(&self) -> Result<String> {
        let mut session = self.session.lock().await;
        match &session.access {
            Some(token) if session.access_exp > now_secs() + REFRESH_MARGIN_SECS => {
                Ok(token.clone())
            }
            Some(_) => self.renew(&mut session).await,
            None if session.credentials.is_some() => self.renew(&mut session).await,
            None => Err(ClientError::NotLoggedIn),
        }
    }

    /// An authenticated call of any endpoint (for endpoints this client has no method for).
    pub async fn call<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T> {
        let token = self.current_token().await?;
        match self.send(method.clone(), path, body, Some(&token)).await {
            Err(ClientError::Api { status: 401, .. }) => {
                // The token was refused (expired early, root restarted with another key, …):
                // renew once and retry.
                let token = {
                    let mut session = self.session.lock().await;
                    if session.access.as_deref() == Some(token.as_str()) {
                        self.renew(&mut session).await?
                    } else {
                        session.access.clone().ok_or(ClientError::NotLoggedIn)?
                    }
                };
                self.send(method, path, body, Some(&token)).await
            }
            other => other,
        }
    }

    async fn send<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        token: Option<&str>,
    ) -> Result<T> {
        let url = format!("{}{}", self.base, path);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|source| ClientError::Transport {
                url: url.clone(),
                source,
            })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|source| ClientError::Transport {
                url: url.clone(),
                source,
            })?;
        if !status.is_success() {
            return Err(api_error(&method, path, status, &bytes));
        }
        decode(&bytes).map_err(|message| ClientError::Decode {
            method: method.to_string(),
            path: path.to_owned(),
            message,
        })
    }
}

/// The text of a logs answer: `{"lines": [...]}`, `{"logs": "<text>"}`, plain text in a JSON
/// string, or any of these double-encoded.
fn log_text(answer: Value) -> Option<String> {
    match answer {
        Value::String(text) => match serde_json::from_str::<Value>(&text) {
            Ok(inner @ Value::Object(_)) => log_text(inner),
            _ => Some(text),
        },
        Value::Object(mut map) => match map.remove("lines").or_else(|| map.remove("logs"))? {
            Value::String(text) => Some(text),
            Value::Array(lines) => Some(
                lines
                    .iter()
                    .map(|l| l.as_str().map_or_else(|| l.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            _ => None,
        },
        _ => None,
    }
}

/// Decodes a body, accepting Oakestra's double-encoded form (a JSON string holding JSON).
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, String> {
    match serde_json::from_slice::<T>(bytes) {
        Ok(v) => Ok(v),
        Err(first) => match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::String(inner)) => serde_json::from_str(&inner).map_err(|e| e.to_string()),
            _ => Err(first.to_string()),
        },
    }
}

fn api_error(method: &Method, path: &str, status: StatusCode, bytes: &[u8]) -> ClientError {
    let parsed: Option<Value> = serde_json::from_slice(bytes).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.get("message").or_else(|| v.get("msg")))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(bytes).trim().to_owned();
            if text.is_empty() {
                status.canonical_reason().unwrap_or("error").to_owned()
            } else {
                text
            }
        });
    let violations = parsed
        .as_ref()
        .and_then(|v| v.get("violations"))
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    ClientError::Api {
        method: method.to_string(),
        path: path.to_owned(),
        status: status.as_u16(),
        message,
        violations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_token_expiry() {
        // {"alg":"HS256"}.{"sub":"Admin","exp":1700000600}.sig
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJBZG1pbiIsImV4cCI6MTcwMDAwMDYwMH0.c2ln";
        assert_eq!(token_expiry(token), Some(1_700_000_600));
        assert_eq!(token_expiry("garbage"), None);
    }

    #[test]
    fn decodes_plain_and_double_encoded_bodies() {
        let plain: Vec<u32> = decode(b"[1,2]").unwrap();
        let double: Vec<u32> = decode(br#""[1,2]""#).unwrap();
        assert_eq!(plain, double);
        assert!(decode::<Vec<u32>>(b"{}").is_err());
    }

    #[test]
    fn log_answers_in_every_shape() {
        let lines = serde_json::json!({"service_id": "x", "lines": ["a", "b"]});
        assert_eq!(log_text(lines.clone()).as_deref(), Some("a\nb"));
        assert_eq!(
            log_text(Value::String(lines.to_string())).as_deref(),
            Some("a\nb")
        );
        assert_eq!(
            log_text(serde_json::json!({"logs": "a\nb"})).as_deref(),
            Some("a\nb")
        );
        assert_eq!(
            log_text(Value::String("plain".into())).as_deref(),
            Some("plain")
        );
        assert_eq!(log_text(serde_json::json!({"other": 1})), None);
        assert_eq!(log_text(serde_json::json!(3)), None);
    }

    #[test]
    fn errors_carry_message_and_violations() {
        let body = br#"{"code":422,"status":"Unprocessable Entity","message":"invalid","violations":[{"path":"/sla_version","message":"missing"}]}"#;
        let e = api_error(
            &Method::POST,
            "/api/application",
            StatusCode::UNPROCESSABLE_ENTITY,
            body,
        );
        assert_eq!(e.status(), Some(422));
        assert_eq!(e.message(), Some("invalid"));
        assert_eq!(e.violations()[0].path, "/sla_version");
        let e = api_error(&Method::GET, "/x", StatusCode::NOT_FOUND, b"");
        assert_eq!(e.message(), Some("Not Found"));
        assert!(e.to_string().contains("GET /x: 404"));
    }

    #[test]
    fn bad_urls_are_refused() {
        assert!(matches!(
            Client::new("127.0.0.1:10000"),
            Err(ClientError::BadUrl(_))
        ));
        assert_eq!(Client::new("http://h:1/").unwrap().base_url(), "http://h:1");
    }

    #[test]
    fn a_batch_answer_lists_its_instances_and_an_older_roots_its_one() {
        let batch: DeployAnswer = serde_json::from_value(serde_json::json!({
            "message": "ok",
            "instance": {"instance_number": 4, "status": "CLUSTER_SCHEDULED"},
            "instances": [
                {"instance_number": 4, "status": "CLUSTER_SCHEDULED"},
                {"instance_number": 5, "status": "NoActiveClusterWithCapacity"},
            ],
        }))
        .unwrap();
        let numbers: Vec<u32> = workloads::created_instances(batch)
            .iter()
            .map(|i| i.instance_number)
            .collect();
        assert_eq!(numbers, [4, 5]);
        let single: DeployAnswer = serde_json::from_value(serde_json::json!({
            "message": "ok",
            "instance": {"instance_number": 7, "status": "REQUESTED"},
        }))
        .unwrap();
        let created = workloads::created_instances(single);
        assert_eq!(created.len(), 1);
        assert_eq!(created[0].instance_number, 7);
        let bare: DeployAnswer =
            serde_json::from_value(serde_json::json!({"message": "ok"})).unwrap();
        assert!(workloads::created_instances(bare).is_empty());
    }

    #[test]
    fn segments_are_escaped() {
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
        assert_eq!(segment("Admin"), "Admin");
    }
}
