//! Clusters, join tokens and signing keys in the typed store.

use super::*;

impl dyn Store {
    // ----- clusters ------------------------------------------------------------------------

    /// A cluster by id.
    pub async fn get_cluster(&self, id: &ClusterId) -> Result<Option<ClusterRecord>, StoreError> {
        self.get_record(id.as_str()).await
    }

    /// A cluster by (unique) name.
    pub async fn cluster_by_name(&self, name: &str) -> Result<Option<ClusterRecord>, StoreError> {
        self.find_by_unique_key(name).await
    }

    /// Every cluster, ordered by id.
    pub async fn list_clusters(&self) -> Result<Vec<ClusterRecord>, StoreError> {
        self.list_records().await
    }

    /// Creates a cluster. [`StoreError::Conflict`] if the id or name is taken.
    pub async fn create_cluster(&self, cluster: &ClusterRecord) -> Result<(), StoreError> {
        self.insert_record(cluster).await
    }

    /// Registration: if a cluster named `candidate.name` exists, `refresh` is applied to it
    /// (its id is kept); otherwise `candidate` is created. Safe against concurrent
    /// registrations of the same name. Returns the stored cluster.
    pub async fn register_cluster(
        &self,
        candidate: &ClusterRecord,
        mut refresh: impl FnMut(&mut ClusterRecord) + Send,
    ) -> Result<ClusterRecord, StoreError> {
        let mut last = None;
        for attempt in 0..MAX_ATTEMPTS {
            if let Some(existing) = self.cluster_by_name(&candidate.name).await? {
                let res = self
                    .update_record(existing.id.as_str(), |c: &mut ClusterRecord| {
                        refresh(c);
                        Ok::<_, StoreError>(c.clone())
                    })
                    .await;
                match res {
                    Err(StoreError::NotFound { .. }) => continue,
                    other => return other,
                }
            }
            match self.insert_record(candidate).await {
                Ok(()) => return Ok(candidate.clone()),
                // Another registration of the name is in flight: wait for it to land.
                Err(e @ StoreError::Conflict { .. }) => {
                    last = Some(e);
                    let wait = (attempt as u64 + 1).min(20);
                    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| stale(Collection::Clusters, candidate.id.as_str())))
    }

    /// Read-modify-write of a cluster.
    pub async fn update_cluster<T: Send, E: From<StoreError> + Send>(
        &self,
        id: &ClusterId,
        f: impl FnMut(&mut ClusterRecord) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        self.update_record(id.as_str(), f).await
    }

    /// Deletes a cluster.
    pub async fn delete_cluster(&self, id: &ClusterId) -> Result<ClusterRecord, StoreError> {
        self.delete_record(id.as_str()).await
    }

    // ----- join tokens and signing keys -----------------------------------------------------

    /// Stores a new join token. [`StoreError::Conflict`] if the id is taken.
    pub async fn create_join_token(&self, token: &JoinTokenRecord) -> Result<(), StoreError> {
        self.insert_record(token).await
    }

    /// A join token by id.
    pub async fn join_token(&self, id: &str) -> Result<Option<JoinTokenRecord>, StoreError> {
        self.get_record(id).await
    }

    /// The join token with this hash.
    pub async fn join_token_by_hash(
        &self,
        hash: &str,
    ) -> Result<Option<JoinTokenRecord>, StoreError> {
        Ok(self
            .find_records::<JoinTokenRecord>("hash", &Value::String(hash.to_owned()))
            .await?
            .into_iter()
            .next())
    }

    /// Every join token.
    pub async fn list_join_tokens(&self) -> Result<Vec<JoinTokenRecord>, StoreError> {
        self.list_records().await
    }

    /// Deletes (revokes) a join token.
    pub async fn delete_join_token(&self, id: &str) -> Result<JoinTokenRecord, StoreError> {
        self.delete_record(id).await
    }

    /// The signing key called `name`, if one was stored.
    pub async fn signing_key(&self, name: &str) -> Result<Option<SigningKey>, StoreError> {
        match self.get(Collection::Meta, &signing_key_id(name)).await? {
            Some(doc) => Ok(Some(decode_field(&doc, "key")?)),
            None => Ok(None),
        }
    }

    /// The signing key called `name`; stores `candidate` first if there is none. Two
    /// concurrent starts get the same key: the insert is conditional on absence.
    pub async fn get_or_insert_signing_key(
        &self,
        name: &str,
        candidate: &SigningKey,
    ) -> Result<SigningKey, StoreError> {
        let id = signing_key_id(name);
        for _ in 0..MAX_ATTEMPTS {
            if let Some(key) = self.signing_key(name).await? {
                return Ok(key);
            }
            let body = meta_body(&id, "key", encode(Collection::Meta, &id, candidate)?);
            match self
                .commit(vec![Write::insert(Collection::Meta, &id, body)])
                .await
            {
                Ok(()) => return Ok(candidate.clone()),
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
        Err(stale(Collection::Meta, &id))
    }

    /// Replaces the signing key called `name` with `replacement` if it is still `expected`
    /// (a re-encoding or rotation at start; two roots doing it at once agree on one result).
    /// Returns the stored key: `replacement`, or whatever another writer put there first.
    pub async fn replace_signing_key(
        &self,
        name: &str,
        expected: &SigningKey,
        replacement: &SigningKey,
    ) -> Result<SigningKey, StoreError> {
        let id = signing_key_id(name);
        let Some(doc) = self.get(Collection::Meta, &id).await? else {
            return self.get_or_insert_signing_key(name, replacement).await;
        };
        let current: SigningKey = decode_field(&doc, "key")?;
        if current != *expected {
            return Ok(current);
        }
        let body = meta_body(&id, "key", encode(Collection::Meta, &id, replacement)?);
        match self
            .commit(vec![Write::replace(
                Collection::Meta,
                &id,
                doc.rev,
                doc.body,
                body,
            )])
            .await
        {
            Ok(()) => Ok(replacement.clone()),
            Err(e) if e.is_stale() || e.is_conflict() => self.signing_key(name).await?.ok_or(e),
            Err(e) => Err(e),
        }
    }
}
