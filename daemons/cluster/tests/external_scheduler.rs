//! The external scheduler over HTTP: the PlacementInput JSON it receives, its answer validated,
//! refusals passed through, timeouts and bad answers turned into clear errors.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::routing::post;
use oakestra_cluster::sched::{Placer, SchedulerChoice};
use oakestra_sched::{Candidate, NegativeSchedulingStatus, PlacementRequest};
use serde_json::{Value, json};

/// Serves `answer` for every POST and records the bodies.
async fn serve(answer: Value, delay: Duration) -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/place",
        post(move |Json(body): Json<Value>| {
            let answer = answer.clone();
            let record = record.clone();
            async move {
                record.lock().unwrap().push(body);
                tokio::time::sleep(delay).await;
                Json(answer)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/place", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn candidates() -> Vec<Candidate> {
    ["w1", "w2"]
        .into_iter()
        .map(|n| Candidate {
            name: n.into(),
            cpu_cores: 4.0,
            memory_total_mb: if n == "w1" { 100 } else { 4000 },
            memory_free_mb: if n == "w1" { 100 } else { 4000 },
            virtualization: vec!["container".into()],
            ..Candidate::default()
        })
        .collect()
}

fn request() -> PlacementRequest {
    PlacementRequest {
        service: "app.ns.svc.ns".into(),
        vcpus: 1.0,
        memory_mb: 500,
        virtualization: "container".into(),
        ..PlacementRequest::default()
    }
}

fn placer(url: &str) -> Placer {
    let choice: SchedulerChoice = format!("external:{url}").parse().unwrap();
    Placer::new(choice, Duration::from_millis(500))
}

#[tokio::test]
async fn a_valid_answer_is_used_and_the_input_is_the_documented_json() {
    let (url, seen) = serve(json!({"candidate": "w2"}), Duration::ZERO).await;
    assert_eq!(
        placer(&url).place(&request(), &candidates()).await.unwrap(),
        "w2"
    );
    let body = seen.lock().unwrap()[0].clone();
    assert_eq!(body["request"]["service"], "app.ns.svc.ns");
    assert_eq!(body["request"]["memory_mb"], 500);
    assert_eq!(body["candidates"][1]["name"], "w2");
    assert_eq!(body["candidates"][1]["memory_free_mb"], 4000);
}

#[tokio::test]
async fn an_answer_that_breaks_a_constraint_is_refused() {
    let (url, _) = serve(json!({"candidate": "w1"}), Duration::ZERO).await;
    let no = placer(&url)
        .place(&request(), &candidates())
        .await
        .unwrap_err();
    assert_eq!(no.status, NegativeSchedulingStatus::NoWorkerCapacity);
    assert!(
        no.detail.contains("w1") && no.detail.contains(&url),
        "{}",
        no.detail
    );
    let (url, _) = serve(json!({"candidate": "nope"}), Duration::ZERO).await;
    let no = placer(&url)
        .place(&request(), &candidates())
        .await
        .unwrap_err();
    assert!(no.detail.contains("not a candidate"), "{}", no.detail);
}

#[tokio::test]
async fn refusals_pass_through_and_garbage_is_explained() {
    let (url, _) = serve(
        json!({"status": "NO_QUALIFIED_WORKER_FOUND", "detail": "no GPU anywhere"}),
        Duration::ZERO,
    )
    .await;
    let no = placer(&url)
        .place(&request(), &candidates())
        .await
        .unwrap_err();
    assert_eq!(no.status, NegativeSchedulingStatus::NoQualifiedWorkerFound);
    assert_eq!(no.detail, "no GPU anywhere");
    let (url, _) = serve(json!({"pick": 1}), Duration::ZERO).await;
    let no = placer(&url)
        .place(&request(), &candidates())
        .await
        .unwrap_err();
    assert!(no.detail.contains("{\"candidate\": …}"), "{}", no.detail);
}

#[tokio::test]
async fn a_slow_scheduler_times_out_clearly() {
    let (url, _) = serve(json!({"candidate": "w2"}), Duration::from_secs(3)).await;
    let no = placer(&url)
        .place(&request(), &candidates())
        .await
        .unwrap_err();
    assert!(
        no.detail.contains("did not answer within 500ms"),
        "{}",
        no.detail
    );
    let no = placer("http://127.0.0.1:9")
        .place(&request(), &candidates())
        .await
        .unwrap_err();
    assert!(no.detail.contains("unreachable"), "{}", no.detail);
}
