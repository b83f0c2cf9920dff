//! `oak token create`: worker join tokens (signed locally with the cluster's key) and cluster join tokens (from the root).

use super::*;

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
