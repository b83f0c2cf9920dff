"""oakestra.sched.serve: a Python function as a cluster's external scheduler, first over plain
HTTP, then placing a real deploy of an `oak up` started with --scheduler external:<url>."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import oakestra
from conftest import OakUp, clientsrvr
from oakestra import sched
from oakestra.sched import Candidate, PlacementRequest


def post(url: str, body: Any) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


INPUT = {
    "request": {"level": "cluster", "service": "a.b.c.d", "vcpus": 1.0, "memory_mb": 100,
                "virtualization": "container"},
    "candidates": [
        {"name": "w1", "cpu_cores": 4.0, "memory_total_mb": 8192, "memory_free_mb": 6000,
         "virtualization": ["container"], "some_future_field": True},
        {"name": "w2", "cpu_cores": 4.0, "memory_total_mb": 8192, "memory_free_mb": 7000,
         "virtualization": ["container"]},
    ],
}


def test_serve_speaks_the_cluster_json_format() -> None:
    def most_memory(request: PlacementRequest, candidates: list[Candidate]) -> str:
        assert request.memory_mb == 100 and request.service == "a.b.c.d"
        return max(candidates, key=lambda c: c.memory_free_mb).name

    with sched.serve(most_memory) as server:
        assert server.url == f"http://127.0.0.1:{server.port}/place"
        assert server.flag == f"external:{server.url}"
        status, answer = post(server.url, INPUT)
        assert status == 200 and answer["candidate"] == "w2" and answer["index"] == 1
        [call] = server.calls
        assert call.request.memory_mb == 100
        assert [c.name for c in call.candidates] == ["w1", "w2"]
        assert call.answer["candidate"] == "w2" and call.http_status == 200

        status, answer = post(server.url, b"{not json")
        assert status == 400 and answer["status"] == "NO_WORKER_CAPACITY"
        assert "could not read the request" in answer["detail"]
        status, answer = post(server.url.replace("/place", "/other"), INPUT)
        assert status == 404
    with pytest.raises(OSError):
        post(server.url, INPUT)  # stopped


def test_serve_refusals_and_errors() -> None:
    def refuse(request: PlacementRequest, candidates: list[Candidate]) -> None:
        raise oakestra.NoPlacementError("NO_QUALIFIED_WORKER_FOUND", "only GPUs here")

    with sched.serve(refuse) as server:
        assert post(server.url, INPUT) == (
            200, {"status": "NO_QUALIFIED_WORKER_FOUND", "detail": "only GPUs here"})

    with sched.serve(lambda request, candidates: None) as server:
        status, answer = post(server.url, INPUT)
        assert status == 200 and answer["status"] == "NO_WORKER_CAPACITY"

    def broken(request: PlacementRequest, candidates: list[Candidate]) -> str:
        raise KeyError("oops")

    with sched.serve(broken) as server:
        status, answer = post(server.url, INPUT)
        assert status == 500 and answer["status"] == "NO_WORKER_CAPACITY"
        assert "broken" in answer["detail"] and "oops" in answer["detail"]

    with pytest.raises(TypeError):
        sched.serve("not a function")  # type: ignore[arg-type]


def test_python_scheduler_places_a_real_deploy(tmp_path: Path) -> None:
    """Two equal workers: best_fit would pick the first by name, this function picks the last."""
    chosen: list[str] = []

    def last_by_name(request: PlacementRequest, candidates: list[Candidate]) -> str:
        name = sorted(c.name for c in candidates)[-1]
        chosen.append(name)
        return name

    with sched.serve(last_by_name) as server:
        up = OakUp(tmp_path / "oak-up-external", "--workers", "2", "--scheduler", server.flag)
        try:
            client = oakestra.Client(up.url, "Admin", "Admin")
            app = client.create_application(clientsrvr())
            services = {s["microservice_name"]: s for s in client.services(app["applicationID"])}
            nginx = services["nginx"]
            client.deploy(nginx["_id"])
            service = client.wait_for_status(nginx["_id"], "RUNNING", timeout=60)
            [instance] = service["instance_list"]
        finally:
            up.stop()
    assert server.calls, "the cluster never asked the Python scheduler"
    call = server.calls[-1]
    assert len(call.candidates) == 2
    assert call.request.vcpus == 1.0 and call.request.memory_mb == 100
    assert call.request.service.startswith(app["application_name"])
    assert call.answer["candidate"] == chosen[-1]
    assert instance["worker_id"] == chosen[-1]
    # the cluster's default (best_fit, ties broken by name) would have chosen the other worker
    assert sched.best_fit(call.request, call.candidates).candidate != chosen[-1]
