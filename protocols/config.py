"""Training configuration: validated, with the published settings as defaults.

Every option left unset (``None``) is resolved from the published
hyper-parameters of the chosen architecture and dataset (physics doc 5.1 for
MNIST, the fast-DRN paper; 5.2 for Fashion-MNIST and KMNIST, the
universal-approximation paper), so ``hwloop train --arch 1568-100-10`` trains
well with no other option. The resolved configuration is saved with the run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hwloop.config import build_config, read_toml
from hwloop.errors import ConfigError

DTypeName = Literal["float32", "float64"]


@dataclass(frozen=True)
class TrainConfig:
    """Options of ``hwloop train``. Units: volts, siemens, amperes, seconds.

    ``None`` means "the published value for this architecture and dataset"
    (see :func:`resolve`).
    """

    backend: str = "emulator"
    board: str | None = None
    """Board file (TOML) of the ``board`` backend: instruments, wiring, limits; the
    architecture comes from it (see ``instruments/board_file.py``)."""
    noise_model: str | None = None
    """Noise-model file written by ``hwloop characterize`` (emulator backend): the
    emulator then reads with that board's measured noise (``read_noise`` overrides it)."""
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
    estimator: Literal["centered", "one-sided", "random-sign", "four-point"] = "centered"
    nudge: Literal["resistive", "current"] = "resistive"
    samples: int = 1
    """Repeat samples per phase (>= 1)."""
    sem_target: float | None = None
    """Stop sampling early once each node's standard error is below this, V."""
    max_samples: int | None = None
    read_noise: float | None = None
    """Gaussian read noise per sample on the emulator, V (overrides the preset's)."""
    device_preset: str = "ideal"
    programming: Literal["open-loop", "write-verify"] = "open-loop"
    wv_tolerance: float | None = None
    """Write-verify tolerance, S (default 2 % of the conductance range)."""
    wv_max_iterations: int = 20
    sweeps: int | None = None
    """Coordinate-descent sweeps per settle on the emulator."""
    dtype: DTypeName = "float32"
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

    homeostasis: float = 0.0
    """Jacobian homeostasis strength lambda (>= 0; estimators doc 4): adds lambda times
    the gradient of the Jacobian-asymmetry loss to every step's gradient. Needs a board
    that reports its Jacobian (the ``nonreciprocal`` emulator)."""
    homeostasis_probes: int = 0
    """0: homeostasis uses the exact Jacobian where the board reports it (the emulator);
    P > 0: it estimates the Jacobian every step from P pairs of clamped-node probes, as
    a bench would (estimators doc 8.7; needs a board that clamps nodes and reads their
    currents)."""
    asymmetry: float | None = None
    """Backend ``nonreciprocal``: log-normal mismatch of each backward device from its
    forward partner at initialisation (0: reciprocal)."""
    write_noise: float | None = None
    """Backend ``nonreciprocal``: relative standard deviation of each programmed change."""
    fwd_gain: float | None = None
    """Backend ``nonreciprocal``: forward voltage gain of the amplifiers between hidden
    layers (> 0; 1: none)."""
    bwd_gain: float | None = None
    """Backend ``nonreciprocal``: backward current gain of those amplifiers (> 0; 1: none).
    With ``bwd_gain != fwd_gain`` the couplings are not reciprocal even when every
    backward device equals its forward partner."""

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
        pos("input_gain", self.input_gain)
        pos("beta", self.beta)
        pos("sem_target", self.sem_target)
        pos("read_noise", self.read_noise, strict=False)
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
            "sweeps",
            "train_limit",
            "test_limit",
            "eval_batch_size",
            "wv_max_iterations",
        ):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"{name} = {v} must be >= 1")
        if self.checkpoint_every < 0:
            raise ConfigError(f"checkpoint_every = {self.checkpoint_every} must be >= 0 (0: auto)")
        if self.max_samples is not None and self.max_samples < self.samples:
            raise ConfigError(
                f"max_samples = {self.max_samples} must be >= samples = {self.samples}"
            )
        if self.backend == "board" and not self.board:
            raise ConfigError(
                "backend 'board' needs a board file: pass --board PATH "
                "(examples in examples/boards/)"
            )
        if self.board is not None and self.backend != "board":
            raise ConfigError(
                f"board = {self.board!r} is only used by backend 'board' (backend is "
                f"{self.backend!r}); drop --board or pass --backend board"
            )
        if not (np.isfinite(self.homeostasis) and self.homeostasis >= 0):
            raise ConfigError(f"homeostasis = {self.homeostasis} must be a finite number >= 0")
        if self.homeostasis_probes < 0:
            raise ConfigError(
                f"homeostasis_probes = {self.homeostasis_probes} must be >= 0 (0: exact Jacobian)"
            )
        if self.homeostasis_probes and not self.homeostasis:
            raise ConfigError("homeostasis_probes needs --homeostasis LAMBDA > 0; set both")
        pos("asymmetry", self.asymmetry, strict=False)
        pos("write_noise", self.write_noise, strict=False)
        pos("fwd_gain", self.fwd_gain)
        pos("bwd_gain", self.bwd_gain)
        for name in ("asymmetry", "write_noise", "fwd_gain", "bwd_gain"):
            if getattr(self, name) is not None and self.backend != "nonreciprocal":
                raise ConfigError(
                    f"{name} is an option of backend 'nonreciprocal' (backend is "
                    f"{self.backend!r}); drop it or pass --backend nonreciprocal"
                )
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed = {self.seed} must be an integer in [0, 2**63)")
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"test_fraction = {self.test_fraction} must be in (0, 1)")
        if self.beta is not None and self.beta > 1e3:
            raise ConfigError(f"beta = {self.beta} S is out of range (at most 1000)")
        if self.read_noise is not None and self.read_noise > 1.0:
            raise ConfigError(f"read_noise = {self.read_noise} V is out of range (at most 1 V)")
        if self.noise_model is not None and self.backend != "emulator":
            raise ConfigError(
                f"noise_model is an option of backend 'emulator' (backend is "
                f"{self.backend!r}); drop --noise-model or pass --backend emulator"
            )
        if self.read_noise and self.backend not in _NOISY_BACKENDS:
            raise ConfigError(
                f"read_noise adds emulated read noise, which backend {self.backend!r} cannot "
                "do (a board's noise is its own: measure it with hwloop characterize); drop "
                "--read-noise or set it to 0"
            )


_NOISY_BACKENDS = ("emulator", "nonreciprocal")
"""Backends whose read noise ``read_noise`` sets (the emulators)."""


# --------------------------------------------------------------------------- published settings

_MNIST_FAMILY = {"mnist-subset", "mnist"}

# physics doc 5.1 (fast-DRN, Scellier 2024), MNIST: batch 4, momentum 0, gamma 0.99
_FAST_DRN: dict[str, dict[str, Any]] = {
    "1568-100-10": dict(
        input_gain=100.0,
        sweeps=4,
        beta=1.0,
        lr_weights=(0.006, 0.006),
        lr_biases=(0.006, 0.006),
        epochs=10,
    ),
    "1568-32768-10": dict(
        input_gain=800.0,
        sweeps=4,
        beta=1.0,
        lr_weights=(0.006, 0.006),
        lr_biases=(0.006, 0.006),
        epochs=100,
    ),
    "1568-1024-10": dict(
        input_gain=480.0,
        sweeps=4,
        beta=1.0,
        lr_weights=(0.006, 0.006),
        lr_biases=(0.006, 0.006),
        epochs=50,
    ),
    "1568-1024-1024-10": dict(
        input_gain=2000.0,
        sweeps=5,
        beta=1.0,
        lr_weights=(0.002, 0.006, 0.018),
        lr_biases=(0.002, 0.006, 0.018),
        epochs=50,
    ),
    "1568-1024-1024-1024-10": dict(
        input_gain=4000.0,
        sweeps=6,
        beta=2.0,
        lr_weights=(0.005, 0.02, 0.08, 0.005),
        lr_biases=(0.0005, 0.002, 0.008, 0.0005),
        epochs=50,
    ),
}
_FAST_COMMON = dict(batch_size=4, momentum=0.0)

# physics doc 5.2 (universal-approximation paper): gain = dataset gain x model gain,
# batch 32, momentum 0.9, 100 epochs, gamma 0.99
_DATASET_GAIN = {"mnist": 8.0, "mnist-subset": 8.0, "kmnist": 5.0, "fashion-mnist": 5.0}
_UNIVERSAL: dict[str, dict[str, Any]] = {
    "1568-1024-10": dict(
        model_gain=60.0, beta=0.5, sweeps=4, lr_weights=(0.005, 0.005), lr_biases=(0.005, 0.005)
    ),
    "1568-1024-1024-10": dict(
        model_gain=250.0,
        beta=1.0,
        sweeps=5,
        lr_weights=(0.002, 0.006, 0.005),
        lr_biases=(0.002, 0.006, 0.005),
    ),
    "1568-1024-1024-1024-10": dict(
        model_gain=500.0,
        beta=2.0,
        sweeps=6,
        lr_weights=(0.005, 0.02, 0.08, 0.005),
        lr_biases=(0.0005, 0.002, 0.008, 0.0005),
    ),
}
_UNIVERSAL_COMMON = dict(batch_size=32, momentum=0.9, epochs=100)


def published_defaults(arch: str, dataset: str) -> tuple[dict[str, Any], str]:
    """The published settings for ``arch`` on ``dataset`` and where they come from."""
    arch_key = "-".join(str(int(s)) for s in arch.split("-")) if arch else arch
    family = dataset if dataset in _DATASET_GAIN else "mnist"
    if family not in _MNIST_FAMILY and arch_key in _UNIVERSAL:
        u = dict(_UNIVERSAL[arch_key])
        u["input_gain"] = _DATASET_GAIN[family] * u.pop("model_gain")
        return {**_UNIVERSAL_COMMON, **u}, "Scellier & Mishra 2025 (physics doc 5.2)"
    if arch_key in _FAST_DRN:
        return {**_FAST_COMMON, **_FAST_DRN[arch_key]}, "Scellier 2024 fast-DRN (physics doc 5.1)"
    n_layers = len(arch_key.split("-"))
    generic = dict(
        input_gain=100.0,
        sweeps=4 + max(0, n_layers - 3),
        beta=1.0,
        lr_weights=(0.006,),
        lr_biases=(0.006,),
        epochs=10,
        **_FAST_COMMON,
    )
    return generic, "generic defaults (no published settings for this architecture)"


def resolve(cfg: TrainConfig) -> tuple[TrainConfig, str]:
    """Fill every ``None`` option from :func:`published_defaults`; return the source too."""
    defaults, source = published_defaults(cfg.arch, cfg.dataset)
    changes = {k: v for k, v in defaults.items() if getattr(cfg, k) is None}
    if cfg.max_samples is None:
        changes["max_samples"] = cfg.samples if cfg.sem_target is None else 64 * cfg.samples
    return dataclasses.replace(cfg, **changes), source


def make_config(values: dict[str, Any], source: str = "configuration") -> TrainConfig:
    """Build a :class:`TrainConfig` strictly from a mapping (TOML + CLI options).

    With ``backend = "board"`` and no ``arch``, the architecture is the board file's
    (its ``[network] arch``); an ``arch`` that disagrees is refused when the board opens.
    """
    if values.get("backend") == "board" and values.get("board") and "arch" not in values:
        values = {**values, "arch": board_file_arch(str(values["board"]))}
    return build_config(TrainConfig, values, source=source)


def board_file_arch(path: str) -> str:
    """The ``[network] arch`` of a board file (the full file is checked by the backend).

    Raises:
        ConfigError: missing or unreadable file, or no ``[network] arch`` string.
    """
    data = read_toml(path) if Path(path).exists() else None
    if data is None:
        raise ConfigError(f"board file {path} not found; check the --board path")
    net = data.get("network")
    arch = net.get("arch") if isinstance(net, dict) else None
    if not isinstance(arch, str):
        raise ConfigError(
            f"board file {path}: [network] has no arch string; add arch = \"1568-16-10\""
        )
    return arch
