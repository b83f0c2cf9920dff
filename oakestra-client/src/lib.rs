//! Typed async client of the root orchestrator's REST API (DESIGN.md §4.1). It arrives with the
//! root orchestrator.
