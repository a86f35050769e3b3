"""Board files and RealBoards on virtual instruments, for the contract suite and the tests.

``settled_nonreciprocal`` opens a small non-reciprocal emulator at its free fixed point
with fixed inputs and targets (the estimator tests).

``central_difference`` differentiates a loss by central differences (gradient checks).

``serial_board_text`` / ``scpi_board_text`` write board files for the virtual serial
board and the virtual SCPI bench; ``open_serial`` / ``open_scpi`` start the virtual
instruments and return a RealBoard that stops them when it is closed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hwloop.plugins import open_board
from instruments.board_file import parse_board_file
from instruments.real_board import RealBoard
from simulated_device.bench_network import BenchNetwork
from simulated_device.nonreciprocal_board import NonReciprocalBoard
from simulated_device.virtual_board import FaultConfig, VirtualBoard
from simulated_device.virtual_scpi import VirtualScpiBench

SAFETY = """
[safety]
v_input_max_v = {v_input_max_v}
i_nudge_max_a = {i_nudge_max_a}
i_bias_max_a = 1e-3
compliance_a = 1.0
pulse_amplitude_max_v = 3.0
pulse_width_max_s = 1e-3
v_read_max_v = 0.5
max_pulses_per_step = {max_pulses}
max_pulses_per_run = 1000000000
reading_band_v = [-12.0, 12.0]
max_compliance_trips = 3
"""


def board_head(name: str, arch: str, board_extra: str = "") -> str:
    """The ``[board]`` and ``[network]`` sections of a test board file (1-100 uS devices).

    ``board_extra``: more ``[board]`` lines, each ending in a newline.
    """
    return f"""
[board]
name = "{name}"
{board_extra}
[network]
arch = "{arch}"
g_min_s = 1e-6
g_max_s = 100e-6
"""


def serial_board_text(
    arch: str = "16-8-4",
    *,
    timeout_s: float = 1.0,  # generous: the virtual board answers late on a busy CPU
    retry_attempts: int = 3,
    v_input_max_v: float = 10.0,
    i_nudge_max_a: float = 2e-4,
    max_pulses: int = 100,
    wiring: str = "",
    extra: str = "",
) -> str:
    """A board file for the virtual serial board (URL from ``${HWLOOP_BOARD_URL}``)."""
    wiring = wiring or (
        "inputs = { first = 0 }\nnudges = { first = 0 }\nbiases = { first = 0 }\n"
        "meter = { first = 0 }\ncrosspoints = { first = 0 }\n"
    )
    return board_head("test serial board", arch, "ramp_step_time_s = 0.0\n") + f"""
[instruments.board]
kind = "serial-board"
url = "${{HWLOOP_BOARD_URL}}"

[instruments.board.options]
timeout_s = {timeout_s}
retry_attempts = {retry_attempts}
retry_backoff_s = 0.0

[roles]
inputs = "board"
nudges = "board"
biases = "board"
meter = "board"
crosspoints = "board"

[wiring]
{wiring}
[pulse]
amplitude_v = 1.0
width_s = 1e-6
step_s = 0.99e-6
read_v = 0.2
{SAFETY.format(v_input_max_v=v_input_max_v, i_nudge_max_a=i_nudge_max_a, max_pulses=max_pulses)}
{extra}
"""


def scpi_board_text(
    arch: str = "16-8-4", *, v_input_max_v: float = 10.0, i_nudge_max_a: float = 2e-4,
    crosspoint_smu: str = "keithley2600",
) -> str:
    """A board file for the virtual SCPI bench with bias channels (resources from the env).

    ``crosspoint_smu``: the pulsing SMU behind the 707B, ``"keithley2600"`` (the 2601B,
    ``HWLOOP_XSMU_RESOURCE``) or ``"keithley2400"`` (the 2400, ``HWLOOP_K2400_RESOURCE``).
    """
    smu_resource, smu_channel = {
        "keithley2600": ("${HWLOOP_XSMU_RESOURCE}", 'smu_channel = "smua", '),
        "keithley2400": ("${HWLOOP_K2400_RESOURCE}", ""),
    }[crosspoint_smu]
    sizes = [int(s) for s in arch.split("-")]
    n_in, n_out, n_free = sizes[0], sizes[-1], sum(sizes[1:])
    return board_head("test SCPI bench", arch) + f"""
[instruments.smu]
kind = "keithley2600"
resource = "${{HWLOOP_SMU_RESOURCE}}"
options = {{ n_channels = {n_in + n_out + n_free}, nplc = 0.01, visa_library = "@py" }}

[instruments.daq]
kind = "daq6510"
resource = "${{HWLOOP_DAQ_RESOURCE}}"
options = {{ n_channels = {n_free}, nplc = 0.01, range_v = 10.0, visa_library = "@py" }}

[instruments.crossbar]
kind = "keithley707b+smu"
resource = "${{HWLOOP_MATRIX_RESOURCE}}"
smu_resource = "{smu_resource}"
options = {{ smu_kind = "{crosspoint_smu}", {smu_channel}nplc = 0.01, visa_library = "@py" }}

[roles]
inputs = "smu"
nudges = "smu"
biases = "smu"
meter = "daq"
crosspoints = "crossbar"

[wiring]
inputs = {{ first = 0 }}
nudges = {{ first = {n_in} }}
biases = {{ first = {n_in + n_out} }}
meter = {{ first = 0 }}
crosspoints = {{ first = 0 }}

[pulse]
amplitude_v = 1.0
width_s = 1e-4
step_s = 0.99e-6
read_v = 0.2
{SAFETY.format(v_input_max_v=v_input_max_v, i_nudge_max_a=i_nudge_max_a, max_pulses=100)}
"""


class ServedBoard(RealBoard):
    """A RealBoard that stops its virtual instruments after it is closed."""

    stop_server: Callable[[], None] = staticmethod(lambda: None)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.stop_server()


def open_serial(
    seed: int,
    arch: str = "16-8-4",
    *,
    preset: str = "reram",
    read_noise_v: float | None = None,
    faults: FaultConfig | None = None,
    text: str | None = None,
    **kw: Any,
) -> tuple[ServedBoard, VirtualBoard]:
    """A virtual serial board (seeded) and a RealBoard on it."""
    opts: dict[str, Any] = {"arch": arch, "preset": preset}
    if read_noise_v is not None:
        opts["read_noise_v"] = read_noise_v
    vb = VirtualBoard(opts, seed=seed, faults=faults)
    url = vb.start_tcp()
    try:
        bf = parse_board_file(text or serial_board_text(arch, **kw),
                              env={"HWLOOP_BOARD_URL": url})
        board = ServedBoard(bf)
    except BaseException:
        vb.close()
        raise
    board.stop_server = vb.close
    return board, vb


def open_scpi(
    seed: int, arch: str = "16-8-4", *, text: str | None = None,
    crosspoint_smu: str = "keithley2600",
) -> tuple[ServedBoard, VirtualScpiBench]:
    """A virtual SCPI bench (seeded, with bias channels) and a RealBoard on it.

    ``crosspoint_smu``: see :func:`scpi_board_text` (ignored with ``text``).
    """
    net = BenchNetwork({"arch": arch, "preset": "reram"}, np.random.default_rng(seed))
    bench = VirtualScpiBench(net, bias_channels=True)
    bench.start()
    env = {
        "HWLOOP_SMU_RESOURCE": bench.resources["smu"],
        "HWLOOP_DAQ_RESOURCE": bench.resources["daq"],
        "HWLOOP_MATRIX_RESOURCE": bench.resources["matrix"],
        "HWLOOP_XSMU_RESOURCE": bench.resources["xsmu"],
        "HWLOOP_K2400_RESOURCE": bench.resources["k2400"],
    }
    try:
        board = ServedBoard(parse_board_file(
            text or scpi_board_text(arch, crosspoint_smu=crosspoint_smu), env=env))
    except BaseException:
        bench.stop()
        raise
    board.stop_server = bench.stop
    return board, bench


def settled_nonreciprocal(
    arch: str = "6-8-6-3", **opts: object
) -> tuple[NonReciprocalBoard, np.ndarray, np.ndarray]:
    """A seeded ``nonreciprocal`` board settled on 4 random inputs, with 0.3 V targets."""
    board = open_board("nonreciprocal", {"arch": arch, **opts}, np.random.default_rng(11))
    assert isinstance(board, NonReciprocalBoard)
    sizes = [int(x) for x in arch.split("-")]
    rng = np.random.default_rng(12)
    v_in = rng.normal(size=(4, sizes[0]))
    y = 0.3 * rng.normal(size=(4, sizes[-1]))
    board.apply_inputs(v_in)
    board.settle()
    return board, v_in, y


def central_difference(
    values: NDArray[np.float64],
    loss: Callable[[], float],
    h: float,
    changed: Callable[[], None] = lambda: None,
) -> NDArray[np.float64]:
    """``d loss / d values[k]`` for every ``k`` by central differences of step ``h``.

    ``values`` is changed in place and restored; ``changed()`` runs after each change
    (for example to drop a board's cached solution).
    """
    out = np.empty(len(values))
    for k in range(len(values)):
        old = values[k]
        values[k] = old + h
        changed()
        lp = loss()
        values[k] = old - h
        changed()
        lm = loss()
        values[k] = old
        changed()
        out[k] = (lp - lm) / (2 * h)
    return out
