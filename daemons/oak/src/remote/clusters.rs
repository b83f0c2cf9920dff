//! `oak cluster …`: list the clusters, and the workers of one.

use super::*;

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
                    "MTU",
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
                        w.overlay_mtu.map_or("-".to_owned(), |m| m.to_string()),
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
