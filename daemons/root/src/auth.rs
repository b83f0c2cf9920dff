//! Passwords (argon2) and tokens (HS256 JWTs with Oakestra's claims).
//!
//! Oakestra mints RS256 tokens in a separate `jwt_generator` service whose keys are lost on a
//! restart. Here the root signs them itself with a random 256-bit secret that is created once
//! and kept in the store, so tokens survive restarts and there is no extra service.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, Params, Version};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Every role Oakestra knows.
pub mod roles {
    /// Full control; needed for the user, organization and "all …" endpoints.
    pub const ADMIN: &str = "Admin";
    /// Manages an organization.
    pub const ORGANIZATION_ADMIN: &str = "Organization_Admin";
    /// Deploys applications.
    pub const APPLICATION_PROVIDER: &str = "Application_Provider";
    /// Provides clusters.
    pub const INFRASTRUCTURE_PROVIDER: &str = "Infrastructure_Provider";
    /// All of them, as the default `Admin` account holds them in organization `root`.
    pub const ALL: [&str; 4] = [
        ADMIN,
        ORGANIZATION_ADMIN,
        APPLICATION_PROVIDER,
        INFRASTRUCTURE_PROVIDER,
    ];
}

/// Lifetime of an access token (as Oakestra).
pub const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(10 * 60);
/// Lifetime of a refresh token (as Oakestra).
pub const REFRESH_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Which of the two tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Sent with every request.
    Access,
    /// Exchanged for a new access token at `/api/auth/refresh`.
    Refresh,
}

impl TokenKind {
    fn as_str(self) -> &'static str {
        match self {
            TokenKind::Access => "access",
            TokenKind::Refresh => "refresh",
        }
    }
}

/// The claims of a token, as Oakestra's flask-jwt-extended tokens carry them (the dashboard
/// decodes `sub`, `roles`, `organization` and `exp`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User name.
    pub sub: String,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Not before.
    pub nbf: u64,
    /// Unique token id.
    pub jti: String,
    /// Expiry, seconds since the epoch; the token is refused from then on.
    pub exp: u64,
    /// `access` or `refresh`.
    #[serde(rename = "type")]
    pub kind: TokenKind,
    /// Always false (no fresh-login distinction).
    pub fresh: bool,
    /// User name again.
    pub user: String,
    /// Roles in `organization`.
    pub roles: Vec<String>,
    /// Organization id (24 hex digits).
    pub organization: String,
    /// The user's id: a token of a deleted user stays refused when another user later takes
    /// the same name. Empty in tokens of earlier versions.
    #[serde(default)]
    pub uid: String,
    /// The user's token version at issue; a token older than the user's current version
    /// (roles or password changed since) is refused.
    #[serde(default)]
    pub ver: u64,
}

impl Claims {
    /// Whether the token carries `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// Who a token is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User name.
    pub username: String,
    /// Roles in the organization.
    pub roles: Vec<String>,
    /// Organization id.
    pub organization: String,
    /// The user's id (24 hex digits).
    pub user_id: String,
    /// The user's token version now.
    pub token_version: u64,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// `exp` is in the past.
    #[error(
        "the token expired at {expired_at} (seconds since the epoch); log in again or refresh it at /api/auth/refresh"
    )]
    Expired {
        /// When.
        expired_at: u64,
    },
    /// `nbf` is in the future.
    #[error("the token is not valid before {0} (seconds since the epoch)")]
    NotYetValid(u64),
    /// A refresh token where an access token is needed, or the other way round.
    #[error("this is a {found} token; this endpoint needs a {expected} token")]
    WrongKind {
        /// Needed.
        expected: &'static str,
        /// Given.
        found: &'static str,
    },
    /// Bad signature, bad encoding, other algorithm, missing claims.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Signs and checks tokens with one HS256 secret.
pub struct TokenService {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    access_ttl: Duration,
    refresh_ttl: Duration,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("access_ttl", &self.access_ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .finish_non_exhaustive()
    }
}

/// Seconds since the epoch now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// 32 random bytes (the signing secret, token ids, salts).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).expect("the operating system has no random source");
    out
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl TokenService {
    /// A service signing with `secret` and Oakestra's lifetimes.
    pub fn new(secret: &[u8]) -> Self {
        Self::with_lifetimes(secret, ACCESS_TOKEN_TTL, REFRESH_TOKEN_TTL)
    }

    /// A service with other lifetimes (`--access-token-ttl`, tests).
    pub fn with_lifetimes(secret: &[u8], access_ttl: Duration, refresh_ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Time checks are done in `verify` against the caller's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            access_ttl,
            refresh_ttl,
        }
    }

    /// A signed token of `kind` for `who`, issued at `now` (seconds since the epoch).
    pub fn issue(&self, who: &Identity, kind: TokenKind, now: u64) -> String {
        let ttl = match kind {
            TokenKind::Access => self.access_ttl,
            TokenKind::Refresh => self.refresh_ttl,
        };
        let claims = Claims {
            sub: who.username.clone(),
            iat: now,
            nbf: now,
            jti: hex(&random_bytes::<16>()),
            exp: now + ttl.as_secs(),
            kind,
            fresh: false,
            user: who.username.clone(),
            roles: who.roles.clone(),
            organization: who.organization.clone(),
            uid: who.user_id.clone(),
            ver: who.token_version,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing of serialisable claims cannot fail")
    }

    /// The claims of `token` if it is signed by us, of `kind`, and valid at `now`.
    pub fn verify(&self, token: &str, kind: TokenKind, now: u64) -> Result<Claims, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        let claims = data.claims;
        if claims.kind != kind {
            return Err(TokenError::WrongKind {
                expected: kind.as_str(),
                found: claims.kind.as_str(),
            });
        }
        if claims.exp <= now {
            return Err(TokenError::Expired {
                expired_at: claims.exp,
            });
        }
        if claims.nbf > now {
            return Err(TokenError::NotYetValid(claims.nbf));
        }
        Ok(claims)
    }
}

/// argon2id with 7 MiB of memory and 5 passes: one of OWASP's equivalent recommended
/// settings (the crate default uses 19 MiB and 2 passes). The smaller memory keeps the
/// root's footprint low when several people log in at once; the hash stays as costly to
/// attack. Existing hashes carry their own parameters, so changing these later is safe.
fn hasher() -> Argon2<'static> {
    Argon2::new(
        argon2::Algorithm::Argon2id,
        Version::V0x13,
        Params::new(7 * 1024, 5, 1, None).expect("valid argon2 parameters"),
    )
}

/// The argon2id hash (PHC string) of `password`. Slow on purpose: call it off the runtime
/// (`spawn_blocking`).
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::encode_b64(&random_bytes::<16>()).expect("16 bytes is a valid salt");
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters accepts any password")
        .to_string()
}

/// Whether `password` matches `hash` (a PHC string from [`hash_password`]). Slow on purpose.
pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin() -> Identity {
        Identity {
            username: "Admin".into(),
            roles: roles::ALL.iter().map(|r| (*r).to_owned()).collect(),
            organization: "65f1a2b3c4d5e6f708192a3b".into(),
            user_id: "65f1a2b3c4d5e6f708192a3c".into(),
            token_version: 0,
        }
    }

    #[test]
    fn tokens_carry_oakestra_claims_and_expire() {
        let svc = TokenService::new(&[7u8; 32]);
        let now = 1_700_000_000;
        let token = svc.issue(&admin(), TokenKind::Access, now);
        let claims = svc.verify(&token, TokenKind::Access, now + 1).unwrap();
        assert_eq!(claims.sub, "Admin");
        assert_eq!(claims.user, "Admin");
        assert_eq!(claims.exp, now + 600);
        assert!(claims.has_role(roles::ADMIN));
        assert!(!claims.fresh);
        assert_eq!(
            svc.verify(&token, TokenKind::Access, now + 600),
            Err(TokenError::Expired {
                expired_at: now + 600
            })
        );
        assert!(matches!(
            svc.verify(&token, TokenKind::Refresh, now),
            Err(TokenError::WrongKind { .. })
        ));
        let refresh = svc.issue(&admin(), TokenKind::Refresh, now);
        let claims = svc
            .verify(&refresh, TokenKind::Refresh, now + 29 * 24 * 3600)
            .unwrap();
        assert_eq!(claims.exp, now + 30 * 24 * 3600);
        assert_eq!(claims.kind, TokenKind::Refresh);
    }

    #[test]
    fn other_secret_or_tampering_is_refused() {
        let svc = TokenService::new(&[7u8; 32]);
        let other = TokenService::new(&[8u8; 32]);
        let token = svc.issue(&admin(), TokenKind::Access, 1);
        assert!(matches!(
            other.verify(&token, TokenKind::Access, 2),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(
            svc.verify("not.a.token", TokenKind::Access, 2),
            Err(TokenError::Invalid(_))
        ));
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1].insert(3, 'x');
        assert!(svc.verify(&parts.join("."), TokenKind::Access, 2).is_err());
    }

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("Admin");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("Admin", &hash));
        assert!(!verify_password("admin", &hash));
        assert!(!verify_password("Admin", "pbkdf2:sha256:260000$x$y"));
        assert_ne!(hash, hash_password("Admin"), "salted");
    }
}
