//! Health probes (issue 18, our extension of SLA v2.0): `liveness_probe` and
//! `readiness_probe` of a microservice, and the pure decision logic the worker runs them with.
//!
//! A probe is one check — a command run in the container (`exec`, exit code 0 passes), an HTTP
//! GET (`http_get`, a 2xx or 3xx status passes) or a TCP connection (`tcp`, an accepted
//! connection passes) — repeated every `period` seconds after `initial_delay`, each attempt
//! bounded by `timeout`. A passing probe turns failing after `failure_threshold` failures in
//! a row, a failing one passing after `success_threshold` successes in a row
//! ([`ProbeTracker`]). A readiness probe starts failing (an instance is not ready until it
//! proved it); a liveness probe starts passing.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default `period`, seconds.
pub const DEFAULT_PERIOD_S: f64 = 10.0;
/// Default `timeout`, seconds.
pub const DEFAULT_TIMEOUT_S: f64 = 1.0;
/// Default `initial_delay`, seconds.
pub const DEFAULT_INITIAL_DELAY_S: f64 = 0.0;
/// Default `failure_threshold`.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
/// Default `success_threshold`.
pub const DEFAULT_SUCCESS_THRESHOLD: u32 = 1;
/// Smallest `period` and `timeout`, seconds.
pub const MIN_INTERVAL_S: f64 = 0.1;
/// Largest `period`, `timeout` and `initial_delay`, seconds.
pub const MAX_INTERVAL_S: f64 = 3600.0;
/// Largest `failure_threshold` and `success_threshold`.
pub const MAX_THRESHOLD: u32 = 100;
/// Most entries of an `exec` command.
pub const MAX_EXEC_ARGS: usize = 64;
/// Longest `http_get.path`, characters.
pub const MAX_HTTP_PATH: usize = 1024;

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeAction {
    /// Run this command (argv) inside the container; exit code 0 passes.
    Exec(Vec<String>),
    /// `GET path` on the instance's `port`; a 2xx or 3xx status passes.
    HttpGet {
        /// The instance's (container) port.
        port: u16,
        /// The request path, starting with `/` (default `/`).
        #[serde(default = "root_path")]
        path: String,
    },
    /// A TCP connection to the instance's `port`; accepted passes.
    Tcp {
        /// The instance's (container) port.
        port: u16,
    },
}

fn root_path() -> String {
    "/".to_owned()
}

impl ProbeAction {
    /// A short description for status details and events (`http_get :8080/ready`).
    pub fn describe(&self) -> String {
        match self {
            Self::Exec(argv) => format!("exec {}", argv.join(" ")),
            Self::HttpGet { port, path } => format!("http_get :{port}{path}"),
            Self::Tcp { port } => format!("tcp :{port}"),
        }
    }
}

/// One probe as written in the descriptor; absent settings take the documented defaults
/// (the accessors return the effective values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// What it checks: exactly one of `exec`, `http_get`, `tcp`.
    #[serde(flatten)]
    pub action: ProbeAction,
    /// Seconds between attempts (default 10, 0.1–3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<f64>,
    /// Seconds an attempt may take before it counts as failed (default 1, 0.1–3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// Seconds after the start before the first attempt (default 0, 0–3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay: Option<f64>,
    /// Failures in a row that make a passing probe fail (default 3, 1–100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
    /// Successes in a row that make a failing probe pass (default 1, 1–100; 1 for liveness).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<u32>,
}

fn seconds(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.0, MAX_INTERVAL_S))
}

impl Probe {
    /// A probe with every setting at its default.
    pub fn new(action: ProbeAction) -> Self {
        Self {
            action,
            period: None,
            timeout: None,
            initial_delay: None,
            failure_threshold: None,
            success_threshold: None,
        }
    }

    /// The time between attempts.
    pub fn period(&self) -> Duration {
        seconds(self.period.unwrap_or(DEFAULT_PERIOD_S))
    }

    /// The time one attempt may take.
    pub fn timeout(&self) -> Duration {
        seconds(self.timeout.unwrap_or(DEFAULT_TIMEOUT_S))
    }

    /// The wait before the first attempt.
    pub fn initial_delay(&self) -> Duration {
        seconds(self.initial_delay.unwrap_or(DEFAULT_INITIAL_DELAY_S))
    }

    /// Failures in a row that make a passing probe fail.
    pub fn failure_threshold(&self) -> u32 {
        self.failure_threshold
            .unwrap_or(DEFAULT_FAILURE_THRESHOLD)
            .max(1)
    }

    /// Successes in a row that make a failing probe pass.
    pub fn success_threshold(&self) -> u32 {
        self.success_threshold
            .unwrap_or(DEFAULT_SUCCESS_THRESHOLD)
            .max(1)
    }
}

/// A change of a probe's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It passes now (ready; alive).
    Passing,
    /// It fails now (unready; dead: restart it).
    Failing,
}

/// Counts a probe's results in a row and says when its verdict changes: the whole decision
/// of thresholds, without I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTracker {
    failure_threshold: u32,
    success_threshold: u32,
    passing: bool,
    successes: u32,
    failures: u32,
}

impl ProbeTracker {
    /// A tracker for `probe` whose verdict starts as `passing`.
    pub fn new(probe: &Probe, passing: bool) -> Self {
        Self {
            failure_threshold: probe.failure_threshold(),
            success_threshold: probe.success_threshold(),
            passing,
            successes: 0,
            failures: 0,
        }
    }

    /// A readiness tracker: not ready until `success_threshold` successes.
    pub fn readiness(probe: &Probe) -> Self {
        Self::new(probe, false)
    }

    /// A liveness tracker: alive until `failure_threshold` failures.
    pub fn liveness(probe: &Probe) -> Self {
        Self::new(probe, true)
    }

    /// The current verdict.
    pub fn passing(&self) -> bool {
        self.passing
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records one attempt; returns the new verdict when it changed.
    pub fn record(&mut self, ok: bool) -> Option<Verdict> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if !self.passing && self.successes >= self.success_threshold {
                self.passing = true;
                return Some(Verdict::Passing);
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.passing && self.failures >= self.failure_threshold {
                self.passing = false;
                return Some(Verdict::Failing);
            }
        }
        None
    }
}

/// Whether an HTTP status code passes an `http_get` probe (2xx and 3xx do).
pub fn http_status_passes(code: u16) -> bool {
    (200..400).contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(failures: u32, successes: u32) -> Probe {
        Probe {
            failure_threshold: Some(failures),
            success_threshold: Some(successes),
            ..Probe::new(ProbeAction::Tcp { port: 80 })
        }
    }

    #[test]
    fn readiness_needs_success_threshold_successes_in_a_row() {
        let mut t = ProbeTracker::readiness(&probe(3, 2));
        assert!(!t.passing());
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None, "a failure resets the successes");
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(Verdict::Passing));
        assert!(t.passing());
        assert_eq!(t.record(true), None, "reported once");
    }

    #[test]
    fn failing_needs_failure_threshold_failures_in_a_row() {
        let mut t = ProbeTracker::liveness(&probe(3, 1));
        assert!(t.passing());
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.failures(), 2);
        assert_eq!(t.record(true), None, "a success resets the failures");
        assert_eq!(t.failures(), 0);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(Verdict::Failing));
        assert!(!t.passing());
        assert_eq!(t.record(false), None, "reported once");
        assert_eq!(t.record(true), Some(Verdict::Passing));
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let p = Probe::new(ProbeAction::Exec(vec!["true".into()]));
        assert_eq!(p.period(), Duration::from_secs(10));
        assert_eq!(p.timeout(), Duration::from_secs(1));
        assert_eq!(p.initial_delay(), Duration::ZERO);
        assert_eq!(p.failure_threshold(), 3);
        assert_eq!(p.success_threshold(), 1);
        let mut t = ProbeTracker::readiness(&p);
        assert_eq!(t.record(true), Some(Verdict::Passing));
        let fractional = Probe {
            period: Some(0.5),
            ..p
        };
        assert_eq!(fractional.period(), Duration::from_millis(500));
    }

    #[test]
    fn http_2xx_and_3xx_pass() {
        for code in [200, 204, 301, 399] {
            assert!(http_status_passes(code), "{code}");
        }
        for code in [100, 199, 400, 404, 500, 503] {
            assert!(!http_status_passes(code), "{code}");
        }
    }

    #[test]
    fn wire_shape_is_one_action_key_beside_the_settings() {
        let p = Probe {
            period: Some(2.0),
            ..Probe::new(ProbeAction::HttpGet {
                port: 8080,
                path: "/ready".into(),
            })
        };
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"http_get": {"port": 8080, "path": "/ready"}, "period": 2.0})
        );
        let back: Probe = serde_json::from_value(v).unwrap();
        assert_eq!(back, p);
        let exec: Probe =
            serde_json::from_value(serde_json::json!({"exec": ["cat", "/ok"]})).unwrap();
        assert_eq!(exec.action.describe(), "exec cat /ok");
        let tcp: Probe = serde_json::from_value(serde_json::json!({"tcp": {"port": 80}})).unwrap();
        assert_eq!(tcp.action, ProbeAction::Tcp { port: 80 });
    }
}
