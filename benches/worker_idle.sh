#!/usr/bin/env bash
# Idle footprint of the worker: RSS and CPU of a registered `oakestra-node` (release build) that
# is connected to a real broker and reports `information` every 2 s, measured from /proc over
# DURATION seconds (default 60) after a 5 s warm-up (CPU time from /proc/<pid>/schedstat).
#
#   benches/worker_idle.sh [DURATION]
#   INSTANCES=20 benches/worker_idle.sh 60   # the same with 20 running (fake) instances, so the
#                                            # worker also sends jobs/resources every 2 s
#
# Needs mosquitto (scripts/setup) and python3 (a stub of the cluster's register endpoint).
# Loopback only; everything it starts is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${1:-60}"
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || { echo "mosquitto missing: run scripts/setup" >&2; exit 1; }
MOSQUITTO="$(command -v mosquitto || echo /usr/sbin/mosquitto)"

[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p oakestra-node   # NO_BUILD=1: use the existing binary
NODE=target/release/oakestra-node

WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MQTT_PORT="$(free_port)"
HTTP_PORT="$(free_port)"

cat >"$WORK/mosquitto.conf" <<EOF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence false
user root
log_dest file $WORK/mosquitto.log
EOF
"$MOSQUITTO" -c "$WORK/mosquitto.conf" 2>/dev/null & PIDS+=($!)

# Stub of POST /api/node/register: a fixed id, the broker port, anonymous MQTT.
cat >"$WORK/stub.py" <<EOF
import http.server, json
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"id": "6650f00dcafe0000000000be", "MQTT_BROKER_PORT": $MQTT_PORT,
                           "MQTT_BROKER_HOST": "127.0.0.1"}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", $HTTP_PORT), H).serve_forever()
EOF
python3 "$WORK/stub.py" & PIDS+=($!)
sleep 0.5

RUST_LOG=warn "$NODE" --cluster "127.0.0.1:$HTTP_PORT" --token bench --data-dir "$WORK/node" --runtime fake \
  2>"$WORK/node.log" & NODE_PID=$!; PIDS+=($NODE_PID)

sleep 5
grep -q '"id"' "$WORK/node/node-state.json" || { echo "the worker did not register:"; cat "$WORK/node.log"; exit 1; }
grep -q 'as 6650f00dcafe0000000000be-ne' "$WORK/mosquitto.log" || { echo "the worker did not connect to the broker:"; cat "$WORK/node.log"; exit 1; }

INSTANCES="${INSTANCES:-0}"
if [ "$INSTANCES" -gt 0 ]; then
  # Deploy commands published with a minimal MQTT 3.1.1 client (no client library needed).
  python3 - "$MQTT_PORT" "$INSTANCES" <<'PY'
import json, socket, struct, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
def varint(x):
    out = b""
    while True:
        b, x = x % 128, x // 128
        out += bytes([b | (128 if x else 0)])
        if not x: return out
def s(t): t = t.encode(); return struct.pack(">H", len(t)) + t
sock = socket.create_connection(("127.0.0.1", port))
body = s("MQTT") + bytes([4, 2]) + struct.pack(">H", 60) + s("bench-deployer")
sock.sendall(b"\x10" + varint(len(body)) + body); sock.recv(4)
for i in range(n):
    payload = json.dumps({"_id": "bench", "job_name": "bench.bench.svc.bench", "instance_number": i,
                          "image": "nginx", "virtualization": "docker", "memory": 100, "vcpus": 1}).encode()
    body = s("nodes/6650f00dcafe0000000000be/control/deploy") + payload
    sock.sendall(b"\x30" + varint(len(body)) + body)
sock.sendall(b"\xe0\x00"); sock.close()
PY
  sleep 3
  running="$(grep -c '"RUNNING"' "$WORK/node/node-state.json" || true)"
  [ "$running" -eq "$INSTANCES" ] || { echo "only $running of $INSTANCES instances RUNNING"; cat "$WORK/node.log"; exit 1; }
fi

# CPU time in ns from schedstat (tick-based /proc/<pid>/stat is too coarse: 10 ms per tick).
ticks() { awk '{print $1}' "/proc/$NODE_PID/schedstat"; }
HZ=1000000000
T0="$(ticks)"; S0="$(date +%s.%N)"
sleep "$DURATION"
T1="$(ticks)"; S1="$(date +%s.%N)"
RSS_KB="$(awk '/^VmRSS:/ {print $2}' "/proc/$NODE_PID/status")"
HWM_KB="$(awk '/^VmHWM:/ {print $2}' "/proc/$NODE_PID/status")"
THREADS="$(awk '/^Threads:/ {print $2}' "/proc/$NODE_PID/status")"

python3 - "$T0" "$T1" "$S0" "$S1" "$HZ" "$RSS_KB" "$HWM_KB" "$THREADS" "$INSTANCES" <<'EOF'
import sys
t0, t1, s0, s1, hz, rss, hwm, threads = map(float, sys.argv[1:9])
cpu = (t1 - t0) / hz / (s1 - s0) * 100
print(f"oakestra-node ({int(sys.argv[9])} instances) over {s1 - s0:.0f} s: CPU {cpu:.3f} % of one core "
      f"({(t1 - t0) / hz * 1000:.1f} ms CPU time), RSS {rss / 1024:.1f} MiB "
      f"(peak {hwm / 1024:.1f} MiB), {int(threads)} threads")
EOF
