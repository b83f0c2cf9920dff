//! Exit codes of `oak`, and how an error maps to one.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | failure: not found, refused by the root, invalid descriptor, deploy failed |
//! | 2 | usage: bad flags or arguments, unreadable file |
//! | 3 | authentication: not logged in, wrong credentials, expired login, missing role |
//! | 4 | the root cannot be reached |
//! | 5 | timed out waiting (`oak service deploy --wait --timeout`) |

use std::fmt;
use std::process::ExitCode;

use oakestra_client::ClientError;

/// Any failure not listed below.
pub const FAILURE: u8 = 1;
/// Bad usage (clap uses 2 too).
pub const USAGE: u8 = 2;
/// Authentication or permission.
pub const AUTH: u8 = 3;
/// The root cannot be reached.
pub const UNREACHABLE: u8 = 4;
/// A wait timed out.
pub const TIMEOUT: u8 = 5;

/// The exit-code table for `--help`.
pub const HELP: &str = "Exit status: 0 ok; 1 failure (not found, refused, deploy failed); \
    2 usage; 3 not logged in, bad credentials or missing permission; 4 root unreachable; \
    5 timed out waiting.";

/// An error that carries its exit code.
#[derive(Debug)]
pub struct Failure {
    /// Exit code.
    pub code: u8,
    /// What to print.
    pub message: String,
}

impl Failure {
    /// A failure with `code`.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Exit code 1.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(FAILURE, message)
    }

    /// Exit code 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(USAGE, message)
    }

    /// Exit code 3.
    pub fn auth(message: impl Into<String>) -> Self {
        Self::new(AUTH, message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The exit code of an error, and a hint to print after it.
pub fn classify(error: &anyhow::Error) -> (u8, Option<&'static str>) {
    if let Some(failure) = error.downcast_ref::<Failure>() {
        return (failure.code, None);
    }
    match error.downcast_ref::<ClientError>() {
        Some(ClientError::Transport { .. }) => (
            UNREACHABLE,
            Some("is the root running, and is the address right? (`oak login --url …`)"),
        ),
        Some(ClientError::NotLoggedIn) => (AUTH, Some("run `oak login`")),
        Some(ClientError::Api { status: 401, .. }) => (
            AUTH,
            Some("the login was refused or has expired: run `oak login` again"),
        ),
        Some(ClientError::Api { status: 403, .. }) => (AUTH, None),
        Some(ClientError::BadUrl(_)) => (USAGE, None),
        _ => (FAILURE, None),
    }
}

/// Prints `error` (with its SLA violations) to stderr and returns its exit code.
pub fn report(error: &anyhow::Error) -> ExitCode {
    let (code, hint) = classify(error);
    eprintln!("oak: {error:#}");
    if let Some(client_error) = error.downcast_ref::<ClientError>() {
        for violation in client_error.violations() {
            let path = if violation.path.is_empty() {
                "/"
            } else {
                &violation.path
            };
            eprintln!("  {path}: {}", violation.message);
        }
    }
    if let Some(hint) = hint {
        eprintln!("oak: {hint}");
    }
    ExitCode::from(code)
}
