#!/usr/bin/env bash
# The issue-6 reproduction at a 2-core scale (docs/uncertainty.md, "Reproduction").
# DRN-1H (1568-1024-10), input gain 480 V, beta 1 S, centered EP, batch 4, no momentum,
# lr 0.006, read noise on every hidden and output sample; 4,000 training examples,
# 3 epochs, 1,000 test examples; summary logging and epoch-end checkpoints only.
# All four sweeps share one results store (same fixed options, different axis values).
#   bash examples/uncertainty-reproduction.sh OUTDIR [SWEEP OPTIONS]
# (measured: 35 min on 2 cores for sweeps 1-3, 35 GB; sweep 4 another 12 min). Extra options go to every sweep, e.g.
# --limit-drop 0.05; re-running runs nothing and reprints the tables and limits.
set -euo pipefail
out=${1:?usage: $0 OUTDIR [SWEEP OPTIONS]}
shift
common=(--out "$out" --workers 2 --quiet "$@"
  --set arch='"1568-1024-10"' --set input_gain=480.0 --set beta=1.0
  --set estimator='"centered"' --set batch_size=4 --set momentum=0.0
  --set 'lr_weights=[0.006, 0.006]' --set 'lr_biases=[0.006, 0.006]'
  --set epochs=3 --set train_limit=4000 --set test_limit=1000
  --set checkpoint_every=100000)
# 1. the limit at N = 1, and noise near the limit against sigma = 0 (3 seeds)
hwloop sweep "${common[@]}" --dataset mnist-subset --samples 1 --seed 0 1 2 \
  --read-noise 0 2.5e-5 5e-5 1e-4 2e-4 4e-4 8e-4 1.6e-3
# 2. sqrt(N): N = 10 and N = 100 at the same sigma/sqrt(N) = 5e-5 ... 8e-4 V (2 seeds)
hwloop sweep "${common[@]}" --dataset mnist-subset --samples 10 --seed 0 1 \
  --read-noise 1.5811e-4 3.1623e-4 6.3246e-4 1.2649e-3 2.5298e-3
hwloop sweep "${common[@]}" --dataset mnist-subset --samples 100 --seed 0 1 \
  --read-noise 5e-4 1e-3 2e-3 4e-3 8e-3
# 3. the same limit on Fashion-MNIST (Debian's dataset-fashion-mnist), 3 seeds
hwloop sweep "${common[@]}" --dataset fashion-mnist --samples 1 --seed 0 1 2 \
  --read-noise 0 2.5e-5 5e-5 1e-4 2e-4 4e-4 8e-4 1.6e-3
# 4. noise near the limit against sigma = 0 with 5 seeds, in its own store (OUTDIR-claim4),
#    so the limits above keep one seed set per sigma (its seeds 0-2 repeat sweep 1's runs)
claim4=("${common[@]}")
claim4[1]="$out-claim4"
hwloop sweep "${claim4[@]}" --dataset mnist-subset fashion-mnist --samples 1 \
  --seed 0 1 2 3 4 --read-noise 0 2.5e-5 5e-5
