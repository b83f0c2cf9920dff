//! Oakestra-rs domain model (pure: no I/O, no tokio).
