"""A lab's own backend, installed through entry points, runs every command that opens a board.

The throwaway package is a real distribution on ``sys.path``: a module and a
``labtoy-0.1.dist-info`` directory with ``METADATA`` and ``entry_points.txt``
(group ``hwloop.backends``), as ``pip install`` would leave it. Its backend wraps
the emulator and declares one option of its own (``init_scale``, which scales the
initial conductances). Nothing in hwloop's packages names it: the subprocesses
find it through ``PYTHONPATH`` and ``importlib.metadata``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hwloop.sessionlog import open_session

BACKEND_MODULE = '''
"""A throwaway lab backend: the emulator with its initial conductances scaled."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from hwloop.plugins import Option, backend
from simulated_device.board import EmulatedBoard, make_emulated_board


class ToyBoard(EmulatedBoard):
    """The emulator under another name."""

    def describe(self):  # type: ignore[no-untyped-def]
        return dataclasses.replace(super().describe(), backend="labtoy", name="lab toy board")


@backend((
    Option("arch", "str", "layer sizes", default="1568-100-10"),
    Option("dtype", "str", "precision", default="float64", choices=("float64", "float32")),
    Option("init_scale", "float", "factor on the initial conductances", unit="1",
           default=1.0, min=0.0, min_exclusive=True, max=10.0),
))
def make_toy_board(options: dict[str, Any], rng: np.random.Generator) -> ToyBoard:
    """A lab's toy board: the DRN emulator with scaled initial conductances."""
    emu = make_emulated_board({"arch": options["arch"], "dtype": options["dtype"]}, rng)
    net = emu.network
    net.g_flat[:] = net.g_flat * options["init_scale"]
    net.weights_changed()
    board = ToyBoard(net, emu._model, rng)
    return board
'''

ENTRY_POINTS = """
[hwloop.backends]
labtoy = labtoy_backend:make_toy_board
"""


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    site = tmp_path_factory.mktemp("site")
    (site / "labtoy_backend.py").write_text(textwrap.dedent(BACKEND_MODULE))
    dist = site / "labtoy-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: labtoy\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)
    return env


def hw(env: dict[str, str], *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hwloop.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=600)


ARCH = "1568-16-10"
TRAIN = ("--backend", "labtoy", "--arch", ARCH, "--train-limit", "200", "--test-limit", "100",
         "--epochs", "1", "--beta", "0.1", "--checkpoint-every", "10", "--quiet", "--json")


def test_a_lab_backend_runs_train_inspect_evaluate_resume_replay(
    plugin_env: dict[str, str], tmp_path: Path
) -> None:
    env = plugin_env
    # it is listed, with its option, unit and range
    r = hw(env, "backends")
    assert r.returncode == 0 and "labtoy" in r.stdout.split(), r.stderr
    r = hw(env, "backends", "labtoy", "--json")
    assert r.returncode == 0, r.stderr
    opts = {o["name"]: o for o in json.loads(r.stdout)["options"]}
    assert opts["init_scale"]["unit"] == "1" and opts["init_scale"]["range"] == "(0, 10]"

    # its own option is validated by its declaration: one line, exit 2, no file
    bad = tmp_path / "bad.h5"
    r = hw(env, "train", *TRAIN, "--backend-opt", "init_scale=20", "--out", bad)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "backend labtoy option init_scale = 20 is out of range; pass (0, 10]" in r.stderr
    r = hw(env, "train", *TRAIN, "--read-noise", "1e-3", "--out", bad)
    assert r.returncode == 2 and "backend labtoy has no option 'read_noise_v'" in r.stderr
    assert not bad.exists()

    # train with the option, then with another value: the option reaches the board
    run = tmp_path / "run.h5"
    r = hw(env, "train", *TRAIN, "--backend-opt", "init_scale=0.5", "--out", run)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["status"] == "completed" and summary["steps"] == 50
    other = tmp_path / "other.h5"
    assert hw(env, "train", *TRAIN, "--out", other).returncode == 0
    with open_session(run) as a, open_session(other) as b:
        assert json.loads(str(a.attrs["backend_options_json"])) == {
            "init_scale": 0.5, "arch": ARCH, "dtype": "float32"}
        g_a = a.checkpoint(0).arrays["conductances_s"]
        g_b = b.checkpoint(0).arrays["conductances_s"]
    np.testing.assert_allclose(g_a, 0.5 * g_b, rtol=1e-6)  # same seed, scaled by 0.5

    # inspect: the recorded board is the lab's
    r = hw(env, "inspect", run, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["board"]["backend"] == "labtoy" and report["board"]["name"] == "lab toy board"
    assert report["status"] == "completed"

    # evaluate on the recorded backend and options: the run's own test accuracy
    r = hw(env, "evaluate", run, "--dataset", "mnist-subset", "--json")
    assert r.returncode == 0, r.stderr
    ev = json.loads(r.stdout)
    assert ev["backend"] == "labtoy" and ev["backend_options"]["init_scale"] == 0.5
    assert ev["n"] == 1000 and 0.1 < ev["accuracy"] <= 1.0

    # resume: one more epoch, in the same file, with the board restored exactly
    r = hw(env, "resume", run, "--epochs", "2", "--quiet", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["steps"] == 100
    assert "board state restored exactly" in r.stderr

    # replay: the recorded configuration against the recording, identical
    r = hw(env, "replay", run, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    assert rep["status"] == "identical" and rep["steps_replayed"] == 100
