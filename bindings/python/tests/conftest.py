"""Fixtures of the oakestra pytest suite: a live `oak up` (root, cluster and a worker on the
fake runtime, in one process) on free loopback ports with a temporary data directory.

The `oak` binary is target/debug/oak of this workspace (scripts/test builds it), or $OAK_BIN.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

import oakestra

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"
OAK = Path(os.environ.get("OAK_BIN", REPO / "target" / "debug" / "oak"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OakUp:
    """A running `oak up` process."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        if not OAK.is_file():
            raise RuntimeError(f"{OAK} is missing: build it with `cargo build -p oak`")
        api, grpc, cluster, mqtt = (free_port() for _ in range(4))
        self.url = f"http://127.0.0.1:{api}"
        self.log_path = data_dir / "oak-up.log"
        self.args = [
            str(OAK), "up",
            "--data-dir", str(data_dir),
            "--api-listen", f"127.0.0.1:{api}",
            "--grpc-listen", f"127.0.0.1:{grpc}",
            "--cluster-listen", f"127.0.0.1:{cluster}",
            "--mqtt-listen", f"127.0.0.1:{mqtt}",
            "--runtime", "fake",
            # The fake runtime runs nothing: advertise fixed resources so that placement does
            # not depend on the size of the CI host.
            "--worker-cpus", "8",
            "--worker-memory-mb", "16384",
            *extra,
        ]
        data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"oak up exited with {self.proc.returncode}:\n{self.log()}")
            try:
                client = oakestra.Client(self.url, "Admin", "Admin")
                clusters = client.clusters(active=True)
                if clusters and all(c["active_nodes"] >= 1 for c in clusters):
                    return
            except oakestra.OakestraError as e:
                last = e
            time.sleep(0.2)
        raise RuntimeError(f"oak up not ready after {timeout} s ({last}):\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="session")
def oak_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OakUp]:
    up = OakUp(tmp_path_factory.mktemp("oak-up"))
    yield up
    up.stop()


@pytest.fixture()
def client(oak_up: OakUp) -> oakestra.Client:
    return oakestra.Client(oak_up.url, "Admin", "Admin")


def unique(prefix: str) -> str:
    """A name unique in this run (SLA names are alphanumeric, at most 30 characters)."""
    return (prefix + uuid.uuid4().hex)[:16]


_rr_octet = iter(range(10, 250))


def clientsrvr(name: str | None = None) -> dict[str, Any]:
    """The clientsrvr example descriptor with a unique application name and its own rr_ip
    (a round-robin IP belongs to one service at a time)."""
    sla = json.loads((EXAMPLES / "sla-clientsrvr-container.json").read_text())
    sla = copy.deepcopy(sla)
    app = sla["applications"][0]
    app["application_name"] = name or unique("cs")
    for service in app["microservices"]:
        if "addresses" in service:
            service["addresses"]["rr_ip"] = f"10.30.77.{next(_rr_octet)}"
    return sla
