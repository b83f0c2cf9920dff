//! Which worker gets an instance: a built-in `oakestra-sched` algorithm, or an external
//! scheduler over HTTP (`external:http://…`).
//!
//! The external scheduler receives `POST <url>` with the JSON `PlacementInput`
//! (`{"request": {…}, "candidates": [{…}, …]}`) and answers `{"candidate": "<worker id>"}` (a
//! `Placement`) or `{"status": "NO_WORKER_CAPACITY", "detail": "…"}` (a `NoPlacement`). Its
//! answer is checked with `oakestra_sched::validate`: a worker that is not a candidate or
//! fails a hard constraint is refused.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use oakestra_sched::{
    Algorithm, Candidate, NegativeSchedulingStatus, NoPlacement, Placement, PlacementInput,
    PlacementRequest, Scheduler,
};
use serde::Deserialize;

/// The `--scheduler` setting.
#[derive(Debug, Clone, PartialEq)]
pub enum SchedulerChoice {
    /// A built-in algorithm.
    Builtin(Algorithm),
    /// An HTTP endpoint.
    External(String),
}

impl Default for SchedulerChoice {
    fn default() -> Self {
        SchedulerChoice::Builtin(Algorithm::BestFit)
    }
}

impl fmt::Display for SchedulerChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchedulerChoice::Builtin(a) => f.write_str(a.as_str()),
            SchedulerChoice::External(url) => write!(f, "external:{url}"),
        }
    }
}

impl FromStr for SchedulerChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(url) = s.strip_prefix("external:") {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!(
                    "external scheduler {url:?}: expected external:http://host:port/path"
                ));
            }
            return Ok(SchedulerChoice::External(url.to_owned()));
        }
        // `best-fit` and `best_fit` are one algorithm: flags are usually written with dashes.
        s.replace('-', "_")
            .parse::<Algorithm>()
            .map(SchedulerChoice::Builtin)
            .map_err(|e| {
                format!("{e}; or external:http://host:port/path for an external scheduler")
            })
    }
}

/// A scheduler ready to use.
#[derive(Debug, Clone)]
pub struct Placer {
    choice: SchedulerChoice,
    http: reqwest::Client,
    timeout: Duration,
}

/// An external scheduler's answer: a placement or a refusal.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ExternalAnswer {
    Placement(Placement),
    Refusal(NoPlacement),
}

impl Placer {
    /// A placer for `choice`; external calls give up after `timeout`.
    pub fn new(choice: SchedulerChoice, timeout: Duration) -> Self {
        Placer {
            choice,
            http: reqwest::Client::new(),
            timeout,
        }
    }

    /// The setting.
    pub fn choice(&self) -> &SchedulerChoice {
        &self.choice
    }

    /// Picks a worker (its name) for `request`.
    pub async fn place(
        &self,
        request: &PlacementRequest,
        candidates: &[Candidate],
    ) -> Result<String, NoPlacement> {
        match &self.choice {
            SchedulerChoice::Builtin(a) => a.place(request, candidates).map(|p| p.candidate),
            SchedulerChoice::External(url) => self.external(url, request, candidates).await,
        }
    }

    async fn external(
        &self,
        url: &str,
        request: &PlacementRequest,
        candidates: &[Candidate],
    ) -> Result<String, NoPlacement> {
        let failed = |detail: String| NoPlacement {
            status: NegativeSchedulingStatus::NoWorkerCapacity,
            detail,
        };
        let input = PlacementInput {
            request: request.clone(),
            candidates: candidates.to_vec(),
        };
        let response = self
            .http
            .post(url)
            .timeout(self.timeout)
            .json(&input)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    failed(format!(
                        "external scheduler {url} did not answer within {:?}",
                        self.timeout
                    ))
                } else {
                    failed(format!("external scheduler {url} unreachable: {e}"))
                }
            })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| failed(format!("external scheduler {url}: reading the answer: {e}")))?;
        let answer: ExternalAnswer = serde_json::from_slice(&body).map_err(|e| {
            failed(format!(
                "external scheduler {url} answered HTTP {status} with neither \
                 {{\"candidate\": …}} nor {{\"status\": …, \"detail\": …}}: {e}"
            ))
        })?;
        match answer {
            ExternalAnswer::Refusal(no) => Err(no),
            ExternalAnswer::Placement(p) => {
                oakestra_sched::validate(request, candidates, &p)
                    .map_err(|e| failed(format!("external scheduler {url} {e}")))?;
                Ok(p.candidate)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_flag_parses() {
        assert_eq!(
            "best_fit".parse::<SchedulerChoice>().unwrap(),
            SchedulerChoice::Builtin(Algorithm::BestFit)
        );
        assert_eq!(
            "least-loaded".parse::<SchedulerChoice>().unwrap(),
            SchedulerChoice::Builtin(Algorithm::LeastLoaded)
        );
        assert_eq!(
            "external:http://127.0.0.1:9000/place"
                .parse::<SchedulerChoice>()
                .unwrap(),
            SchedulerChoice::External("http://127.0.0.1:9000/place".into())
        );
        assert!("external:ftp://x".parse::<SchedulerChoice>().is_err());
        let e = "fastest".parse::<SchedulerChoice>().unwrap_err();
        assert!(e.contains("external:"), "{e}");
    }
}
