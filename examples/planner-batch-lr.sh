#!/usr/bin/env bash
# The planner against batch size and learning rate (docs/uncertainty.md, "The planner against
# batch size and learning rate"). DRN-XS (1568-100-10), input gain 100 V, beta 1 S, centered EP,
# read noise on every sample, N = 1; bundled MNIST subset, 2,000 training examples, 3 epochs,
# 1,000 test examples; 2 seeds; sigma in factor-2 steps around the planner's 1.5e-3 V.
# Four stores (one per batch size x learning rate), each printing its measured limit.
#   bash examples/planner-batch-lr.sh OUTDIR [SWEEP OPTIONS]
# (measured: 8.4 min on a busy 2-core machine with nice -n 10; print the tables with
# python examples/planner-batch-lr-table.py OUTDIR). Re-running runs nothing.
set -euo pipefail
out=${1:?usage: $0 OUTDIR [SWEEP OPTIONS]}
shift
for bs in 4 16; do
  for lr in 0.006 0.002; do
    hwloop sweep --out "$out/bs${bs}-lr${lr}" --workers 2 --quiet --no-plots "$@" \
      --set arch='"1568-100-10"' --set estimator='"centered"' --set momentum=0.0 \
      --set batch_size=$bs --set "lr_weights=[$lr, $lr]" --set "lr_biases=[$lr, $lr]" \
      --set epochs=3 --set train_limit=2000 --set test_limit=1000 \
      --set checkpoint_every=100000 \
      --dataset mnist-subset --samples 1 --seed 0 1 \
      --read-noise 0 3.75e-4 7.5e-4 1.5e-3 3e-3 6e-3 1.2e-2
  done
done
