//! Restart safety: SIGKILL the root in the middle of a burst of creates, restart it on the
//! same data dir, and find every acknowledged application, service and user intact (and
//! nothing half-created).

#[macro_use]
mod api_common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api_common::{Backend, Root, clientsrvr_named};
use oakestra_client::{Client, NewUser};
use tokio::sync::Mutex;

/// Every acknowledged creation.
#[derive(Default)]
struct Acked {
    /// application name → (id, service ids)
    apps: BTreeMap<String, (String, Vec<String>)>,
    users: Vec<String>,
}

async fn burst_then_kill(root: &mut Root) {
    let admin = Arc::new(root.admin().await);
    let acked = Arc::new(Mutex::new(Acked::default()));
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..8 {
        let admin = Arc::clone(&admin);
        let acked = Arc::clone(&acked);
        workers.push(tokio::spawn(async move {
            for i in 0..10_000 {
                if started.elapsed() > Duration::from_secs(20) {
                    break;
                }
                let name = format!("w{w}n{i}");
                if w == 0 && i % 3 == 0 {
                    let user = format!("user{i}");
                    match admin
                        .register(&NewUser {
                            name: user.clone(),
                            password: "pw".into(),
                            email: String::new(),
                            roles: vec![],
                        })
                        .await
                    {
                        Ok(_) => acked.lock().await.users.push(user),
                        Err(_) => break,
                    }
                }
                match admin
                    .create_applications(&clientsrvr_named(&name, false))
                    .await
                {
                    Ok(apps) => {
                        let app = apps
                            .into_iter()
                            .find(|a| a.application_name == name)
                            .expect("the answer lists the new application");
                        acked.lock().await.apps.insert(
                            name,
                            (
                                app.id.to_string(),
                                app.microservices.iter().map(ToString::to_string).collect(),
                            ),
                        );
                    }
                    // The root is gone.
                    Err(_) => break,
                }
            }
        }));
    }
    // Kill once a good number of creates went through, in the middle of the burst.
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().await.apps.len() < 40 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    root.kill();
    for w in workers {
        w.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().await);
    assert!(
        acked.apps.len() >= 40,
        "the burst was too slow: {}",
        acked.apps.len()
    );

    root.restart();
    let client = Client::new(&root.url).unwrap();
    client.login("Admin", "Admin").await.unwrap();
    let apps = client.applications().await.unwrap();
    let by_name: BTreeMap<&str, _> = apps
        .iter()
        .map(|a| (a.application_name.as_str(), a))
        .collect();
    for (name, (id, services)) in &acked.apps {
        let app = by_name
            .get(name.as_str())
            .unwrap_or_else(|| panic!("acknowledged application {name} is lost"));
        assert_eq!(&app.id.to_string(), id);
        let stored: Vec<String> = app.microservices.iter().map(ToString::to_string).collect();
        assert_eq!(&stored, services, "{name}");
        let services = client.application_services(id).await.unwrap();
        assert_eq!(services.len(), 2, "{name} lost services");
    }
    // Whatever was in flight is either complete or absent: no half-created application.
    for app in &apps {
        let services = client
            .application_services(&app.id.to_string())
            .await
            .unwrap();
        assert_eq!(
            services.len(),
            2,
            "{} is half-created",
            app.application_name
        );
    }
    assert_eq!(client.services().await.unwrap().len(), apps.len() * 2);
    let users: Vec<String> = client
        .users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    for u in &acked.users {
        assert!(users.contains(u), "acknowledged user {u} is lost");
        let c = Client::new(&root.url).unwrap();
        c.login(u, "pw").await.unwrap();
    }
}

async fn sigkill_during_creates_loses_nothing_acknowledged(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut root = Root::start_on(dir.path(), backend).await;
    burst_then_kill(&mut root).await;
}

on_every_backend!(sigkill_during_creates_loses_nothing_acknowledged);
