"""Events and usage history from Python: Client.events, Client.follow_events, Client.usage."""

from __future__ import annotations

import time

import oakestra

from conftest import clientsrvr


def kinds(events: list[dict]) -> list[str]:
    return [e["kind"] for e in events]


def in_order(have: list[str], want: list[str]) -> bool:
    it = iter(have)
    return all(any(h == w for h in it) for w in want)


def test_deploy_events_over_the_api_and_the_stream(client: oakestra.Client) -> None:
    app = client.create_application(clientsrvr())
    nginx = next(s for s in client.services(app["applicationID"]) if s["microservice_name"] == "nginx")
    service_id = nginx["_id"]["$oid"]
    client.deploy(service_id)
    client.wait_for_status(service_id, "RUNNING", timeout=60)

    want = ["requested", "placed", "node_scheduled", "running"]
    deadline = time.monotonic() + 30
    while True:
        events = client.events(service=service_id)
        if in_order(kinds(events), want):
            break
        assert time.monotonic() < deadline, kinds(events)
        time.sleep(0.1)
    running = next(e for e in events if e["kind"] == "running")
    assert running["status"] == "RUNNING"
    assert running["worker_id"] in running["message"]
    assert all(e["service_id"] == service_id for e in events)
    assert client.events(service=service_id, kind="running", limit=1)[0]["id"] == running["id"]

    # The stream starts with the same kept events, in the same order.
    stream = client.follow_events(service=service_id)
    streamed = [next(stream) for _ in events]
    assert [e["id"] for e in streamed] == [e["id"] for e in events]

    # Undeploying is an event too, and arrives on the open stream.
    client.undeploy(service_id, 0)
    undeployed = next(stream)
    assert undeployed["kind"] == "undeployed"
    assert undeployed["instance_number"] == 0

    usage = client.usage(service_id)
    assert usage["service_id"] == service_id
    assert usage["step"] == 5
    client.delete_application(app["applicationID"])
