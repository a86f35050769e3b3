"""``hwloop train`` and ``hwloop evaluate``: the CLI of the training protocol.

Both are contributed to the ``hwloop`` dispatcher through the
``hwloop.commands`` entry-point group. Boards come from the
``hwloop.backends`` group, so the same commands drive any backend.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hwloop.config import read_toml
from hwloop.device import BoardDescription, Checkpointable
from hwloop.errors import ConfigError, HwloopError
from hwloop.plugins import open_board, parse_option_assignments
from hwloop.session import sigint_held
from hwloop.sessionlog import Checkpoint, SessionWriter, check_session_path, open_session, repair
from protocols.alignment import LayerAlignment
from protocols.config import ALIASES, TrainConfig, config_toml, make_config, merge_options, resolve
from protocols.datasets import Dataset, load_dataset
from protocols.engine import StepRecord
from protocols.plan import format_plan
from protocols.preflight import check_first_step, choose_nudge
from protocols.progress import StepProgress
from protocols.session import StopRequest, Terminated, deferred_interrupt, safe_session
from protocols.training import (
    CHECKPOINT_REQUIRED,
    EpochMetrics,
    Trainer,
    backend_options,
    encode_inputs,
    evaluate,
    one_hot,
    session_observer,
)


def _format_epoch(m: EpochMetrics, total: int) -> str:
    return (
        f"epoch {m.epoch:3d}/{total}: train loss {m.train_loss:.4f}  train acc "
        f"{100 * m.train_accuracy:5.2f} %  test acc {100 * m.test_accuracy:5.2f} %  "
        f"({m.time_s:.1f} s, {m.examples_per_s:,.0f} examples/s)"
    )


def _collect_config(args: argparse.Namespace) -> TrainConfig:
    values: dict[str, Any] = {}
    source = "command line"
    if args.config is not None:
        values.update(read_toml(args.config))
        source = str(args.config)
    keys = (*(f.name for f in dataclasses.fields(TrainConfig)), *ALIASES)  # parser dests
    cli = {k: getattr(args, k, None) for k in keys}
    cli = {k: list(v) if isinstance(v, list | tuple) else v for k, v in cli.items()}
    return make_config(merge_options(values, cli, args.backend_opt), source=source)


def _header(cfg: TrainConfig, data: Dataset, trainer: Trainer, source: str, verb: str) -> None:
    print(
        f"hwloop {verb}: {cfg.arch} on {data.name} ({len(trainer.x_train)} train / "
        f"{len(trainer.x_test)} test), {cfg.epochs} epochs, batch {cfg.batch_size}, "
        f"{cfg.estimator} EP, beta {cfg.beta:g}, input gain {cfg.input_gain:g} V, "
        f"{cfg.samples} sample(s)/phase; defaults: {source}",
        file=sys.stderr,
    )


def _alignment_text(entry: tuple[int, list[LayerAlignment]]) -> str:
    """``alignment (epoch E) L1 cos 0.951 size 0.35, L2 ...`` for the epoch line."""
    epoch, rows = entry
    parts = ", ".join(f"L{r.layer} cos {r.cosine:.3f} size {r.size_ratio:.3g}" for r in rows)
    return f"alignment (epoch {epoch}) {parts}"


class _Progress:
    """The command line's observer: a progress bar per epoch and one line per epoch."""

    def __init__(self, trainer: Trainer, quiet: bool) -> None:
        from tqdm import tqdm

        self.trainer = trainer
        self.bar = (
            None
            if quiet
            else tqdm(
                total=trainer.n_batches,
                unit="step",
                leave=False,
                disable=None,
                file=sys.stderr,
                mininterval=0.5,
            )
        )

    def step(self, rec: StepRecord) -> None:
        if self.bar is not None:
            self.bar.n = rec.batch + 1
            if rec.batch % 20 == 0:
                loss, acc = self.trainer.running_metrics()
                self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{100 * acc:.1f}%", refresh=False)
                self.bar.refresh()

    def epoch(self, metrics: EpochMetrics) -> None:
        if self.bar is not None:
            self.bar.clear()
            self.bar.reset()
        tr = self.trainer
        line = _format_epoch(metrics, tr.cfg.epochs or 0)
        if tr.asymmetry_log and tr.asymmetry_log[-1][0] == metrics.epoch:
            line += f"  asymmetry {tr.asymmetry_log[-1][1]:.4g} S^2"
        if tr.alignment_log and tr.alignment_log[-1][0] == metrics.epoch:
            if len(tr.alignment_log) == 2:  # the state before training, once
                line = _alignment_text(tr.alignment_log[0]) + "\n" + line
            line += "  " + _alignment_text(tr.alignment_log[-1])
        print(line, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _Reverify:
    """Progress of resume's re-run of the recorded steps after its checkpoint (stderr).

    An exact resume re-runs the steps between its checkpoint and the last recorded one
    and checks each against the file before it records new ones: a line when it starts,
    progress while it runs (:class:`protocols.progress.StepProgress`) and a line when
    every re-run step matched.
    """

    def __init__(self, trainer: Trainer, until: int, quiet: bool) -> None:
        self.trainer, self.until, self.quiet = trainer, until, quiet
        self.first = trainer.steps_done
        if not quiet:
            print(f"hwloop resume: re-running steps {self.first}..{until - 1} and verifying "
                  "them against the recording", file=sys.stderr)
        self.bar: StepProgress | None = StepProgress(
            "hwloop resume: re-verifying", until - self.first, quiet=quiet)

    def step(self, rec: StepRecord) -> None:
        if self.bar is None:
            return
        done = self.trainer.steps_done - self.first
        self.bar.update(done)
        if self.trainer.steps_done >= self.until:
            self.close()
            if not self.quiet:
                print(f"hwloop resume: re-verified {done} step(s): identical to the recording",
                      file=sys.stderr)

    def epoch(self, metrics: EpochMetrics) -> None:
        """Nothing at an epoch end."""

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _final_safe_state(trainer: Trainer, writer: SessionWriter) -> HwloopError | None:
    """Put the board in its safe state while its events still reach the open session file.

    Returns the error (its message on one line) when the safe state is not confirmed;
    the board's event sink is detached either way, so that :func:`safe_session`'s
    later safe state and close stay quiet and log nothing to a closed file.
    """
    device = trainer.device
    err: HwloopError | None = None
    try:
        with sigint_held():
            device.safe_state()
    except HwloopError as exc:
        err = HwloopError(" ".join(str(exc).split()))
        if not callable(getattr(device, "set_event_sink", None)):  # else the board logged it
            writer.event("safety", trainer.steps_done, f"final safe state: {err}")
    finally:
        sink = getattr(device, "set_event_sink", None)
        if callable(sink):
            sink(None)
    return err


BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                         "BLIS_NUM_THREADS")
"""Environment variables that set the BLAS thread count; any of them set: left alone."""


@contextlib.contextmanager
def training_blas_threads() -> Iterator[None]:
    """One BLAS thread while a run trains, unless the environment sets a thread count.

    An EP step is a chain of small products (batch 4-32 rows): a second BLAS thread
    buys little on an idle machine and, on a shared one, costs up to 7x (threads
    that wait for a core at every product). See DR-58.
    """
    if any(os.environ.get(v) for v in BLAS_THREAD_VARIABLES):
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _drive(
    trainer: Trainer,
    writer: SessionWriter,
    args: argparse.Namespace,
    *,
    resume_from: Checkpoint | None = None,
    verify_until: int = 0,
) -> int:
    """Run the trainer with its observers (session file, progress); record the exit status."""
    progress = _Progress(trainer, args.quiet)
    trainer.observers += [session_observer(trainer, writer, verify_until), progress]
    reverify = None
    if verify_until > trainer.steps_done:
        reverify = _Reverify(trainer, verify_until, args.quiet)
        trainer.observers.append(reverify)
    t0 = time.perf_counter()
    status, reason = "failed", "unexpected error"
    try:
        with training_blas_threads():
            result = trainer.run(resume_from=resume_from)
        status, reason = result.status, result.reason
    except KeyboardInterrupt as exc:
        status = "aborted"
        reason = str(exc) if isinstance(exc, Terminated) else "aborted by a second Ctrl-C"
        raise
    except Exception as exc:
        status, reason = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        progress.close()
        if reverify is not None:
            reverify.close()
        unsafe = _final_safe_state(trainer, writer)  # logged while the file is open
        if unsafe is not None and status in ("completed", "stopped"):
            status, reason = "failed", str(unsafe)
        with sigint_held():  # a Ctrl-C now must not cut the final status out of the file
            writer.close(status, reason)
    if unsafe is not None:  # the run itself ended well: this is the error to report
        raise unsafe
    wall = time.perf_counter() - t0
    summary = {
        "status": status,
        "epochs": trainer.epochs_done,
        "steps": trainer.steps_done,
        "final_test_accuracy": result.final_test_accuracy,
        "final_train_accuracy": result.epochs[-1].train_accuracy if result.epochs else None,
        "wall_time_s": wall,
        "out": str(writer.path),
    }
    if trainer.alignment_log:
        summary["alignment"] = [
            {"epoch": ep, "layer": r.layer, "cosine": r.cosine, "size_ratio": r.size_ratio}
            for ep, rows in trainer.alignment_log
            for r in rows
        ]
    if args.json:
        print(json.dumps(summary))
    else:
        acc = result.final_test_accuracy
        what = (f"test accuracy {100 * acc:.2f} %" if np.isfinite(acc)
                else "no test accuracy yet (no epoch ended)")
        print(
            f"{status}: {what} after {trainer.epochs_done} epoch(s) "
            f"({trainer.steps_done} steps) in {wall:.1f} s; session saved to {writer.path}"
        )
        if trainer.alignment_log:
            print(f"error alignment, first to last: {_alignment_text(trainer.alignment_log[0])}; "
                  f"{_alignment_text(trainer.alignment_log[-1])}")
    return 0 if status in ("completed", "stopped") else 1


def run_train(args: argparse.Namespace) -> int:
    """Execute ``hwloop train``."""
    cfg, source = resolve(_collect_config(args))
    nudge_given = args.nudge is not None or (
        args.config is not None and "nudge" in read_toml(args.config))
    out = Path(args.out)
    replace = args.overwrite or _failed_before_step_1(out)
    if not args.dry_run:  # fail before loading data or opening the board
        check_session_path(out, overwrite=replace)
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, test_fraction=cfg.test_fraction)
    rng = np.random.default_rng(cfg.seed)
    options = backend_options(cfg)
    device = open_board(cfg.backend, options, rng)
    stop = StopRequest()
    with safe_session(device), deferred_interrupt(stop):
        cfg, note = choose_nudge(cfg, device, given=nudge_given)
        source = f"{source}; {note}" if note else source
        check_first_step(cfg, device)  # what step 0 would refuse, before anything is applied
        trainer = Trainer(cfg, device, data, rng, stop=stop)
        if cfg.beta_choice == "auto":
            trainer.preflight()  # the largest radius fits the limits before it is applied
            note = _choose_beta(trainer)
            cfg = trainer.cfg
            source = f"{source}; {note}"
        trainer.preflight()  # limits are checked before the run file or the board is touched
        if args.dry_run:
            print(format_plan(trainer.plan))
            print("dry run: the plan fits the board's limits; nothing was applied")
            return 0
        writer = SessionWriter.create(
            out,
            desc=device.describe(),
            layout=trainer.layout(),
            first_checkpoint=trainer.checkpoint(0, 0, np.arange(len(trainer.x_train))),
            config_toml=config_toml(cfg),
            seed=cfg.seed,
            backend_options=options,
            defaults_source=source,
            options=trainer.log_options(),
            overwrite=replace,
        )
        sink = getattr(device, "set_event_sink", None)
        if callable(sink):  # instrument retries, warnings and safety actions go to the log
            sink(lambda kind, msg: writer.event(kind, trainer.steps_done, msg))
        _header(cfg, data, trainer, source, "train")
        return _drive(trainer, writer, args)


def _choose_beta(trainer: Trainer) -> str:
    """Measure the first batch and set the trainer's radius (``beta_choice = auto``); a note.

    The bias/variance optimum (:func:`protocols.holomorphic.choose_training_beta`) of the
    run's estimator, at most the configured ``beta``; the stencil is the estimator's own
    with its bias order and variance factor (random-sign: one-sided's).
    """
    from protocols.holomorphic import choose_training_beta, make_stencil

    cfg, desc = trainer.cfg, trainer.desc
    assert cfg.beta is not None and cfg.batch_size is not None and cfg.input_gain is not None
    g0 = float(desc.g_scale_s)
    name, n_points = cfg.estimator, 4
    if name.startswith("cauchy-"):
        name, n_points = "cauchy", int(cfg.estimator.removeprefix("cauchy-"))
    elif name == "random-sign":
        name = "one-sided"
    stencil = make_stencil(name, cfg.beta * g0, n_points)
    b = min(cfg.batch_size, len(trainer.x_train))
    v_in = encode_inputs(trainer.x_train[:b], cfg.input_gain, trainer.n_in)
    y = one_hot(trainer.y_train[:b], trainer.n_out)
    r_s, sigma, bias = choose_training_beta(
        trainer.device, stencil, v_in, y, cfg.samples, nudge_kind=cfg.nudge)
    if not r_s > 0:
        raise ConfigError(
            "--beta-choice auto: the board reads without noise, so the bias/variance "
            "optimum is beta -> 0; give --beta and --beta-choice fixed")
    trainer.set_beta(r_s / g0)
    return (f"beta {r_s / g0:.4g} chosen by the bias/variance helper (read noise "
            f"{sigma:.3g} V, bias {bias:.3g} V/S at beta {cfg.beta:g}, the cap)")


def _failed_before_step_1(path: Path) -> bool:
    """True when ``path`` is a session that ended (failed or aborted) with no step recorded.

    Such a file keeps what went wrong (its events, for a hardware fault) and is replaced
    by the next ``hwloop train`` without ``--overwrite``.
    """
    if not path.is_file():
        return False
    try:
        with open_session(path) as sf:
            return sf.steps_done == 0 and sf.status in ("failed", "aborted")
    except Exception:  # not a session file: check_session_path says what it is
        return False


def _same_board(recorded: BoardDescription, live: BoardDescription) -> str:
    """'' when the live board is the recorded one, else what differs."""
    a, b = recorded.summary(), live.summary()
    for key in sorted(set(a) | set(b)):
        if json.dumps(a.get(key), default=str) != json.dumps(b.get(key), default=str):
            return f"{key}: recorded {a.get(key)!r}, board {b.get(key)!r}"
    if not np.array_equal(recorded.edge_nodes, live.edge_nodes):
        return "the edge list differs"
    return ""


def run_resume(args: argparse.Namespace) -> int:
    """Execute ``hwloop resume``: continue a stopped or crashed run in the same file."""
    path = Path(args.run)
    with open_session(path) as sf:  # refuses non-session, newer-schema, damaged files
        if sf.status == "completed" and args.epochs is None:
            raise ConfigError(
                f"{path} is complete ({sf.steps_done} steps); nothing to resume "
                "(add --epochs N to train it further)"
            )
    repaired = repair(path)  # a crashed file is rewritten clean first (no-op otherwise)
    with open_session(path) as sf:
        config_toml = str(sf.attrs["config_toml"])
        backend_opts = json.loads(str(sf.attrs["backend_options_json"]))
        recorded = sf.description
        ckpt = sf.checkpoint(-1)
        steps_done = sf.steps_done
        prior = str(sf.attrs.get("status", ""))
        epochs_recorded = len(sf.epochs())
    missing = [k for k in CHECKPOINT_REQUIRED if k not in ckpt.arrays]
    if missing:
        raise ConfigError(
            f"{path}: its last checkpoint lacks {', '.join(missing)}; the file was edited or "
            "is damaged, so the run cannot be continued"
        )
    values = tomllib.loads(config_toml)
    if args.epochs is not None:
        if args.epochs < epochs_recorded:
            raise ConfigError(
                f"--epochs {args.epochs} is below the {epochs_recorded} epoch(s) already done"
            )
        values["epochs"] = args.epochs
    cfg, source = resolve(make_config(values, source=f"{path} configuration", stored=True))
    backend_opts.update(parse_option_assignments(cfg.backend, args.backend_opt))
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, test_fraction=cfg.test_fraction)
    rng = np.random.default_rng(cfg.seed)
    device = open_board(cfg.backend, backend_opts, rng)
    stop = StopRequest()
    with safe_session(device), deferred_interrupt(stop):
        diff = _same_board(recorded, device.describe())
        if diff:
            raise ConfigError(
                f"the board is not the one {path} was recorded on ({diff}); resume on the "
                "same board with the same backend options"
            )
        trainer = Trainer(cfg, device, data, rng, stop=stop)
        trainer.preflight()
        delta = trainer.restore(ckpt)
        exact = isinstance(device, Checkpointable)
        writer = SessionWriter.reopen(path)
        if exact:
            verify_until = steps_done
            note = (
                f"resumed from the checkpoint after step {ckpt.steps_done} (status was "
                f"{prior}; {repaired} steps recorded); re-running and verifying "
                f"{steps_done - ckpt.steps_done} step(s); board state restored exactly"
            )
        else:
            verify_until = 0
            trainer.steps_done = writer.steps_done
            note = (
                f"resumed from the checkpoint after step {ckpt.steps_done} (status was "
                f"{prior}); the board's conductances differ from the checkpoint by at most "
                f"{delta['max_abs_dg_s']:.3g} S (rms {delta['rms_dg_s']:.3g} S); "
                "continuing from the board's state"
            )
            if steps_done > ckpt.steps_done:
                note += (
                    f"; {steps_done - ckpt.steps_done} step(s) after the checkpoint were "
                    "applied to the board and their examples are trained again"
                )
        try:
            writer.event("resume", steps_done, note[:240])
            print(f"hwloop resume: {note}", file=sys.stderr)
            _header(cfg, data, trainer, source, "resume")
        except BaseException as exc:
            writer.close("failed", f"{type(exc).__name__}: {exc}")
            raise
        return _drive(trainer, writer, args, resume_from=ckpt, verify_until=verify_until)


def _evaluation_data(
    name_or_path: str, data_dir: str | None, test_fraction: float
) -> tuple[Dataset, str]:
    # the run's test_fraction: another split of the bundled subset would mix in training images
    data = load_dataset(name_or_path, data_dir=data_dir, test_fraction=test_fraction)
    return data, "test"


READ_MARGIN = 0.05
"""How far outside the board's range a stored conductance may lie and still be taken as a
reading of a device at its bound, as a fraction of the range width (or of the largest
stored value when ``g_max_s`` is infinite): a real board's checkpoint holds conductance
*reads*, which carry read noise (DR-59)."""


def _programmable_targets(g_run: Any, desc: BoardDescription, run: str) -> Any:
    """The stored conductances as programming targets within the board's range, S.

    Values outside ``[g_min_s, g_max_s]`` by at most :data:`READ_MARGIN` are read noise of
    a device at its bound: they are moved to the bound with one warning. Values further
    out, or not finite, mean a damaged file or another device model: rejected.
    """
    g = np.asarray(g_run, dtype=np.float64)
    lo, hi = desc.g_min_s, desc.g_max_s
    if not np.all(np.isfinite(g)):
        raise ConfigError(f"{run}: stored conductances are not finite; the run file is damaged")
    width = (hi - lo) if np.isfinite(hi) else float(np.max(np.abs(g), initial=0.0))
    below = lo - float(g.min(initial=lo))
    above = float(g.max(initial=0.0)) - hi if np.isfinite(hi) else 0.0
    excess = max(below, above, 0.0)
    if excess > READ_MARGIN * width:
        raise ConfigError(
            f"{run}: stored conductances lie up to {excess:.3g} S outside the board's range "
            f"[{lo:g}, {hi:g}] S; the run file is damaged or was written for another device "
            "model"
        )
    if excess > 0:
        n = int(np.count_nonzero((g < lo) | (g > hi)))
        print(
            f"hwloop evaluate: warning: {n} stored conductance(s) lie up to {excess:.3g} S "
            f"outside the board's range [{lo:g}, {hi:g}] S (read noise of the recorded "
            "conductance reads); they are programmed to the nearest bound",
            file=sys.stderr,
        )
        g = np.clip(g, lo, hi)
    return g


def run_evaluate(args: argparse.Namespace) -> int:
    """Execute ``hwloop evaluate``."""
    with open_session(args.run) as sf:
        ckpt = sf.checkpoint(-1)  # the latest full state
        config_toml = str(sf.attrs["config_toml"])
        recorded_options = json.loads(str(sf.attrs["backend_options_json"]))
    g_run, b_run = ckpt.arrays["conductances_s"], ckpt.arrays["biases_a"]
    cfg, _ = resolve(make_config(tomllib.loads(config_toml), source=f"{args.run} configuration",
                                 stored=True))
    data, split = _evaluation_data(args.dataset, args.data_dir, cfg.test_fraction)
    x = data.pixels("test")
    y = data.y_test.astype(np.int64)
    if len(x) == 0:
        raise ConfigError(f"dataset {args.dataset} has no test examples")
    name = args.backend or cfg.backend
    # the run's board with its recorded options; another backend gets the run's arch
    options: dict[str, Any] = (
        dict(recorded_options) if name == cfg.backend
        else backend_options(dataclasses.replace(cfg, backend=name, backend_options={}))
    )
    if args.read_noise is not None:
        if not (np.isfinite(args.read_noise) and args.read_noise >= 0):
            raise ConfigError(f"--read-noise {args.read_noise} must be a number >= 0 V")
        options[ALIASES["read_noise"]] = args.read_noise
    options.update(parse_option_assignments(name, args.backend_opt))
    if args.samples < 1:
        raise ConfigError(f"--samples {args.samples} must be >= 1")
    rng = np.random.default_rng(args.seed)
    device = open_board(name, options, rng)
    with safe_session(device):
        desc = device.describe()
        if desc.n_edges != len(g_run) or len(desc.bias_nodes) != len(b_run):
            raise ConfigError(f"{args.run}: stored parameters do not match architecture {cfg.arch}")
        g = _programmable_targets(g_run, desc, args.run)
        device.program_deltas(None, g - device.read_conductances())
        device.set_bias_currents(b_run)
        assert cfg.input_gain is not None
        acc, loss = evaluate(device, x, y, cfg.input_gain, batch_size=500, n_samples=args.samples)
    result = {
        "accuracy": acc,
        "n": len(x),
        "loss": loss,
        "dataset": data.name,
        "split": split,
        "read_noise_v": args.read_noise or 0.0,
        "backend": name,
        "backend_options": options,
        "samples": args.samples,
        "run": str(args.run),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"accuracy {100 * acc:.2f} % on {len(x)} examples of {data.name} ({split}); "
            f"mean cost {loss:.4f} V^2"
        )
    return 0
