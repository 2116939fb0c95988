#!/usr/bin/env bash
# smoke.sh BUILD_DIR - runs the quick bench set against the mizand and
# modules/blog.so of BUILD_DIR (no build), writes the report into a
# temporary directory (never bench/results/) and checks it with
# check_report.py. Exit status 0 only when the harness ran end to end and
# the report is complete. Registered with ctest as bench.quick (tests.cmake).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [ $# -ne 1 ] || [ ! -x "$1/mizand" ]; then
    echo "usage: $0 BUILD_DIR (holding mizand and modules/blog.so)" >&2
    exit 2
fi
BIN="$(cd "$1" && pwd)"
OUT="$(mktemp -d "${TMPDIR:-/tmp}/mizan-bench-smoke.XXXXXX")"
trap 'rm -rf "$OUT"' EXIT

start=$(date +%s)
rc=0
"$ROOT/bench/run" --quick --no-build --bin "$BIN" --out "$OUT" || rc=$?
echo "bench.quick: bench/run exited $rc after $(( $(date +%s) - start )) s"

PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
check=0
"$PY" "$ROOT/tests/bench/check_report.py" "$OUT" || check=$?
if [ "$rc" -ne 0 ] || [ "$check" -ne 0 ]; then
    exit 1
fi
