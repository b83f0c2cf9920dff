//! `oak app …`: list, show, create from an SLA, and delete applications.

use super::*;

// ------------------------------------------------------------------------------ applications

/// Every application the caller may see: all of them for an Admin, else the caller's own.
pub(super) async fn visible_applications(
    session: &Session,
) -> anyhow::Result<Vec<ApplicationRecord>> {
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

pub(super) fn service_table(services: &[ServiceRecord]) -> Table {
    let mut table = Table::new(&[
        "ID",
        "NAME",
        "APPLICATION",
        "STATUS",
        "RUNNING",
        "READY",
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
            format!("{}/{}", s.count_ready(), s.instance_list.len()),
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
