#!/usr/bin/env bash
# Checks that the systemd units in deploy/ only use flags and environment variables the
# binaries really have: every `--flag` of an ExecStart line and every OAKESTRA_* variable the
# unit names must appear in that binary's --help. Run by scripts/test.
# Usage: deploy/check-units.sh [BIN_DIR]   (default: target/debug)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN_DIR="${1:-target/debug}"
status=0
for unit in deploy/*.service; do
  # The binary and the flags of ExecStart (with its backslash continuations).
  exec_line="$(sed -n '/^ExecStart=/,/[^\\]$/p' "$unit" | tr -d '\\\n')"
  binary="$(basename "$(echo "$exec_line" | sed 's/^ExecStart=//' | awk '{print $1}')")"
  help="$("$BIN_DIR/$binary" --help 2>&1)" || { echo "$unit: $BIN_DIR/$binary --help failed" >&2; status=1; continue; }
  for flag in $(echo "$exec_line" | grep -o -- '--[a-z][a-z0-9-]*' | sort -u); do
    grep -q -- "$flag" <<<"$help" || { echo "$unit: $binary has no flag $flag" >&2; status=1; }
  done
  for var in $(grep -o 'OAKESTRA_[A-Z_]*' "$unit" | sort -u); do
    grep -q -- "$var" <<<"$help" || { echo "$unit: $binary reads no variable $var" >&2; status=1; }
  done
  echo "$unit: $binary accepts its flags and variables"
done
exit $status
