//! A minimal OCI distribution client: manifests (index → this platform's manifest) and blobs,
//! over HTTPS, or plain HTTP for loopback registries and the ones configured as insecure,
//! with basic auth or the bearer-token flow.

use std::collections::HashMap;
use std::sync::Mutex;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, WWW_AUTHENTICATE};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::reference::{ImageRef, PlatformSpec};

/// OCI image index.
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker manifest list.
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest.
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Username and password for one registry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
pub struct RegistryCredentials {
    /// User name.
    pub username: String,
    /// Password or access token.
    pub password: String,
}

/// A content descriptor as manifests carry it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type.
    #[serde(default)]
    pub media_type: String,
    /// `sha256:…`.
    pub digest: String,
    /// Size in bytes.
    pub size: i64,
    /// Platform, in index entries.
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// Platform of an index entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    /// `amd64`, `arm64`, …
    pub architecture: String,
    /// `linux`.
    pub os: String,
    /// `v8`, `v7`, …
    #[serde(default)]
    pub variant: Option<String>,
}

/// An image manifest.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    /// The image configuration.
    pub config: Descriptor,
    /// Layers, bottom first.
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

/// A fetched manifest with the bytes and digest containerd stores.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// Raw JSON.
    pub bytes: Vec<u8>,
    /// `sha256:` of the bytes.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Parsed.
    pub manifest: Manifest,
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in hash {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// This machine's architecture in OCI terms.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

/// The entry of an index's `manifests` that fits `platform` best; else the platforms it has,
/// for the error message.
pub fn select_manifest<'a>(
    manifests: &'a [Descriptor],
    platform: &PlatformSpec,
) -> Result<&'a Descriptor, String> {
    let entries = manifests.iter().map(|m| match &m.platform {
        Some(p) => (p.os.as_str(), p.architecture.as_str(), p.variant.as_deref()),
        None => ("", "", None),
    });
    match platform.select(entries) {
        Some(i) => Ok(&manifests[i]),
        None => Err(manifests
            .iter()
            .filter_map(|m| m.platform.as_ref())
            .map(|p| match &p.variant {
                Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                None => format!("{}/{}", p.os, p.architecture),
            })
            .collect::<Vec<_>>()
            .join(", ")),
    }
}

/// The registry client; shares bearer tokens between pulls.
#[derive(Debug)]
pub struct Registry {
    http: reqwest::Client,
    insecure: Vec<String>,
    credentials: HashMap<String, RegistryCredentials>,
    tokens: Mutex<HashMap<String, String>>,
}

impl Registry {
    /// A client; `insecure` hosts (`host:port`) are spoken to over plain HTTP, as loopback ones are.
    pub fn new(
        insecure: Vec<String>,
        credentials: HashMap<String, RegistryCredentials>,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(Self {
            http,
            insecure,
            credentials,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    fn base_url(&self, r: &ImageRef) -> String {
        let host = r.registry_host();
        let bare = host
            .rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(host, |(h, _)| h);
        let plain = bare == "localhost"
            || bare == "[::1]"
            || bare.starts_with("127.")
            || self.insecure.iter().any(|i| i == host || i == bare);
        format!("{}://{host}", if plain { "http" } else { "https" })
    }

    fn credentials_for(&self, r: &ImageRef) -> Option<&RegistryCredentials> {
        self.credentials
            .get(&r.domain)
            .or_else(|| self.credentials.get(r.registry_host()))
    }

    /// GET `path` under `/v2/<repository>/`, answering auth challenges.
    async fn get(
        &self,
        r: &ImageRef,
        path: &str,
        accept: &str,
    ) -> Result<reqwest::Response, String> {
        let url = format!("{}/v2/{}/{path}", self.base_url(r), r.repository);
        let token_key = format!("{}/{}", r.registry_host(), r.repository);
        let cached = self
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&token_key)
            .cloned();
        let url = &url;
        let send = |auth: Option<String>| {
            let mut req = self.http.get(url).header(ACCEPT, accept);
            if let Some(auth) = auth {
                req = req.header(AUTHORIZATION, auth);
            }
            async move {
                req.send().await.map_err(|e| {
                    format!(
                        "registry {} unreachable ({url}): {}",
                        r.registry_host(),
                        error_chain(&e)
                    )
                })
            }
        };
        let response = send(cached).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let auth = self.authorize(r, response.headers()).await?;
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token_key, auth.clone());
        let response = send(Some(auth)).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(format!(
                "registry {} refused the credentials for {} (401); check the registry credentials in the worker config",
                r.registry_host(),
                r.repository
            ));
        }
        Ok(response)
    }

    /// The Authorization header value answering a 401 challenge.
    async fn authorize(&self, r: &ImageRef, headers: &HeaderMap) -> Result<String, String> {
        let creds = self.credentials_for(r);
        let challenge = headers
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let (scheme, params) = challenge
            .split_once(' ')
            .unwrap_or((challenge.as_str(), ""));
        if scheme.eq_ignore_ascii_case("basic") {
            let creds = creds.ok_or_else(|| {
                format!(
                    "registry {} needs credentials for {} and none are configured",
                    r.registry_host(),
                    r.repository
                )
            })?;
            return Ok(format!(
                "Basic {}",
                base64(format!("{}:{}", creds.username, creds.password).as_bytes())
            ));
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(format!(
                "registry {} answered 401 with an unsupported challenge {challenge:?}",
                r.registry_host()
            ));
        }
        let params = parse_challenge(params);
        let realm = params.get("realm").ok_or_else(|| {
            format!(
                "registry {} sent a bearer challenge without realm",
                r.registry_host()
            )
        })?;
        let mut query: Vec<(String, String)> = Vec::new();
        if let Some(service) = params.get("service") {
            query.push(("service".into(), service.clone()));
        }
        let scope = params
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{}:pull", r.repository));
        query.push(("scope".into(), scope));
        let mut req = self.http.get(realm).query(&query);
        if let Some(c) = creds {
            req = req.basic_auth(&c.username, Some(&c.password));
        }
        let response = req.send().await.map_err(|e| {
            format!(
                "token service {realm} of {} unreachable: {}",
                r.registry_host(),
                error_chain(&e)
            )
        })?;
        if !response.status().is_success() {
            return Err(format!(
                "token service {realm} of {} refused a pull token for {} ({}); check the registry credentials",
                r.registry_host(),
                r.repository,
                response.status()
            ));
        }
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let token: Token = response
            .json()
            .await
            .map_err(|e| format!("token service {realm} sent an unreadable answer: {e}"))?;
        let token = token
            .token
            .or(token.access_token)
            .ok_or_else(|| format!("token service {realm} answered without a token"))?;
        Ok(format!("Bearer {token}"))
    }

    /// Fetches the manifest of `r` for `platform`, resolving an index to its best-fitting
    /// entry (see [`PlatformSpec::select`]). A plain manifest is taken as it is.
    pub async fn manifest(
        &self,
        r: &ImageRef,
        platform: &PlatformSpec,
    ) -> Result<FetchedManifest, String> {
        let accept = [
            MT_OCI_INDEX,
            MT_DOCKER_LIST,
            MT_OCI_MANIFEST,
            MT_DOCKER_MANIFEST,
        ]
        .join(", ");
        let (bytes, media_type) = self
            .fetch_manifest(r, r.manifest_reference(), &accept)
            .await?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("manifest of {r} is not JSON: {e}"))?;
        let media_type = value
            .get("mediaType")
            .and_then(|m| m.as_str())
            .map(str::to_string)
            .unwrap_or(media_type);
        if media_type == MT_OCI_INDEX
            || media_type == MT_DOCKER_LIST
            || value.get("manifests").is_some()
        {
            let index: Index = serde_json::from_value(value)
                .map_err(|e| format!("index of {r} is malformed: {e}"))?;
            let entry = select_manifest(&index.manifests, platform)
                .map_err(|have| format!("{r} has no {platform} image (it has {have})"))?
                .clone();
            let (bytes, media_type) = self.fetch_manifest(r, &entry.digest, &accept).await?;
            return self.parse_manifest(r, bytes, media_type);
        }
        self.parse_manifest(r, bytes, media_type)
    }

    fn parse_manifest(
        &self,
        r: &ImageRef,
        bytes: Vec<u8>,
        media_type: String,
    ) -> Result<FetchedManifest, String> {
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| format!("manifest of {r} is malformed: {e}"))?;
        let media_type = if media_type.is_empty() || media_type.starts_with("application/json") {
            MT_OCI_MANIFEST.to_string()
        } else {
            media_type
        };
        Ok(FetchedManifest {
            digest: sha256_digest(&bytes),
            bytes,
            media_type,
            manifest,
        })
    }

    async fn fetch_manifest(
        &self,
        r: &ImageRef,
        reference: &str,
        accept: &str,
    ) -> Result<(Vec<u8>, String), String> {
        let response = self
            .get(r, &format!("manifests/{reference}"), accept)
            .await?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Err(format!(
                "image {r} not found: registry {} has no manifest {reference} for {}",
                r.registry_host(),
                r.repository
            ));
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(format!(
                "registry {} answered {status} for the manifest of {r}: {}",
                r.registry_host(),
                body.trim()
            ));
        }
        let media_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("reading the manifest of {r}: {}", error_chain(&e)))?;
        Ok((bytes.to_vec(), media_type))
    }

    /// Starts downloading blob `digest`; the caller streams the body.
    pub async fn blob(&self, r: &ImageRef, digest: &str) -> Result<reqwest::Response, String> {
        let response = self.get(r, &format!("blobs/{digest}"), "*/*").await?;
        if !response.status().is_success() {
            return Err(format!(
                "registry {} answered {} for blob {digest} of {r}",
                r.registry_host(),
                response.status()
            ));
        }
        Ok(response)
    }
}

/// `key="value",key2="value2"` of a WWW-Authenticate challenge.
fn parse_challenge(params: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.split_once('"') {
                Some((v, a)) => (v.to_string(), a),
                None => (quoted.to_string(), ""),
            }
        } else {
            match after.split_once(',') {
                Some((v, a)) => (v.trim().to_string(), a),
                None => (after.trim().to_string(), ""),
            }
        };
        out.insert(key, value);
        rest = after.trim_start_matches(',').trim();
    }
    out
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An error with its sources (reqwest hides the useful part, e.g. "connection refused").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_entry_for_the_platform() {
        // As Docker Hub serves busybox's index (digests shortened), plus an attestation entry.
        let index: Index = serde_json::from_str(
            r#"{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
              {"digest":"sha256:a1","size":1,"platform":{"architecture":"amd64","os":"linux"}},
              {"digest":"sha256:a5","size":1,"platform":{"architecture":"arm","os":"linux","variant":"v5"}},
              {"digest":"sha256:a7","size":1,"platform":{"architecture":"arm","os":"linux","variant":"v7"}},
              {"digest":"sha256:a8","size":1,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}},
              {"digest":"sha256:at","size":1,"platform":{"architecture":"unknown","os":"unknown"}},
              {"digest":"sha256:np","size":1}
            ]}"#,
        )
        .unwrap();
        let pick = |p: &str| {
            select_manifest(&index.manifests, &PlatformSpec::parse(p).unwrap())
                .map(|d| d.digest.as_str())
        };
        assert_eq!(pick("linux/amd64"), Ok("sha256:a1"));
        assert_eq!(pick("linux/arm64"), Ok("sha256:a8"));
        assert_eq!(pick("linux/arm"), Ok("sha256:a7"));
        assert_eq!(pick("linux/arm/v5"), Ok("sha256:a5"));
        let err = pick("linux/s390x").unwrap_err();
        assert_eq!(
            err,
            "linux/amd64, linux/arm/v5, linux/arm/v7, linux/arm64/v8, unknown/unknown"
        );
    }

    #[test]
    fn bearer_challenges_parse() {
        let p = parse_challenge(
            r#"realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/busybox:pull");
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
    }

    #[test]
    fn loopback_and_insecure_registries_use_http() {
        let reg = Registry::new(vec!["reg.lan:5000".into()], HashMap::new()).unwrap();
        let url = |s: &str| reg.base_url(&ImageRef::parse(s).unwrap());
        assert_eq!(url("127.0.0.1:5055/a"), "http://127.0.0.1:5055");
        assert_eq!(url("localhost:5000/a"), "http://localhost:5000");
        assert_eq!(url("reg.lan:5000/a"), "http://reg.lan:5000");
        assert_eq!(url("ghcr.io/a/b"), "https://ghcr.io");
        assert_eq!(url("busybox"), "https://registry-1.docker.io");
    }

    #[test]
    fn digests_are_sha256_hex() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
