//! `liveness_probe` / `readiness_probe` (issue 18): one action and its settings, each within
//! the documented limits. Unknown keys inside a probe are violations (the field is ours, so
//! nothing older writes other keys there).

use super::*;
use crate::sla::probe::{
    MAX_EXEC_ARGS, MAX_HTTP_PATH, MAX_INTERVAL_S, MAX_THRESHOLD, MIN_INTERVAL_S, Probe, ProbeAction,
};

const ACTIONS: &str = "exactly one of \"exec\" (a command), \"http_get\" ({\"port\", \"path\"}) or \"tcp\" ({\"port\"})";

impl Checker {
    /// The probe under `key` (`liveness_probe` or `readiness_probe`).
    pub(super) fn probe(&mut self, key: &'static str, v: Option<Value>) -> Option<Probe> {
        let m = self.object(key, v, ACTIONS)?;
        self.at(Seg::Key(key), |c| {
            c.probe_fields(key == "liveness_probe", m)
        })
    }

    fn probe_fields(&mut self, liveness: bool, m: Map<String, Value>) -> Option<Probe> {
        let mut m = Fields::new(m);
        let exec = m.take("exec");
        let http_get = m.take("http_get");
        let tcp = m.take("tcp");
        let given = [exec.is_some(), http_get.is_some(), tcp.is_some()]
            .iter()
            .filter(|g| **g)
            .count();
        let mut ok = true;
        if given != 1 {
            self.report(None, format!("must have {ACTIONS}, found {given} of them"));
            ok = false;
        }
        let action = if exec.is_some() {
            self.exec_action(exec)
        } else if http_get.is_some() {
            self.port_action("http_get", http_get)
        } else if tcp.is_some() {
            self.port_action("tcp", tcp)
        } else {
            None
        };
        let period = m.take("period");
        let period = self.interval("period", period, MIN_INTERVAL_S);
        let timeout = m.take("timeout");
        let timeout = self.interval("timeout", timeout, MIN_INTERVAL_S);
        let initial_delay = m.take("initial_delay");
        let initial_delay = self.interval("initial_delay", initial_delay, 0.0);
        let failure_threshold = m.take("failure_threshold");
        let failure_threshold = self.threshold("failure_threshold", failure_threshold);
        let success_threshold = m.take("success_threshold");
        let success_threshold = self.threshold("success_threshold", success_threshold);
        if liveness && success_threshold.is_some_and(|n| n != 1) {
            self.report(
                Some("success_threshold"),
                "must be 1 for a liveness probe (one success shows the instance alive)",
            );
            ok = false;
        }
        for (key, _) in m.into_extra() {
            self.violations.push(Violation {
                path: render(&self.path, Some(&key)),
                message: format!(
                    "unknown probe setting {key:?}: a probe has {ACTIONS} and period, timeout, \
                     initial_delay, failure_threshold, success_threshold"
                ),
            });
            ok = false;
        }
        let action = action?;
        ok.then_some(Probe {
            action,
            period,
            timeout,
            initial_delay,
            failure_threshold,
            success_threshold,
        })
    }

    fn exec_action(&mut self, v: Option<Value>) -> Option<ProbeAction> {
        let argv = self.string_array("exec", v, "the command and its arguments")?;
        if argv.is_empty() || argv[0].trim().is_empty() {
            self.report(
                Some("exec"),
                "must name a command to run in the container (e.g. [\"cat\", \"/tmp/healthy\"])",
            );
            return None;
        }
        if argv.len() > MAX_EXEC_ARGS {
            self.report(
                Some("exec"),
                format!(
                    "has {} entries; at most {MAX_EXEC_ARGS} are accepted",
                    argv.len()
                ),
            );
            return None;
        }
        Some(ProbeAction::Exec(argv))
    }

    fn port_action(&mut self, key: &'static str, v: Option<Value>) -> Option<ProbeAction> {
        let what = if key == "tcp" {
            "{\"port\": the container port}"
        } else {
            "{\"port\": the container port, \"path\": \"/…\"}"
        };
        let m = self.object(key, v, what)?;
        self.at(Seg::Key(key), |c| {
            let mut m = Fields::new(m);
            let port = m.take("port");
            let port = c.require("port", port, "the container port, 1-65535");
            let port =
                c.uint("port", port, "the container port")
                    .and_then(|p| match u16::try_from(p) {
                        Ok(p) if p > 0 => Some(p),
                        _ => {
                            c.report(Some("port"), format!("must be a port 1-65535, found {p}"));
                            None
                        }
                    });
            let path = match (key, m.take("path")) {
                ("http_get", None) => Some("/".to_owned()),
                ("http_get", path) => c
                    .string("path", path, "the request path, starting with /")
                    .and_then(|p| {
                        if p.starts_with('/')
                            && p.chars().count() <= MAX_HTTP_PATH
                            && !p.chars().any(|ch| ch.is_whitespace() || ch.is_control())
                        {
                            Some(p)
                        } else {
                            c.report(
                                Some("path"),
                                format!(
                                    "must start with / and hold no spaces (at most \
                                     {MAX_HTTP_PATH} characters), found {p:?}"
                                ),
                            );
                            None
                        }
                    }),
                (_, None) => Some(String::new()),
                (_, Some(_)) => {
                    c.report(Some("path"), "belongs to http_get; tcp takes only a port");
                    None
                }
            };
            let mut ok = true;
            for (extra, _) in m.into_extra() {
                c.violations.push(Violation {
                    path: render(&c.path, Some(&extra)),
                    message: format!("unknown setting {extra:?}: {key} takes {what}"),
                });
                ok = false;
            }
            let (port, path) = (port?, path?);
            if !ok {
                return None;
            }
            match key {
                "tcp" => Some(ProbeAction::Tcp { port }),
                _ => Some(ProbeAction::HttpGet { port, path }),
            }
        })
    }

    fn interval(&mut self, key: &'static str, v: Option<Value>, min: f64) -> Option<f64> {
        let s = self.number(key, v, "seconds")?;
        if s < min || s > MAX_INTERVAL_S {
            self.report(
                Some(key),
                format!("must be between {min} and {MAX_INTERVAL_S} seconds, found {s}"),
            );
            return None;
        }
        Some(s)
    }

    fn threshold(&mut self, key: &'static str, v: Option<Value>) -> Option<u32> {
        let n = self.uint(key, v, "a count of attempts in a row")?;
        match u32::try_from(n) {
            Ok(n) if (1..=MAX_THRESHOLD).contains(&n) => Some(n),
            _ => {
                self.report(
                    Some(key),
                    format!("must be between 1 and {MAX_THRESHOLD}, found {n}"),
                );
                None
            }
        }
    }
}
