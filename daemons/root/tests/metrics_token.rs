//! `--metrics-token`: `GET /metrics` needs the bearer token when one is set, and the root's
//! monitoring metrics are in the exposition.

use oakestra_root::{Config, StoreLocation};

#[tokio::test]
async fn metrics_need_the_token_when_one_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        grpc_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        store: StoreLocation::Memory,
        metrics_token: Some("s3cret".into()),
        ..Config::default()
    };
    let root = oakestra_root::start(config).await.unwrap();
    let url = format!("http://{}/metrics", root.rest_addr);
    let http = reqwest::Client::new();

    let refused = http.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], 401);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("--metrics-token")
    );
    let wrong = http.get(&url).bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status(), 401);

    let ok = http.get(&url).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let text = ok.text().await.unwrap();
    for line in [
        "oakestra_root_clusters{state=\"active\"} 0",
        "oakestra_root_usage_history_instances 0",
        "# TYPE oakestra_root_deploy_to_running_seconds histogram",
        "# TYPE oakestra_root_scheduling_duration_seconds histogram",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    root.stop().await.unwrap();
}
