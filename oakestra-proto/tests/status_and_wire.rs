//! Status strings are exact; wire payloads round-trip and accept Oakestra's string numbers.

use oakestra_core::status::{
    DeploymentStatus, LegacyStatus, NegativeSchedulingStatus, PositiveSchedulingStatus, Status,
};
use oakestra_proto::mqtt::{
    DeleteCommand, DeployCommand, IpType, JobStatusReport, NodeInfo, Payload, RegisterResponse,
    ResourcesReport, ServiceDeployed, ServiceIp, SubnetMethod, SubnetRequest, SubnetResult,
    TableQueryRequest, TableQueryResult, Topic, UpdateKind, UpdatesAvailable, WireVersion,
};
use serde_json::{Value, json};

const EXPECTED: &[&str] = &[
    "REQUESTED",
    "CLUSTER_SCHEDULED",
    "NODE_SCHEDULED",
    "CREATING",
    "CREATED",
    "RUNNING",
    "FAILED",
    "DEAD",
    "COMPLETED",
    "UNDEPLOYED",
    "TargetClusterNotFound",
    "TargetClusterNotActive",
    "TargetClusterNoCapacity",
    "NoActiveClusterWithCapacity",
    "NO_WORKER_CAPACITY",
    "NO_QUALIFIED_WORKER_FOUND",
    "NO_NODE_FOUND",
    "0",
    "1",
];

#[test]
fn every_status_serialises_to_its_exact_string_and_back() {
    let all: Vec<Status> = Status::all().collect();
    let strings: Vec<String> = all
        .iter()
        .map(|s| {
            serde_json::to_value(s)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(strings, EXPECTED);
    for (status, text) in all.iter().zip(EXPECTED) {
        assert_eq!(status.to_string(), *text);
        assert_eq!(text.parse::<Status>().unwrap(), *status);
        assert_eq!(
            serde_json::from_value::<Status>(json!(text)).unwrap(),
            *status
        );
    }
    for s in PositiveSchedulingStatus::ALL {
        assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
        assert_eq!(
            serde_json::from_value::<PositiveSchedulingStatus>(json!(s.as_str())).unwrap(),
            *s
        );
    }
    for s in DeploymentStatus::ALL {
        assert_eq!(
            serde_json::from_value::<DeploymentStatus>(json!(s.as_str())).unwrap(),
            *s
        );
    }
    for s in NegativeSchedulingStatus::ALL {
        assert_eq!(
            serde_json::from_value::<NegativeSchedulingStatus>(json!(s.as_str())).unwrap(),
            *s
        );
    }
    // The cluster's default job status is the integer 1.
    assert_eq!(
        serde_json::from_value::<Status>(json!(1)).unwrap(),
        Status::Legacy(LegacyStatus::One)
    );
}

#[test]
fn unknown_statuses_are_rejected_clearly() {
    for bad in ["running", "DEPLOYED", "", "REQUESTED ", "2"] {
        let err = serde_json::from_value::<Status>(json!(bad))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown status") && err.contains("allowed:"),
            "{bad}: {err}"
        );
    }
    assert!(serde_json::from_value::<Status>(json!(2)).is_err());
    assert!(serde_json::from_value::<Status>(json!(null)).is_err());
    // A class enum rejects the statuses of other classes.
    let err = serde_json::from_value::<DeploymentStatus>(json!("REQUESTED"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown deployment status"), "{err}");
}

fn round_trip<T: Payload + PartialEq + std::fmt::Debug>(value: &T) {
    let bytes = value.to_bytes();
    assert_eq!(&T::from_bytes(&bytes).unwrap(), value);
}

#[test]
fn oakestra_node_payloads_decode_and_emit_numbers() {
    // The Go NodeEngine's `information` message: zero values, nulls and untagged fields.
    let info = NodeInfo::from_bytes(
        br#"{"id":"","host":"","ip":"192.168.1.5","port":"","system_info":null,"cpu_percent":12.5,
             "vcpus":4,"architecture":"","memory_percent":40.1,"memory":3000,"disk_info":null,
             "network_info":null,"gpu_driver":"-","gpu_usage":"0","vgpus":0,"gpu_temp":"0",
             "vram_percent":"0","vram":"0","virtualization":null,"supported_addons":null,
             "csi_drivers":null,"Overlay":"default","NetManagerPort":0}"#,
    )
    .unwrap();
    assert_eq!(info.wire_version, WireVersion(1));
    assert_eq!(info.vcpus, 4);
    assert_eq!(info.memory, 3000);
    assert_eq!(info.port, None);
    assert_eq!(info.gpu_usage, Some(0.0));
    assert!(info.virtualization.is_empty());
    assert_eq!(info.extra["Overlay"], "default");
    round_trip(&info);
    let out: Value = serde_json::from_slice(&info.to_bytes()).unwrap();
    assert_eq!(out["vram"], json!(0));
    assert_eq!(out["wire_version"], json!(1));

    let reg: RegisterResponse =
        serde_json::from_str(r#"{"id":"65f1a2b3c4d5e6f708192a3b","MQTT_BROKER_PORT":"10003"}"#)
            .unwrap();
    assert_eq!(reg.mqtt_broker_port, 10003);
    assert_eq!(reg.broker_host("10.0.0.1"), "10.0.0.1");
    assert!(reg.mqtt_username.is_empty() && reg.mqtt_password.is_empty());
    let with_creds: RegisterResponse = serde_json::from_str(
        r#"{"id":"w1","MQTT_BROKER_PORT":10003,"MQTT_BROKER_HOST":"broker.lan","MQTT_USERNAME":"w1","MQTT_PASSWORD":"pw"}"#,
    )
    .unwrap();
    assert_eq!(with_creds.broker_host("10.0.0.1"), "broker.lan");
    assert_eq!(with_creds.mqtt_username, "w1");
    let again: RegisterResponse =
        serde_json::from_value(serde_json::to_value(&with_creds).unwrap()).unwrap();
    assert_eq!(again, with_creds);
    assert_eq!(
        serde_json::to_value(&reg).unwrap()["MQTT_BROKER_PORT"],
        json!(10003)
    );
    // The worker subnet: a /26 answer has no prefix field (what workers before sizes read);
    // a larger one carries the IPv4 prefix length.
    assert_eq!(reg.subnet_prefix_len, None);
    let sized: RegisterResponse = serde_json::from_str(
        r#"{"id":"w2","MQTT_BROKER_PORT":10003,"NODE_SUBNET":"10.18.1.0","NODE_SUBNET_V6":"fc00::400","NODE_SUBNET_PREFIX":24}"#,
    )
    .unwrap();
    assert_eq!(sized.subnet_prefix_len, Some(24));
    assert_eq!(
        serde_json::to_value(&sized).unwrap()["NODE_SUBNET_PREFIX"],
        json!(24)
    );
    assert!(
        serde_json::to_value(&with_creds)
            .unwrap()
            .get("NODE_SUBNET_PREFIX")
            .is_none()
    );

    let job = JobStatusReport::from_bytes(
        br#"{"sname":"app.ns.svc.ns","status":"CREATED","status_detail":"","instance":0,"publicip":"10.0.0.2"}"#,
    )
    .unwrap();
    assert_eq!(job.status, DeploymentStatus::Created);
    round_trip(&job);
    assert!(
        JobStatusReport::from_bytes(br#"{"sname":"a","status":"WHATEVER","instance":0}"#).is_err()
    );

    let res = ResourcesReport::from_bytes(
        br#"{"services":[{"cpu_percent":"12.345678","memory_percent":"0.012000","disk":"40960",
              "logs":"hello","job_name":"app.ns.svc.ns","virtualization":"docker","instance":1}]}"#,
    )
    .unwrap();
    assert_eq!(res.services[0].cpu_percent, 12.345678);
    assert_eq!(res.services[0].disk, 40960);
    round_trip(&res);
    let out: Value = serde_json::from_slice(&res.to_bytes()).unwrap();
    assert_eq!(out["services"][0]["cpu_percent"], json!(12.345678));
    assert_eq!(out["services"][0]["disk"], json!(40960));
    assert!(
        ResourcesReport::from_bytes(br#"{"services":null}"#)
            .unwrap()
            .services
            .is_empty()
    );

    let err = ResourcesReport::from_bytes(br#"{"services":[{"cpu_percent":"x"}]}"#).unwrap_err();
    assert!(err.to_string().contains("jobs/resources"), "{err}");
}

#[test]
fn deploy_and_delete_commands() {
    let deploy = DeployCommand::from_bytes(
        br#"{"_id":"65f1a2b3c4d5e6f708192a3b","job_name":"nginx.test.nginx.test","instance_number":"0",
             "image":"https://k/amd64.tar.gz,https://k/arm64.tar.gz","virtualization":"unikernel",
             "cmd":null,"environment":["A=1"],"port":"80:80","vcpus":1,"vgpus":0,"vtpus":0,
             "memory":100,"storage":0,"arch":["amd64","arm64"],"vm_images":null,
             "volumes":[{"volume_id":"v","csi_driver":"d"}],"one_shot":false,"privileged":false,
             "status":"NODE_SCHEDULED","status_detail":"","instance_list":[],"RR_ip":"10.30.30.26"}"#,
    )
    .unwrap();
    assert_eq!(deploy.instance_number, 0);
    assert_eq!(
        deploy.kernel_for_arch("arm64"),
        Some("https://k/arm64.tar.gz")
    );
    assert_eq!(deploy.port_mappings().unwrap()[0].container, 80);
    assert_eq!(deploy.addresses.rr_ip, Some("10.30.30.26".parse().unwrap()));
    assert!(
        !deploy.extra.contains_key("RR_ip"),
        "a known address is a typed field, not an extra key"
    );
    round_trip(&deploy);

    let delete = DeleteCommand::from_bytes(
        br#"{"job_name":"a.b.c.d","virtualization":"docker","instance_number":2}"#,
    )
    .unwrap();
    assert_eq!(delete.instance_number, 2);
    round_trip(&delete);
}

#[test]
fn network_payloads() {
    let req = SubnetRequest::from_bytes(br#"{"METHOD":"GET"}"#).unwrap();
    assert_eq!(req.method, SubnetMethod::Get);
    round_trip(&req);
    let res =
        SubnetResult::from_bytes(br#"{"address":"10.18.0.64","addressv6":"fc00::100"}"#).unwrap();
    round_trip(&res);

    let dep = ServiceDeployed::from_bytes(
        br#"{"appname":"a.b.c.d","status":"DEPLOYED","instance_number":0,"nsip":"10.18.0.66",
             "nsipv6":"fc00::102","host_port":"50103","host_ip":"192.168.1.5"}"#,
    )
    .unwrap();
    assert_eq!(dep.host_port, 50103);
    round_trip(&dep);
    let out: Value = serde_json::from_slice(&dep.to_bytes()).unwrap();
    assert_eq!(out["host_port"], json!(50103));

    let q = TableQueryRequest::from_bytes(br#"{"sname":"","sip":"10.30.0.5"}"#).unwrap();
    assert_eq!(q.query_key(), "10.30.0.5");
    round_trip(&q);

    let result = TableQueryResult::from_bytes(
        br#"{"app_name":"a.b.c.d","query_key":"a.b.c.d","instance_list":[{"instance_number":0,
             "namespace_ip":"10.18.0.66","namespace_ip_v6":"fc00::102","host_ip":"192.168.1.5",
             "host_port":50103,"worker_id":"w1","service_ip":[
               {"IpType":"RR","Address":"10.30.0.0","Address_v6":"fdff:2000::"},
               {"IpType":"instance_ip","Address":"10.30.0.1","Address_v6":"fdff::1"}]}]}"#,
    )
    .unwrap();
    let rr = &result.instance_list[0].service_ip[0];
    assert_eq!(rr.ip_type, IpType::RoundRobin);
    assert_eq!(rr.address, Some("10.30.0.0".parse().unwrap()));
    assert_eq!(rr.address_v6, Some("fdff:2000::".parse().unwrap()));
    assert_eq!(
        result.instance_list[0].service_ip[1].ip_type,
        IpType::Instance
    );
    assert_eq!(result.instance_list[0].extra["worker_id"], "w1");
    round_trip(&result);
    // An absent address is "" on the wire, as Oakestra writes it.
    let lone = ServiceIp {
        ip_type: IpType::Closest,
        address: None,
        address_v6: Some("fdff:2000::66".parse().unwrap()),
    };
    assert_eq!(
        serde_json::to_string(&lone).unwrap(),
        r#"{"IpType":"Closest","Address":"","Address_v6":"fdff:2000::66"}"#
    );
    let unknown: ServiceIp = serde_json::from_str(r#"{"IpType":"Other","Address":"x"}"#).unwrap();
    assert_eq!(unknown.ip_type, IpType::Other("Other".into()));
    assert_eq!(unknown.address, None);
    let empty = TableQueryResult::from_bytes(
        br#"{"app_name":null,"instance_list":null,"query_key":"10.30.9.9"}"#,
    )
    .unwrap();
    assert_eq!(empty.app_name, None);

    let upd: UpdatesAvailable = serde_json::from_str(r#"{"type":"UNDEPLOYMENT"}"#).unwrap();
    assert_eq!(upd.kind, UpdateKind::Undeployment);
}

#[test]
fn topics_for_each_payload() {
    assert_eq!(
        Topic::node("w1", NodeInfo::TOPIC).unwrap().to_string(),
        "nodes/w1/information"
    );
    assert_eq!(JobStatusReport::TOPIC.for_node("w1"), "nodes/w1/job");
    assert_eq!(
        ResourcesReport::TOPIC.all_nodes_filter(),
        "nodes/+/jobs/resources"
    );
    assert_eq!(
        DeployCommand::TOPIC.for_node("w1"),
        "nodes/w1/control/deploy"
    );
    assert_eq!(
        DeleteCommand::TOPIC.for_node("w1"),
        "nodes/w1/control/delete"
    );
    assert_eq!(
        TableQueryResult::TOPIC.for_node("w1"),
        "nodes/w1/net/tablequery/result"
    );
    let t: Topic = "nodes/w1/net/service/deployed".parse().unwrap();
    assert_eq!(t.node_id(), Some("w1"));
}

/// Fuzzing finding (fuzz target `mqtt`, issue 19; the input of the crash): a long integer
/// kept in a payload's unknown fields changed in its last digit between a decode and the decode
/// of its encoding, because serde_json's default float parser is not correctly rounded (the
/// workspace now enables `float_roundtrip`). Every number a payload carries must come back bit
/// for bit.
#[test]
fn numbers_survive_decode_encode_decode_bit_for_bit() {
    let sent = br#"{"id":"w1","MQTT_BROKER_PORT":1033333333333333333333333333333333333333333333333003,"cpu_percent":1.0333333333333335e51}"#;
    let first = NodeInfo::from_bytes(sent).unwrap();
    let again = NodeInfo::from_bytes(&first.to_bytes()).unwrap();
    assert_eq!(
        again.extra["MQTT_BROKER_PORT"],
        first.extra["MQTT_BROKER_PORT"]
    );
    assert_eq!(again.cpu_percent.to_bits(), first.cpu_percent.to_bits());
    assert_eq!(again, first);
}
