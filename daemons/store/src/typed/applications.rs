//! Applications and their services in the typed store: names unique per user and namespace, services visible only once their application is.

use super::*;

impl dyn Store {
    // ----- applications and services -------------------------------------------------------

    /// Creates an application together with its services, all or nothing. The application's
    /// `microservices` gets every service id appended (if missing); each service must name the
    /// application in `application_id`. [`StoreError::Conflict`] if the user already has an
    /// application with this name and namespace, or an id is taken. Returns the stored
    /// application.
    ///
    /// On [`Atomicity::PerDocument`] backends the services are written first and the
    /// application last, so a crash part-way leaves only invisible services for
    /// `repair`.
    pub async fn create_application(
        &self,
        app: &ApplicationRecord,
        services: &[ServiceRecord],
    ) -> Result<ApplicationRecord, StoreError> {
        let mut created = self
            .create_applications(&[(app.clone(), services.to_vec())])
            .await?;
        Ok(created.remove(0))
    }

    /// Creates several applications with their services in one commit: on a
    /// [`Atomicity::MultiDocument`] backend (redb, memory) all of them exist afterwards or
    /// none, even across a crash. Otherwise as `create_application` for each: services
    /// first, applications last. Returns the stored applications in order.
    pub async fn create_applications(
        &self,
        apps: &[(ApplicationRecord, Vec<ServiceRecord>)],
    ) -> Result<Vec<ApplicationRecord>, StoreError> {
        let mut records = Vec::with_capacity(apps.len());
        for (app, services) in apps {
            let mut app = app.clone();
            for s in services {
                if s.application_id != app.id {
                    return Err(StoreError::Invalid {
                        kind: "service",
                        what: format!(
                            "service {} names application {} but is created with application {}",
                            s.id, s.application_id, app.id
                        ),
                    });
                }
                if !app.microservices.contains(&s.id) {
                    app.microservices.push(s.id);
                }
            }
            let app_id = app.id.to_string();
            let body = encode(Collection::Applications, &app_id, &app)?;
            let keys = app.unique_keys();
            records.push((app, app_id, body, keys));
        }
        let all_keys: Vec<String> = records
            .iter()
            .flat_map(|(_, _, _, keys)| keys.iter().cloned())
            .collect();
        let mut last = None;
        for _ in 0..3 {
            for key in &all_keys {
                self.ensure_claimable::<ApplicationRecord>(key).await?;
            }
            let mut writes = Vec::new();
            for (_, services) in apps {
                for s in services {
                    let sid = s.id.to_string();
                    let body = encode(Collection::Services, &sid, s)?;
                    writes.push(Write::insert(Collection::Services, sid, body));
                }
            }
            for (_, app_id, _, keys) in &records {
                for k in keys {
                    writes.push(Write::insert(
                        Collection::UniqueKeys,
                        claim_id(Collection::Applications, k),
                        claim_body(Collection::Applications, k, app_id),
                    ));
                }
            }
            for (_, app_id, body, _) in &records {
                writes.push(Write::insert(
                    Collection::Applications,
                    app_id.clone(),
                    body.clone(),
                ));
            }
            match self.commit(writes).await {
                Ok(()) => return Ok(records.into_iter().map(|(app, ..)| app).collect()),
                Err(e) if e.is_conflict() || e.is_stale() => {
                    if let Some(c) = self.claim_conflict::<ApplicationRecord>(&all_keys).await? {
                        return Err(c);
                    }
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        let first = records
            .first()
            .map(|(_, id, ..)| id.clone())
            .unwrap_or_default();
        Err(last.unwrap_or_else(|| stale(Collection::Applications, &first)))
    }

    /// An application by id.
    pub async fn get_application(
        &self,
        id: ObjectId,
    ) -> Result<Option<ApplicationRecord>, StoreError> {
        self.get_record(&id.to_string()).await
    }

    /// Every application, ordered by id (= creation time).
    pub async fn list_applications(&self) -> Result<Vec<ApplicationRecord>, StoreError> {
        self.list_records().await
    }

    /// The applications of one user (`userId` = user name).
    pub async fn list_applications_of(
        &self,
        user: &str,
    ) -> Result<Vec<ApplicationRecord>, StoreError> {
        self.find_records("userId", &Value::String(user.to_owned()))
            .await
    }

    /// The application of `user` with this name and namespace.
    pub async fn application_by_name(
        &self,
        user: &str,
        name: &str,
        namespace: &str,
    ) -> Result<Option<ApplicationRecord>, StoreError> {
        self.find_by_unique_key(&app_key(user, name, namespace))
            .await
    }

    /// Read-modify-write of an application. Renaming it to a name the user already uses gives
    /// [`StoreError::Conflict`].
    pub async fn update_application<T: Send, E: From<StoreError> + Send>(
        &self,
        id: ObjectId,
        f: impl FnMut(&mut ApplicationRecord) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        self.update_record(&id.to_string(), f).await
    }

    /// Deletes an application and its services; returns both so the caller can undeploy
    /// instances and release addresses. The application goes first, so on
    /// [`Atomicity::PerDocument`] backends a crash part-way leaves only invisible services.
    pub async fn delete_application(
        &self,
        id: ObjectId,
    ) -> Result<(ApplicationRecord, Vec<ServiceRecord>), StoreError> {
        let app_id = id.to_string();
        for _ in 0..MAX_ATTEMPTS {
            let Some(doc) = self.get(Collection::Applications, &app_id).await? else {
                return Err(StoreError::NotFound {
                    kind: "application",
                    id: app_id,
                });
            };
            let app: ApplicationRecord = decode(Collection::Applications, &doc)?;
            let services = self.list_services(id).await?;
            let mut writes = vec![Write::delete(
                Collection::Applications,
                &app_id,
                doc.rev,
                doc.body,
            )];
            writes.extend(
                self.release_claims::<ApplicationRecord>(&app.unique_keys(), &app_id)
                    .await?,
            );
            // Every service naming this application, listed or not (leftovers included).
            let all = self
                .find_eq(
                    Collection::Services,
                    "applicationID",
                    &Value::String(app_id.clone()),
                )
                .await?;
            for s in all {
                writes.push(Write::delete(Collection::Services, s.id, s.rev, s.body));
            }
            match self.commit(writes).await {
                Ok(()) => return Ok((app, services)),
                Err(e) if e.is_stale() => tokio::task::yield_now().await,
                Err(e) => return Err(e),
            }
        }
        Err(stale(Collection::Applications, &app_id))
    }

    /// Whether `service` is visible: its application exists and lists it.
    pub(super) async fn is_visible(&self, service: &ServiceRecord) -> Result<bool, StoreError> {
        Ok(self
            .get_application(service.application_id)
            .await?
            .is_some_and(|a| a.microservices.contains(&service.id)))
    }

    /// A service (job) by id; `None` also for a leftover whose application does not list it.
    pub async fn get_service(&self, id: ObjectId) -> Result<Option<ServiceRecord>, StoreError> {
        match self.get_record::<ServiceRecord>(&id.to_string()).await? {
            Some(s) if self.is_visible(&s).await? => Ok(Some(s)),
            _ => Ok(None),
        }
    }

    /// The services of an application, in the order of its `microservices` list (empty if the
    /// application does not exist).
    pub async fn list_services(&self, app_id: ObjectId) -> Result<Vec<ServiceRecord>, StoreError> {
        let Some(app) = self.get_application(app_id).await? else {
            return Ok(Vec::new());
        };
        let found: Vec<ServiceRecord> = self
            .find_records("applicationID", &Value::String(app_id.to_string()))
            .await?;
        Ok(app
            .microservices
            .iter()
            .filter_map(|sid| found.iter().find(|s| s.id == *sid).cloned())
            .collect())
    }

    /// Every visible service, ordered by id.
    pub async fn list_all_services(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        let listed: BTreeSet<ObjectId> = self
            .list_applications()
            .await?
            .into_iter()
            .flat_map(|a| a.microservices)
            .collect();
        let mut all: Vec<ServiceRecord> = self.list_records().await?;
        all.retain(|s| listed.contains(&s.id));
        Ok(all)
    }

    /// Adds a service to an existing application: the service is written, then the
    /// application's `microservices` gets its id (one commit where the backend can).
    /// [`StoreError::NotFound`] if the application does not exist.
    pub async fn add_service(&self, service: &ServiceRecord) -> Result<(), StoreError> {
        let sid = service.id.to_string();
        let app_id = service.application_id.to_string();
        let body = encode(Collection::Services, &sid, service)?;
        for _ in 0..MAX_ATTEMPTS {
            let Some(doc) = self.get(Collection::Applications, &app_id).await? else {
                return Err(StoreError::NotFound {
                    kind: "application",
                    id: app_id,
                });
            };
            let mut app: ApplicationRecord = decode(Collection::Applications, &doc)?;
            if !app.microservices.contains(&service.id) {
                app.microservices.push(service.id);
            }
            let app_body = encode(Collection::Applications, &app_id, &app)?;
            let writes = vec![
                Write::insert(Collection::Services, &sid, body.clone()),
                Write::replace(
                    Collection::Applications,
                    &app_id,
                    doc.rev,
                    doc.body,
                    app_body,
                ),
            ];
            match self.commit(writes).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_stale() => tokio::task::yield_now().await,
                Err(e) => return Err(e),
            }
        }
        Err(stale(Collection::Applications, &app_id))
    }

    /// Read-modify-write of one service under optimistic concurrency, e.g. "take the next
    /// instance number and record the instance" in one step (see
    /// `update_record`). [`StoreError::NotFound`] if the service
    /// does not exist or is not visible.
    pub async fn update_service<T: Send, E: From<StoreError> + Send>(
        &self,
        id: ObjectId,
        f: impl FnMut(&mut ServiceRecord) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        if self.get_service(id).await?.is_none() {
            return Err(StoreError::NotFound {
                kind: "service",
                id: id.to_string(),
            }
            .into());
        }
        self.update_record(&id.to_string(), f).await
    }

    /// Deletes a service: its id is removed from the application first, then the service
    /// document (one commit where the backend can). Returns the deleted service.
    pub async fn delete_service(&self, id: ObjectId) -> Result<ServiceRecord, StoreError> {
        let sid = id.to_string();
        for _ in 0..MAX_ATTEMPTS {
            let not_found = || StoreError::NotFound {
                kind: "service",
                id: sid.clone(),
            };
            let Some(sdoc) = self.get(Collection::Services, &sid).await? else {
                return Err(not_found());
            };
            let service: ServiceRecord = decode(Collection::Services, &sdoc)?;
            let app_id = service.application_id.to_string();
            let Some(adoc) = self.get(Collection::Applications, &app_id).await? else {
                return Err(not_found());
            };
            let mut app: ApplicationRecord = decode(Collection::Applications, &adoc)?;
            if !app.microservices.contains(&id) {
                return Err(not_found());
            }
            app.microservices.retain(|m| *m != id);
            let app_body = encode(Collection::Applications, &app_id, &app)?;
            let writes = vec![
                Write::replace(
                    Collection::Applications,
                    &app_id,
                    adoc.rev,
                    adoc.body,
                    app_body,
                ),
                Write::delete(Collection::Services, &sid, sdoc.rev, sdoc.body),
            ];
            match self.commit(writes).await {
                Ok(()) => return Ok(service),
                Err(e) if e.is_stale() => tokio::task::yield_now().await,
                Err(e) => return Err(e),
            }
        }
        Err(stale(Collection::Services, &sid))
    }
}
