//! The backend conformance suite: every backend's tests call [`run_all`] with a fresh store, so
//! all backends are held to the same behaviour. Test support code: it panics on failure.

use std::sync::Arc;

use oakestra_core::ids::{ClusterId, ObjectId};
use oakestra_core::model::{ApplicationRecord, InstanceRecord, ServiceRecord};
use oakestra_core::sla::{Sla, parse_and_validate};
use oakestra_core::status::PositiveSchedulingStatus;
use serde_json::{Map, Value, json};

use crate::document::{Atomicity, Collection, Write};
use crate::records::{
    ClusterRecord, JoinTokenRecord, Member, OrganizationRecord, SigningKey, UserRecord,
    new_object_id,
};
use crate::{Store, StoreError};

/// Runs every scenario against `store` (which should start empty).
pub async fn run_all(store: Arc<dyn Store>) {
    primitives(&store).await;
    failed_batch_leaves_nothing(&store).await;
    users_and_organizations(&store).await;
    applications_and_services(&store).await;
    application_names_are_unique_per_user(&store).await;
    concurrent_instance_numbers(&store).await;
    ipam_updates(&store).await;
    service_with_ipam(&store).await;
    signing_key_is_created_once(&store).await;
    clusters(&store).await;
    join_tokens(&store).await;
    leftovers_are_invisible_and_repaired(&store).await;
    corrupt_documents_are_reported(&store).await;
}

fn sla() -> Sla {
    parse_and_validate(include_str!(
        "../../../examples/sla-clientsrvr-container.json"
    ))
    .expect("example SLA is valid")
}

/// An application of `user` with the example's services, not yet stored.
pub fn sample_application(user: &str, name: &str) -> (ApplicationRecord, Vec<ServiceRecord>) {
    let sla = sla();
    let mut app_sla = sla.applications[0].clone();
    app_sla.application_name = name.to_owned();
    let app_id = new_object_id();
    let app = ApplicationRecord::new(app_id, user, &app_sla);
    let services = app_sla
        .microservices
        .iter()
        .map(|m| ServiceRecord::new(new_object_id(), app_id, &app_sla, m))
        .collect();
    (app, services)
}

/// A user record with a fresh id.
pub fn sample_user(name: &str) -> UserRecord {
    UserRecord {
        id: new_object_id(),
        name: name.to_owned(),
        email: format!("{name}@example.invalid"),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        created_at: "01/01/2026 10:00".into(),
        token_version: 0,
        extra: Map::new(),
    }
}

/// A cluster record.
pub fn sample_cluster(id: &str, name: &str) -> ClusterRecord {
    ClusterRecord {
        id: ClusterId::from(id),
        name: name.to_owned(),
        location: "48.26,11.67".into(),
        ip: Some("127.0.0.1".into()),
        port: Some(10100),
        resources: Default::default(),
        active: true,
        last_seen: Some(1_700_000_000.5),
        registered_at: Some(1_700_000_000.0),
        join_token_id: Some("tok1".into()),
        extra: Map::new(),
    }
}

async fn primitives(store: &Arc<dyn Store>) {
    let c = Collection::JoinTokens;
    let id = format!("prim-{}", new_object_id());
    assert!(store.get(c, &id).await.unwrap().is_none());
    let v1 = json!({"_id": id, "hash": "h1", "n": 1, "f": 1.5, "nested": {"a": [1, "x", null]}});
    store
        .commit(vec![Write::insert(c, &id, v1.clone())])
        .await
        .unwrap();
    let doc = store.get(c, &id).await.unwrap().expect("inserted");
    assert_eq!(doc.rev, 1);
    assert_eq!(doc.body, v1, "{}: body round-trips", store.describe());
    let again = store.commit(vec![Write::insert(c, &id, v1.clone())]).await;
    assert!(
        matches!(again, Err(StoreError::Conflict { .. })),
        "{again:?}"
    );

    let v2 = json!({"_id": id, "hash": "h2", "n": 2});
    store
        .commit(vec![Write::replace(c, &id, 1, v1.clone(), v2.clone())])
        .await
        .unwrap();
    let stale = store
        .commit(vec![Write::replace(c, &id, 1, v1.clone(), v1.clone())])
        .await;
    assert!(matches!(stale, Err(StoreError::Stale { .. })), "{stale:?}");
    let doc = store.get(c, &id).await.unwrap().unwrap();
    assert_eq!((doc.rev, &doc.body), (2, &v2));

    let found = store.find_eq(c, "hash", &json!("h2")).await.unwrap();
    assert!(found.iter().any(|d| d.id == id));
    assert!(
        store
            .find_eq(c, "hash", &json!("h1"))
            .await
            .unwrap()
            .iter()
            .all(|d| d.id != id)
    );
    assert!(store.list(c).await.unwrap().iter().any(|d| d.id == id));

    store
        .commit(vec![Write::check(c, &id, crate::Expect::Rev(2))])
        .await
        .unwrap();
    let bad_delete = store.commit(vec![Write::delete(c, &id, 1, v1)]).await;
    assert!(matches!(bad_delete, Err(StoreError::Stale { .. })));
    store
        .commit(vec![Write::delete(c, &id, 2, v2)])
        .await
        .unwrap();
    assert!(store.get(c, &id).await.unwrap().is_none());
    store.commit(vec![Write::delete_any(c, &id)]).await.unwrap();
}

/// A batch of inserts whose last write fails leaves nothing behind: atomically on
/// multi-document backends, by rollback on per-document ones.
async fn failed_batch_leaves_nothing(store: &Arc<dyn Store>) {
    let c = Collection::JoinTokens;
    let taken = format!("taken-{}", new_object_id());
    store
        .commit(vec![Write::insert(
            c,
            &taken,
            json!({"_id": taken, "hash": "t"}),
        )])
        .await
        .unwrap();
    let a = format!("a-{}", new_object_id());
    let b = format!("b-{}", new_object_id());
    let res = store
        .commit(vec![
            Write::insert(c, &a, json!({"_id": a, "hash": "a"})),
            Write::insert(c, &b, json!({"_id": b, "hash": "b"})),
            Write::insert(c, &taken, json!({"_id": taken, "hash": "again"})),
        ])
        .await;
    assert!(matches!(res, Err(StoreError::Conflict { .. })), "{res:?}");
    assert!(
        store.get(c, &a).await.unwrap().is_none(),
        "{}",
        store.describe()
    );
    assert!(store.get(c, &b).await.unwrap().is_none());
    assert_eq!(
        store.get(c, &taken).await.unwrap().unwrap().body["hash"],
        "t"
    );

    if store.atomicity() == Atomicity::MultiDocument {
        // A replace followed by a failing check is undone too.
        let doc = store.get(c, &taken).await.unwrap().unwrap();
        let res = store
            .commit(vec![
                Write::replace(
                    c,
                    &taken,
                    doc.rev,
                    doc.body.clone(),
                    json!({"_id": taken, "hash": "x"}),
                ),
                Write::check(c, &a, crate::Expect::Rev(7)),
            ])
            .await;
        assert!(matches!(res, Err(StoreError::Stale { .. })));
        assert_eq!(store.get(c, &taken).await.unwrap().unwrap(), doc);
    }
}

async fn users_and_organizations(store: &Arc<dyn Store>) {
    let name = format!("alice{}", new_object_id());
    let user = sample_user(&name);
    store.create_user(&user).await.unwrap();
    assert_eq!(store.get_user(user.id).await.unwrap().as_ref(), Some(&user));
    assert_eq!(
        store.user_by_name(&name).await.unwrap().as_ref(),
        Some(&user)
    );
    assert!(store.list_users().await.unwrap().contains(&user));

    let dup = store.create_user(&sample_user(&name)).await;
    match dup {
        Err(StoreError::Conflict { what, .. }) => assert!(what.contains(&name), "{what}"),
        other => panic!("duplicate user name must conflict, got {other:?}"),
    }

    // Rename frees the old name and takes the new one.
    let renamed = format!("bob{}", new_object_id());
    store
        .update_user(user.id, |u| {
            u.name = renamed.clone();
            u.extra.insert("note".into(), json!("x"));
            Ok::<_, StoreError>(())
        })
        .await
        .unwrap();
    assert!(store.user_by_name(&name).await.unwrap().is_none());
    assert_eq!(
        store.user_by_name(&renamed).await.unwrap().unwrap().extra["note"],
        "x"
    );
    let other = sample_user(&name);
    store.create_user(&other).await.unwrap();
    let clash = store
        .update_user(other.id, |u| {
            u.name = renamed.clone();
            Ok::<_, StoreError>(())
        })
        .await;
    assert!(
        matches!(clash, Err(StoreError::Conflict { .. })),
        "{clash:?}"
    );
    assert_eq!(store.get_user(other.id).await.unwrap().unwrap().name, name);

    // A closure error writes nothing and comes back as is.
    let err = store
        .update_user(other.id, |u| {
            u.email = "changed".into();
            Err::<(), _>(StoreError::Invalid {
                kind: "user",
                what: "test".into(),
            })
        })
        .await;
    assert!(matches!(err, Err(StoreError::Invalid { .. })));
    assert_ne!(
        store.get_user(other.id).await.unwrap().unwrap().email,
        "changed"
    );

    let missing = store
        .update_user(new_object_id(), |_| Ok::<_, StoreError>(()))
        .await;
    assert!(matches!(
        missing,
        Err(StoreError::NotFound { kind: "user", .. })
    ));

    let org_name = format!("org{}", new_object_id());
    let org = OrganizationRecord {
        id: new_object_id(),
        name: org_name.clone(),
        members: vec![
            Member {
                user_id: user.id.to_string(),
                roles: vec!["Admin".into()],
            },
            Member {
                user_id: other.id.to_string(),
                roles: vec![],
            },
        ],
        extra: Map::new(),
    };
    store.create_organization(&org).await.unwrap();
    let dup = OrganizationRecord {
        id: new_object_id(),
        ..org.clone()
    };
    assert!(
        store
            .create_organization(&dup)
            .await
            .unwrap_err()
            .is_conflict()
    );
    let got = store
        .organization_by_name(&org_name)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.roles_of(&user.id.to_string()), ["Admin".to_string()]);
    assert_eq!(store.get_organization(org.id).await.unwrap().unwrap(), org);

    let deleted = store.delete_user(user.id).await.unwrap();
    assert_eq!(deleted.id, user.id);
    assert!(store.get_user(user.id).await.unwrap().is_none());
    assert!(store.user_by_name(&renamed).await.unwrap().is_none());
    let org_after = store.get_organization(org.id).await.unwrap().unwrap();
    assert_eq!(org_after.members.len(), 1);
    assert!(store.delete_user(user.id).await.unwrap_err().is_not_found());
    // The freed name can be used again.
    store.create_user(&sample_user(&renamed)).await.unwrap();

    store.delete_organization(org.id).await.unwrap();
    assert!(
        store
            .organization_by_name(&org_name)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        !store
            .list_organizations()
            .await
            .unwrap()
            .iter()
            .any(|o| o.id == org.id)
    );
}

async fn applications_and_services(store: &Arc<dyn Store>) {
    let user = format!("user{}", new_object_id());
    let (app, services) = sample_application(&user, "clientsrvr");
    assert_eq!(services.len(), 2);
    let stored = store.create_application(&app, &services).await.unwrap();
    assert_eq!(
        stored.microservices,
        services.iter().map(|s| s.id).collect::<Vec<_>>()
    );
    assert_eq!(
        store.get_application(app.id).await.unwrap().unwrap(),
        stored
    );
    assert_eq!(
        store.list_applications_of(&user).await.unwrap(),
        vec![stored.clone()]
    );
    assert!(store.list_applications().await.unwrap().contains(&stored));
    assert_eq!(
        store
            .application_by_name(&user, "clientsrvr", &app.application_namespace)
            .await
            .unwrap()
            .unwrap()
            .id,
        app.id
    );
    assert_eq!(store.list_services(app.id).await.unwrap(), services);
    assert_eq!(
        store.get_service(services[1].id).await.unwrap().unwrap(),
        services[1]
    );
    let all = store.list_all_services().await.unwrap();
    assert!(services.iter().all(|s| all.contains(s)));

    // A service referring to another application cannot be created with this one.
    let (other_app, other_services) = sample_application(&user, "other");
    let bad = store.create_application(&app, &other_services).await;
    assert!(matches!(bad, Err(StoreError::Invalid { .. })), "{bad:?}");

    // Add a service to an existing application.
    let mut extra_service = other_services[0].clone();
    extra_service.id = new_object_id();
    extra_service.application_id = app.id;
    store.add_service(&extra_service).await.unwrap();
    let listed = store.list_services(app.id).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[2].id, extra_service.id);
    let mut orphan = extra_service.clone();
    orphan.id = new_object_id();
    orphan.application_id = other_app.id;
    assert!(store.add_service(&orphan).await.unwrap_err().is_not_found());
    assert!(store.get_service(orphan.id).await.unwrap().is_none());

    // Update: status and an instance.
    store
        .update_service(extra_service.id, |s| {
            let n = s.next_instance_progressive_number;
            s.next_instance_progressive_number += 1;
            s.instance_list.push(InstanceRecord::new(
                n,
                PositiveSchedulingStatus::ClusterScheduled,
            ));
            Ok::<_, StoreError>(n)
        })
        .await
        .unwrap();
    let s = store.get_service(extra_service.id).await.unwrap().unwrap();
    assert_eq!(s.instance_list.len(), 1);
    assert_eq!(s.next_instance_progressive_number, 1);
    let missing = store
        .update_service(new_object_id(), |_| Ok::<_, StoreError>(()))
        .await;
    assert!(missing.unwrap_err().is_not_found());

    // Delete one service.
    let gone = store.delete_service(services[0].id).await.unwrap();
    assert_eq!(gone.id, services[0].id);
    assert!(store.get_service(services[0].id).await.unwrap().is_none());
    assert!(
        !store
            .get_application(app.id)
            .await
            .unwrap()
            .unwrap()
            .microservices
            .contains(&services[0].id)
    );
    assert!(
        store
            .delete_service(services[0].id)
            .await
            .unwrap_err()
            .is_not_found()
    );

    // Update the application itself.
    store
        .update_application(app.id, |a| {
            a.application_desc = "changed".into();
            Ok::<_, StoreError>(())
        })
        .await
        .unwrap();
    assert_eq!(
        store
            .get_application(app.id)
            .await
            .unwrap()
            .unwrap()
            .application_desc,
        "changed"
    );

    // Delete the application with its services.
    let (deleted_app, deleted_services) = store.delete_application(app.id).await.unwrap();
    assert_eq!(deleted_app.id, app.id);
    assert_eq!(deleted_services.len(), 2);
    assert!(store.get_application(app.id).await.unwrap().is_none());
    assert!(
        store
            .get(Collection::Services, &services[1].id.to_string())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .get(Collection::Services, &extra_service.id.to_string())
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.list_applications_of(&user).await.unwrap().is_empty());
    assert!(store.list_services(app.id).await.unwrap().is_empty());
    assert!(
        store
            .delete_application(app.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    // Its name is free again.
    let (again, again_services) = sample_application(&user, "clientsrvr");
    store
        .create_application(&again, &again_services)
        .await
        .unwrap();
}

async fn application_names_are_unique_per_user(store: &Arc<dyn Store>) {
    let user = format!("user{}", new_object_id());
    let (app, services) = sample_application(&user, "dup");
    store.create_application(&app, &services).await.unwrap();
    let (app2, services2) = sample_application(&user, "dup");
    let err = store
        .create_application(&app2, &services2)
        .await
        .unwrap_err();
    match &err {
        StoreError::Conflict { what, .. } => assert!(what.contains("\"dup\""), "{what}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // All or nothing: none of the second application's services exist.
    for s in &services2 {
        assert!(
            store
                .get(Collection::Services, &s.id.to_string())
                .await
                .unwrap()
                .is_none()
        );
    }
    assert!(store.get_application(app2.id).await.unwrap().is_none());
    // Another user may use the same name.
    let (app3, services3) = sample_application(&format!("other{user}"), "dup");
    store.create_application(&app3, &services3).await.unwrap();
    // Renaming onto a taken name conflicts; to a free one works.
    let (app4, services4) = sample_application(&user, "dup2");
    store.create_application(&app4, &services4).await.unwrap();
    let clash = store
        .update_application(app4.id, |a| {
            a.application_name = "dup".into();
            Ok::<_, StoreError>(())
        })
        .await;
    assert!(clash.unwrap_err().is_conflict());
    store
        .update_application(app4.id, |a| {
            a.application_name = "dup3".into();
            Ok::<_, StoreError>(())
        })
        .await
        .unwrap();
    let (app5, services5) = sample_application(&user, "dup2");
    store.create_application(&app5, &services5).await.unwrap();

    // Concurrent creation of the same name: exactly one wins.
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let store = Arc::clone(store);
        let user = user.clone();
        tasks.push(tokio::spawn(async move {
            let (a, s) = sample_application(&user, "race");
            store.create_application(&a, &s).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert!(e.is_conflict(), "{e:?}"),
        }
    }
    assert_eq!(ok, 1);
}

async fn concurrent_instance_numbers(store: &Arc<dyn Store>) {
    let (app, services) = sample_application(&format!("u{}", new_object_id()), "scale");
    store.create_application(&app, &services).await.unwrap();
    let sid = services[0].id;
    const N: u32 = 12;
    let mut tasks = Vec::new();
    for _ in 0..N {
        let store = Arc::clone(store);
        tasks.push(tokio::spawn(async move {
            store
                .update_service(sid, |s| {
                    let n = s.next_instance_progressive_number;
                    s.next_instance_progressive_number = n + 1;
                    s.instance_list
                        .push(InstanceRecord::new(n, PositiveSchedulingStatus::Requested));
                    Ok::<_, StoreError>(n)
                })
                .await
                .unwrap()
        }));
    }
    let mut numbers = Vec::new();
    for t in tasks {
        numbers.push(t.await.unwrap());
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (0..N).collect::<Vec<_>>());
    let s = store.get_service(sid).await.unwrap().unwrap();
    assert_eq!(s.next_instance_progressive_number, N);
    let mut listed: Vec<u32> = s.instance_list.iter().map(|i| i.instance_number).collect();
    listed.sort_unstable();
    assert_eq!(listed, numbers);
}

async fn ipam_updates(store: &Arc<dyn Store>) {
    #[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
    struct Counter {
        next: u32,
        held: Vec<u32>,
    }
    let before: Counter = store.ipam().await.unwrap();
    let start = before.next;
    const N: u32 = 10;
    let mut tasks = Vec::new();
    for _ in 0..N {
        let store = Arc::clone(store);
        tasks.push(tokio::spawn(async move {
            store
                .update_ipam(|c: &mut Counter| {
                    let n = c.next;
                    c.next += 1;
                    c.held.push(n);
                    Ok::<_, StoreError>(n)
                })
                .await
                .unwrap()
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    got.sort_unstable();
    assert_eq!(got, (start..start + N).collect::<Vec<_>>());
    let after: Counter = store.ipam().await.unwrap();
    assert_eq!(after.next, start + N);
    // An error aborts without writing.
    let res = store
        .update_ipam(|c: &mut Counter| {
            c.next = 999;
            Err::<(), _>(StoreError::Backend("no".into()))
        })
        .await;
    assert!(res.is_err());
    assert_eq!(store.ipam::<Counter>().await.unwrap().next, start + N);
    // The raw JSON view works too.
    let raw: Value = store.ipam().await.unwrap();
    assert_eq!(raw["next"], start + N);
}

async fn service_with_ipam(store: &Arc<dyn Store>) {
    let (app, services) = sample_application(&format!("u{}", new_object_id()), "ipam");
    store.create_application(&app, &services).await.unwrap();
    let sid = services[1].id;
    const N: u32 = 8;
    let mut tasks = Vec::new();
    for _ in 0..N {
        let store = Arc::clone(store);
        tasks.push(tokio::spawn(async move {
            store
                .update_service_with_ipam(sid, |s, pool: &mut Value| {
                    // Other scenarios share the IPAM document: use keys of our own.
                    if !pool.is_object() {
                        *pool = json!({});
                    }
                    if pool.get("svc_next_host").is_none() {
                        pool["svc_next_host"] = json!(1);
                        pool["svc_held"] = json!({});
                    }
                    let host = pool["svc_next_host"].as_u64().unwrap();
                    pool["svc_next_host"] = json!(host + 1);
                    let n = s.next_instance_progressive_number;
                    pool["svc_held"][format!("{sid}/{n}")] = json!(host);
                    s.next_instance_progressive_number = n + 1;
                    let mut inst =
                        InstanceRecord::new(n, PositiveSchedulingStatus::ClusterScheduled);
                    inst.instance_ip = Some(std::net::Ipv4Addr::new(10, 30, 0, host as u8));
                    s.instance_list.push(inst);
                    Ok::<_, StoreError>(n)
                })
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let s = store.get_service(sid).await.unwrap().unwrap();
    let pool: Value = store.ipam().await.unwrap();
    // Every instance's address is the one IPAM holds for it, and no address is used twice.
    let mut ips = Vec::new();
    for inst in &s.instance_list {
        let host = pool["svc_held"][format!("{sid}/{}", inst.instance_number)]
            .as_u64()
            .expect("IPAM holds the instance");
        assert_eq!(inst.instance_ip.unwrap().octets()[3] as u64, host);
        ips.push(host);
    }
    ips.sort_unstable();
    ips.dedup();
    assert_eq!(ips.len(), N as usize);
    let missing = store
        .update_service_with_ipam(new_object_id(), |_, _: &mut Value| Ok::<_, StoreError>(()))
        .await;
    assert!(missing.unwrap_err().is_not_found());
}

async fn signing_key_is_created_once(store: &Arc<dyn Store>) {
    let name = format!("jwt{}", new_object_id());
    assert!(store.signing_key(&name).await.unwrap().is_none());
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let store = Arc::clone(store);
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            let candidate = SigningKey {
                algorithm: "HS256".into(),
                key: vec![i; 32],
                created_at: String::new(),
            };
            store
                .get_or_insert_signing_key(&name, &candidate)
                .await
                .unwrap()
        }));
    }
    let mut keys = Vec::new();
    for t in tasks {
        keys.push(t.await.unwrap());
    }
    assert!(
        keys.windows(2).all(|w| w[0] == w[1]),
        "one key for all starts"
    );
    assert_eq!(store.signing_key(&name).await.unwrap().unwrap(), keys[0]);

    // Concurrent replacements of the same key: one wins, every caller gets the winner.
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let store = Arc::clone(store);
        let name = name.clone();
        let expected = keys[0].clone();
        tasks.push(tokio::spawn(async move {
            let replacement = SigningKey {
                algorithm: "HS256+sealed".into(),
                key: vec![100 + i; 60],
                created_at: String::new(),
            };
            store
                .replace_signing_key(&name, &expected, &replacement)
                .await
                .unwrap()
        }));
    }
    let mut replaced = Vec::new();
    for t in tasks {
        replaced.push(t.await.unwrap());
    }
    assert!(replaced.windows(2).all(|w| w[0] == w[1]), "one replacement");
    assert_eq!(replaced[0].algorithm, "HS256+sealed");
    assert_eq!(
        store.signing_key(&name).await.unwrap().unwrap(),
        replaced[0]
    );
    // A replacement expecting an older key changes nothing.
    let stale = store
        .replace_signing_key(&name, &keys[0], &keys[0])
        .await
        .unwrap();
    assert_eq!(stale, replaced[0]);
}

async fn clusters(store: &Arc<dyn Store>) {
    let name = format!("cl{}", new_object_id());
    let first = sample_cluster(&format!("id-{name}"), &name);
    let got = store
        .register_cluster(&first, |_| panic!("no cluster of that name yet"))
        .await
        .unwrap();
    assert_eq!(got, first);
    let second = sample_cluster(&format!("other-{name}"), &name);
    let again = store
        .register_cluster(&second, |c| {
            c.active = false;
            c.location = "elsewhere".into();
        })
        .await
        .unwrap();
    assert_eq!(again.id, first.id, "same name keeps the same id");
    assert_eq!(again.location, "elsewhere");
    assert!(store.get_cluster(&second.id).await.unwrap().is_none());
    assert_eq!(store.cluster_by_name(&name).await.unwrap().unwrap(), again);
    assert!(
        store
            .create_cluster(&second)
            .await
            .unwrap_err()
            .is_conflict()
    );

    store
        .update_cluster(&first.id, |c| {
            c.resources.totals.workers = 3;
            c.last_seen = Some(1_800_000_000.25);
            Ok::<_, StoreError>(())
        })
        .await
        .unwrap();
    let c = store.get_cluster(&first.id).await.unwrap().unwrap();
    assert_eq!(c.resources.totals.workers, 3);
    assert_eq!(c.last_seen, Some(1_800_000_000.25));
    assert!(
        store
            .list_clusters()
            .await
            .unwrap()
            .iter()
            .any(|x| x.id == first.id)
    );

    // Concurrent registrations of one new name create one cluster.
    let race = format!("race{}", new_object_id());
    let mut tasks = Vec::new();
    for i in 0..6 {
        let store = Arc::clone(store);
        let race = race.clone();
        tasks.push(tokio::spawn(async move {
            let cand = sample_cluster(&format!("{race}-{i}"), &race);
            store.register_cluster(&cand, |_| {}).await.unwrap().id
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    let same_name = store
        .list_clusters()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.name == race)
        .count();
    assert_eq!(same_name, 1);

    store.delete_cluster(&first.id).await.unwrap();
    assert!(store.cluster_by_name(&name).await.unwrap().is_none());
    store.create_cluster(&second).await.unwrap();
}

async fn join_tokens(store: &Arc<dyn Store>) {
    let id = format!("tok{}", new_object_id());
    let token = JoinTokenRecord {
        id: id.clone(),
        name: "edge".into(),
        hash: format!("hash-{id}"),
        created_at: "now".into(),
    };
    store.create_join_token(&token).await.unwrap();
    assert!(
        store
            .create_join_token(&token)
            .await
            .unwrap_err()
            .is_conflict()
    );
    assert_eq!(store.join_token(&id).await.unwrap().unwrap(), token);
    assert_eq!(
        store
            .join_token_by_hash(&token.hash)
            .await
            .unwrap()
            .unwrap(),
        token
    );
    assert!(store.list_join_tokens().await.unwrap().contains(&token));
    store.delete_join_token(&id).await.unwrap();
    assert!(store.join_token(&id).await.unwrap().is_none());
    assert!(
        store
            .join_token_by_hash(&token.hash)
            .await
            .unwrap()
            .is_none()
    );
}

/// What a crash part-way through a per-document write sequence can leave behind.
async fn leftovers_are_invisible_and_repaired(store: &Arc<dyn Store>) {
    let user = format!("crash{}", new_object_id());
    // 1. services written, application not: invisible.
    let (app, services) = sample_application(&user, "halfway");
    for s in &services {
        let body = serde_json::to_value(s).unwrap();
        store
            .commit(vec![Write::insert(
                Collection::Services,
                s.id.to_string(),
                body,
            )])
            .await
            .unwrap();
    }
    assert!(store.get_service(services[0].id).await.unwrap().is_none());
    assert!(
        !store
            .list_all_services()
            .await
            .unwrap()
            .iter()
            .any(|s| s.application_id == app.id)
    );
    // 2. a claim without its record: the name is still free.
    let name = format!("ghost{}", new_object_id());
    store
        .commit(vec![Write::insert(
            Collection::UniqueKeys,
            format!("users/{name}"),
            json!({"_id": format!("users/{name}"), "collection": "users", "key": name, "target": new_object_id().to_string()}),
        )])
        .await
        .unwrap();
    assert!(store.user_by_name(&name).await.unwrap().is_none());
    // 3. an application listing a service that does not exist.
    let (app2, mut services2) = sample_application(&user, "dangling");
    let keep = services2.remove(0);
    let mut app2 = app2;
    app2.microservices = vec![keep.id, new_object_id()];
    store
        .create_application(&app2, std::slice::from_ref(&keep))
        .await
        .unwrap();

    let report = store.repair().await.unwrap();
    let orphan_ids: Vec<String> = services.iter().map(|s| s.id.to_string()).collect();
    for id in &orphan_ids {
        assert!(report.orphan_services.contains(id), "{report:?}");
        assert!(store.get(Collection::Services, id).await.unwrap().is_none());
    }
    assert!(report.dangling_unique_keys >= 1, "{report:?}");
    assert!(report.dangling_service_refs >= 1, "{report:?}");
    assert_eq!(
        store
            .get_application(app2.id)
            .await
            .unwrap()
            .unwrap()
            .microservices,
        vec![keep.id]
    );
    assert!(store.repair().await.unwrap().is_clean());
    // The ghost name is usable.
    store.create_user(&sample_user(&name)).await.unwrap();
    // And the application that never got written can be created now.
    store.create_application(&app, &services).await.unwrap();
}

async fn corrupt_documents_are_reported(store: &Arc<dyn Store>) {
    let id: ObjectId = new_object_id();
    store
        .commit(vec![Write::insert(
            Collection::Users,
            id.to_string(),
            json!({"_id": {"$oid": id.to_string()}, "name": 7}),
        )])
        .await
        .unwrap();
    match store.get_user(id).await {
        Err(StoreError::Corrupt { kind, id: got, .. }) => {
            assert_eq!(kind, "user");
            assert_eq!(got, id.to_string());
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    store
        .commit(vec![Write::delete_any(Collection::Users, id.to_string())])
        .await
        .unwrap();
}
