//! A cluster as a root-level candidate: its active workers' resources summed, plus the largest
//! free resources of any one worker, so the root never picks a cluster where no worker fits.

use crate::model::{Candidate, WorkerCapacity};

fn union_into(target: &mut Vec<String>, items: &[String]) {
    for item in items {
        if !target.contains(item) {
            target.push(item.clone());
        }
    }
}

impl Candidate {
    /// Aggregate a cluster's workers into one root-level candidate named `name`.
    ///
    /// Only active workers count; the cluster is active iff one of them is. Cores, memory and
    /// GPUs are summed; the load is chosen so that the cluster's free cores equal the sum of
    /// the workers' free cores, and the measured usage is the workers' usage weighted by their
    /// cores. Virtualizations, architectures, CSI drivers and add-ons are
    /// unions (sorted). `max_worker_free` holds the per-dimension maxima over the workers.
    /// Location, Vivaldi coordinates and RTTs are the caller's to set (the cluster's own).
    pub fn cluster_of(name: impl Into<String>, workers: &[Candidate]) -> Candidate {
        let mut cluster = Candidate {
            name: name.into(),
            active: false,
            max_worker_free: Some(WorkerCapacity::default()),
            ..Candidate::default()
        };
        let mut free_cores = 0.0;
        let mut busy_cores = 0.0;
        let mut max = WorkerCapacity::default();
        for w in workers.iter().filter(|w| w.active) {
            cluster.active = true;
            cluster.cpu_cores += w.cpu_cores;
            let free = w.free_vcpus().max(0.0);
            free_cores += free;
            busy_cores += w.cpu_cores * w.cpu_usage_percent / 100.0;
            cluster.memory_total_mb += w.memory_total_mb;
            cluster.memory_free_mb += w.memory_free_mb;
            cluster.gpus += w.gpus;
            cluster.gpus_free += w.gpus_free;
            union_into(&mut cluster.virtualization, &w.virtualization);
            union_into(&mut cluster.arch, &w.arch);
            union_into(&mut cluster.csi_drivers, &w.csi_drivers);
            union_into(&mut cluster.addons, &w.addons);
            max.vcpus = max.vcpus.max(free);
            max.memory_mb = max.memory_mb.max(w.memory_free_mb);
            max.gpus = max.gpus.max(w.gpus_free);
        }
        if cluster.cpu_cores > 0.0 {
            cluster.cpu_load_percent = 100.0 * (1.0 - free_cores / cluster.cpu_cores);
            cluster.cpu_usage_percent = 100.0 * busy_cores / cluster.cpu_cores;
        }
        cluster.max_worker_free = Some(max);
        for list in [
            &mut cluster.virtualization,
            &mut cluster.arch,
            &mut cluster.csi_drivers,
            &mut cluster.addons,
        ] {
            list.sort();
        }
        cluster
    }
}
