//! MQTT topic names: `nodes/<id>/…` between cluster and worker, and
//! `jobs/<job_name>/updates_available` for the network layer.

use std::fmt;
use std::str::FromStr;

/// A per-node topic, identified by what follows `nodes/<id>/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeTopic {
    /// `information`: worker → cluster, node resources every 2 s.
    Information,
    /// `job`: worker → cluster, an instance changed status.
    Job,
    /// `jobs/resources`: worker → cluster, per-instance usage.
    JobsResources,
    /// `control/deploy`: cluster → worker, start an instance.
    ControlDeploy,
    /// `control/delete`: cluster → worker, stop an instance.
    ControlDelete,
    /// `control/error`: cluster → worker, e.g. "Node not registered to the cluster".
    ControlError,
    /// `net/subnet`: worker → cluster, ask for a subnet.
    NetSubnet,
    /// `net/subnetwork/result`: cluster → worker, the subnet.
    NetSubnetworkResult,
    /// `net/service/deployed`: worker → cluster, an instance's network is up.
    NetServiceDeployed,
    /// `net/service/address-changed`: worker → cluster, the worker's address changed.
    NetServiceAddressChanged,
    /// `net/service/undeployed`: worker → cluster (Oakestra never sends it).
    NetServiceUndeployed,
    /// `net/tablequery/request`: worker → cluster, resolve a service name or IP.
    NetTableQueryRequest,
    /// `net/tablequery/result`: cluster → worker, the answer.
    NetTableQueryResult,
    /// `net/interest/remove`: worker → cluster, the worker no longer needs a job's updates.
    NetInterestRemove,
    /// `control/logs`: cluster → worker, send the tail of an instance's log (Oakestra-rs only).
    ControlLogs,
    /// `logs`: worker → cluster, the answer to `control/logs` (Oakestra-rs only).
    Logs,
}

impl NodeTopic {
    /// Every per-node topic.
    pub const ALL: [NodeTopic; 16] = [
        NodeTopic::Information,
        NodeTopic::Job,
        NodeTopic::JobsResources,
        NodeTopic::ControlDeploy,
        NodeTopic::ControlDelete,
        NodeTopic::ControlError,
        NodeTopic::NetSubnet,
        NodeTopic::NetSubnetworkResult,
        NodeTopic::NetServiceDeployed,
        NodeTopic::NetServiceAddressChanged,
        NodeTopic::NetServiceUndeployed,
        NodeTopic::NetTableQueryRequest,
        NodeTopic::NetTableQueryResult,
        NodeTopic::NetInterestRemove,
        NodeTopic::ControlLogs,
        NodeTopic::Logs,
    ];

    /// What follows `nodes/<id>/`.
    pub fn suffix(self) -> &'static str {
        match self {
            NodeTopic::Information => "information",
            NodeTopic::Job => "job",
            NodeTopic::JobsResources => "jobs/resources",
            NodeTopic::ControlDeploy => "control/deploy",
            NodeTopic::ControlDelete => "control/delete",
            NodeTopic::ControlError => "control/error",
            NodeTopic::NetSubnet => "net/subnet",
            NodeTopic::NetSubnetworkResult => "net/subnetwork/result",
            NodeTopic::NetServiceDeployed => "net/service/deployed",
            NodeTopic::NetServiceAddressChanged => "net/service/address-changed",
            NodeTopic::NetServiceUndeployed => "net/service/undeployed",
            NodeTopic::NetTableQueryRequest => "net/tablequery/request",
            NodeTopic::NetTableQueryResult => "net/tablequery/result",
            NodeTopic::NetInterestRemove => "net/interest/remove",
            NodeTopic::ControlLogs => "control/logs",
            NodeTopic::Logs => "logs",
        }
    }

    /// `true` when the worker publishes it (and the cluster subscribes).
    pub fn from_worker(self) -> bool {
        !matches!(
            self,
            NodeTopic::ControlDeploy
                | NodeTopic::ControlDelete
                | NodeTopic::ControlError
                | NodeTopic::ControlLogs
                | NodeTopic::NetSubnetworkResult
                | NodeTopic::NetTableQueryResult
        )
    }

    /// The cluster's subscription for this topic over all workers: `nodes/+/<suffix>`.
    pub fn all_nodes_filter(self) -> String {
        format!("nodes/+/{}", self.suffix())
    }

    /// The topic for one worker.
    pub fn for_node(self, node_id: &str) -> String {
        format!("nodes/{node_id}/{}", self.suffix())
    }

    fn from_suffix(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.suffix() == s)
    }
}

/// Filter covering every network topic of every worker (the cluster's network subscription).
pub const ALL_NODES_NET_FILTER: &str = "nodes/+/net/#";

/// A parsed topic name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `nodes/<node>/<suffix>`.
    Node {
        /// The worker id.
        node: String,
        /// Which topic.
        kind: NodeTopic,
    },
    /// `jobs/<job_name>/updates_available`: cluster → workers, a job's instances changed.
    JobUpdates {
        /// The job whose instances changed.
        job_name: String,
    },
}

/// Why a topic name was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The node or job part is empty or holds `/`, `+` or `#`.
    #[error(
        "invalid id {0:?} in a topic: it must be non-empty and must not contain '/', '+' or '#'"
    )]
    InvalidId(String),
    /// Not one of the known topics.
    #[error(
        "unknown topic {0:?}: expected nodes/<id>/<{known}> or jobs/<job_name>/updates_available",
        known = "information|job|jobs/resources|control/…|net/…"
    )]
    Unknown(String),
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && !id.contains(['/', '+', '#'])
}

impl Topic {
    /// The topic of `kind` for worker `node`. Fails if the id cannot appear in a topic.
    pub fn node(node: impl Into<String>, kind: NodeTopic) -> Result<Self, TopicError> {
        let node = node.into();
        if !valid_id(&node) {
            return Err(TopicError::InvalidId(node));
        }
        Ok(Topic::Node { node, kind })
    }

    /// The update topic of a job. Fails if the name cannot appear in a topic.
    pub fn job_updates(job_name: impl Into<String>) -> Result<Self, TopicError> {
        let job_name = job_name.into();
        if !valid_id(&job_name) {
            return Err(TopicError::InvalidId(job_name));
        }
        Ok(Topic::JobUpdates { job_name })
    }

    /// The worker id, for per-node topics.
    pub fn node_id(&self) -> Option<&str> {
        match self {
            Topic::Node { node, .. } => Some(node),
            Topic::JobUpdates { .. } => None,
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Node { node, kind } => write!(f, "nodes/{node}/{}", kind.suffix()),
            Topic::JobUpdates { job_name } => write!(f, "jobs/{job_name}/updates_available"),
        }
    }
}

impl FromStr for Topic {
    type Err = TopicError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown = || TopicError::Unknown(s.to_owned());
        if let Some(rest) = s.strip_prefix("nodes/") {
            let (node, suffix) = rest.split_once('/').ok_or_else(unknown)?;
            let kind = NodeTopic::from_suffix(suffix).ok_or_else(unknown)?;
            return Topic::node(node, kind);
        }
        if let Some(rest) = s.strip_prefix("jobs/") {
            let job = rest
                .strip_suffix("/updates_available")
                .ok_or_else(unknown)?;
            return Topic::job_updates(job);
        }
        Err(unknown())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_topic_round_trips() {
        for kind in NodeTopic::ALL {
            let t = Topic::node("65f1a2b3c4d5e6f708192a3b", kind).unwrap();
            let text = t.to_string();
            assert_eq!(text, kind.for_node("65f1a2b3c4d5e6f708192a3b"));
            assert_eq!(text.parse::<Topic>().unwrap(), t);
        }
        assert_eq!(
            NodeTopic::JobsResources.all_nodes_filter(),
            "nodes/+/jobs/resources"
        );
        assert!(NodeTopic::Information.from_worker());
        assert!(!NodeTopic::ControlDeploy.from_worker());
    }

    #[test]
    fn job_updates_round_trip() {
        let t: Topic = "jobs/app.ns.svc.ns/updates_available".parse().unwrap();
        assert_eq!(
            t,
            Topic::JobUpdates {
                job_name: "app.ns.svc.ns".into()
            }
        );
        assert_eq!(t.to_string(), "jobs/app.ns.svc.ns/updates_available");
        assert_eq!(t.node_id(), None);
    }

    #[test]
    fn bad_topics_are_rejected() {
        for bad in [
            "nodes//job",
            "nodes/a/unknown",
            "nodes/a",
            "nodes/+/job",
            "jobs//updates_available",
            "jobs/x/other",
            "other/a/job",
            "",
        ] {
            assert!(bad.parse::<Topic>().is_err(), "{bad}");
        }
        assert!(Topic::node("a/b", NodeTopic::Job).is_err());
    }
}
