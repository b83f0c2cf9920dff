//! A cluster's resources as the root keeps them, and as a scheduling candidate.

use super::*;

pub(super) fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

/// A resources report as the record's [`ClusterResources`] plus the extra keys.
pub(crate) fn resources_from_proto(
    r: &Resources,
) -> (ClusterResources, serde_json::Map<String, Value>) {
    let mut res = ClusterResources::default();
    let t = &mut res.totals;
    t.workers = r.active_workers;
    t.cpu_cores = r.cpu_cores.max(0.0).round() as u64;
    t.cpu_percent = r.cpu_load_percent.clamp(0.0, 100.0);
    t.memory_total_mb = r.memory_total_mb;
    t.memory_free_mb = r.memory_free_mb;
    t.gpus = u64::from(r.gpus);
    // `ClusterResources` counts whole cores of the largest worker; the exact free figure is in
    // the extra key the scheduler reads.
    t.max_worker_cpu_cores = r.max_worker_free_vcpus.max(0.0).floor() as u32;
    t.max_worker_memory_free_mb = r.max_worker_free_memory_mb;
    res.virtualizations = sorted(r.virtualization.clone());
    res.archs = sorted(r.arch.clone());
    res.csi_drivers = sorted(r.csi_drivers.clone());
    res.supported_addons = sorted(r.addons.clone());
    res.gpu_drivers = sorted(r.gpu_drivers.clone());
    let mut extra = serde_json::Map::new();
    extra.insert(
        EXTRA_MAX_FREE_VCPUS.into(),
        Value::from(r.max_worker_free_vcpus.max(0.0)),
    );
    extra.insert(
        EXTRA_MAX_FREE_GPUS.into(),
        Value::from(r.max_worker_free_gpus),
    );
    extra.insert(EXTRA_GPUS_FREE.into(), Value::from(r.gpus_free));
    extra.insert(EXTRA_CPU_CORES.into(), Value::from(r.cpu_cores.max(0.0)));
    extra.insert(
        EXTRA_CPU_USAGE.into(),
        Value::from(r.cpu_usage_percent.clamp(0.0, 100.0)),
    );
    (res, extra)
}

pub(super) fn extra_f64(extra: &serde_json::Map<String, Value>, key: &str) -> Option<f64> {
    extra.get(key).and_then(Value::as_f64)
}

/// Whether a report offers more than the record did (so pending instances may now fit).
pub(super) fn capacity_grew(
    old: &ClusterRecord,
    new: &ClusterResources,
    new_extra: &serde_json::Map<String, Value>,
) -> bool {
    let o = &old.resources.totals;
    let n = &new.totals;
    let free = |cores: f64, load: f64| cores * (100.0 - load) / 100.0;
    let old_cores = extra_f64(&old.extra, EXTRA_CPU_CORES).unwrap_or(o.cpu_cores as f64);
    let new_cores = extra_f64(new_extra, EXTRA_CPU_CORES).unwrap_or(n.cpu_cores as f64);
    let more_labels = |old: &[String], new: &[String]| new.iter().any(|x| !old.contains(x));
    n.workers > o.workers
        || n.memory_free_mb > o.memory_free_mb
        || n.max_worker_memory_free_mb > o.max_worker_memory_free_mb
        || free(new_cores, n.cpu_percent) > free(old_cores, o.cpu_percent) + 1e-9
        || extra_f64(new_extra, EXTRA_MAX_FREE_VCPUS).unwrap_or(0.0)
            > extra_f64(&old.extra, EXTRA_MAX_FREE_VCPUS).unwrap_or(0.0) + 1e-9
        || more_labels(&old.resources.virtualizations, &new.virtualizations)
        || more_labels(&old.resources.archs, &new.archs)
        || more_labels(&old.resources.csi_drivers, &new.csi_drivers)
        || more_labels(&old.resources.supported_addons, &new.supported_addons)
}

/// A stored cluster as a root-level scheduling candidate (named by the cluster's name, which
/// is what `direct` and `clusters` constraints use).
///
/// What was placed since the cluster's last report is taken off its totals, what was
/// undeployed is given back. The largest single worker keeps what it reported less nothing
/// (a placement may sit on another worker) plus what was released, within the new totals (the
/// released instance sat on one worker, which that much more is free on); the next report
/// corrects both anyway, and a cluster that gets an instance no worker fits keeps it pending
/// until one does.
pub(crate) fn candidate_of(
    c: &ClusterRecord,
    connected: bool,
    unreported: Unreported,
) -> oakestra_sched::Candidate {
    let t = &c.resources.totals;
    let gpus = u32::try_from(t.gpus).unwrap_or(u32::MAX);
    let mut candidate = oakestra_sched::Candidate {
        name: c.name.clone(),
        cpu_cores: extra_f64(&c.extra, EXTRA_CPU_CORES).unwrap_or(t.cpu_cores as f64),
        cpu_load_percent: t.cpu_percent,
        cpu_usage_percent: extra_f64(&c.extra, EXTRA_CPU_USAGE).unwrap_or(t.cpu_percent),
        memory_total_mb: t.memory_total_mb,
        memory_free_mb: t.memory_free_mb,
        gpus,
        gpus_free: extra_f64(&c.extra, EXTRA_GPUS_FREE).map_or(gpus, |g| g as u32),
        virtualization: c.resources.virtualizations.clone(),
        arch: c.resources.archs.clone(),
        csi_drivers: c.resources.csi_drivers.clone(),
        addons: c.resources.supported_addons.clone(),
        location: c.location.parse().ok(),
        active: c.active && connected && t.workers > 0,
        max_worker_free: Some(oakestra_sched::WorkerCapacity {
            vcpus: extra_f64(&c.extra, EXTRA_MAX_FREE_VCPUS)
                .unwrap_or(f64::from(t.max_worker_cpu_cores)),
            memory_mb: t.max_worker_memory_free_mb,
            gpus: extra_f64(&c.extra, EXTRA_MAX_FREE_GPUS).map_or(0, |g| g as u32),
        }),
        ..oakestra_sched::Candidate::default()
    };
    if unreported != Unreported::default() {
        let Unreported { placed, released } = unreported;
        candidate.memory_free_mb = (candidate.memory_free_mb + released.memory_mb)
            .saturating_sub(placed.memory_mb)
            .min(candidate.memory_total_mb);
        candidate.gpus_free = (candidate.gpus_free + released.gpus)
            .saturating_sub(placed.gpus)
            .min(candidate.gpus);
        let mut free_vcpus = candidate.free_vcpus();
        if candidate.cpu_cores > 0.0 {
            free_vcpus =
                (free_vcpus + released.vcpus - placed.vcpus).clamp(0.0, candidate.cpu_cores);
            candidate.cpu_load_percent = 100.0 * (1.0 - free_vcpus / candidate.cpu_cores);
        }
        if let Some(w) = &mut candidate.max_worker_free {
            w.vcpus = (w.vcpus + released.vcpus).min(free_vcpus.max(0.0));
            w.memory_mb = (w.memory_mb + released.memory_mb).min(candidate.memory_free_mb);
            w.gpus = (w.gpus + released.gpus).min(candidate.gpus_free);
        }
    }
    candidate
}
