#!/usr/bin/env bash
# `make test`: stack up -> lint -> pytest -> stack down (always). Exit code of the tests.
set -uo pipefail
cd "$(dirname "$0")/../.."
started=$(date +%s)
cleanup() { online-als stack down || true; online-als stack down --secure >/dev/null 2>&1 || true; echo "test.sh: total $(( $(date +%s) - started ))s"; }
trap cleanup EXIT
online-als stack up || { echo "test.sh: the local stack did not start" >&2; exit 1; }
python3 -m ruff check online_als worker producers tests benchmarks || exit 1
python3 -m mypy || exit 1
python3 -m pytest -p no:cacheprovider "$@"
