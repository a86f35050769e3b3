"""EP training runs and evaluation on any backend.

:class:`Trainer` runs epochs of mini-batches; each mini-batch is one
:meth:`Trainer.step`: the run's step plan (:mod:`protocols.plan`, built once)
executed by :func:`protocols.engine.run_step`, returning one
:class:`~protocols.engine.StepRecord` with everything the step measured and did.
What is done with the record belongs to the trainer's observers
(:class:`StepObserver`): the session file (:class:`SessionRecorder`), resume
verification (:class:`ResumeVerifier`), the command line's progress bar, monitors.
Pixels become input voltages ``[+G x, -G x]``; targets are one-hot voltages
(1 V for the label, 0 V elsewhere); the cost is ``1/2 sum (v_o - y_o)^2``.

Accuracy is what the board measures: the argmax of the output voltages read in
the free phase (with the configured repeat samples).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from hwloop.device import (
    BoardDescription,
    Checkpointable,
    CurrentNudge,
    Device,
    ResistiveNudge,
)
from hwloop.errors import ConfigError
from hwloop.plugins import backend_options_declared
from hwloop.sessionlog import Checkpoint, LogOptions, SessionWriter, StepLayout, StepLog
from protocols.alignment import LayerAlignment, format_alignment, measure_alignment
from protocols.config import TrainConfig
from protocols.datasets import Dataset
from protocols.engine import Prepared, ReportsConvergence, StepRecord, free_phase, run_step
from protocols.estimators import Estimator, make_estimator
from protocols.homeostasis import (
    JacobianProbe,
    NodeClamp,
    asymmetry,
    check_supported,
    homeostatic_gradient,
    probe_jacobian,
    symmetry_ratio,
)
from protocols.optim import SGD, Update
from protocols.plan import ApplyNudge, Measure, Step, build_step_plan, dry_run
from protocols.programming import OpenLoopProgrammer, ProgramReport, WriteVerifyProgrammer
from protocols.session import StopRequest
from protocols.updates import Gradient, board_couplings, output_cost

Array = NDArray[np.floating]


def encode_inputs(x: Array, input_gain_v: float, n_inputs: int) -> Array:
    """Pixels ``(batch, P)`` in [0, 1] -> input voltages, V.

    ``n_inputs == 2P``: the DRN's ``[+G x, -G x]`` pairs; ``n_inputs == P``: ``G x``.
    """
    p = x.shape[1]
    if n_inputs == 2 * p:
        return np.concatenate([input_gain_v * x, -input_gain_v * x], axis=1)
    if n_inputs == p:
        return input_gain_v * x
    raise ConfigError(
        f"the board has {n_inputs} inputs but the images have {p} pixels; "
        f"use an architecture whose input layer is {2 * p} (+/- pairs) or {p}"
    )


def one_hot(labels: NDArray[np.integer], n_outputs: int) -> Array:
    """``(batch, n_outputs)`` target voltages: 1 V for the label, 0 V elsewhere."""
    if labels.size and int(labels.max()) >= n_outputs:
        raise ConfigError(
            f"label {int(labels.max())} needs at least {int(labels.max()) + 1} outputs"
        )
    return np.asarray(np.eye(n_outputs)[labels], dtype=np.float64)


def backend_options(cfg: TrainConfig) -> dict[str, Any]:
    """The option table the run opens its board with.

    ``cfg.backend_options`` plus the run-level options a backend may declare: ``arch``
    (the run's architecture; also given to a backend that declares no options) and
    ``dtype`` (the run's precision), each only when the table does not set it.
    """
    opts = dict(cfg.backend_options)
    declared = backend_options_declared(cfg.backend)
    names = None if declared is None else {o.name for o in declared}
    if "arch" not in opts and (names is None or "arch" in names):
        opts["arch"] = cfg.arch
    if names is not None and "dtype" in names and "dtype" not in opts:
        opts["dtype"] = cfg.dtype
    return opts


CHECKPOINT_REQUIRED = (
    "conductances_s",
    "trainer/accum",
    "optimiser/lr_w",
    "optimiser/lr_b",
    "optimiser/epochs_decayed",
    "optimiser/has_buffers",
    "optimiser/buf_g",
    "optimiser/buf_b",
)
"""Checkpoint arrays :meth:`Trainer.restore` needs."""


@dataclass
class _Homeostasis:
    """Adds ``lam * dL_homeo/dg`` (Jacobian at this step's free point) to each gradient.

    With ``probes > 0`` (or a board without :class:`JacobianProbe`) the Jacobian is
    estimated from clamped-node probes around the free state, read with ``samples``
    samples per node, with probe directions from the run's generator ``rng``.
    """

    device: Device
    desc: BoardDescription
    lam: float
    probes: int = 0
    samples: int = 1
    rng: np.random.Generator | None = None

    def jacobian(self) -> Array:
        if self.probes == 0 and isinstance(self.device, JacobianProbe):
            return self.device.jacobian()
        assert isinstance(self.device, NodeClamp) and self.rng is not None
        self.device.apply_nudge(None)
        self.device.settle()
        reading = self.device.read_nodes(self.samples, self.desc.free_nodes)
        u0 = np.asarray(np.real(reading.mean_v), dtype=np.float64)
        return probe_jacobian(self.device, u0, self.rng, n_probes=self.probes or None)

    def add_to(self, gradient: Gradient) -> Gradient:
        h = homeostatic_gradient(self.desc, self.jacobian())
        g = gradient.g + (self.lam * h).astype(gradient.g.dtype)
        return Gradient(g=g, b=gradient.b)


@dataclass
class _Learner:
    optimiser: SGD
    programmer: OpenLoopProgrammer | WriteVerifyProgrammer
    rng: np.random.Generator
    homeostasis: _Homeostasis | None = None

    def update(self, gradient: Gradient) -> Update:
        if self.homeostasis is not None:
            gradient = self.homeostasis.add_to(gradient)
        return self.optimiser.step(gradient)

    def program(self, device: Device, update: Update) -> ProgramReport:
        return self.programmer.program(device, update, self.rng)


def evaluate(
    device: Device,
    x: Array,
    labels: NDArray[np.integer],
    input_gain_v: float,
    *,
    batch_size: int = 500,
    n_samples: int = 1,
) -> tuple[float, float]:
    """Accuracy (fraction) and mean cost of the board's free-phase outputs on ``x``."""
    desc = device.describe()
    outs = desc.output_nodes
    correct = 0
    cost = 0.0
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size]
        yb = labels[start : start + batch_size]
        v_in = encode_inputs(xb, input_gain_v, len(desc.input_nodes))
        v = free_phase(device, v_in, n_samples, nodes=outs).mean_v.real
        correct += int(np.sum(np.argmax(v, axis=1) == yb))
        cost += float(output_cost(v, one_hot(yb, len(outs))).sum())
    n = max(len(x), 1)
    return correct / n, cost / n


@dataclass
class EpochMetrics:
    """Metrics of one epoch."""

    epoch: int
    train_loss: float
    train_accuracy: float
    test_accuracy: float
    test_loss: float
    time_s: float
    examples_per_s: float
    pulses: int
    bound_hits: int
    """(edge, step) pairs whose requested change was cut at a device bound (on the ideal
    emulator: conductances at 0 S pushed further down, as g <- max(g, 0) does)."""

    def as_dict(self) -> dict[str, float]:
        """The metrics as floats, for the run file."""
        return {k: float(v) for k, v in self.__dict__.items()}


@dataclass
class TrainResult:
    """Outcome of a training run."""

    status: str
    reason: str
    epochs: list[EpochMetrics] = field(default_factory=list)

    @property
    def final_test_accuracy(self) -> float:
        """Test accuracy after the last finished epoch (NaN if none)."""
        return self.epochs[-1].test_accuracy if self.epochs else float("nan")


class Trainer:
    """Runs EP training of ``device`` on ``data`` as configured.

    Args:
        cfg: the resolved configuration (see :func:`protocols.config.resolve`).
        device: any Device (the caller owns it and its safe state).
        data: the dataset.
        rng: the run's generator (shuffling, random-sign nudges, stochastic rounding).
        stop: set by the first Ctrl-C; checked after every step.
        observers: told of every finished step and epoch, in order (see
            :class:`StepObserver`); more can be appended to :attr:`observers`.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        device: Device,
        data: Dataset,
        rng: np.random.Generator,
        *,
        stop: StopRequest | None = None,
        observers: Iterable[StepObserver] = (),
    ) -> None:
        if cfg.input_gain is None or cfg.beta is None or cfg.batch_size is None:
            raise ConfigError("the training configuration must be resolved before training")
        self.cfg = cfg
        self.device = device
        self.desc = device.describe()
        self.rng = rng
        self.stop = stop or StopRequest()
        self.observers: list[StepObserver] = list(observers)
        self.pending_warnings: list[str] = []
        """One-line warnings raised during the current step, for the session observer."""
        self.estimator: Estimator = make_estimator(cfg.estimator)
        self.dtype = np.dtype(cfg.dtype)
        # hyper-parameters are in the published simulation units; map them onto the board
        # (docs/physics.md §7.1: beta scales with the conductance scale, learning rates
        # with its square)
        g0 = float(self.desc.g_scale_s)
        self.beta_s = float(cfg.beta) * g0
        self.optimiser = SGD(
            self.desc,
            tuple(lr * g0**2 for lr in (cfg.lr_weights or (0.006,))),
            tuple(lr * g0**2 for lr in (cfg.lr_biases or (0.006,))),
            momentum=cfg.momentum or 0.0,
            gamma=cfg.lr_decay,
            dtype=self.dtype,
        )
        programmer: OpenLoopProgrammer | WriteVerifyProgrammer
        if cfg.programming == "open-loop":
            programmer = OpenLoopProgrammer()
        else:
            programmer = WriteVerifyProgrammer(
                tolerance_s=cfg.wv_tolerance,
                max_iterations=cfg.wv_max_iterations,
                warn=self._warn,
                refresh_every=cfg.wv_refresh_every,
            )
        self.learner = _Learner(self.optimiser, programmer, rng)
        if cfg.homeostasis > 0:
            check_supported(self.desc, device, probes=cfg.homeostasis_probes > 0)
            if cfg.homeostasis_probes > len(self.desc.free_nodes):
                raise ConfigError(
                    f"homeostasis_probes = {cfg.homeostasis_probes} exceeds the board's "
                    f"{len(self.desc.free_nodes)} free nodes; give at most that many"
                )
            # lambda is in the published units too: dL_homeo/dg scales like g, the task
            # gradient like 1/g, so lambda scales with 1/g0^2 (1 on the emulator)
            self.learner.homeostasis = _Homeostasis(
                device, self.desc, cfg.homeostasis / g0**2, cfg.homeostasis_probes,
                cfg.samples, rng,
            )
        if cfg.alignment > 0 and not isinstance(device, JacobianProbe):
            raise ConfigError(
                f"alignment needs a board that reports its Jacobian (an emulator); the "
                f"{self.desc.backend!r} board does not: drop --alignment"
            )
        self.alignment_log: list[tuple[int, list[LayerAlignment]]] = []
        """(epoch, per-hidden-layer alignment) before training (epoch 0) and at each epoch
        end, when ``cfg.alignment > 0``."""
        self.asymmetry_log: list[tuple[int, float, float]] = []
        """(epoch, L_homeo in S^2, symmetry ratio) measured at each epoch end on a board
        that reports its Jacobian."""
        x_tr, y_tr = data.pixels("train"), data.y_train.astype(np.int64)
        if cfg.train_limit is not None:
            keep = rng.permutation(len(x_tr))[: cfg.train_limit]
            x_tr, y_tr = x_tr[keep], y_tr[keep]
        x_te, y_te = data.pixels("test"), data.y_test.astype(np.int64)
        if cfg.test_limit is not None:
            x_te, y_te = x_te[: cfg.test_limit], y_te[: cfg.test_limit]
        if len(x_tr) == 0:
            raise ConfigError(f"dataset {data.name} has no training examples")
        if cfg.batch_size > len(x_tr):
            raise ConfigError(
                f"batch_size = {cfg.batch_size} exceeds the {len(x_tr)} training examples; "
                f"give at most {len(x_tr)}"
            )
        self.x_train, self.y_train = x_tr, y_tr
        self.x_test, self.y_test = x_te, y_te
        self.n_in = len(self.desc.input_nodes)
        self.n_out = len(self.desc.output_nodes)
        self.out_pos = np.searchsorted(self.desc.free_nodes, self.desc.output_nodes)
        self.steps_done = 0
        self.epochs_done = 0
        self.n_batches = -(-len(self.x_train) // cfg.batch_size)
        """Steps per epoch."""
        self.order: NDArray[np.integer] = np.arange(len(self.x_train))
        """Example order of the epoch under way (indices into the training set)."""
        self._accum: list[float] = [0.0] * 6
        """Running sums of the epoch under way: loss, correct, seen, pulses, bound hits, time."""
        self.plan: tuple[Step, ...] = self._build_plan()
        """The step plan of the run, at ``+beta`` (a random sign is data of each step)."""
        self._prepared = Prepared.of(device)
        self._watch_complex = isinstance(device, ReportsConvergence) and any(
            isinstance(s, ApplyNudge) and isinstance(s.beta_s, complex) for s in self.plan)
        """Check that the complex-nudge settles converge (warned once if not)."""

    def _build_plan(self) -> tuple[Step, ...]:
        cfg = self.cfg
        return build_step_plan(
            self.estimator.stencil(self.beta_s),
            nudge_kind=cfg.nudge,
            n_samples=cfg.samples,
            sem_target_v=cfg.sem_target,
            max_samples=cfg.max_samples,
        )

    def set_beta(self, beta: float) -> None:
        """Use the nudge strength ``beta`` (published units, > 0) from now on (config and plan).

        For a radius chosen after the trainer was built (``beta_choice = "auto"``):
        the training set and generator are left as they are.
        """
        self.cfg = dataclasses.replace(self.cfg, beta=float(beta))
        self.beta_s = float(beta) * float(self.desc.g_scale_s)
        self.plan = self._build_plan()

    def preflight(self) -> None:
        """Dry-run the step plan against the board's limits (nothing applied)."""
        cfg = self.cfg
        assert cfg.input_gain is not None and cfg.batch_size is not None
        xb = self.x_train[: cfg.batch_size]
        v = encode_inputs(np.ones_like(xb), cfg.input_gain, self.n_in)  # worst-case pixels
        y = one_hot(self.y_train[: cfg.batch_size], self.n_out)
        signs = (-1.0, 1.0) if self.estimator.random_sign else (1.0,)
        dry_run(self.plan, self.desc, v, y, signs=signs)

    def running_metrics(self) -> tuple[float, float]:
        """Mean loss (V^2) and accuracy of the epoch under way so far (NaN before a step)."""
        loss_sum, correct, seen = self._accum[:3]
        return (loss_sum / seen, correct / seen) if seen else (float("nan"), float("nan"))

    def step(
        self,
        x: Array,
        labels: NDArray[np.integer],
        *,
        examples: NDArray[np.integer] | None = None,
        epoch: int = 0,
        batch: int = 0,
        sign: float | None = None,
    ) -> StepRecord:
        """Run one EP step on a batch; return its record.

        Args:
            x: ``(b, P)`` pixels in [0, 1].
            labels: ``(b,)`` class labels.
            examples: training-set indices of the batch (recorded as given).
            epoch: epoch of the step, from 0 (recorded as given).
            batch: mini-batch number within the epoch, from 0 (recorded as given).
            sign: the nudge sign of this step; ``None`` lets a random-sign
                estimator draw it from the run's generator (+1 otherwise).

        Returns:
            The record (see :class:`protocols.engine.StepRecord`): readings, nudges,
            gradient, update, programming report, pulse and bound-hit counts, free-phase
            cost and correct count, timing. :attr:`steps_done` and the observers are
            not touched (that is :meth:`run`'s part).
        """
        assert self.cfg.input_gain is not None
        t_start = time.time()
        t0 = time.perf_counter()
        v_in = encode_inputs(x, self.cfg.input_gain, self.n_in)
        y = one_hot(labels, self.n_out)
        s = self.estimator.draw_sign(self.rng) if sign is None else sign
        rec = run_step(
            self.plan, self.device, v_in, y, self.learner, sign=s, dtype=self.dtype,
            prepared=self._prepared, track_convergence=self._watch_complex,
        )
        if self._watch_complex and not all(
                ok for p, ok in rec.converged.items() if isinstance(rec.betas_s.get(p), complex)):
            self._watch_complex = False  # warned once
            self._warn(
                f"step {self.steps_done}: a complex-nudge settle did not converge (|beta| "
                "beyond the response's analyticity radius?); its reading enters the update "
                "as read; use a smaller --beta or --beta-choice auto")
        v_out = rec.mean_v(0)[:, self.out_pos].real
        rec.cost_sum_v2 = float(output_cost(v_out, y).sum())
        rec.n_correct = int(np.sum(np.argmax(v_out, axis=1) == labels))
        rec.examples = np.arange(len(labels)) if examples is None else examples
        rec.epoch, rec.batch, rec.step = epoch, batch, self.steps_done
        rec.t_start_unix_s = t_start
        rec.duration_s = time.perf_counter() - t0
        return rec

    # ------------------------------------------------------------------ session-file support

    def layout(self) -> StepLayout:
        """Fixed per-step shapes of this run's session file."""
        cfg = self.cfg
        assert cfg.batch_size is not None
        phases = sum(isinstance(st, Measure) for st in self.plan)
        return StepLayout(
            batch=min(cfg.batch_size, len(self.x_train)),
            phases=phases,
            max_samples=cfg.max_samples or cfg.samples,
            n_inputs=self.n_in,
            n_outputs=self.n_out,
            nudge_kind=cfg.nudge,
            sample_dtype=self.desc.sample_dtype,  # the board's own sample type
            complex_samples=any(isinstance(s, ApplyNudge) and isinstance(s.beta_s, complex)
                                for s in self.plan),  # Cauchy: imaginary parts kept too
        )

    def log_options(self) -> LogOptions:
        """What the session file keeps, with the ``auto`` settings resolved for this board."""
        cfg = self.cfg
        n = self.desc.n_edges
        # auto (DR-13, DR-14): a board that cannot restore its state exactly (a real
        # board) is checkpointed at every step when that is cheap (<= 4,096 edges), else
        # every 100 steps; an exactly restorable one (the emulator) every 1,000 steps
        # (resume re-runs and verifies the rest). Updates and programming rows are logged
        # up to 4,096 edges; for larger networks they follow from the raw samples and
        # checkpoints (hwloop replay recomputes them) and would multiply the bytes.
        exact = isinstance(self.device, Checkpointable)
        small = n <= 4_096
        every = cfg.checkpoint_every or (1000 if exact else (1 if small else 100))
        updates = cfg.log_updates == "all" or (cfg.log_updates == "auto" and small)
        prog = cfg.log_programming
        if prog == "auto":
            prog = "all" if small else "off"
        return LogOptions(
            samples=cfg.log_samples,
            updates=updates,
            programming=prog,
            checkpoint_every=every,
            compress_samples=cfg.sem_target is not None,  # the sample axis is mostly padding
            commit_steps=cfg.commit_every or (0 if exact else 1),  # DR-38
        )

    def checkpoint(self, epoch: int, batch: int, order: NDArray[np.integer]) -> Checkpoint:
        """The full state now; the next step is ``batch`` of ``epoch`` (see Checkpoint)."""
        arrays: dict[str, NDArray[Any]] = {
            "conductances_s": np.asarray(self.device.read_conductances(), dtype=np.float64),
            "biases_a": np.asarray(self.device.read_bias_currents(), dtype=np.float64),
            "trainer/accum": np.asarray(self._accum, dtype=np.float64),
        }
        st = self.optimiser.state()
        n_e, n_b = self.desc.n_edges, len(self.desc.bias_nodes)
        arrays["optimiser/lr_w"] = np.asarray(st["lr_w"], dtype=np.float64)
        arrays["optimiser/lr_b"] = np.asarray(st["lr_b"], dtype=np.float64)
        arrays["optimiser/epochs_decayed"] = np.array([st["epochs_decayed"]], dtype=np.int64)
        bg, bb = st["buf_g"], st["buf_b"]
        arrays["optimiser/has_buffers"] = np.array([bg is not None])
        arrays["optimiser/buf_g"] = (
            np.zeros(n_e, self.dtype) if bg is None else np.asarray(bg, dtype=self.dtype)
        )
        arrays["optimiser/buf_b"] = (
            np.zeros(n_b, self.dtype) if bb is None else np.asarray(bb, dtype=self.dtype)
        )
        for k, v in self.learner.programmer.state(n_e).items():
            arrays[f"programmer/{k}"] = v
        if isinstance(self.device, Checkpointable):
            assert self.cfg.batch_size is not None
            arrays.update(self.device.checkpoint_state(self.cfg.batch_size))
        return Checkpoint(
            steps_done=self.steps_done,
            epoch=epoch,
            batch=batch,
            rng_state=dict(self.rng.bit_generator.state),
            order=np.asarray(order, dtype=np.int64),
            arrays=arrays,
            t_unix_s=time.time(),
        )

    def restore(self, ckpt: Checkpoint) -> dict[str, float]:
        """Restore a checkpoint: generator, optimiser, programmer, accumulators, board.

        On a :class:`Checkpointable` backend the board's state is restored exactly;
        otherwise the board keeps its own conductances and the differences from the
        log are returned.

        Returns:
            ``{"max_abs_dg_s": ..., "rms_dg_s": ...}``: how far the board's conductances
            are from the checkpoint's (0 after an exact restore).
        """
        a = ckpt.arrays
        missing = [k for k in CHECKPOINT_REQUIRED if k not in a]
        if missing:
            raise ConfigError(
                f"the checkpoint lacks {', '.join(missing)}; the session file was edited or "
                "is damaged, so the run cannot be continued"
            )
        self.optimiser.load_state(
            {
                "lr_w": list(a["optimiser/lr_w"]),
                "lr_b": list(a["optimiser/lr_b"]),
                "epochs_decayed": int(a["optimiser/epochs_decayed"][0]),
                "buf_g": a["optimiser/buf_g"] if a["optimiser/has_buffers"][0] else None,
                "buf_b": a["optimiser/buf_b"] if a["optimiser/has_buffers"][0] else None,
            }
        )
        self.learner.programmer.load_state(
            {k[len("programmer/") :]: v for k, v in a.items() if k.startswith("programmer/")}
        )
        self._accum = [float(x) for x in a["trainer/accum"]]
        board = {k: v for k, v in a.items() if k.startswith("board/")}
        if isinstance(self.device, Checkpointable) and board:
            self.device.restore_state(board)
        self.rng.bit_generator.state = ckpt.rng_state
        self.steps_done = ckpt.steps_done
        dg = np.asarray(self.device.read_conductances()) - a["conductances_s"]
        return {
            "max_abs_dg_s": float(np.max(np.abs(dg), initial=0.0)),
            "rms_dg_s": float(np.sqrt(np.mean(dg**2))) if dg.size else 0.0,
        }

    def step_log(self, rec: StepRecord) -> StepLog:
        """The session file's view of a training step's record."""
        assert rec.examples is not None and rec.inputs_v is not None
        phases = sorted(rec.readings)
        cplx = any(isinstance(b, complex) for b in rec.betas_s.values())
        nv: NDArray[np.floating] | NDArray[np.complexfloating] = (
            np.zeros((len(phases), len(rec.examples), self.n_out), dtype=np.complex128)
            if cplx else np.zeros((len(phases), len(rec.examples), self.n_out)))
        for p in phases:
            nudge = rec.nudges.get(p)
            if isinstance(nudge, ResistiveNudge):
                nv[p] = np.asarray(nudge.targets_v).real
            elif isinstance(nudge, CurrentNudge):
                nv[p] = nudge.currents_a if cplx else np.asarray(nudge.currents_a).real
        pr = rec.programming
        log = StepLog(
            epoch=rec.epoch,
            batch=rec.batch,
            examples=rec.examples,
            inputs_v=rec.inputs_v,
            readings=[rec.readings[p] for p in phases],
            betas_s=(np.array([complex(rec.betas_s.get(p, 0.0)) for p in phases]) if cplx
                     else np.array([float(np.real(rec.betas_s.get(p, 0.0))) for p in phases])),
            nudge_values=nv,
            rng=self.rng,
            update_g_s=None if rec.update is None else rec.update.delta_g_s,
            update_b_a=None if rec.update is None else rec.update.delta_b_a,
            prog_edges=None if pr is None else pr.edges,
            prog_requested_s=None if pr is None else pr.requested_delta_s,
            prog_target_s=None if pr is None else pr.target_s,
            prog_achieved_s=None if pr is None else pr.achieved_s,
            prog_pulses=None if pr is None else pr.pulses,
            prog_reason=None if pr is None else pr.reason,
            n_pulses=rec.n_pulses,
            n_bound_hits=rec.n_bound_hits,
            loss=rec.loss,
            accuracy=rec.accuracy,
            t_start_unix_s=rec.t_start_unix_s,
            duration_s=rec.duration_s,
        )
        # the counts are the record's (counted once, by the engine); a StepLog that
        # takes them from its caller (n_pulses, n_bound_hits) stores these
        return log

    def measure_asymmetry(self, n_examples: int = 32) -> tuple[float, float] | None:
        """Jacobian asymmetry ``(L_homeo, S^2; symmetry ratio)`` on fixed examples.

        The first ``n_examples`` test examples (training ones if there is no test
        set); ``None`` on a board that does not report its Jacobian.
        """
        if not isinstance(self.device, JacobianProbe) or board_couplings(self.desc) is None:
            return None
        assert self.cfg.input_gain is not None
        x = self.x_test if len(self.x_test) else self.x_train
        self.device.apply_nudge(None)
        self.device.apply_inputs(encode_inputs(x[:n_examples], self.cfg.input_gain, self.n_in))
        self.device.settle()
        jac = self.device.jacobian()
        return asymmetry(jac), symmetry_ratio(jac)

    def _warn(self, message: str) -> None:
        """A one-line warning: printed to stderr now, recorded as an event later.

        The session observer records it as a ``warning`` event of the step during
        which it arose.
        """
        print(f"warning: {message}", file=sys.stderr)
        self.pending_warnings.append(message)

    def measure_alignment(self) -> list[LayerAlignment]:
        """EP-vs-true error alignment per hidden layer on the first ``cfg.alignment`` examples.

        Test examples (training ones if there is no test set), measured with the run's
        estimator at ``+beta`` and ``cfg.samples`` samples per phase.
        """
        assert self.cfg.input_gain is not None
        n = self.cfg.alignment
        x, y = (self.x_test, self.y_test) if len(self.x_test) else (self.x_train, self.y_train)
        return measure_alignment(
            self.device,
            self.estimator.stencil(self.beta_s),
            encode_inputs(x[:n], self.cfg.input_gain, self.n_in),
            one_hot(y[:n], self.n_out),
            n_samples=self.cfg.samples,
        )

    def _log_alignment(self, epoch: int) -> None:
        if self.cfg.alignment > 0:
            self.alignment_log.append((epoch, self.measure_alignment()))

    def _log_asymmetry(self, epoch: int) -> None:
        m = self.measure_asymmetry()
        if m is not None:
            self.asymmetry_log.append((epoch, m[0], m[1]))

    # ------------------------------------------------------------------ the run

    def run(self, resume_from: Checkpoint | None = None) -> TrainResult:
        """Train for the configured epochs; return the metrics and exit status.

        After every step the observers get its record (:meth:`StepObserver.step`,
        with :attr:`steps_done` already counting it), after every epoch its metrics.

        Args:
            resume_from: continue from this checkpoint (already restored with
                :meth:`restore`): its epoch, batch and example order.
        """
        cfg = self.cfg
        assert cfg.epochs is not None and cfg.batch_size is not None
        assert cfg.input_gain is not None
        self.preflight()
        result = TrainResult(status="running", reason="")
        start_epoch = 0 if resume_from is None else resume_from.epoch
        self.epochs_done = start_epoch
        bs = cfg.batch_size
        if self.steps_done == 0:  # also a resume from the first checkpoint, as the run did
            self._log_alignment(0)
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            first_batch = 0
            if resume_from is not None and epoch == resume_from.epoch and resume_from.batch > 0:
                self.order = np.asarray(resume_from.order)
                first_batch = resume_from.batch
            else:
                self.order = self.rng.permutation(len(self.x_train))
                self._accum = [0.0] * 6
            order = self.order
            loss_sum, correct, seen, pulses, bound_hits, t_before = self._accum
            for i in range(first_batch, self.n_batches):
                idx = order[i * bs : (i + 1) * bs]
                rec = self.step(
                    self.x_train[idx], self.y_train[idx], examples=idx, epoch=epoch, batch=i
                )
                loss_sum += rec.cost_sum_v2
                correct += rec.n_correct
                seen += len(idx)
                pulses += rec.n_pulses
                bound_hits += rec.n_bound_hits
                self._accum = [
                    loss_sum, correct, seen, pulses, bound_hits,
                    t_before + time.perf_counter() - t0,
                ]
                self.steps_done += 1
                for ob in tuple(self.observers):  # an observer may hand over to another
                    ob.step(rec)
                self.stop.check_abort()  # an abort swallowed inside a finaliser
                if self.stop.requested and i + 1 < self.n_batches:
                    result.status, result.reason = "stopped", self.stop.reason
                    return result
            train_time = t_before + time.perf_counter() - t0
            self.optimiser.end_epoch()
            test_acc, test_loss = (
                evaluate(
                    self.device,
                    self.x_test,
                    self.y_test,
                    cfg.input_gain,
                    batch_size=cfg.eval_batch_size,
                    n_samples=cfg.samples,
                )
                if len(self.x_test)
                else (float("nan"), float("nan"))
            )
            self.stop.check_abort()  # an abort swallowed during the evaluation
            m = EpochMetrics(
                epoch=epoch + 1,
                train_loss=loss_sum / max(seen, 1),
                train_accuracy=correct / max(seen, 1),
                test_accuracy=test_acc,
                test_loss=test_loss,
                time_s=train_time,
                examples_per_s=seen / train_time if train_time > 0 else float("inf"),
                pulses=int(pulses),
                bound_hits=int(bound_hits),
            )
            result.epochs.append(m)
            self._log_asymmetry(epoch + 1)
            self._log_alignment(epoch + 1)
            self._accum = [0.0] * 6
            self.epochs_done = epoch + 1
            for ob in tuple(self.observers):
                ob.epoch(m)
            if self.stop.requested:
                result.status, result.reason = "stopped", self.stop.reason
                return result
        result.status = "completed"
        return result


class StepObserver(Protocol):
    """Told of every finished training step and epoch (session file, progress, monitors).

    Observers run in the order of :attr:`Trainer.observers`, after the step is
    counted in :attr:`Trainer.steps_done`; they must not touch the board.
    """

    def step(self, rec: StepRecord) -> None:
        """A step finished; ``rec`` holds everything it measured and did."""
        ...

    def epoch(self, metrics: EpochMetrics) -> None:
        """An epoch finished (after its evaluation)."""
        ...


class SessionRecorder:
    """Appends every step and epoch to the session file and writes the checkpoints.

    A checkpoint is written every ``checkpoint_every`` steps (:meth:`Trainer.log_options`),
    after the step during which a stop was requested, and at every epoch end.
    """

    def __init__(self, trainer: Trainer, writer: SessionWriter) -> None:
        self.trainer = trainer
        self.writer = writer
        self.every = trainer.log_options().checkpoint_every
        self._aligned = 0
        """Entries of the trainer's alignment log already recorded."""

    def step(self, rec: StepRecord) -> None:
        """Append the step and its warnings; checkpoint when due.

        The epoch end checkpoints in :meth:`epoch`.
        """
        tr = self.trainer
        self.writer.append_step(tr.step_log(rec))
        while tr.pending_warnings:
            self.writer.event("warning", rec.step, tr.pending_warnings.pop(0))
        due = tr.steps_done % self.every == 0 or tr.stop.requested
        if due and rec.batch + 1 < tr.n_batches:
            self.writer.write_checkpoint(tr.checkpoint(rec.epoch, rec.batch + 1, tr.order))

    def epoch(self, metrics: EpochMetrics) -> None:
        """Record the epoch's metrics (and measured asymmetry), then checkpoint."""
        tr = self.trainer
        if tr.asymmetry_log and tr.asymmetry_log[-1][0] == metrics.epoch:
            _, l_homeo, ratio = tr.asymmetry_log[-1]
            self.writer.event(
                "info",
                tr.steps_done,
                f"epoch {metrics.epoch}: jacobian asymmetry L_homeo = {l_homeo:.6g} S^2, "
                f"symmetry ratio {ratio:.6f} (homeostasis lambda {tr.cfg.homeostasis:g})",
            )
        for epoch, rows in tr.alignment_log[self._aligned :]:
            for msg in format_alignment(epoch, rows, tr.cfg.alignment):
                self.writer.event("info", tr.steps_done if epoch else 0, msg)
        self._aligned = len(tr.alignment_log)
        self.writer.append_epoch(metrics.as_dict())
        self.writer.write_checkpoint(tr.checkpoint(metrics.epoch, 0, tr.order))


class ResumeVerifier:
    """Checks re-run steps against a session file, then hands over to its recorder.

    Steps numbered below ``until`` are already in the file: each is checked
    (:meth:`SessionWriter.verify_step`) and nothing is written. Once the last of
    them is verified the verifier replaces itself by ``recorder`` in the trainer's
    observer list, so the rest of the run pays nothing for it.
    """

    def __init__(self, recorder: SessionRecorder, until: int) -> None:
        self.recorder = recorder
        self.until = until

    def step(self, rec: StepRecord) -> None:
        """Verify the re-run step against the file."""
        tr = self.recorder.trainer
        self.recorder.writer.verify_step(rec.step, tr.step_log(rec))
        tr.pending_warnings.clear()  # recorded with the step the first time
        if tr.steps_done >= self.until:
            obs = tr.observers
            obs[obs.index(self)] = self.recorder

    def epoch(self, metrics: EpochMetrics) -> None:
        """An epoch that ends within the verified steps is already recorded."""


def session_observer(
    trainer: Trainer, writer: SessionWriter, verify_until: int = 0
) -> StepObserver:
    """The observer that keeps ``writer`` up to date.

    A :class:`SessionRecorder`, behind a :class:`ResumeVerifier` while the trainer
    re-runs steps numbered below ``verify_until`` (an exact resume).
    """
    recorder = SessionRecorder(trainer, writer)
    if trainer.steps_done < verify_until:
        return ResumeVerifier(recorder, verify_until)
    return recorder


@dataclass
class StepHook:
    """An observer from a function of the step record (timing probes, simple monitors)."""

    fn: Callable[[StepRecord], None]

    def step(self, rec: StepRecord) -> None:
        """Call the function with the record."""
        self.fn(rec)

    def epoch(self, metrics: EpochMetrics) -> None:
        """Nothing at epoch ends."""
