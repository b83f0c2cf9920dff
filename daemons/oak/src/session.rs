//! The stored login of `oak login`: the root's address and the two tokens, in
//! `$XDG_CONFIG_HOME/oakestra/oak.json` (else `~/.config/oakestra/oak.json`, or `$OAK_CONFIG`),
//! readable only by the user (mode 0600) because the tokens are credentials. The password is
//! never stored: the refresh token (30 days) renews the access token (10 minutes), and a command
//! that renewed it writes the new one back.

use std::path::{Path, PathBuf};

use anyhow::Context;
use oakestra_client::Client;
use serde::{Deserialize, Serialize};

use crate::exit::Failure;

/// Root address used when neither `--url`, `$OAK_URL` nor a stored login names one.
pub const DEFAULT_URL: &str = "http://127.0.0.1:10000";

/// What `oak login` stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLogin {
    /// The root's REST API address.
    pub url: String,
    /// Who logged in.
    pub username: String,
    /// Access token.
    pub token: String,
    /// Refresh token.
    pub refresh_token: String,
    /// The certificate (PEM) an `https://` root is pinned to (`oak login --ca-cert`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
}

/// A client for `url`, pinned to the certificate in `ca_cert` if one is given.
pub fn client(url: &str, ca_cert: Option<&std::path::Path>) -> anyhow::Result<Client> {
    match ca_cert {
        None => Ok(Client::new(url)?),
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                Failure::usage(format!(
                    "cannot read the certificate {}: {e}",
                    path.display()
                ))
            })?;
            Ok(Client::with_ca_cert(url, &pem)?)
        }
    }
}

/// Where the login is stored.
pub fn config_path() -> Result<PathBuf, Failure> {
    if let Some(path) = std::env::var_os("OAK_CONFIG").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let dir = if let Some(xdg) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        PathBuf::from(xdg)
    } else if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        PathBuf::from(home).join(".config")
    } else {
        return Err(Failure::usage(
            "cannot tell where to keep the login: neither XDG_CONFIG_HOME nor HOME is set \
             (or set OAK_CONFIG to a file path)",
        ));
    };
    Ok(dir.join("oakestra").join("oak.json"))
}

/// The stored login, if any.
pub fn load() -> anyhow::Result<Option<StoredLogin>> {
    let path = config_path()?;
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let login = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a login stored by `oak login`; remove it or run `oak login` again",
            path.display()
        )
    })?;
    Ok(Some(login))
}

/// Stores `login` (mode 0600, written to a temporary file and renamed, so a crash never
/// leaves half a file).
pub fn save(login: &StoredLogin) -> anyhow::Result<PathBuf> {
    let path = config_path()?;
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // One temporary file per process: two `oak` commands renewing at once must not clash.
    let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
    let text = serde_json::to_string_pretty(login)? + "\n";
    write_private(&tmp, &text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Removes the stored login; `Ok(false)` when there was none.
pub fn remove() -> anyhow::Result<bool> {
    let path = config_path()?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        // The mode of `open` applies only to a new file; an old one keeps its mode otherwise.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// A client logged in with the stored tokens. [`Session::finish`] writes a renewed access
/// token back.
#[derive(Debug)]
pub struct Session {
    /// The client.
    pub client: Client,
    /// The login it started with.
    pub login: StoredLogin,
}

impl Session {
    /// The stored login's client; exit code 3 when nobody is logged in.
    pub async fn open() -> anyhow::Result<Self> {
        let Some(login) = load()? else {
            return Err(Failure::auth(
                "not logged in: run `oak login --url http://<root>:10000` first",
            )
            .into());
        };
        let client = client(&login.url, login.ca_cert.as_deref())?;
        client
            .set_tokens(&login.token, Some(&login.refresh_token))
            .await;
        Ok(Self { client, login })
    }

    /// Stores the access token if the client renewed it. Called after every command, failed
    /// or not, so a renewal is never lost.
    pub async fn finish(&self) -> anyhow::Result<()> {
        match self.client.access_token().await {
            Some(token) if token != self.login.token => {
                save(&StoredLogin {
                    token,
                    ..self.login.clone()
                })?;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
