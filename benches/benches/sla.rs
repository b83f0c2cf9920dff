//! Placeholder until the sla benchmark lands.
fn main() {}
