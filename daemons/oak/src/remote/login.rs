//! `oak login` and `oak logout`, and the stored session every other command runs with.

use super::*;

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
    let ca_cert = args
        .ca_cert
        .or_else(|| {
            stored
                .as_ref()
                .filter(|s| s.url.trim_end_matches('/') == url.trim_end_matches('/'))
                .and_then(|s| s.ca_cert.clone())
        })
        .map(|p| std::path::absolute(&p).unwrap_or(p));
    let client = session::client(&url, ca_cert.as_deref())?;
    let tokens = client
        .login_to(&username, &password, args.organization.as_deref())
        .await?;
    let login = StoredLogin {
        url: client.base_url().to_owned(),
        username: username.clone(),
        token: tokens.token,
        refresh_token: tokens.refresh_token,
        ca_cert,
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
