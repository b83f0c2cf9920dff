//! Placeholder until the ipam benchmark lands.
fn main() {}
