"""Suite-wide settings.

On CI (``CI`` set in the environment) the external references must be present:
a test that skips because ngspice or the Fashion-MNIST files are missing would
hide a missing install step, so the session refuses to start instead.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests check values, not speed: Hypothesis' per-example deadline (200 ms) is a
# wall-clock limit that a loaded 2-core machine exceeds (seen: test_parse_value_property
# with three CPU-bound processes beside the suite), so it is off for the whole suite.
settings.register_profile("hwloop", deadline=None)
settings.load_profile("hwloop")

# A suite started in the background by a non-interactive shell (`pytest ... &`, nohup, a
# CI runner's job) inherits SIGINT ignored, and so does every child it starts: then no
# Ctrl-C test can interrupt anything (a virtual board served by a child never exits, a
# raised SIGINT is dropped). The tests of Ctrl-C behaviour need Python's own handler
# here and the default disposition in their children (a Python handler becomes SIG_DFL
# across exec), whatever shell started the suite.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

FASHION = Path("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--hwloop-board",
        metavar="BOARD.toml",
        default=None,
        help="board file of a REAL board: runs the Device contract suite on it (marker "
        "'hardware'); without it no test touches hardware",
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    if not os.environ.get("CI"):
        return
    missing = []
    if shutil.which("ngspice") is None:
        missing.append("ngspice (apt-get install ngspice)")
    if shutil.which("chromium") is None:
        missing.append("chromium (apt-get install chromium)")
    if not FASHION.exists():
        missing.append("Fashion-MNIST (apt-get install dataset-fashion-mnist)")
    if missing:
        raise pytest.UsageError(
            "CI must run every reference test, but these are missing: " + "; ".join(missing)
        )
