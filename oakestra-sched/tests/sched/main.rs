//! Integration tests of `oakestra-sched`, in one binary to keep build times down.

mod batch;
mod common;
mod constraints;
mod json;
mod ldp;
mod oakestra_cases;
mod props;
mod sla;
