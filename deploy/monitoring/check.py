#!/usr/bin/env python3
"""Checks deploy/monitoring/ against a live set-up (run by scripts/test):

* `promtool check config` (the shipped prometheus.yml and the test's) and `promtool check rules`;
* a real Prometheus on loopback scrapes a running `oak up` (root, cluster and one worker on
  the fake runtime, the clientsrvr services deployed) and has series from all three;
* every PromQL expression of every panel of every shipped Grafana dashboard returns data,
  and every alert expression evaluates.

Usage: check.py [path/to/oak]   (default target/debug/oak). Needs `prometheus` and `promtool`.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEADLINE = time.monotonic() + 150  # the whole check, start-up included


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fail(message: str) -> None:
    print(f"monitoring check FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def http(method: str, url: str, body: object = None, token: str | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


def wait(what: str, probe, limit: float = 60):
    end = min(time.monotonic() + limit, DEADLINE)
    last = None
    while time.monotonic() < end:
        try:
            value = probe()
            if value:
                return value
        except Exception as e:  # not up yet
            last = e
        time.sleep(0.5)
    fail(f"timed out waiting for {what} (last error: {last})")


def promtool(*args: str) -> None:
    result = subprocess.run(["promtool", *args], capture_output=True, text=True)
    if result.returncode != 0:
        fail(f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}")


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr) of every target of every shipped dashboard."""
    out = []
    for path in sorted((HERE / "grafana" / "dashboards").glob("*.json")):
        dash = json.loads(path.read_text())
        for panel in dash["panels"]:
            for target in panel["targets"]:
                # Template variables as "All".
                expr = target["expr"].replace("$job_name", ".*")
                out.append((path.name, panel["title"], expr))
    if not out:
        fail("no dashboard panels found")
    return out


def main() -> None:
    oak = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "target" / "debug" / "oak").resolve()
    if not oak.is_file():
        fail(f"{oak} is missing: cargo build -p oak")
    for tool in ("prometheus", "promtool"):
        if not shutil.which(tool):
            fail(f"{tool} is not installed (scripts/setup installs Debian's prometheus)")
    promtool("check", "config", str(HERE / "prometheus.yml"))
    promtool("check", "rules", str(HERE / "alerts.yml"))

    tmp = Path(tempfile.mkdtemp(prefix="oak-monitoring-"))
    api, grpc, cluster, mqtt, worker, prom = (free_port() for _ in range(6))
    procs: list[subprocess.Popen] = []
    try:
        up_log = open(tmp / "oak-up.log", "wb")
        procs.append(subprocess.Popen(
            [str(oak), "up", "--data-dir", str(tmp / "state"), "--runtime", "fake",
             "--api-listen", f"127.0.0.1:{api}", "--grpc-listen", f"127.0.0.1:{grpc}",
             "--cluster-listen", f"127.0.0.1:{cluster}", "--mqtt-listen", f"127.0.0.1:{mqtt}",
             "--worker-metrics-listen", f"127.0.0.1:{worker}",
             "--worker-cpus", "8", "--worker-memory-mb", "16384"],
            stdout=up_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        base = f"http://127.0.0.1:{api}"
        token = wait("the root's API", lambda: http(
            "POST", f"{base}/api/auth/login", {"username": "Admin", "password": "Admin"})["token"])
        wait("an active cluster with a worker", lambda: any(
            c.get("active_nodes", 0) >= 1 for c in http("GET", f"{base}/api/clusters/active")))
        sla = json.loads((REPO / "examples" / "sla-clientsrvr-container.json").read_text())
        apps = http("POST", f"{base}/api/application", sla, token)
        services = http("GET", f"{base}/api/services/{apps[0]['applicationID']}", None, token)
        for s in services:
            http("POST", f"{base}/api/service/{s['_id']['$oid']}/instance", None, token)
        for s in services:
            sid = s["_id"]["$oid"]
            wait(f"service {sid} RUNNING", lambda: http(
                "GET", f"{base}/api/service/{sid}", None, token).get("status") == "RUNNING")

        # The shipped configuration with the test's ports, a 1 s scrape interval and the
        # shipped rules (by absolute path).
        config = (HERE / "prometheus.yml").read_text()
        for default, port in (("10000", api), ("10100", cluster), ("10101", worker)):
            config = config.replace(f'"127.0.0.1:{default}"', f'"127.0.0.1:{port}"')
        config = config.replace("15s", "1s").replace("- alerts.yml", f"- {HERE / 'alerts.yml'}")
        (tmp / "prometheus.yml").write_text(config)
        promtool("check", "config", str(tmp / "prometheus.yml"))
        prom_log = open(tmp / "prometheus.log", "wb")
        procs.append(subprocess.Popen(
            ["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom}"],
            stdout=prom_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))

        def query(expr: str) -> list:
            url = f"http://127.0.0.1:{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
            answer = http("GET", url)
            if answer.get("status") != "success":
                fail(f"query {expr!r}: {answer}")
            return answer["data"]["result"]

        jobs = wait("Prometheus scraping root, cluster and worker", lambda: (
            lambda up: up if len(up) == 3 and all(r["value"][1] == "1" for r in up) else None
        )(query('up{job=~"oakestra-.*"}')))
        print(f"scraping {sorted(r['metric']['job'] for r in jobs)}")
        for job, prefix in (("oakestra-root", "oakestra_root_"), ("oakestra-cluster",
                            "oakestra_cluster_"), ("oakestra-worker", "oakestra_node_")):
            wait(f"{prefix}* series from {job}", lambda: query(
                f'count({{job="{job}", __name__=~"{prefix}.+"}})'))

        empty = []
        for dashboard, title, expr in panel_queries():
            # Rates need two samples in their window: give every query a little time.
            if not wait_for_data(query, expr):
                empty.append(f"{dashboard} / {title}: {expr}")
            else:
                print(f"ok  {dashboard} / {title}: {expr}")
        if empty:
            fail("panels without data:\n  " + "\n  ".join(empty))
        # Prometheus loaded the shipped rules and evaluates them without error.
        def rules_healthy():
            groups = http("GET", f"http://127.0.0.1:{prom}/api/v1/rules")["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            bad = [r for r in rules if r.get("health") != "ok"]
            return len(rules) > 0 and not bad and rules
        rules = wait("every alert rule evaluated without error", rules_healthy, 30)
        print(f"ok  {len(rules)} alert rules evaluate")
        print("monitoring check passed")
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def wait_for_data(query, expr: str) -> bool:
    end = min(time.monotonic() + 20, DEADLINE)
    while time.monotonic() < end:
        if query(expr):
            return True
        time.sleep(0.5)
    return False


if __name__ == "__main__":
    main()
