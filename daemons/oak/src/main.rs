//! `oak`: the command-line tool of Oakestra-rs.
//!
//! * `oak login`/`logout`, `oak app …`, `oak service …`, `oak cluster list`, `oak token create`
//!   talk to a root orchestrator's REST API ([`remote`]);
//! * `oak events` shows the root's event log ([`events`]);
//! * `oak validate` checks deployment descriptors;
//! * `oak up` runs root + cluster + worker in one process (1-DOC);
//! * `oak sim` runs N simulated workers against a real cluster.

mod events;
mod exit;
mod own_containerd;
mod remote;
mod session;
mod sim;
mod table;
mod up;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Oakestra-rs command-line tool.
///
/// Log in once with `oak login --url http://<root>:10000`; the other commands use the stored
/// login. Tables for people by default, `--json` for scripts.
#[derive(Debug, Parser)]
#[command(name = "oak", version, about, after_help = exit::HELP)]
struct Cli {
    /// Print JSON instead of tables (for scripts).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Log in to a root orchestrator and keep the login (address and tokens, never the password)
    /// in $XDG_CONFIG_HOME/oakestra/oak.json (mode 0600); the tokens are renewed by themselves.
    #[command(after_help = exit::HELP)]
    Login(remote::LoginArgs),
    /// Forget the stored login.
    #[command(after_help = exit::HELP)]
    Logout,
    /// Applications: list, create from a descriptor, show, delete.
    #[command(subcommand, after_help = exit::HELP)]
    App(remote::AppCommand),
    /// Services: list, show, deploy (with live progress), undeploy, logs.
    #[command(subcommand, after_help = exit::HELP)]
    Service(remote::ServiceCommand),
    /// Clusters joined to the root.
    #[command(subcommand, after_help = exit::HELP)]
    Cluster(remote::ClusterCommand),
    /// What happened to your applications, services, instances (and, for an Admin, clusters):
    /// placements, status changes and their reasons; `--follow` streams new ones.
    #[command(after_help = exit::HELP)]
    Events(events::EventsArgs),
    /// Join tokens for clusters and workers.
    #[command(subcommand, after_help = exit::HELP)]
    Token(remote::TokenCommand),
    /// Validate SLA v2.0 deployment descriptors and print every violation with its JSON path.
    ///
    /// Exit status: 0 when every file is valid, 1 when any is invalid, 2 when a file cannot be read.
    Validate {
        /// Descriptor files (JSON); `-` reads standard input.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print nothing for valid files.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Run root, cluster and worker in this process (1-DOC) with embedded stores and broker,
    /// no configuration needed; prints the API address and the login.
    Up(Box<up::UpArgs>),
    /// Run N simulated workers (fake runtime, given resources and locations, injected
    /// failures) in this process against a running cluster.
    Sim(sim::SimArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    match cli.command {
        Command::Validate { files, quiet } => validate(&files, quiet),
        Command::Up(args) => run_async(args.log_format, up::run(*args)),
        Command::Sim(args) => run_async(oakestra_daemon::LogFormat::Text, sim::run(args)),
        Command::Login(args) => run_client(remote::login(args, json)),
        Command::Logout => run_client(async move { remote::logout(json) }),
        Command::App(command) => run_client(remote::with_session(
            async move |session: &session::Session| remote::app(session, command, json).await,
        )),
        Command::Service(command) => run_client(remote::with_session(
            async move |session: &session::Session| remote::service(session, command, json).await,
        )),
        Command::Cluster(command) => run_client(remote::cluster(command, json)),
        Command::Events(args) => run_client(remote::with_session(
            async move |session: &session::Session| events::run(session, args, json).await,
        )),
        Command::Token(command) => run_client(remote::token(command, json)),
    }
}

/// Runs a client command on a single-threaded runtime; errors are printed with their exit
/// code (see [`exit`]).
fn run_client(task: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("oak: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => exit::report(&e),
    }
}

/// Runs a daemon-style subcommand on a multi-threaded tokio runtime, logging warnings (more
/// with RUST_LOG=info) to stderr as text or JSON lines.
fn run_async(
    log_format: oakestra_daemon::LogFormat,
    task: impl std::future::Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    oakestra_daemon::logging::init(log_format, "warn");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("oak: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oak: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn read_input(path: &PathBuf) -> std::io::Result<String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(path)
    }
}

/// Validates one descriptor and says what it holds. The dashboard's variant (an object with only
/// a `microservices` list, no `sla_version` and no `applications`) is recognised and checked
/// with the same microservice rules.
fn check_descriptor(text: &str) -> Result<String, oakestra_core::sla::SlaErrors> {
    use oakestra_core::sla;
    let value: Option<serde_json::Value> = serde_json::from_str(text).ok();
    let dashboard_form = value
        .as_ref()
        .and_then(|v| v.as_object())
        .is_some_and(|obj| {
            obj.contains_key("microservices")
                && !obj.contains_key("sla_version")
                && !obj.contains_key("applications")
        });
    if dashboard_form {
        let list = sla::parse_microservices(text)?;
        return Ok(format!(
            "dashboard microservices list, {} microservice(s)",
            list.microservices.len()
        ));
    }
    let sla = sla::parse_and_validate(text)?;
    let services: usize = sla
        .applications
        .iter()
        .map(|app| app.microservices.len())
        .sum();
    Ok(format!(
        "{} application(s), {services} microservice(s)",
        sla.applications.len()
    ))
}

fn validate(files: &[PathBuf], quiet: bool) -> ExitCode {
    let mut worst = ExitCode::SUCCESS;
    let mut any_invalid = false;
    for path in files {
        let name = path.display();
        let text = match read_input(path) {
            Ok(text) => text,
            Err(err) => {
                eprintln!("{name}: cannot read: {err}");
                worst = ExitCode::from(2);
                continue;
            }
        };
        match check_descriptor(&text) {
            Ok(summary) => {
                if !quiet {
                    println!("{name}: valid ({summary})");
                }
            }
            Err(errors) => {
                any_invalid = true;
                let violations = errors.violations();
                eprintln!("{name}: invalid, {} violation(s):", violations.len());
                for violation in violations {
                    let path = if violation.path.is_empty() {
                        "/"
                    } else {
                        &violation.path
                    };
                    eprintln!("  {path}: {}", violation.message);
                }
            }
        }
    }
    if worst == ExitCode::SUCCESS && any_invalid {
        worst = ExitCode::from(1);
    }
    worst
}
