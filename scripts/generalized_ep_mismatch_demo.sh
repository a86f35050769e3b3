#!/bin/bash
# The amplifier-mismatch demonstration of docs/generalized-ep.md: a non-reciprocal
# network whose backward current gain is 0.25 or 0.1 (plus device mismatch 1.0 and 50 %
# write noise on separate forward and backward arrays) against the reciprocal network,
# each with and without Jacobian homeostasis; 1568-32-10, 5 epochs, 3 seeds, on the
# bundled MNIST subset (4,000 train / 1,000 test) and on 4,000 / 1,000 Fashion-MNIST
# images. Two runs at a time, one BLAS thread each (2 cores: about 30 min for the 42
# runs, ~75 MB per run). A run whose log ends in a completed summary is not run again.
# Usage: scripts/generalized_ep_mismatch_demo.sh OUTDIR
set -euo pipefail
out=${1:?usage: $0 OUTDIR}
mkdir -p "$out"
run() {  # NAME DATASET SEED [train options]
  local name=$1 ds=$2 seed=$3; shift 3
  grep -qs '"status": "completed"' "$out/${ds}_${name}_s${seed}.log" && return 0
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 hwloop train --backend nonreciprocal \
    --arch 1568-32-10 --epochs 5 --dataset "$ds" --train-limit 4000 --test-limit 1000 \
    --seed "$seed" --out "$out/${ds}_${name}_s${seed}.h5" \
    --overwrite --quiet --json --log-samples summary --log-updates off \
    --log-programming off --checkpoint-every 100000 "$@" > "$out/${ds}_${name}_s${seed}.log" 2>&1
}
export -f run
export out
mismatch="--asymmetry 1.0 --write-noise 0.5 --bwd-gain 0.25"
strong="--asymmetry 1.0 --write-noise 0.5 --bwd-gain 0.1"
{
  for ds in mnist-subset fashion-mnist; do
    for seed in 0 1 2; do
      echo "recip $ds $seed --asymmetry 0 --write-noise 0"
      echo "mismatch $ds $seed $mismatch"
      echo "homeo $ds $seed $mismatch --homeostasis 10"
    done
  done
  for ds in mnist-subset fashion-mnist; do
    for seed in 0 1 2; do
      echo "reciphomeo $ds $seed --asymmetry 0 --write-noise 0 --homeostasis 10"
      echo "strong $ds $seed $strong"
      echo "stronghomeo $ds $seed $strong --homeostasis 10"
      echo "stronghomeo3 $ds $seed $strong --homeostasis 3"
    done
  done
} | xargs -P 2 -L 1 bash -c 'run "$@"' _
