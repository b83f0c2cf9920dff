//! Oakestra-rs networking.
