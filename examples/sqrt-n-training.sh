#!/usr/bin/env bash
# Training-level check of where averaging stops helping (docs/uncertainty.md, "A sqrt(N)
# test that could fail"). Main-job network (1568-100-10, bundled MNIST subset, 3 epochs),
# 3 seeds per setting; prints one line per run: setting, N, seed, final test accuracy.
#   bash examples/sqrt-n-training.sh OUTDIR
# `hwloop plan --arch 1568-100-10 --examples 8` predicts the critical noise of one
# averaged read at 1.5e-3 V for this network (input gain 100 V). Prediction (made before
# the runs): white noise sigma = 8e-3 V (5x the limit) hurts at N = 1; N = 16 brings it
# to 2e-3 V and recovers most of it. With the same white noise plus a slow term of
# 4e-3 V (constant over one read's repeats), the averaged read keeps
# sqrt(8e-3^2 / 16 + 4e-3^2) = 4.47e-3 V, so N = 16 trains like white noise of
# 4.47e-3 V at N = 1, not like 2e-3 V.
set -euo pipefail
out=${1:?usage: sqrt-n-training.sh OUTDIR}
mkdir -p "$out"
run() {  # name N seed extra-args...
    local name=$1 n=$2 seed=$3; shift 3
    local f="$out/$name-n$n-s$seed.h5"
    acc=$(hwloop train --arch 1568-100-10 --epochs 3 --seed "$seed" --samples "$n" \
        --log-samples summary --quiet --json --overwrite --out "$f" "$@" 2>/dev/null \
        | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["final_test_accuracy"])')
    echo "$name N=$n seed=$seed test_accuracy=$acc"
}
for seed in 0 1 2; do
    run clean 1 "$seed"
    run white-8e-3 1 "$seed" --read-noise 8e-3
    run white-8e-3 16 "$seed" --read-noise 8e-3
    run white-4.47e-3 1 "$seed" --read-noise 4.47e-3
    run white-2e-3 1 "$seed" --read-noise 2e-3
    run slow 1 "$seed" --read-noise 8e-3 --backend-opt read_noise_slow_v=4e-3
    run slow 16 "$seed" --read-noise 8e-3 --backend-opt read_noise_slow_v=4e-3
done
