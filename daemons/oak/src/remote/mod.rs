//! The commands that talk to a root orchestrator over its REST API: `oak login`/`logout`,
//! `oak app …`, `oak service …`, `oak cluster list`, `oak token create`.
//!
//! Each prints a table (or a short sentence) for people, or with `--json` the root's records
//! as JSON for scripts. Errors map to exit codes in [`crate::exit`].
// The doc comments of the arguments are also their --help texts, written for people
// (`HOST[:PORT]`, `<cluster data dir>`), not rustdoc links or HTML.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use std::collections::BTreeSet;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use oakestra_client::{Client, ClientError};
use oakestra_core::model::{ApplicationRecord, InstanceRecord, ServiceRecord};
use oakestra_core::status::{DeploymentStatus, Status};
use serde::Serialize;
use serde_json::Value;

use crate::exit::{self, Failure};
use crate::session::{self, Session, StoredLogin};
use crate::table::{Table, or_dash};

/// Writes to stdout; a closed pipe (`oak … | head`) is not an error worth a panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// [`out!`] with a newline.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// How often `oak service deploy --wait` asks the root for the instance's status.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

// ------------------------------------------------------------------------------ arguments

/// Flags of `oak login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The root's REST API [default: the stored login's, else http://127.0.0.1:10000].
    #[arg(long, env = "OAK_URL")]
    url: Option<String>,
    /// User name [default: asked on a terminal, else Admin].
    #[arg(long, short, env = "OAK_USERNAME")]
    username: Option<String>,
    /// Password [default: asked on a terminal without echo, else the first line of stdin].
    /// Prefer the prompt or OAK_PASSWORD: a flag is visible to other users in `ps`.
    #[arg(long, short, env = "OAK_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Organization to log in to [default: root].
    #[arg(long)]
    organization: Option<String>,
    /// For an https:// root: trust only this certificate (PEM; the root's self-signed
    /// certificate or its CA), kept with the login for the other commands [default: the
    /// stored login's, else the system's CAs].
    #[arg(long, env = "OAK_CA_CERT")]
    ca_cert: Option<std::path::PathBuf>,
}

/// `oak app …`.
#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// List applications (every user's for an Admin, else your own).
    #[command(after_help = exit::HELP)]
    List,
    /// Create the applications of an SLA v2.0 descriptor (JSON file, `-` for stdin) with all
    /// their services; nothing is deployed yet (`oak service deploy`). The root checks the
    /// descriptor and lists every violation with its JSON path (exit 1).
    #[command(after_help = exit::HELP)]
    Create {
        /// The descriptor.
        file: PathBuf,
    },
    /// Show an application and its services.
    #[command(after_help = exit::HELP)]
    Show {
        /// Application id (24 hex digits).
        id: String,
    },
    /// Delete an application: its instances are undeployed and its services deleted.
    #[command(after_help = exit::HELP)]
    Delete {
        /// Application id.
        id: String,
    },
}

/// `oak service …`.
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// List services (of one application with --app).
    #[command(after_help = exit::HELP)]
    List {
        /// Only the services of this application.
        #[arg(long)]
        app: Option<String>,
    },
    /// Show a service and its instances.
    #[command(after_help = exit::HELP)]
    Show {
        /// Service id (24 hex digits).
        id: String,
    },
    /// Deploy one more instance of a service and follow it through the status lifecycle
    /// (REQUESTED → CLUSTER_SCHEDULED → NODE_SCHEDULED → RUNNING) until it runs or fails.
    ///
    /// A failure prints the reason (e.g. NO_WORKER_CAPACITY or NoActiveClusterWithCapacity with
    /// its detail) and exits 1; --timeout exceeded exits 5 with the last status.
    #[command(after_help = exit::HELP)]
    Deploy(DeployArgs),
    /// Set a service's desired number of instances: the root deploys or undeploys (the
    /// highest numbered first) at once, and keeps that many running from then on.
    #[command(after_help = exit::HELP)]
    Scale {
        /// Service id.
        id: String,
        /// Desired instances, 0 to 10000.
        replicas: u32,
    },
    /// Undeploy one instance of a service, or all of them.
    #[command(after_help = exit::HELP)]
    Undeploy {
        /// Service id.
        id: String,
        /// Instance number [default: every instance].
        #[arg(long)]
        instance: Option<u32>,
    },
    /// Print the log of an instance.
    ///
    /// Uses the root's `GET /api/service/<id>/instance/<n>/logs?tail=N`; a root without it
    /// (Oakestra's) gives the log tail the worker last reported in the service record.
    #[command(after_help = exit::HELP)]
    Logs {
        /// Service id.
        id: String,
        /// Instance number.
        #[arg(long, default_value_t = 0)]
        instance: u32,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<u32>,
    },
}

/// Flags of `oak service deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Service id.
    id: String,
    /// Wait until the instance runs or fails [default: when stderr is a terminal].
    #[arg(long, overrides_with = "no_wait")]
    wait: bool,
    /// Return once the root accepted the request.
    #[arg(long, overrides_with = "wait")]
    no_wait: bool,
    /// Give up waiting after this long (e.g. 90s, 5m); exit 5.
    #[arg(long, default_value = "120s", value_parser = oakestra_core::duration::parse_duration)]
    timeout: Duration,
    /// Deploy this many instances in one request (1 to 10000; the root creates, places and
    /// sends them as one batch); with --wait, wait until all of them run.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    count: Option<u32>,
}

/// `oak cluster …`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// List the clusters that joined the root, active or not (needs no login).
    #[command(after_help = exit::HELP)]
    List {
        /// The root's REST API [default: the stored login's, else http://127.0.0.1:10000].
        #[arg(long, env = "OAK_URL")]
        url: Option<String>,
    },
    /// List one cluster's workers, active or not, with their resources, what their instances
    /// reserve and what is left (needs a login; the cluster must be connected).
    #[command(after_help = exit::HELP)]
    Workers {
        /// The cluster's ID (from `oak cluster list`).
        id: String,
    },
}

/// `oak token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a join token.
    ///
    /// --kind cluster (Admin): a new cluster join token from the root you are logged in to
    /// (`POST /api/join-tokens`), printed once on its own line; give it to
    /// `oakestra-cluster --join-token`. The root keeps only its hash.
    ///
    /// --kind worker: a cluster has exactly one worker join token, made on its first start and
    /// kept in <cluster data dir>/worker-join-token (or set with `oakestra-cluster
    /// --worker-join-token`); no API creates one. This prints that token, so run it on the
    /// cluster's machine; give it to `oakestra-node --token`.
    #[command(after_help = exit::HELP)]
    Create(TokenCreateArgs),
}

/// What a join token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenKind {
    /// A cluster joining the root.
    Cluster,
    /// A worker joining a cluster.
    Worker,
}

/// Flags of `oak token create`.
#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// What joins with the token.
    #[arg(long, value_enum)]
    kind: TokenKind,
    /// Name of a cluster token, to recognise it later [default: cluster].
    #[arg(long)]
    name: Option<String>,
    /// For --kind worker: the cluster's data directory
    /// [default: the one of `oak up`: $XDG_DATA_HOME/oakestra/cluster, else
    /// ~/.local/share/oakestra/cluster].
    #[arg(long)]
    cluster_data_dir: Option<PathBuf>,
}

// ------------------------------------------------------------------------------ helpers

fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    outln!("{text}");
    Ok(())
}

/// The address for commands that need no login.
fn root_url(flag: Option<String>) -> anyhow::Result<String> {
    if let Some(url) = flag {
        return Ok(url);
    }
    Ok(session::load()?.map_or_else(|| session::DEFAULT_URL.to_owned(), |l| l.url))
}

/// Reads a whole file, `-` for stdin; an unreadable file is a usage error (exit 2).
fn read_file(path: &PathBuf) -> Result<String, Failure> {
    let result = if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map(|_| text)
    } else {
        std::fs::read_to_string(path)
    };
    result.map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))
}

/// A 404 of the root as "not found" (exit 1) with the root's message.
fn is_not_found(error: &ClientError) -> bool {
    error.status() == Some(404)
}

fn status_text(status: Option<Status>) -> String {
    or_dash(status.map(Status::as_str))
}

fn instance_counts(service: &ServiceRecord) -> String {
    let running = service
        .instance_list
        .iter()
        .filter(|i| i.status == Some(Status::RUNNING))
        .count();
    format!("{running}/{}", service.instance_list.len())
}

mod apps;
mod clusters;
mod login;
mod services;
mod tokens;

pub use apps::app;
pub use clusters::cluster;
pub use login::{login, logout, with_session};
pub use services::service;
pub use tokens::token;
