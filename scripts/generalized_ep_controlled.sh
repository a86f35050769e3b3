#!/bin/bash
# The controlled generalized-EP experiment of docs/generalized-ep.md (issue 15 part 2):
# 1. the grid: 4 arms x homeostasis {0, 3} x hidden-lr multiplier {0.3, 1, 3, 10} x
#    seeds 0-2 on 98-16-10 / mnist-7x7 (96 runs, about 16 min on 2 busy cores);
# 2. the confirmation: each arm at the multiplier the grid picked (by training
#    accuracy), plus the gain arm at the reciprocal arm's multiplier, on new seeds 3-7
#    (45 runs, about 8 min).
# Each step writes its runs as JSON into OUTDIR and prints its table; reprint any table
# with: python benchmarks/generalized_ep_controlled.py --table-from OUTDIR/FILE.json ...
# Usage: scripts/generalized_ep_controlled.sh OUTDIR
set -euo pipefail
out=${1:?usage: $0 OUTDIR}
mkdir -p "$out"
bench="$(dirname "$0")/../benchmarks/generalized_ep_controlled.py"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
nice -n 10 python "$bench" --arch 98-16-10 --lr 0.1 --jobs 2 --json "$out/grid-seeds0-2.json"
for spec in "reciprocal 0 1" "reciprocal 3 1" "direction 0 1" "direction 3 1" "gain 0 10" \
            "gain 3 3" "both 0 10" "both 3 1" "gain 0 1"; do
  set -- $spec
  nice -n 10 python "$bench" --arch 98-16-10 --lr 0.1 --arms "$1" --homeostasis "$2" \
    --lr-grid "$3" --seeds 3,4,5,6,7 --jobs 2 --json "$out/confirm-$1-h$2-x$3.json" > /dev/null
done
python "$bench" --table-from "$out"/confirm-*.json
