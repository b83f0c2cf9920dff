//! The `Store` trait shared by the root and cluster orchestrators, with its redb (default) and
//! MongoDB backends (DESIGN.md §7). It arrives with the root orchestrator.
