//! What a worker can still take: its capacity minus a system reserve minus what the instances
//! placed on it reserve (Oakestra-rs' default), or what it measures free (Oakestra's
//! semantics, kept as an option of the cluster).
//!
//! Oakestra computes free CPU as `cores × (1 − instantaneous load)`, so a device that is merely
//! busy — a build running, a burst of traffic — cannot take a 1-vCPU service although nothing
//! is reserved on it, and the same device looks free a second later. Under reservations the
//! answer depends only on what was placed, so it is stable and cannot be gamed by load spikes;
//! measured usage still ranks the candidates (`Candidate::cpu_usage_percent`), and an
//! optional overload guard keeps saturated workers out. Memory is taken from both sides: an
//! instance never goes where the measured free memory is below its request.
//!
//! ```
//! use oakestra_sched::capacity::{CapacityPolicy, WorkerResources};
//!
//! let busy = WorkerResources {
//!     cores: 2.0,
//!     cpu_usage_percent: 100.0, // a build saturates both cores
//!     memory_total_mb: 4096,
//!     memory_free_mb: 3000,
//!     reserved_vcpus: 0.0, // but nothing is placed on it
//!     reserved_memory_mb: 0,
//! };
//! let (load, free_memory) = CapacityPolicy::default().allocatable(&busy);
//! assert_eq!(load, 0.0); // both cores can be reserved
//! assert_eq!(free_memory, 3000);
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How free capacity is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapacityMode {
    /// Capacity minus the system reserve minus what placed instances reserve.
    #[default]
    Reservations,
    /// Oakestra's: what the worker measures free, never more than capacity minus reservations.
    Usage,
}

impl CapacityMode {
    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            CapacityMode::Reservations => "reservations",
            CapacityMode::Usage => "usage",
        }
    }
}

impl fmt::Display for CapacityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CapacityMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reservations" => Ok(CapacityMode::Reservations),
            "usage" => Ok(CapacityMode::Usage),
            _ => Err(format!(
                "unknown capacity mode {s:?}; expected reservations or usage"
            )),
        }
    }
}

/// A cluster's capacity accounting.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CapacityPolicy {
    /// Reservations (default) or measured usage.
    pub mode: CapacityMode,
    /// Cores each worker keeps for its system (not given to instances).
    pub system_reserved_vcpus: f64,
    /// Memory each worker keeps for its system, MB.
    pub system_reserved_memory_mb: u64,
    /// Overload guard: a worker whose measured CPU usage is at or above this percentage takes
    /// no new instance. `None` (default): no guard.
    pub max_load_percent: Option<f64>,
}

impl Default for CapacityPolicy {
    fn default() -> Self {
        CapacityPolicy {
            mode: CapacityMode::Reservations,
            system_reserved_vcpus: 0.0,
            system_reserved_memory_mb: 0,
            max_load_percent: None,
        }
    }
}

/// What a worker has and what is placed on it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WorkerResources {
    /// Logical cores.
    pub cores: f64,
    /// Measured CPU usage, 0–100 %.
    pub cpu_usage_percent: f64,
    /// Total memory, MB.
    pub memory_total_mb: u64,
    /// Measured free memory, MB.
    pub memory_free_mb: u64,
    /// Cores the instances placed on the worker ask for (`vcpus`).
    pub reserved_vcpus: f64,
    /// Memory the instances placed on the worker ask for, MB.
    pub reserved_memory_mb: u64,
}

impl CapacityPolicy {
    /// The worker's `(cpu_load_percent, memory_free_mb)` as a [`crate::Candidate`] carries
    /// them: the share of its cores that is taken (so free cores are
    /// `cores × (100 − load) / 100`) and the memory an instance may still ask for.
    pub fn allocatable(&self, w: &WorkerResources) -> (f64, u64) {
        let usage = w.cpu_usage_percent.clamp(0.0, 100.0);
        let allocatable_cores = (w.cores - self.system_reserved_vcpus - w.reserved_vcpus).max(0.0);
        let free_cores = match self.mode {
            CapacityMode::Reservations => allocatable_cores,
            CapacityMode::Usage => (w.cores * (100.0 - usage) / 100.0).min(allocatable_cores),
        };
        let overloaded = self.max_load_percent.is_some_and(|max| usage >= max);
        let free_cores = if overloaded { 0.0 } else { free_cores };
        let load = if w.cores > 0.0 {
            (100.0 - free_cores * 100.0 / w.cores).clamp(0.0, 100.0)
        } else {
            100.0
        };
        let allocatable_memory = w
            .memory_total_mb
            .saturating_sub(self.system_reserved_memory_mb)
            .saturating_sub(w.reserved_memory_mb);
        (load, w.memory_free_mb.min(allocatable_memory))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BestFit, Candidate, LeastLoaded, PlacementRequest, Scheduler, commit};

    fn worker(usage: f64, reserved_vcpus: f64) -> WorkerResources {
        WorkerResources {
            cores: 2.0,
            cpu_usage_percent: usage,
            memory_total_mb: 4096,
            memory_free_mb: 3500,
            reserved_vcpus,
            reserved_memory_mb: 0,
        }
    }

    fn candidate(name: &str, policy: &CapacityPolicy, w: &WorkerResources) -> Candidate {
        let (load, memory_free_mb) = policy.allocatable(w);
        Candidate {
            name: name.into(),
            cpu_cores: w.cores,
            cpu_load_percent: load,
            cpu_usage_percent: w.cpu_usage_percent,
            memory_total_mb: w.memory_total_mb,
            memory_free_mb,
            ..Candidate::default()
        }
    }

    fn one_vcpu() -> PlacementRequest {
        PlacementRequest {
            vcpus: 1.0,
            memory_mb: 100,
            ..PlacementRequest::default()
        }
    }

    #[test]
    fn a_saturated_worker_with_nothing_reserved_takes_a_one_vcpu_instance() {
        let policy = CapacityPolicy::default();
        let c = candidate("w", &policy, &worker(100.0, 0.0));
        assert_eq!(BestFit.place(&one_vcpu(), &[c]).unwrap().candidate, "w");
    }

    #[test]
    fn usage_mode_keeps_oakestras_semantics() {
        let policy = CapacityPolicy {
            mode: CapacityMode::Usage,
            ..CapacityPolicy::default()
        };
        let busy = candidate("w", &policy, &worker(100.0, 0.0));
        let no = BestFit.place(&one_vcpu(), &[busy]).unwrap_err();
        assert!(no.detail.contains("lack CPU"), "{}", no.detail);
        // Half busy: one core free by measurement, but reservations still cap it.
        let (load, _) = policy.allocatable(&worker(50.0, 0.0));
        assert_eq!(load, 50.0);
        let (load, _) = policy.allocatable(&worker(0.0, 1.5));
        assert_eq!(load, 75.0);
    }

    #[test]
    fn two_one_vcpu_instances_fit_on_two_cores_and_the_third_waits() {
        let policy = CapacityPolicy::default();
        let mut reserved = 0.0;
        for _ in 0..2 {
            let c = candidate("w", &policy, &worker(100.0, reserved));
            BestFit.place(&one_vcpu(), &[c]).expect("fits");
            reserved += 1.0;
        }
        let full = candidate("w", &policy, &worker(0.0, reserved));
        let no = BestFit.place(&one_vcpu(), &[full]).unwrap_err();
        assert!(no.detail.contains("lack CPU"), "{}", no.detail);
        // One undeployed: its reservation is gone, so the third fits.
        let freed = candidate("w", &policy, &worker(0.0, reserved - 1.0));
        assert!(BestFit.place(&one_vcpu(), &[freed]).is_ok());
    }

    #[test]
    fn system_reserve_and_memory_are_taken_off() {
        let policy = CapacityPolicy {
            system_reserved_vcpus: 0.5,
            system_reserved_memory_mb: 1000,
            ..CapacityPolicy::default()
        };
        let mut w = worker(0.0, 1.0);
        w.reserved_memory_mb = 200;
        let (load, memory) = policy.allocatable(&w);
        assert_eq!(load, 75.0); // 0.5 of 2 cores left
        assert_eq!(memory, 2896); // 4096 − 1000 − 200, below the 3500 measured free
        w.memory_free_mb = 500; // measured free memory below what reservations allow
        assert_eq!(policy.allocatable(&w).1, 500);
    }

    #[test]
    fn the_overload_guard_keeps_saturated_workers_out() {
        let policy = CapacityPolicy {
            max_load_percent: Some(95.0),
            ..CapacityPolicy::default()
        };
        let hot = candidate("hot", &policy, &worker(97.0, 0.0));
        assert!(
            BestFit
                .place(&one_vcpu(), std::slice::from_ref(&hot))
                .is_err()
        );
        let ok = candidate("ok", &policy, &worker(90.0, 0.0));
        assert_eq!(
            BestFit.place(&one_vcpu(), &[hot, ok]).unwrap().candidate,
            "ok"
        );
    }

    #[test]
    fn measured_usage_ranks_candidates_that_fit_equally() {
        let policy = CapacityPolicy::default();
        let busy = candidate("a-busy", &policy, &worker(90.0, 0.0));
        let idle = candidate("b-idle", &policy, &worker(10.0, 0.0));
        for s in [&BestFit as &dyn Scheduler, &LeastLoaded] {
            let chosen = s.place(&one_vcpu(), &[busy.clone(), idle.clone()]).unwrap();
            assert_eq!(chosen.candidate, "b-idle", "{}", s.name());
        }
        // Reservations still come first for best fit: the fuller worker is packed.
        let mut packed = candidate("a-packed", &policy, &worker(90.0, 0.5));
        assert_eq!(
            BestFit
                .place(&one_vcpu(), &[packed.clone(), idle.clone()])
                .unwrap()
                .candidate,
            "a-packed"
        );
        commit(&one_vcpu(), &mut packed);
        assert!(packed.free_vcpus() < 0.6);
    }

    #[test]
    fn mode_names_round_trip() {
        for mode in [CapacityMode::Reservations, CapacityMode::Usage] {
            assert_eq!(mode.as_str().parse::<CapacityMode>(), Ok(mode));
        }
        assert!(
            "busy"
                .parse::<CapacityMode>()
                .unwrap_err()
                .contains("reservations or usage")
        );
    }
}
