//! Places every service of a deployment descriptor on a few hand-made workers with each
//! built-in algorithm, and shows why a service that fits nowhere was refused.
//!
//! `cargo run -p oakestra-sched --example place [descriptor.json]`
//! (default: `examples/sla-clientsrvr-container.json`).

use oakestra_sched::{Algorithm, Candidate, Level, PlacementRequest, Scheduler};

fn worker(name: &str, cores: f64, load: f64, memory_mb: u64) -> Candidate {
    Candidate {
        name: name.into(),
        cpu_cores: cores,
        cpu_load_percent: load,
        memory_total_mb: memory_mb,
        memory_free_mb: memory_mb,
        virtualization: vec!["container".into(), "docker".into()],
        arch: vec!["amd64".into()],
        ..Candidate::default()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/sla-clientsrvr-container.json"
        )
        .into()
    });
    let sla = oakestra_core::sla::parse_and_validate(&std::fs::read_to_string(&path)?)?;
    let workers = [
        worker("pi4", 4.0, 20.0, 4096),
        worker("nuc", 8.0, 60.0, 16384),
        worker("tiny", 1.0, 0.0, 50),
    ];
    for app in &sla.applications {
        for service in &app.microservices {
            let request = PlacementRequest::from_microservice(service, Level::Cluster)?;
            for algorithm in ["first_fit", "best_fit", "least_loaded", "ldp"] {
                let scheduler: Algorithm = algorithm.parse()?;
                match scheduler.place(&request, &workers) {
                    Ok(placement) => println!(
                        "{:<10} {:<12} -> {}",
                        service.microservice_name, algorithm, placement.candidate
                    ),
                    Err(refusal) => println!(
                        "{:<10} {:<12} -> refused: {refusal}",
                        service.microservice_name, algorithm
                    ),
                }
            }
        }
    }
    Ok(())
}
