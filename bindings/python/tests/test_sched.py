"""oakestra.sched: candidates and requests from Python, the built-in schedulers, simulation."""

from __future__ import annotations

import pytest

import oakestra
from oakestra import sched
from oakestra.sched import Candidate, PlacementRequest


def workers() -> list[Candidate]:
    # "small" is the tight fit, "big" the least loaded.
    return [
        Candidate("small", cpu_cores=4, cpu_load_percent=60, memory_total_mb=2048,
                  memory_free_mb=1024, virtualization=["container"], arch=["amd64"]),
        Candidate("big", cpu_cores=16, cpu_load_percent=10, memory_total_mb=32768,
                  memory_free_mb=32768, virtualization=["container", "unikernel"],
                  arch=["amd64"]),
    ]


def request(**fields: object) -> PlacementRequest:
    base = dict(vcpus=1, memory_mb=512, virtualization="container", service="app.ns.svc.ns")
    base.update(fields)
    return PlacementRequest(**base)  # type: ignore[arg-type]


def test_candidate_fields_defaults_and_validation() -> None:
    c = Candidate("w1", cpu_cores=4, memory_free_mb=100)
    assert (c.name, c.cpu_cores, c.memory_free_mb, c.active, c.location) == ("w1", 4.0, 100, True, None)
    assert c.virtualization == [] and c.rtt_ms == {}
    c.cpu_load_percent = 25
    c.location = {"lat": 48.1, "long": 11.6}
    assert c.cpu_load_percent == 25.0 and c.location == {"lat": 48.1, "long": 11.6}
    assert "cpu_load_percent=25.0" in repr(c) and repr(c).startswith("Candidate(name='w1'")
    with pytest.raises(TypeError, match="has no field 'cpus'|has no field \"cpus\""):
        Candidate("w", cpus=4)
    with pytest.raises(ValueError, match="Candidate.cpu_cores"):
        Candidate("w", cpu_cores="four")
    with pytest.raises(ValueError, match="Candidate.memory_free_mb"):
        c.memory_free_mb = -1
    with pytest.raises(TypeError, match="needs \"name\""):
        Candidate()
    with pytest.raises(AttributeError):
        c.no_such_field  # noqa: B018


def test_dict_round_trip_equality_and_replace() -> None:
    c = workers()[1]
    d = c.to_dict()
    assert d["name"] == "big" and d["virtualization"] == ["container", "unikernel"]
    assert Candidate.from_dict(d) == c
    assert c.replace(cpu_load_percent=90) != c
    assert c.replace(cpu_load_percent=90).cpu_load_percent == 90.0
    assert c.cpu_load_percent == 10.0
    with pytest.raises(TypeError, match="has no field"):
        Candidate.from_dict({**d, "typo": 1})
    assert Candidate.from_dict({**d, "future_field": 1}, strict=False) == c
    # typos deeper down are caught too (serde alone would drop them silently)
    with pytest.raises(TypeError, match=r"PlacementRequest.constraints.node is not a field"):
        PlacementRequest(constraints={"node": ["w1"]})
    with pytest.raises(TypeError, match=r"Candidate.location.alt is not a field"):
        Candidate.from_dict({**d, "location": {"lat": 1, "long": 2, "alt": 3}})
    with pytest.raises(TypeError, match=r"constraints.geo\[0\].radius is not a field"):
        PlacementRequest(constraints={"geo": [{"location": {"lat": 1, "long": 2}, "threshold_km": 5, "radius": 1}]})
    assert Candidate("w", rtt_ms={"any-peer": 3.0}).rtt_ms == {"any-peer": 3.0}  # map keys are data
    r = PlacementRequest.from_dict({"vcpus": 0.5, "constraints": {"nodes": ["w1"]}})
    assert r.level == "cluster" and r.vcpus == 0.5 and r.constraints["nodes"] == ["w1"]
    assert PlacementRequest.from_dict(r.to_dict()) == r


def test_builtin_schedulers_prefer_different_candidates() -> None:
    ws = workers()
    r = request()
    assert sched.best_fit(r, ws).candidate == "small"
    assert sched.least_loaded(r, ws).candidate == "big"
    assert sched.first_fit(r, ws).candidate == "small"
    assert sched.first_fit(r, list(reversed(ws))).candidate == "big"
    placement = sched.place(r, ws)  # best_fit by default
    assert placement.candidate == "small" and placement.index == 0
    # dicts work as well as objects
    assert sched.place(r.to_dict(), [w.to_dict() for w in ws], "least_loaded").candidate == "big"


def test_ldp_uses_latency_and_geo_constraints() -> None:
    ws = workers()
    ws[0].rtt_ms = {"munich": 5.0}
    ws[1].rtt_ms = {"munich": 40.0}
    near_users = request(constraints={"latency": [{"user": {"name": "munich"}, "threshold_ms": 50}]})
    placement = sched.ldp(near_users, ws)
    assert placement.candidate == "small"
    assert placement.expected_latency_ms == 5.0
    ws[0].rtt_ms = {"munich": 80.0}
    assert sched.ldp(near_users, ws).candidate == "big"

    ws[0].location = {"lat": 48.14, "long": 11.58}  # Munich
    ws[1].location = {"lat": 52.52, "long": 13.40}  # Berlin
    near_munich = request(constraints={"geo": [{"location": {"lat": 48.1, "long": 11.6}, "threshold_km": 100}]})
    placement = sched.ldp(near_munich, ws)
    assert placement.candidate == "small"
    assert 0 < placement.distance_km < 100


def test_no_placement_raises_with_status_and_detail() -> None:
    ws = workers()
    with pytest.raises(oakestra.NoPlacementError) as caught:
        sched.best_fit(request(memory_mb=1_000_000), ws)
    assert caught.value.status == "NO_WORKER_CAPACITY"
    assert "2 workers" in caught.value.detail and "memory" in caught.value.detail
    with pytest.raises(oakestra.NoPlacementError) as caught:
        sched.first_fit(request(virtualization="wasm"), ws)
    assert caught.value.status == "NO_QUALIFIED_WORKER_FOUND"
    with pytest.raises(oakestra.NoPlacementError) as caught:
        sched.place(request(constraints={"nodes": ["elsewhere"]}), ws)
    assert caught.value.status == "NO_NODE_FOUND"
    with pytest.raises(oakestra.NoPlacementError) as caught:
        sched.place(request(level="root"), [])
    assert caught.value.status == "NoActiveClusterWithCapacity"
    with pytest.raises(ValueError, match="unknown scheduling algorithm"):
        sched.place(request(), ws, "random")


def two_equal_workers() -> list[Candidate]:
    return [
        Candidate(n, cpu_cores=4, memory_total_mb=8192, memory_free_mb=8192, virtualization=["container"])
        for n in ("a", "b")
    ]


def test_simulate_commits_capacity_and_compares_schedulers() -> None:
    ws = two_equal_workers()
    requests = [request()] * 10
    results = sched.simulate(requests, ws, ["first_fit", "least_loaded", "best_fit"])
    assert list(results) == ["first_fit", "least_loaded", "best_fit"]

    ff = results["first_fit"]
    assert (ff.placed, ff.failed) == (8, 2)
    assert [p.candidate for p in ff.placements[:8]] == ["a"] * 4 + ["b"] * 4
    assert ff.placements[8:] == [None, None]
    assert [f.index for f in ff.failures] == [8, 9]
    assert all(f.status == "NO_WORKER_CAPACITY" for f in ff.failures)
    assert ff.counts == {"a": 4, "b": 4}
    assert ff.seconds >= 0
    a_after = next(c for c in ff.candidates if c.name == "a")
    assert a_after.cpu_load_percent == 100.0 and a_after.memory_free_mb == 8192 - 4 * 512

    ll = results["least_loaded"]
    assert [p.candidate for p in ll.placements[:4]] == ["a", "b", "a", "b"]
    assert ll.counts == {"a": 4, "b": 4}
    assert results["best_fit"].placements[1].candidate == "a"  # packs

    # the caller's candidates are untouched; every built-in runs by default
    assert ws == two_equal_workers()
    assert list(sched.simulate(requests, ws)) == sched.SCHEDULERS == ["first_fit", "best_fit", "least_loaded", "ldp"]


def test_python_functions_as_schedulers_in_simulation() -> None:
    ws = two_equal_workers()
    calls = []

    def most_free_memory(req: PlacementRequest, candidates: list[Candidate]) -> str:
        calls.append((req.memory_mb, [c.name for c in candidates]))
        return max(candidates, key=lambda c: (c.memory_free_mb, c.name)).name

    results = sched.simulate([request(memory_mb=1000)] * 6, ws, [most_free_memory, "first_fit"])
    mine = results["most_free_memory"]
    assert mine.placed == 6 and len(calls) == 6
    assert [p.candidate for p in mine.placements] == ["b", "a", "b", "a", "b", "a"]
    assert calls[1] == (1000, ["a", "b"])
    # the function sees the capacity the earlier placements took
    assert results["first_fit"].counts == {"a": 4, "b": 2}

    def declines(req: PlacementRequest, candidates: list[Candidate]) -> None:
        raise oakestra.NoPlacementError("NO_QUALIFIED_WORKER_FOUND", "not my kind of service")

    declined = sched.simulate([request()], ws, declines)["declines"]
    assert declined.failures[0].status == "NO_QUALIFIED_WORKER_FOUND"
    assert declined.failures[0].detail == "not my kind of service"

    wrong = sched.simulate([request()], ws, lambda r, c: "nowhere")["<lambda>"]
    assert wrong.failed == 1 and "not a candidate" in wrong.failures[0].detail
    by_index = sched.place(request(), ws, lambda r, c: 1)
    assert by_index.candidate == "b" and by_index.index == 1
    assert sched.place(request(), ws, lambda r, c: c[0]).candidate == "a"
    with pytest.raises(oakestra.NoPlacementError, match="chose 'nowhere', which is not a candidate|chose \"nowhere\", which is not a candidate"):
        sched.place(request(), ws, lambda r, c: "nowhere")
    with pytest.raises(oakestra.NoPlacementError, match="fails the Memory check"):
        sched.place(request(memory_mb=9000), ws, lambda r, c: "a")
    with pytest.raises(oakestra.NoPlacementError, match="chose no candidate"):
        sched.place(request(), ws, lambda r, c: None)

    def broken(req: PlacementRequest, candidates: list[Candidate]) -> str:
        raise ZeroDivisionError("bug in my scheduler")

    with pytest.raises(ZeroDivisionError, match="bug in my scheduler"):
        sched.simulate([request()] * 3, ws, broken)
    with pytest.raises(TypeError, match="single one"):
        sched.simulate(request(), ws)


def test_root_level_placement_on_aggregated_clusters() -> None:
    edge = sched.cluster_of("edge", [
        Candidate("e1", cpu_cores=2, memory_total_mb=2048, memory_free_mb=1024, virtualization=["container"]),
        Candidate("e2", cpu_cores=2, memory_total_mb=2048, memory_free_mb=1024, virtualization=["container"]),
        Candidate("down", cpu_cores=64, memory_total_mb=65536, memory_free_mb=65536, active=False),
    ])
    assert (edge.name, edge.cpu_cores, edge.memory_free_mb, edge.active) == ("edge", 4.0, 2048, True)
    assert edge.max_worker_free == {"vcpus": 2.0, "memory_mb": 1024, "gpus": 0}
    cloud = sched.cluster_of("cloud", [
        Candidate("c1", cpu_cores=32, memory_total_mb=65536, memory_free_mb=65536, virtualization=["container"]),
    ])
    small = request(level="root", memory_mb=512)
    assert sched.best_fit(small, [edge, cloud]).candidate == "edge"
    # 2 GB free in total on edge, but no single worker has 1.5 GB
    assert sched.best_fit(request(level="root", memory_mb=1536), [edge, cloud]).candidate == "cloud"
    with pytest.raises(oakestra.NoPlacementError) as caught:
        sched.place(request(level="root", constraints={"cluster": "edge"}, memory_mb=4096), [edge, cloud])
    assert caught.value.status == "TargetClusterNoCapacity"
