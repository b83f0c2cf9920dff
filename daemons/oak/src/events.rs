//! `oak events [--follow] [--service ID] [--kind K] [--since SECONDS] [--limit N]`: what
//! happened to the caller's objects (all of them for an Admin), from the root's event log.

use std::io::Write as _;

use clap::Args;
use oakestra_client::{Event, EventQuery};

use crate::session::Session;

/// Flags of `oak events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Keep printing new events as they happen (Ctrl-C to stop).
    #[arg(short, long)]
    follow: bool,
    /// Only events of this service.
    #[arg(long, value_name = "ID")]
    service: Option<String>,
    /// Only events of this application.
    #[arg(long, value_name = "ID")]
    app: Option<String>,
    /// Only events of this cluster.
    #[arg(long, value_name = "ID")]
    cluster: Option<String>,
    /// Only these kinds, comma-separated (placed, running, failed, cluster_lost, …).
    #[arg(long)]
    kind: Option<String>,
    /// Only events of the last N seconds.
    #[arg(long, value_name = "SECONDS")]
    since: Option<f64>,
    /// At most N events before following (the newest).
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

fn line(e: &Event) -> String {
    let object = match (&e.service_id, e.instance_number) {
        (Some(s), Some(n)) => format!("{s}/{n}"),
        _ => format!("{} {}", e.object, e.object_id),
    };
    format!("{}  {:<20}  {}  {}", e.time, e.kind, object, e.message)
}

fn print(e: &Event, json: bool) {
    let text = if json {
        serde_json::to_string(e).unwrap_or_default()
    } else {
        line(e)
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// `oak events`.
pub async fn run(session: &Session, args: EventsArgs, json: bool) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let query = EventQuery {
        service: args.service,
        application: args.app,
        cluster: args.cluster,
        kind: args.kind,
        since: args.since.map(|s| now - s),
        limit: Some(args.limit.max(1)),
        ..EventQuery::default()
    };
    if !args.follow {
        let events = session.client.events(&query).await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&events)?);
        } else if events.is_empty() {
            eprintln!("no events");
        } else {
            for e in &events {
                print(e, false);
            }
        }
        return Ok(());
    }
    let mut stream = session.client.follow_events(&query).await?;
    while let Some(event) = stream.next().await {
        print(&event?, json);
    }
    Ok(())
}
