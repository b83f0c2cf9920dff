//! Load generator for the root REST API (used by `benches/root_api.sh`).
//!
//! ```text
//! api_load post <url> [clients=32] [per_client=30]   POST /api/application latency
//! api_load get  <url> [connections=64] [seconds=10]  GET /api/applications throughput
//! api_load seed <url> [apps=100]                      create apps for the GET benchmark
//! api_load bulk <url> [apps=1000]                     one user's big descriptor vs another's creates
//! ```
//!
//! `bulk`: user A posts one descriptor of `apps` applications while user B creates single
//! applications one after the other; prints B's create latency before and during A's request
//! (issue 19: one user must not hold everyone's writes).
//!
//! Every mode exits with status 1 when any request failed (a refused connection, a non-2xx
//! answer), so `tests/load/run.sh` (in `scripts/test`) can assert "no errors" with it.
//!
//! `get`: `connections` clients, each with its own keep-alive connection, request the listing
//! in a loop; prints the throughput and the latency percentiles.
//!
//! `post`: every client is its own user (registered by Admin), so the answer — which lists
//! all of the caller's applications, as in Oakestra — stays small, as it is for a real user.
//! Each client creates `per_client` copies of the clientsrvr example (renamed, without the
//! fixed rr_ip so they can coexist) one after the other; the latency of every request is
//! recorded and the percentiles printed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use oakestra_client::{Client, NewUser};
use serde_json::Value;

const CLIENTSRVR: &str = include_str!("../../../examples/sla-clientsrvr-container.json");

fn descriptor(name: &str) -> Value {
    let mut sla: Value = serde_json::from_str(CLIENTSRVR).expect("example parses");
    sla["applications"][0]["application_name"] = Value::String(name.to_owned());
    if let Some(ms) = sla["applications"][0]["microservices"][1].as_object_mut() {
        ms.remove("addresses");
    }
    sla
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn post(url: &str, clients: usize, per_client: usize) {
    let admin = Client::new(url).expect("url");
    admin.login("Admin", "Admin").await.expect("Admin login");
    let run = std::process::id();
    let mut users = Vec::new();
    for i in 0..clients {
        users.push(Arc::new(user(&admin, url, &format!("load{run}u{i}")).await));
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, c) in users.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            let mut errors = 0usize;
            for k in 0..per_client {
                let body = descriptor(&format!("c{i}n{k}"));
                let t = Instant::now();
                match c.create_applications(&body).await {
                    Ok(_) => lat.push(t.elapsed()),
                    Err(e) => {
                        errors += 1;
                        eprintln!("error: {e}");
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.expect("client task");
        all.extend(lat);
        errors += e;
    }
    let wall = started.elapsed();
    all.sort();
    println!(
        "POST /api/application (clientsrvr, 2 services): {} requests, {clients} concurrent clients, \
         {errors} errors, {:.0} req/s; p50 {}, p90 {}, p99 {}, max {}",
        all.len(),
        all.len() as f64 / wall.as_secs_f64(),
        ms(percentile(&all, 0.50)),
        ms(percentile(&all, 0.90)),
        ms(percentile(&all, 0.99)),
        ms(all.last().copied().unwrap_or_default()),
    );
    fail_if(errors > 0);
}

async fn seed(url: &str, apps: usize) {
    let admin = Client::new(url).expect("url");
    admin.login("Admin", "Admin").await.expect("Admin login");
    for i in 0..apps {
        admin
            .create_applications(&descriptor(&format!("seed{i}")))
            .await
            .expect("create a seed application");
    }
    let n = admin.applications().await.expect("list").len();
    println!("{n} applications stored");
}

async fn get(url: &str, connections: usize, seconds: u64) {
    let admin = Client::new(url).expect("url");
    admin.login("Admin", "Admin").await.expect("Admin login");
    let token = admin.access_token().await.expect("token");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .expect("http client");
    let target = format!("{url}/api/applications");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let http = http.clone();
        let target = target.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut bad) = (Vec::new(), 0u64);
            while Instant::now() < deadline {
                let t = Instant::now();
                match http.get(&target).bearer_auth(&token).send().await {
                    Ok(r) if r.status().is_success() => match r.bytes().await {
                        Ok(_) => lat.push(t.elapsed()),
                        Err(e) => {
                            bad += 1;
                            eprintln!("error: reading the listing: {e}");
                        }
                    },
                    Ok(r) => {
                        bad += 1;
                        eprintln!("error: HTTP {}", r.status());
                    }
                    Err(e) => {
                        bad += 1;
                        eprintln!("error: {e}");
                    }
                }
            }
            (lat, bad)
        }));
    }
    let (mut all, mut bad) = (Vec::new(), 0);
    for t in tasks {
        let (lat, b) = t.await.expect("task");
        all.extend(lat);
        bad += b;
    }
    all.sort();
    println!(
        "GET /api/applications: {connections} connections, {seconds} s: {} ok, {bad} failed, \
         {:.0} req/s; p50 {}, p90 {}, p99 {}, max {}",
        all.len(),
        all.len() as f64 / seconds as f64,
        ms(percentile(&all, 0.50)),
        ms(percentile(&all, 0.90)),
        ms(percentile(&all, 0.99)),
        ms(all.last().copied().unwrap_or_default()),
    );
    fail_if(bad > 0);
}

/// Exits with status 1 (after the figures are printed) when a request failed.
fn fail_if(failed: bool) {
    if failed {
        eprintln!("api_load: some requests failed (see above)");
        std::process::exit(1);
    }
}

async fn user(admin: &Client, url: &str, name: &str) -> Client {
    admin
        .register(&NewUser {
            name: name.to_owned(),
            password: "load".into(),
            email: String::new(),
            roles: vec!["Application_Provider".into()],
        })
        .await
        .expect("register a load user");
    let c = Client::new(url).expect("url");
    c.login(name, "load").await.expect("login");
    c
}

async fn bulk(url: &str, apps: usize) {
    let admin = Client::new(url).expect("url");
    admin.login("Admin", "Admin").await.expect("Admin login");
    let run = std::process::id();
    let big = user(&admin, url, &format!("bulk{run}a")).await;
    let small = Arc::new(user(&admin, url, &format!("bulk{run}b")).await);
    let mut many = descriptor("x");
    let template = many["applications"][0].clone();
    many["applications"] = (0..apps)
        .map(|i| {
            let mut app = template.clone();
            app["application_name"] = Value::String(format!("big{i}"));
            app
        })
        .collect();
    // B alone first.
    let mut alone = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        small
            .create_applications(&descriptor(&format!("solo{i}")))
            .await
            .expect("create");
        alone.push(t.elapsed());
    }
    alone.sort();
    // Then B while A's descriptor is being created.
    let a = tokio::spawn(async move {
        let t = Instant::now();
        let r = big.create_applications(&many).await;
        (t.elapsed(), r.map(|v| v.len()))
    });
    let mut during = Vec::new();
    let mut i = 0;
    while !a.is_finished() {
        let t = Instant::now();
        small
            .create_applications(&descriptor(&format!("during{i}")))
            .await
            .expect("create");
        during.push(t.elapsed());
        i += 1;
    }
    let (took, created) = a.await.expect("task");
    during.sort();
    println!(
        "user A: {apps} applications in one descriptor: {} ({:?} applications answered)",
        ms(took),
        created.as_ref().map_err(|e| e.to_string()),
    );
    println!(
        "user B alone: p50 {} p99 {}; during A's request: {} creates, p50 {} p99 {} max {}",
        ms(percentile(&alone, 0.5)),
        ms(percentile(&alone, 0.99)),
        during.len(),
        ms(percentile(&during, 0.5)),
        ms(percentile(&during, 0.99)),
        ms(during.last().copied().unwrap_or_default()),
    );
    fail_if(created.is_err());
}

#[tokio::main]
async fn main() {
    // 1,000 connections need more than the common soft limit of 1,024 descriptors.
    let _ = oakestra_daemon::http::raise_file_limit();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: usize| -> usize {
        args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
    };
    match (args.first().map(String::as_str), args.get(1)) {
        (Some("post"), Some(url)) => post(url, arg(2, 32), arg(3, 30)).await,
        (Some("get"), Some(url)) => get(url, arg(2, 64), arg(3, 10) as u64).await,
        (Some("seed"), Some(url)) => seed(url, arg(2, 100)).await,
        (Some("bulk"), Some(url)) => bulk(url, arg(2, 1000)).await,
        _ => {
            eprintln!(
                "usage: api_load post <url> [clients] [per_client] | get <url> [connections] [seconds] | seed <url> [apps] | bulk <url> [apps]"
            );
            std::process::exit(2);
        }
    }
}
