//! Users, permissions and organizations.

use super::*;

impl Client {
    /// `POST /api/auth/register` (Admin): a new user with roles in the caller's organization.
    pub async fn register(&self, user: &NewUser) -> Result<User> {
        self.call(Method::POST, "/api/auth/register", Some(user))
            .await
    }

    /// `GET /api/permission/<username>`: the caller's roles.
    pub async fn permissions(&self, username: &str) -> Result<Vec<String>> {
        let r: Roles = self
            .call(
                Method::GET,
                &format!("/api/permission/{}", segment(username)),
                None::<&()>,
            )
            .await?;
        Ok(r.roles)
    }

    /// `GET /api/user/<name>`.
    pub async fn user(&self, username: &str) -> Result<User> {
        self.call(
            Method::GET,
            &format!("/api/user/{}", segment(username)),
            None::<&()>,
        )
        .await
    }

    /// `GET /api/users` (Admin): every user.
    pub async fn users(&self) -> Result<Vec<User>> {
        self.call(Method::GET, "/api/users", None::<&()>).await
    }

    /// `GET /api/users/<organization id>` (Admin): the members of an organization.
    pub async fn organization_users(&self, organization_id: &str) -> Result<Vec<User>> {
        self.call(
            Method::GET,
            &format!("/api/users/{}", segment(organization_id)),
            None::<&()>,
        )
        .await
    }

    /// `PUT /api/user/<name>` (Admin).
    pub async fn update_user(&self, username: &str, update: &UserUpdate) -> Result<Message> {
        self.call(
            Method::PUT,
            &format!("/api/user/{}", segment(username)),
            Some(update),
        )
        .await
    }

    /// `DELETE /api/user/<name>` (Admin): the remaining users.
    pub async fn delete_user(&self, username: &str) -> Result<Vec<User>> {
        self.call(
            Method::DELETE,
            &format!("/api/user/{}", segment(username)),
            None::<&()>,
        )
        .await
    }

    /// `POST /api/user/<name>`: changes the caller's own password. The root revokes every
    /// token issued before; this client goes on with the new tokens of the answer (and the
    /// new password, if it logged in with one).
    pub async fn change_password(&self, username: &str, old: &str, new: &str) -> Result<()> {
        let body = PasswordChange {
            old_password: old.to_owned(),
            new_password: new.to_owned(),
        };
        let answer: Value = self
            .call(
                Method::POST,
                &format!("/api/user/{}", segment(username)),
                Some(&body),
            )
            .await?;
        self.password_changed(username, new, &answer).await;
        Ok(())
    }

    /// `GET /api/organization` (Admin).
    pub async fn organizations(&self) -> Result<Vec<Organization>> {
        self.call(Method::GET, "/api/organization", None::<&()>)
            .await
    }

    /// `POST /api/organization` (Admin): the new organization.
    pub async fn create_organization(&self, spec: &OrganizationSpec) -> Result<Organization> {
        self.call(Method::POST, "/api/organization", Some(spec))
            .await
    }

    /// `PUT /api/organization/<id>` (Admin).
    pub async fn update_organization(&self, id: &str, spec: &OrganizationSpec) -> Result<Message> {
        self.call(
            Method::PUT,
            &format!("/api/organization/{}", segment(id)),
            Some(spec),
        )
        .await
    }

    /// `DELETE /api/organization/<id>` (Admin).
    pub async fn delete_organization(&self, id: &str) -> Result<Message> {
        self.call(
            Method::DELETE,
            &format!("/api/organization/{}", segment(id)),
            None::<&()>,
        )
        .await
    }
}
