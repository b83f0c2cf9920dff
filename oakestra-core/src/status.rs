//! Every status string Oakestra uses (reference §5.4), as enums that serialise to exactly
//! those strings. Unknown strings are rejected with an [`UnknownStatus`] error.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A string that is not one of the known statuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}; allowed: {allowed}")]
pub struct UnknownStatus {
    /// Which status class was expected.
    pub kind: &'static str,
    /// The rejected string.
    pub value: String,
    /// The allowed strings, comma-separated.
    pub allowed: &'static str,
}

macro_rules! status_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $kind:literal, $allowed:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every value, in Oakestra's order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The exact Oakestra string.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text ),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownStatus;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $( $text => Ok($name::$variant), )+
                    _ => Err(UnknownStatus { kind: $kind, value: s.to_owned(), allowed: $allowed }),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

status_enum! {
    /// A scheduling step that succeeded.
    PositiveSchedulingStatus, "positive scheduling status",
    "REQUESTED, CLUSTER_SCHEDULED, NODE_SCHEDULED" {
        /// The root accepted a deploy request and waits for a scheduling decision.
        Requested = "REQUESTED",
        /// The root placed the instance on a cluster.
        ClusterScheduled = "CLUSTER_SCHEDULED",
        /// The cluster placed the instance on a worker.
        NodeScheduled = "NODE_SCHEDULED",
    }
}

status_enum! {
    /// What a worker reports about an instance.
    DeploymentStatus, "deployment status",
    "CREATING, CREATED, RUNNING, FAILED, DEAD, COMPLETED, UNDEPLOYED" {
        /// Defined by Oakestra, never sent.
        Creating = "CREATING",
        /// The runtime started the task.
        Created = "CREATED",
        /// The task runs.
        Running = "RUNNING",
        /// The deploy failed (image pull, network attach, …) or the instance went silent.
        Failed = "FAILED",
        /// The task exited (non-zero, or not one-shot) or was killed.
        Dead = "DEAD",
        /// A one-shot task exited with code 0.
        Completed = "COMPLETED",
        /// The task was removed on request.
        Undeployed = "UNDEPLOYED",
    }
}

status_enum! {
    /// Why scheduling failed.
    NegativeSchedulingStatus, "negative scheduling status",
    "TargetClusterNotFound, TargetClusterNotActive, TargetClusterNoCapacity, NoActiveClusterWithCapacity, NO_WORKER_CAPACITY, NO_QUALIFIED_WORKER_FOUND, NO_NODE_FOUND" {
        /// The cluster named by a direct constraint does not exist.
        TargetClusterNotFound = "TargetClusterNotFound",
        /// No active cluster (or the named one is inactive).
        TargetClusterNotActive = "TargetClusterNotActive",
        /// The named cluster lacks capacity.
        TargetClusterNoCapacity = "TargetClusterNoCapacity",
        /// No active cluster (or worker) passes the filters.
        NoActiveClusterWithCapacity = "NoActiveClusterWithCapacity",
        /// No worker has capacity.
        NoWorkerCapacity = "NO_WORKER_CAPACITY",
        /// No worker meets the requirements.
        NoQualifiedWorkerFound = "NO_QUALIFIED_WORKER_FOUND",
        /// The named worker does not exist.
        NoNodeFound = "NO_NODE_FOUND",
    }
}

status_enum! {
    /// Oakestra's legacy numeric statuses (`"0"`, `"1"`).
    LegacyStatus, "legacy status", "0, 1" {
        /// `"0"`.
        Zero = "0",
        /// `"1"` (the cluster's default job status).
        One = "1",
    }
}

/// Any status of a job or instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// A scheduling step that succeeded.
    Positive(PositiveSchedulingStatus),
    /// A worker-reported state.
    Deployment(DeploymentStatus),
    /// A scheduling failure.
    Negative(NegativeSchedulingStatus),
    /// A legacy numeric status.
    Legacy(LegacyStatus),
}

const ALL_STATUS: &str = "REQUESTED, CLUSTER_SCHEDULED, NODE_SCHEDULED, CREATING, CREATED, RUNNING, FAILED, DEAD, COMPLETED, UNDEPLOYED, TargetClusterNotFound, TargetClusterNotActive, TargetClusterNoCapacity, NoActiveClusterWithCapacity, NO_WORKER_CAPACITY, NO_QUALIFIED_WORKER_FOUND, NO_NODE_FOUND, 0, 1";

impl Status {
    /// `REQUESTED`.
    pub const REQUESTED: Status = Status::Positive(PositiveSchedulingStatus::Requested);
    /// `RUNNING`.
    pub const RUNNING: Status = Status::Deployment(DeploymentStatus::Running);

    /// Every status, in Oakestra's order.
    pub fn all() -> impl Iterator<Item = Status> {
        PositiveSchedulingStatus::ALL
            .iter()
            .copied()
            .map(Status::Positive)
            .chain(
                DeploymentStatus::ALL
                    .iter()
                    .copied()
                    .map(Status::Deployment),
            )
            .chain(
                NegativeSchedulingStatus::ALL
                    .iter()
                    .copied()
                    .map(Status::Negative),
            )
            .chain(LegacyStatus::ALL.iter().copied().map(Status::Legacy))
    }

    /// The exact Oakestra string.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Positive(s) => s.as_str(),
            Status::Deployment(s) => s.as_str(),
            Status::Negative(s) => s.as_str(),
            Status::Legacy(s) => s.as_str(),
        }
    }

    /// Oakestra's `convert_to_status`: empty means "no status", anything unknown is an error.
    pub fn parse_optional(s: &str) -> Result<Option<Status>, UnknownStatus> {
        if s.is_empty() {
            Ok(None)
        } else {
            s.parse().map(Some)
        }
    }

    /// `true` for the positive scheduling statuses (exempt from the inactivity → FAILED rule).
    pub fn is_positive_scheduling(self) -> bool {
        matches!(self, Status::Positive(_))
    }

    /// `true` for statuses after which an instance no longer runs and is not restarted by itself.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Deployment(
                DeploymentStatus::Completed
                    | DeploymentStatus::Undeployed
                    | DeploymentStatus::Dead
                    | DeploymentStatus::Failed
            )
        )
    }

    /// `true` when the cluster should redeploy an instance in this state (`FAILED`, `DEAD`,
    /// `NO_WORKER_CAPACITY`).
    pub fn needs_redeploy(self) -> bool {
        matches!(
            self,
            Status::Deployment(DeploymentStatus::Failed | DeploymentStatus::Dead)
                | Status::Negative(NegativeSchedulingStatus::NoWorkerCapacity)
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(v) = s.parse() {
            return Ok(Status::Positive(v));
        }
        if let Ok(v) = s.parse() {
            return Ok(Status::Deployment(v));
        }
        if let Ok(v) = s.parse() {
            return Ok(Status::Negative(v));
        }
        if let Ok(v) = s.parse() {
            return Ok(Status::Legacy(v));
        }
        Err(UnknownStatus {
            kind: "status",
            value: s.to_owned(),
            allowed: ALL_STATUS,
        })
    }
}

impl From<PositiveSchedulingStatus> for Status {
    fn from(s: PositiveSchedulingStatus) -> Self {
        Status::Positive(s)
    }
}
impl From<DeploymentStatus> for Status {
    fn from(s: DeploymentStatus) -> Self {
        Status::Deployment(s)
    }
}
impl From<NegativeSchedulingStatus> for Status {
    fn from(s: NegativeSchedulingStatus) -> Self {
        Status::Negative(s)
    }
}
impl From<LegacyStatus> for Status {
    fn from(s: LegacyStatus) -> Self {
        Status::Legacy(s)
    }
}

impl Serialize for Status {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Status {
    /// Accepts the status strings, plus the integers 0 and 1 that Oakestra's cluster uses as a
    /// default job status.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Status;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a status string ({ALL_STATUS})")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Status, E> {
                s.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Status, E> {
                match n {
                    0 => Ok(Status::Legacy(LegacyStatus::Zero)),
                    1 => Ok(Status::Legacy(LegacyStatus::One)),
                    _ => Err(E::custom(format!(
                        "unknown status {n}; allowed: {ALL_STATUS}"
                    ))),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Status, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!(
                        "unknown status {n}; allowed: {ALL_STATUS}"
                    ))),
                }
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_are_nineteen_statuses_with_distinct_strings() {
        let all: Vec<Status> = Status::all().collect();
        assert_eq!(all.len(), 19);
        let mut strings: Vec<&str> = all.iter().map(|s| s.as_str()).collect();
        strings.sort_unstable();
        strings.dedup();
        assert_eq!(strings.len(), 19);
        assert_eq!(ALL_STATUS.split(", ").count(), 19);
    }

    #[test]
    fn parse_optional_follows_convert_to_status() {
        assert_eq!(Status::parse_optional("").unwrap(), None);
        assert_eq!(
            Status::parse_optional("RUNNING").unwrap(),
            Some(Status::RUNNING)
        );
        let e = Status::parse_optional("running").unwrap_err();
        assert!(e.to_string().contains("allowed: REQUESTED"), "{e}");
    }

    #[test]
    fn classes_are_right() {
        assert!(Status::REQUESTED.is_positive_scheduling());
        assert!(Status::from(DeploymentStatus::Completed).is_terminal());
        assert!(!Status::RUNNING.is_terminal());
        assert!(Status::from(NegativeSchedulingStatus::NoWorkerCapacity).needs_redeploy());
        assert!(Status::from(DeploymentStatus::Dead).needs_redeploy());
        assert!(!Status::from(DeploymentStatus::Completed).needs_redeploy());
    }
}
