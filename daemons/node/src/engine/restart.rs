//! Restarts under the SLA's `restart_policy` (issue 18): what follows an exit, the back-off,
//! the crash-loop limit, and the delayed restart itself.

use std::sync::Arc;
use std::time::Duration;

use oakestra_core::sla::RestartPolicy;
use oakestra_core::status::DeploymentStatus;

use super::{Engine, status_after_exit};
use crate::metrics::Metrics;

/// How the worker restarts instances whose SLA sets a `restart_policy`: after an exit the
/// policy restarts, it waits `first_delay`, doubling with each restart up to `max_delay`; a run
/// of at least `stable_after` starts the back-off over. An exit after `max_restarts` restarts
/// within `window` makes the instance `FAILED`, and the cluster places it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartRules {
    /// Wait before the first restart.
    pub first_delay: Duration,
    /// The longest wait.
    pub max_delay: Duration,
    /// A run this long resets the back-off to `first_delay`.
    pub stable_after: Duration,
    /// Restarts allowed within `window`; the next exit makes the instance `FAILED`.
    pub max_restarts: u32,
    /// The window of the crash-loop limit.
    pub window: Duration,
}

impl Default for RestartRules {
    /// 1 s doubling up to 60 s, reset after 60 s of running; 5 restarts within 10 minutes.
    fn default() -> Self {
        Self {
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            stable_after: Duration::from_secs(60),
            max_restarts: 5,
            window: Duration::from_secs(600),
        }
    }
}

impl RestartRules {
    /// The wait before the restart after `step` back-off steps.
    pub fn delay(&self, step: u32) -> Duration {
        let factor = 2u32.saturating_pow(step.min(20));
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// What follows an exit.
enum AfterExit {
    /// Report this status (no restart).
    Report(DeploymentStatus, String),
    /// Report `DEAD` and restart after the delay.
    Restart(String, Duration),
}

/// Seconds, as few digits as needed ("4", "0.5").
fn secs_text(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}", s as u64)
    } else {
        format!("{s:.1}")
    }
}

impl Engine {
    /// Decides what follows an exit of `key` with `code` (lock held by the caller): without a
    /// restart policy, Oakestra's `DEAD`/`COMPLETED`; with one, a restart after the back-off,
    /// or `FAILED` once the crash-loop limit is reached. Reports the outcome.
    pub(super) async fn after_exit(
        self: &Arc<Self>,
        key: &str,
        code: i32,
        exited: String,
        incarnation: Option<u64>,
    ) {
        let rules = self.restart_rules();
        let now = tokio::time::Instant::now();
        let outcome = {
            let mut state = self.lock();
            let Some(entry) = state.instances.get_mut(key) else {
                return;
            };
            entry.ready = entry.ready.map(|_| false);
            // A run its liveness probe stopped is restarted even without a policy (`never`
            // still means never).
            let liveness = entry.liveness_failure.take();
            let policy = entry
                .deploy
                .restart_policy
                .or(liveness.as_ref().map(|_| RestartPolicy::Always));
            let exited = match liveness {
                Some(why) => format!("{why}; {exited}"),
                None => exited,
            };
            match policy {
                None => AfterExit::Report(status_after_exit(entry.deploy.one_shot, code), exited),
                Some(policy) if !policy.restarts_after(code) => {
                    let status = if code == 0 {
                        DeploymentStatus::Completed
                    } else {
                        DeploymentStatus::Dead
                    };
                    AfterExit::Report(status, format!("{exited} (restart_policy {policy})"))
                }
                Some(policy) => {
                    if entry
                        .started_at
                        .is_some_and(|t| now.saturating_duration_since(t) >= rules.stable_after)
                    {
                        entry.backoff_step = 0;
                    }
                    entry
                        .recent_restarts
                        .retain(|t| now.saturating_duration_since(*t) < rules.window);
                    let recent = entry.recent_restarts.len();
                    if recent >= rules.max_restarts as usize {
                        entry.restart_pending = false;
                        AfterExit::Report(
                            DeploymentStatus::Failed,
                            format!(
                                "{exited} after {recent} restarts within {} s; \
                                 restart_policy {policy} gives up on this worker",
                                secs_text(rules.window)
                            ),
                        )
                    } else {
                        let delay = rules.delay(entry.backoff_step);
                        entry.backoff_step = entry.backoff_step.saturating_add(1);
                        entry.restart_pending = true;
                        AfterExit::Restart(
                            format!(
                                "{exited}, restart {} in {} s",
                                entry.restart_count.saturating_add(1),
                                secs_text(delay)
                            ),
                            delay,
                        )
                    }
                }
            }
        };
        match outcome {
            AfterExit::Report(status, detail) => {
                self.set_status(key, status, detail, None).await;
            }
            AfterExit::Restart(detail, delay) => {
                self.set_status(key, DeploymentStatus::Dead, detail, None)
                    .await;
                let engine = Arc::clone(self);
                let key = key.to_owned();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    engine.restart_after_backoff(&key, incarnation).await;
                });
            }
        }
    }

    /// The restart a policy scheduled: starts `key` again unless it was deleted, deployed
    /// afresh or restarted otherwise meanwhile.
    pub(super) async fn restart_after_backoff(&self, key: &str, incarnation: Option<u64>) {
        let lock = self.key_lock(key);
        let _guard = lock.lock().await;
        self.restart_locked(key, incarnation).await;
    }

    /// [`Self::restart_after_backoff`] with the lock of `key` held by the caller.
    pub(super) async fn restart_locked(&self, key: &str, incarnation: Option<u64>) {
        {
            let mut state = self.lock();
            let Some(entry) = state.instances.get_mut(key) else {
                return;
            };
            if entry.deleting
                || !entry.restart_pending
                || entry.status != DeploymentStatus::Dead
                || entry.incarnation != incarnation
            {
                return;
            }
            entry.restart_pending = false;
            entry.restart_count = entry.restart_count.saturating_add(1);
            entry.recent_restarts.push(tokio::time::Instant::now());
            entry.status = DeploymentStatus::Creating;
            tracing::info!(
                instance = key,
                restart = entry.restart_count,
                "restarting under the restart policy"
            );
        }
        Metrics::inc(&self.metrics.restarts);
        self.save().await;
        self.start_instance(key).await;
    }
}
