//! Clusters, cluster join tokens and the root's health.

use super::*;

impl Client {
    /// `GET /api/clusters` (no login needed).
    pub async fn clusters(&self) -> Result<Vec<Cluster>> {
        self.send(Method::GET, "/api/clusters", None::<&()>, None)
            .await
    }

    /// `GET /api/clusters/active` (no login needed).
    pub async fn active_clusters(&self) -> Result<Vec<Cluster>> {
        self.send(Method::GET, "/api/clusters/active", None::<&()>, None)
            .await
    }

    /// `GET /api/clusters/<id>/workers` (login; Oakestra-rs only): the cluster's workers, asked
    /// from the connected cluster on demand.
    pub async fn cluster_workers(&self, cluster_id: &str) -> Result<Vec<ClusterWorker>> {
        let path = format!("/api/clusters/{}/workers", segment(cluster_id));
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// `POST /api/join-tokens` (Admin, Oakestra-rs only): a new cluster join token named
    /// `name` (default `cluster`).
    pub async fn create_join_token(&self, name: Option<&str>) -> Result<CreatedJoinToken> {
        let body = NewJoinToken {
            name: name.map(str::to_owned),
        };
        self.call(Method::POST, "/api/join-tokens", Some(&body))
            .await
    }

    /// `GET /api/join-tokens` (Admin, Oakestra-rs only): the stored cluster join tokens.
    pub async fn join_tokens(&self) -> Result<Vec<JoinTokenInfo>> {
        self.call(Method::GET, "/api/join-tokens", None::<&()>)
            .await
    }

    /// `DELETE /api/join-tokens/<id>` (Admin, Oakestra-rs only).
    pub async fn revoke_join_token(&self, id: &str) -> Result<Message> {
        self.call(
            Method::DELETE,
            &format!("/api/join-tokens/{}", segment(id)),
            None::<&()>,
        )
        .await
    }

    /// `GET /health`.
    pub async fn health(&self) -> Result<Value> {
        self.send(Method::GET, "/health", None::<&()>, None).await
    }
}
