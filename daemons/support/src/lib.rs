//! What every Oakestra-rs daemon (root, cluster, worker, `oak up`, `oak sim`) needs once:
//!
//! * [`logging`]: `--log-format text|json`; JSON lines (time, level, target, fields, message)
//!   for Loki or any other log shipper;
//! * [`shutdown_signal`]: resolves on SIGINT or SIGTERM;
//! * [`data_dir`]: the default data directory under the XDG base directories;
//! * [`backoff`]: the one capped exponential backoff;
//! * [`calendar`]: calendar dates of Unix timestamps;
//! * [`metrics`]: the Prometheus text encoding and the optional bearer token on `/metrics`;
//! * [`private`]: owner-only directories and files for secrets;
//! * [`layered`]: flags > TOML file > environment > defaults, for clap parsers;
//! * [`http`]: the API server loop with header and body timeouts and a connection limit.
#![deny(missing_docs)]

pub mod backoff;
pub mod calendar;
pub mod data_dir;
pub mod http;
pub mod json_parse_errors;
pub mod layered;
pub mod logging;
pub mod metrics;
pub mod private;
pub mod tls;

pub use backoff::Backoff;
pub use data_dir::default_data_dir;
pub use logging::LogFormat;

/// Resolves on SIGINT (Ctrl-C) or SIGTERM, whichever comes first.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
