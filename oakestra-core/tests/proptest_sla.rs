//! Property tests: the validator never panics, and every valid descriptor round-trips.

use oakestra_core::sla::{self, Sla};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Keys the validator knows, so random objects often hit real fields.
const KEYS: &[&str] = &[
    "sla_version",
    "customerID",
    "applications",
    "args",
    "applicationID",
    "application_name",
    "application_namespace",
    "application_desc",
    "microservices",
    "microserviceID",
    "microservice_name",
    "microservice_namespace",
    "virtualization",
    "code",
    "memory",
    "vcpus",
    "vgpus",
    "port",
    "one_shot",
    "cmd",
    "environment",
    "addresses",
    "rr_ip",
    "rr_ip_v6",
    "instances",
    "volumes",
    "volume_id",
    "csi_driver",
    "config",
    "constraints",
    "type",
    "threshold",
    "rigidness",
    "convergence_time",
    "needs",
    "allowed",
    "connectivity",
    "target_microservice_id",
    "con_constraints",
    "arch",
];

const STRINGS: &[&str] = &[
    "v2.0",
    "v1.0",
    "",
    "container",
    "unikernel",
    "10.30.0.1",
    "10.30.0.1",
    "fdff:2000::1",
    "80:80/tcp",
    "80;80",
    "0",
    "a.b",
    "nginx",
    "https://a,https://b",
    "amd64",
    "KEY=V",
    "=",
];

/// Leaves whose text form parses back to the same value (serde_json's default float parser
/// may be 1 ULP off for arbitrary floats, which is outside our control).
fn exact_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-4000i32..4000).prop_map(|n| json!(f64::from(n) / 4.0)),
        ".{0,16}".prop_map(Value::String),
        prop::sample::select(STRINGS).prop_map(|s| json!(s)),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-4000i32..4000).prop_map(|n| json!(f64::from(n) / 4.0)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,16}".prop_map(Value::String),
        prop::sample::select(STRINGS).prop_map(|s| json!(s)),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => ".{0,8}",
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    nest(leaf().boxed())
}

fn exact_json() -> impl Strategy<Value = Value> {
    nest(exact_leaf().boxed())
}

fn nest(leaf: BoxedStrategy<Value>) -> impl Strategy<Value = Value> {
    leaf.prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Values for unknown keys: exactly representable, so they round-trip bit for bit.
fn extra_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-4000i32..4000).prop_map(|n| json!(f64::from(n) / 4.0 + 0.25)),
        ".{0,10}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn extras() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("x_[a-z]{1,8}", extra_value(), 0..3)
        .prop_map(|m| m.into_iter().collect())
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9]{1,30}"
}

fn port_string() -> impl Strategy<Value = String> {
    prop::collection::btree_set(1u16..=65535, 0..4).prop_flat_map(|hosts| {
        let hosts: Vec<u16> = hosts.into_iter().collect();
        let n = hosts.len();
        (
            Just(hosts),
            prop::collection::vec(
                (
                    prop::option::of(1u16..=65535),
                    prop::sample::select(vec!["", "/tcp", "/udp"]),
                ),
                n,
            ),
        )
            .prop_map(|(hosts, rest)| {
                hosts
                    .iter()
                    .zip(rest)
                    .map(|(h, (c, p))| match c {
                        Some(c) => format!("{h}:{c}{p}"),
                        None => format!("{h}{p}"),
                    })
                    .collect::<Vec<_>>()
                    .join(";")
            })
    })
}

fn constraint() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec![
            "direct", "clusters", "geo", "latency", "addons", "custom",
        ]),
        prop::option::of(0u32..10_000),
        prop::option::of(0u32..100),
        prop::option::of(0u32..1000),
        prop::option::of(name()),
        extras(),
    )
        .prop_map(|(kind, threshold, rigidness, conv, node, extra)| {
            let mut m = extra;
            m.insert("type".into(), json!(kind));
            if let Some(t) = threshold {
                m.insert("threshold".into(), json!(t));
            }
            if let Some(r) = rigidness {
                // Whole values are written as integers, as our serialiser does.
                let rigidness = if r % 128 == 0 {
                    json!(r / 128)
                } else {
                    json!(f64::from(r) / 128.0)
                };
                m.insert("rigidness".into(), rigidness);
            }
            if let Some(c) = conv {
                m.insert("convergence_time".into(), json!(c));
            }
            if let Some(n) = node {
                m.insert("node".into(), json!(n));
            }
            Value::Object(m)
        })
}

/// A valid microservice; `index` keeps names and RR IPs unique inside the descriptor.
fn microservice(app_index: usize, index: usize) -> impl Strategy<Value = Value> {
    (
        "[a-zA-Z0-9]{1,24}",
        name(),
        prop::bool::ANY,
        prop::collection::vec("[a-z]{2,6}", 1..3),
        prop::option::of(0u32..100_000),
        prop::option::of(0u32..64),
        prop::option::of(port_string()),
        prop::option::of(Just(())),
        prop::option::of(prop::collection::vec(constraint(), 0..3)),
        prop::option::of(prop::collection::vec("[A-Z]{1,5}=[a-z]{0,5}", 0..3)),
        prop::option::of(prop::bool::ANY),
        extras(),
    )
        .prop_map(
            move |(
                base,
                namespace,
                unikernel,
                arch,
                memory,
                vcpus,
                port,
                rr,
                constraints,
                env,
                one_shot,
                extra,
            )| {
                let mut m = extra;
                m.insert("microserviceID".into(), json!(""));
                m.insert(
                    "microservice_name".into(),
                    json!(format!("s{index}x{base}")),
                );
                m.insert("microservice_namespace".into(), json!(namespace));
                if unikernel {
                    m.insert("virtualization".into(), json!("unikernel"));
                    let urls: Vec<String> = arch
                        .iter()
                        .map(|a| format!("https://k.example/{a}.tar.gz"))
                        .collect();
                    m.insert("code".into(), json!(urls.join(",")));
                    m.insert("arch".into(), json!(arch));
                } else {
                    m.insert("virtualization".into(), json!("container"));
                    m.insert("code".into(), json!("docker.io/library/nginx:latest"));
                }
                if let Some(v) = memory {
                    m.insert("memory".into(), json!(v));
                }
                if let Some(v) = vcpus {
                    m.insert("vcpus".into(), json!(v));
                }
                if let Some(p) = port {
                    m.insert("port".into(), json!(p));
                }
                if rr.is_some() {
                    m.insert(
                        "addresses".into(),
                        // +1: 10.30.0.0 and fdff:2000:: are reserved addresses.
                        json!({"rr_ip": format!("10.30.{app_index}.{}", index + 1),
                               "rr_ip_v6": std::net::Ipv6Addr::new(
                                   0xfdff, 0x2000, 0, 0, 0, 0, app_index as u16, index as u16 + 1,
                               ).to_string()}),
                    );
                }
                if let Some(c) = constraints {
                    m.insert("constraints".into(), json!(c));
                }
                if let Some(e) = env {
                    m.insert("environment".into(), json!(e));
                }
                if let Some(o) = one_shot {
                    m.insert("one_shot".into(), json!(o));
                }
                Value::Object(m)
            },
        )
}

fn application(app_index: usize) -> impl Strategy<Value = Value> {
    (0usize..4)
        .prop_flat_map(move |n| {
            let services: Vec<_> = (0..n).map(|i| microservice(app_index, i)).collect();
            (name(), name(), services, extras())
        })
        .prop_map(|(app, ns, services, extra)| {
            let mut m = extra;
            m.insert("application_name".into(), json!(app));
            m.insert("application_namespace".into(), json!(ns));
            m.insert("microservices".into(), json!(services));
            Value::Object(m)
        })
}

fn valid_sla() -> impl Strategy<Value = Value> {
    (0usize..3)
        .prop_flat_map(|n| {
            let apps: Vec<_> = (0..n).map(application).collect();
            (apps, extras())
        })
        .prop_map(|(apps, extra)| {
            let mut m = extra;
            m.insert("sla_version".into(), json!("v2.0"));
            m.insert("customerID".into(), json!("Admin"));
            m.insert("applications".into(), json!(apps));
            Value::Object(m)
        })
}

/// Replaces (or removes) the value at a path chosen by `choices`.
fn mutate(value: &mut Value, choices: &[usize], replacement: Value, remove: bool) {
    let Some((&c, rest)) = choices.split_first() else {
        *value = replacement;
        return;
    };
    match value {
        Value::Object(m) if !m.is_empty() => {
            let key = m.keys().nth(c % m.len()).cloned().unwrap_or_default();
            if rest.is_empty() && remove {
                m.shift_remove(&key);
            } else if let Some(next) = m.get_mut(&key) {
                mutate(next, rest, replacement, remove);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let i = c % a.len();
            if rest.is_empty() && remove {
                a.remove(i);
            } else {
                mutate(&mut a[i], rest, replacement, remove);
            }
        }
        other => *other = replacement,
    }
}

fn assert_round_trip(sla: &Sla) {
    let text = serde_json::to_string(sla).unwrap();
    let again = sla::parse_and_validate(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(&again, sla);
    assert_eq!(
        serde_json::to_value(&again).unwrap(),
        serde_json::to_value(sla).unwrap()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_json_never_panics(value in arb_json()) {
        let _ = sla::validate_value(&value);
        let _ = sla::validate_microservices_value(&value);
        let _ = sla::parse_and_validate(&value.to_string());
    }

    #[test]
    fn arbitrary_wrapped_json_never_panics(apps in arb_json(), ms in exact_json()) {
        let value = json!({"sla_version": "v2.0", "customerID": "c", "applications": apps});
        if let Err(e) = sla::validate_value(&value) {
            prop_assert!(!e.violations().is_empty());
        }
        let value = json!({"sla_version": "v2.0", "customerID": "c",
            "applications": [{"application_name": "a", "application_namespace": "b", "microservices": ms}]});
        if let Ok(sla) = sla::validate_value(&value) {
            assert_round_trip(&sla);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,200}") {
        let _ = sla::parse_and_validate(&text);
        let _ = sla::parse_microservices(&text);
    }

    #[test]
    fn valid_descriptors_validate_and_round_trip(value in valid_sla()) {
        let sla = sla::validate_value(&value).unwrap_or_else(|e| panic!("{e}\n{value:#}"));
        assert_round_trip(&sla);
        // Unknown keys are kept with their values.
        let out = serde_json::to_value(&sla).unwrap();
        for (k, v) in value.as_object().unwrap() {
            if k.starts_with("x_") {
                prop_assert_eq!(&out[k], v);
            }
        }
        for (i, app) in value["applications"].as_array().unwrap().iter().enumerate() {
            for (k, v) in app.as_object().unwrap() {
                if k.starts_with("x_") {
                    prop_assert_eq!(&out["applications"][i][k], v);
                }
            }
        }
        // Whole documents of known keys come back unchanged.
        prop_assert_eq!(out, value);
    }

    #[test]
    fn near_valid_descriptors_never_panic(
        value in valid_sla(),
        mutations in prop::collection::vec(
            (prop::collection::vec(any::<usize>(), 1..7), exact_json(), any::<bool>()), 1..4),
    ) {
        let mut value = value;
        for (choices, replacement, remove) in mutations {
            mutate(&mut value, &choices, replacement, remove);
        }
        match sla::validate_value(&value) {
            Ok(sla) => assert_round_trip(&sla),
            Err(e) => {
                prop_assert!(!e.violations().is_empty());
                for v in e.violations() {
                    prop_assert!(v.path.is_empty() || v.path.starts_with('/'));
                    prop_assert!(!v.message.is_empty());
                }
            }
        }
    }
}
