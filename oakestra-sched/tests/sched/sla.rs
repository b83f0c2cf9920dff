//! From the SLA model of `oakestra-core` to placement requests.

use oakestra_core::sla::{self, Microservice};
use oakestra_sched::{Algorithm, GeoPoint, Level, PlacementRequest, Scheduler};
use serde_json::{Value, json};

use crate::common::worker;

const CLIENTSRVR: &str = include_str!("../../../examples/sla-clientsrvr-container.json");
const UNIKERNEL: &str = include_str!("../../../examples/sla-nginx-unikernel.json");

fn services(text: &str) -> Vec<Microservice> {
    let sla = sla::parse_and_validate(text).expect("valid SLA");
    sla.applications
        .into_iter()
        .flat_map(|a| a.microservices)
        .collect()
}

/// The clientsrvr example with its curl service's constraints, volumes and connectivity
/// replaced.
fn curl_with(extra: Value) -> Microservice {
    let mut doc: Value = serde_json::from_str(CLIENTSRVR).unwrap();
    let curl = &mut doc["applications"][0]["microservices"][0];
    for (k, v) in extra.as_object().unwrap() {
        curl[k] = v.clone();
    }
    services(&doc.to_string()).remove(0)
}

#[test]
fn clientsrvr_example_converts_and_places() {
    let [curl, nginx] = <[Microservice; 2]>::try_from(services(CLIENTSRVR)).unwrap();
    let r = PlacementRequest::from_microservice(&curl, Level::Cluster).unwrap();
    assert_eq!(
        r,
        PlacementRequest {
            level: Level::Cluster,
            service: "curl".into(),
            vcpus: 1.0,
            memory_mb: 100,
            vgpus: 0,
            virtualization: "container".into(),
            ..PlacementRequest::default()
        }
    );
    let r = PlacementRequest::from_microservice(&nginx, Level::Root).unwrap();
    assert_eq!((r.level, r.service.as_str()), (Level::Root, "nginx"));
    // Oakestra workers advertise `docker`; that is a container runtime.
    let mut w = worker("w1", 2.0, 10.0, 1024, 512);
    w.virtualization = vec!["docker".into()];
    for a in Algorithm::ALL {
        assert_eq!(
            a.place(&r, std::slice::from_ref(&w)).unwrap().candidate,
            "w1"
        );
    }
}

#[test]
fn unikernel_example_asks_for_its_architectures() {
    let r = PlacementRequest::from_microservice(&services(UNIKERNEL)[0], Level::Cluster).unwrap();
    assert_eq!(r.virtualization, "unikernel");
    assert_eq!(r.arch, ["amd64"]);
    let mut w = worker("pi", 4.0, 0.0, 4096, 4096);
    w.virtualization = vec!["unikernel".into()];
    w.arch = vec!["arm64".into()];
    assert!(Algorithm::Ldp.place(&r, std::slice::from_ref(&w)).is_err());
    w.arch = vec!["x86_64".into()];
    assert!(Algorithm::Ldp.place(&r, &[w]).is_ok());
}

#[test]
fn every_constraint_type_converts() {
    let curl = curl_with(json!({
        "vgpus": 1,
        "volumes": [
            {"volume_id": "v1", "csi_driver": "csi.nfs"},
            {"volume_id": "v2", "csi_driver": "csi.nfs"},
            {"volume_id": "v3", "csi_driver": "csi.s3"}
        ],
        "constraints": [
            {"type": "direct", "node": "w1; w2;w3", "cluster": "eu"},
            {"type": "direct", "node": "w2;w3;w4"},
            {"type": "clusters", "allowed": ["eu", "us"]},
            {"type": "addons", "needs": ["sgx"]},
            {"type": "geo", "location": "48.1372,11.5756", "threshold": 120},
            {"type": "latency", "area": "munich", "threshold": 20, "rigidness": 0.8,
             "convergence_time": 300},
            {"type": "latency", "location": "52.52,13.405", "threshold": 40},
            {"type": "someday", "threshold": 1}
        ],
        "connectivity": [{"target_microservice_id": "nginx", "con_constraints": [
            {"type": "latency", "threshold": 10, "rigidness": 1, "convergence_time": 0},
            {"type": "bandwidth", "threshold": 100, "rigidness": 1, "convergence_time": 0}
        ]}]
    }));
    let r = PlacementRequest::from_microservice(&curl, Level::Cluster).unwrap();
    assert_eq!(r.vgpus, 1);
    assert_eq!(r.csi_drivers, ["csi.nfs", "csi.s3"]);
    let k = &r.constraints;
    assert_eq!(
        k.nodes,
        ["w2", "w3"],
        "two direct node lists: both must hold"
    );
    assert_eq!(k.cluster.as_deref(), Some("eu"));
    assert_eq!(k.clusters, ["eu", "us"]);
    assert_eq!(k.addons, ["sgx"]);
    assert_eq!(k.geo.len(), 1);
    assert_eq!(
        k.geo[0].location,
        GeoPoint {
            lat: 48.1372,
            long: 11.5756
        }
    );
    assert_eq!(k.geo[0].threshold_km, 120.0);
    assert_eq!(k.latency.len(), 2);
    assert_eq!(k.latency[0].user.name, "munich");
    assert_eq!(k.latency[0].user.location, None);
    assert_eq!(k.latency[0].threshold_ms, 20.0);
    assert_eq!(
        k.latency[1].user.location,
        Some(GeoPoint {
            lat: 52.52,
            long: 13.405
        })
    );
    assert_eq!(k.connectivity.len(), 1, "bandwidth is not a placement rule");
    assert_eq!(k.connectivity[0].target_service, "nginx");
    assert_eq!(k.connectivity[0].threshold_ms, 10.0);
    assert!(k.connectivity[0].instances.is_empty());
}

fn conversion_error(constraints: Value) -> String {
    let curl = curl_with(json!({ "constraints": constraints }));
    PlacementRequest::from_microservice(&curl, Level::Root)
        .unwrap_err()
        .to_string()
}

#[test]
fn unusable_constraints_say_where_and_what_to_write() {
    assert_eq!(
        conversion_error(json!([{"type": "geo", "location": "48,11"}])),
        "/constraints/0/threshold: a geo constraint needs a threshold in km"
    );
    assert_eq!(
        conversion_error(json!([{"type": "geo", "area": "munich", "threshold": 5}])),
        "/constraints/0/area: area \"munich\" is not a point; write the centre as location \"lat,long\""
    );
    assert!(
        conversion_error(json!([{"type": "geo", "location": "north", "threshold": 5}]))
            .starts_with("/constraints/0/location: location \"north\" is not \"lat,long\"")
    );
    assert_eq!(
        conversion_error(json!([{"type": "latency", "threshold": 5}])),
        "/constraints/0: a latency constraint needs the users' area (or location)"
    );
    // The SLA validator rejects negative thresholds already; the conversion does not rely
    // on it (typed values may also be built without validation).
    let mut curl = curl_with(json!({}));
    curl.constraints = Some(vec![
        serde_json::from_value(json!({"type": "latency", "area": "x", "threshold": -1})).unwrap(),
    ]);
    assert_eq!(
        PlacementRequest::from_microservice(&curl, Level::Root)
            .unwrap_err()
            .to_string(),
        "/constraints/0/threshold: must be a number ≥ 0 (ms)"
    );
    assert_eq!(
        conversion_error(json!([
            {"type": "direct", "cluster": "eu"},
            {"type": "direct", "cluster": "us"}
        ])),
        "/constraints/1/cluster: conflicts with the earlier direct cluster \"eu\"; an instance runs in one cluster"
    );
    assert_eq!(
        conversion_error(json!([
            {"type": "direct", "node": "a;b"},
            {"type": "direct", "node": "c"}
        ])),
        "/constraints/1/node: no node is left that satisfies every constraint of this type"
    );
    assert_eq!(
        conversion_error(json!([{"type": "clusters", "allowed": []}])),
        "/constraints/0/allowed: no cluster is left that satisfies every constraint of this type"
    );
}
