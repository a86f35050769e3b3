"""The ``hwloop`` subcommands of :mod:`protocols`, declared without importing them.

Each name is a :class:`hwloop.cli.LazyCommand` that an entry point of the
``hwloop.commands`` group points at: ``hwloop --help`` lists it from its help
alone, and only the chosen command's module is imported (DR-32). Keep the
help text equal to the one the command registers (tests/test_cli_startup.py checks).
This module imports nothing but :mod:`hwloop.cli`.
"""

from __future__ import annotations

from hwloop.cli import LazyCommand

TRAIN = LazyCommand("protocols.cli:register_train",
                    "train a resistive network with Equilibrium Propagation")
EVALUATE = LazyCommand("protocols.cli:register_evaluate", "accuracy of a trained run on a dataset")
RESUME = LazyCommand("protocols.cli:register_resume",
                     "continue a stopped or crashed training run in the same session file")
REPLAY = LazyCommand(
    "protocols.cli:register_replay",
    "re-run a training run against its own recording, or re-analyse its gradients",
)
GRADCHECK = LazyCommand(
    "protocols.cli:register_gradcheck",
    "compare every EP estimator with the exact gradient on the non-reciprocal emulator",
)
PLAN = LazyCommand("protocols.planner:register_plan",
                   "predict the critical read noise and the samples N it needs")
SWEEP = LazyCommand("protocols.sweep:register_sweep",
                    "grid of training runs over read noise x samples x datasets x seeds")
CHARACTERIZE = LazyCommand(
    "protocols.characterize:register_characterize",
    "measure a board's read noise, programming precision, drift and timings",
)
MONITOR = LazyCommand("protocols.monitor.cli:register_monitor",
                      "live read-only web page of a run or a sweep, from its files")
REPORT = LazyCommand("protocols.monitor.cli:register_report",
                     "one self-contained HTML report of a run or a sweep")
