//! From a validated SLA microservice (`oakestra-core`) to a [`PlacementRequest`].
//!
//! The SLA validator checks shapes; this conversion checks that each constraint is usable for
//! placement (a `geo` constraint needs a threshold and a point, …) and says where it is not.

use oakestra_core::sla::{Constraint, ConstraintKind, Microservice};

use crate::model::{
    ConnectivityConstraint, Endpoint, GeoConstraint, GeoPoint, LatencyConstraint, Level,
    PlacementRequest,
};

/// A constraint of the SLA that cannot be turned into a placement rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConstraintError {
    /// JSON pointer relative to the microservice, e.g. `/constraints/1/threshold`.
    pub path: String,
    /// What is wrong and what to write instead.
    pub message: String,
}

fn error(path: String, message: impl Into<String>) -> ConstraintError {
    ConstraintError {
        path,
        message: message.into(),
    }
}

/// Narrow an SLA list, combining several constraints of the same type: all must hold, so the
/// allowed names are the intersection.
fn narrow(
    current: &mut Option<Vec<String>>,
    new: Vec<String>,
    path: String,
    what: &str,
) -> Result<(), ConstraintError> {
    let merged = match current.take() {
        None => new,
        Some(old) => old.into_iter().filter(|n| new.contains(n)).collect(),
    };
    if merged.is_empty() {
        return Err(error(
            path,
            format!("no {what} is left that satisfies every constraint of this type"),
        ));
    }
    *current = Some(merged);
    Ok(())
}

fn threshold(c: &Constraint, path: &str, unit: &str) -> Result<f64, ConstraintError> {
    match c.threshold {
        Some(t) if t.is_finite() && t >= 0.0 => Ok(t),
        Some(_) => Err(error(
            format!("{path}/threshold"),
            format!("must be a number ≥ 0 ({unit})"),
        )),
        None => Err(error(
            format!("{path}/threshold"),
            format!("a {} constraint needs a threshold in {unit}", c.kind),
        )),
    }
}

fn parse_point(text: &str, path: String) -> Result<GeoPoint, ConstraintError> {
    text.parse()
        .map_err(|e: crate::model::GeoPointParseError| error(path, e.to_string()))
}

impl PlacementRequest {
    /// The placement request for one instance of `service` at `level`.
    ///
    /// * demand: `vcpus`, `memory` (MB), `vgpus`; `virtualization`; `arch` (any of them);
    ///   the `csi_driver` of every volume;
    /// * `direct`: `node` (`a;b;c`) and `cluster`; `clusters`: `allowed`; `addons`: `needs`
    ///   (several constraints of one type must all hold: lists are intersected);
    /// * `geo`: `threshold` km around `location` (or `area`) written `"lat,long"`;
    /// * `latency`: `threshold` ms to the users in `area` (the key candidates' `rtt_ms` tables
    ///   use) or at `location`;
    /// * `connectivity`: each `latency` entry of `con_constraints`; the orchestrator fills in
    ///   `instances` with where the target's instances run.
    ///
    /// `rigidness` and `convergence_time` are not used: every constraint is hard. Unknown
    /// constraint types and non-latency `con_constraints` (e.g. bandwidth) are ignored.
    /// `service` is set to the microservice name; set it to the job name if you have the
    /// application at hand.
    pub fn from_microservice(
        service: &Microservice,
        level: Level,
    ) -> Result<PlacementRequest, ConstraintError> {
        let mut request = PlacementRequest {
            level,
            service: service.microservice_name.clone(),
            vcpus: service.vcpus.unwrap_or(0) as f64,
            memory_mb: service.memory.unwrap_or(0),
            vgpus: u32::try_from(service.vgpus.unwrap_or(0)).unwrap_or(u32::MAX),
            virtualization: service.virtualization.as_str().to_owned(),
            arch: service.arch.clone().unwrap_or_default(),
            ..PlacementRequest::default()
        };
        for volume in service.volumes.iter().flatten() {
            let driver = volume.csi_driver.trim();
            if !driver.is_empty() && !request.csi_drivers.iter().any(|d| d == driver) {
                request.csi_drivers.push(driver.to_owned());
            }
        }

        let mut nodes: Option<Vec<String>> = None;
        let mut clusters: Option<Vec<String>> = None;
        let k = &mut request.constraints;
        for (i, c) in service.constraints.iter().flatten().enumerate() {
            let path = format!("/constraints/{i}");
            match &c.kind {
                ConstraintKind::Direct => {
                    let listed: Vec<String> = c.nodes().map(str::to_owned).collect();
                    if !listed.is_empty() {
                        narrow(&mut nodes, listed, format!("{path}/node"), "node")?;
                    }
                    if let Some(cluster) = c.cluster.as_deref().map(str::trim)
                        && !cluster.is_empty()
                    {
                        match &k.cluster {
                            Some(other) if other != cluster => {
                                return Err(error(
                                    format!("{path}/cluster"),
                                    format!(
                                        "conflicts with the earlier direct cluster {other:?}; \
                                         an instance runs in one cluster"
                                    ),
                                ));
                            }
                            _ => k.cluster = Some(cluster.to_owned()),
                        }
                    }
                }
                ConstraintKind::Clusters => {
                    let allowed = c.allowed.clone().unwrap_or_default();
                    narrow(&mut clusters, allowed, format!("{path}/allowed"), "cluster")?;
                }
                ConstraintKind::Addons => {
                    for need in c.needs.iter().flatten() {
                        if !k.addons.contains(need) {
                            k.addons.push(need.clone());
                        }
                    }
                }
                ConstraintKind::Geo => {
                    let threshold_km = threshold(c, &path, "km")?;
                    let location = match (&c.location, &c.area) {
                        (Some(l), _) => parse_point(l, format!("{path}/location"))?,
                        (None, Some(a)) => {
                            parse_point(a, format!("{path}/area")).map_err(|_| {
                                error(
                                    format!("{path}/area"),
                                    format!(
                                        "area {a:?} is not a point; write the centre as \
                                     location \"lat,long\""
                                    ),
                                )
                            })?
                        }
                        (None, None) => {
                            return Err(error(
                                path,
                                "a geo constraint needs a location \"lat,long\"",
                            ));
                        }
                    };
                    k.geo.push(GeoConstraint {
                        location,
                        threshold_km,
                    });
                }
                ConstraintKind::Latency => {
                    let threshold_ms = threshold(c, &path, "ms")?;
                    let user = match (&c.area, &c.location) {
                        (Some(area), location) => Endpoint {
                            name: area.clone(),
                            location: location
                                .as_deref()
                                .or(Some(area))
                                .and_then(|l| l.parse().ok()),
                            vivaldi: None,
                        },
                        (None, Some(l)) => Endpoint {
                            name: l.clone(),
                            location: Some(parse_point(l, format!("{path}/location"))?),
                            vivaldi: None,
                        },
                        (None, None) => {
                            return Err(error(
                                path,
                                "a latency constraint needs the users' area (or location)",
                            ));
                        }
                    };
                    k.latency.push(LatencyConstraint { user, threshold_ms });
                }
                ConstraintKind::Other(_) => {}
            }
        }
        k.nodes = nodes.unwrap_or_default();
        k.clusters = clusters.unwrap_or_default();

        for (i, link) in service.connectivity.iter().flatten().enumerate() {
            for (j, con) in link.con_constraints.iter().enumerate() {
                if con.kind != "latency" {
                    continue;
                }
                if !(con.threshold.is_finite() && con.threshold >= 0.0) {
                    return Err(error(
                        format!("/connectivity/{i}/con_constraints/{j}/threshold"),
                        "must be a number ≥ 0 (ms)",
                    ));
                }
                k.connectivity.push(ConnectivityConstraint {
                    target_service: link.target_microservice_id.clone(),
                    threshold_ms: con.threshold,
                    instances: Vec::new(),
                });
            }
        }
        Ok(request)
    }
}
