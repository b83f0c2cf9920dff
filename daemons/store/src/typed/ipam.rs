//! The IPAM document, alone and updated together with a service.

use super::*;

impl dyn Store {
    // ----- IPAM ----------------------------------------------------------------------------

    /// The IPAM state (`T::default()` before the first update). `T` is the address manager
    /// of `oakestra_net::ipam` at the root, or any serde value.
    pub async fn ipam<T: DeserializeOwned + Default>(&self) -> Result<T, StoreError> {
        match self.get(Collection::Meta, IPAM_ID).await? {
            Some(doc) => decode_field(&doc, "state"),
            None => Ok(T::default()),
        }
    }

    /// Read-modify-write of the IPAM state under optimistic concurrency, like
    /// `update_record`: `f` may run more than once, `Err` writes
    /// nothing.
    pub async fn update_ipam<T, R, E>(
        &self,
        f: impl FnMut(&mut T) -> Result<R, E> + Send,
    ) -> Result<R, E>
    where
        T: Serialize + DeserializeOwned + Default + Send,
        R: Send,
        E: From<StoreError> + Send,
    {
        self.update_ipam_with(f, true).await
    }

    /// `update_ipam` committed with [`Store::commit_relaxed`]: for reservations
    /// that a durable commit of their holders' records follows (which makes the reservation
    /// durable too), and whose loss in a crash before that commit costs nothing (the holders
    /// were never stored; the root releases reservations without holders at start). Saves one
    /// fsync per application create.
    pub async fn update_ipam_relaxed<T, R, E>(
        &self,
        f: impl FnMut(&mut T) -> Result<R, E> + Send,
    ) -> Result<R, E>
    where
        T: Serialize + DeserializeOwned + Default + Send,
        R: Send,
        E: From<StoreError> + Send,
    {
        self.update_ipam_with(f, false).await
    }

    async fn update_ipam_with<T, R, E>(
        &self,
        mut f: impl FnMut(&mut T) -> Result<R, E> + Send,
        durable: bool,
    ) -> Result<R, E>
    where
        T: Serialize + DeserializeOwned + Default + Send,
        R: Send,
        E: From<StoreError> + Send,
    {
        let _serialized = match self.ipam_lock() {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        for _ in 0..MAX_ATTEMPTS {
            let doc = self.get(Collection::Meta, IPAM_ID).await?;
            let mut state: T = match &doc {
                Some(d) => decode_field(d, "state")?,
                None => T::default(),
            };
            let out = f(&mut state)?;
            let body = meta_body(IPAM_ID, "state", encode(Collection::Meta, IPAM_ID, &state)?);
            let write = match doc {
                Some(d) if d.body == body => return Ok(out),
                Some(d) => Write::replace(Collection::Meta, IPAM_ID, d.rev, d.body, body),
                None => Write::insert(Collection::Meta, IPAM_ID, body),
            };
            let committed = if durable {
                self.commit(vec![write]).await
            } else {
                self.commit_relaxed(vec![write]).await
            };
            match committed {
                Ok(()) => return Ok(out),
                Err(e) if e.is_stale() || e.is_conflict() => tokio::task::yield_now().await,
                Err(e) => return Err(e.into()),
            }
        }
        Err(stale(Collection::Meta, IPAM_ID).into())
    }

    /// Read-modify-write of one service and the IPAM state together, e.g. "take the next
    /// instance number, allocate its addresses, record the instance". Atomic on
    /// [`Atomicity::MultiDocument`] backends. On [`Atomicity::PerDocument`] backends the IPAM
    /// state is written first, IPAM updates of this process are serialised
    /// ([`Store::ipam_lock`]), and a failed service write rolls the IPAM write back before the
    /// retry; only a crash in between can leak the allocated addresses (held in IPAM,
    /// referenced by no instance) — never hand one out twice.
    pub async fn update_service_with_ipam<T, R, E>(
        &self,
        id: ObjectId,
        mut f: impl FnMut(&mut ServiceRecord, &mut T) -> Result<R, E> + Send,
    ) -> Result<R, E>
    where
        T: Serialize + DeserializeOwned + Default + Send,
        R: Send,
        E: From<StoreError> + Send,
    {
        let sid = id.to_string();
        let not_found = || StoreError::NotFound {
            kind: "service",
            id: sid.clone(),
        };
        let _serialized = match self.ipam_lock() {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        for _ in 0..MAX_ATTEMPTS {
            let ipam_doc = self.get(Collection::Meta, IPAM_ID).await?;
            let Some(sdoc) = self.get(Collection::Services, &sid).await? else {
                return Err(not_found().into());
            };
            let mut service: ServiceRecord = decode(Collection::Services, &sdoc)?;
            if !self.is_visible(&service).await? {
                return Err(not_found().into());
            }
            let mut state: T = match &ipam_doc {
                Some(d) => decode_field(d, "state")?,
                None => T::default(),
            };
            let out = f(&mut service, &mut state)?;
            if service.id != id {
                return Err(StoreError::Invalid {
                    kind: "service",
                    what: format!("an update of {sid} changed its id"),
                }
                .into());
            }
            let ipam_body = meta_body(IPAM_ID, "state", encode(Collection::Meta, IPAM_ID, &state)?);
            let service_body = encode(Collection::Services, &sid, &service)?;
            let mut writes = Vec::with_capacity(2);
            match ipam_doc {
                Some(d) if d.body == ipam_body => {}
                Some(d) => writes.push(Write::replace(
                    Collection::Meta,
                    IPAM_ID,
                    d.rev,
                    d.body,
                    ipam_body,
                )),
                None => writes.push(Write::insert(Collection::Meta, IPAM_ID, ipam_body)),
            }
            if service_body != sdoc.body {
                writes.push(Write::replace(
                    Collection::Services,
                    &sid,
                    sdoc.rev,
                    sdoc.body,
                    service_body,
                ));
            }
            if writes.is_empty() {
                return Ok(out);
            }
            match self.commit(writes).await {
                Ok(()) => return Ok(out),
                Err(e) if e.is_stale() || e.is_conflict() => tokio::task::yield_now().await,
                Err(e) => return Err(e.into()),
            }
        }
        Err(stale(Collection::Services, &sid).into())
    }
}
