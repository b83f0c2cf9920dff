# %% [markdown]
# # Oakestra-rs from Python: deploy clientsrvr, then compare two schedulers
#
# Runs as a script (`python examples/python/clientsrvr.py --url http://127.0.0.1:10000`) or cell
# by cell in Jupyter / VS Code (the `# %%` markers). It needs a root orchestrator with a
# cluster and a worker: `oak up` starts all three in one process. Install the package with
# `pip install ./bindings/python`.

# %%
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import oakestra
from oakestra import sched

HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
SLA = HERE.parent / "sla-clientsrvr-container.json"

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--url", default=os.environ.get("OAKESTRA_URL", "http://127.0.0.1:10000"))
parser.add_argument("--user", default=os.environ.get("OAKESTRA_USER", "Admin"))
parser.add_argument("--password", default=os.environ.get("OAKESTRA_PASSWORD", "Admin"))
parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for RUNNING")
args, _ = parser.parse_known_args()  # tolerate the arguments Jupyter passes

# %% [markdown]
# ## 1. Check the descriptor locally
# `validate_sla` runs the same Rust validator as the root; every violation has its JSON path.

# %%
violations = oakestra.validate_sla(SLA)
if violations:
    for v in violations:
        print(f"  {v.path}: {v.message}")
    sys.exit(f"{SLA} is not a valid SLA")
print(f"{SLA.name}: valid")

# %% [markdown]
# ## 2. Create the application and deploy one instance of each service
# Re-running starts over: an existing clientsrvr application of this user is deleted first
# (its round-robin IP 10.30.55.55 can belong to one service only).

# %%
client = oakestra.Client(args.url, args.user, args.password)
print(f"connected to {client.url}; clusters: "
      + ", ".join(f"{c['cluster_name']} ({c['active_nodes']} workers)" for c in client.clusters()))

for app in client.applications():
    if (app["application_name"], app["application_namespace"]) == ("clientsrvr", "test"):
        print(f"deleting the previous clientsrvr application {app['applicationID']}")
        client.delete_application(app["applicationID"])

app = client.create_application(SLA)
print(f"created application {app['application_name']} ({app['applicationID']})")

started = time.monotonic()
services = client.services(app["applicationID"])
for service in services:
    client.deploy(service["_id"])
for service in services:
    # The wait releases the GIL: other threads (a progress bar, a scheduler) keep running.
    running = client.wait_for_status(service["_id"], "RUNNING", timeout=args.timeout)
    for instance in running["instance_list"]:
        print(f"  {service['microservice_name']:<6} instance {instance['instance_number']}: "
              f"{instance['status']} on worker {instance.get('worker_id')} "
              f"ip {instance.get('instance_ip')}")
print(f"clientsrvr is RUNNING after {time.monotonic() - started:.2f} s")

# %% [markdown]
# ## 3. Compare two schedulers in simulation
# A synthetic edge fleet of 24 workers (4–16 cores, 4–32 GB, some already busy) and a scale-up
# of clientsrvr to 20 nginx and 20 curl instances, with the resources the SLA asks for.
# `simulate` gives each scheduler its own copy of the fleet and takes every placement's
# resources before the next request, as a cluster would.

# %%
rng = random.Random(7)
fleet = []
for i in range(24):
    cores = rng.choice([4, 8, 16])
    memory = cores * rng.choice([1024, 2048])
    fleet.append(sched.Candidate(
        f"edge-{i:02d}",
        cpu_cores=cores,
        cpu_load_percent=rng.choice([0, 0, 10, 30, 60]),
        memory_total_mb=memory,
        memory_free_mb=memory * rng.choice([50, 75, 100]) // 100,
        virtualization=["container"],
        arch=["amd64"],
    ))

descriptor = json.loads(SLA.read_text())
requests = []
for microservice in descriptor["applications"][0]["microservices"]:
    requests += [sched.PlacementRequest(
        service=f"clientsrvr.test.{microservice['microservice_name']}.test",
        vcpus=microservice["vcpus"],
        memory_mb=microservice["memory"],
        virtualization=microservice["virtualization"],
    )] * 20
rng.shuffle(requests)

results = sched.simulate(requests, fleet, ["best_fit", "least_loaded"])

print(f"\n{len(requests)} instances on {len(fleet)} workers")
print(f"{'scheduler':<14}{'placed':>7}{'failed':>7}{'workers used':>14}{'max load %':>12}{'time ms':>9}")
for name, run in results.items():
    used = sum(1 for n in run.counts.values() if n)
    max_load = max(c.cpu_load_percent for c in run.candidates)
    print(f"{name:<14}{run.placed:>7}{run.failed:>7}{used:>14}{max_load:>12.0f}"
          f"{run.seconds * 1000:>9.2f}")
    if run.failures:
        first = run.failures[0]
        print(f"{'':<14}first failure: request {first.index}: {first.status}: {first.detail}")

# %% [markdown]
# best_fit packs instances: the workers it uses run at 100 % CPU, and the rest stay free for
# big services. least_loaded spreads them over the idlest workers: a lower peak load. The same request and fleet
# types are what a cluster sends an external scheduler: `sched.serve(my_function)` turns a
# Python function into one (`oak up --scheduler external:<url>`).
