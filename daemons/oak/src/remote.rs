//! The commands that talk to a root orchestrator over its REST API: `oak login`/`logout`,
//! `oak app …`, `oak service …`, `oak cluster list`, `oak token create`.
//!
//! Each prints a table (or a short sentence) for people, or with `--json` the root's records
//! as JSON for scripts. Errors map to exit codes in [`crate::exit`].

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

// ------------------------------------------------------------------------------ login

/// `oak login`.
pub async fn login(args: LoginArgs, json: bool) -> anyhow::Result<()> {
    let stored = session::load().ok().flatten();
    let url = args
        .url
        .or_else(|| stored.as_ref().map(|s| s.url.clone()))
        .unwrap_or_else(|| session::DEFAULT_URL.to_owned());
    let interactive = std::io::stdin().is_terminal();
    let term = console::Term::stderr();
    let username = match args.username {
        Some(name) => name,
        None if interactive => {
            eprint!("user name for {url} [Admin]: ");
            let name = term.read_line().context("cannot read the user name")?;
            if name.trim().is_empty() {
                "Admin".to_owned()
            } else {
                name.trim().to_owned()
            }
        }
        None => "Admin".to_owned(),
    };
    let password = match args.password {
        Some(password) => password,
        None if interactive => {
            eprint!("password of {username}: ");
            term.read_secure_line()
                .context("cannot read the password")?
        }
        None => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the password from stdin")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    let client = Client::new(&url)?;
    let tokens = client
        .login_to(&username, &password, args.organization.as_deref())
        .await?;
    let login = StoredLogin {
        url: client.base_url().to_owned(),
        username: username.clone(),
        token: tokens.token,
        refresh_token: tokens.refresh_token,
    };
    let path = session::save(&login)?;
    if json {
        print_json(&serde_json::json!({
            "url": login.url, "username": login.username, "config": path,
        }))
    } else {
        outln!(
            "logged in to {} as {username} (login kept in {})",
            login.url,
            path.display()
        );
        Ok(())
    }
}

/// `oak logout`: forgets the stored login (the tokens expire by themselves).
pub fn logout(json: bool) -> anyhow::Result<()> {
    let removed = session::remove()?;
    if json {
        print_json(&serde_json::json!({ "logged_out": removed }))
    } else {
        if removed {
            outln!("logged out");
        } else {
            outln!("not logged in");
        }
        Ok(())
    }
}

/// Runs `command` with the stored login and keeps a renewed token even when it fails.
pub async fn with_session<F>(command: F) -> anyhow::Result<()>
where
    F: AsyncFnOnce(&Session) -> anyhow::Result<()>,
{
    let session = Session::open().await?;
    let result = command(&session).await;
    let saved = session.finish().await;
    result.and(saved)
}

// ------------------------------------------------------------------------------ applications

/// Every application the caller may see: all of them for an Admin, else the caller's own.
async fn visible_applications(session: &Session) -> anyhow::Result<Vec<ApplicationRecord>> {
    match session.client.applications().await {
        Ok(apps) => Ok(apps),
        Err(e) if e.status() == Some(403) => {
            let me = session.client.user(&session.login.username).await?;
            Ok(session.client.user_applications(&me.id.to_string()).await?)
        }
        Err(e) => Err(e.into()),
    }
}

fn application_table(apps: &[ApplicationRecord]) -> Table {
    let mut table = Table::new(&["ID", "NAME", "NAMESPACE", "SERVICES", "OWNER"]);
    for app in apps {
        table.row(vec![
            app.id.to_string(),
            app.application_name.clone(),
            app.application_namespace.clone(),
            app.microservices.len().to_string(),
            app.user_id.clone(),
        ]);
    }
    table
}

fn service_table(services: &[ServiceRecord]) -> Table {
    let mut table = Table::new(&[
        "ID",
        "NAME",
        "APPLICATION",
        "STATUS",
        "RUNNING",
        "VIRT",
        "IMAGE",
    ]);
    for s in services {
        table.row(vec![
            s.id.to_string(),
            format!("{}.{}", s.service_name, s.service_ns),
            format!("{}.{}", s.app_name, s.app_ns),
            status_text(s.status),
            instance_counts(s),
            s.microservice.virtualization.to_string(),
            s.image.clone(),
        ]);
    }
    table
}

/// `oak app …`.
pub async fn app(session: &Session, command: AppCommand, json: bool) -> anyhow::Result<()> {
    let client = &session.client;
    match command {
        AppCommand::List => {
            let apps = visible_applications(session).await?;
            if json {
                return print_json(&apps);
            }
            let table = application_table(&apps);
            if table.is_empty() {
                outln!("no applications; create one with `oak app create FILE`");
            } else {
                out!("{}", table.render());
            }
            Ok(())
        }
        AppCommand::Create { file } => {
            let text = read_file(&file)?;
            let descriptor: Value = serde_json::from_str(&text)
                .map_err(|e| Failure::failed(format!("{} is not JSON: {e}", file.display())))?;
            let wanted: BTreeSet<(String, String)> = descriptor
                .get("applications")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|a| {
                    Some((
                        a.get("application_name")?.as_str()?.to_owned(),
                        a.get("application_namespace")?.as_str()?.to_owned(),
                    ))
                })
                .collect();
            let all = client.create_applications(&descriptor).await?;
            // The root answers with all of the caller's applications; show the new ones.
            let created: Vec<ApplicationRecord> = all
                .into_iter()
                .filter(|a| {
                    wanted.contains(&(a.application_name.clone(), a.application_namespace.clone()))
                })
                .collect();
            let mut services = Vec::new();
            for app in &created {
                services.extend(client.application_services(&app.id.to_string()).await?);
            }
            if json {
                return print_json(&serde_json::json!({
                    "applications": created, "services": services,
                }));
            }
            for app in &created {
                outln!(
                    "created application {}.{} ({})",
                    app.application_name,
                    app.application_namespace,
                    app.id
                );
            }
            if !services.is_empty() {
                out!("{}", service_table(&services).render());
                outln!("deploy with `oak service deploy <ID>`");
            }
            Ok(())
        }
        AppCommand::Show { id } => {
            let app = match client.application(&id).await {
                Ok(app) => app,
                Err(e) if is_not_found(&e) => {
                    return Err(Failure::failed(format!(
                        "application {id} not found: {}",
                        e.message().unwrap_or("404")
                    ))
                    .into());
                }
                // Oakestra's root answers `null` for an application it found: look it up in
                // the list instead.
                Err(ClientError::Decode { .. }) => visible_applications(session)
                    .await?
                    .into_iter()
                    .find(|a| a.id.to_string() == id)
                    .ok_or_else(|| Failure::failed(format!("application {id} not found")))?,
                Err(e) => return Err(e.into()),
            };
            let services = client.application_services(&id).await?;
            if json {
                return print_json(&serde_json::json!({
                    "application": app, "services": services,
                }));
            }
            outln!(
                "application  {}.{}",
                app.application_name,
                app.application_namespace
            );
            outln!("id           {}", app.id);
            outln!("owner        {}", app.user_id);
            if !app.application_desc.is_empty() {
                outln!("description  {}", app.application_desc);
            }
            if services.is_empty() {
                outln!("no services");
            } else {
                outln!();
                out!("{}", service_table(&services).render());
            }
            Ok(())
        }
        AppCommand::Delete { id } => {
            let answer = client.delete_application(&id).await?;
            if json {
                return print_json(&answer);
            }
            outln!("deleted application {id}");
            Ok(())
        }
    }
}

// ------------------------------------------------------------------------------ services

/// `oak service …`.
pub async fn service(session: &Session, command: ServiceCommand, json: bool) -> anyhow::Result<()> {
    let client = &session.client;
    match command {
        ServiceCommand::List { app } => {
            let services = match app {
                Some(app) => client.application_services(&app).await?,
                None => match client.services().await {
                    Ok(all) => all,
                    Err(e) if e.status() == Some(403) => {
                        let mut all = Vec::new();
                        for app in visible_applications(session).await? {
                            all.extend(client.application_services(&app.id.to_string()).await?);
                        }
                        all
                    }
                    Err(e) => return Err(e.into()),
                },
            };
            if json {
                return print_json(&services);
            }
            if services.is_empty() {
                outln!("no services");
            } else {
                out!("{}", service_table(&services).render());
            }
            Ok(())
        }
        ServiceCommand::Show { id } => {
            let s = client.service(&id).await?;
            if json {
                return print_json(&s);
            }
            outln!("service      {}.{}", s.service_name, s.service_ns);
            outln!("id           {}", s.id);
            outln!(
                "application  {}.{} ({})",
                s.app_name,
                s.app_ns,
                s.application_id
            );
            outln!(
                "code         {} ({})",
                s.image,
                s.microservice.virtualization
            );
            outln!("status       {}", status_text(s.status));
            if let Some(detail) = s.status_detail.as_deref().filter(|d| !d.is_empty()) {
                outln!("detail       {detail}");
            }
            if let Some(ip) = s.rr_ip {
                outln!("RR IP        {ip}");
            }
            if let Some(ip) = s.closest_ip {
                outln!("closest IP   {ip}");
            }
            if s.instance_list.is_empty() {
                outln!("no instances; deploy one with `oak service deploy {id}`");
            } else {
                outln!();
                out!("{}", instance_table(&s.instance_list).render());
            }
            Ok(())
        }
        ServiceCommand::Deploy(args) => deploy(client, args, json).await,
        ServiceCommand::Undeploy { id, instance } => {
            let answer = client.undeploy_instance(&id, instance).await?;
            if json {
                return print_json(&answer);
            }
            match instance {
                Some(n) => outln!("undeployed instance {n} of service {id}"),
                None => outln!("undeployed every instance of service {id}"),
            }
            Ok(())
        }
        ServiceCommand::Logs { id, instance, tail } => {
            let text = instance_logs(client, &id, instance, tail).await?;
            if json {
                return print_json(&serde_json::json!({
                    "service": id, "instance": instance, "logs": text,
                }));
            }
            out!("{text}");
            if !text.is_empty() && !text.ends_with('\n') {
                outln!();
            }
            Ok(())
        }
    }
}

fn instance_table(instances: &[InstanceRecord]) -> Table {
    let mut table = Table::new(&[
        "INSTANCE", "STATUS", "CLUSTER", "WORKER", "IP", "CPU%", "MEM%", "DETAIL",
    ]);
    for i in instances {
        table.row(vec![
            i.instance_number.to_string(),
            status_text(i.status),
            or_dash(i.cluster_id.as_ref()),
            or_dash(i.worker_id.as_ref()),
            or_dash(i.instance_ip),
            or_dash(i.cpu_percent.map(|v| format!("{v:.1}"))),
            or_dash(i.memory_percent.map(|v| format!("{v:.1}"))),
            or_dash(i.status_detail.as_ref()),
        ]);
    }
    table
}

/// The log of instance `n`: from the logs endpoint, or (on a root without one) from the
/// service record's `logs` field.
async fn instance_logs(
    client: &Client,
    service_id: &str,
    instance: u32,
    tail: Option<u32>,
) -> anyhow::Result<String> {
    match client.logs(service_id, instance, tail).await {
        Ok(text) => Ok(text),
        Err(e) if is_not_found(&e) => {
            // Either the root has no logs endpoint, or the service/instance is unknown: the
            // service record tells which.
            let service = client.service(service_id).await?;
            let record = service
                .instance_list
                .iter()
                .find(|i| i.instance_number == instance)
                .ok_or_else(|| {
                    Failure::failed(format!(
                        "service {service_id} has no instance {instance} (it has {:?})",
                        service
                            .instance_list
                            .iter()
                            .map(|i| i.instance_number)
                            .collect::<Vec<_>>()
                    ))
                })?;
            match &record.logs {
                Some(logs) => Ok(last_lines(logs, tail)),
                None => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

fn last_lines(text: &str, tail: Option<u32>) -> String {
    let Some(n) = tail else {
        return text.to_owned();
    };
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n as usize);
    lines[start..].join("\n")
}

/// How an instance's status ends a wait.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Keep waiting.
    Pending,
    /// It runs (or a one-shot task completed).
    Done,
    /// It will not run.
    Failed,
}

fn outcome(status: Option<Status>) -> Outcome {
    match status {
        Some(Status::Deployment(DeploymentStatus::Running | DeploymentStatus::Completed)) => {
            Outcome::Done
        }
        Some(
            Status::Negative(_)
            | Status::Deployment(
                DeploymentStatus::Failed | DeploymentStatus::Dead | DeploymentStatus::Undeployed,
            ),
        ) => Outcome::Failed,
        _ => Outcome::Pending,
    }
}

/// `oak service deploy`.
async fn deploy(client: &Client, args: DeployArgs, json: bool) -> anyhow::Result<()> {
    let id = args.id;
    let wait = if args.wait {
        true
    } else if args.no_wait {
        false
    } else {
        std::io::stderr().is_terminal()
    };
    // Instance numbers that exist already, to recognise the new one when the root's answer
    // does not name it (Oakestra answers only {"message": "ok"}).
    let before: BTreeSet<u32> = if wait {
        client
            .service(&id)
            .await?
            .instance_list
            .iter()
            .map(|i| i.instance_number)
            .collect()
    } else {
        BTreeSet::new()
    };
    let answer = client.deploy_instance(&id).await?;
    let number = answer.instance.as_ref().map(|i| i.instance_number);
    if !wait {
        if json {
            return print_json(&answer);
        }
        match number {
            Some(n) => outln!("instance {n} of service {id} requested"),
            None => outln!("an instance of service {id} requested"),
        }
        return Ok(());
    }

    let progress = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        progress.set_style(style);
    }
    progress.set_message(format!("deploying an instance of service {id}"));
    progress.enable_steady_tick(Duration::from_millis(100));
    let waited = tokio::time::timeout(
        args.timeout,
        follow(client, &id, number, &before, &progress),
    )
    .await;
    progress.finish_and_clear();
    match waited {
        Err(_) => Err(Failure::new(
            exit::TIMEOUT,
            format!(
                "instance of service {id} not running after {:?}; last status: {}; \
                 see `oak service show {id}`",
                args.timeout,
                progress.message()
            ),
        )
        .into()),
        Ok(Err(e)) => Err(e),
        Ok(Ok((instance, Outcome::Done))) => {
            if json {
                return print_json(&instance);
            }
            outln!(
                "instance {} of service {id} {} on cluster {} worker {}{}",
                instance.instance_number,
                status_text(instance.status),
                or_dash(instance.cluster_id.as_ref()),
                or_dash(instance.worker_id.as_ref()),
                instance
                    .instance_ip
                    .map(|ip| format!(", IP {ip}"))
                    .unwrap_or_default(),
            );
            Ok(())
        }
        Ok(Ok((instance, _))) => {
            if json {
                print_json(&instance)?;
            }
            let detail = instance
                .status_detail
                .as_deref()
                .filter(|d| !d.is_empty())
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            Err(Failure::failed(format!(
                "instance {} of service {id} failed: {}{detail}",
                instance.instance_number,
                status_text(instance.status),
            ))
            .into())
        }
    }
}

/// Polls the service until the instance runs or fails, showing each status on the spinner
/// (or, when stderr is no terminal, as one line per change).
async fn follow(
    client: &Client,
    id: &str,
    number: Option<u32>,
    before: &BTreeSet<u32>,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<(InstanceRecord, Outcome)> {
    let mut last_shown = String::new();
    loop {
        let service = client.service(id).await?;
        let instance = match number {
            Some(n) => service
                .instance_list
                .iter()
                .find(|i| i.instance_number == n),
            None => service
                .instance_list
                .iter()
                .filter(|i| !before.contains(&i.instance_number))
                .max_by_key(|i| i.instance_number),
        };
        let (shown, found) = match instance {
            Some(i) => (
                format!(
                    "instance {}: {}{}",
                    i.instance_number,
                    status_text(i.status),
                    i.status_detail
                        .as_deref()
                        .filter(|d| !d.is_empty())
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                ),
                Some(i.clone()),
            ),
            None => (format!("service: {}", status_text(service.status)), None),
        };
        if shown != last_shown {
            if progress.is_hidden() {
                eprintln!("{shown}");
            }
            progress.set_message(shown.clone());
            last_shown = shown;
        }
        if let Some(instance) = found {
            let result = outcome(instance.status);
            if result != Outcome::Pending {
                return Ok((instance, result));
            }
        } else if let Some(n) = number {
            // The root dropped the instance (undeployed meanwhile).
            return Err(Failure::failed(format!(
                "instance {n} of service {id} is gone; was it undeployed?"
            ))
            .into());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

// ------------------------------------------------------------------------------ clusters

/// `oak cluster list`, `oak cluster workers`.
pub async fn cluster(command: ClusterCommand, json: bool) -> anyhow::Result<()> {
    match command {
        ClusterCommand::List { url } => {
            let client = Client::new(&root_url(url)?)?;
            let clusters = client.clusters().await?;
            if json {
                return print_json(&clusters);
            }
            if clusters.is_empty() {
                outln!(
                    "no clusters; one joins with a token from `oak token create --kind cluster`"
                );
                return Ok(());
            }
            let mut table = Table::new(&[
                "ID",
                "NAME",
                "LOCATION",
                "ACTIVE",
                "WORKERS",
                "CPUS",
                "MEMORY_MB",
                "CPU%",
                "RUNTIMES",
            ]);
            for c in &clusters {
                table.row(vec![
                    c.id.clone(),
                    c.cluster_name.clone(),
                    c.cluster_location.clone(),
                    if c.active { "yes" } else { "no" }.to_owned(),
                    c.active_nodes.to_string(),
                    c.total_cpu_cores.to_string(),
                    c.memory_in_mb.to_string(),
                    format!("{:.1}", c.aggregated_cpu_percent),
                    c.virtualization.join(","),
                ]);
            }
            out!("{}", table.render());
            Ok(())
        }
        ClusterCommand::Workers { id } => {
            with_session(async |session| {
                let workers = session.client.cluster_workers(&id).await?;
                if json {
                    return print_json(&workers);
                }
                let mut table = Table::new(&[
                    "ID",
                    "HOST",
                    "IP",
                    "ACTIVE",
                    "INSTANCES",
                    "CPUS",
                    "CPU%",
                    "VCPUS_FREE",
                    "MEMORY_MB",
                    "MEMORY_FREE_MB",
                    "LAST_REPORT",
                ]);
                for w in &workers {
                    table.row(vec![
                        w.id.clone(),
                        w.host.clone(),
                        w.ip.clone(),
                        if w.active { "yes" } else { "no" }.to_owned(),
                        w.instances.to_string(),
                        format!("{}", w.cpu_cores),
                        format!("{:.1}", w.cpu_percent),
                        format!("{:.2}", w.vcpus_allocatable),
                        w.memory_in_mb.to_string(),
                        w.memory_allocatable_in_mb.to_string(),
                        format!("{:.0}s ago", w.seconds_since_report),
                    ]);
                }
                out!("{}", table.render());
                Ok(())
            })
            .await
        }
    }
}

// ------------------------------------------------------------------------------ tokens

fn default_cluster_data_dir() -> Option<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(xdg).join("oakestra/cluster"));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|home| PathBuf::from(home).join(".local/share/oakestra/cluster"))
}

/// `oak token create --kind worker`: the cluster's one worker token, from its data directory.
pub fn worker_token(args: &TokenCreateArgs, json: bool) -> anyhow::Result<()> {
    let dir = args
        .cluster_data_dir
        .clone()
        .or_else(default_cluster_data_dir)
        .ok_or_else(|| {
            Failure::usage("give the cluster's data directory with --cluster-data-dir")
        })?;
    let path = dir.join(oakestra_cluster::config::WORKER_JOIN_TOKEN_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Failure::failed(format!(
            "cannot read the worker join token from {}: {e}; a cluster writes it there on its \
             first start (no API creates worker tokens): run this on the cluster's machine, \
             with --cluster-data-dir set to the cluster's --data-dir",
            path.display()
        ))
    })?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.is_empty() {
        return Err(Failure::failed(format!("{} is empty", path.display())).into());
    }
    if json {
        return print_json(&serde_json::json!({
            "kind": "worker", "token": token, "file": path,
        }));
    }
    outln!("{token}");
    eprintln!(
        "# the worker join token of the cluster in {}: give it to `oakestra-node --token`",
        dir.display()
    );
    Ok(())
}

/// `oak token create --kind cluster`.
pub async fn cluster_token(
    session: &Session,
    args: &TokenCreateArgs,
    json: bool,
) -> anyhow::Result<()> {
    let created = session
        .client
        .create_join_token(args.name.as_deref())
        .await
        .map_err(|e| {
            if is_not_found(&e) {
                anyhow::Error::from(Failure::failed(format!(
                    "this root offers no join-token API ({}); on an Oakestra-rs root run \
                     `oakestra-root token create` with the root stopped",
                    e.message().unwrap_or("404")
                )))
            } else {
                e.into()
            }
        })?;
    if json {
        return print_json(&created);
    }
    outln!("{}", created.token);
    eprintln!(
        "# cluster join token {:?} (id {}): give it to `oakestra-cluster --join-token`; it is \
         shown only this once",
        created.name, created.id
    );
    Ok(())
}

/// `oak token …`.
pub async fn token(command: TokenCommand, json: bool) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create(args) => match args.kind {
            TokenKind::Worker => worker_token(&args, json),
            TokenKind::Cluster => {
                with_session(async |session: &Session| cluster_token(session, &args, json).await)
                    .await
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_of_statuses() {
        let s = |text: &str| Some(text.parse::<Status>().unwrap());
        assert_eq!(outcome(None), Outcome::Pending);
        assert_eq!(outcome(s("REQUESTED")), Outcome::Pending);
        assert_eq!(outcome(s("NODE_SCHEDULED")), Outcome::Pending);
        assert_eq!(outcome(s("RUNNING")), Outcome::Done);
        assert_eq!(outcome(s("COMPLETED")), Outcome::Done);
        assert_eq!(outcome(s("NO_WORKER_CAPACITY")), Outcome::Failed);
        assert_eq!(outcome(s("NoActiveClusterWithCapacity")), Outcome::Failed);
        assert_eq!(outcome(s("FAILED")), Outcome::Failed);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(last_lines("a\nb\nc\n", Some(2)), "b\nc");
        assert_eq!(last_lines("a\nb", None), "a\nb");
        assert_eq!(last_lines("a", Some(5)), "a");
    }
}
