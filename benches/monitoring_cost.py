#!/usr/bin/env python3
"""Cost of events and usage history at scale (issue 16): `oak up --workers 0` (root + cluster in
one process) and `oak sim --workers W` (W simulated workers in another), N instances per
worker deployed through the REST API, then CPU and RSS of both processes over a window, and
the root's own monitoring gauges (history instances and bytes, events kept).

    python3 benches/monitoring_cost.py [--oak target/release/oak] [--workers 1000] [--per-worker 10]
        [--batch 1000] [--window 120] [--keep]

`--batch N` deploys through the batch path (`POST …/instance?count=N`, one request per N
instances of a service) instead of one request per instance; `--per-worker 0` deploys nothing
(the baseline). With a window of 60 s or more, the root's history writer runs in it: the script
reports the bytes of usage history written to the store per instance per minute.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, token=None, timeout=60):
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                 method=method, headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
        return json.loads(raw) if raw[:1] in (b"{", b"[") else raw.decode()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--oak", default=str(REPO / "target" / "release" / "oak"))
    ap.add_argument("--workers", type=int, default=1000)
    ap.add_argument("--per-worker", type=int, default=10)
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--keep", action="store_true",
                    help="keep the state and the logs of both processes (the directory is printed)")
    ap.add_argument("--batch", type=int, default=0,
                    help="instances per request through ?count=N (0: one request per instance)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="oak-moncost-"))
    api, grpc, cluster, mqtt = (free_port() for _ in range(4))
    procs = []
    try:
        up = subprocess.Popen([a.oak, "up", "--workers", "0", "--data-dir", str(tmp / "state"),
                               "--api-listen", f"127.0.0.1:{api}", "--grpc-listen", f"127.0.0.1:{grpc}",
                               "--cluster-listen", f"127.0.0.1:{cluster}", "--mqtt-listen", f"127.0.0.1:{mqtt}"],
                              stdout=open(tmp / "up.log", "wb"), stderr=subprocess.STDOUT)
        procs.append(up)
        base = f"http://127.0.0.1:{api}"
        for _ in range(600):
            try:
                token = http("POST", f"{base}/api/auth/login", {"username": "Admin", "password": "Admin"})["token"]
                break
            except Exception:
                time.sleep(0.5)
        worker_token = (tmp / "state" / "cluster" / "worker-join-token").read_text().strip()
        sim = subprocess.Popen([a.oak, "sim", "--cluster", f"127.0.0.1:{cluster}", "--token", worker_token,
                                "--workers", str(a.workers), "--data-dir", str(tmp / "sim"),
                                "--memory-mb", str(100 * a.per_worker // 10 + 20)],
                               stdout=open(tmp / "sim.log", "wb"), stderr=subprocess.STDOUT)
        procs.append(sim)
        start = time.monotonic()
        while f"all {a.workers} workers registered" not in (tmp / "sim.log").read_text(errors="replace"):
            if time.monotonic() - start > 600:
                raise SystemExit("the workers did not register in 10 min")
            time.sleep(1)
        print(f"{a.workers} workers registered in {time.monotonic() - start:.0f} s")
        services = [{"microserviceID": "", "microservice_name": f"s{i}", "microservice_namespace": "cost",
                     "virtualization": "container", "cmd": [], "memory": 10, "vcpus": 0,
                     "code": "docker.io/library/busybox:latest"} for i in range(10)]
        sla = {"sla_version": "v2.0", "customerID": "Admin", "applications": [{
            "applicationID": "", "application_name": "cost", "application_namespace": "cost",
            "application_desc": "monitoring cost", "microservices": services}]}
        apps = http("POST", f"{base}/api/application", sla, token)
        ids = [s["_id"]["$oid"] for s in http("GET", f"{base}/api/services/{apps[0]['applicationID']}", None, token)]
        total = a.workers * a.per_worker
        start = time.monotonic()
        session = {"token": token}

        def deploy(k: int) -> None:
            url = f"{base}/api/service/{ids[k % len(ids)]}/instance"
            try:
                http("POST", url, None, session["token"])
            except urllib.error.HTTPError as e:
                if e.code != 401:
                    raise
                # The access token (10 min) expired during a long run: log in again.
                session["token"] = http("POST", f"{base}/api/auth/login",
                                        {"username": "Admin", "password": "Admin"})["token"]
                http("POST", url, None, session["token"])

        def deploy_batch(job: tuple[str, int]) -> None:
            sid, n = job
            url = f"{base}/api/service/{sid}/instance?count={n}"
            try:
                answer = http("POST", url, None, session["token"], timeout=600)
            except urllib.error.HTTPError as e:
                if e.code != 401:
                    raise
                session["token"] = http("POST", f"{base}/api/auth/login",
                                        {"username": "Admin", "password": "Admin"})["token"]
                answer = http("POST", url, None, session["token"], timeout=600)
            assert len(answer["instances"]) == n, answer.get("message")

        if total and a.batch > 0:
            jobs = []
            per_service = [total // len(ids) + (1 if k < total % len(ids) else 0) for k in range(len(ids))]
            for sid, want in zip(ids, per_service):
                while want > 0:
                    jobs.append((sid, min(a.batch, want)))
                    want -= a.batch
            with concurrent.futures.ThreadPoolExecutor(min(a.parallel, len(jobs))) as pool:
                list(pool.map(deploy_batch, jobs))
            print(f"{total} instances requested in {len(jobs)} batch calls, answered in "
                  f"{time.monotonic() - start:.2f} s")
        elif total:
            with concurrent.futures.ThreadPoolExecutor(a.parallel) as pool:
                list(pool.map(deploy, range(total)))
            print(f"{total} deploy calls answered in {time.monotonic() - start:.0f} s")
        token = session["token"]
        while total:
            m = http("GET", f"{base}/metrics")
            running = sum(float(v) for v in re.findall(r'oakestra_root_instances\{status="RUNNING"\} (\S+)', m))
            if running >= total:
                break
            if time.monotonic() - start > 1200:
                raise SystemExit(f"only {running} of {total} RUNNING after 20 min")
            time.sleep(0.5)
        if total:
            print(f"{total} instances RUNNING {time.monotonic() - start:.1f} s after the first deploy call")
        time.sleep(10)  # settle
        written = "oakestra_root_usage_history_written_bytes_total"
        w0 = metric(http("GET", f"{base}/metrics"), written)
        c0 = {p.pid: cpu_seconds(p.pid) for p in procs}
        t0 = time.monotonic()
        time.sleep(a.window)
        dt = time.monotonic() - t0
        w1 = metric(http("GET", f"{base}/metrics"), written)
        for name, p in (("oak up (root + cluster)", up), (f"oak sim ({a.workers} workers)", sim)):
            print(f"{name}: CPU {100 * (cpu_seconds(p.pid) - c0[p.pid]) / dt:.1f} % of a core over {dt:.0f} s, "
                  f"RSS {rss_mb(p.pid):.0f} MB")
        m = http("GET", f"{base}/metrics")
        for name in ("oakestra_root_usage_history_instances", "oakestra_root_usage_history_bytes",
                     "oakestra_root_events_kept"):
            print(f"{name} {metric(m, name):.0f}")
        if total:
            print(f"usage history written to the store over the window: {w1 - w0:.0f} B, "
                  f"{(w1 - w0) / total / (dt / 60):.1f} B per instance per minute")
        # Issue 20: no worker may be declared lost while it reports.
        cm = http("GET", f"http://127.0.0.1:{cluster}/metrics")
        print(f"cluster: workers lost since start {metric(cm, 'oakestra_cluster_workers_lost_total'):.0f}")
        events = http("GET", f"{base}/api/events?limit=1", None, token)
        print(f"last event id {events[-1]['id'] if events else 0}")
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        if a.keep:
            print(f"state and logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
