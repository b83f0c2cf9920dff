//! The cluster's answer to the root's `WorkersRequest`: every registered worker with its
//! resources, what the instances placed on it reserve, and what is left to place under the
//! cluster's capacity policy. Pure: reads the [`ClusterState`] at a given time.

use std::collections::HashMap;

use oakestra_core::status::{DeploymentStatus, Status};
use oakestra_sched::capacity::WorkerResources;
use tokio::time::Instant;

use crate::proto::WorkerSummary;
use crate::state::ClusterState;

/// Every registered worker, sorted by host name then id, as of `now`.
pub fn worker_summaries(state: &ClusterState, now: Instant) -> Vec<WorkerSummary> {
    // Per worker: reserved vCPUs, memory (MB), and instance count.
    let mut placed: HashMap<&str, (f64, u64, u32)> = HashMap::new();
    for i in state.instances() {
        if let Some(w) = i.worker_id.as_deref()
            && i.status != Status::Deployment(DeploymentStatus::Completed)
        {
            let p = placed.entry(w).or_default();
            p.0 += i.request.vcpus;
            p.1 += i.request.memory_mb;
            p.2 += 1;
        }
    }
    let policy = state.capacity();
    let mut out: Vec<WorkerSummary> = state
        .workers()
        .map(|w| {
            let info = &w.record.info;
            let (vcpus, memory, instances) = placed
                .get(w.record.id.as_str())
                .copied()
                .unwrap_or_default();
            let cores = f64::from(info.vcpus);
            let usage = info.cpu_percent.clamp(0.0, 100.0);
            let memory_total = info.memory_total.unwrap_or(info.memory);
            let (load, memory_allocatable) = policy.allocatable(&WorkerResources {
                cores,
                cpu_usage_percent: usage,
                memory_total_mb: memory_total,
                memory_free_mb: info.memory,
                reserved_vcpus: vcpus,
                reserved_memory_mb: memory,
            });
            WorkerSummary {
                id: w.record.id.clone(),
                host: info.host.clone(),
                ip: info.ip.clone(),
                active: w.active,
                seconds_since_report: now.saturating_duration_since(w.last_seen).as_secs_f64(),
                cpu_cores: cores,
                cpu_usage_percent: usage,
                vcpus_reserved: vcpus,
                vcpus_allocatable: cores * (100.0 - load) / 100.0,
                memory_total_mb: memory_total,
                memory_free_mb: info.memory,
                memory_reserved_mb: memory,
                memory_allocatable_mb: memory_allocatable,
                gpus: info.vgpus,
                arch: info.architecture.clone(),
                virtualization: info.virtualization.clone(),
                instances,
                overlay_mtu: info.overlay_mtu.unwrap_or(0),
            }
        })
        .collect();
    out.sort_by(|a, b| a.host.cmp(&b.host).then_with(|| a.id.cmp(&b.id)));
    out
}
