"""oakestra.validate_sla: the Rust validator of oakestra-core, every violation with its path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import oakestra
from conftest import EXAMPLES, clientsrvr


@pytest.mark.parametrize(
    "name",
    ["sla-clientsrvr-container.json", "sla-clientsrvr-tail.json", "sla-nginx-unikernel.json"],
)
def test_published_examples_are_valid(name: str) -> None:
    assert oakestra.validate_sla(EXAMPLES / name) == []
    assert oakestra.validate_sla(str(EXAMPLES / name)) == []
    assert oakestra.validate_sla(json.loads((EXAMPLES / name).read_text())) == []


def test_every_violation_has_its_json_path() -> None:
    sla = clientsrvr()
    nginx = sla["applications"][0]["microservices"][1]
    nginx["port"] = "80:80/sctp"
    nginx["addresses"]["rr_ip"] = "10.31.0.1"
    nginx["addresses"]["rr_ip_v6"] = "2001:db8::1"
    del sla["applications"][0]["microservices"][0]["virtualization"]
    violations = oakestra.validate_sla(sla)
    by_path = {v.path: v.message for v in violations}
    assert set(by_path) >= {
        "/applications/0/microservices/1/port",
        "/applications/0/microservices/1/addresses/rr_ip",
        "/applications/0/microservices/1/addresses/rr_ip_v6",
        "/applications/0/microservices/0/virtualization",
    }, violations
    assert "10.30.0.0/16" in by_path["/applications/0/microservices/1/addresses/rr_ip"]
    v = violations[0]
    assert isinstance(v, oakestra.Violation) and isinstance(v, tuple)
    path, message = v
    assert (path, message) == (v.path, v.message)
    assert str(v) == f"{v.path}: {v.message}"


def test_missing_version_and_wrong_types() -> None:
    assert [v.path for v in oakestra.validate_sla({"customerID": "Admin", "applications": []})] == [
        "/sla_version"
    ]
    assert oakestra.validate_sla({"sla_version": "v9"})[0].path == "/sla_version"
    whole = oakestra.validate_sla([1, 2])  # not an object at all
    assert whole and whole[0].path == ""


def test_files_with_invalid_json_and_missing_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"sla_version": "v2.0",')
    [violation] = oakestra.validate_sla(broken)
    assert violation.path == ""
    assert violation.message.startswith("invalid JSON")
    with pytest.raises(FileNotFoundError):
        oakestra.validate_sla(tmp_path / "missing.json")
    with pytest.raises(TypeError):
        oakestra.validate_sla({"bad": float("nan")})
