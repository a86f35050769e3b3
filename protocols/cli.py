"""Registration of ``hwloop train``, ``evaluate``, ``resume``, ``replay`` (argument parsing only).

This module stays light: the dispatcher imports it for every ``hwloop``
command, so the training machinery (:mod:`protocols.commands`) is imported
only when one of these subcommands actually runs.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

# CLI flag -> configuration key (only options given on the command line override the file)
_TRAIN_FLAGS: dict[str, tuple[str, Any, str]] = {
    "backend": ("backend", str, "board backend (entry point in hwloop.backends)"),
    "board": ("board", str, "alias of --backend-opt board=PATH (board file of --backend board)"),
    "dataset": ("dataset", str, "mnist-subset (bundled), mnist, fashion-mnist, kmnist, or a path"),
    "data_dir": ("data-dir", str, "directory with the IDX files (or set HWLOOP_DATA_DIR)"),
    "arch": ("arch", str, "layer sizes, e.g. 1568-100-10"),
    "input_gain": ("input-gain", float, "input voltage per unit pixel, V"),
    "lr_weights": ("lr", float, "learning rate(s), one per layer or one for all"),
    "lr_biases": ("lr-biases", float, "bias learning rate(s)"),
    "momentum": ("momentum", float, "SGD momentum in [0, 1)"),
    "lr_decay": ("lr-decay", float, "learning-rate factor per epoch"),
    "epochs": ("epochs", int, "epochs"),
    "batch_size": ("batch-size", int, "examples per EP step"),
    "beta": ("beta", float, "nudge strength, S"),
    "beta_choice": ("beta-choice", str,
                    "fixed (default: the radius is --beta) or auto (bias/variance optimum "
                    "measured on the first batch, at most --beta)"),
    "estimator": ("estimator", str,
                  "centered (default), one-sided, random-sign, four-point or cauchy-N "
                  "(N points on |beta| = beta; needs complex nudges: nonreciprocal)"),
    "nudge": ("nudge", str, "resistive (default) or current"),
    "samples": ("samples", int, "repeat samples per phase"),
    "sem_target": ("sem-target", float, "sample until every node's standard error < this, V"),
    "max_samples": ("max-samples", int, "cap on samples per phase with --sem-target"),
    "read_noise": ("read-noise", float, "alias of --backend-opt read_noise_v=V (per sample)"),
    "noise_model": ("noise-model", str, "alias of --backend-opt noise_model=FILE"),
    "device_preset": ("device-preset", str, "alias of --backend-opt preset=NAME"),
    "programming": ("programming", str, "open-loop (default) or write-verify"),
    "wv_tolerance": ("wv-tolerance", float, "write-verify tolerance, S"),
    "wv_refresh_every": ("wv-refresh-every", int,
                         "write-verify against held targets, re-verifying every edge every "
                         "N steps (counteracts drift; 0: off)"),
    "sweeps": ("sweeps", int, "alias of --backend-opt n_sweeps=N"),
    "dtype": ("dtype", str, "precision of the run: float32 (default) or float64"),
    "seed": ("seed", int, "random seed"),
    "train_limit": ("train-limit", int, "use only N training examples"),
    "test_limit": ("test-limit", int, "use only N test examples"),
    "log_samples": ("log-samples", str, "session file keeps raw samples (default) or summary"),
    "log_updates": ("log-updates", str, "per-step update of every edge: auto, all or off"),
    "log_programming": ("log-programming", str, "programming rows: auto, all, exceptions or off"),
    "checkpoint_every": ("checkpoint-every", int, "full-state checkpoint every N steps (0: auto)"),
    "commit_every": ("commit-every", int, "session file: commit every N steps (0: auto)"),
    "homeostasis": ("homeostasis", float, "Jacobian homeostasis strength lambda (nonreciprocal)"),
    "homeostasis_probes": ("homeostasis-probes", int,
                           "0: exact Jacobian; P: estimate it from P clamped-node probe pairs"),
    "alignment": ("alignment", int,
                  "log each hidden layer's EP-vs-true error alignment on N test examples"),
    "asymmetry": ("asymmetry", float, "alias of --backend-opt asymmetry=X"),
    "write_noise": ("write-noise", float, "alias of --backend-opt write_noise=X"),
    "fwd_gain": ("fwd-gain", float, "alias of --backend-opt fwd_gain=X"),
    "bwd_gain": ("bwd-gain", float, "alias of --backend-opt bwd_gain=X"),
}
_MULTI = {"lr_weights", "lr_biases"}


def _later(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """The command function ``module.name``, imported only when the command runs."""

    def run(args: argparse.Namespace) -> int:
        return int(getattr(importlib.import_module(module), name)(args))

    return run


def add_backend_opt(p: argparse.ArgumentParser) -> None:
    """Add ``--backend-opt KEY=VALUE`` (repeatable) to a command that opens a board."""
    p.add_argument("--backend-opt", dest="backend_opt", action="append", default=[],
                   metavar="KEY=VALUE",
                   help="backend option (repeatable; 'hwloop backends NAME' lists them); "
                   "the convenience flags above are aliases of some")


def register_train(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``hwloop train``."""
    p = sub.add_parser("train", help="train a resistive network with Equilibrium Propagation",
                       description="Train with EP on a board; unset options take the published "
                       "settings of the architecture (docs/physics.md §5.1 / §5.2).")
    p.add_argument("--config", type=Path, help="TOML file with training options")
    for key, (flag, typ, help_) in _TRAIN_FLAGS.items():
        if key in _MULTI:
            p.add_argument(f"--{flag}", dest=key, type=typ, nargs="+", help=help_)
        else:
            p.add_argument(f"--{flag}", dest=key, type=typ, help=help_)
    add_backend_opt(p)
    p.add_argument("--out", required=True, help="run file to write (.h5)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run file")
    p.add_argument("--dry-run", action="store_true",
                   help="print the step plan and check it against the limits; apply nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    p.set_defaults(func=_later("protocols.commands", "run_train"))


def register_resume(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``hwloop resume``."""
    p = sub.add_parser(
        "resume",
        help="continue a stopped or crashed training run in the same session file",
        description="Continue RUN.h5 from its last checkpoint: the configuration and board "
        "identity are checked, the generator, optimiser and (on the emulator, exactly) the "
        "board state are restored, and the run appends to the same file.",
    )
    p.add_argument("run", help="session file written by hwloop train")
    p.add_argument("--epochs", type=int, default=None,
                   help="train to this many epochs in all (default: the recorded number)")
    p.add_argument("--backend-opt", dest="backend_opt", action="append", default=[],
                   metavar="KEY=VALUE",
                   help="override a recorded backend option (e.g. a moved board file); the "
                   "board must still be the recorded one")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    p.set_defaults(func=_later("protocols.commands", "run_resume"))


def register_evaluate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``hwloop evaluate``."""
    p = sub.add_parser("evaluate", help="accuracy of a trained run on a dataset",
                       description="Program the conductances and biases of RUN.h5 into a "
                       "board and measure accuracy: the run's own backend with its recorded "
                       "options, changed by --backend-opt (e.g. preset=ideal) and --read-noise.")
    p.add_argument("--backend", default=None,
                   help="board backend (default: the run's)")
    add_backend_opt(p)
    p.add_argument("run", help="run file written by hwloop train")
    p.add_argument("--dataset", required=True,
                   help="dataset name, a directory of IDX files, or an .npz with x and y")
    p.add_argument("--data-dir", help="directory with the IDX files")
    p.add_argument("--read-noise", type=float, default=None,
                   help="read noise per sample, V (alias of --backend-opt read_noise_v=V)")
    p.add_argument("--samples", type=int, default=1, help="samples averaged per read")
    p.add_argument("--seed", type=int, default=0, help="seed of the read noise")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=_later("protocols.commands", "run_evaluate"))


def register_replay(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``hwloop replay``."""
    p = sub.add_parser(
        "replay",
        help="re-run a training run against its own recording, or re-analyse its gradients",
        description="Re-run the recorded configuration of RUN.h5 step by step against its own "
        "recording and report 'identical' (exit 0) or the first divergence (exit 1). With "
        "--samples or --estimator, recompute each step's gradient offline from the recorded "
        "samples and compare it per layer with the recorded estimator's.",
    )
    p.add_argument("run", help="session file written by hwloop train")
    p.add_argument("--steps", type=int, default=None, help="only the first N recorded steps")
    p.add_argument("--samples", type=int, default=None,
                   help="re-analyse with the first K recorded samples of every phase")
    p.add_argument("--estimator", default=None,
                   help="re-analyse with this estimator (centered, one-sided, random-sign), "
                   "from the recorded phases")
    p.add_argument("--rtol", type=float, default=None,
                   help="replay tolerance of requested changes, as a fraction of each layer's "
                   "largest recorded value (default 0: bit-identical after casting to the "
                   "recorded float32)")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.add_argument("--quiet", action="store_true",
                   help="no progress (a bar on a terminal, else a line every 10 s on stderr)")
    p.set_defaults(func=_later("protocols.replay_cmd", "run_replay"))


def register_gradcheck(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``hwloop gradcheck``."""
    p = sub.add_parser(
        "gradcheck",
        help="compare every EP estimator with the exact gradient on the non-reciprocal emulator",
        description="On a reciprocal and a non-reciprocal emulated network, estimate the "
        "gradient with each estimator (one-sided, centered, four-point, Cauchy with N points, "
        "sinusoidal lock-in with harmonics up to K) "
        "across nudge sizes, sample counts and read noise, and compare with the exact gradient "
        "(implicit differentiation). Lists are comma-separated.",
    )
    p.add_argument("--arch", default="10-10-10-10-3", help="layer sizes (default 10-10-10-10-3)")
    p.add_argument("--weight-gain", default="3",
                   help="initial conductance scale (output conductance ~ gain * sqrt(fan-in))")
    p.add_argument("--asymmetry", default="0.5",
                   help="log-normal backward/forward mismatch of the non-reciprocal network")
    p.add_argument("--fwd-gain", default="1.2", help="forward voltage gain (non-reciprocal)")
    p.add_argument("--bwd-gain", default="0.8", help="backward current gain (non-reciprocal)")
    p.add_argument("--estimators", default="one-sided,centered,four-point,cauchy,lockin",
                   help="estimators to run (lockin: sinusoidal nudge, time-domain emulator)")
    p.add_argument("--betas", default="0.01,0.03,0.1,0.3,1", help="nudge radii |beta|, S")
    p.add_argument("--points", default="2,4,8", help="Cauchy points N (>= 2)")
    p.add_argument("--lockin-harmonics", default="1,3",
                   help="highest odd harmonic K of the lock-in (1, 3, 5)")
    p.add_argument("--lockin-omega-tau", default="0.01",
                   help="lock-in drive omega times the slowest relaxation time (<= 0.1)")
    p.add_argument("--read-noise", default="0,1e-4", help="read noise per sample, V")
    p.add_argument("--samples", default="16", help="samples per phase")
    p.add_argument("--batch", default="8", help="examples")
    p.add_argument("--seed", default="0", help="random seed")
    p.add_argument("--backend", default="nonreciprocal",
                   help="a backend whose boards report the exact gradient (default "
                   "nonreciprocal)")
    add_backend_opt(p)
    p.add_argument("--plots", default=None, help="directory for the PNG plots")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=_later("protocols.gradcheck", "run_gradcheck"))
