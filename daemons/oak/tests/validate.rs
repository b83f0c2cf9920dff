//! `oak validate` as a user runs it: the real binary on real files.

use std::path::PathBuf;
use std::process::{Command, Output};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn oak(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oak"))
        .args(args)
        .output()
        .expect("run oak")
}

fn write_temp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("oak-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn every_published_example_is_valid() {
    for file in [
        "sla-clientsrvr-container.json",
        "sla-clientsrvr-tail.json",
        "sla-nginx-unikernel.json",
        "dashboard-microservices-only.json",
    ] {
        let path = examples().join(file);
        let out = oak(&["validate", path.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{file}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("valid ("), "{file}: {stdout}");
    }
}

#[test]
fn invalid_descriptor_lists_every_violation_with_its_path_and_exits_1() {
    let mut sla: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(examples().join("sla-clientsrvr-container.json")).unwrap(),
    )
    .unwrap();
    let service = &mut sla["applications"][0]["microservices"][1];
    service["microservice_name"] = "bad name!".into();
    service["addresses"]["rr_ip"] = "10.31.0.1".into();
    let path = write_temp("bad.json", &sla.to_string());

    let out = oak(&["validate", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2 violation(s)"), "{stderr}");
    assert!(
        stderr.contains("/applications/0/microservices/1/microservice_name:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("/applications/0/microservices/1/addresses/rr_ip:"),
        "{stderr}"
    );
}

#[test]
fn rr_addresses_the_root_never_hands_out_are_invalid_with_the_reason() {
    // Issue 2: these parsed and lay in the range, so `oak validate` said valid and the root
    // then answered 422 from its IPAM.
    for (field, address, reason) in [
        ("rr_ip", "10.30.0.0", "the network address of 10.30.0.0/16"),
        (
            "rr_ip",
            "10.30.255.255",
            "the broadcast address of 10.30.0.0/16",
        ),
        (
            "rr_ip_v6",
            "fdff:2000::",
            "the subnet-router anycast address of fdff:2000::/21",
        ),
    ] {
        let mut sla: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(examples().join("sla-clientsrvr-container.json")).unwrap(),
        )
        .unwrap();
        sla["applications"][0]["microservices"][1]["addresses"][field] = address.into();
        let path = write_temp(&format!("reserved-{field}.json"), &sla.to_string());

        let out = oak(&["validate", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{address}: {stderr}");
        assert!(stderr.contains("1 violation(s)"), "{address}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "/applications/0/microservices/1/addresses/{field}: {address} is {reason}"
            )),
            "{address}: {stderr}"
        );
    }
}

#[test]
fn missing_version_and_malformed_json_are_reported_not_panicked() {
    let no_version = write_temp(
        "noversion.json",
        r#"{"customerID":"Admin","applications":[]}"#,
    );
    let out = oak(&["validate", no_version.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/sla_version:"));

    let broken = write_temp(
        "broken.json",
        "{\"sla_version\": \"v2.0\",\n  \"applications\": [",
    );
    let out = oak(&["validate", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));
}

#[test]
fn unreadable_file_exits_2() {
    let out = oak(&["validate", "/nonexistent/descriptor.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}
