//! The contracts between Oakestra-rs processes, each defined once (DESIGN.md §4):
//!
//! * [`grpc`] (feature `grpc`) — the cluster link between root and cluster: the messages,
//!   client and server generated from `proto/cluster.proto` (package `oakestra.cluster.v1`).
//! * [`mqtt`] — the MQTT payloads between a cluster and its workers, and the topic names.
//! * [`rest`] — the request and response bodies of the root's REST API, shared by the root
//!   (which serves them) and `oakestra-client` (which sends and reads them), so the two cannot
//!   drift apart. With the feature `openapi` they derive `utoipa::ToSchema`.
//!
//! The domain types these messages carry (records, statuses, resources, SLA) are in
//! `oakestra-core`; conversions from a message to a core type live beside the message, so a
//! daemon meets typed values at its edge.
//!
//! ```
//! use oakestra_proto::mqtt::{DeleteCommand, NodeTopic, Payload};
//! use oakestra_proto::rest::Tokens;
//!
//! let tokens: Tokens = serde_json::from_str(r#"{"token":"a","refresh_token":"b"}"#).unwrap();
//! assert_eq!(tokens.token, "a");
//! assert_eq!(DeleteCommand::TOPIC, NodeTopic::ControlDelete);
//! ```

#![deny(missing_docs)]

/// Generated protobuf messages, server and client of `oakestra.cluster.v1`.
#[cfg(feature = "grpc")]
#[allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]
pub mod grpc {
    tonic::include_proto!("oakestra.cluster.v1");
}

pub mod mqtt;
pub mod rest;
