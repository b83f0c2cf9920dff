//! `oakestra-cluster`: the cluster orchestrator (gRPC link to the root, MQTT, cluster scheduling,
//! self-healing). See DESIGN.md §4.3–4.4. It arrives with its issue.
