"""examples/python/clientsrvr.py runs end to end against the live `oak up` (twice: a re-run
starts over)."""

from __future__ import annotations

import subprocess
import sys

import oakestra
from conftest import REPO, OakUp

SCRIPT = REPO / "examples" / "python" / "clientsrvr.py"


def run_example(url: str) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--url", url, "--timeout", "60"],
        capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_clientsrvr_example_deploys_and_compares_schedulers(oak_up: OakUp) -> None:
    out = run_example(oak_up.url)
    assert "sla-clientsrvr-container.json: valid" in out
    assert "curl   instance 0: RUNNING" in out and "nginx  instance 0: RUNNING" in out
    assert "clientsrvr is RUNNING" in out
    assert "40 instances on 24 workers" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.startswith(("best_fit", "least_loaded"))}
    assert set(rows) == {"best_fit", "least_loaded"}
    assert rows["best_fit"][1:3] == rows["least_loaded"][1:3] == ["40", "0"]  # placed, failed
    # packing drives its workers to 100 % CPU, spreading keeps the peak lower
    assert int(rows["best_fit"][4]) == 100
    assert int(rows["least_loaded"][4]) < 100

    again = run_example(oak_up.url)
    assert "deleting the previous clientsrvr application" in again
    client = oakestra.Client(oak_up.url)
    [app] = [a for a in client.applications() if a["application_name"] == "clientsrvr"]
    for service in client.services(app["applicationID"]):
        assert [i["status"] for i in service["instance_list"]] == ["RUNNING"]
