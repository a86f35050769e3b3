#!/bin/bash
# The demonstration of docs/generalized-ep.md: reciprocal vs non-reciprocal vs homeostasis
# on the non-reciprocal emulator (1568-32-10, bundled MNIST subset, 5 epochs), 3 seeds,
# two runs at a time with one BLAS thread each (about 80 s per run, ~75 MB per session
# file on 2 cores). Usage: scripts/generalized_ep_demo.sh OUTDIR
set -euo pipefail
out=${1:?usage: $0 OUTDIR}
mkdir -p "$out"
run() {  # NAME SEED [train options]
  local name=$1 seed=$2; shift 2
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 hwloop train --backend nonreciprocal \
    --arch 1568-32-10 --epochs 5 --seed "$seed" --out "$out/${name}_s${seed}.h5" \
    --overwrite --quiet --json --log-samples summary --log-updates off \
    --log-programming off --checkpoint-every 100000 "$@" > "$out/${name}_s${seed}.log" 2>&1
}
export -f run
export out
{
  for seed in 0 1 2; do
    echo "recip $seed --asymmetry 0 --write-noise 0"
    echo "nonrecip $seed --asymmetry 1.0 --write-noise 0.5"
    echo "homeo $seed --asymmetry 1.0 --write-noise 0.5 --homeostasis 10"
  done
  for seed in 0 1; do
    echo "strong $seed --asymmetry 2.0 --write-noise 1.0"
    echo "strongh $seed --asymmetry 2.0 --write-noise 1.0 --homeostasis 10"
  done
} | xargs -P 2 -L 1 bash -c 'run "$@"' _
