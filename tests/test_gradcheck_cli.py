"""``hwloop gradcheck``: estimators against the exact gradient, table, plots, JSON, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hwloop.cli import main


def test_gradcheck_json_shows_cauchy_exactness_and_asymmetry_bias(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([
        "gradcheck", "--estimators", "one-sided,centered,cauchy", "--betas", "0.1,1",
        "--points", "4,8", "--read-noise", "0", "--samples", "2", "--seed", "0", "--batch", "8",
        "--plots", str(tmp_path), "--json",
    ])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    checks = doc["checks"]
    assert checks["cauchy_beats_one_sided_at_beta1"] is True
    # the pass criterion is the relative error: Cauchy (N >= 4) within 1 %, one-sided and
    # centered far outside, although their cosines exceed 0.998 (the cosine separates nothing)
    assert checks["rel_err_pass"] == 0.01
    assert max(checks["beta1_cauchy_rel_err"].values()) <= 0.01 < checks["beta1_one_sided_rel_err"]
    assert checks["beta1_passes"]["cauchy-8"] and checks["beta1_passes"]["cauchy-4"]
    assert not checks["beta1_passes"]["centered"] and not checks["beta1_passes"]["one-sided"]
    assert checks["beta1_one_sided_cos"] > 0.99
    # the angle is the direction error: arccos of the cosine, in degrees
    for r in doc["rows"]:
        if r["cos"] is not None and r["angle_deg"] is not None and r["cos"] < 0.9999:
            assert r["angle_deg"] == pytest.approx(np.degrees(np.arccos(r["cos"])), rel=1e-6)
    # reciprocal: no asymmetry bias; non-reciprocal: a large one
    assert checks["asymmetry_bias"]["reciprocal"] < 1e-12
    assert checks["asymmetry_bias"]["non-reciprocal"] > 0.05
    rows = {(r["network"], r["estimator"], r["beta_s"]): r for r in doc["rows"]}
    one = rows[("reciprocal", "one-sided", 1.0)]
    c8 = rows[("reciprocal", "cauchy-8", 1.0)]
    assert c8["rel_err"] < one["rel_err"] / 100
    # in the non-reciprocal network even an exact nudge response keeps the asymmetry bias
    nr8 = rows[("non-reciprocal", "cauchy-8", 1.0)]
    assert nr8["nudge_err"] < 1e-3 and nr8["rel_err"] > 0.05
    for name in doc["plots"]:
        assert Path(name).stat().st_size > 1000


def test_gradcheck_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["gradcheck", "--estimators", "four-point", "--betas", "0.3",
                 "--read-noise", "1e-4", "--batch", "2"])
    assert code == 0
    out = capsys.readouterr().out
    assert "four-point" in out and "asymmetry bias" in out and "ep-exact" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["--betas", "0,1"],
        ["--betas", "x"],
        ["--estimators", "bogus"],
        ["--points", "1"],
        ["--read-noise", "-1"],
        ["--samples", "0"],
        ["--arch", "4-3"],
        ["--fwd-gain", "0"],
        ["--estimators", "lockin", "--lockin-harmonics", "2"],
        ["--estimators", "lockin", "--lockin-omega-tau", "0.5"],
    ],
)
def test_bad_options_give_one_line_and_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gradcheck", *argv]) == 2
    err = capsys.readouterr().err
    # (other subcommands' load warnings may precede it; ours is exactly one line)
    ours = [line for line in err.splitlines() if line.startswith("hwloop gradcheck")]
    assert len(ours) == 1 and ours[0].startswith("hwloop gradcheck: error:")
    assert "Traceback" not in err


def test_gradcheck_runs_the_lock_in_estimator(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["gradcheck", "--estimators", "lockin", "--lockin-harmonics", "1,3",
                 "--betas", "0.1", "--read-noise", "0", "--samples", "8", "--batch", "4",
                 "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    rows = {(r["network"], r["estimator"]): r for r in doc["rows"]}
    for net in ("reciprocal", "non-reciprocal"):
        k1, k3 = rows[(net, "lockin-1")], rows[(net, "lockin-3")]
        # omega tau = 0.01: quadrature about omega tau, bias order 2 vs 4 at beta 0.1
        assert 0.002 < k1["quadrature"] <= 0.01
        assert k3["nudge_err"] < k1["nudge_err"] / 3
    assert rows[("reciprocal", "lockin-3")]["rel_err"] < 1e-3
    assert rows[("non-reciprocal", "lockin-3")]["rel_err"] > 0.05  # the asymmetry bias stays
