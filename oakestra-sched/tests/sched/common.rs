//! Builders shared by the tests.

use oakestra_sched::{Candidate, GeoPoint, Level, PlacementRequest, Vivaldi};

/// An active container worker: `cores` cores at `load` %, `free_mb` of `total_mb` free.
pub fn worker(name: &str, cores: f64, load: f64, total_mb: u64, free_mb: u64) -> Candidate {
    Candidate {
        name: name.into(),
        cpu_cores: cores,
        cpu_load_percent: load,
        memory_total_mb: total_mb,
        memory_free_mb: free_mb,
        virtualization: vec!["container".into()],
        arch: vec!["amd64".into()],
        active: true,
        ..Candidate::default()
    }
}

/// A cluster-level request for a container.
pub fn request(vcpus: f64, memory_mb: u64) -> PlacementRequest {
    PlacementRequest {
        level: Level::Cluster,
        service: "app.test.svc.test".into(),
        vcpus,
        memory_mb,
        virtualization: "container".into(),
        ..PlacementRequest::default()
    }
}

/// The same request at root level.
pub fn root_request(vcpus: f64, memory_mb: u64) -> PlacementRequest {
    PlacementRequest {
        level: Level::Root,
        ..request(vcpus, memory_mb)
    }
}

pub fn at(lat: f64, long: f64) -> GeoPoint {
    GeoPoint { lat, long }
}

pub fn viv(vector: &[f64], height: f64) -> Vivaldi {
    Vivaldi {
        vector: vector.to_vec(),
        height,
    }
}
