"""``hwloop train`` and ``hwloop evaluate``: the CLI of the training protocol.

Both are contributed to the ``hwloop`` dispatcher through the
``hwloop.commands`` entry-point group. Boards come from the
``hwloop.backends`` group, so the same commands drive any backend.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from hwloop.config import config_to_dict, read_toml, to_toml
from hwloop.datasets import Dataset, load_dataset
from hwloop.errors import ConfigError
from hwloop.plugins import open_board
from hwloop.runfile import RunWriter, check_run_path, read_run
from hwloop.session import StopRequest, deferred_interrupt, safe_session
from protocols.cli import _MULTI, _TRAIN_FLAGS
from protocols.config import TrainConfig, make_config, resolve
from protocols.engine import StepRecord
from protocols.plan import format_plan
from protocols.training import EpochMetrics, Trainer, backend_options, evaluate


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
    for key in _TRAIN_FLAGS:
        v = getattr(args, key, None)
        if v is None:
            continue
        values[key] = list(v) if key in _MULTI else v
    return make_config(values, source=source)


def _save_partial(trainer: Trainer) -> None:
    """Keep the parameters reached so far after a failure.

    Best effort: the board may be what failed.
    """
    try:
        trainer.save_params(getattr(trainer, "epochs_done", 0), complete=False)
    except Exception as exc:  # never mask the original error
        print(f"hwloop train: warning: could not save the parameters: {exc}", file=sys.stderr)


def run_train(args: argparse.Namespace) -> int:
    """Execute ``hwloop train``."""
    from tqdm import tqdm

    cfg, source = resolve(_collect_config(args))
    out = Path(args.out)
    if not args.dry_run:  # fail before loading data or opening the board
        check_run_path(out, overwrite=args.overwrite)
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, test_fraction=cfg.test_fraction)
    rng = np.random.default_rng(cfg.seed)
    device = open_board(cfg.backend, backend_options(cfg), rng)
    stop = StopRequest()
    with safe_session(device), deferred_interrupt(stop):
        trainer = Trainer(cfg, device, data, rng, stop=stop)
        trainer.preflight()  # limits are checked before the run file or the board is touched
        if args.dry_run:
            print(format_plan(trainer.plan_for_step()))
            print("dry run: the plan fits the board's limits; nothing was applied")
            return 0
        writer = RunWriter(
            out,
            config_toml=to_toml(config_to_dict(cfg)),
            seed=cfg.seed,
            device_summary=device.describe().summary(),
            defaults_source=source,
            overwrite=args.overwrite,
        )
        trainer.writer = writer
        n_train = len(trainer.x_train)
        assert cfg.batch_size is not None and cfg.epochs is not None
        steps_per_epoch = -(-n_train // cfg.batch_size)
        quiet = args.quiet
        print(
            f"hwloop train: {cfg.arch} on {data.name} ({n_train} train / "
            f"{len(trainer.x_test)} test), {cfg.epochs} epochs, batch {cfg.batch_size}, "
            f"{cfg.estimator} EP, beta {cfg.beta:g}, input gain {cfg.input_gain:g} V, "
            f"{cfg.samples} sample(s)/phase; defaults: {source}",
            file=sys.stderr,
        )
        bar = (
            None
            if quiet
            else tqdm(
                total=steps_per_epoch,
                unit="step",
                leave=False,
                disable=None,
                file=sys.stderr,
                mininterval=0.5,
            )
        )

        def on_step(i: int, rec: StepRecord, loss: float, acc: float) -> None:
            if bar is not None:
                bar.update(1)
                if i % 20 == 0:
                    bar.set_postfix(loss=f"{loss:.4f}", acc=f"{100 * acc:.1f}%", refresh=False)

        def on_epoch(m: EpochMetrics) -> None:
            if bar is not None:
                bar.clear()
                bar.reset()
            print(_format_epoch(m, cfg.epochs or 0), file=sys.stderr)

        trainer.on_step, trainer.on_epoch = on_step, on_epoch
        t0 = time.perf_counter()
        status, reason = "failed", "unexpected error"
        try:
            result = trainer.run()
            status, reason = result.status, result.reason
        except KeyboardInterrupt:
            status, reason = "aborted", "aborted by a second Ctrl-C"
            _save_partial(trainer)
            raise
        except Exception as exc:
            status, reason = "failed", f"{type(exc).__name__}: {exc}"
            _save_partial(trainer)
            raise
        finally:
            if bar is not None:
                bar.close()
            writer.finish(status, reason)
    wall = time.perf_counter() - t0
    summary = {
        "status": status,
        "epochs": len(result.epochs),
        "final_test_accuracy": result.final_test_accuracy,
        "final_train_accuracy": result.epochs[-1].train_accuracy if result.epochs else None,
        "wall_time_s": wall,
        "out": str(out),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        acc = result.final_test_accuracy
        print(
            f"{status}: test accuracy {100 * acc:.2f} % after {len(result.epochs)} epoch(s) "
            f"in {wall:.1f} s; run saved to {out}"
        )
    return 0 if status in ("completed", "stopped") else 1


def _evaluation_data(
    name_or_path: str, data_dir: str | None, test_fraction: float
) -> tuple[Dataset, str]:
    # the run's test_fraction: another split of the bundled subset would mix in training images
    data = load_dataset(name_or_path, data_dir=data_dir, test_fraction=test_fraction)
    return data, "test"


def run_evaluate(args: argparse.Namespace) -> int:
    """Execute ``hwloop evaluate``."""
    run = read_run(args.run)
    if run.conductances_s is None or run.biases_a is None:
        raise ConfigError(f"{args.run} holds no trained parameters (the run stopped before any)")
    cfg, _ = resolve(
        make_config(tomllib.loads(run.config_toml), source=f"{args.run} configuration")
    )
    data, split = _evaluation_data(args.dataset, args.data_dir, cfg.test_fraction)
    x = data.pixels("test")
    y = data.y_test.astype(np.int64)
    if len(x) == 0:
        raise ConfigError(f"dataset {args.dataset} has no test examples")
    options: dict[str, Any] = {"arch": cfg.arch, "preset": "ideal", "dtype": "float64"}
    if cfg.sweeps is not None:
        options["n_sweeps"] = cfg.sweeps
    if args.read_noise is not None:
        if not (np.isfinite(args.read_noise) and args.read_noise >= 0):
            raise ConfigError(f"--read-noise {args.read_noise} must be a number >= 0 V")
        options["read_noise_v"] = args.read_noise
    if args.samples < 1:
        raise ConfigError(f"--samples {args.samples} must be >= 1")
    rng = np.random.default_rng(args.seed)
    device = open_board("emulator", options, rng)
    with safe_session(device):
        desc = device.describe()
        if desc.n_edges != len(run.conductances_s) or len(desc.bias_nodes) != len(run.biases_a):
            raise ConfigError(f"{args.run}: stored parameters do not match architecture {cfg.arch}")
        g = run.conductances_s
        if not np.all(np.isfinite(g)) or g.min() < desc.g_min_s or g.max() > desc.g_max_s:
            raise ConfigError(
                f"{args.run}: stored conductances lie outside the emulator's range "
                f"[{desc.g_min_s:g}, {desc.g_max_s:g}] S (or are not finite); the run file is "
                "damaged or was written for another device model"
            )
        device.program_deltas(None, g - device.read_conductances())
        device.set_bias_currents(run.biases_a)
        assert cfg.input_gain is not None
        acc, loss = evaluate(device, x, y, cfg.input_gain, batch_size=500, n_samples=args.samples)
    result = {
        "accuracy": acc,
        "n": len(x),
        "loss": loss,
        "dataset": data.name,
        "split": split,
        "read_noise_v": args.read_noise or 0.0,
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
