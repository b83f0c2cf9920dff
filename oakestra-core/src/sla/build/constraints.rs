//! Placement constraints and S2S connectivity.

use super::*;

impl Checker {
    pub(super) fn constraint(&mut self, m: Map<String, Value>) -> Option<Constraint> {
        let mut m = Fields::new(m);
        let kind = m.take("type");
        let kind = self
            .req_string(
                "type",
                kind,
                "a string such as \"direct\", \"clusters\", \"geo\" or \"latency\"",
            )
            .map(|s| ConstraintKind::from_name(&s));
        let area = m.take("area");
        let area = self.string("area", area, "a string");
        let cluster = m.take("cluster");
        let cluster = self.string("cluster", cluster, "a string (a cluster name)");
        let node = m.take("node");
        let node = self.string("node", node, "a string (worker hostnames joined by `;`)");
        let location = m.take("location");
        let location = self.string("location", location, "a string (\"lat,lon\")");
        let threshold = m.take("threshold");
        let threshold = self.number("threshold", threshold, "the threshold");
        let rigidness = m.take("rigidness");
        let rigidness = self.number("rigidness", rigidness, "the rigidness");
        let convergence_time = m.take("convergence_time");
        let convergence_time =
            self.uint("convergence_time", convergence_time, "the convergence time");
        let needs = m.take("needs");
        let needs = self.string_array("needs", needs, "addon names");
        let allowed = m.take("allowed");
        let allowed = self.string_array("allowed", allowed, "cluster names");
        Some(Constraint {
            kind: kind?,
            area,
            cluster,
            node,
            location,
            threshold,
            rigidness,
            convergence_time,
            needs,
            allowed,
            extra: m.into_extra(),
        })
    }

    pub(super) fn connectivity(&mut self, m: Map<String, Value>) -> Option<Connectivity> {
        let mut m = Fields::new(m);
        let target = m.take("target_microservice_id");
        let target = self.req_string(
            "target_microservice_id",
            target,
            "a string (the target microservice)",
        );
        let cons = m.take("con_constraints");
        let cons = self.require(
            "con_constraints",
            cons,
            "an array of {type, threshold, rigidness, convergence_time} objects",
        );
        let cons = self.object_array(
            "con_constraints",
            cons,
            "a connection constraint",
            |c, _, m| {
                let mut m = Fields::new(m);
                let kind = m.take("type");
                let kind = c.req_string("type", kind, "a string (e.g. \"latency\")");
                let threshold = m.take("threshold");
                let threshold = c.require("threshold", threshold, "a number ≥ 0");
                let threshold = c.number("threshold", threshold, "the threshold");
                let rigidness = m.take("rigidness");
                let rigidness = c.require("rigidness", rigidness, "a number ≥ 0");
                let rigidness = c.number("rigidness", rigidness, "the rigidness");
                let convergence = m.take("convergence_time");
                let convergence = c.require("convergence_time", convergence, "a whole number ≥ 0");
                let convergence = c.uint("convergence_time", convergence, "the convergence time");
                Some(ConConstraint {
                    kind: kind?,
                    threshold: threshold?,
                    rigidness: rigidness?,
                    convergence_time: convergence?,
                    extra: m.into_extra(),
                })
            },
        );
        Some(Connectivity {
            target_microservice_id: target?,
            con_constraints: cons?,
            extra: m.into_extra(),
        })
    }
}
