"""``hwloop characterize``: measure a board's noise, programming precision, drift and timings.

Works on any backend through :func:`hwloop.plugins.open_board` (the emulator by
default; a real board with ``--backend board --option board=FILE``, the input gain
then the one published for the board file's architecture). Measurements, all at
fixed inputs (random pixels in [0, 1] times the input gain, seeded):

* **node read noise**: ``R`` repeat reads of every hidden/output node for ``B``
  examples; the per-node std (ddof 1, pooled over examples), and its dependence on
  the signal level, fitted as ``var = sigma_v**2 + (relative * |v|)**2`` (the
  emulator's :class:`~simulated_device.device_models.ReadNoise` form) by least
  squares of the per-(example, node) variance on ``v**2``. The pooled estimate of
  ``sigma_v`` has a relative standard error of about ``1/sqrt(2 (R - 1) B n)``
  (``n`` nodes), reported as ``sigma_v_rel_se``. With the meter's quantisation
  step (``--adc-lsb``) also the noise without it, ``sqrt(pooled**2 - lsb**2/12)``.
* **conductance read noise**: repeated :meth:`read_conductances`, std per edge.
* **programming precision**: a small ``program_deltas`` change on random edges
  (then undone): achieved vs requested; and, when the board declares a pulse step,
  one ``+1`` pulse per edge: achieved steps relative to ``pulse_step_s``.
* **cycle-to-cycle spread** (:func:`measure_c2c`): alternating single pulses on the
  programming edges, each state read several times; the per-pulse noise is separated
  from read and write noise by the steps' lag-1 covariance, with its standard error.
* **drift**: conductances of freshly written edges before and after a wait
  (``settle(drift_time_s)``) when the backend has a clock (``clock_s``); the power-law
  exponent ``nu`` for a given ``t0`` (``--drift-t0``) with its standard error;
  skipped otherwise.
* **timings**: wall time of settle, one read sample and a bulk programming call,
  s; written as a timings table for ``hwloop plan --timings``.

Outputs in ``OUT``: ``report.json``, ``noise_model.toml`` (``read_noise_v`` for
the emulator, see :mod:`simulated_device.noise_model`), ``preset.toml`` (the board
as a device preset, format :mod:`hwloop.device_preset`: ``--backend-opt
preset=OUT/preset.toml`` emulates it), ``timings.json``,
``read_noise.png``, ``programming.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hwloop.config import read_toml
from hwloop.device import Device
from hwloop.device_preset import preset_toml as device_preset_toml
from hwloop.errors import ConfigError
from hwloop.plugins import DEFAULT_BACKEND, open_board, parse_option_assignments
from protocols.config import published_defaults
from protocols.engine import free_phase
from protocols.session import safe_session
from protocols.training import encode_inputs

Array = NDArray[np.floating]


def fit_read_noise(mean_v: Array, var_v2: Array) -> tuple[float, float]:
    """Least-squares fit ``var = a + b v**2``; returns ``(sqrt(a), sqrt(b))`` (V, 1).

    Negative fitted coefficients are clipped at 0.
    """
    v2 = np.asarray(mean_v, dtype=np.float64).ravel() ** 2
    y = np.asarray(var_v2, dtype=np.float64).ravel()
    design = np.stack([np.ones_like(v2), v2], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
    return math.sqrt(max(float(a), 0.0)), math.sqrt(max(float(b), 0.0))


def measure_read_noise(device: Device, v_in: Array, n_repeats: int) -> dict[str, Any]:
    """Repeat reads at fixed inputs: per-node std, fit vs signal level (see module doc)."""
    r = free_phase(device, v_in, n_repeats)
    s = np.asarray(r.samples_v.real, dtype=np.float64)  # (R, B, n)
    ok = np.asarray(r.flags == 0)
    flagged = int((~ok).sum())
    if flagged:
        s = np.where(ok, s, np.nan)
    mean = np.nanmean(s, axis=0)
    var = np.nanvar(s, axis=0, ddof=1)
    per_node = np.sqrt(np.nanmean(var, axis=0))
    pooled = float(np.sqrt(np.nanmean(var)))
    good = np.isfinite(var)
    sig0, rel = fit_read_noise(mean[good], var[good])
    dof = max(int(good.sum()) * (n_repeats - 1), 1)
    return {
        "n_repeats": n_repeats,
        "batch": int(v_in.shape[0]),
        "n_nodes": int(s.shape[2]),
        "flagged_samples": flagged,
        "sigma_v_pooled": pooled,
        "sigma_v_rel_se": 1.0 / math.sqrt(2.0 * dof),
        "sigma_v_per_node": {
            "mean": float(np.mean(per_node)),
            "median": float(np.median(per_node)),
            "min": float(np.min(per_node)),
            "max": float(np.max(per_node)),
        },
        "fit": {"sigma_v": sig0, "relative": rel},
        "_mean_v": mean,
        "_var_v2": var,
        "_per_node": per_node,
    }


def measure_conductance_noise(device: Device, n_repeats: int) -> dict[str, Any]:
    """Std of repeated conductance reads, S and relative."""
    g = np.stack([np.asarray(device.read_conductances(), dtype=np.float64)
                  for _ in range(n_repeats)])
    std = g.std(axis=0, ddof=1) if n_repeats > 1 else np.zeros(g.shape[1])
    mean = np.abs(g.mean(axis=0))
    rel = std[mean > 0] / mean[mean > 0]
    return {
        "n_repeats": n_repeats,
        "std_s_mean": float(std.mean()),
        "std_relative_median": float(np.median(rel)) if rel.size else 0.0,
        "g_mean_s": float(mean.mean()),
    }


def probe_pulses(desc: Any, rel_range: float = 0.05) -> int:
    """Default pulses per edge of the programming probe: ``rel_range`` of the range, whole.

    The whole number of the board's pulses (``pulse_step_s``, S) nearest to ``rel_range``
    of its conductance range ``g_max_s - g_min_s``, at least 1; 10 when the range is
    unbounded. A request below one pulse rounds to no pulse at all, so a probe that is
    not a whole number of pulses measures the rounding, not the device.
    """
    span = float(desc.g_max_s) - float(desc.g_min_s)
    if not math.isfinite(span) or span <= 0:
        return 10
    return max(1, round(rel_range * span / float(desc.pulse_step_s)))


def measure_programming(
    device: Device,
    n_edges: int,
    rng: np.random.Generator,
    *,
    pulses: int | None = None,
    rel_step: float | None = None,
) -> dict[str, Any]:
    """Open-loop precision of ``program_deltas`` (and of one pulse when declared), undone after.

    On a board with a pulse step (``describe().pulse_step_s > 0``) the probe requests
    ``pulses`` whole pulses per edge (default :func:`probe_pulses`), towards the farther
    bound (up below mid-range, else down; up without an upper bound), so that it
    measures precision and not the range: ``+-pulses * pulse_step_s`` S through
    ``program_deltas``, the path training uses. ``rel_step`` instead requests that
    fraction of each edge's conductance (the probe of a continuous board, default
    0.05); on a pulsed board it may round to fewer pulses, stated as
    ``requested_pulses_mean`` and warned about when below one pulse. The error is
    ``achieved / requested - 1`` per edge (``achieved`` from a read before and after),
    reported as mean and rms and, in S, as rms.
    """
    desc = device.describe()
    if pulses is not None and rel_step is not None:
        raise ConfigError("give either --program-pulses or --program-step, not both")
    step_s = float(desc.pulse_step_s)
    if pulses is not None and step_s <= 0:
        raise ConfigError(f"--program-pulses needs a board with a pulse step; {desc.name} "
                          "declares none (pulse_step_s = 0): use --program-step")
    k = min(n_edges, desc.n_edges)
    edges = np.sort(rng.choice(desc.n_edges, size=k, replace=False)).astype(np.int64)
    g0 = np.asarray(device.read_conductances(edges), dtype=np.float64)
    mid = 0.5 * (float(desc.g_min_s) + float(desc.g_max_s))
    sign = np.where(g0 < mid, 1.0, -1.0) if math.isfinite(mid) else np.ones(k)
    out: dict[str, Any] = {"n_edges": k, "pulse_step_s": step_s}
    if rel_step is None and step_s > 0:
        n_p = probe_pulses(desc) if pulses is None else pulses
        req = sign * n_p * step_s
        out.update(probe="whole pulses", pulses_per_edge=n_p, requested_s=n_p * step_s)
    else:
        rel = 0.05 if rel_step is None else rel_step
        req = sign * rel * np.maximum(np.abs(g0), float(desc.g_scale_s) * 1e-3)
        out.update(probe="relative step", requested_relative_step=rel,
                   requested_s=float(np.mean(np.abs(req))))
        if step_s > 0:
            mean_p = float(np.mean(np.abs(req)) / step_s)
            out["requested_pulses_mean"] = mean_p
            if mean_p < 1:
                warnings.warn(f"--program-step {rel} requests {mean_p:.2g} pulses per edge on "
                              f"average (one pulse is {step_s:.3g} S): most requests round to "
                              "no pulse; drop it to probe whole pulses", stacklevel=2)
    res = device.program_deltas(edges, req)
    g1 = np.asarray(device.read_conductances(edges), dtype=np.float64)
    err = (g1 - g0) / req - 1.0
    out.update({
        "error_relative_mean": float(err.mean()),
        "error_relative_rms": float(np.sqrt(np.mean(err**2))),
        "error_s_rms": float(np.sqrt(np.mean((g1 - g0 - req) ** 2))),
        "status_counts": {str(int(c)): int(n) for c, n in zip(*np.unique(res.status,
                                                                           return_counts=True),
                                                               strict=True)},
        "_g0_s": g0, "_requested_s": req, "_achieved_s": g1 - g0,
    })
    device.program_deltas(edges, g0 - np.asarray(device.read_conductances(edges)))
    if step_s > 0:
        gp0 = np.asarray(device.read_conductances(edges), dtype=np.float64)
        device.program_pulses(edges, np.ones(k, dtype=np.int64))
        step = (np.asarray(device.read_conductances(edges), dtype=np.float64) - gp0)
        out["pulse"] = {
            "pulse_step_s": step_s,
            "step_mean_s": float(step.mean()),
            "step_relative_std": float(step.std() / step_s),
        }
        device.program_deltas(edges, gp0 - np.asarray(device.read_conductances(edges)))
    else:
        out["pulse"] = "skipped: the board declares no pulse step (pulse_step_s = 0)"
    return out


def _c2c_moments(n_pulses: int) -> tuple[Array, Array, Array, Array]:
    """Design of the alternating-pulse c2c probe with ``n_pulses`` (even) steps.

    Returns ``(P, BBt, L, W)``: the projector removing each direction's mean from the
    steps, the step covariance of a white per-state error (``d = B g``), the lag-1
    operator, and the two rows that average the up and the down steps.
    """
    k = n_pulses
    up = np.arange(k) % 2 == 0
    w = np.stack([up / up.sum(), ~up / (~up).sum()]).astype(np.float64)
    proj = np.eye(k) - (np.outer(up, w[0]) + np.outer(~up, w[1]))
    b = np.zeros((k, k + 1))
    b[np.arange(k), np.arange(k)] = -1.0
    b[np.arange(k), np.arange(k) + 1] = 1.0
    return proj, b @ b.T, np.eye(k, k=1), w


def measure_c2c(
    device: Device, n_edges: int, rng: np.random.Generator, *, n_pulses: int = 40,
    reads: int = 4,
) -> dict[str, Any] | str:
    """Cycle-to-cycle spread of one pulse's step, with read and write noise separated out.

    ``n_edges`` random edges are brought to mid-range and given ``n_pulses`` single
    pulses alternating up and down (so each device stays where it is and its up and
    down steps keep their means), each state read ``reads`` times. A device's steps
    ``d_k = g_{k+1} - g_k`` then carry the pulse's own noise (variance ``c^2``, white)
    and the difference of two per-state errors (read noise, and write noise redrawn at
    each write: variance ``sigma^2`` each, so ``d`` has a lag-1 covariance of
    ``-sigma^2``). With each direction's mean removed (projector ``P``), the sum of
    squares and the lag-1 sum have expectations linear in ``(c^2, sigma^2)``; solving
    them per device separates the two. ``c2c = sqrt(sum c_i^2 / sum mu_i^2)`` with
    ``mu_i^2`` the device's mean squared step (up and down), corrected for the variance
    of its estimate; ``c2c_se`` is the jackknife over devices. Device-to-device spread
    of the step drops out (each device is normalised by its own step). The edges are
    restored afterwards. Needs ``pulse_step_s > 0``.
    """
    desc = device.describe()
    step_s = float(desc.pulse_step_s)
    if step_s <= 0:
        return "skipped: the board declares no pulse step (pulse_step_s = 0)"
    if n_pulses < 4 or n_pulses % 2 or reads < 1:
        raise ConfigError("the c2c probe needs an even number of pulses >= 4 and reads >= 1")
    k = min(n_edges, desc.n_edges)
    edges = np.sort(rng.choice(desc.n_edges, size=k, replace=False)).astype(np.int64)

    def read() -> Array:
        acc = np.zeros(k)
        for _ in range(reads):
            acc += np.asarray(device.read_conductances(edges), dtype=np.float64)
        return acc / reads

    g_start = read()
    mid = 0.5 * (float(desc.g_min_s) + float(desc.g_max_s))
    if math.isfinite(mid):
        device.program_deltas(edges, mid - g_start)
    g = np.empty((n_pulses + 1, k))
    g[0] = read()
    for j in range(n_pulses):
        device.program_pulses(edges, np.full(k, 1 if j % 2 == 0 else -1, dtype=np.int64))
        g[j + 1] = read()
    for _ in range(10):  # back where they were, to within about a pulse (soft bounds)
        off = g_start - read()
        if np.all(np.abs(off) < step_s):
            break
        device.program_deltas(edges, off)
    d = np.diff(g, axis=0)  # (n_pulses, k)
    proj, bbt, lag, w = _c2c_moments(n_pulses)
    r = proj @ d
    s0 = np.sum(r * r, axis=0)
    s1 = np.sum(r[:-1] * r[1:], axis=0)
    pp = proj @ proj.T
    a = np.array([[np.trace(pp), np.trace(proj @ bbt @ proj.T)],
                  [np.trace(lag @ pp), np.trace(lag @ proj @ bbt @ proj.T)]])
    c2, sig2 = np.linalg.solve(a, np.stack([s0, s1]))  # per device, S^2
    mu = w @ d  # (2, k): mean up and mean down step
    var_mu = np.stack([c2 * (wi @ wi) + sig2 * (wi @ bbt @ wi) for wi in w])
    mu2 = np.mean(mu**2 - var_mu, axis=0)
    moving = np.abs(mu).min(axis=0) > 0.1 * step_s  # stuck devices and bounds excluded
    c2, mu2, sig2 = c2[moving], mu2[moving], sig2[moving]
    m = int(moving.sum())
    if m < 3:
        return "skipped: fewer than 3 edges responded to single pulses"
    ratio = float(c2.sum() / mu2.sum())
    jack = np.array([(c2.sum() - c2[i]) / (mu2.sum() - mu2[i]) for i in range(m)])
    ratio_se = math.sqrt((m - 1) / m * float(np.sum((jack - jack.mean()) ** 2)))
    c2c = math.sqrt(max(ratio, 0.0))
    return {
        "n_edges": m,
        "pulses_per_edge": n_pulses,
        "reads_per_state": reads,
        "c2c": c2c,
        "c2c_se": ratio_se / (2 * c2c) if c2c > 0 else math.sqrt(ratio_se),
        "per_state_noise_s": math.sqrt(max(float(np.mean(sig2)), 0.0)),
        "step_mean_s": float(np.sqrt(np.mean(mu2))),
    }


def measure_drift(
    device: Device, v_in: Array, wait_s: float, t0_s: float = 20.0, n_edges: int = 256
) -> dict[str, Any] | str:
    """Drift over a wait of ``wait_s`` s at inputs ``v_in`` (V), when the board has a clock.

    ``n_edges`` evenly spaced edges are written (a change of 1 % of their conductance,
    which restarts their drift clock), read at once, and read again after the wait.
    With the power law ``g(t) = g_prog ((t + t0)/t0)**-nu`` and ``t0 = t0_s``, each
    edge gives ``-ln(g1/g0) / ln((T + t0)/t0)`` (``T`` the elapsed board time); the
    exponent ``nu`` is their mean and ``nu_se`` its standard error (the conductance read
    noise makes the spread).
    """
    clock = getattr(device, "clock_s", None)
    if not isinstance(clock, float) or wait_s <= 0:
        return "skipped: the backend has no clock" if wait_s > 0 else "skipped: --drift-time 0"
    desc = device.describe()
    e = np.unique(np.linspace(0, desc.n_edges - 1, min(n_edges, desc.n_edges)).astype(np.int64))
    device.apply_inputs(v_in)
    g = np.asarray(device.read_conductances(e), dtype=np.float64)
    device.program_deltas(e, 0.01 * np.where(g > 0, g, desc.g_min_s + 0.01 * desc.g_scale_s))
    g0 = np.asarray(device.read_conductances(e), dtype=np.float64)
    c0 = float(getattr(device, "clock_s", 0.0))
    device.settle(wait_s)
    g1 = np.asarray(device.read_conductances(e), dtype=np.float64)
    elapsed = float(getattr(device, "clock_s", 0.0)) - c0
    ok = (g0 > 0) & (g1 > 0)
    rel = (g1[ok] - g0[ok]) / g0[ok]
    lr = np.log(g1[ok] / g0[ok])
    span = math.log((elapsed + t0_s) / t0_s) if elapsed > 0 else 0.0
    each = -lr / span if span > 0 else np.zeros(0)
    return {
        "elapsed_s": elapsed,
        "n_edges": int(ok.sum()),
        "relative_change_mean": float(rel.mean()) if rel.size else 0.0,
        "relative_change_rms": float(np.sqrt(np.mean(rel**2))) if rel.size else 0.0,
        "t0_s": t0_s,
        "nu": float(each.mean()) if each.size else 0.0,
        "nu_se": float(each.std(ddof=1) / math.sqrt(each.size)) if each.size > 1 else math.inf,
    }


def measure_timings(device: Device, v_in: Array, n: int = 3) -> dict[str, float]:
    """Median wall times: settle, one read sample (of the batch), bulk programming call, s."""
    desc = device.describe()
    t: dict[str, list[float]] = {"settle_s": [], "read_per_sample_s": [], "program_s": []}
    for _ in range(n):
        device.apply_inputs(v_in)
        a = time.perf_counter()
        device.settle()
        b = time.perf_counter()
        device.read_nodes(4)
        c = time.perf_counter()
        device.program_deltas(None, np.zeros(desc.n_edges))
        d = time.perf_counter()
        t["settle_s"].append(b - a)
        t["read_per_sample_s"].append((c - b) / 4)
        t["program_s"].append(d - c)
    return {k: float(np.median(v)) for k, v in t.items()}


def characterize(
    backend: str,
    options: Mapping[str, Any],
    *,
    input_gain_v: float | None = None,
    batch: int = 4,
    repeats: int = 100,
    g_repeats: int = 5,
    program_edges: int = 256,
    program_step: float | None = None,
    program_pulses: int | None = None,
    drift_time_s: float = 10.0,
    drift_t0_s: float = 20.0,
    seed: int = 0,
    adc_lsb_v: float = 0.0,
    c2c_pulses: int = 100,
) -> dict[str, Any]:
    """Run every measurement; return the report (arrays under ``_``-keys for plotting).

    ``adc_lsb_v`` is the node meter's quantisation step, V (0: unknown or none). When
    given, the report adds the additive noise without quantisation,
    ``sigma_v_additive = sqrt(pooled**2 - lsb**2 / 12)`` (Sheppard's correction, valid
    when the noise is at least about half an LSB), and its relative standard error.
    """
    if batch < 1 or repeats < 2 or g_repeats < 1 or program_edges < 1:
        raise ConfigError("need --batch >= 1, --repeats >= 2, --g-repeats >= 1, --edges >= 1")
    if program_step is not None and not (0 < program_step < 1):
        raise ConfigError(f"--program-step {program_step} must be in (0, 1)")
    if program_pulses is not None and not (1 <= program_pulses <= 10_000):
        raise ConfigError(f"--program-pulses {program_pulses} must be a whole number in "
                          "1..10000")
    if not (math.isfinite(drift_time_s) and drift_time_s >= 0):
        raise ConfigError(f"--drift-time {drift_time_s} must be a finite time >= 0 s")
    if not (math.isfinite(drift_t0_s) and drift_t0_s > 0):
        raise ConfigError(f"--drift-t0 {drift_t0_s} must be a finite time > 0 s")
    if not (math.isfinite(adc_lsb_v) and adc_lsb_v >= 0):
        raise ConfigError(f"--adc-lsb {adc_lsb_v} must be a finite step >= 0 V")
    rng = np.random.default_rng(seed)
    device = open_board(backend, dict(options), rng)
    with safe_session(device):
        desc = device.describe()
        n_in = len(desc.input_nodes)
        n_px = n_in // 2 if desc.layers is not None and n_in % 2 == 0 else n_in
        if input_gain_v is None:
            arch = options.get("arch")
            if not arch and desc.layers is not None:  # e.g. a board file's network
                arch = "-".join([str(n_px)] + [str(len(b.dst)) for b in desc.layers])
            arch = str(arch or "1568-100-10")
            input_gain_v = float(published_defaults(arch, "mnist")[0]["input_gain"])
        x = np.random.default_rng(seed + 1).random((batch, n_px))
        v_in = encode_inputs(x, input_gain_v, n_in)
        report: dict[str, Any] = {
            "backend": backend,
            "options": dict(options),
            "board": desc.name,
            "seed": seed,
            "input_gain_v": input_gain_v,
            "_desc": desc,
        }
        rn = measure_read_noise(device, v_in, repeats)
        if adc_lsb_v > 0:
            total2 = rn["sigma_v_pooled"] ** 2
            add2 = total2 - adc_lsb_v**2 / 12.0
            rn["adc_lsb_v"] = adc_lsb_v
            rn["sigma_v_additive"] = math.sqrt(max(add2, 0.0))
            # d(sigma_add)/sigma_add = (total^2 / add^2) d(sigma)/sigma
            rn["sigma_v_additive_rel_se"] = (
                rn["sigma_v_rel_se"] * total2 / add2 if add2 > 0 else math.inf
            )
        report["node_read_noise"] = rn
        report["conductance_read_noise"] = measure_conductance_noise(device, g_repeats)
        report["programming"] = measure_programming(
            device, program_edges, rng, pulses=program_pulses, rel_step=program_step)
        report["programming"]["c2c"] = measure_c2c(device, program_edges, rng,
                                                   n_pulses=c2c_pulses)
        report["drift"] = measure_drift(device, v_in, drift_time_s, drift_t0_s)
        report["timings_s"] = measure_timings(device, v_in)
    return report


def programming_text(prog: Mapping[str, Any]) -> str:
    """The programming lines of the text report: probe, granularity, error."""
    step = float(prog["pulse_step_s"])
    gran = (f"pulse granularity {step:.3g} S per pulse" if step > 0
            else "no pulse step declared (continuous programming)")
    if prog["probe"] == "whole pulses":
        probe = (f"{prog['pulses_per_edge']} whole pulses per edge "
                 f"(+-{prog['requested_s']:.3g} S)")
    else:
        probe = (f"{100 * prog['requested_relative_step']:g} % of each edge's conductance "
                 f"(mean {prog['requested_s']:.3g} S"
                 + (f", {prog['requested_pulses_mean']:.2g} pulses" if step > 0 else "") + ")")
    pulse = prog["pulse"]
    one = (f"; one pulse: mean step {pulse['step_mean_s']:.3g} S, spread "
           f"{pulse['step_relative_std']:.3g} steps (write and read noise included)"
           if isinstance(pulse, dict) else "")
    c2c = prog.get("c2c")
    if isinstance(c2c, dict):
        one += (f"; cycle-to-cycle c2c {c2c['c2c']:.3g} +- {c2c['c2c_se']:.2g} of a step "
                f"(read and write noise separated: {c2c['per_state_noise_s']:.3g} S per "
                f"state; {c2c['pulses_per_edge']} alternating pulses on {c2c['n_edges']} "
                "edges)")
    return (f"programming ({gran}): {probe} on {prog['n_edges']} edges: achieved/requested "
            f"- 1 mean {prog['error_relative_mean']:+.3g}, rms {prog['error_relative_rms']:.3g} "
            f"({prog['error_s_rms']:.3g} S){one}")


def noise_model_toml(report: Mapping[str, Any]) -> str:
    """The noise-model file: ``read_noise_v`` (the emulator's option) plus the fit, as TOML."""
    rn = report["node_read_noise"]
    fit = rn["fit"]
    sigma = fit["sigma_v"] if fit["relative"] > 0 else rn["sigma_v_pooled"]
    return (
        "# hwloop noise model, written by hwloop characterize\n"
        f"# backend {report['backend']}, board {report['board']}, seed {report['seed']}\n"
        f"read_noise_v = {sigma!r}  # additive read-noise std per sample, V\n\n"
        "[read]\n"
        f"sigma_v = {fit['sigma_v']!r}  # fit var = sigma_v^2 + (relative |v|)^2, V\n"
        f"relative = {fit['relative']!r}\n"
        f"sigma_v_pooled = {rn['sigma_v_pooled']!r}  # pooled std over all nodes, V\n"
        + (
            f"adc_lsb_v = {rn['adc_lsb_v']!r}  # meter quantisation step (given), V\n"
            f"sigma_v_additive = {rn['sigma_v_additive']!r}  # pooled without the "
            "quantisation (sqrt(pooled^2 - lsb^2/12)), V\n"
            if "adc_lsb_v" in rn else ""
        )
    )


def preset_toml(report: Mapping[str, Any], adc_lsb_v: float = 0.0) -> str:
    """The measured board as a device-preset file (format: :mod:`hwloop.device_preset`).

    ``--backend-opt preset=PATH`` then emulates this board. What was measured fills
    its keys: the read-noise fit (additive ``sigma_v``, ``relative``), the converter
    range and, from ``--adc-lsb``, its resolution; the conductance bounds, the pulse
    states over the range and the spread of one pulse's step (as ``c2c``: cycle-to-
    cycle and device-to-device together) and the conductance read noise. Keys it did
    not measure are left out (the emulator's neutral defaults).
    """
    rn = report["node_read_noise"]
    fit = rn["fit"]
    desc = report["_desc"]
    sigma = fit["sigma_v"] if fit["relative"] > 0 else rn["sigma_v_pooled"]
    rng_v = float(desc.v_read_range_v)
    bits = None
    if adc_lsb_v > 0 and math.isfinite(rng_v):
        b = math.log2(2 * rng_v / adc_lsb_v)
        bits = round(b) if abs(b - round(b)) < 1e-9 and 2 <= round(b) <= 32 else None
    read = {"sigma_v": float(sigma), "relative": float(fit["relative"]), "adc_bits": bits,
            "adc_range_v": rng_v}
    write: dict[str, Any] = {"g_min_s": float(desc.g_min_s), "g_max_s": float(desc.g_max_s)}
    notes = {"read.sigma_v": "additive read-noise std per sample, V (fit)",
             "read.relative": "read noise relative to |v| (fit)"}
    span = desc.g_max_s - desc.g_min_s
    prog = report["programming"]
    if desc.pulse_step_s > 0 and math.isfinite(span):
        write["n_states"] = float(span / desc.pulse_step_s)
        notes["write.n_states"] = (f"pulse granularity {desc.pulse_step_s:.4g} S per pulse "
                                   "(the board's pulse_step_s)")
        write["bound_mode"] = "hard"
        c2c = prog.get("c2c")
        if isinstance(c2c, dict):
            write["c2c"] = float(c2c["c2c"])
            notes["write.c2c"] = (f"cycle-to-cycle std of one pulse's step / its mean, "
                                  f"+- {c2c['c2c_se']:.2g} (read and write noise separated "
                                  "by alternating pulses)")
    g = report["conductance_read_noise"]
    write["read_relative"] = float(g["std_relative_median"])
    drift = report["drift"]
    if isinstance(drift, dict):
        write["drift_nu"] = max(float(drift["nu"]), 0.0)
        write["drift_t0_s"] = float(drift["t0_s"])
        notes["write.drift_nu"] = (f"measured {drift['nu']:.4g} +- {drift['nu_se']:.2g} over "
                                   f"{drift['elapsed_s']:g} s (negative: 0)")
    source = (f"hwloop characterize: backend {report['backend']}, board {report['board']}, "
              f"seed {report['seed']}, {rn['n_repeats']} reads x {rn['batch']} examples")
    return device_preset_toml(f"characterised {report['board']}", source, read, write, notes)


def _volt_scale(v_max: float) -> tuple[float, str]:
    """A display unit for voltages up to ``v_max`` V: (factor, name)."""
    if v_max < 1e-3:
        return 1e6, "uV"
    if v_max < 1.0:
        return 1e3, "mV"
    return 1.0, "V"


def plot_read_noise(report: Mapping[str, Any], path: Path) -> None:
    """Per-node std histogram and std vs |signal| with the fit (axes in uV/mV/V)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rn = report["node_read_noise"]
    mean, var, per_node = rn["_mean_v"], rn["_var_v2"], rn["_per_node"]
    fs, us = _volt_scale(float(np.nanmax(per_node)) if per_node.size else 1.0)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    a1.hist(per_node * fs, bins=30)
    a1.set_xlabel(f"read-noise std per node ({us})")
    a1.set_ylabel("nodes")
    a1.set_title(f"{rn['n_repeats']} reads x {rn['batch']} examples, {rn['n_nodes']} nodes",
                 fontsize=10)
    a1.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
    a1.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    v = np.abs(mean).ravel()
    fv, uv = _volt_scale(float(np.nanmax(v)) if v.size else 1.0)
    a2.plot(v * fv, np.sqrt(var).ravel() * fs, ".", ms=2, alpha=0.4, label="(example, node)")
    vv = np.linspace(0, float(np.nanmax(v)) if v.size else 1.0, 100)
    f = rn["fit"]
    a2.plot(vv * fv, np.sqrt(f["sigma_v"] ** 2 + (f["relative"] * vv) ** 2) * fs, "k-",
            label=f"fit: sigma {f['sigma_v']:.3g} V, relative {f['relative']:.3g}")
    a2.set_xlabel(f"|node voltage| ({uv})")
    a2.set_ylabel(f"std of one sample ({us})")
    a2.set_title("noise vs signal level", fontsize=10)
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_programming(report: Mapping[str, Any], path: Path) -> None:
    """Achieved vs requested change per edge against its conductance before, in uS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prog = report["programming"]
    g0, req, ach = prog["_g0_s"] * 1e6, prog["_requested_s"] * 1e6, prog["_achieved_s"] * 1e6
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for sgn, col, name in ((1, "C0", "up"), (-1, "C3", "down")):
        m = np.sign(req) == sgn
        if m.any():
            ax.plot(g0[m], ach[m], ".", ms=3, alpha=0.5, color=col, label=f"achieved, {name}")
            ax.plot(np.sort(g0[m]), req[m][np.argsort(g0[m])], "-", color=col, lw=1,
                    label=f"requested, {name}")
    ax.axhline(0, color="0.6", lw=0.5)
    step = float(prog["pulse_step_s"])
    probe = (f"{prog['pulses_per_edge']} pulses of {step * 1e6:.3g} uS"
             if prog["probe"] == "whole pulses"
             else f"{100 * prog['requested_relative_step']:g} % of g")
    ax.set_title(f"programming probe: {probe}; error rms {prog['error_relative_rms']:.3g}",
                 fontsize=10)
    ax.set_xlabel("conductance before (uS)")
    ax.set_ylabel("change (uS)")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _public(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _public(v) for k, v in obj.items() if not str(k).startswith("_")}
    return obj


def run_characterize(args: argparse.Namespace) -> int:
    """Execute ``hwloop characterize``."""
    options: dict[str, Any] = {}
    if args.options is not None:
        options.update(read_toml(args.options))
    options.update(parse_option_assignments(args.backend, args.option or []))
    report = characterize(
        args.backend, options, input_gain_v=args.input_gain, batch=args.batch,
        repeats=args.repeats, g_repeats=args.g_repeats, program_edges=args.edges,
        program_step=args.program_step, program_pulses=args.program_pulses,
        drift_time_s=args.drift_time,
        drift_t0_s=args.drift_t0, seed=args.seed,
        adc_lsb_v=args.adc_lsb,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pub = _public(report)
    (out / "report.json").write_text(json.dumps(pub, indent=1, default=str) + "\n")
    (out / "noise_model.toml").write_text(noise_model_toml(report))
    (out / "preset.toml").write_text(preset_toml(report, args.adc_lsb))
    (out / "timings.json").write_text(json.dumps(report["timings_s"], indent=1) + "\n")
    if not args.no_plots:
        plot_read_noise(report, out / "read_noise.png")
        plot_programming(report, out / "programming.png")
    if args.json:
        print(json.dumps(pub, default=str))
    else:
        rn = report["node_read_noise"]
        print(
            f"read noise: {rn['sigma_v_pooled']:.4g} V per sample (pooled over "
            f"{rn['n_nodes']} nodes, relative s.e. {100 * rn['sigma_v_rel_se']:.2g} %); fit "
            f"sigma {rn['fit']['sigma_v']:.4g} V + relative {rn['fit']['relative']:.3g}\n"
            + (f"without the {rn['adc_lsb_v']:.3g} V quantisation: "
               f"{rn['sigma_v_additive']:.4g} V (relative s.e. "
               f"{100 * rn['sigma_v_additive_rel_se']:.2g} %)\n" if "adc_lsb_v" in rn else "")
            + programming_text(report["programming"]) + "\ndrift: "
            + (report["drift"] if isinstance(report["drift"], str) else
               f"exponent {report['drift']['nu']:.4g} +- {report['drift']['nu_se']:.2g} "
               f"(t0 {report['drift']['t0_s']:g} s, {report['drift']['elapsed_s']:g} s)")
            + "\n"
            f"wrote {out}/report.json, noise_model.toml, preset.toml (--backend-opt "
            f"preset={out}/preset.toml emulates this board), timings.json"
            + ("" if args.no_plots else ", read_noise.png, programming.png")
        )
    return 0


def register_characterize(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``hwloop characterize``."""
    p = sub.add_parser(
        "characterize",
        help="measure a board's read noise, programming precision, drift and timings",
        description="Repeat reads at fixed inputs (noise per node and vs signal level), "
        "conductance read noise, programming precision, drift and operation timings; "
        "writes report.json, noise_model.toml, preset.toml (the board as an emulator "
        "preset), timings.json, read_noise.png and programming.png.",
    )
    p.add_argument("--backend", default=DEFAULT_BACKEND,
                   help=f"board backend (default {DEFAULT_BACKEND}; 'hwloop backends' lists them)")
    p.add_argument("--options", type=Path, default=None, help="TOML file of backend options")
    p.add_argument("--backend-opt", "--option", dest="option", action="append",
                   metavar="KEY=VALUE", help="backend option (repeatable), e.g. --backend-opt "
                   "read_noise_v=1e-4; 'hwloop backends NAME' lists them")
    p.add_argument("--input-gain", type=float, default=None,
                   help="input voltage per unit pixel, V (default: the architecture's)")
    p.add_argument("--batch", type=int, default=4, help="examples read at once")
    p.add_argument("--repeats", type=int, default=100, help="repeat reads per example")
    p.add_argument("--g-repeats", type=int, default=5, help="repeat conductance reads")
    p.add_argument("--edges", type=int, default=256, help="edges used for programming tests")
    p.add_argument("--program-pulses", type=int, default=None,
                   help="programming probe on a board with a pulse step: whole pulses per "
                   "edge, each edge up or down (default: the pulses nearest 5 %% of the "
                   "conductance range, at least 1)")
    p.add_argument("--program-step", type=float, default=None,
                   help="programming probe as a requested change relative to each edge's "
                   "conductance (default 0.05 on a board without a pulse step; on a pulsed "
                   "board it may round to fewer pulses)")
    p.add_argument("--drift-t0", type=float, default=20.0,
                   help="reference time t0 of the drift power law, s (default 20 s)")
    p.add_argument("--drift-time", type=float, default=10.0,
                   help="wait for the drift measurement, s (0: skip)")
    p.add_argument("--adc-lsb", type=float, default=0.0,
                   help="node meter's quantisation step, V (e.g. 20/2**16 for a 16-bit "
                   "+-10 V ADC): also report the noise without it (default 0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run_characterize)
