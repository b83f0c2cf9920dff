#!/usr/bin/env bash
# schemathesis (PyPI, installed by scripts/setup) against a live root: starts the root binary
# on a free loopback port with an in-memory store, logs in as Admin, and runs every check of
# schemathesis on the OpenAPI document the root serves, with the token, bounded examples and
# at most ST_MAX_TIME + ST_MAX_TIME_USERS seconds (default 120 + 30). Exit status: schemathesis's (0 = no failure).
# Usage: tests/schemathesis/run.sh [path/to/oakestra-root]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root_bin="${1:-$here/../../target/debug/oakestra-root}"
st=/opt/oakestra-test/schemathesis/bin/st
work="$(mktemp -d)"
root_pid=""
cleanup() {
  if [ -n "$root_pid" ]; then kill "$root_pid" 2>/dev/null || true; wait "$root_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

"$root_bin" --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --data-dir "$work/data" \
  --store memory: --access-token-ttl 1h >"$work/root.out" 2>"$work/root.err" &
root_pid=$!
url=""
for _ in $(seq 1 300); do
  url="$(sed -n 's/^oakestra-root: REST API listening on //p' "$work/root.out" | head -1)"
  [ -n "$url" ] && break
  kill -0 "$root_pid" 2>/dev/null || { cat "$work/root.err" >&2; echo "the root did not start" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "the root did not report its address" >&2; exit 1; }

login() {
  curl -sf -X POST "$url/api/auth/login" -H 'content-type: application/json' \
    -d "{\"username\":\"$1\",\"password\":\"$2\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}
# Each pass gets its own Admin, with a name schemathesis does not know at first: it changes and
# deletes the users it can name (it learns them from answers), and a role or password change
# revokes that user's tokens. So the operations that change users and organizations run in a
# second, short pass with a fresh token; the first pass covers everything else with a token
# that stays valid.
admin_token="$(login Admin Admin)"
new_token() {
  local user password
  user="st$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
  password="$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
  curl -sf -o /dev/null -X POST "$url/api/auth/register" -H 'content-type: application/json' \
    -H "Authorization: Bearer $admin_token" \
    -d "{\"name\":\"$user\",\"password\":\"$password\",\"roles\":[\"Admin\"]}"
  login "$user" "$password"
}
run_st() { # max-time, then filters
  local time="$1"; shift
  # schemathesis keeps a cache in its working directory: the temporary one, not the repository.
  # One worker: with two threads, hypothesis's ast.parse of its own lambdas trips a CPython
  # 3.11 bug now and then ("AST constructor recursion depth mismatch"), an error of the tool.
  cd "$work"
  # shellcheck disable=SC2086 # ST_ARGS: extra options, split on purpose
  "$st" --config-file "$here/schemathesis.toml" run "$url/docs/openapi.json" ${ST_ARGS:-} "$@" \
    -H "Authorization: Bearer $(new_token)" \
    --max-examples "${ST_MAX_EXAMPLES:-20}" --max-time "$time" \
    --workers 1 --seed "${ST_SEED:-1}" --request-timeout 10 \
    --report "${ST_REPORTS:-junit}" --report-dir "${ST_REPORT_DIR:-$work/report}"
}
mutating=(/api/user/{username} /api/organization/{organization_id})
status=0
echo "== schemathesis: every operation but those that change users and organizations"
run_st "${ST_MAX_TIME:-120}" "${mutating[@]/#/--exclude-path=}" || status=$?
echo "== schemathesis: the operations that change users and organizations"
run_st "${ST_MAX_TIME_USERS:-30}" "${mutating[@]/#/--include-path=}" || status=$?
if [ "$status" -ne 0 ]; then
  echo "== root log (stderr)" >&2
  tail -50 "$work/root.err" >&2
fi
exit "$status"
