//! `oakestra-root`: the root orchestrator (REST API, cluster gRPC, root scheduling, root IPAM).
//! See DESIGN.md §4.1–4.3. It arrives with its issue.

pub mod addresses;
pub mod cluster_link;
pub mod grpc;
pub mod instances;
pub mod tokens;
