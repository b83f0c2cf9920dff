#!/usr/bin/env bash
# Bounded load test of a live root (issue 19), for scripts/test: starts the root binary on a
# free loopback port with its default redb store and runs daemons/root/examples/api_load:
#   * GET /api/applications over 1,000 concurrent connections for 5 s,
#   * 32 concurrent creators (each its own user) x 3 creates,
#   * one user's 200-application descriptor while another user creates single applications.
# Asserts that no request fails (api_load exits 1 on any refused connection or non-2xx
# answer) and that the root is still alive; latency is not asserted here (debug build, shared
# CI machine): the figures are in benches/RESULTS.md (benches/root_api.sh, release build).
# At most 60 s. Usage: tests/load/run.sh [oakestra-root] [api_load]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root_bin="${1:-$here/../../target/debug/oakestra-root}"
load_bin="${2:-$here/../../target/debug/examples/api_load}"
work="$(mktemp -d)"
root_pid=""
cleanup() {
  if [ -n "$root_pid" ]; then kill "$root_pid" 2>/dev/null || true; wait "$root_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
# 1,000 connections on each side of loopback: lift the soft open-file limit (both binaries
# also raise it to the hard limit themselves).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

RUST_LOG=warn "$root_bin" --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --data-dir "$work/data" \
  >"$work/root.out" 2>"$work/root.err" &
root_pid=$!
url=""
for _ in $(seq 1 300); do
  url="$(sed -n 's/^oakestra-root: REST API listening on //p' "$work/root.out" | head -1)"
  [ -n "$url" ] && break
  kill -0 "$root_pid" 2>/dev/null || { cat "$work/root.err" >&2; echo "the root did not start" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "the root did not report its address" >&2; exit 1; }

fail() { echo "load test failed: $1" >&2; tail -20 "$work/root.err" >&2; exit 1; }
run() { timeout -k 5 "$1" "$load_bin" "${@:2}" || fail "api_load ${*:2} (exit $?)"; }

run 15 seed "$url" 20
run 20 get "$url" 1000 5
run 20 post "$url" 32 3
run 20 bulk "$url" 200
kill -0 "$root_pid" 2>/dev/null || fail "the root died under load"
code="$(curl -s -o /dev/null -w '%{http_code}' "$url/api/auth/login" -d '{"username":"Admin","password":"Admin"}')"
[ "$code" = 200 ] || fail "the root answers login with $code after the load"
echo "load test: no failed request"
