"""oakestra.Client against a live `oak up`: applications, deploy → RUNNING, undeploy, errors."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import pytest

import oakestra
from conftest import EXAMPLES, OakUp, clientsrvr, free_port, unique


def service_ids(client: oakestra.Client, app: dict) -> list[str]:
    return [s["_id"]["$oid"] for s in client.services(app["applicationID"])]


def test_login_health_and_clusters(client: oakestra.Client, oak_up: OakUp) -> None:
    assert client.url == oak_up.url
    assert client.username == "Admin"
    assert repr(client) == f"Client(url='{oak_up.url}', username='Admin')"
    assert client.token and client.token.count(".") == 2
    assert client.health()["status"] == "ok"
    clusters = client.clusters()
    assert [c["cluster_name"] for c in clusters] == ["local"]
    assert clusters[0]["active"] is True
    assert clusters[0]["total_cpu_cores"] == 8
    assert client.clusters(active=True)[0]["_id"] == clusters[0]["_id"]


def test_create_from_dict_deploy_wait_running_undeploy(client: oakestra.Client) -> None:
    sla = clientsrvr()
    app = client.create_application(sla)
    assert app["application_name"] == sla["applications"][0]["application_name"]
    assert len(app["microservices"]) == 2
    assert client.application(app["applicationID"])["_id"] == app["_id"]

    services = client.services(app["applicationID"])
    assert sorted(s["microservice_name"] for s in services) == ["curl", "nginx"]
    for service in services:
        instance = client.deploy(service["_id"])  # {"$oid": …} ids are accepted too
        assert instance["instance_number"] == 0
        running = client.wait_for_status(service["_id"], "RUNNING", timeout=60)
        [only] = running["instance_list"]
        assert only["status"] == "RUNNING"
        assert only["worker_id"]
        assert client.instances(service["_id"])[0]["status"] == "RUNNING"

    nginx = next(s for s in services if s["microservice_name"] == "nginx")
    assert isinstance(client.undeploy(nginx["_id"], 0), str)
    gone = client.wait_for_status(nginx["_id"], "UNDEPLOYED", timeout=60)
    assert all(i.get("status") == "UNDEPLOYED" for i in gone["instance_list"])

    assert isinstance(client.delete_application(app["applicationID"]), str)
    with pytest.raises(oakestra.NotFoundError):
        client.application(app["applicationID"])


def test_create_from_json_file_path(client: oakestra.Client, tmp_path: Path) -> None:
    sla = clientsrvr()
    path = tmp_path / "sla.json"
    path.write_text(json.dumps(sla))
    [app] = client.create_applications(path)  # os.PathLike
    assert app["application_name"] == sla["applications"][0]["application_name"]
    client.delete_application(app["applicationID"])

    sla = clientsrvr()
    path.write_text(json.dumps(sla))
    app = client.create_application(str(path))  # str path
    assert app["application_name"] == sla["applications"][0]["application_name"]
    client.delete_application(app["applicationID"])


def test_missing_or_broken_descriptor_file(client: oakestra.Client, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.json"):
        client.create_applications(tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json is not valid JSON"):
        client.create_applications(broken)


def test_invalid_sla_raises_with_every_violation(client: oakestra.Client) -> None:
    sla = clientsrvr()
    sla["applications"][0]["microservices"][1]["port"] = "99999"
    sla["applications"][0]["microservices"][1]["addresses"]["rr_ip"] = "192.168.1.1"
    with pytest.raises(oakestra.InvalidSlaError) as caught:
        client.create_applications(sla)
    error = caught.value
    assert isinstance(error, oakestra.ApiError)
    assert error.status == 422
    assert error.method == "POST" and error.path == "/api/application"
    paths = {v.path for v in error.violations}
    assert "/applications/0/microservices/1/port" in paths
    assert "/applications/0/microservices/1/addresses/rr_ip" in paths
    assert error.message and error.message in str(error)


def test_deploy_with_count_creates_that_many_instances_in_one_request(
    client: oakestra.Client,
) -> None:
    app = client.create_application(clientsrvr())
    curl = next(s for s in client.services(app["applicationID"])
                if s["microservice_name"] == "curl")
    created = client.deploy(curl["_id"], count=3)
    assert isinstance(created, list)
    assert sorted(i["instance_number"] for i in created) == [0, 1, 2]
    running = client.wait_for_status(curl["_id"], "RUNNING", timeout=60)
    assert len(running["instance_list"]) == 3
    with pytest.raises(oakestra.ApiError) as caught:
        client.deploy(curl["_id"], count=10_001)
    assert caught.value.status == 400
    client.delete_application(app["applicationID"])


def test_missing_sla_version_is_a_422_with_the_servers_message(client: oakestra.Client) -> None:
    sla = clientsrvr()
    del sla["sla_version"]
    with pytest.raises(oakestra.ApiError) as caught:
        client.create_applications(sla)
    assert caught.value.status == 422
    assert "sla_version" in str(caught.value)


def test_unknown_service_raises_not_found_with_server_message(client: oakestra.Client) -> None:
    with pytest.raises(oakestra.NotFoundError) as caught:
        client.deploy("0" * 24)
    error = caught.value
    assert error.status == 404
    assert error.message  # the root says what was not found
    assert str(error).startswith("POST /api/service/000000000000000000000000/instance: 404")
    with pytest.raises(oakestra.NotFoundError):
        client.service({"$oid": "0" * 24})
    with pytest.raises(TypeError):
        client.service(42)  # type: ignore[arg-type]


def test_bad_credentials_raise_auth_error(oak_up: OakUp) -> None:
    with pytest.raises(oakestra.AuthError) as caught:
        oakestra.Client(oak_up.url, "Admin", "not-the-password")
    assert caught.value.status == 401
    assert caught.value.message


def test_unreachable_root_and_bad_url() -> None:
    with pytest.raises(oakestra.TransportError) as caught:
        oakestra.Client(f"http://127.0.0.1:{free_port()}")
    assert isinstance(caught.value, ConnectionError)
    assert "cannot reach the root orchestrator" in str(caught.value)
    with pytest.raises(ValueError, match="invalid root URL"):
        oakestra.Client("127.0.0.1:10000")


def test_wait_timeout_names_the_last_status_and_fail_on_fails_fast(client: oakestra.Client) -> None:
    sla = clientsrvr()
    sla["applications"][0]["microservices"][0]["memory"] = 10_000_000  # more than any worker
    app = client.create_application(sla)
    curl = next(s for s in client.services(app["applicationID"]) if s["microservice_name"] == "curl")
    client.deploy(curl["_id"])
    started = time.monotonic()
    with pytest.raises(oakestra.WaitTimeout) as caught:
        client.wait_for_status(curl["_id"], "RUNNING", timeout=2)
    assert 1.9 <= time.monotonic() - started < 15
    assert isinstance(caught.value, TimeoutError)
    assert "did not reach RUNNING within 2" in str(caught.value)
    [instance] = caught.value.service["instance_list"]
    status = instance["status"]
    assert status not in ("RUNNING", None)
    assert f"instance 0: {status}" in str(caught.value)

    with pytest.raises(oakestra.DeployFailed) as failed:
        client.wait_for_status(curl["_id"], "RUNNING", timeout=30, fail_on=[status])
    assert failed.value.status == status
    assert failed.value.instance == 0

    with pytest.raises(ValueError, match="unknown status"):
        client.wait_for_status(curl["_id"], "RUNING")
    client.delete_application(app["applicationID"])


def test_blocking_calls_release_the_gil(client: oakestra.Client) -> None:
    """Another Python thread keeps running while a call waits on the network."""
    sla = clientsrvr()
    sla["applications"][0]["microservices"][0]["memory"] = 10_000_000
    app = client.create_application(sla)
    curl = next(s for s in client.services(app["applicationID"]) if s["microservice_name"] == "curl")
    client.deploy(curl["_id"])
    ticks = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    counter = threading.Thread(target=count)
    counter.start()
    time.sleep(0.05)
    before = ticks
    try:
        with pytest.raises(oakestra.WaitTimeout):
            client.wait_for_status(curl["_id"], timeout=1.0, interval=0.5)
    finally:
        stop.set()
        counter.join()
    # Holding the GIL for the whole second would leave the counter at (nearly) `before`.
    assert ticks - before > 100_000, (before, ticks)
    client.delete_application(app["applicationID"])


def test_async_client(oak_up: OakUp) -> None:
    async def main() -> None:
        aclient = await oakestra.AsyncClient.connect(oak_up.url, "Admin", "Admin")
        assert aclient.url == oak_up.url
        health, clusters = await asyncio.gather(aclient.health(), aclient.clusters())
        assert health["status"] == "ok"
        assert clusters[0]["cluster_name"] == "local"
        app = await aclient.create_application(clientsrvr())
        [curl, _] = sorted(await aclient.services(app["applicationID"]),
                           key=lambda s: s["microservice_name"])
        await aclient.deploy(curl["_id"])
        service = await aclient.wait_for_status(curl["_id"], timeout=60)
        assert service["instance_list"][0]["status"] == "RUNNING"
        with pytest.raises(oakestra.NotFoundError):
            await aclient.application("0" * 24)
        await aclient.delete_application(app["applicationID"])

    asyncio.run(main())


def test_logs_and_raw_calls(client: oakestra.Client) -> None:
    app = client.create_application(clientsrvr())
    nginx = next(s for s in client.services(app["applicationID"]) if s["microservice_name"] == "nginx")
    client.deploy(nginx["_id"])
    client.wait_for_status(nginx["_id"], timeout=60)
    assert isinstance(client.logs(nginx["_id"], 0, tail=10), str)
    with pytest.raises(oakestra.NotFoundError):
        client.logs(nginx["_id"], 7)
    users = client.call("GET", "/api/users")
    assert "Admin" in [u["name"] for u in users]
    assert any(a["_id"] == app["_id"] for a in client.applications())
    with pytest.raises(ValueError, match="must start with"):
        client.call("GET", "api/users")
    client.delete_application(app["applicationID"])


def test_one_client_from_many_threads_and_single_instances(client: oakestra.Client) -> None:
    from concurrent.futures import ThreadPoolExecutor

    app = client.create_application(clientsrvr())
    nginx = next(s for s in client.services(app["applicationID"]) if s["microservice_name"] == "nginx")
    with ThreadPoolExecutor(max_workers=4) as pool:
        deployed = list(pool.map(lambda _: client.deploy(nginx["_id"]), range(2)))
        assert sorted(i["instance_number"] for i in deployed) == [0, 1]
        waits = [pool.submit(client.wait_for_status, nginx["_id"], instance=n, timeout=60)
                 for n in (0, 1)]
        healths = list(pool.map(lambda _: client.health()["status"], range(8)))
        assert healths == ["ok"] * 8
        for w in waits:
            w.result()
    client.undeploy(nginx["_id"], 0)
    client.wait_for_status(nginx["_id"], "UNDEPLOYED", instance=0, timeout=60)
    service = client.wait_for_status(nginx["_id"], "RUNNING", instance=1, timeout=5)
    by_number = {i["instance_number"]: i.get("status") for i in service["instance_list"]}
    assert by_number.get(1) == "RUNNING" and by_number.get(0) in (None, "UNDEPLOYED")
    with pytest.raises(oakestra.WaitTimeout, match="instance 7 does not exist"):
        client.wait_for_status(nginx["_id"], instance=7, timeout=0.3)
    client.delete_application(app["applicationID"])


def test_scale_keeps_the_desired_number_of_instances(client: oakestra.Client) -> None:
    sla = clientsrvr()
    app = client.create_application(sla)
    nginx = next(
        s for s in client.services(app["applicationID"]) if s["microservice_name"] == "nginx"
    )
    up = client.scale(nginx["_id"], 3)
    assert up["replicas"] == 3
    assert up["instances"] == [0, 1, 2]
    assert up["deployed"] == [0, 1, 2]
    running = client.wait_for_status(nginx["_id"], "RUNNING", timeout=60)
    assert len(running["instance_list"]) == 3
    assert client.service(nginx["_id"])["replicas"] == 3
    down = client.scale(nginx["_id"], 1)
    assert down["removed"] == [2, 1]
    assert down["instances"] == [0]
    with pytest.raises(oakestra.OakestraError) as bad:
        client.scale(nginx["_id"], 10_001)
    assert "10000" in str(bad.value)
    client.delete_application(app["applicationID"])
