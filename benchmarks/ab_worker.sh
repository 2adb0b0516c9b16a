#!/usr/bin/env bash
# A/B of the worker's throughput between a base commit and the working tree (or a second
# commit), interleaved in one run on the same machine (persistence off), e.g. to check that a
# change made it no slower:
#   bash benchmarks/ab_worker.sh d4532f7 300000 2            # base vs the working tree
#   bash benchmarks/ab_worker.sh a5431d1 300000 3 d07b25e    # two commits, both clean trees
set -euo pipefail
base=${1:?base commit}; events=${2:-300000}; rounds=${3:-2}; head=${4:-}
here=$(cd "$(dirname "$0")/.." && pwd)
tree=$(mktemp -d /tmp/ab-worker-XXXX)
git -C "$here" worktree add -q --detach "$tree" "$base"
other=$here
if [ -n "$head" ]; then
  other=$(mktemp -d /tmp/ab-worker-XXXX)
  git -C "$here" worktree add -q --detach "$other" "$head"
fi
cleanup() {
  git -C "$here" worktree remove --force "$tree"
  if [ -n "$head" ]; then git -C "$here" worktree remove --force "$other"; fi
}
trap cleanup EXIT
for r in $(seq "$rounds"); do
  for dir in "$tree" "$other"; do
    echo "== round $r $(git -C "$dir" rev-parse --short HEAD) load $(cut -d' ' -f1-3 /proc/loadavg)"
    (cd "$dir" && PYTHONPATH="$dir" python benchmarks/bench_worker.py --events "$events" \
        --skip-persistence --latency-seconds 1 --rate 2000 --river-events 50000 2>&1 \
        | grep -E "persistence off|River BiasedMF")
  done
done
