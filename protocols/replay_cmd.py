"""``hwloop replay RUN.h5``: re-run a recorded training run against its own recording.

Two modes:

* **Replay** (no ``--samples``/``--estimator``): the recorded configuration is
  rebuilt (a :class:`protocols.training.Trainer` on a
  :class:`protocols.replay_device.ReplayDevice`), the optimiser and programmer state are
  restored from the first checkpoint, and every recorded step is executed again
  by the same :meth:`protocols.training.Trainer.step` as in training, with the
  recorded examples and the recorded nudge sign. The replay board checks every
  command against the file; the result is ``identical`` (exit 0) or the first
  divergence (one line, exit 1).
* **Re-analysis** (``--samples k`` and/or ``--estimator NAME``): each step's
  gradient is recomputed from recorded data only (recorded inputs and samples)
  with the first ``k`` samples of every phase and/or another estimator whose
  phases were recorded, and compared per layer with the gradient recomputed from
  the full recording with the recorded estimator.

Stochastic pulse rounding is refused: its random draws share the run's generator
with the board's read noise, and the file does not record the generator between
device calls, so the pulse counts cannot be reproduced.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hwloop.errors import ConfigError
from hwloop.sessionlog import Checkpoint, SessionFile, open_session
from protocols.alignment import for_replay
from protocols.config import TrainConfig, make_config, resolve
from protocols.datasets import Dataset, load_dataset
from protocols.estimators import ESTIMATORS, Stencil, make_estimator
from protocols.progress import StepProgress
from protocols.replay_device import DEFAULT_RTOL, ReplayDevice, ReplayDivergence, compare_values
from protocols.training import Trainer, encode_inputs
from protocols.updates import ep_gradient

Array = NDArray[np.floating]

# ----------------------------------------------------------------------------- shared


def recorded_config(sf: SessionFile) -> TrainConfig:
    """The resolved training configuration stored in the session file."""
    values = tomllib.loads(str(sf.attrs["config_toml"]))
    cfg, _ = resolve(make_config(values, source=f"{sf.path} configuration"))
    return cfg


def _step_range(sf: SessionFile, first: int, steps: int | None) -> range:
    available = sf.steps_done - first
    if available <= 0:
        raise ConfigError(f"{sf.path} holds no complete step after step {first}; nothing to replay")
    if steps is None:
        return range(first, sf.steps_done)
    if steps < 1:
        raise ConfigError(f"--steps {steps} must be >= 1")
    if steps > available:
        raise ConfigError(
            f"--steps {steps} exceeds the {available} recorded step(s) of {sf.path}"
        )
    return range(first, first + steps)


def recorded_sign(estimator: str, betas_rec: Array) -> float:
    """The nudge sign of a recorded step whose phases had the signed betas ``betas_rec``, S.

    +1 for fixed-sign estimators; a random-sign step's sign is that of its nudge.
    """
    if not make_estimator(estimator).random_sign:
        return 1.0
    nudged = [float(b) for b in betas_rec[1:] if b != 0]
    return -1.0 if nudged and nudged[0] < 0 else 1.0


def recorded_stencil(estimator: str, beta_s: float, betas_rec: Array) -> Stencil:
    """The stencil the run used for a step whose phases had the signed betas ``betas_rec``, S.

    The estimator's stencil at ``beta_s`` (> 0, S) with the step's recorded sign.
    """
    return make_estimator(estimator).stencil(beta_s).signed(recorded_sign(estimator, betas_rec))


# ----------------------------------------------------------------------------- replay


def _row_digest(row: NDArray[np.float32]) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(row).tobytes(), digest_size=16).digest()


def locate_examples(
    sf: SessionFile, cfg: TrainConfig, data: Dataset, steps: range, n_inputs: int
) -> dict[int, int]:
    """Training-set row of every recorded example index.

    Without ``train_limit`` the run trained on the training set in order, so the
    example index is the row. With it, the run drew its subset with the run's
    generator after the board had drawn from it (not recorded), so each example is
    found by its recorded input voltages (float32) among the encoded training
    images; a duplicate image is told apart by the label of the recorded targets,
    and an example whose inputs match no image (a damaged record) takes the
    nearest image, so that the replay reports the difference.
    """
    recorded: dict[int, tuple[NDArray[np.int64], dict[str, Any]]] = {}
    for lo in range(steps.start, steps.stop, sf.block_steps()):
        blk = sf.block(lo, min(lo + sf.block_steps(), steps.stop))
        for s in range(blk.lo, blk.hi):
            d = blk.step_data(s)
            recorded[s] = (np.asarray(d["examples"], dtype=np.int64), d)
    examples = {s: recorded[s][0] for s in steps}
    if cfg.train_limit is None:
        return {int(e): int(e) for s in steps for e in examples[s]}
    assert cfg.input_gain is not None
    x = data.pixels("train")
    y = data.y_train.astype(np.int64)
    encode_inputs(x[:1], cfg.input_gain, n_inputs)  # refuses a board that does not fit
    n_px = x.shape[1]  # the first n_px inputs are gain * pixels, the rest (if any) their negation
    table: dict[bytes, list[int]] = {}
    for a in range(0, len(x), 1024):
        enc = (cfg.input_gain * x[a : a + 1024]).astype(np.float32)  # as encode_inputs' cast
        for i, row in enumerate(enc):
            table.setdefault(_row_digest(row), []).append(a + i)
    votes: dict[int, Counter[int]] = {}
    unmatched: dict[int, NDArray[np.float32]] = {}
    resistive = sf.layout.nudge_kind == "resistive" and sf.layout.phases > 1
    for s in steps:
        step_data = recorded[s][1]
        inputs = np.asarray(step_data["inputs_v"], dtype=np.float32)
        targets = np.asarray(step_data["nudge_values"][1]) if resistive else None
        for j, ex in enumerate(examples[s]):
            cands = table.get(_row_digest(inputs[j, :n_px]))
            if not cands:
                unmatched.setdefault(int(ex), inputs[j].copy())
                continue
            if len(cands) > 1 and targets is not None:
                label = int(np.argmax(targets[j]))
                cands = [c for c in cands if y[c] == label] or cands
            votes.setdefault(int(ex), Counter())[cands[0]] += 1
    rows = {ex: c.most_common(1)[0][0] for ex, c in votes.items()}
    for ex, rec in unmatched.items():
        if ex in rows:
            continue
        best, best_d = 0, np.inf
        for a in range(0, len(x), 4096):
            enc = encode_inputs(x[a : a + 4096], cfg.input_gain, n_inputs).astype(np.float32)
            dist = np.abs(enc - rec[None, :]).sum(axis=1)
            i = int(np.argmin(dist))
            if dist[i] < best_d:
                best, best_d = a + i, float(dist[i])
        rows[ex] = best
    return rows


@dataclass
class ReplayOutcome:
    """Result of a replay.

    Attributes:
        identical: True when every replayed operation matched the recording.
        first_step, steps: the step range asked for.
        steps_replayed: steps completed and checked.
        divergence: the divergence (None when identical).
        stats: closeness of the requested changes (see
            :class:`protocols.replay_device.ReplayStats`).
        rtol: the tolerance used (fraction of each layer's largest recorded value).
    """

    identical: bool
    first_step: int
    steps: int
    steps_replayed: int
    rtol: float
    divergence: ReplayDivergence | None = None
    stats: dict[str, Any] = field(default_factory=dict)


def _where(row: Any) -> str:
    return f"step {int(row['step'])} (epoch {int(row['epoch'])}, batch {int(row['batch'])})"


def _check_update(
    step_data: dict[str, Any], s: int, row: Any, replayed: Array | None,
    groups: NDArray[np.int64], rtol: float,
) -> None:
    """The replayed optimiser update against the recorded ``update_g_s`` (when logged).

    The replay board checks the programming calls; this also covers pulse and
    write-verify programming, whose calls do not carry the update itself.
    """
    rec = step_data.get("update_g_s")
    if rec is None or replayed is None:
        return
    cmp = compare_values(
        "requested change of edge", "S", rec, np.asarray(replayed), groups=groups, rtol=rtol
    )
    if cmp.message:
        raise ReplayDivergence(f"{_where(row)}, update: {cmp.message}", step=s, operation="update")


def _check_learner_state(trainer: Trainer, ck: Checkpoint, s: int, row: Any) -> None:
    """Optimiser and programmer state after step ``s`` against the checkpoint taken then."""
    mine = trainer.checkpoint(ck.epoch, ck.batch, ck.order).arrays
    for name in sorted(ck.arrays):
        if not name.startswith(("optimiser/", "programmer/")):
            continue
        rec = np.asarray(ck.arrays[name])
        got = np.asarray(mine[name])
        if rec.shape == got.shape and np.array_equal(rec, got, equal_nan=rec.dtype.kind == "f"):
            continue
        if rec.shape != got.shape or rec.dtype.kind not in "fc":
            detail = f"{name} recorded {rec.tolist()!r:.80}, replayed {got.tolist()!r:.80}"
        else:
            cmp = compare_values(name, "", rec, got)
            detail = cmp.message or f"{name} differs"
        raise ReplayDivergence(
            f"{_where(row)}, checkpoint after the step: {detail}", step=s, operation="checkpoint"
        )


def _resume_checkpoints(sf: SessionFile, ck_rows: NDArray[np.void]) -> dict[int, int]:
    """Step at which a resume without an exact board restore continued -> its checkpoint.

    A board that cannot restore its state (a real bench, the mock) is resumed from the
    last checkpoint's learner state (optimiser, programmer, generator) while the steps
    committed after that checkpoint stay in the file and the board keeps its own
    conductances; the next step continues from that checkpoint, not from the step
    before it. The checkpoint is the last one taken at or before the resume's step and
    before the resume event. An exact restore (the checkpoints hold the board state)
    re-runs and verifies the lost steps, so its recording is continuous.
    """
    if any(n.startswith("board/") for n in sf.checkpoint_names()):
        return {}
    out: dict[int, int] = {}
    for ev in sf.events():
        if ev["kind"] != "resume":
            continue
        n, t = int(ev["step"]), float(ev["t_unix_s"])
        ok = np.flatnonzero((ck_rows["steps_done"] <= n) & (ck_rows["t_unix_s"] <= t))
        if len(ok):
            out[n] = int(ok[-1])
    return out


def replay_session(
    sf: SessionFile, *, steps: int | None = None, rtol: float = DEFAULT_RTOL,
    quiet: bool = True,
) -> ReplayOutcome:
    """Re-run the recorded configuration against its own recording (see the module docstring).

    Besides the board-level checks of :class:`protocols.replay_device.ReplayDevice`, each
    replayed update is compared with the recorded ``update_g_s`` (when logged) and,
    at every checkpoint, the optimiser and programmer state with the recorded one.
    Unless ``quiet``, progress goes to stderr (:class:`protocols.progress.StepProgress`).

    Raises:
        ConfigError: the run cannot be replayed (stochastic rounding, no steps,
            bad ``steps``), or its dataset cannot be loaded.
    """
    cfg = for_replay(recorded_config(sf), sf.description.deterministic)
    ckpt = sf.checkpoint(0)
    todo = _step_range(sf, ckpt.steps_done, steps)
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, test_fraction=cfg.test_fraction)
    device = ReplayDevice(
        sf, checkpoint=0, stop_step=todo.stop, rtol=rtol,
        require_programming=cfg.programming == "open-loop",
    )
    trainer = Trainer(cfg, device, data, np.random.default_rng(cfg.seed))
    programmer = trainer.learner.programmer
    if getattr(programmer, "rounding", "nearest") == "stochastic" and (
        device.describe().pulse_step_s > 0
    ):
        raise ConfigError(
            f"{sf.path} used stochastic pulse rounding, whose random draws are not recorded; "
            "it cannot be replayed (re-analyse it with --samples/--estimator instead)"
        )
    try:
        trainer.restore(ckpt)
    except KeyError as exc:
        raise ConfigError(
            f"{sf.path}: the first checkpoint lacks {exc}; the file is damaged and cannot be "
            "replayed"
        ) from None
    rows = locate_examples(sf, cfg, data, todo, trainer.n_in)
    x_all = data.pixels("train")
    y_all = data.y_train.astype(np.int64)
    ck_rows = sf.checkpoints()
    ck_at = {int(r["steps_done"]): i for i, r in enumerate(ck_rows)}
    resumed_from = _resume_checkpoints(sf, ck_rows)
    edge_groups = np.zeros(sf.description.n_edges, dtype=np.int64)
    for k, blk in enumerate(sf.description.layers or ()):
        edge_groups[blk.edge_offset : blk.edge_offset + blk.n_edges] = k
    epoch = ckpt.epoch
    outcome = ReplayOutcome(
        identical=False, first_step=todo.start, steps=len(todo), steps_replayed=0, rtol=rtol,
    )
    progress = StepProgress("hwloop replay", len(todo), quiet=quiet)
    try:
        for s in todo:
            progress.update(s - todo.start)
            if s in resumed_from and s > ckpt.steps_done:
                # the resumed run went on from this checkpoint's learner state
                ck = sf.checkpoint(resumed_from[s])
                trainer.restore(ck)
                epoch = ck.epoch
            step_data = device.recorded(s).step_data(s)
            row = step_data["index"]
            while epoch < int(row["epoch"]):
                trainer.optimiser.end_epoch()
                epoch += 1
            ex = np.asarray(step_data["examples"], dtype=np.int64)
            idx = np.array([rows[int(e)] for e in ex], dtype=np.int64)
            sign = recorded_sign(cfg.estimator, np.asarray(step_data["betas_s"]))
            trainer.steps_done = s
            rec = trainer.step(
                x_all[idx], y_all[idx], examples=ex, epoch=epoch, batch=int(row["batch"]),
                sign=sign,
            )
            replayed = None if rec.update is None else rec.update.delta_g_s
            _check_update(step_data, s, row, replayed, edge_groups, rtol)
            if s + 1 in ck_at and s + 1 > ckpt.steps_done:
                ck = sf.checkpoint(ck_at[s + 1])
                while epoch < ck.epoch:  # an epoch-end checkpoint: the decay came first
                    trainer.optimiser.end_epoch()
                    epoch += 1
                _check_learner_state(trainer, ck, s, row)
                device.check_checkpoint(ck.arrays["conductances_s"], ck.arrays["biases_a"])
        device.finish()
        outcome.identical = True
    except ReplayDivergence as exc:
        outcome.divergence = exc
    finally:
        progress.close()
        device.close()
    outcome.steps_replayed = device.stats.steps_completed
    outcome.stats = dict(device.stats.__dict__)
    return outcome


# ----------------------------------------------------------------------------- re-analysis


def _phase_map(stencil: Stencil, betas_rec: Array) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Recorded phase of each stencil entry (None when not recorded) and the coefficients."""
    phases: list[int] = []
    for b in stencil.real_betas_s:
        if b == 0.0:
            phases.append(0)
            continue
        hit = [p for p in range(1, len(betas_rec)) if float(betas_rec[p]) == b]
        phases.append(hit[0] if hit else -1)
    return tuple(phases), stencil.real_coeffs


def _layer_groups(sf: SessionFile) -> list[tuple[str, str, slice | NDArray[np.intp]]]:
    """(name, kind, index) for the weights and biases of every layer."""
    desc = sf.description
    if desc.layers is None:
        out: list[tuple[str, str, slice | NDArray[np.intp]]] = [
            ("weights", "g", slice(0, desc.n_edges))
        ]
        if len(desc.bias_nodes):
            out.append(("biases", "b", slice(0, len(desc.bias_nodes))))
        return out
    pos = {int(n): i for i, n in enumerate(desc.bias_nodes)}
    out = []
    for k, blk in enumerate(desc.layers, start=1):
        out.append((f"weights {k}", "g", slice(blk.edge_offset, blk.edge_offset + blk.n_edges)))
    for k, blk in enumerate(desc.layers, start=1):
        b = np.array([pos[int(n)] for n in blk.dst if int(n) in pos], dtype=np.intp)
        if b.size:
            out.append((f"biases {k}", "b", b))
    return out


def _cosine(a: Array, b: Array) -> float:
    if np.array_equal(a, b):
        return 1.0
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return float("nan")
    return float(np.clip(np.dot(a, b) / (na * nb), -1.0, 1.0))


def _rel_diff(a: Array, b: Array) -> float:
    if np.array_equal(a, b):
        return 0.0
    nb = float(np.linalg.norm(b))
    return float(np.linalg.norm(a - b)) / nb if nb > 0 else float("inf")


def reanalyse(
    sf: SessionFile,
    *,
    samples: int | None = None,
    estimator: str | None = None,
    steps: int | None = None,
) -> dict[str, Any]:
    """Recompute each step's gradient from recorded data only; compare with the recorded one.

    Args:
        sf: the session file.
        samples: use the first ``samples`` samples of every phase (None: all).
        estimator: recompute with this estimator (None: the recorded one).
        steps: only the first ``steps`` recorded steps.

    Returns:
        A JSON-able dict: the settings and one entry per layer (weights and
        biases) with the median and mean cosine similarity and relative norm
        difference ``|g_new - g_ref| / |g_ref|`` over the steps, and the sign
        agreement (per edge, the fraction of steps whose signs agree, averaged
        over the layer's edges; and the share of edges that agree in every step).

    Raises:
        ConfigError: ``samples`` beyond what was recorded, ``samples`` on a
            summary-mode file, or an estimator whose phases were not recorded.
    """
    cfg = recorded_config(sf)
    desc = sf.description
    if estimator is not None and estimator not in ESTIMATORS:
        raise ConfigError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    if samples is not None:
        if samples < 1:
            raise ConfigError(f"--samples {samples} must be >= 1")
        if sf.options.samples != "raw":
            raise ConfigError(
                f"{sf.path} keeps only per-phase means (log samples = summary); "
                "--samples needs a file with raw samples"
            )
    if estimator == "random-sign" and cfg.estimator != "random-sign":
        raise ConfigError(
            f"--estimator random-sign needs the sign drawn in each step, which a {cfg.estimator} "
            "recording does not have; use one-sided or centered"
        )
    if sf.layout.complex_samples:
        raise ConfigError(
            f"{sf.path} was recorded with complex nudges ({cfg.estimator}); re-analysis "
            "with --samples/--estimator handles real stencils only: replay it without them"
        )
    new_name = cfg.estimator if estimator is None else estimator
    rng_range = _step_range(sf, 0, steps)
    counts_all = np.asarray(sf.h5["steps/n_samples"][rng_range.start : rng_range.stop])
    if samples is not None:
        low = np.argwhere(counts_all < samples)
        if low.size:
            s, p = (int(v) for v in low[0])
            raise ConfigError(
                f"--samples {samples} exceeds the {int(counts_all[s, p])} sample(s) recorded in "
                f"phase {p} of step {rng_range.start + s}"
            )
    groups = _layer_groups(sf)
    cos: dict[str, list[float]] = {g[0]: [] for g in groups}
    rel: dict[str, list[float]] = {g[0]: [] for g in groups}
    agree_g = np.zeros(desc.n_edges, dtype=np.int64)
    agree_b = np.zeros(len(desc.bias_nodes), dtype=np.int64)
    steps_ds = sf.h5["steps"]
    for s in rng_range:
        betas = np.asarray(steps_ds["betas_s"][s], dtype=np.float64)
        nudged = np.abs(betas[betas != 0])
        if not nudged.size:
            raise ConfigError(f"step {s} of {sf.path} recorded no nudged phase")
        beta_s = float(nudged[0])
        ref_phases, ref_coeffs = _phase_map(recorded_stencil(cfg.estimator, beta_s, betas), betas)
        if new_name == "random-sign":
            new_stencil = recorded_stencil("random-sign", beta_s, betas)
        else:
            new_stencil = make_estimator(new_name).stencil(beta_s)
        new_phases, new_coeffs = _phase_map(new_stencil, betas)
        if -1 in ref_phases:
            raise ConfigError(
                f"step {s} of {sf.path} lacks a phase of its recorded {cfg.estimator} estimator"
            )
        if -1 in new_phases:
            need = new_stencil.betas_s[new_phases.index(-1)]
            have = ", ".join(f"{b:+g} S" for b in betas[1:]) or "none"
            raise ConfigError(
                f"--estimator {new_name} needs a nudge of beta = {need:+g} S, which step {s} did "
                f"not record (recorded nudges: {have})"
            )
        readings = sf.readings(s)
        v_in = np.asarray(steps_ds["inputs_v"][s][: readings[0].samples_v.shape[1]],
                          dtype=np.float64)
        full = [np.asarray(r.samples_v, dtype=np.float64).mean(axis=0) for r in readings]
        part = (
            full
            if samples is None
            else [np.asarray(r.samples_v[:samples], dtype=np.float64).mean(axis=0)
               for r in readings]
        )
        ref = ep_gradient(desc, v_in, [full[p] for p in ref_phases], ref_coeffs)
        new = ep_gradient(desc, v_in, [part[p] for p in new_phases], new_coeffs)
        agree_g += np.sign(new.g) == np.sign(ref.g)
        agree_b += np.sign(new.b) == np.sign(ref.b)
        for name, kind, ix in groups:
            a, b = (new.g[ix], ref.g[ix]) if kind == "g" else (new.b[ix], ref.b[ix])
            cos[name].append(_cosine(a, b))
            rel[name].append(_rel_diff(a, b))
    n = len(rng_range)
    layers = []
    for name, kind, ix in groups:
        frac = (agree_g[ix] if kind == "g" else agree_b[ix]) / n
        layers.append(
            {
                "layer": name,
                "n": int(frac.size),
                "median_cosine": float(np.median(cos[name])),
                "mean_cosine": float(np.mean(cos[name])),
                "median_rel_diff": float(np.median(rel[name])),
                "mean_rel_diff": float(np.mean(rel[name])),
                "sign_agreement": float(np.mean(frac)) if frac.size else float("nan"),
                "always_agree": float(np.mean(frac == 1.0)) if frac.size else float("nan"),
            }
        )
    recorded_samples = int(counts_all.min()) if counts_all.size else 0
    recorded_max = int(counts_all.max()) if counts_all.size else 0
    return {
        "run": str(sf.path),
        "mode": "reanalysis",
        "steps": n,
        "samples": samples,
        "recorded_samples": recorded_samples,
        "recorded_samples_max": recorded_max,
        "estimator": new_name,
        "recorded_estimator": cfg.estimator,
        "layers": layers,
    }


def _format_reanalysis(r: dict[str, Any]) -> str:
    lo, hi = r["recorded_samples"], r["recorded_samples_max"]
    recorded = str(lo) if lo == hi else f"{lo}-{hi}"
    head = (
        f"re-analysis of {r['run']}: {r['steps']} step(s); {r['estimator']} with "
        f"{recorded if r['samples'] is None else r['samples']} sample(s)/phase vs recorded "
        f"{r['recorded_estimator']} with "
        f"{recorded}"
    )
    lines = [
        head,
        f"{'layer':<12}{'size':>9}{'median cos':>12}{'median rel diff':>17}"
        f"{'sign agreement':>16}",
    ]
    for lay in r["layers"]:
        lines.append(
            f"{lay['layer']:<12}{lay['n']:>9}{lay['median_cosine']:>12.6f}"
            f"{lay['median_rel_diff']:>17.6f}{lay['sign_agreement']:>16.4f}"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command


def run_replay(args: argparse.Namespace) -> int:
    """Execute ``hwloop replay``."""
    analysis = args.samples is not None or args.estimator is not None
    if analysis and args.rtol is not None:
        raise ConfigError("--rtol applies to the replay, not to --samples/--estimator re-analysis")
    rtol = DEFAULT_RTOL if args.rtol is None else float(args.rtol)
    if not (np.isfinite(rtol) and rtol >= 0):
        raise ConfigError(f"--rtol {args.rtol} must be a number >= 0")
    path = Path(args.run)
    with open_session(path) as sf:
        if analysis:
            r = reanalyse(sf, samples=args.samples, estimator=args.estimator, steps=args.steps)
            print(json.dumps(r) if args.json else _format_reanalysis(r))
            return 0
        out = replay_session(sf, steps=args.steps, rtol=rtol, quiet=args.quiet)
    st = out.stats
    if args.json:
        div = out.divergence
        print(
            json.dumps(
                {
                    "run": str(path),
                    "mode": "replay",
                    "status": "identical" if out.identical else "diverged",
                    "first_step": out.first_step,
                    "steps": out.steps,
                    "steps_replayed": out.steps_replayed,
                    "rtol": out.rtol,
                    **st,
                    "divergence": None
                    if div is None
                    else {"step": div.step, "operation": div.operation, "message": str(div)},
                }
            )
        )
    elif out.identical:
        span = f"step {out.first_step}" if out.steps == 1 else (
            f"steps {out.first_step}..{out.first_step + out.steps - 1}"
        )
        if st["values_inexact"] == 0:
            how = "every input, nudge, read, update and programming call as recorded, bit for bit"
        else:
            share = 100.0 * (1 - st["values_inexact"] / max(st["values_checked"], 1))
            how = (
                f"inputs, nudges and reads as recorded; requested changes within "
                f"{st['max_rel_deviation']:.2g} of each layer's largest (tolerance {out.rtol:g}; "
                f"{share:.0f} % bit-identical)"
            )
        print(f"identical: {span} of {path} replayed; {how}")
    else:
        print(f"diverged: {out.divergence}")
    return 0 if out.identical else 1
