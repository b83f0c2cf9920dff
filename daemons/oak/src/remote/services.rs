//! `oak service …`: list, show, deploy (and follow until running), scale, undeploy, logs.

use super::apps::{service_table, visible_applications};
use super::*;

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
            outln!("status       {}", s.status_with_readiness());
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
        ServiceCommand::Scale { id, replicas } => {
            let answer = client.scale_service(&id, replicas).await?;
            if json {
                return print_json(&answer);
            }
            outln!(
                "service {id}: {replicas} replica(s); instances {:?} (deployed {:?}, removed {:?})",
                answer.instances,
                answer.deployed,
                answer.removed
            );
            Ok(())
        }
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
        "INSTANCE", "STATUS", "READY", "CLUSTER", "WORKER", "IP", "CPU%", "MEM%", "RESTARTS",
        "DETAIL",
    ]);
    for i in instances {
        table.row(vec![
            i.instance_number.to_string(),
            status_text(i.status),
            or_dash(i.ready.map(|r| if r { "yes" } else { "no" })),
            or_dash(i.cluster_id.as_ref()),
            or_dash(i.worker_id.as_ref()),
            or_dash(i.instance_ip),
            or_dash(i.cpu_percent.map(|v| format!("{v:.1}"))),
            or_dash(i.memory_percent.map(|v| format!("{v:.1}"))),
            i.restart_count.to_string(),
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
    if let Some(count) = args.count {
        return deploy_many(client, &id, count, wait, args.timeout, json).await;
    }
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

/// `oak service deploy --count N`: one batch request; with `wait`, polls the service until
/// every created instance runs (or one fails).
async fn deploy_many(
    client: &Client,
    id: &str,
    count: u32,
    wait: bool,
    timeout: Duration,
    json: bool,
) -> anyhow::Result<()> {
    let created = client.deploy_instances(id, count).await?;
    let numbers: BTreeSet<u32> = created.iter().map(|i| i.instance_number).collect();
    let range = match (numbers.first(), numbers.last()) {
        (Some(a), Some(b)) if a != b => format!("instances {a}–{b}"),
        (Some(a), _) => format!("instance {a}"),
        _ => "no instance".to_owned(),
    };
    if !wait {
        if json {
            return print_json(&created);
        }
        let placed = created.iter().filter(|i| i.cluster_id.is_some()).count();
        outln!(
            "{range} of service {id} requested ({placed} of {} placed on a cluster)",
            created.len()
        );
        return Ok(());
    }
    let started = std::time::Instant::now();
    let mut last = String::new();
    loop {
        let service = client.service(id).await?;
        let mine: Vec<&InstanceRecord> = service
            .instance_list
            .iter()
            .filter(|i| numbers.contains(&i.instance_number))
            .collect();
        let running = mine
            .iter()
            .filter(|i| outcome(i.status) == Outcome::Done)
            .count();
        let failed = mine.iter().find(|i| {
            matches!(
                i.status,
                Some(Status::Deployment(
                    DeploymentStatus::Failed | DeploymentStatus::Dead
                ))
            )
        });
        let shown = format!("{running} of {} running", numbers.len());
        if shown != last {
            eprintln!("{shown}");
            last = shown;
        }
        if let Some(i) = failed {
            return Err(Failure::failed(format!(
                "instance {} of service {id} failed: {}",
                i.instance_number,
                status_text(i.status)
            ))
            .into());
        }
        if mine.len() < numbers.len() {
            return Err(Failure::failed(format!(
                "{} of the {range} of service {id} are gone; were they undeployed?",
                numbers.len() - mine.len()
            ))
            .into());
        }
        if running == numbers.len() {
            if json {
                return print_json(&mine);
            }
            outln!("{range} of service {id} running");
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(Failure::new(
                exit::TIMEOUT,
                format!(
                    "{range} of service {id}: {running} of {} running after {timeout:?}; \
                     see `oak service show {id}`",
                    numbers.len()
                ),
            )
            .into());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
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
