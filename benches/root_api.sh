#!/usr/bin/env bash
# End-to-end benchmark of the root REST API (release build, embedded redb store, loopback):
#   1. idle RSS of a fresh oakestra-root (VmRSS from /proc/<pid>/status)
#   2. GET /api/applications with 100 applications stored, 64 connections (wrk; the Rust
#      load generator daemons/root/examples/api_load.rs when wrk is missing)
#   3. p50/p99 of POST /api/application with the clientsrvr descriptor, 32 concurrent clients
#   4. one user's 1,000-application descriptor vs another user's single creates
#   5. GET /api/applications over 1,000 connections
#   6. RSS again after the load
# Usage: benches/root_api.sh [seconds per wrk run, default 15]
# Every request goes to 127.0.0.1 only; the run is bounded in time and count.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${1:-15}
cargo build --release -q -p oakestra-root --bin oakestra-root --example api_load
BIN=target/release/oakestra-root
LOAD=target/release/examples/api_load

DATA=$(mktemp -d)
PID=""
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  rm -rf "$DATA"
}
trap cleanup EXIT

RUST_LOG=warn "$BIN" --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --data-dir "$DATA" \
  >"$DATA/stdout" 2>"$DATA/stderr" &
PID=$!
for _ in $(seq 100); do
  grep -q 'REST API listening on' "$DATA/stdout" 2>/dev/null && break
  sleep 0.1
done
URL=$(sed -n 's/^oakestra-root: REST API listening on //p' "$DATA/stdout")
[ -n "$URL" ] || { echo "oakestra-root did not start:"; cat "$DATA/stderr"; exit 1; }

rss() { awk '/^VmRSS/ {printf "%.1f MB", $2/1024}' "/proc/$PID/status"; }
sleep 3
echo "idle RSS after start (redb store): $(rss)"

"$LOAD" seed "$URL" 100
TOKEN=$(curl -s "$URL/api/auth/login" -d '{"username":"Admin","password":"Admin"}' |
  sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
BYTES=$(curl -s -H "Authorization: Bearer $TOKEN" "$URL/api/applications" | wc -c)
echo "GET /api/applications answer: $BYTES bytes (100 applications)"

if command -v wrk >/dev/null 2>&1; then
  echo "== wrk -t2 -c64 -d${SECONDS_PER_RUN}s GET /api/applications"
  wrk -t2 -c64 -d"${SECONDS_PER_RUN}s" --latency -H "Authorization: Bearer $TOKEN" \
    "$URL/api/applications"
else
  echo "== wrk not installed (scripts/setup installs it); Rust load generator instead"
  "$LOAD" get "$URL" 64 "$SECONDS_PER_RUN"
fi

echo "== POST /api/application, 1 client x 100 creates (latency without queueing)"
"$LOAD" post "$URL" 1 100
echo "== POST /api/application, 32 clients x 30 creates"
"$LOAD" post "$URL" 32 30

echo "== one user's 1,000-application descriptor while another user creates (issue 19)"
"$LOAD" bulk "$URL" 1000

if command -v wrk >/dev/null 2>&1; then
  echo "== wrk -t2 -c1000 -d${SECONDS_PER_RUN}s GET /api/applications (1,000 connections)"
  wrk -t2 -c1000 -d"${SECONDS_PER_RUN}s" --latency -H "Authorization: Bearer $TOKEN" \
    "$URL/api/applications"
else
  "$LOAD" get "$URL" 1000 "$SECONDS_PER_RUN"
fi

sleep 3
echo "RSS after the load, idle again: $(rss)"
