//! Oakestra-rs placement (pure: no I/O, no tokio).
