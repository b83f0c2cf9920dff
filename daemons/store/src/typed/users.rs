//! Users and organizations in the typed store.

use super::*;

impl dyn Store {
    // ----- users and organizations ---------------------------------------------------------

    /// A user by id.
    pub async fn get_user(&self, id: ObjectId) -> Result<Option<UserRecord>, StoreError> {
        self.get_record(&id.to_string()).await
    }

    /// A user by (unique) name.
    pub async fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        self.find_by_unique_key(name).await
    }

    /// Every user.
    pub async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.list_records().await
    }

    /// Creates a user. [`StoreError::Conflict`] if the name is taken.
    pub async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        self.insert_record(user).await
    }

    /// Read-modify-write of a user (see `update_record`).
    pub async fn update_user<T: Send, E: From<StoreError> + Send>(
        &self,
        id: ObjectId,
        f: impl FnMut(&mut UserRecord) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        self.update_record(&id.to_string(), f).await
    }

    /// Deletes a user, then removes it from every organization (one commit per organization).
    pub async fn delete_user(&self, id: ObjectId) -> Result<UserRecord, StoreError> {
        let user = self.delete_record::<UserRecord>(&id.to_string()).await?;
        let uid = id.to_string();
        for org in self.list_organizations().await? {
            if org.members.iter().any(|m| m.user_id == uid) {
                let res = self
                    .update_organization(org.id, |o| {
                        o.members.retain(|m| m.user_id != uid);
                        Ok::<_, StoreError>(())
                    })
                    .await;
                match res {
                    Ok(()) | Err(StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(user)
    }

    /// An organization by id.
    pub async fn get_organization(
        &self,
        id: ObjectId,
    ) -> Result<Option<OrganizationRecord>, StoreError> {
        self.get_record(&id.to_string()).await
    }

    /// An organization by (unique) name.
    pub async fn organization_by_name(
        &self,
        name: &str,
    ) -> Result<Option<OrganizationRecord>, StoreError> {
        self.find_by_unique_key(name).await
    }

    /// Every organization.
    pub async fn list_organizations(&self) -> Result<Vec<OrganizationRecord>, StoreError> {
        self.list_records().await
    }

    /// Creates an organization. [`StoreError::Conflict`] if the name is taken.
    pub async fn create_organization(&self, org: &OrganizationRecord) -> Result<(), StoreError> {
        self.insert_record(org).await
    }

    /// Read-modify-write of an organization.
    pub async fn update_organization<T: Send, E: From<StoreError> + Send>(
        &self,
        id: ObjectId,
        f: impl FnMut(&mut OrganizationRecord) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        self.update_record(&id.to_string(), f).await
    }

    /// Deletes an organization.
    pub async fn delete_organization(
        &self,
        id: ObjectId,
    ) -> Result<OrganizationRecord, StoreError> {
        self.delete_record(&id.to_string()).await
    }
}
