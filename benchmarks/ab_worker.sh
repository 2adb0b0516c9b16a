#!/usr/bin/env bash
# A/B of the worker's throughput between a base commit and the working tree, interleaved in one
# run on the same machine (persistence off), e.g. to check that a change made it no slower:
#   bash benchmarks/ab_worker.sh d4532f7 300000 2
set -euo pipefail
base=${1:?base commit}; events=${2:-300000}; rounds=${3:-2}
here=$(cd "$(dirname "$0")/.." && pwd)
tree=$(mktemp -d /tmp/ab-worker-XXXX)
git -C "$here" worktree add -q --detach "$tree" "$base"
trap 'git -C "$here" worktree remove --force "$tree"' EXIT
for r in $(seq "$rounds"); do
  for side in base head; do
    dir=$([ "$side" = base ] && echo "$tree" || echo "$here")
    echo "== round $r $side ($(git -C "$dir" rev-parse --short HEAD)) load $(cut -d' ' -f1-3 /proc/loadavg)"
    (cd "$dir" && PYTHONPATH="$dir" python benchmarks/bench_worker.py --events "$events" \
        --skip-persistence --latency-seconds 1 --river-events 50000 2>&1 | grep -E "persistence off|River")
  done
done
