"""``hwloop plan``: predict the critical read-noise level and the samples N it calls for.

The model (docs/physics.md §6.4). With independent zero-mean read noise of std ``s``
per averaged read (``s = sigma / sqrt(N)`` for ``N`` samples of std ``sigma``),
an estimator with stencil ``(beta_i, c_i)`` (``sum c_i = 0``) estimates the
node-voltage part of the gradient as ``sum_i c_i v(beta_i)``. For one node and
one example:

* signal ``= |sum_i c_i (v_j(beta_i) - v_j(0))|`` (the free voltage cancels),
* noise std ``= s * sqrt(sum_i c_i**2)``.

So the per-node, per-example signal-to-noise ratio is ``d_eff / s`` with the
*effective displacement*

    d_eff = |sum_i c_i (v(beta_i) - v(0))| / sqrt(sum_i c_i**2)       [V]

(centered EP, nudges +-beta with d+ ~ d- ~ d: ``d_eff = sqrt(2) d``; one-sided:
``d / sqrt(2)``). The large voltage drop across an input conductance multiplies
signal and noise alike and cancels. The layer with the smallest typical
``d_eff`` (on the DRNs: the first hidden layer) limits training; the predicted
critical noise of one averaged read is

    s_c = d_eff(limiting layer) / snr_c

with ``snr_c`` the per-example SNR taken as the limit (default 1: noise equal to
signal; the rule of thumb "sigma_c ~ one-sided displacement d" of
docs/physics.md §6.4 corresponds to ``snr_c = sqrt(2)`` for centered EP). ``d_eff`` is measured on
the noise-free emulator (or on a board, averaging ``reads`` reads per phase, whose
standard error is reported) at initialisation, on a few training examples; its
"typical" value is the mean over the layer's nodes and the examples.

The recommended number of samples puts ``sigma / sqrt(N)`` at ``(1 - margin) s_c``
or below: ``N = ceil((sigma / ((1 - margin) s_c))**2)``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwloop.config import read_toml
from hwloop.device import CurrentNudge, Device, NodeReading, ResistiveNudge
from hwloop.errors import ConfigError
from hwloop.plugins import backend_options_declared, open_board
from protocols.cli import add_backend_opt
from protocols.config import ALIASES, TrainConfig, make_config, merge_options, resolve
from protocols.datasets import load_dataset
from protocols.engine import free_phase, nudged_phases
from protocols.estimators import make_estimator
from protocols.plan import Measure, build_step_plan
from protocols.session import safe_session
from protocols.training import backend_options, encode_inputs, one_hot

# ----------------------------------------------------------------------------- pure arithmetic


#: What the prediction assumes beyond its arithmetic, whether this project's measurements
#: support it, and where (claim, status, evidence). Printed by ``hwloop plan``; keep in step
#: with docs/uncertainty.md.
EVIDENCE: tuple[tuple[str, str, str], ...] = (
    ("the limit scales as sqrt(N) (noise-free ADC, independent samples)", "supported",
     "docs/uncertainty.md, The reproduction, claim 2: limits within 16 % in sigma/sqrt(N) over "
     "N = 1, 10, 100, with white Gaussian reads"),
    ("reads are white, unbiased and dithered (what sqrt(N) needs)", "NOT checked by plan",
     "docs/uncertainty.md, A sigma/sqrt(N) test that could fail: a slow read term s floors the "
     "error at its own size after (sigma/s)^2 repeats, an undithered ADC near its "
     "quantisation error, and drift during the reads makes large N worse; "
     "measure them with hwloop characterize"),
    ("the limit does not depend on the dataset", "NOT supported",
     "docs/uncertainty.md, The reproduction, claim 3: Fashion-MNIST's limit measured 2.2-2.7x "
     "lower than MNIST's at an equal prediction; use --margin 0.5 or measure"),
    ("the limit does not depend on batch size or learning rate", "NOT supported",
     "docs/uncertainty.md, The planner against batch size and learning rate: right at "
     "batch 4, lr 0.006 (1.04x); measured limit grows about as sqrt(batch / lr), 3.4x "
     "at batch 16, lr 0.002, so conservative for larger batches or smaller lr, too high "
     "for smaller batches or larger lr"),
)


def effective_displacement(
    displacements_v: Mapping[float, np.ndarray], coeffs: Mapping[float, float]
) -> np.ndarray:
    """``|sum_i c_i dv_i| / sqrt(sum_i c_i**2)`` elementwise, V.

    Args:
        displacements_v: nudge strength ``beta_i`` (S) -> ``v(beta_i) - v(0)``, V
            (any common shape; ``beta_i = 0`` may be omitted, its displacement is 0).
        coeffs: ``beta_i`` -> stencil coefficient ``c_i`` (1/S).
    """
    signal = sum(
        (coeffs[b] * np.asarray(dv, dtype=np.float64) for b, dv in displacements_v.items()),
        start=np.zeros(()),
    )
    norm = math.sqrt(sum(c * c for c in coeffs.values()))
    if norm == 0:
        raise ConfigError("the estimator's stencil has no non-zero coefficient")
    return np.asarray(np.abs(signal) / norm, dtype=np.float64)


def critical_noise(d_eff_v: float, snr_c: float = 1.0) -> float:
    """Critical std of one averaged read, V: ``d_eff / snr_c``."""
    if not (d_eff_v >= 0 and snr_c > 0):
        raise ConfigError(f"need d_eff >= 0 V and snr > 0 (got {d_eff_v}, {snr_c})")
    return d_eff_v / snr_c


def recommend_samples(sigma_v: float, sigma_c_v: float, margin: float = 0.2) -> tuple[int, float]:
    """Smallest ``N`` with ``sigma / sqrt(N) <= (1 - margin) * sigma_c``, and its actual margin.

    Returns:
        ``(N, 1 - sigma / sqrt(N) / sigma_c)``; the second is the fraction by which the
        averaged noise stays below the limit (``>= margin``; 1 for ``sigma = 0``).
    """
    if not 0 <= margin < 1:
        raise ConfigError(f"margin = {margin} must be in [0, 1)")
    if not (sigma_v >= 0 and math.isfinite(sigma_v)):
        raise ConfigError(f"sigma = {sigma_v} must be a finite number >= 0 V")
    if not sigma_c_v > 0:
        raise ConfigError(f"the critical noise {sigma_c_v} V must be > 0 to recommend N")
    target = (1.0 - margin) * sigma_c_v
    n = max(1, math.ceil((sigma_v / target) ** 2 - 1e-12))
    return n, 1.0 - sigma_v / math.sqrt(n) / sigma_c_v


# ----------------------------------------------------------------------------- measurement


@dataclass
class Prediction:
    """What ``hwloop plan`` reports. Voltages in V, times in s."""

    arch: str
    dataset: str
    estimator: str
    nudge: str
    beta: float
    input_gain_v: float
    n_examples: int
    snr_c: float
    layer_d_eff_v: list[float]
    """Mean effective displacement per non-input layer (first hidden ... output), V."""
    layer_d_onesided_v: list[float]
    """Mean one-sided displacement |v(beta_i) - v(0)| per layer, averaged over nudges, V."""
    limiting_layer: int
    sigma_c_v: float
    """Predicted critical std of one averaged read, V."""
    sigma_v: float | None = None
    samples: int | None = None
    margin_target: float | None = None
    margin: float | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    step_time_s: float | None = None
    epoch_time_s: float | None = None
    steps_per_epoch: int | None = None
    timings_source: str = ""
    reads: int = 1
    """Reads averaged per phase in the displacement measurement."""
    layer_d_eff_floor_v: list[float] | None = None
    """Per layer: standard error of one averaged phase read (the noise of ``d_eff``), V;
    None when each phase was read once (the noise-free emulator)."""
    assumptions: list[str] = field(default_factory=list)


def measure_displacements(
    cfg: TrainConfig, device: Device, x: np.ndarray, y: np.ndarray, reads: int = 1
) -> tuple[list[float], list[float], list[float] | None]:
    """Per-layer mean effective and one-sided displacements on the examples ``x``, V.

    Every phase is read ``reads`` times and averaged (on a noisy board the displacement
    itself must be resolved above the read noise). Returns ``(d_eff, d_onesided,
    floor)``: ``floor`` is, per layer, the mean standard error of one averaged phase
    read (sample std / sqrt(reads)), which is also the typical noise of ``d_eff``
    since ``sum c_i = 0``; ``None`` for ``reads = 1``.
    """
    assert cfg.input_gain is not None and cfg.beta is not None
    if reads < 1:
        raise ConfigError(f"reads = {reads} must be >= 1")
    desc = device.describe()
    if desc.layers is None:
        raise ConfigError("hwloop plan needs a layered board (its description has no layers)")
    beta_s = float(cfg.beta) * float(desc.g_scale_s)
    stencil = make_estimator(cfg.estimator).stencil(beta_s, np.random.default_rng(0))
    betas = stencil.real_betas_s
    coeffs = dict(zip(betas, stencil.real_coeffs, strict=True))
    v_in = encode_inputs(x, cfg.input_gain, len(desc.input_nodes))
    targets = one_hot(y, len(desc.output_nodes))
    free = desc.free_nodes
    out_pos = np.searchsorted(free, desc.output_nodes)
    sems: list[np.ndarray] = []

    def mean(r: NodeReading) -> np.ndarray:
        if reads > 1:
            sems.append(np.asarray(r.sem_v, dtype=np.float64))
        return np.asarray(r.mean_v.real, dtype=np.float64)

    v0 = mean(free_phase(device, v_in, reads))
    nudged, _ = nudged_phases(
        device, betas, targets, nudge_kind=cfg.nudge, n_samples=reads,
        v_free_out=v0[:, out_pos], release_each=True,
    )
    disp = {b: mean(r) - v0 for b, r in zip(betas, nudged, strict=True) if r is not None}
    d_eff = effective_displacement(disp, coeffs)
    one = np.mean([np.abs(d) for d in disp.values()], axis=0)
    sem = np.mean(sems, axis=0) if sems else None
    eff_l, one_l, floor_l = [], [], []
    for block in desc.layers:
        pos = np.searchsorted(free, np.asarray(block.dst))
        eff_l.append(float(np.mean(d_eff[:, pos])))
        one_l.append(float(np.mean(one[:, pos])))
        if sem is not None:
            floor_l.append(float(np.mean(sem[:, pos])))
    return eff_l, one_l, (floor_l if sem is not None else None)


def _time_ops(cfg: TrainConfig, device: Device, x: np.ndarray, n_samples: int) -> dict[str, float]:
    """Median wall time of the operations of one step on ``device`` (batch of ``x``), s."""
    assert cfg.input_gain is not None and cfg.beta is not None
    desc = device.describe()
    v_in = encode_inputs(x, cfg.input_gain, len(desc.input_nodes))
    targets = one_hot(np.zeros(len(x), dtype=np.int64), len(desc.output_nodes))
    beta_s = float(cfg.beta) * float(desc.g_scale_s)
    t: dict[str, list[float]] = {"settle_s": [], "read_per_sample_s": [], "program_s": []}
    for _ in range(3):
        device.apply_nudge(None)
        device.apply_inputs(v_in)
        device.apply_nudge(
            ResistiveNudge(beta_s, targets) if cfg.nudge == "resistive"
            else CurrentNudge(beta_s * targets)
        )
        t0 = time.perf_counter()
        device.settle()
        t1 = time.perf_counter()
        device.read_nodes(n_samples)
        t2 = time.perf_counter()
        device.program_deltas(None, np.zeros(desc.n_edges))
        t3 = time.perf_counter()
        t["settle_s"].append(t1 - t0)
        t["read_per_sample_s"].append((t2 - t1) / n_samples)
        t["program_s"].append(t3 - t2)
    device.apply_nudge(None)
    return {k: float(np.median(v)) for k, v in t.items()}


def read_timings(path: str | Path) -> dict[str, float]:
    """A timings table (TOML or JSON): ``settle_s``, ``read_per_sample_s``, ``program_s``.

    All per EP phase (settle, read) or per step (program) for one batch, s.
    """
    p = Path(path)
    raw: Any = json.loads(p.read_text()) if p.suffix == ".json" else read_toml(p)
    need = ("settle_s", "read_per_sample_s", "program_s")
    if not isinstance(raw, dict) or any(k not in raw for k in need):
        raise ConfigError(f"timings table {p} must define {', '.join(need)} (seconds)")
    out = {k: float(raw[k]) for k in need}
    if any(not (math.isfinite(v) and v >= 0) for v in out.values()):
        raise ConfigError(f"timings table {p}: every time must be a finite number >= 0 s")
    return out


def read_noise_model_sigma(path: str | Path) -> float:
    """Read-noise std per sample from a noise-model file (JSON or TOML), V.

    Accepts ``read_noise_v = ...`` at the top level or ``[read] sigma_v = ...``.
    """
    p = Path(path)
    try:
        raw: Any = json.loads(p.read_text()) if p.suffix == ".json" else read_toml(p)
    except FileNotFoundError:
        raise ConfigError(f"noise-model file {p} not found") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"noise-model file {p} is not valid JSON: {exc}") from None
    v = raw.get("read_noise_v") if isinstance(raw, dict) else None
    if v is None and isinstance(raw, dict) and isinstance(raw.get("read"), dict):
        v = raw["read"].get("sigma_v")
    if v is None:
        raise ConfigError(f"noise-model file {p} has no read_noise_v (or [read] sigma_v)")
    return float(v)


def predict(
    values: Mapping[str, Any],
    *,
    sigma_v: float | None = None,
    n_examples: int = 8,
    snr_c: float = 1.0,
    margin: float = 0.2,
    timings: Mapping[str, float] | None = None,
    measure_timings: bool = True,
    reads: int | None = None,
) -> Prediction:
    """Measure the nudge displacements and predict the critical noise (module docstring).

    Args:
        values: training options (:class:`TrainConfig` keys); unset ones take the
            published values.
        sigma_v: read noise per sample, V (None: no N recommendation).
        n_examples: training examples the displacement is averaged over.
        snr_c: per-example SNR taken as the limit.
        margin: wanted fraction by which ``sigma/sqrt(N)`` stays below the limit.
        timings: a timings table (see :func:`read_timings`) instead of measuring.
        measure_timings: time the operations on the board when no table is given.
        reads: reads averaged per phase when measuring the displacements (default 1 on
            a board that describes itself as deterministic, e.g. a backend whose
            ``read_noise_v`` option is set to 0 here; 16 on any other).
    """
    if n_examples < 1:
        raise ConfigError(f"n_examples = {n_examples} must be >= 1")
    if not (snr_c > 0 and math.isfinite(snr_c)):
        raise ConfigError(f"snr = {snr_c} must be a finite number > 0")
    vals = dict(values)
    vals.pop("read_noise", None)  # the displacement is measured without noise
    cfg, _ = resolve(make_config(vals, source="plan options"))
    assert cfg.input_gain is not None and cfg.beta is not None and cfg.batch_size is not None
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, test_fraction=cfg.test_fraction)
    x_all = data.pixels("train")
    rng = np.random.default_rng(cfg.seed)
    options = backend_options(cfg)
    declared = {o.name for o in backend_options_declared(cfg.backend) or ()}
    # a backend whose read noise is an option (the --read-noise alias) measures without it,
    # in double precision where the precision is an option too
    if ALIASES["read_noise"] in declared:
        options[ALIASES["read_noise"]] = 0.0
    if "dtype" in declared:
        options["dtype"] = "float64"
    idx = rng.permutation(len(x_all))[:n_examples]
    x, y = x_all[idx], data.y_train.astype(np.int64)[idx]
    device = open_board(cfg.backend, options, rng)
    with safe_session(device):
        deterministic = device.describe().deterministic
        if reads is None:
            reads = 1 if deterministic else 16
        eff, one, floor = measure_displacements(cfg, device, x, y, reads)
        samples_for_timing = 1
        pred_timings: dict[str, float] = {}
        source = ""
        if timings is not None:
            pred_timings, source = dict(timings), "timings table"
        elif measure_timings:
            xb = x_all[: cfg.batch_size]
            pred_timings, source = _time_ops(cfg, device, xb, samples_for_timing), "measured"
    limiting = int(np.argmin(eff))
    sigma_c = critical_noise(eff[limiting], snr_c)
    p = Prediction(
        arch=cfg.arch,
        dataset=cfg.dataset,
        estimator=cfg.estimator,
        nudge=cfg.nudge,
        beta=float(cfg.beta),
        input_gain_v=float(cfg.input_gain),
        n_examples=n_examples,
        snr_c=snr_c,
        layer_d_eff_v=eff,
        layer_d_onesided_v=one,
        limiting_layer=limiting + 1,
        sigma_c_v=sigma_c,
        timings_s=pred_timings,
        timings_source=source,
        reads=reads,
        layer_d_eff_floor_v=floor,
    )
    if sigma_v is not None:
        n, actual = recommend_samples(sigma_v, sigma_c, margin)
        p.sigma_v, p.samples, p.margin_target, p.margin = sigma_v, n, margin, actual
    if pred_timings:
        stencil = make_estimator(cfg.estimator).stencil(1.0, np.random.default_rng(0))
        n_s = p.samples or cfg.samples
        plan = build_step_plan(stencil, nudge_kind=cfg.nudge, n_samples=n_s,
                               sem_target_v=None, max_samples=n_s)
        n_phases = sum(isinstance(s, Measure) for s in plan)
        p.step_time_s = n_phases * (
            pred_timings["settle_s"] + n_s * pred_timings["read_per_sample_s"]
        ) + pred_timings["program_s"]
        n_train = len(x_all) if cfg.train_limit is None else min(cfg.train_limit, len(x_all))
        p.steps_per_epoch = -(-n_train // cfg.batch_size)
        p.epoch_time_s = p.step_time_s * p.steps_per_epoch
    p.assumptions = [
        "read noise: independent, zero-mean, same std in every phase, averaged over N samples "
        "(sigma/sqrt(N)); no noise during relaxation",
        f"displacements measured once at initialisation on {n_examples} training examples "
        + ("(noise-free board)" if deterministic and floor is None
           else f"(on the {cfg.backend} backend, {reads} reads averaged per phase)")
        + "; they change during training",
        f"limit: per-example SNR d_eff/(sigma/sqrt(N)) = {snr_c:g} in the limiting layer "
        "(d_eff = |sum c_i dv_i| / sqrt(sum c_i^2), mean over nodes and examples)",
        *(f"{claim}: {status} ({evidence})" for claim, status, evidence in EVIDENCE),
        "timings: one phase = settle + N reads of the batch; one step = phases + one "
        "bulk programming call; evaluation and logging not included",
    ]
    if floor is not None and eff[limiting] < 3.0 * floor[limiting]:
        p.assumptions.append(
            f"WARNING: the limiting layer's d_eff ({eff[limiting]:.3g} V) is less than 3 "
            f"times its measurement noise ({floor[limiting]:.3g} V per averaged read): "
            "the prediction is biased upward by the read noise; raise --reads"
        )
    return p


def format_prediction(p: Prediction) -> str:
    """A human-readable summary."""
    lines = [
        f"hwloop plan: {p.arch}, {p.estimator} EP ({p.nudge} nudge), beta {p.beta:g}, "
        f"input gain {p.input_gain_v:g} V, {p.dataset} ({p.n_examples} examples)",
        "layer   mean |dv| one-sided (V)   d_eff (V)",
    ]
    for i, (o, e) in enumerate(zip(p.layer_d_onesided_v, p.layer_d_eff_v, strict=True)):
        mark = "  <- limiting" if i + 1 == p.limiting_layer else ""
        lines.append(f"{i + 1:5d}   {o:24.3e}   {e:9.3e}{mark}")
    if p.layer_d_eff_floor_v is not None:
        lines.append(
            f"measured with {p.reads} reads per phase; noise of d_eff per layer (V): "
            + ", ".join(f"{f:.1e}" for f in p.layer_d_eff_floor_v)
        )
    lines.append(f"predicted critical noise of one averaged read: {p.sigma_c_v:.3e} V "
                 f"(SNR {p.snr_c:g})")
    if p.sigma_v is not None and p.samples is not None and p.margin is not None:
        lines.append(
            f"sigma {p.sigma_v:.3e} V: use N = {p.samples} samples per phase -> "
            f"sigma/sqrt(N) = {p.sigma_v / math.sqrt(p.samples):.3e} V, "
            f"{100 * p.margin:.0f} % below the limit (target margin "
            f"{100 * (p.margin_target or 0):.0f} %)"
        )
    if p.step_time_s is not None:
        lines.append(
            f"time ({p.timings_source}): {p.step_time_s * 1e3:.2f} ms per step, "
            f"{p.epoch_time_s or 0:.1f} s per epoch of {p.steps_per_epoch} steps "
            f"(settle {p.timings_s['settle_s'] * 1e3:.2f} ms, read "
            f"{p.timings_s['read_per_sample_s'] * 1e3:.3f} ms/sample, program "
            f"{p.timings_s['program_s'] * 1e3:.2f} ms)"
        )
    lines.append("assumptions:")
    lines.extend(f"  - {a}" for a in p.assumptions)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI

_PLAN_FLAGS = ("backend", "board", "arch", "dataset", "data_dir", "beta", "estimator", "nudge",
               "input_gain", "sweeps", "batch_size", "train_limit", "seed", "device_preset")


def run_plan(args: argparse.Namespace) -> int:
    """Execute ``hwloop plan``."""
    values: dict[str, Any] = {}
    if args.config is not None:
        values.update(read_toml(args.config))
    values = merge_options(values, {k: getattr(args, k, None) for k in _PLAN_FLAGS},
                           args.backend_opt)
    table = values.get("backend")
    if isinstance(table, dict) and values.get("read_noise") is None:
        values["read_noise"] = table.pop(ALIASES["read_noise"], None)
    sigma = args.sigma
    if args.noise_model is not None:
        if sigma is not None:
            raise ConfigError("give --sigma or --noise-model, not both")
        sigma = read_noise_model_sigma(args.noise_model)
    if sigma is None and values.get("read_noise") is not None:
        sigma = float(values["read_noise"])
    timings = read_timings(args.timings) if args.timings is not None else None
    p = predict(values, sigma_v=sigma, n_examples=args.examples, snr_c=args.snr,
                margin=args.margin, timings=timings, reads=args.reads)
    if args.json:
        print(json.dumps(asdict(p)))
    else:
        print(format_prediction(p))
    return 0


def register_plan(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``hwloop plan``."""
    p = sub.add_parser(
        "plan",
        help="predict the critical read noise and the samples N it needs",
        description="Measure the estimator's nudge displacement of every layer on a few "
        "examples (noise-free on the emulator; --reads averaged reads on a board), predict the "
        "critical noise of one averaged read "
        "(docs/physics.md §6.4), recommend N for a noise level and estimate step/epoch times.",
    )
    p.add_argument("--config", type=Path, help="TOML file with training options")
    for key in _PLAN_FLAGS:
        typ: Any = float if key in ("beta", "input_gain") else (
            int if key in ("sweeps", "batch_size", "train_limit", "seed") else str)
        p.add_argument(f"--{key.replace('_', '-')}", dest=key, type=typ, default=None)
    add_backend_opt(p)
    p.add_argument("--sigma", type=float, default=None, help="read noise per sample, V")
    p.add_argument("--noise-model", type=Path, default=None,
                   help="noise-model file (JSON/TOML with read_noise_v) instead of --sigma")
    p.add_argument("--examples", type=int, default=8, help="examples to average over")
    p.add_argument("--reads", type=int, default=None,
                   help="reads averaged per phase when measuring the displacements "
                   "(default 1 on a noise-free board, e.g. the emulator with its read-noise "
                   "option set to 0 here; 16 on any other)")
    p.add_argument("--snr", type=float, default=1.0,
                   help="per-example SNR taken as the limit (default 1)")
    p.add_argument("--margin", type=float, default=0.2,
                   help="fraction by which sigma/sqrt(N) should stay below the limit")
    p.add_argument("--timings", type=Path, default=None,
                   help="timings table (TOML/JSON: settle_s, read_per_sample_s, program_s)")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=run_plan)
