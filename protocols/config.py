"""Training configuration: validated, with the published settings as defaults.

Every option left unset (``None``) is resolved from the published
hyper-parameters of the chosen architecture and dataset (docs/physics.md §5.1
for MNIST, the fast-DRN paper; §5.2 for Fashion-MNIST and KMNIST, the
universal-approximation paper), so ``hwloop train --arch 1568-100-10`` trains
well with no other option. The resolved configuration is saved with the run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hwloop.config import build_config, config_to_dict, to_toml
from hwloop.errors import ConfigError
from hwloop.plugins import (
    DEFAULT_BACKEND,
    backend_arch,
    check_backend_options,
    parse_option_assignments,
)
from protocols.estimators import make_estimator

DTypeName = Literal["float32", "float64"]


@dataclass(frozen=True)
class TrainConfig:
    """Options of ``hwloop train``. Units: volts, siemens, amperes, seconds.

    ``None`` means "the published value for this architecture and dataset"
    (see :func:`resolve`).
    """

    backend: str = DEFAULT_BACKEND
    """Board backend: an entry point of the ``hwloop.backends`` group (``hwloop backends``)."""
    backend_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """The backend's option table (``[backend]`` in a TOML config, ``--backend-opt
    KEY=VALUE``), opaque to training; the backend validates it
    (``hwloop backends NAME`` lists its options)."""
    dataset: str = "mnist-subset"
    data_dir: str | None = None
    arch: str = "1568-100-10"
    input_gain: float | None = None
    """Input voltage per unit pixel, V (inputs are +G*x and -G*x)."""
    lr_weights: tuple[float, ...] | None = None
    """Learning rate per weight layer (or one for all), S^2 per unit loss."""
    lr_biases: tuple[float, ...] | None = None
    momentum: float | None = None
    lr_decay: float = 0.99
    """Learning-rate factor per epoch, in (0, 1]."""
    epochs: int | None = None
    batch_size: int | None = None
    beta: float | None = None
    """Nudge strength, S (> 0); the estimator chooses its signs."""
    beta_choice: Literal["fixed", "auto"] = "fixed"
    """fixed: the nudge radius is ``beta``; auto: chosen before training by the
    bias/variance helper (docs/estimators.md §6) from the read noise and the bias measured
    on the first batch, at most ``beta`` (:func:`protocols.holomorphic.choose_training_beta`;
    the session records the chosen ``beta``)."""
    estimator: str = "centered"
    """centered, one-sided, random-sign, four-point, or cauchy-N (N >= 2 points on the
    circle ``|beta| = beta``; needs a board with complex nudges)."""
    nudge: Literal["resistive", "current"] = "resistive"
    """When not given, ``hwloop train`` keeps resistive (published) where the nudged
    problem stays convex on the board and otherwise chooses current, and says why."""
    samples: int = 1
    """Repeat samples per phase (>= 1)."""
    sem_target: float | None = None
    """Stop sampling early once each node's standard error is below this, V."""
    max_samples: int | None = None
    programming: Literal["open-loop", "write-verify"] = "open-loop"
    wv_tolerance: float | None = None
    """Write-verify window, S (> 0; default: one nominal pulse step of the board, or
    ``1e-6 g_scale_s`` on a continuous device). Accumulated changes within it are
    carried to the next step, not programmed."""
    wv_max_iterations: int = 20
    wv_refresh_every: int = 0
    """Write-verify against held targets, with a refresh pass over every edge every N
    steps (>= 0; 0: off). Counteracts drift: each verify pulls a drifted device back
    to the conductance training intended."""
    dtype: DTypeName = "float32"
    """Arithmetic precision of the run's host-side arrays (gradients, updates); also
    passed to a backend that declares a ``dtype`` option and is not given one."""
    seed: int = 0
    train_limit: int | None = None
    """Use only the first N training examples (after shuffling with the seed)."""
    test_limit: int | None = None
    eval_batch_size: int = 500
    test_fraction: float = 0.2
    """Test share of the bundled MNIST subset (its split is stratified, seeded)."""

    log_samples: Literal["raw", "summary"] = "raw"
    """Session file: keep every raw sample (raw) or per-node mean and SEM (summary)."""
    log_updates: Literal["all", "off", "auto"] = "auto"
    """Session file: requested change of every edge at every step (auto: all up to
    4,096 edges; off above, where the updates follow from the raw samples and
    checkpoints)."""
    log_programming: Literal["all", "exceptions", "off", "auto"] = "auto"
    """Session file: a programming row per programmed edge (all), only for edges that
    did not end as requested (exceptions), or none (off; the step index keeps the
    counts); auto: as ``log_updates`` (all on small boards, off above)."""
    checkpoint_every: int = 0
    """Full-state checkpoint every this many steps (0: auto: on a board that cannot
    restore its state exactly, every step up to 4,096 edges, else every 100; on the
    emulator every 1,000, as its resume re-runs and verifies the steps in between);
    always at epoch ends and at a clean stop."""
    commit_every: int = 0
    """Session file group commit: commit every this many steps (0: auto: every step on
    a board that cannot restore its state; else a block each second, as the emulator's
    resume recomputes an uncommitted tail exactly); always at checkpoints and stops."""

    homeostasis: float = 0.0
    """Jacobian homeostasis strength lambda (>= 0; docs/estimators.md §4): adds lambda times
    the gradient of the Jacobian-asymmetry loss to every step's gradient. Needs a board
    that reports its Jacobian (the ``nonreciprocal`` emulator)."""
    homeostasis_probes: int = 0
    """0: homeostasis uses the exact Jacobian where the board reports it (the emulator);
    P > 0: it estimates the Jacobian every step from P pairs of clamped-node probes, as
    a bench would (docs/estimators.md §4.2; needs a board that clamps nodes and reads their
    currents)."""
    alignment: int = 0
    """0: off; N > 0: before training and after every epoch, measure the angle and size
    of each hidden layer's EP error vector against the true error on the first N test
    examples (:mod:`protocols.alignment`; needs a board that reports its Jacobian) and
    record it as ``info`` events."""

    def __post_init__(self) -> None:
        def pos(name: str, v: float | None, strict: bool = True) -> None:
            if v is None:
                return
            if not np.isfinite(v) or v < 0 or (strict and v == 0):
                rel = "> 0" if strict else ">= 0"
                raise ConfigError(f"{name} = {v} must be a finite number {rel}")

        try:
            sizes = [int(s) for s in self.arch.split("-")]
        except ValueError:
            sizes = []
        if len(sizes) < 2 or min(sizes) < 1:
            raise ConfigError(
                f"arch = {self.arch!r} must be two or more positive layer sizes separated by "
                "'-', e.g. 1568-100-10"
            )
        make_estimator(self.estimator)  # unknown name or N < 2: one-line ConfigError
        pos("input_gain", self.input_gain)
        pos("beta", self.beta)
        pos("sem_target", self.sem_target)
        pos("wv_tolerance", self.wv_tolerance)
        for name in ("lr_weights", "lr_biases"):
            for v in getattr(self, name) or ():
                pos(name, v, strict=False)
        if self.momentum is not None and not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum = {self.momentum} must be in [0, 1)")
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"lr_decay = {self.lr_decay} must be in (0, 1]")
        for name in (
            "epochs",
            "batch_size",
            "samples",
            "max_samples",
            "train_limit",
            "test_limit",
            "eval_batch_size",
            "wv_max_iterations",
        ):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"{name} = {v} must be >= 1")
        if self.wv_refresh_every < 0:
            raise ConfigError(
                f"wv_refresh_every = {self.wv_refresh_every} must be >= 0 steps (0: off)"
            )
        if self.checkpoint_every < 0:
            raise ConfigError(f"checkpoint_every = {self.checkpoint_every} must be >= 0 (0: auto)")
        if self.commit_every < 0:
            raise ConfigError(f"commit_every = {self.commit_every} must be >= 0 (0: auto)")
        if self.max_samples is not None and self.max_samples < self.samples:
            raise ConfigError(
                f"max_samples = {self.max_samples} must be >= samples = {self.samples}"
            )
        if not (np.isfinite(self.homeostasis) and self.homeostasis >= 0):
            raise ConfigError(f"homeostasis = {self.homeostasis} must be a finite number >= 0")
        if self.homeostasis_probes < 0:
            raise ConfigError(
                f"homeostasis_probes = {self.homeostasis_probes} must be >= 0 (0: exact Jacobian)"
            )
        if self.alignment < 0:
            raise ConfigError(f"alignment = {self.alignment} must be >= 0 (0: off)")
        if self.homeostasis_probes and not self.homeostasis:
            raise ConfigError("homeostasis_probes needs --homeostasis LAMBDA > 0; set both")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed = {self.seed} must be an integer in [0, 2**63)")
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"test_fraction = {self.test_fraction} must be in (0, 1)")
        if self.beta is not None and self.beta > 1e3:
            raise ConfigError(f"beta = {self.beta} S is out of range (at most 1000)")


# --------------------------------------------------------------------------- published settings

_MNIST_FAMILY = {"mnist-subset", "mnist"}

# docs/physics.md §5.1 (fast-DRN, Scellier 2024), MNIST: batch 4, momentum 0, gamma 0.99
_FAST_DRN: dict[str, dict[str, Any]] = {
    arch: dict(zip(("input_gain", "beta", "lr_weights", "lr_biases", "epochs"), row, strict=True))
    for arch, row in {
        # arch: (input gain V, beta S, lr_weights per layer, lr_biases per layer, epochs)
        "1568-100-10": (100.0, 1.0, (0.006, 0.006), (0.006, 0.006), 10),
        "1568-32768-10": (800.0, 1.0, (0.006, 0.006), (0.006, 0.006), 100),
        "1568-1024-10": (480.0, 1.0, (0.006, 0.006), (0.006, 0.006), 50),
        "1568-1024-1024-10": (
            2000.0, 1.0, (0.002, 0.006, 0.018), (0.002, 0.006, 0.018), 50
        ),
        "1568-1024-1024-1024-10": (
            4000.0, 2.0, (0.005, 0.02, 0.08, 0.005), (0.0005, 0.002, 0.008, 0.0005), 50
        ),
    }.items()
}
_FAST_COMMON = dict(batch_size=4, momentum=0.0)

# docs/physics.md §5.2 (universal-approximation paper): gain = dataset gain x model gain,
# batch 32, momentum 0.9, 100 epochs, gamma 0.99
_DATASET_GAIN = {"mnist": 8.0, "mnist-subset": 8.0, "kmnist": 5.0, "fashion-mnist": 5.0}
_UNIVERSAL: dict[str, dict[str, Any]] = {
    arch: dict(zip(("model_gain", "beta", "lr_weights", "lr_biases"), row, strict=True))
    for arch, row in {
        # arch: (model gain, beta S, lr_weights per layer, lr_biases per layer)
        "1568-1024-10": (60.0, 0.5, (0.005, 0.005), (0.005, 0.005)),
        "1568-1024-1024-10": (250.0, 1.0, (0.002, 0.006, 0.005), (0.002, 0.006, 0.005)),
        "1568-1024-1024-1024-10": (
            500.0, 2.0, (0.005, 0.02, 0.08, 0.005), (0.0005, 0.002, 0.008, 0.0005)
        ),
    }.items()
}
_UNIVERSAL_COMMON = dict(batch_size=32, momentum=0.9, epochs=100)


def published_defaults(arch: str, dataset: str) -> tuple[dict[str, Any], str]:
    """The published settings for ``arch`` on ``dataset`` and where they come from."""
    arch_key = "-".join(str(int(s)) for s in arch.split("-")) if arch else arch
    family = dataset if dataset in _DATASET_GAIN else "mnist"
    if family not in _MNIST_FAMILY and arch_key in _UNIVERSAL:
        u = dict(_UNIVERSAL[arch_key])
        u["input_gain"] = _DATASET_GAIN[family] * u.pop("model_gain")
        return {**_UNIVERSAL_COMMON, **u}, "Scellier & Mishra 2025 (docs/physics.md §5.2)"
    if arch_key in _FAST_DRN:
        source = "Scellier 2024 fast-DRN (docs/physics.md §5.1)"
        return {**_FAST_COMMON, **_FAST_DRN[arch_key]}, source
    # DRN-XS's input gain (100 V for 100 hidden units); a narrower first hidden layer
    # saturates at it (its nodes sit at the clamps), so the gain shrinks with sqrt(N) below
    # 100 units: 20 V at N = 4, 40 V at N = 16 (measured: 1568-16-10 reaches 6 % at
    # 100 V and 34 % at 40 V after 100 steps)
    sizes = arch_key.split("-")
    n_hidden = int(sizes[1]) if len(sizes) > 2 else 100
    gain = 100.0 * min(1.0, math.sqrt(n_hidden / 100.0))
    # An output node's total conductance grows as sqrt(fan-in) (U(-s, s) with s = 1/sqrt
    # of it, clipped at 0), and a bias step moves its voltage by lr_b x gradient / G with a
    # gradient itself ~1/G: the output biases' rate shrinks as fan-in/100 below 100 units.
    # Below 16 units an output node can lose every conductance (each starts at 0 with
    # probability 1/2; 2^-N per node) and a bias current then drives it without bound (the
    # run stops on the nudge-current limit): the output biases stay at 0 there.
    # Measured (seed 0): 1568-4-10 at chance before, 20.0 % with the defaults (4000
    # examples, 10 epochs); N = 8..32 unchanged within noise over 100 steps.
    n_last = int(sizes[-2]) if len(sizes) > 2 else 100
    lr_b: tuple[float, ...] = (0.006,)
    if n_last < 100:
        out_rate = 0.0 if n_last < 16 else 0.006 * n_last / 100.0
        lr_b = (0.006,) * (len(sizes) - 2) + (out_rate,)
    generic = dict(
        input_gain=gain,
        beta=1.0,
        lr_weights=(0.006,),
        lr_biases=lr_b,
        epochs=10,
        **_FAST_COMMON,
    )
    note = "" if gain == 100.0 else f", input gain {gain:g} V = 10 V x sqrt({n_hidden} hidden)"
    if 16 <= n_last < 100:
        note += (f", output bias learning rate {lr_b[-1]:g} = 0.006 x {n_last}/100 "
                 "(fan-in of the output layer)")
    elif n_last < 16:
        note += (f", output biases not learned ({n_last} < 16 units into the output layer: "
                 "an output node can lose every conductance)")
    return generic, f"generic defaults (no published settings for this architecture{note})"


def resolve(cfg: TrainConfig) -> tuple[TrainConfig, str]:
    """Fill every ``None`` option from :func:`published_defaults`; return the source too."""
    defaults, source = published_defaults(cfg.arch, cfg.dataset)
    changes = {k: v for k, v in defaults.items() if getattr(cfg, k) is None}
    # paths are recorded absolute, so a run resumes, replays and evaluates from anywhere
    if cfg.data_dir is not None:
        changes["data_dir"] = str(Path(cfg.data_dir).expanduser().resolve())
    ds = cfg.dataset
    if "/" in ds or "\\" in ds or ds.endswith(".npz") or Path(ds).is_dir():
        changes["dataset"] = str(Path(ds).expanduser().resolve())
    if cfg.max_samples is None:
        changes["max_samples"] = cfg.samples if cfg.sem_target is None else 64 * cfg.samples
    return dataclasses.replace(cfg, **changes), source


ALIASES: dict[str, str] = {
    "board": "board",
    "noise_model": "noise_model",
    "read_noise": "read_noise_v",
    "device_preset": "preset",
    "sweeps": "n_sweeps",
    "asymmetry": "asymmetry",
    "write_noise": "write_noise",
    "fwd_gain": "fwd_gain",
    "bwd_gain": "bwd_gain",
}
"""Convenience keys (and CLI flags) -> the backend option they set.

``--read-noise 1e-4`` is ``--backend-opt read_noise_v=1e-4``; the backend decides
whether it takes that option (``hwloop backends NAME``)."""


def _backend_table(values: dict[str, Any], source: str) -> tuple[str, dict[str, Any]]:
    """Take the backend name and option table out of ``values`` (modified in place)."""
    raw = values.pop("backend", None)
    table: dict[str, Any] = {}
    name: Any = DEFAULT_BACKEND
    if isinstance(raw, dict):
        table = {str(k).replace("-", "_"): v for k, v in raw.items()}
        name = table.pop("name", DEFAULT_BACKEND)
    elif raw is not None:
        name = raw
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{source}: backend = {name!r} must be a backend name (a string); "
                          "'hwloop backends' lists them")
    extra = values.pop("backend_options", None)
    if extra is not None:
        if not isinstance(extra, dict):
            raise ConfigError(f"{source}: backend_options must be a table of KEY = VALUE")
        for k, v in extra.items():
            table[str(k).replace("-", "_")] = v
    return name, table


def make_config(
    values: Mapping[str, Any], source: str = "configuration", *, stored: bool = False
) -> TrainConfig:
    """Build a :class:`TrainConfig` strictly from a mapping (TOML + CLI options).

    The backend is ``backend = "NAME"`` or a ``[backend]`` table (``name = "NAME"``
    and the backend's options); the convenience keys of :data:`ALIASES` map into
    that table. The table is validated by the backend (unknown key, wrong type, out
    of range: one-line errors). When ``arch`` is not given and the backend implies
    one from its options (a board file's network), the run trains that one.

    Args:
        values: the configuration (dashes in keys are accepted for underscores).
        source: named in error messages.
        stored: ``values`` is a session file's stored configuration: convenience keys
            an older version wrote for every backend are ignored (the session's
            stored option table is the one its board was opened with).
    """
    vals = {str(k).replace("-", "_"): v for k, v in values.items()}
    name, table = _backend_table(vals, source)
    for key, target in ALIASES.items():
        if key not in vals:
            continue
        v = vals.pop(key)
        if stored or v is None:
            continue
        if target in table and table[target] != v:
            raise ConfigError(
                f"{source}: {key} = {v!r} and backend option {target} = {table[target]!r} "
                f"disagree; give it once"
            )
        table[target] = v
    table = check_backend_options(name, table)
    if "arch" not in vals:
        implied = backend_arch(name, table)
        if implied is not None:
            vals["arch"] = implied
    cfg = build_config(TrainConfig, {**vals, "backend": name}, source=source)
    return dataclasses.replace(cfg, backend_options=table)


def config_toml(cfg: TrainConfig) -> str:
    """The configuration as TOML: flat options, then the ``[backend]`` table."""
    flat = {k: v for k, v in config_to_dict(cfg).items()
            if k not in ("backend", "backend_options")}
    return to_toml(flat) + "\n[backend]\n" + to_toml(
        {"name": cfg.backend, **dict(cfg.backend_options)})


def merge_options(
    values: Mapping[str, Any], cli: Mapping[str, Any], backend_opts: list[str] | None = None
) -> dict[str, Any]:
    """Configuration-file ``values`` overridden by the command line.

    ``cli`` holds the flags given (``None``: not given); ``backend_opts`` the
    ``--backend-opt`` items. A ``--backend`` flag renames a file's ``[backend]`` table.
    """
    out = dict(values)
    for key, v in cli.items():
        if v is None:
            continue
        if key == "backend" and isinstance(out.get("backend"), dict):
            out["backend"] = {**out["backend"], "name": v}
        else:
            out[key] = v
    return with_backend_opts(out, backend_opts)


def with_backend_opts(values: Mapping[str, Any], items: list[str] | None) -> dict[str, Any]:
    """``values`` with ``--backend-opt KEY=VALUE`` items merged into its backend table.

    The values are parsed by the declaration of the backend ``values`` names (a
    ``backend`` string or a ``[backend]`` table with ``name``; default ``emulator``).
    """
    out = dict(values)
    if not items:
        return out
    raw = out.get("backend")
    table: dict[str, Any] = dict(raw) if isinstance(raw, dict) else {}
    name = table.get("name", DEFAULT_BACKEND) if isinstance(raw, dict) else (raw or DEFAULT_BACKEND)
    table["name"] = name
    table.update(parse_option_assignments(str(name), items))
    out["backend"] = table
    return out
