"""``hwloop gradcheck``: every EP estimator against the exact gradient on the emulator.

For a reciprocal and a non-reciprocal network (``nonreciprocal`` backend), each
read-noise level, each estimator of :mod:`protocols.holomorphic` (Cauchy for
each number of points N), each nudge radius ``|beta|`` and each sample count,
the estimated parameter gradient is compared with the exact one (implicit
differentiation at the fixed point, provided by the emulator):

* ``cos``: cosine similarity with the exact gradient;
* ``angle_deg``: the angle between the estimate and the exact gradient, degrees
  (the direction error alone);
* ``rel_err``: ``|g_hat - g| / |g|`` (direction and size: the pass criterion);
* ``nudge_err``: ``|g_hat - g_EP| / |g_EP|``, the error from the finite nudge and
  the noise alone, where ``g_EP`` is built from the exact ``du*/dbeta``;
* ``bias``, ``std``: the estimator's own Richardson-bias and read-noise
  diagnostics, relative to ``|g|``;
* ``beta_opt``: the radius :func:`protocols.holomorphic.choose_beta` would pick.

One ``ep-exact`` row per network gives the asymmetry bias (``g_EP`` against
``g``): zero for a reciprocal network, not for a non-reciprocal one.

An estimate passes when its relative error is at most :data:`REL_ERR_PASS`. The
cosine does not separate estimators near ``|beta| = 1`` (centered and one-sided
reach cos > 0.998 with 10-24 % relative error); the relative error does.

The reference comes from the board through a structural protocol
(:class:`GradientOracle`); protocols never import the emulator.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from hwloop.errors import ConfigError
from hwloop.plugins import open_board, parse_option_assignments
from protocols.holomorphic import (
    STENCILS,
    Estimate,
    choose_beta,
    estimate,
    make_stencil,
)
from protocols.lockin import lockin_estimate
from protocols.updates import local_gradient

ESTIMATORS: tuple[str, ...] = (*STENCILS, "lockin")
REL_ERR_PASS = 0.01
"""An estimate passes when ``|g_hat - g| / |g|`` is at most this (1 %)."""
LOCKIN_SAMPLES_PER_PERIOD = 16

Array = NDArray[np.floating]


@runtime_checkable
class GradientOracle(Protocol):
    """An emulated board that knows the exact gradient at its free fixed point."""

    def free_state(self) -> Array:
        """``(batch, n_free)`` exact free fixed point, V."""
        ...

    def exact_gradient(self, targets_v: Array) -> tuple[Array, Array]:
        """Exact ``(dL/dg, dL/db)``."""
        ...

    def exact_nudge_response(self, targets_v: Array) -> Array:
        """Exact ``du*/dbeta`` at ``beta = 0``, V/S."""
        ...


@dataclass(frozen=True)
class Row:
    """One line of the gradcheck table (see the module docstring)."""

    network: str
    read_noise_v: float
    estimator: str
    beta_s: float
    samples: int
    cos: float
    angle_deg: float
    rel_err: float
    nudge_err: float
    bias: float
    std: float
    beta_opt_s: float
    settles: int
    fell_back: bool
    quadrature: float = float("nan")
    """Lock-in only: measured quadrature/in-phase ratio (about omega tau)."""


@dataclass(frozen=True)
class Options:
    """Validated command-line options."""

    arch: str
    weight_gain: float
    asymmetry: float
    fwd_gain: float
    bwd_gain: float
    estimators: tuple[str, ...]
    betas: tuple[float, ...]
    points: tuple[int, ...]
    read_noise: tuple[float, ...]
    samples: tuple[int, ...]
    batch: int
    seed: int
    lockin_harmonics: tuple[int, ...] = (1, 3)
    lockin_omega_tau: float = 0.01
    backend: str = "nonreciprocal"
    """A backend whose boards report the exact gradient (:class:`GradientOracle`) and take
    the options ``arch``, ``weight_gain``, ``read_noise_v``, ``asymmetry``, ``fwd_gain``
    and ``bwd_gain``."""
    backend_options: tuple[tuple[str, Any], ...] = ()
    """Further options of that backend (``--backend-opt``), the same for both networks."""


def _floats(text: str, what: str, *, positive: bool) -> tuple[float, ...]:
    try:
        vals = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ConfigError(f"--{what} {text!r} must be a comma-separated list of numbers") from None
    if not vals:
        raise ConfigError(f"--{what} needs at least one value")
    for v in vals:
        if not math.isfinite(v) or (v <= 0 if positive else v < 0):
            sign = "> 0" if positive else ">= 0"
            raise ConfigError(f"--{what}: every value must be a finite number {sign}, got {v}")
    return vals


def _ints(text: str, what: str, minimum: int) -> tuple[int, ...]:
    try:
        vals = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ConfigError(f"--{what} {text!r} must be a comma-separated list of integers") from None
    if not vals or min(vals) < minimum:
        raise ConfigError(f"--{what} needs integers >= {minimum}, got {text!r}")
    return vals


def _number(text: str, what: str, minimum: float, *, strict: bool = False) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ConfigError(f"--{what} {text!r} must be a number") from None
    if not math.isfinite(v) or v < minimum or (strict and v == minimum):
        raise ConfigError(f"--{what} must be {'>' if strict else '>='} {minimum:g}, got {text}")
    return v


def parse_options(args: argparse.Namespace) -> Options:
    """Validate the raw strings of the command line.

    Raises:
        ConfigError: any invalid value (the CLI prints one line and exits 2).
    """
    est = tuple(t.strip() for t in str(args.estimators).split(",") if t.strip())
    bad = [e for e in est if e not in ESTIMATORS]
    if bad or not est:
        raise ConfigError(
            f"--estimators: unknown {bad or est}; choose from {', '.join(ESTIMATORS)}"
        )
    harm = _ints(str(getattr(args, "lockin_harmonics", "1,3")), "lockin-harmonics", 1)
    if any(k not in (1, 3, 5) for k in harm):
        raise ConfigError(f"--lockin-harmonics: each value must be 1, 3 or 5, got {harm}")
    omega_tau = _number(str(getattr(args, "lockin_omega_tau", "0.01")), "lockin-omega-tau",
                        0.0, strict=True)
    if omega_tau > 0.1:
        raise ConfigError(f"--lockin-omega-tau {omega_tau:g} is above the quasi-static limit "
                          "0.1; lower it")
    batch = _ints(str(args.batch), "batch", 1)[0]
    seed = _ints(str(args.seed), "seed", 0)[0]
    return Options(
        arch=str(args.arch),
        weight_gain=_number(str(args.weight_gain), "weight-gain", 0.0, strict=True),
        asymmetry=_number(str(args.asymmetry), "asymmetry", 0.0),
        fwd_gain=_number(str(args.fwd_gain), "fwd-gain", 0.0, strict=True),
        bwd_gain=_number(str(args.bwd_gain), "bwd-gain", 0.0, strict=True),
        estimators=est,
        betas=_floats(str(args.betas), "betas", positive=True),
        points=_ints(str(args.points), "points", 2),
        read_noise=_floats(str(args.read_noise), "read-noise", positive=False),
        samples=_ints(str(args.samples), "samples", 1),
        batch=batch,
        seed=seed,
        lockin_harmonics=harm,
        lockin_omega_tau=omega_tau,
        backend=str(getattr(args, "backend", "nonreciprocal")),
        backend_options=tuple(parse_option_assignments(
            str(getattr(args, "backend", "nonreciprocal")),
            getattr(args, "backend_opt", None) or []).items()),
    )


def _cos(a: Array, b: Array) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else float("nan")


def _angle_deg(a: Array, b: Array) -> float:
    """Angle between ``a`` and ``b``, degrees (stable near 0: ``2 atan2(|u - v|, |u + v|)``)."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if not (na > 0 and nb > 0):
        return float("nan")
    u, v = a / na, b / nb
    diff, total = float(np.linalg.norm(u - v)), float(np.linalg.norm(u + v))
    return math.degrees(2.0 * math.atan2(diff, total))


def _rel(a: Array, b: Array) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def run(opts: Options) -> tuple[list[Row], dict[str, float]]:
    """Run the sweep; return the rows and the asymmetry bias per network."""
    rng = np.random.default_rng(opts.seed)
    networks = {
        "reciprocal": {"asymmetry": 0.0, "fwd_gain": 1.0, "bwd_gain": 1.0},
        "non-reciprocal": {
            "asymmetry": opts.asymmetry,
            "fwd_gain": opts.fwd_gain,
            "bwd_gain": opts.bwd_gain,
        },
    }
    rows: list[Row] = []
    asym: dict[str, float] = {}
    for net_name, net_opts in networks.items():
        net_seed = int(rng.integers(2**31))
        data_rng = np.random.default_rng(int(rng.integers(2**31)))
        x_in: Array | None = None
        y: Array | None = None
        for sigma in opts.read_noise:
            board = open_board(
                opts.backend,
                {"arch": opts.arch, "weight_gain": opts.weight_gain, "read_noise_v": sigma,
                 **net_opts, **dict(opts.backend_options)},
                np.random.default_rng(net_seed),  # the same network at every noise level
            )
            try:
                if not isinstance(board, GradientOracle):
                    raise ConfigError("gradcheck needs an emulated board with an exact gradient")
                desc = board.describe()
                if x_in is None or y is None:
                    x_in = data_rng.normal(size=(opts.batch, len(desc.input_nodes)))
                    y = 0.3 * data_rng.normal(size=(opts.batch, len(desc.output_nodes)))
                board.apply_inputs(x_in)
                board.settle()
                gt, bt = board.exact_gradient(y)
                g_true = np.concatenate([gt, bt])
                u0 = board.free_state()
                ge, be = local_gradient(desc, x_in, u0, board.exact_nudge_response(y))
                g_ep = np.concatenate([ge, be])
                if net_name not in asym:
                    asym[net_name] = _rel(g_ep, g_true)
                    rows.append(Row(net_name, 0.0, "ep-exact", 0.0, 0, _cos(g_ep, g_true),
                                    _angle_deg(g_ep, g_true), asym[net_name], 0.0, 0.0, 0.0,
                                    float("nan"), 0, False))
                norm = float(np.linalg.norm(g_true))
                for name in opts.estimators:
                    variants = (opts.points if name == "cauchy" else
                                opts.lockin_harmonics if name == "lockin" else (0,))
                    for var in variants:
                        for beta in opts.betas:
                            for m in opts.samples:
                                quad = float("nan")
                                if name == "lockin":
                                    # as many nudged samples per node as the centered rule,
                                    # and two periods at least (for the noise estimate)
                                    periods = max(2, math.ceil(2 * m / LOCKIN_SAMPLES_PER_PERIOD))
                                    le = lockin_estimate(
                                        board, x_in, y, beta, harmonics=var,
                                        omega_tau=opts.lockin_omega_tau, n_periods=periods,
                                        samples_per_period=LOCKIN_SAMPLES_PER_PERIOD,
                                        free_samples=m,
                                    )
                                    est, total = le.estimate, le.n_samples
                                    quad = le.quadrature_ratio
                                else:
                                    st = make_stencil(name, beta, max(var, 2))
                                    est = estimate(board, x_in, y, st, n_samples=m, bias_check=True)
                                    total = m * max(est.stencil.n_solves, 1)
                                rows.append(_row(net_name, sigma, beta, m, est, total, quad,
                                                 g_true, g_ep, norm))
            finally:
                board.close()
    return rows, asym


def _row(
    net: str, sigma: float, beta: float, m: int, est: Estimate, total: int, quad: float,
    g_true: Array, g_ep: Array, norm: float,
) -> Row:
    g_hat = np.concatenate([est.grad_g, est.grad_b])
    bias_e = est.bias_error
    rms_bias = float(np.sqrt(np.mean(bias_e**2))) if bias_e is not None else float("nan")
    b_opt = float("nan")
    if sigma > 0 and np.isfinite(rms_bias) and rms_bias > 0:
        b_opt = choose_beta(est.stencil, sigma, total, rms_bias, 1e3)
    return Row(
        net, sigma, est.stencil.name, beta, m, _cos(g_hat, g_true), _angle_deg(g_hat, g_true),
        _rel(g_hat, g_true),
        _rel(g_hat, g_ep), est.bias_norm / norm, math.sqrt(est.variance) / norm, b_opt,
        est.n_settles, est.fell_back, quad,
    )


def format_table(rows: list[Row]) -> str:
    """The rows as a fixed-width text table."""
    head = (f"{'network':15s} {'noise_V':>8s} {'estimator':11s} {'beta_S':>7s} {'M':>4s} "
            f"{'cos':>9s} {'angle_deg':>9s} {'rel_err':>9s} {'nudge_err':>9s} {'bias':>9s} "
            f"{'std':>9s} {'beta_opt':>8s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        fb = " (fell back)" if r.fell_back else ""
        if math.isfinite(r.quadrature):
            fb += f" quad {r.quadrature:.2g}"
        lines.append(
            f"{r.network:15s} {r.read_noise_v:8.1e} {r.estimator:11s} {r.beta_s:7.3g} "
            f"{r.samples:4d} {r.cos:9.6f} {r.angle_deg:9.3g} {r.rel_err:9.2e} "
            f"{r.nudge_err:9.2e} {r.bias:9.2e} {r.std:9.2e} {r.beta_opt_s:8.3g}{fb}"
        )
    return "\n".join(lines)


def checks(rows: list[Row], asym: dict[str, float]) -> dict[str, Any]:
    """The claims the command demonstrates, evaluated on the rows."""
    out: dict[str, Any] = {"asymmetry_bias": asym}
    clean = [r for r in rows if r.network == "reciprocal" and r.read_noise_v == 0.0
             and r.beta_s == 1.0]
    out["rel_err_pass"] = REL_ERR_PASS
    out["beta1_passes"] = {r.estimator: r.rel_err <= REL_ERR_PASS for r in clean}
    one = [r for r in clean if r.estimator == "one-sided"]
    cau = [r for r in clean if r.estimator.startswith("cauchy-")
           and int(r.estimator.split("-")[1]) >= 4]
    if one and cau:
        out["beta1_one_sided_rel_err"] = min(r.rel_err for r in one)
        out["beta1_one_sided_angle_deg"] = min(r.angle_deg for r in one)
        out["beta1_cauchy_rel_err"] = {r.estimator: r.rel_err for r in cau}
        out["beta1_cauchy_angle_deg"] = {r.estimator: r.angle_deg for r in cau}
        out["beta1_one_sided_cos"] = max(r.cos for r in one)
        out["beta1_cauchy_cos"] = {r.estimator: r.cos for r in cau}
        out["cauchy_beats_one_sided_at_beta1"] = bool(
            max(r.rel_err for r in cau) <= REL_ERR_PASS < min(r.rel_err for r in one)
        )
    return out


def plot(rows: list[Row], out_dir: Path) -> list[str]:
    """Write cosine and relative-error plots against |beta|; return the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    panels = sorted({(r.network, r.read_noise_v, r.samples) for r in rows if r.samples > 0})
    written = []
    for metric, ylabel, fname in (
        ("cos", "1 - cosine similarity", "gradcheck_cosine.png"),
        ("rel_err", "relative error |g_hat - g| / |g|", "gradcheck_relerr.png"),
    ):
        fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
        for ax, (net, sigma, m) in zip(axes[0], panels, strict=True):
            sel = [r for r in rows if (r.network, r.read_noise_v, r.samples) == (net, sigma, m)]
            for est in dict.fromkeys(r.estimator for r in sel):
                pts = sorted((r.beta_s, getattr(r, metric)) for r in sel if r.estimator == est)
                xs = [p[0] for p in pts]
                ys = [max(1 - p[1], 1e-16) if metric == "cos" else max(p[1], 1e-16) for p in pts]
                ax.loglog(xs, ys, marker="o", label=est)
            floor = next((r for r in rows if r.network == net and r.estimator == "ep-exact"), None)
            if floor is not None:
                level = 1 - floor.cos if metric == "cos" else floor.rel_err
                if level > 0:
                    ax.axhline(level, color="k", ls="--", lw=1, label="asymmetry (ep-exact)")
            ax.set_title(f"{net}, noise {sigma:g} V, M={m}", fontsize=9)
            ax.set_xlabel("|beta| (S)")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / fname
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(str(path))
    return written


def _echo(opts: Options) -> dict[str, Any]:
    """The options as JSON (the backend fields only when not the defaults: output unchanged)."""
    out = asdict(opts)
    if opts.backend == Options.backend and not opts.backend_options:
        out.pop("backend")
        out.pop("backend_options")
    return out


def run_gradcheck(args: argparse.Namespace) -> int:
    """Entry of ``hwloop gradcheck``."""
    opts = parse_options(args)
    rows, asym = run(opts)
    plots = plot(rows, Path(args.plots)) if args.plots else []
    summary = checks(rows, asym)
    if args.json:
        doc = {
            "options": _echo(opts),
            "rows": [asdict(r) for r in rows],
            "checks": summary,
            "plots": plots,
        }
        print(json.dumps(_clean(doc), allow_nan=False))
        return 0
    print(format_table(rows))
    print()
    for net, a in asym.items():
        print(f"asymmetry bias |g_EP - g| / |g| ({net}): {a:.3e}")
    if "cauchy_beats_one_sided_at_beta1" in summary:
        ang = summary["beta1_cauchy_angle_deg"]
        c = ", ".join(f"{k} {v:.2e} ({ang[k]:.3g} deg)"
                      for k, v in summary["beta1_cauchy_rel_err"].items())
        one = summary["beta1_one_sided_rel_err"]
        print(f"|beta| = 1, reciprocal, no noise: relative error one-sided {one:.2e} "
              f"({summary['beta1_one_sided_angle_deg']:.3g} deg); {c}")
    if summary.get("beta1_passes"):
        ok = [k for k, v in summary["beta1_passes"].items() if v]
        print(f"pass (relative error <= {REL_ERR_PASS:g}) at |beta| = 1, reciprocal, no noise: "
              + (", ".join(ok) if ok else "none"))
    for p in plots:
        print(f"wrote {p}")
    return 0


def _clean(o: Any) -> Any:
    """NaN and inf as ``None`` (strict JSON has neither), recursively."""
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_clean(v) for v in o]
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o
