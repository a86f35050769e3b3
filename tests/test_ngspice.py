"""Cross-check of the DC operating point against ngspice (``ngspice -b``).

Every deck is written once and read by both programs: hwloop skips the
``.options`` line and the ``.control`` block that make ngspice print the voltages.

Tolerance: 1e-6 V. The remaining difference (up to ~4e-7 V) comes from the physical
constants: hwloop uses CODATA 2018 (scipy.constants), ngspice-39 CODATA 2014, so
``Vt`` differs by 3.4e-7 relative. With ngspice's constants emulated (see
``test_agreement_is_limited_by_physical_constants``) the two agree to ~1e-9 V.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import scipy.constants

from simulated_device.dcop import solve_op
from simulated_device.netlist import parse_netlist
from simulated_device.ngspice import OP_CONTROL, parse_op_print
from tests.procs import DEADLINE_S
from tests.test_dcop import random_circuit

pytestmark = [
    pytest.mark.ngspice,
    pytest.mark.skipif(
        shutil.which("ngspice") is None,
        reason="ngspice is not installed (apt-get install ngspice); CI installs it",
    ),
]

_NGSPICE_KOVERQ = 1.38064852e-23 / 1.6021766208e-19  # ngspice-39 const.h (CODATA 2014)


def run_ngspice(deck: str, workdir: Path, name: str) -> dict[str, float]:
    """Run ``ngspice -b`` on ``deck``; return node name -> volts (lower case)."""
    path = workdir / f"{name}.cir"
    path.write_text(deck)
    res = subprocess.run(
        ["ngspice", "-b", str(path)], capture_output=True, text=True, timeout=DEADLINE_S,
        check=False,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return parse_op_print(res.stdout)


def _decks(seed: int, count: int) -> list[str]:
    rng = np.random.default_rng(seed)
    decks = []
    for _ in range(count):
        c = random_circuit(
            rng,
            n_nodes=int(rng.integers(3, 12)),
            n_diodes=int(rng.integers(1, 8)),
            n_isources=int(rng.integers(0, 3)),
        )
        decks.append(c.text + OP_CONTROL)
    return decks


def _drn_deck(seed: int, n_in: int = 64, n_hidden: int = 16, n_out: int = 4) -> str:
    """A small DRN: grounded input sources, diode-clamped hidden nodes, linear outputs."""
    rng = np.random.default_rng(seed)
    x = np.where(rng.random(n_in // 2) < 0.3, rng.random(n_in // 2), 0.0)
    vin = np.r_[10.0 * x, -10.0 * x]
    lines = ["* small DRN"]
    lines += [f"VIN{i} in{i} 0 {float(v)!r}" for i, v in enumerate(vin)]
    k = 0
    for (src, n_src), (dst, n_dst) in (
        (("in", n_in), ("h", n_hidden)),
        (("h", n_hidden), ("o", n_out)),
    ):
        s = 1.0 / np.sqrt(n_src)
        g = np.maximum(rng.uniform(-s, s, (n_src, n_dst)), 0.0)
        for i, j in zip(*np.nonzero(g), strict=True):
            lines.append(f"R{k} {src}{i} {dst}{j} {float(1.0 / g[i, j])!r}")
            k += 1
    for j in range(n_hidden):
        lines.append(f"D{j} 0 h{j} DH" if j < n_hidden // 2 else f"D{j} h{j} 0 DH")
    lines += [f"RL{j} o{j} 0 1meg" for j in range(n_out)]
    lines.append(".model DH D(IS=1e-14 N=1)")
    return "\n".join(lines) + "\n" + OP_CONTROL


def _compare(deck: str, ng: dict[str, float], temperature_c: float = 27.0) -> float:
    op = solve_op(parse_netlist(deck), temperature_c=temperature_c)
    assert set(op.node_voltages_v) == set(ng), (sorted(op.node_voltages_v), sorted(ng))
    return max(abs(v - ng[k]) for k, v in op.node_voltages_v.items())


def test_random_circuits_match_ngspice(tmp_path: Path) -> None:
    decks = _decks(seed=20240601, count=24)
    decks += [_drn_deck(seed) for seed in range(2)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(
            pool.map(lambda kv: run_ngspice(kv[1], tmp_path, f"c{kv[0]}"), enumerate(decks))
        )
    diffs = [_compare(deck, ng) for deck, ng in zip(decks, results, strict=True)]
    assert max(diffs) <= 1e-6, diffs


def test_temperature_matches_ngspice(tmp_path: Path) -> None:
    # hwloop rejects '.temp' (use --temp): give ngspice the line, hwloop the argument
    decks = _decks(seed=77, count=6)
    for k, deck in enumerate(decks):
        for temp_c in (-20.0, 60.0):
            ng = run_ngspice(
                deck.replace(".options", f".temp {temp_c}\n.options"), tmp_path, f"t{k}"
            )
            assert _compare(deck, ng, temperature_c=temp_c) <= 1e-6


def test_agreement_is_limited_by_physical_constants(tmp_path: Path) -> None:
    # Emulate ngspice's k/q: run hwloop at T' with Vt(T') = Vt_ngspice(27 C), and TNOM = T'
    # so that IS is not rescaled. What is left is ngspice's own convergence error.
    t_prime_c = 300.15 * _NGSPICE_KOVERQ / (scipy.constants.k / scipy.constants.e) - 273.15
    worst = 0.0
    for k, deck in enumerate(_decks(seed=99, count=6)):
        ng = run_ngspice(deck, tmp_path, f"k{k}")
        ours = re.sub(r"\)$", f" TNOM={t_prime_c!r})", deck, flags=re.M)
        worst = max(worst, _compare(ours, ng, temperature_c=t_prime_c))
    assert worst <= 1e-9
