"""``hwloop train`` / ``hwloop evaluate`` on the emulator: errors, dry run, a real short run.

The real runs use the bundled MNIST subset with a fixed seed (1,000 training
examples, one epoch, about 1 s each).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from hwloop.cli import main
from hwloop.sessionlog import RunSummary as RunData
from hwloop.sessionlog import load_run as read_run
from hwloop.sessionlog import open_session
from protocols.datasets import DATA_DIR_ENV, IDX_FILES, load_dataset
from tests.procs import DEADLINE_S, assert_usage_error
from tests.procs import run_cli as cli

ARCH = "1568-100-10"
N_EDGES = 1568 * 100 + 100 * 10
N_BIASES = 100 + 10
SHORT = ["--arch", ARCH, "--epochs", "1", "--train-limit", "1000", "--quiet", "--json"]


@pytest.fixture(autouse=True)
def _no_data_dir_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)


def last_json(out: str) -> dict[str, Any]:
    return json.loads(out.strip().splitlines()[-1])


def _train_quietly(*argv: object) -> tuple[int, str, str]:
    """``hwloop train`` for module-scoped fixtures (capsys is function-scoped)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["train", *map(str, argv)])
    return code, out.getvalue(), err.getvalue()


Capsys = pytest.CaptureFixture[str]
Trained = tuple[Path, dict[str, Any], RunData]
"""The trained run: its session file, the --json summary of train, and its data."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """One short real run: seed 0, 1,000 training examples, the full 1,000-digit test split."""
    path = tmp_path_factory.mktemp("run") / "run.h5"
    code, out, err = _train_quietly(*SHORT, "--seed", "0", "--out", path)
    assert code == 0, err
    return path, last_json(out), read_run(path)


# --------------------------------------------------------------------------- bad configurations

CONFIG_ERRORS: dict[str, tuple[list[str], dict[str, str], list[str]]] = {
    # case: (arguments, files to write first, words the message must contain); {tmp} = tmp_path
    "unknown-key": (["--config", "{tmp}/c.toml"], {"c.toml": "epoch = 3\n"},
                    ["c.toml", "'epoch'", "epochs"]),
    "unknown-table": (["--config", "{tmp}/c.toml"], {"c.toml": "[train]\nepochs = 1\n"},
                      ["c.toml", "'train'"]),
    "wrong-type": (["--config", "{tmp}/c.toml"], {"c.toml": 'epochs = "ten"\n'},
                   ["c.toml", "epochs", "'ten'"]),
    "bool-for-int": (["--config", "{tmp}/c.toml"], {"c.toml": "epochs = true\n"},
                     ["epochs"]),
    "string-in-list": (["--config", "{tmp}/c.toml"], {"c.toml": 'lr_weights = ["a"]\n'},
                       ["lr_weights"]),
    "invalid-toml": (["--config", "{tmp}/c.toml"], {"c.toml": "epochs = [\n"},
                     ["c.toml", "TOML"]),
    "missing-config": (["--config", "{tmp}/nope.toml"], {}, ["nope.toml", "not found"]),
    "beta-negative": (["--beta", "-1"], {}, ["beta"]),
    "beta-huge": (["--beta", "1e6"], {}, ["beta", "range"]),
    "beta-nan": (["--beta", "nan"], {}, ["beta"]),
    "beta-zero-in-file": (["--config", "{tmp}/c.toml"], {"c.toml": "beta = 0.0\n"}, ["beta"]),
    "read-noise-negative": (["--read-noise", "-1"], {}, ["read_noise"]),
    "read-noise-huge": (["--read-noise", "5"], {}, ["read_noise", "range"]),
    "epochs-zero": (["--epochs", "0"], {}, ["epochs"]),
    "momentum-one": (["--momentum", "1"], {}, ["momentum"]),
    "lr-negative": (["--lr", "-0.1"], {}, ["lr_weights"]),
    "unknown-estimator": (["--estimator", "two-sided"], {}, ["estimator", "centered"]),
    "unknown-estimator-in-file": (["--config", "{tmp}/c.toml"], {"c.toml": 'estimator = "x"\n'},
                                  ["estimator"]),
    "unknown-nudge": (["--nudge", "voltage"], {}, ["nudge"]),
    "bad-arch": (["--arch", "1568-x-10"], {}, ["1568-x-10"]),
    "one-layer-arch": (["--arch", "1568"], {}, ["1568"]),
    "arch-wrong-inputs": (["--arch", "100-10"], {}, ["100", "784"]),
    "unknown-backend": (["--backend", "nope"], {}, ["nope", "emulator"]),
    "unknown-dataset": (["--dataset", "cifar10"], {}, ["cifar10", "mnist-subset"]),
    "missing-kmnist": (["--dataset", "kmnist", "--data-dir", "{tmp}/empty"], {"empty/": ""},
                       ["kmnist", *IDX_FILES.values(), "--data-dir", DATA_DIR_ENV]),
    "missing-npz": (["--dataset", "{tmp}/none.npz"], {}, ["none.npz"]),
    "input-gain-over-limit": (["--input-gain", "1e9"], {}, ["limit"]),
    "out-in-missing-dir": (["--out", "{tmp}/no/such/dir/run.h5"], {}, ["no/such/dir"]),
    "out-not-h5": (["--out", "{tmp}/run.txt"], {}, ["run.txt", ".h5"]),
    "argparse-int": (["--epochs", "ten"], {}, ["--epochs", "'ten'"]),
    "argparse-unknown-flag": (["--no-such-flag", "3"], {}, ["--no-such-flag"]),
}


@pytest.mark.parametrize("case", list(CONFIG_ERRORS))
def test_bad_configuration_fails_at_once(case: str, tmp_path: Path, capsys: Capsys) -> None:
    argv, files, words = CONFIG_ERRORS[case]
    for name, text in files.items():
        if name.endswith("/"):
            (tmp_path / name).mkdir()
        else:
            (tmp_path / name).write_text(text)
    before = sorted(tmp_path.rglob("*"))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "run.h5")]
    code, out, err = cli(capsys, "train", "--quiet", *argv)
    assert_usage_error(code, out, err, *(w.replace("{tmp}", str(tmp_path)) for w in words))
    assert sorted(tmp_path.rglob("*")) == before  # no run file, nothing else either


def test_existing_out_is_kept_without_overwrite(tmp_path: Path, capsys: Capsys) -> None:
    out_file = tmp_path / "run.h5"
    out_file.write_bytes(b"an earlier run")
    code, out, err = cli(capsys, "train", "--epochs", "1", "--out", out_file)
    assert_usage_error(code, out, err, out_file, "already exists", "--overwrite")
    assert out_file.read_bytes() == b"an earlier run"
    assert sorted(tmp_path.iterdir()) == [out_file]


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path, capsys: Capsys) -> None:
    code, out, err = cli(capsys, "train", "--dry-run", "--out", tmp_path / "run.h5")
    assert code == 0, err
    assert "Traceback" not in err
    lines = out.splitlines()
    assert any("apply input voltages" in ln for ln in lines)
    assert any("settle" in ln for ln in lines)
    # the default estimator is centered: nudges at -beta and +beta with beta = 1 S
    assert any("beta = -1 S" in ln for ln in lines) and any("beta = +1 S" in ln for ln in lines)
    assert any("program conductances" in ln for ln in lines)
    assert "nothing was applied" in lines[-1]
    assert list(tmp_path.iterdir()) == []
    # an existing directory is not needed for a dry run; the plan follows the estimator
    code, out, _ = cli(capsys, "train", "--dry-run", "--estimator", "one-sided", "--beta", "0.5",
                       "--out", tmp_path / "missing" / "run.h5")
    assert code == 0
    assert "beta = +0.5 S" in out and "beta = -0.5 S" not in out
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- a real short run


def test_short_run_learns(trained: Trained) -> None:
    path, summary, _ = trained
    assert summary["status"] == "completed"
    assert summary["epochs"] == 1
    assert summary["out"] == str(path)
    assert summary["final_test_accuracy"] > 0.6  # chance is 0.1
    assert 0.3 < summary["final_train_accuracy"] <= 1.0
    assert summary["wall_time_s"] > 0


def test_run_file_contents(trained: Trained) -> None:
    path, summary, run = trained
    assert run.attrs["status"] == "completed"
    assert run.attrs["reason"] == ""
    assert run.attrs["schema"] == "hwloop-session" and run.attrs["schema_version"] == 1
    assert run.attrs["seed"] == 0
    assert run.attrs["started_utc"] and run.attrs["stopped_utc"] >= run.attrs["started_utc"]
    assert "fast-DRN" in run.attrs["defaults_source"]

    cfg = tomllib.loads(run.config_toml)
    # given on the command line
    assert cfg["arch"] == ARCH and cfg["epochs"] == 1 and cfg["train_limit"] == 1000
    assert cfg["seed"] == 0 and cfg["dataset"] == "mnist-subset"
    # filled from the published settings (docs/physics.md §5.1, fast-DRN, 1568-100-10)
    assert cfg["input_gain"] == 100.0
    assert cfg["beta"] == 1.0
    assert cfg["lr_weights"] == [0.006, 0.006]
    assert cfg["lr_biases"] == [0.006, 0.006]
    assert cfg["batch_size"] == 4 and cfg["momentum"] == 0.0
    # the backend's table: the run-level options it declares; its own defaults (4 sweeps,
    # the published number for one hidden layer) come from the backend
    assert cfg["backend"] == {"name": "emulator"}  # nothing given: an empty table
    assert json.loads(run.attrs["backend_options_json"]) == {"arch": ARCH, "dtype": "float32"}
    assert cfg["estimator"] == "centered" and cfg["lr_decay"] == 0.99
    assert "test_limit" not in cfg  # unset options are left out, not written as none

    m = run.metrics
    for key in ("epoch", "train_loss", "train_accuracy", "test_accuracy", "test_loss", "time_s"):
        assert m[key].shape == (1,), key
    assert m["epoch"][0] == 1.0
    assert m["test_accuracy"][0] == summary["final_test_accuracy"]
    assert m["train_accuracy"][0] == summary["final_train_accuracy"]
    assert 0 < m["test_loss"][0] < 0.5  # 1/2 |v - onehot|^2; 0.5 for all-zero outputs
    with h5py.File(path, "r") as f:
        units = json.loads(f["epochs"].attrs["units"])
        assert units["epoch"] == "1" and units["test_accuracy"] == "1"
        assert units["train_loss"] == "V^2" and units["time_s"] == "s"
        assert f["checkpoints/conductances_s"].attrs["units"] == "S"
        assert f["checkpoints/biases_a"].attrs["units"] == "A"
        ck = f["checkpoints/index"][-1]
        assert ck["steps_done"] == 250 and ck["epoch"] == 1 and ck["batch"] == 0
        assert f["steps/index"].shape == (250,)  # 1000 examples / batch 4

        def no_units(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset):
                assert isinstance(obj.attrs.get("units"), str), name

        f.visititems(no_units)

    assert run.conductances_s is not None and run.biases_a is not None
    assert run.conductances_s.shape == (N_EDGES,)
    assert run.biases_a.shape == (N_BIASES,)
    assert np.all(np.isfinite(run.conductances_s)) and np.all(run.conductances_s >= 0)
    assert np.all(np.isfinite(run.biases_a))
    assert np.ptp(run.conductances_s) > 0
    assert all(np.all(np.isfinite(v)) for v in run.metrics.values())


def test_same_seed_same_conductances(trained: Trained, tmp_path: Path, capsys: Capsys) -> None:
    _, summary, first = trained
    assert first.conductances_s is not None
    code, out, err = cli(capsys, "train", *SHORT, "--seed", "0", "--out", tmp_path / "again.h5")
    assert code == 0, err
    again = read_run(tmp_path / "again.h5")
    assert again.conductances_s is not None and again.biases_a is not None
    assert again.conductances_s.tobytes() == first.conductances_s.tobytes()  # bit for bit
    assert again.biases_a.tobytes() == first.biases_a.tobytes()  # type: ignore[union-attr]
    assert last_json(out)["final_test_accuracy"] == summary["final_test_accuracy"]
    assert again.attrs["run_id"] != first.attrs["run_id"]

    code, out, err = cli(capsys, "train", *SHORT, "--seed", "1", "--out", tmp_path / "other.h5")
    assert code == 0, err
    other = read_run(tmp_path / "other.h5")
    assert other.conductances_s is not None
    assert not np.array_equal(other.conductances_s, first.conductances_s)
    assert last_json(out)["final_test_accuracy"] > 0.6


# --------------------------------------------------------------------------- evaluate


def test_evaluate_matches_the_run(trained: Trained, capsys: Capsys) -> None:
    path, summary, _ = trained
    code, out, err = cli(capsys, "evaluate", path, "--dataset", "mnist-subset", "--json")
    assert code == 0, err
    res = last_json(out)
    assert res["n"] == 1000
    assert res["dataset"] == "mnist-subset" and res["split"] == "test"
    assert res["read_noise_v"] == 0.0
    # the training run measured the same 1,000 test digits (float32 there, float64 here)
    assert res["accuracy"] == pytest.approx(summary["final_test_accuracy"], abs=2e-3)
    assert 0 <= res["accuracy"] <= 1 and res["accuracy"] * res["n"] == pytest.approx(
        round(res["accuracy"] * res["n"]))

    # the human-readable line says the same
    code, out, _ = cli(capsys, "evaluate", path, "--dataset", "mnist-subset")
    assert code == 0
    assert f"{100 * res['accuracy']:.2f} %" in out and "1000 examples" in out


def _idx(arr: np.ndarray) -> bytes:
    header = (0x800 | arr.ndim).to_bytes(4, "big") + b"".join(
        d.to_bytes(4, "big") for d in arr.shape)
    return header + np.ascontiguousarray(arr, np.uint8).tobytes()


def test_evaluate_on_npz_and_idx_directory(
    trained: Trained, tmp_path: Path,
    capsys: Capsys,
) -> None:
    path, _, _ = trained
    code, out, _ = cli(capsys, "evaluate", path, "--dataset", "mnist-subset", "--json")
    assert code == 0
    reference = last_json(out)

    test = load_dataset("mnist-subset")  # the split the run was trained against
    npz = tmp_path / "heldout.npz"
    np.savez(npz, x=test.x_test, y=test.y_test)
    code, out, err = cli(capsys, "evaluate", path, "--dataset", npz, "--json")
    assert code == 0, err
    res = last_json(out)
    assert res["n"] == 1000 and res["dataset"] == "heldout"
    assert res["accuracy"] == reference["accuracy"]
    assert res["loss"] == pytest.approx(reference["loss"], rel=1e-12)

    # a subset of 200 digits, flattened, as floats in [0, 1]
    part = tmp_path / "part.npz"
    np.savez(part, x=test.x_test[:200].reshape(200, 784) / 255.0, y=test.y_test[:200])
    code, out, _ = cli(capsys, "evaluate", path, "--dataset", part, "--json")
    assert code == 0
    res_part = last_json(out)
    assert res_part["n"] == 200 and res_part["accuracy"] > 0.6

    # a directory of IDX files (gzipped test split, plain dummy train split)
    idx_dir = tmp_path / "idx"
    idx_dir.mkdir()
    (idx_dir / IDX_FILES["x_train"]).write_bytes(_idx(test.x_train[:3]))
    (idx_dir / IDX_FILES["y_train"]).write_bytes(_idx(test.y_train[:3]))
    (idx_dir / (IDX_FILES["x_test"] + ".gz")).write_bytes(gzip.compress(_idx(test.x_test)))
    (idx_dir / (IDX_FILES["y_test"] + ".gz")).write_bytes(gzip.compress(_idx(test.y_test)))
    code, out, err = cli(capsys, "evaluate", path, "--dataset", idx_dir, "--json")
    assert code == 0, err
    res_idx = last_json(out)
    assert res_idx["n"] == 1000 and res_idx["accuracy"] == reference["accuracy"]
    # the same files found by name through --data-dir
    code, out, err = cli(capsys, "evaluate", path, "--dataset", "mnist", "--data-dir", idx_dir,
                         "--json")
    assert code == 0, err
    assert last_json(out)["accuracy"] == reference["accuracy"]


def test_evaluate_with_read_noise(trained: Trained, capsys: Capsys) -> None:
    path, _, _ = trained
    code, out, _ = cli(capsys, "evaluate", path, "--dataset", "mnist-subset", "--json")
    clean = last_json(out)["accuracy"]
    code, out, err = cli(capsys, "evaluate", path, "--dataset", "mnist-subset", "--json",
                         "--read-noise", "1.0", "--seed", "0")
    assert code == 0, err
    noisy = last_json(out)
    assert noisy["read_noise_v"] == 1.0
    assert noisy["accuracy"] < clean - 0.3  # 1 V of noise on ~1 V outputs
    # averaging samples recovers part of it, and the noise is seeded
    code, out, _ = cli(capsys, "evaluate", path, "--dataset", "mnist-subset", "--json",
                       "--read-noise", "1.0", "--seed", "0")
    assert last_json(out)["accuracy"] == noisy["accuracy"]
    code, out, _ = cli(capsys, "evaluate", path, "--dataset", "mnist-subset", "--json",
                       "--read-noise", "1.0", "--samples", "16")
    assert last_json(out)["accuracy"] > noisy["accuracy"] + 0.1


def test_evaluate_errors(trained: Trained, tmp_path: Path, capsys: Capsys) -> None:
    path, _, _ = trained
    missing = tmp_path / "missing.h5"
    assert_usage_error(*cli(capsys, "evaluate", missing, "--dataset", "mnist-subset"), missing)

    text = tmp_path / "text.h5"
    text.write_text("not HDF5\n")
    assert_usage_error(*cli(capsys, "evaluate", text, "--dataset", "mnist-subset"), text)

    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = np.arange(3)
    assert_usage_error(*cli(capsys, "evaluate", foreign, "--dataset", "mnist-subset"), foreign,
                       "not an hwloop session file")

    assert_usage_error(*cli(capsys, "evaluate", path, "--dataset", "kmnist",
                            "--data-dir", tmp_path), "kmnist", "--data-dir")
    assert_usage_error(*cli(capsys, "evaluate", path, "--dataset", "mnist-subset",
                            "--read-noise", "-1"), "--read-noise")
    assert_usage_error(*cli(capsys, "evaluate", path, "--dataset", "mnist-subset",
                            "--samples", "0"), "--samples")
    assert_usage_error(*cli(capsys, "evaluate", path))  # --dataset is required
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.h5", "text.h5"]


# --------------------------------------------------------------------------- config files


def test_config_file_with_cli_overrides(tmp_path: Path, capsys: Capsys) -> None:
    cfg_file = tmp_path / "train.toml"
    cfg_file.write_text(
        "# a small run\n"
        f'arch = "{ARCH}"\n'
        "epochs = 1\n"
        "train-limit = 4000\n"  # dashes are accepted for underscores
        "seed = 5\n"
        "lr_weights = [0.004, 0.004]\n"
        "test_fraction = 0.1\n"
    )
    out_file = tmp_path / "run.h5"
    out_file.write_bytes(b"stale")  # replaced thanks to --overwrite
    code, out, err = cli(capsys, "train", "--config", cfg_file, "--train-limit", "600",
                         "--seed", "0", "--lr", "0.008", "--quiet", "--json",
                         "--out", out_file, "--overwrite")
    assert code == 0, err
    summary = last_json(out)
    assert summary["status"] == "completed" and summary["final_test_accuracy"] > 0.5
    assert "defaults: Scellier 2024 fast-DRN" in err

    run = read_run(out_file)
    cfg = tomllib.loads(run.config_toml)
    assert cfg["train_limit"] == 600  # command line beats the file
    assert cfg["seed"] == 0 and run.attrs["seed"] == 0
    assert cfg["lr_weights"] == [0.008]  # one value on the command line: one for all layers
    assert cfg["epochs"] == 1 and cfg["test_fraction"] == 0.1  # from the file
    assert cfg["lr_biases"] == [0.006, 0.006] and cfg["beta"] == 1.0  # published defaults

    # evaluate uses the run's own split of the bundled subset (10 %: 50 digits per class)
    code, out, err = cli(capsys, "evaluate", out_file, "--dataset", "mnist-subset", "--json")
    assert code == 0, err
    res = last_json(out)
    assert res["n"] == 500
    assert res["accuracy"] == pytest.approx(summary["final_test_accuracy"], abs=2e-3)


def test_saved_configuration_reproduces_the_run(
    trained: Trained, tmp_path: Path,
    capsys: Capsys,
) -> None:
    """The resolved TOML in a run file is itself a valid --config file."""
    _, _, run = trained
    cfg_file = tmp_path / "resolved.toml"
    cfg_file.write_text(run.config_toml)
    code, out, err = cli(capsys, "train", "--config", cfg_file, "--dry-run",
                         "--out", tmp_path / "x.h5")
    assert code == 0, err
    assert "nothing was applied" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resolved.toml"]


# --------------------------------------------------------------------------- console script


def test_console_script_reports_one_line(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("hwloop")
    script = str(exe) if exe.is_file() else shutil.which("hwloop")
    if script is None:
        pytest.skip("the hwloop console script is not installed (pip install -e .)")
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text("beta = 1e6\n")
    proc = subprocess.run(
        [script, "train", "--config", str(cfg_file), "--out", str(tmp_path / "run.h5")],
        capture_output=True, text=True, timeout=DEADLINE_S, check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hwloop train: error:"), proc.stderr
    assert "beta" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]



def test_four_point_estimator_trains_and_replays(tmp_path: Path, capsys: Capsys) -> None:
    """A multi-point real stencil in training: four nudged phases recorded, replay exact."""
    out = tmp_path / "fp.h5"
    code, _, err = cli(capsys, "train", "--arch", "1568-16-10", "--epochs", "1",
                       "--train-limit", "40", "--test-limit", "20", "--beta", "0.05",
                       "--estimator", "four-point", "--out", out, "--quiet")
    assert code == 0, err
    with h5py.File(out, "r") as f:
        betas = f["steps/betas_s"][0]
    np.testing.assert_array_equal(betas, [0.0, -0.05, -0.025, 0.025, 0.05])
    code, text, _ = cli(capsys, "replay", out)
    assert code == 0 and text.startswith("identical: steps 0..9"), text
    code, out_, err = cli(capsys, "train", "--arch", "1568-16-10", "--estimator", "cauchy-4",
                          "--out", tmp_path / "c.h5")
    assert_usage_error(code, out_, err, "cauchy-4", "four-point")


def test_resume_from_another_directory_finds_the_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capsys
) -> None:
    """A run trained on a data directory given relative to its cwd resumes from elsewhere."""
    from tests.test_datasets import fake_arrays, write_idx_set

    here, there = tmp_path / "here", tmp_path / "there"
    write_idx_set(here / "idx", fake_arrays(3, n_train=40, n_test=12), gz=False)
    there.mkdir()
    monkeypatch.chdir(here)
    code, _, err = cli(capsys, "train", "--dataset", "mnist", "--data-dir", "idx", "--arch",
                       "1568-32-10", "--epochs", "1", "--quiet", "--out", "run.h5")
    assert code == 0, err
    with open_session(here / "run.h5") as sf:
        stored = tomllib.loads(str(sf.attrs["config_toml"]))
    assert stored["data_dir"] == str((here / "idx").resolve())
    monkeypatch.chdir(there)  # where no "idx" exists
    code, _, err = cli(capsys, "resume", str(here / "run.h5"), "--epochs", "2", "--quiet")
    assert code == 0, err
    with open_session(here / "run.h5") as sf:
        assert sf.status == "completed" and len(sf.h5["epochs"]) == 2
