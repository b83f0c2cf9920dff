//! The JSON shapes external schedulers see (documented in the README; keep them stable).

use oakestra_sched::{
    Algorithm, Candidate, Level, NegativeSchedulingStatus, NoPlacement, Placement, PlacementInput,
    PlacementRequest, Scheduler,
};
use serde_json::{Value, json};

/// The README's example, verbatim.
fn readme_input() -> Value {
    json!({
      "request": {
        "level": "cluster",
        "service": "clientsrvr.test.nginx.test",
        "vcpus": 1.0,
        "memory_mb": 100,
        "vgpus": 0,
        "virtualization": "container",
        "arch": [],
        "csi_drivers": [],
        "constraints": {
          "nodes": [],
          "cluster": null,
          "clusters": [],
          "addons": [],
          "geo": [{"location": {"lat": 48.1372, "long": 11.5756}, "threshold_km": 120.0}],
          "latency": [{"user": {"name": "munich", "location": null, "vivaldi": null},
                       "threshold_ms": 20.0}],
          "connectivity": [{"target_service": "clientsrvr.test.curl.test", "threshold_ms": 10.0,
                            "instances": [{"name": "w2", "location": null, "vivaldi": null}]}]
        }
      },
      "candidates": [{
        "name": "w1",
        "cpu_cores": 4.0,
        "cpu_load_percent": 25.0,
            "cpu_usage_percent": 0.0,
        "memory_total_mb": 8192,
        "memory_free_mb": 6000,
        "gpus": 0,
        "gpus_free": 0,
        "virtualization": ["container"],
        "arch": ["amd64"],
        "csi_drivers": [],
        "addons": [],
        "location": {"lat": 48.2489, "long": 11.6532},
        "vivaldi": {"vector": [1.5, -2.0], "height": 0.3},
        "rtt_ms": {"munich": 4.2, "w2": 1.1},
        "active": true,
        "max_worker_free": null
      }]
    })
}

#[test]
fn readme_example_round_trips_exactly_and_places() {
    let input: PlacementInput = serde_json::from_value(readme_input()).unwrap();
    assert_eq!(serde_json::to_value(&input).unwrap(), readme_input());
    let placement = Algorithm::Ldp
        .place(&input.request, &input.candidates)
        .unwrap();
    let answer = serde_json::to_value(&placement).unwrap();
    assert_eq!(answer["candidate"], json!("w1"));
    assert_eq!(answer["index"], json!(0));
    // 4.2 ms measured to the users + 1.1 ms to the curl instance on w2.
    assert!((answer["expected_latency_ms"].as_f64().unwrap() - 5.3).abs() < 1e-9);
    assert!(
        (answer["distance_km"].as_f64().unwrap() - 13.7).abs() < 1.0,
        "{answer}"
    );
}

#[test]
fn minimal_documents_take_defaults() {
    let c: Candidate = serde_json::from_value(json!({"name": "w1"})).unwrap();
    assert!(c.active, "candidates are active unless they say otherwise");
    assert_eq!(c.cpu_cores, 0.0);
    assert_eq!(c.max_worker_free, None);
    assert_eq!(
        c,
        Candidate {
            name: "w1".into(),
            ..Candidate::default()
        }
    );

    let r: PlacementRequest = serde_json::from_value(json!({})).unwrap();
    assert_eq!(r.level, Level::Cluster);
    assert_eq!(r, PlacementRequest::default());

    let r: PlacementRequest =
        serde_json::from_value(json!({"level": "root", "memory_mb": 5})).unwrap();
    assert_eq!((r.level, r.memory_mb), (Level::Root, 5));

    // An external scheduler only has to name the candidate.
    let p: Placement = serde_json::from_value(json!({"candidate": "w7"})).unwrap();
    assert_eq!(p.candidate, "w7");
    assert_eq!(p.index, None);
}

#[test]
fn statuses_serialise_with_oakestras_strings() {
    use NegativeSchedulingStatus as S;
    let all = [
        (S::TargetClusterNotFound, "TargetClusterNotFound"),
        (S::TargetClusterNotActive, "TargetClusterNotActive"),
        (S::TargetClusterNoCapacity, "TargetClusterNoCapacity"),
        (
            S::NoActiveClusterWithCapacity,
            "NoActiveClusterWithCapacity",
        ),
        (S::NoWorkerCapacity, "NO_WORKER_CAPACITY"),
        (S::NoQualifiedWorkerFound, "NO_QUALIFIED_WORKER_FOUND"),
        (S::NoNodeFound, "NO_NODE_FOUND"),
    ];
    for (status, text) in all {
        assert_eq!(serde_json::to_value(status).unwrap(), json!(text));
        assert_eq!(status.to_string(), text);
        assert_eq!(serde_json::from_value::<S>(json!(text)).unwrap(), status);
    }
    let failure = NoPlacement {
        status: S::NoWorkerCapacity,
        detail: "0 workers to choose from".into(),
    };
    assert_eq!(
        serde_json::to_value(&failure).unwrap(),
        json!({"status": "NO_WORKER_CAPACITY", "detail": "0 workers to choose from"})
    );
    assert_eq!(
        failure.to_string(),
        "NO_WORKER_CAPACITY: 0 workers to choose from"
    );
}

#[test]
fn algorithm_names_in_config() {
    assert_eq!(
        serde_json::to_value(Algorithm::LeastLoaded).unwrap(),
        json!("least_loaded")
    );
    assert_eq!(
        serde_json::from_value::<Algorithm>(json!("ldp")).unwrap(),
        Algorithm::Ldp
    );
    assert_eq!(Algorithm::default(), Algorithm::Ldp);
}

#[test]
fn geo_points_parse_from_the_sla_form() {
    use oakestra_sched::GeoPoint;
    let p: GeoPoint = " 48.1372, 11.5756".parse().unwrap();
    assert_eq!((p.lat, p.long), (48.1372, 11.5756));
    assert_eq!(p.to_string(), "48.1372,11.5756");
    for bad in ["48.1", "x,1", "1,y", "91,0", "0,181"] {
        let err = bad.parse::<GeoPoint>().unwrap_err();
        assert!(err.to_string().contains("lat,long"), "{err}");
    }
}
