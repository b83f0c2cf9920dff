//! Fields of a deployment descriptor the root does not know are refused (issue 19): the SLA
//! parser keeps them (so `oak` and the Python package round-trip any descriptor), but the API
//! would store and echo them without using them, so a typo (`memroy`) would pass unnoticed.
//! Each one is a violation naming its JSON pointer, answered with every other violation (422).

use oakestra_core::sla::{Extra, Sla, Violation};

/// One violation per unknown field of `sla`, in document order.
pub(crate) fn unknown_fields(sla: &Sla) -> Vec<Violation> {
    let mut out = Vec::new();
    report(&mut out, "", &sla.extra);
    for (a, app) in sla.applications.iter().enumerate() {
        let app_path = format!("/applications/{a}");
        report(&mut out, &app_path, &app.extra);
        for (m, ms) in app.microservices.iter().enumerate() {
            let path = format!("{app_path}/microservices/{m}");
            report(&mut out, &path, &ms.extra);
            if let Some(addresses) = &ms.addresses {
                report(&mut out, &format!("{path}/addresses"), &addresses.extra);
                for (i, range) in addresses.instances.iter().flatten().enumerate() {
                    report(
                        &mut out,
                        &format!("{path}/addresses/instances/{i}"),
                        &range.extra,
                    );
                }
            }
            for (i, v) in ms.volumes.iter().flatten().enumerate() {
                report(&mut out, &format!("{path}/volumes/{i}"), &v.extra);
            }
            for (i, c) in ms.constraints.iter().flatten().enumerate() {
                report(&mut out, &format!("{path}/constraints/{i}"), &c.extra);
            }
            for (i, c) in ms.connectivity.iter().flatten().enumerate() {
                let at = format!("{path}/connectivity/{i}");
                report(&mut out, &at, &c.extra);
                for (j, cc) in c.con_constraints.iter().enumerate() {
                    report(&mut out, &format!("{at}/con_constraints/{j}"), &cc.extra);
                }
            }
        }
    }
    out
}

fn report(out: &mut Vec<Violation>, path: &str, extra: &Extra) {
    for key in extra.keys() {
        let escaped = key.replace('~', "~0").replace('/', "~1");
        out.push(Violation {
            path: format!("{path}/{escaped}"),
            message: format!(
                "unknown field {key:?}: the root does not know it (a misspelt field name?); \
                 remove it — the descriptor's fields are listed in the API document \
                 (/api/docs) and the README"
            ),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_unknown_field_is_named_by_its_path() {
        let sla = oakestra_core::sla::validate_owned(json!({
            "sla_version": "v2.0", "customerID": "Admin", "vendor": 1,
            "applications": [{
                "application_name": "a", "application_namespace": "n", "x": true,
                "microservices": [{
                    "microservice_name": "s", "microservice_namespace": "n",
                    "virtualization": "container", "code": "img", "memroy": 100,
                    "addresses": {"rr_ip": "10.30.0.1", "a/b": 1},
                    "constraints": [{"type": "direct", "cluster": "c", "y": 2}],
                    "connectivity": [{"target_microservice_id": "t", "z": 0, "con_constraints": [
                        {"type": "latency", "threshold": 1, "rigidness": 1, "convergence_time": 1, "w": 0}
                    ]}]
                }]
            }]
        }))
        .unwrap();
        let paths: Vec<String> = unknown_fields(&sla).into_iter().map(|v| v.path).collect();
        assert_eq!(
            paths,
            [
                "/vendor",
                "/applications/0/x",
                "/applications/0/microservices/0/memroy",
                "/applications/0/microservices/0/addresses/a~1b",
                "/applications/0/microservices/0/constraints/0/y",
                "/applications/0/microservices/0/connectivity/0/z",
                "/applications/0/microservices/0/connectivity/0/con_constraints/0/w",
            ]
        );
    }

    #[test]
    fn oakestras_published_examples_have_none() {
        for text in [
            include_str!("../../../../examples/sla-clientsrvr-container.json"),
            include_str!("../../../../examples/sla-clientsrvr-tail.json"),
            include_str!("../../../../examples/sla-nginx-unikernel.json"),
        ] {
            let sla = oakestra_core::sla::parse_and_validate(text).unwrap();
            assert!(
                unknown_fields(&sla).is_empty(),
                "{:?}",
                unknown_fields(&sla)
            );
        }
    }
}
