//! Placeholder until the sched benchmark lands.
fn main() {}
