//! Applications, services, their instances and instance logs.

use super::*;

impl Client {
    /// `POST /api/application`: creates every application of the descriptor (an SLA as JSON
    /// or an [`oakestra_core::sla::Sla`]) with its services, all or nothing. Returns all of
    /// the caller's applications.
    pub async fn create_applications<S: Serialize + ?Sized>(
        &self,
        sla: &S,
    ) -> Result<Vec<ApplicationRecord>> {
        self.call(Method::POST, "/api/application", Some(sla)).await
    }

    /// `GET /api/application/<id>`.
    pub async fn application(&self, id: &str) -> Result<ApplicationRecord> {
        self.call(
            Method::GET,
            &format!("/api/application/{}", segment(id)),
            None::<&()>,
        )
        .await
    }

    /// `GET /api/applications` (Admin): every application.
    pub async fn applications(&self) -> Result<Vec<ApplicationRecord>> {
        self.call(Method::GET, "/api/applications", None::<&()>)
            .await
    }

    /// `GET /api/applications/<user id>`: the applications of a user (the caller's own, or
    /// any user's for an Admin).
    pub async fn user_applications(&self, user_id: &str) -> Result<Vec<ApplicationRecord>> {
        self.call(
            Method::GET,
            &format!("/api/applications/{}", segment(user_id)),
            None::<&()>,
        )
        .await
    }

    /// `PUT /api/application/<id>`.
    pub async fn update_application(
        &self,
        id: &str,
        update: &ApplicationUpdate,
    ) -> Result<Message> {
        self.call(
            Method::PUT,
            &format!("/api/application/{}", segment(id)),
            Some(update),
        )
        .await
    }

    /// `DELETE /api/application/<id>`: undeploys and deletes its services too.
    pub async fn delete_application(&self, id: &str) -> Result<Message> {
        self.call(
            Method::DELETE,
            &format!("/api/application/{}", segment(id)),
            None::<&()>,
        )
        .await
    }

    /// `POST /api/service`: adds the services of a descriptor whose applications carry the
    /// `applicationID` of existing applications of the caller.
    pub async fn create_services<S: Serialize + ?Sized>(&self, sla: &S) -> Result<ServiceCreation> {
        self.call(Method::POST, "/api/service", Some(sla)).await
    }

    /// `GET /api/service/<id>`.
    pub async fn service(&self, id: &str) -> Result<ServiceRecord> {
        self.call(
            Method::GET,
            &format!("/api/service/{}", segment(id)),
            None::<&()>,
        )
        .await
    }

    /// `GET /api/services` (Admin): every service.
    pub async fn services(&self) -> Result<Vec<ServiceRecord>> {
        self.call(Method::GET, "/api/services", None::<&()>).await
    }

    /// `GET /api/services/<application id>`.
    pub async fn application_services(&self, application_id: &str) -> Result<Vec<ServiceRecord>> {
        self.call(
            Method::GET,
            &format!("/api/services/{}", segment(application_id)),
            None::<&()>,
        )
        .await
    }

    /// `DELETE /api/service/<id>`: undeploys its instances and deletes it.
    pub async fn delete_service(&self, id: &str) -> Result<Message> {
        self.call(
            Method::DELETE,
            &format!("/api/service/{}", segment(id)),
            None::<&()>,
        )
        .await
    }

    /// `PUT /api/service/<id>/replicas` (Oakestra-rs only): sets the service's desired number
    /// of instances (0 to [`oakestra_core::sla::MAX_REPLICAS`]); the root deploys or undeploys
    /// at once and keeps that many from then on.
    pub async fn scale_service(&self, service_id: &str, replicas: u32) -> Result<ScaleAnswer> {
        self.call(
            Method::PUT,
            &format!("/api/service/{}/replicas", segment(service_id)),
            Some(&types::ScaleRequest { replicas }),
        )
        .await
    }

    /// `POST /api/service/<id>/instance`: deploys one more instance.
    pub async fn deploy_instance(&self, service_id: &str) -> Result<DeployAnswer> {
        self.call(
            Method::POST,
            &format!("/api/service/{}/instance", segment(service_id)),
            None::<&()>,
        )
        .await
    }

    /// `POST /api/service/<id>/instance?count=N` (Oakestra-rs only): deploys `count` more
    /// instances as one batch (1 to [`oakestra_proto::rest::MAX_DEPLOY_COUNT`]); returns
    /// them in number order, each with its scheduling status.
    pub async fn deploy_instances(
        &self,
        service_id: &str,
        count: u32,
    ) -> Result<Vec<oakestra_core::model::InstanceRecord>> {
        let answer: DeployAnswer = self
            .call(
                Method::POST,
                &format!(
                    "/api/service/{}/instance?count={count}",
                    segment(service_id)
                ),
                None::<&()>,
            )
            .await?;
        Ok(created_instances(answer))
    }

    /// `DELETE /api/service/<id>/instance/<n>`: undeploys instance `n`, or every instance.
    pub async fn undeploy_instance(
        &self,
        service_id: &str,
        instance: Option<u32>,
    ) -> Result<Message> {
        let n = instance.map_or_else(|| "-1".to_owned(), |n| n.to_string());
        self.call(
            Method::DELETE,
            &format!("/api/service/{}/instance/{n}", segment(service_id)),
            None::<&()>,
        )
        .await
    }

    /// `GET /api/service/<id>/instance/<n>/logs?tail=N`: the log of instance `n` (its last
    /// `tail` lines), as text. The answer's log is `lines` (a list of lines) or `logs` (text),
    /// or the answer is a JSON string.
    pub async fn logs(&self, service_id: &str, instance: u32, tail: Option<u32>) -> Result<String> {
        let mut path = format!(
            "/api/service/{}/instance/{instance}/logs",
            segment(service_id)
        );
        if let Some(n) = tail {
            path.push_str(&format!("?tail={n}"));
        }
        let answer: Value = self.call(Method::GET, &path, None::<&()>).await?;
        log_text(answer).ok_or_else(|| ClientError::Decode {
            method: "GET".to_owned(),
            path,
            message: "expected {\"lines\": [\"<line>\", …]} or {\"logs\": \"<text>\"}".to_owned(),
        })
    }
}

/// The instances a deploy answer names: its `instances`, or, from a root that does not know
/// `count` (it ignores the query and deploys one), its one `instance`.
pub(crate) fn created_instances(answer: DeployAnswer) -> Vec<oakestra_core::model::InstanceRecord> {
    answer
        .instances
        .unwrap_or_else(|| answer.instance.into_iter().collect())
}
