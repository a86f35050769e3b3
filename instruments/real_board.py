"""``RealBoard``: the Device contract on instruments, as a board file wires them.

A :class:`RealBoard` is built from a board file (:mod:`instruments.board_file`):
each instrument is opened, identified and checked (outputs found on are ramped
down and put in the safe state before anything else), and the network's nodes
and edges are mapped to instrument channels and crosspoints by the file's
wiring, with its calibration applied to every level sent and every reading.

Batches are looped over inside each call (a bench has one set of sources):

* :meth:`~RealBoard.apply_inputs` checks and stores the batch, and
  :meth:`~RealBoard.apply_nudge` the nudge currents (resistive nudges are not
  supported: a current source per output is what the roles offer);
* :meth:`~RealBoard.read_nodes` runs, per example, "set the sources of the
  example, wait the settle time, read N samples of the free nodes"; input nodes
  (no meter channel) read back the level their source was set to;
* :meth:`~RealBoard.program_pulses` and :meth:`~RealBoard.program_deltas` send
  pulse counts to the crosspoints (one bulk call on the serial board), deltas
  being converted with the nominal step of the board file.

Safety: every request is checked against the board file's limits before
anything is applied (the ``hwloop.device.check_*`` helpers) and each level again
right before it is written; nothing is clipped. A reading outside the plausible
band of the board file (or not finite) and more compliance trips than the board
file tolerates abort with :class:`hwloop.errors.LimitError`; any instrument fault
puts every instrument in its safe state before the error propagates. Transport
retries and warnings, safety actions, and (per ``log_exchanges``) the wire-level
exchanges around each fault are reported as ``(kind, message)`` events to the
sink set with :meth:`~RealBoard.set_event_sink` (``hwloop train`` connects it to
the session log; events from before that are buffered and delivered then).

Units: V, A, S, s. Timestamps: s since the board object was created, host
monotonic clock, spaced as the instrument's own sample times.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hwloop.device import (
    BoardDescription,
    CurrentNudge,
    NodeReading,
    Nudge,
    ProgramResult,
    ProgramStatus,
    ResistiveNudge,
    SampleFlag,
    check_inputs_within_limits,
    check_nudge_within_limits,
)
from hwloop.errors import ConfigError, HwloopError, LimitError, UnsupportedError
from hwloop.layered import describe_layered, parse_arch
from hwloop.plugins import Option, backend
from instruments.board_file import BoardFile, InstrumentSpec, load_board_file

__all__ = ["EventSink", "RealBoard", "make_real_board"]

_log = logging.getLogger("hwloop.instruments.real_board")

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

EventSink = Callable[[str, str], None]
"""``sink(kind, message)``; kind ``"retry"``, ``"warning"``, ``"safety"`` or ``"info"``."""

_COMPLIANCE = np.uint8(SampleFlag.COMPLIANCE)
_SOURCE_ROLES = ("inputs", "nudges", "biases")


# --------------------------------------------------------------------------- instruments


@dataclass
class _Instrument:
    """One opened instrument (or the 707B + SMU pair) and what the board uses of it."""

    spec: InstrumentSpec
    driver: Any
    identity: str
    closers: list[Callable[[], None]]
    """Release the connection(s); each closer puts its instrument safe first."""
    hard_closers: list[Callable[[], None]]
    """Release the connection(s) without talking to the instrument (it stopped answering)."""
    channel_counts: dict[str, int] = field(default_factory=dict)
    """Channels available per role (for the wiring check)."""
    v_read_range_v: float = float("inf")
    dead: bool = False
    """True once it stopped answering (no further exchange is attempted)."""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def label(self) -> str:
        return f"{self.spec.name!r} ({self.spec.kind} at {self.spec.address})"


def _tsp_link_names(n: int) -> tuple[str, ...]:
    """``smua, smub, node[2].smua, node[2].smub, ...`` (TSP-Link order)."""
    out = []
    for j in range(n):
        node, smu = j // 2 + 1, "smua" if j % 2 == 0 else "smub"
        out.append(smu if node == 1 else f"node[{node}].{smu}")
    return tuple(out)


def _sequential_routes(n: int, rows: str, columns: int, slots: Sequence[int]) -> list[list[str]]:
    """Crosspoint ``c`` -> one relay: slot, row, column in row-major order."""
    per = len(rows) * columns
    if n > per * len(slots):
        raise ConfigError(
            f"{n} crosspoints do not fit {len(slots)} slot(s) of {per} relays; give explicit routes"
        )
    out = []
    for c in range(n):
        s, rem = divmod(c, per)
        r, col = divmod(rem, columns)
        out.append([f"{slots[s]}{rows[r]}{col + 1:02d}"])
    return out


class _Opener:
    """Opens the instruments of a board file, with the board's callbacks attached."""

    def __init__(self, board: RealBoard, bf: BoardFile) -> None:
        self.board = board
        self.bf = bf
        self._rms: dict[str, Any] = {}

    def _used_channels(self, name: str, roles: Sequence[str]) -> int:
        n = 0
        for role in roles:
            if getattr(self.bf.roles, role) == name:
                ch = getattr(self.bf.wiring, role)
                if ch.size:
                    n = max(n, int(ch.max()) + 1)
        return n

    def _visa(self, spec: InstrumentSpec, address: str, label: str) -> Any:
        from instruments.visa_transport import VisaTransport

        o = spec.options
        lib = str(o.get("visa_library", ""))
        if lib not in self._rms:
            import pyvisa

            try:
                self._rms[lib] = pyvisa.ResourceManager(lib)
            except Exception as exc:  # pyvisa raises several types for a missing backend
                raise ConfigError(
                    f"instrument {spec.name!r}: VISA library {lib!r} cannot be loaded ({exc}); "
                    'install it or set options.visa_library = "@py"'
                ) from None
        name = spec.name
        return VisaTransport.open(
            address,
            resource_manager=self._rms[lib],
            name=label,
            timeout_s=float(o.get("timeout_s", 2.0)),
            max_retries=int(o.get("max_retries", 3)),
            resync_timeout_s=min(1.0, float(o.get("timeout_s", 2.0))),
            on_exchange=lambda d, text, t: self.board._exchange(f"{name} {d} {text!r}"),
            on_event=lambda kind, msg: self.board._event(kind, msg),
        )

    def open(self, spec: InstrumentSpec) -> _Instrument:
        kind = spec.kind
        if kind == "serial-board":
            return self._serial(spec)
        if kind == "keithley2600":
            return self._k2600(spec)
        if kind == "keithley2400":
            return self._k2400(spec)
        if kind == "daq6510":
            return self._daq(spec)
        return self._matrix(spec)

    def _serial(self, spec: InstrumentSpec) -> _Instrument:
        from instruments.serial_board import SerialBoardDriver
        from instruments.transport import ExchangeRecord, RetryPolicy

        o = spec.options
        name = spec.name

        def on_exchange(rec: ExchangeRecord) -> None:
            self.board._exchange(
                f"{name} {rec.direction} {rec.command} seq {rec.seq}: {rec.data_hex[:96]}"
                + ("..." if len(rec.data_hex) > 96 else "")
            )

        retry = RetryPolicy(
            attempts=int(o.get("retry_attempts", 3)),
            backoff_s=float(o.get("retry_backoff_s", 0.02)),
        )
        d = SerialBoardDriver.open(
            spec.address,
            baudrate=int(o.get("baudrate", 115_200)),
            base_timeout_s=float(o.get("timeout_s", 0.5)),
            retry=retry,
            on_exchange=on_exchange,
            on_event=lambda kind, msg: self.board._event(kind, f"{name}: {msg}"),
        )
        i = d.info
        return _Instrument(
            spec,
            d,
            d.identity(),
            [d.close],
            [d.transport.close],
            {
                "inputs": i.n_input_channels,
                "nudges": i.n_nudge_channels,
                "biases": i.n_bias_channels,
                "meter": i.n_adc_channels,
                "crosspoints": i.n_crosspoints,
            },
            v_read_range_v=float(i.adc_range_v),
        )

    def _k2600(self, spec: InstrumentSpec) -> _Instrument:
        from instruments.keithley2600 import Keithley2600

        o = spec.options
        t = self._visa(spec, spec.address, spec.name)
        try:
            if "channels" in o:
                chans = tuple(o["channels"])
            else:
                n = int(o.get("n_channels", 0)) or max(
                    2, self._used_channels(spec.name, ("inputs", "nudges", "biases", "meter"))
                )
                chans = _tsp_link_names(n)
            d = Keithley2600(
                t,
                chans,
                model=o.get("model"),
                v_max_v=o.get("v_max_v"),
                i_max_a=o.get("i_max_a"),
                nplc=float(o.get("nplc", 1.0)),
                line_frequency_hz=float(o.get("line_frequency_hz", 50.0)),
            )
        except BaseException:
            t.close()
            raise
        n = len(chans)
        counts = {"inputs": n, "nudges": n, "biases": n, "meter": n}
        return _Instrument(spec, d, d.identity(), [d.close], [t.close], counts)

    def _k2400(self, spec: InstrumentSpec) -> _Instrument:
        from instruments.keithley2400 import Keithley2400

        o = spec.options
        t = self._visa(spec, spec.address, spec.name)
        try:
            d = Keithley2400(
                t,
                v_max_v=float(o.get("v_max_v", 210.0)),
                i_max_a=float(o.get("i_max_a", 1.05)),
                nplc=float(o.get("nplc", 1.0)),
                line_frequency_hz=float(o.get("line_frequency_hz", 50.0)),
                pulse_width_min_s=float(o.get("pulse_width_min_s", 1e-3)),
            )
        except BaseException:
            t.close()
            raise
        counts = {"inputs": 1, "nudges": 1, "biases": 1, "meter": 1}
        return _Instrument(spec, d, d.identity(), [d.close], [t.close], counts)

    def _daq(self, spec: InstrumentSpec) -> _Instrument:
        from instruments.daq6510 import DAQ6510, VOLTAGE_CARD_CHANNELS

        o = spec.options
        if "channels" in o:
            nums = tuple(o["channels"])
        else:
            n = int(o.get("n_channels", 0)) or self._used_channels(spec.name, ("meter",))
            nums = VOLTAGE_CARD_CHANNELS[: max(n, 1)]
        t = self._visa(spec, spec.address, spec.name)
        try:
            d = DAQ6510(
                t,
                nums,
                nplc=float(o.get("nplc", 1.0)),
                range_v=o.get("range_v", 10.0),
                line_frequency_hz=float(o.get("line_frequency_hz", 50.0)),
            )
        except BaseException:
            t.close()
            raise
        rng = float("inf") if d.range_v is None else float(d.range_v)
        return _Instrument(spec, d, d.identity(), [d.close], [t.close], {"meter": len(nums)},
                           v_read_range_v=rng)

    def _matrix(self, spec: InstrumentSpec) -> _Instrument:
        from instruments.keithley707b import Keithley707B, SwitchedCrosspoints
        from instruments.keithley2400 import Keithley2400
        from instruments.keithley2600 import Keithley2600

        o = spec.options
        lim = self.bf.safety.limits
        assert spec.smu_address is not None
        rows = str(o.get("rows", "ABCDEFGH"))
        columns = int(o.get("columns", 12))
        slots = tuple(o.get("slots", (1, 2, 3, 4, 5, 6)))
        routes_opt = o.get("routes", "sequential")
        if routes_opt == "sequential":
            n = int(o.get("n_crosspoints", 0)) or self._used_channels(spec.name, ("crosspoints",))
            routes: Sequence[Sequence[str]] = _sequential_routes(n, rows, columns, slots)
        else:
            routes = routes_opt
        width_min = float(o.get("pulse_width_min_s", 1e-5))
        width_max = float(o.get("pulse_width_max_s", lim.pulse_width_max_s))
        max_pulses = int(o.get("max_pulses", lim.max_pulses_per_call))
        tm = self._visa(spec, spec.address, f"{spec.name} matrix")
        closers: list[Callable[[], None]] = []
        hard: list[Callable[[], None]] = [tm.close]
        try:
            matrix = Keithley707B(tm, rows=rows, columns=columns, slots=slots)
            closers.append(matrix.close)
            ts = self._visa(spec, spec.smu_address, f"{spec.name} SMU")
            hard.append(ts.close)
            smu_kind = str(o.get("smu_kind", "keithley2600"))
            smu_inst: Any
            if smu_kind == "keithley2600":
                k26 = Keithley2600(ts, (str(o.get("smu_channel", "smua")),),
                                   nplc=float(o.get("nplc", 1.0)),
                                   line_frequency_hz=float(o.get("line_frequency_hz", 50.0)))
                smu_inst = k26
                smu: Any = k26.channel(0, width_min_s=width_min, width_max_s=width_max,
                                       max_count=max_pulses)
            elif smu_kind == "keithley2400":
                smu_inst = smu = Keithley2400(ts, nplc=float(o.get("nplc", 1.0)),
                                              pulse_width_min_s=width_min)
            else:
                raise ConfigError(
                    f"instrument {spec.name!r}: options.smu_kind = {smu_kind!r} is not known; "
                    'use "keithley2600" or "keithley2400"'
                )
            closers.append(smu_inst.close)
            cross = SwitchedCrosspoints(
                matrix,
                smu,
                routes,
                pulse_amplitude_max_v=lim.pulse_amplitude_max_v,
                pulse_width_range_s=(width_min, width_max),
                max_pulses=max_pulses,
                v_read_max_v=self.bf.safety.v_read_max_v,
            )
        except BaseException:
            for c in hard:
                with contextlib.suppress(Exception):
                    c()
            raise
        ident = f"{matrix.identity()} | {smu_inst.identity()}"
        drv = _MatrixPair(cross, smu_inst)
        return _Instrument(spec, drv, ident, closers, hard, {"crosspoints": len(cross.routes)})


class _MatrixPair:
    """A 707B and its pulsing SMU as one instrument (``keithley707b+smu``)."""

    def __init__(self, cross: Any, smu_inst: Any) -> None:
        self.cross = cross
        self.smu_inst = smu_inst

    def safe_state(self) -> None:
        try:
            self.smu_inst.safe_state()
        finally:
            self.cross.matrix.safe_state()

    def is_energised(self) -> bool:
        return bool(self.cross.matrix.is_energised() or self.smu_inst.is_energised())


# --------------------------------------------------------------------------- the board


class RealBoard:
    """The Device contract on the instruments of a board file (see the module docstring).

    Args:
        board_file: the validated board file.

    Raises:
        ConfigError: the wiring does not fit the instruments (channel counts).
        HwloopError: an instrument cannot be opened or does not answer (everything
            opened so far is put safe and closed again).
    """

    def __init__(self, board_file: BoardFile) -> None:
        self._bf = bf = board_file
        self._t0 = time.monotonic()
        self._sink: EventSink | None = None
        self._pending: list[tuple[str, str]] = []
        self._history: collections.deque[tuple[str, str]] = collections.deque(maxlen=2000)
        self._wire: collections.deque[str] = collections.deque(maxlen=bf.board.exchange_history)
        self._closed = False
        self._faulted = False
        self._unsafe_report = ""
        self._safe_confirmed = False
        self._compliance_trips = 0
        self._pulses_used = 0
        self._last_stamp = -np.inf
        self._settle_pending = False
        self._settle_s = bf.board.settle_time_s
        net = bf.network
        self._v_in: FloatArray | None = None
        self._nudge_a: FloatArray | None = None
        self._on: dict[str, FloatArray | None] = dict.fromkeys(_SOURCE_ROLES)
        self._inst: dict[str, _Instrument] = {}
        opener = _Opener(self, bf)
        try:
            for name, spec in bf.instruments.items():
                self._inst[name] = opener.open(spec)
                self._event("info", f"connected {self._inst[name].label}: "
                            f"{self._inst[name].identity}")
            self._check_wiring()
            energised = self._go_safe_on_connect()
            self._configure()
        except BaseException:
            for inst in self._inst.values():
                with contextlib.suppress(Exception):
                    for c in inst.closers:
                        c()
            raise
        lim = bf.safety.limits
        with_biases = bf.roles.biases is not None
        meter = self._inst[bf.roles.meter]
        info: dict[str, object] = {
            "board_file": bf.path,
            "board_file_sha256": bf.sha256,
            "device_model": "physical board (board file)",
            "layer_sizes": list(net.sizes),
            # what identifies the bench (stable across connections, so a resumed run can
            # check it is on the same board); addresses and connect-time findings are events
            "instruments": {
                n: {"kind": i.spec.kind, "identity": i.identity} for n, i in self._inst.items()
            },
            "roles": {r: getattr(bf.roles, r) for r in ("inputs", "nudges", "biases", "meter",
                                                        "crosspoints")},
            "settle_time_s": bf.board.settle_time_s,
            "pulse": {"amplitude_v": bf.pulse.amplitude_v, "width_s": bf.pulse.width_s,
                      "step_s": bf.pulse.step_s, "read_v": bf.pulse.read_v},
            "reading_band_v": list(bf.safety.reading_band_v),
            "max_compliance_trips": bf.safety.max_compliance_trips,
        }
        self.energised_on_connect: list[str] = energised
        """Instruments whose outputs were on when the board connected (ramped down)."""
        self._desc = describe_layered(
            net.sizes,
            name=bf.board.name,
            backend="board",
            g_min_s=net.g_min_s,
            g_max_s=net.g_max_s,
            limits=lim,
            v_read_range_v=meter.v_read_range_v,
            pulse_step_s=bf.pulse.step_s,
            g_scale_s=net.g_scale_s,
            with_biases=with_biases,
            info=info,
        )
        self._free = self._desc.free_nodes
        self._bias_a = np.zeros(len(self._desc.bias_nodes))
        self._free_pos = np.full(self._desc.n_nodes, -1, dtype=np.int64)
        self._free_pos[self._free] = np.arange(len(self._free))
        self._in_pos = np.full(self._desc.n_nodes, -1, dtype=np.int64)
        self._in_pos[self._desc.input_nodes] = np.arange(len(self._desc.input_nodes))
        self._safe_confirmed = True

    # ------------------------------------------------------------------ connect
    def _check_wiring(self) -> None:
        bf = self._bf
        for role in ("inputs", "nudges", "biases", "meter", "crosspoints"):
            name = getattr(bf.roles, role)
            if name is None:
                continue
            inst = self._inst[name]
            ch = getattr(bf.wiring, role)
            n = inst.channel_counts.get(role)
            if n is not None and ch.size and int(ch.max()) >= n:
                raise ConfigError(
                    f"board file {bf.path}: [wiring] {role} uses channel {int(ch.max())} but "
                    f"{inst.label} has {n} (0..{n - 1}); fix the wiring, or check that the "
                    f"instrument serves the network {bf.network.arch}"
                )

    def _go_safe_on_connect(self) -> list[str]:
        """Read back every instrument's outputs; ramp down / go safe; return the energised."""
        from instruments.serial_board import SerialBoardDriver

        found = []
        for inst in self._inst.values():
            d = inst.driver
            if isinstance(d, SerialBoardDriver):
                st = d.get_state()
                if st.energised:
                    found.append(inst.name)
                    self._ramp_down(inst, st.inputs_v, st.nudge_a, st.bias_a)
            elif d.is_energised():
                found.append(inst.name)
                d.safe_state()
                self._event(
                    "safety",
                    f"{inst.label} had outputs on (or relays closed) at connect; they were "
                    "switched to 0 and off (this driver cannot read the levels to ramp them)",
                )
            d.safe_state()
        return found

    def _ramp_down(self, inst: _Instrument, v: FloatArray, i_n: FloatArray,
                   i_b: FloatArray) -> None:
        d = inst.driver
        steps = self._bf.board.ramp_steps
        wait = self._bf.board.ramp_step_time_s
        iv, inn, ib = np.flatnonzero(v), np.flatnonzero(i_n), np.flatnonzero(i_b)
        for k in range(steps - 1, 0, -1):
            frac = k / steps
            if iv.size:
                d.set_voltages(iv, v[iv] * frac)
            if inn.size:
                d.set_currents(inn, i_n[inn] * frac)
            if ib.size:
                d.set_bias_currents(ib, i_b[ib] * frac)
            if wait > 0:
                time.sleep(wait)
        d.safe_state()
        self._event(
            "safety",
            f"{inst.label} had outputs on at connect (largest input "
            f"{float(np.max(np.abs(v), initial=0)):.4g} V, nudge "
            f"{float(np.max(np.abs(i_n), initial=0)):.4g} A, bias "
            f"{float(np.max(np.abs(i_b), initial=0)):.4g} A); ramped down in {steps} steps "
            "and put in the safe state",
        )

    def _configure(self) -> None:
        from instruments.keithley2600 import Keithley2600

        lim = self._bf.safety.limits
        for inst in self._inst.values():
            d = inst.driver
            if isinstance(d, Keithley2600):
                d.configure(
                    current_limit_a=lim.compliance_a,
                    voltage_limit_v=min(d.ranges.v_max_v, lim.v_input_max_v),
                )
            elif isinstance(d, _MatrixPair) and isinstance(d.smu_inst, Keithley2600):
                d.smu_inst.configure(current_limit_a=lim.compliance_a)

    # ------------------------------------------------------------------ events
    def set_event_sink(self, sink: EventSink | None) -> None:
        """Send events to ``sink(kind, message)`` (buffered ones first); ``None`` detaches.

        Kinds: ``"retry"``, ``"warning"`` (transport), ``"safety"`` (limits, faults,
        safe-state actions), ``"info"`` (connections, wire-level exchanges).
        """
        self._sink = sink
        if sink is not None:
            pending, self._pending = self._pending, []
            for kind, msg in pending:
                self._deliver(kind, msg)

    @property
    def events(self) -> list[tuple[str, str]]:
        """Every event since the board was created, oldest first (at most 2000)."""
        return list(self._history)

    def _deliver(self, kind: str, message: str) -> None:
        if self._sink is None:
            if len(self._pending) < 2000:
                self._pending.append((kind, message))
            return
        try:
            self._sink(kind, message)
        except Exception as exc:  # the log must never stop the board going safe
            _log.warning("event sink failed (%s): %s %s", exc, kind, message)

    def _event(self, kind: str, message: str) -> None:
        msg = " ".join(message.split())
        if kind in ("retry", "warning", "safety") and self._bf.board.log_exchanges == "faults":
            wire, self._wire = list(self._wire), collections.deque(
                maxlen=self._bf.board.exchange_history
            )
            for w in wire:
                self._history.append(("info", w))
                self._deliver("info", f"wire: {w}")
        self._history.append((kind, msg))
        (_log.warning if kind != "info" else _log.info)("%s: %s", kind, msg)
        self._deliver(kind, msg)

    def _exchange(self, text: str) -> None:
        mode = self._bf.board.log_exchanges
        if mode == "faults":
            self._wire.append(text)
        elif mode == "all":
            self._deliver("info", f"wire: {text}")

    # ------------------------------------------------------------------ faults
    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Any instrument fault: record it, put every instrument safe, re-raise."""
        try:
            yield
        except HwloopError as exc:
            self._fault(what, exc)
            raise

    def _call(self, inst: _Instrument, fn: Callable[..., Any], *args: Any) -> Any:
        """Call a driver method; an instrument that stops answering is marked dead."""
        from instruments.transport import BoardTimeoutError, LinkError, UnconfirmedCommandError
        from instruments.visa_transport import InstrumentTimeoutError

        if inst.dead:
            raise HwloopError(
                f"{inst.label} stopped answering earlier in this run; reconnect it and start "
                "a new run"
            )
        try:
            return fn(*args)
        except (BoardTimeoutError, LinkError, InstrumentTimeoutError):
            inst.dead = True
            raise
        except UnconfirmedCommandError as exc:
            if not exc.resynchronised:  # not even IDENTIFY was answered afterwards
                inst.dead = True
            raise

    def _fault(self, what: str, exc: BaseException) -> None:
        self._faulted = True
        text = " ".join(str(exc).split())
        self._event("safety", f"{what} failed: {type(exc).__name__}: {text}"[:400])
        failed = self._all_safe()
        if failed:
            self._unsafe_report = "safe state NOT confirmed for " + "; ".join(failed)
            self._event("safety", self._unsafe_report)
        else:
            self._event("safety", "every instrument confirmed its safe state after the fault")

    def _all_safe(self) -> list[str]:
        """Put every instrument in its safe state (sources first); return the failures."""
        order = sorted(
            self._inst.values(),
            key=lambda i: 0 if i.name in {self._bf.roles.inputs, self._bf.roles.nudges,
                                          self._bf.roles.biases} else 1,
        )
        failed = []
        for inst in order:
            if inst.dead:
                failed.append(f"{inst.label}: not answering (its link is closed on close(); "
                              "a board goes safe when its host disconnects)")
                continue
            try:
                self._call(inst, inst.driver.safe_state)
                self._confirm(inst)
            except Exception as exc:
                failed.append(f"{inst.label}: {' '.join(str(exc).split())[:160]}")
        self._on = dict.fromkeys(_SOURCE_ROLES)
        self._safe_confirmed = not failed
        return failed

    # ------------------------------------------------------------------ Describable
    def describe(self) -> BoardDescription:
        """The board description (layout of the board file's network, limits, identities)."""
        return self._desc

    @property
    def board_file(self) -> BoardFile:
        """The board file the board was built from."""
        return self._bf

    @property
    def pulses_used(self) -> int:
        """Programming pulses applied over the board object's life."""
        return self._pulses_used

    @property
    def compliance_trips(self) -> int:
        """Compliance trips seen so far."""
        return self._compliance_trips

    # ------------------------------------------------------------------ Biasable
    def apply_inputs(self, v_inputs: FloatArray) -> None:
        """Check and store the input voltages of a batch, ``(batch, n_inputs)`` V.

        Nothing is written here: each example's levels go out when it is read.

        Raises:
            LimitError: beyond ``v_input_max_v`` (nothing stored).
        """
        self._check_open()
        check_inputs_within_limits(v_inputs, self._desc.limits, len(self._desc.input_nodes))
        v = np.array(v_inputs, dtype=np.float64, copy=True)
        if self._v_in is not None and self._v_in.shape[0] != v.shape[0]:
            self._nudge_a = None  # a nudge sized for another batch cannot stay applied
        self._v_in = v

    def apply_nudge(self, nudge: Nudge | None) -> None:
        """Check and store a current nudge (``None`` releases it at once).

        Raises:
            LimitError: beyond ``i_nudge_max_a`` / ``beta_max_s``; nothing applied.
            UnsupportedError: a resistive nudge (or a complex one).
        """
        self._check_open()
        if nudge is None:
            self._nudge_a = None
            on = self._on["nudges"]
            if on is not None and np.any(on):
                with self._guard("releasing the nudge"), contextlib.suppress(_RetryExampleError):
                    # a compliance trip here already switched every source off
                    self._confirm(self._write("nudges", np.zeros(len(self._desc.output_nodes))))
            return
        if self._v_in is None:
            raise ConfigError("apply inputs before applying a nudge (the batch size is unknown)")
        check_nudge_within_limits(
            nudge, self._desc.limits, self._v_in.shape[0], len(self._desc.output_nodes),
            complex_ok=False,
        )
        if isinstance(nudge, ResistiveNudge):
            raise UnsupportedError(
                "this board has current sources on its outputs, not switched pull resistors: "
                "resistive nudges are not supported; use --nudge current"
            )
        assert isinstance(nudge, CurrentNudge)
        self._nudge_a = np.array(np.real(nudge.currents_a), dtype=np.float64)

    def set_bias_currents(self, i_bias_a: FloatArray) -> None:
        """Set the bias currents, A, one per ``bias_nodes`` entry (written with the next example).

        Raises:
            ConfigError: wrong shape or not finite.
            LimitError: beyond ``i_bias_max_a`` of the board file.
        """
        self._check_open()
        b = np.asarray(i_bias_a, dtype=np.float64)
        if b.shape != self._bias_a.shape:
            raise ConfigError(f"bias currents must have shape {self._bias_a.shape}, got {b.shape}")
        if not np.all(np.isfinite(b)):
            raise ConfigError("bias currents contain NaN or inf")
        self._check_level("biases", b)
        self._bias_a = b.copy()

    def read_bias_currents(self) -> FloatArray:
        """The bias currents as set, A (a copy; they are re-applied after a safe state)."""
        return self._bias_a.copy()

    # ------------------------------------------------------------------ Settleable
    def settle(self, settle_time_s: float | None = None) -> None:
        """Set the wait used after each example's sources are set, s (None: the board file's)."""
        self._check_open()
        if settle_time_s is not None and not (np.isfinite(settle_time_s) and settle_time_s >= 0):
            raise ConfigError(f"settle_time_s={settle_time_s} must be >= 0")
        if self._v_in is None:
            raise ConfigError("apply inputs before settling or reading the board")
        self._settle_s = self._bf.board.settle_time_s if settle_time_s is None else settle_time_s
        self._settle_pending = True

    # ------------------------------------------------------------------ writes
    def _check_level(self, role: str, levels: FloatArray) -> None:
        lim = self._desc.limits
        peak = float(np.max(np.abs(levels), initial=0.0))
        if role == "inputs":
            if peak > lim.v_input_max_v:
                raise LimitError(
                    f"input voltage {peak:.6g} V exceeds the limit v_input_max_v="
                    f"{lim.v_input_max_v:.6g} V; nothing was written"
                )
        elif role == "nudges" and peak > lim.i_nudge_max_a:
            raise LimitError(
                f"nudge current {peak:.6g} A exceeds i_nudge_max_a={lim.i_nudge_max_a:.6g} A; "
                "nothing was written"
            )
        elif role == "biases" and peak > self._bf.safety.i_bias_max_a:
            raise LimitError(
                f"bias current {peak:.6g} A exceeds i_bias_max_a="
                f"{self._bf.safety.i_bias_max_a:.6g} A; nothing was written"
            )

    def _confirm(self, inst: _Instrument) -> None:
        """Wait until a SCPI/TSP instrument has executed its writes (and check its errors).

        Writes return before the instrument executes them; the meter is another
        instrument, so without this a reading could precede the new levels.
        """
        self._call(inst, lambda: _confirm_driver(inst.driver))

    def _write(self, role: str, levels: FloatArray) -> _Instrument:
        """Write one role's levels (checked again here; calibration applied)."""
        from instruments.serial_board import ComplianceTripError, SerialBoardDriver
        from instruments.transport import UnconfirmedCommandError

        self._check_level(role, levels)
        bf = self._bf
        cal = bf.calibration
        gain, off = {
            "inputs": (cal.input_gain, cal.input_offset_v),
            "nudges": (cal.nudge_gain, cal.nudge_offset_a),
            "biases": (cal.bias_gain, cal.bias_offset_a),
        }[role]
        setpoints = (levels - off) / gain
        name = getattr(bf.roles, role)
        assert name is not None
        inst = self._inst[name]
        ch = getattr(bf.wiring, role)
        d = inst.driver
        if role == "inputs":
            fn = d.set_voltages
        elif role == "nudges" or not isinstance(d, SerialBoardDriver):
            fn = d.set_currents
        else:
            fn = d.set_bias_currents
        self._safe_confirmed = False
        try:
            self._call(inst, fn, ch, setpoints)
        except ComplianceTripError as exc:
            self._on = dict.fromkeys(_SOURCE_ROLES)  # the board went to its safe state
            self._trip(f"{inst.label}: {exc}")
            raise _RetryExampleError from None
        except UnconfirmedCommandError as exc:
            if not (isinstance(d, SerialBoardDriver) and exc.resynchronised):
                raise
            st = self._call(inst, d.get_state)
            have = {"inputs": st.inputs_v, "nudges": st.nudge_a, "biases": st.bias_a}[role]
            if not np.array_equal(have[ch], setpoints):
                raise
            self._event("warning", f"{inst.label}: {exc.command.name} was not confirmed, but "
                        "GET_STATE shows it applied; continuing")
        self._on[role] = levels.copy()
        return inst

    def _trip(self, what: str) -> None:
        self._compliance_trips += 1
        n, most = self._compliance_trips, self._bf.safety.max_compliance_trips
        self._event("safety", f"compliance trip {n} (of at most {most}): {what}")
        if n > most:
            raise LimitError(
                f"compliance tripped {n} times (the board file allows {most}): last {what}; "
                "the run is aborted: check the wiring, the devices and the levels"
            )

    def _apply_example(self, b: int) -> None:
        """Set the sources for example ``b`` (only what changed) and wait the settle time."""
        assert self._v_in is not None
        bf = self._bf
        changed = False
        while True:  # a compliance trip switches every source off: set them all again
            # (the trips are counted; past the board file's allowance _trip raises)
            try:
                want: dict[str, FloatArray] = {"inputs": self._v_in[b]}
                want["nudges"] = (
                    np.zeros(len(self._desc.output_nodes)) if self._nudge_a is None
                    else self._nudge_a[b]
                )
                if bf.roles.biases is not None:
                    want["biases"] = self._bias_a
                written: dict[str, _Instrument] = {}
                for role, levels in want.items():
                    on = self._on[role]
                    if on is None or not np.array_equal(on, levels):
                        inst = self._write(role, levels)
                        written[inst.name] = inst
                        changed = True
                for inst in written.values():
                    self._confirm(inst)
                break
            except _RetryExampleError:
                continue
        if (changed or self._settle_pending) and self._settle_s > 0:
            time.sleep(self._settle_s)

    # ------------------------------------------------------------------ Readable
    def read_nodes(
        self, n_samples: int = 1, nodes: NDArray[np.integer] | None = None
    ) -> NodeReading:
        """Read ``n_samples`` samples per example: per example set sources, settle, read.

        Free nodes are read through the meter (calibration applied); input nodes read
        back the level their source was set to; ground reads 0 V.

        Raises:
            ConfigError: bad arguments or no inputs applied.
            LimitError: a reading outside the board file's plausible band or not finite,
                or too many compliance trips (the board is put in its safe state).
        """
        self._check_open()
        if isinstance(n_samples, bool) or int(n_samples) != n_samples or n_samples < 1:
            raise ConfigError(f"n_samples={n_samples} must be an integer >= 1")
        n = int(n_samples)
        idx = np.asarray(self._free if nodes is None else nodes, dtype=np.int64)
        if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= self._desc.n_nodes)):
            raise ConfigError(f"node indices must lie in 0..{self._desc.n_nodes - 1}")
        if self._v_in is None:
            raise ConfigError("apply inputs before settling or reading the board")
        batch = self._v_in.shape[0]
        fpos = self._free_pos[idx]
        metered = np.flatnonzero(fpos >= 0)
        ipos = self._in_pos[idx]
        inputs_at = np.flatnonzero(ipos >= 0)
        meter_inst = self._inst[self._bf.roles.meter]
        channels = self._bf.wiring.meter[fpos[metered]]
        gain = self._bf.calibration.meter_gain[fpos[metered]]
        offset = self._bf.calibration.meter_offset_v[fpos[metered]]
        samples = np.zeros((n, batch, idx.size))
        flags = np.zeros((n, batch, idx.size), dtype=np.uint8)
        stamps = np.zeros((n, batch))
        with self._guard("read_nodes"):
            for b in range(batch):
                self._apply_example(b)
                t_host = time.monotonic() - self._t0
                if metered.size:
                    raw, fl, ts = self._call(meter_inst, meter_inst.driver.read_voltages,
                                             channels, n)
                    v = gain * np.asarray(raw, dtype=np.float64) + offset
                    self._check_readings(v, np.asarray(fl, dtype=np.uint8), idx[metered],
                                         channels, b)
                    samples[:, b, metered] = v
                    flags[:, b, metered] = fl
                    rel = np.asarray(ts, dtype=np.float64) - float(ts[0])
                else:
                    rel = np.zeros(n)
                if inputs_at.size:
                    samples[:, b, inputs_at] = self._v_in[b, ipos[inputs_at]]
                rel = np.maximum.accumulate(rel) + np.arange(n) * 1e-9  # strictly increasing
                start = max(t_host, self._last_stamp + 1e-9)
                stamps[:, b] = start + rel
                self._last_stamp = float(stamps[-1, b])
            self._settle_pending = False
        return NodeReading(samples_v=samples, timestamps_s=stamps, flags=flags, nodes=idx)

    def _check_readings(self, v: FloatArray, fl: NDArray[np.uint8], nodes: IntArray,
                        channels: IntArray, b: int) -> None:
        lo, hi = self._bf.safety.reading_band_v
        bad = ~np.isfinite(v) | (v < lo) | (v > hi)
        if bad.any():
            s, j = (int(x[0]) for x in np.nonzero(bad))
            flag = SampleFlag(int(fl[s, j]))
            raise LimitError(
                f"node {self._desc.node_names[nodes[j]]} (meter channel {int(channels[j])}) read "
                f"{v[s, j]:.6g} V{f' (flagged {flag.name})' if flag else ''} in example {b}, "
                f"outside the plausible band [{lo:g}, {hi:g}] V of the board file; the run is "
                "aborted: check the wiring, the input gain and the meter range"
            )
        if np.any(fl & _COMPLIANCE):
            j = int(np.nonzero(fl & _COMPLIANCE)[1][0])
            self._trip(f"a source was in compliance while node "
                       f"{self._desc.node_names[nodes[j]]} was read (example {b})")

    # ------------------------------------------------------------------ conductances
    def _check_edges(self, edges: NDArray[np.integer]) -> IntArray:
        e = np.asarray(edges)
        if e.ndim != 1 or (e.size and not np.issubdtype(e.dtype, np.integer)):
            raise ConfigError("edge indices must be a 1-D integer array")
        e = e.astype(np.int64)
        n = self._desc.n_edges
        if e.size and (e.min() < 0 or e.max() >= n):
            raise ConfigError(f"edge indices must lie in 0..{n - 1}")
        return e

    def read_conductances(self, edges: NDArray[np.integer] | None = None) -> FloatArray:
        """One read of the conductances at the board file's read voltage, S (None: all edges)."""
        self._check_open()
        e = np.arange(self._desc.n_edges) if edges is None else self._check_edges(edges)
        v = self._bf.pulse.read_v
        if abs(v) > self._bf.safety.v_read_max_v:  # checked at load; again before the write
            raise LimitError(f"read voltage {v:g} V exceeds v_read_max_v")
        inst = self._inst[self._bf.roles.crosspoints]
        cps = self._bf.wiring.crosspoints[e]
        with self._guard("read_conductances"):
            drv = inst.driver
            fn = (
                drv.cross.read_conductance if isinstance(drv, _MatrixPair)
                else drv.read_conductance
            )
            g = self._call(inst, fn, cps, v)
        return np.asarray(g, dtype=np.float64)

    def _check_budget(self, counts: IntArray) -> None:
        lim = self._desc.limits
        peak = int(np.max(np.abs(counts), initial=0))
        if peak > lim.max_pulses_per_call:
            raise LimitError(
                f"{peak} pulses on one edge exceed max_pulses_per_step="
                f"{lim.max_pulses_per_call} of the board file; split the update or raise the limit"
            )
        total = int(np.abs(counts).sum())
        if self._pulses_used + total > lim.max_pulses_per_run:
            raise LimitError(
                f"{total} more pulses would exceed max_pulses_per_run={lim.max_pulses_per_run}"
                f" ({self._pulses_used} used); start a new run or raise the limit"
            )

    def _pulse(self, e: IntArray, counts: IntArray) -> tuple[IntArray, NDArray[np.int8]]:
        """Apply signed pulse counts; (applied, ProgramStatus codes). Budget already checked."""
        from hwloop.board_protocol import PulseStatus
        from instruments.serial_board import ComplianceTripError, SerialBoardDriver

        p = self._bf.pulse
        lim = self._desc.limits
        if p.amplitude_v > lim.pulse_amplitude_max_v or p.width_s > lim.pulse_width_max_s:
            raise LimitError("pulse amplitude or width beyond the board file's limits")
        applied = np.zeros(e.size, dtype=np.int64)
        status = np.where(counts == 0, ProgramStatus.NO_CHANGE, ProgramStatus.OK).astype(np.int8)
        nz = np.flatnonzero(counts)
        if nz.size == 0:
            return applied, status
        inst = self._inst[self._bf.roles.crosspoints]
        cps = self._bf.wiring.crosspoints[e]
        d = inst.driver
        self._safe_confirmed = False
        if isinstance(d, SerialBoardDriver):
            todo = nz
            while todo.size:
                try:
                    rep = self._call(inst, d.pulse_many, cps[todo], counts[todo], p.amplitude_v,
                                     p.width_s)
                except ComplianceTripError as exc:
                    rep = exc.report
                    assert rep is not None
                    self._on = dict.fromkeys(_SOURCE_ROLES)
                    applied[todo] += rep.applied
                    self._pulses_used += rep.total_pulses
                    st = np.asarray(rep.status)
                    # the tripping crosspoint keeps its partial count; the skipped ones are resent
                    tripped = todo[st == PulseStatus.COMPLIANCE]
                    self._trip(f"{inst.label}: PULSE stopped at crosspoint "
                               f"{int(cps[tripped[0]]) if tripped.size else '?'}")
                    todo = todo[st == PulseStatus.SKIPPED]
                    continue
                applied[todo] += rep.applied
                self._pulses_used += rep.total_pulses
                st = np.asarray(rep.status)
                bound = (st == ProgramStatus.AT_MAX) | (st == ProgramStatus.AT_MIN)
                status[todo[bound]] = st[bound]
                break
        else:
            cross = d.cross
            for j in nz:
                c = int(counts[j])
                amp = p.amplitude_v if c > 0 else -p.amplitude_v
                done = int(self._call(inst, cross.pulse, int(cps[j]), amp, p.width_s, abs(c)))
                applied[j] = done if c > 0 else -done
                self._pulses_used += done
                if done < abs(c):
                    self._trip(f"{inst.label}: pulse train on crosspoint {int(cps[j])} stopped "
                               f"after {done} of {abs(c)} pulses")
        return applied, status

    def program_pulses(
        self, edges: NDArray[np.integer], pulses: NDArray[np.integer]
    ) -> ProgramResult:
        """Apply signed pulse counts to edges (limits checked before any pulse).

        Returns:
            What was done: applied counts (fewer after a compliance trip), statuses
            (``AT_MAX``/``AT_MIN`` as the board reports them), conductances unknown (NaN).
        """
        self._check_open()
        e = self._check_edges(edges)
        p = np.asarray(pulses)
        if p.shape != e.shape or (p.size and not np.issubdtype(p.dtype, np.integer)):
            raise ConfigError("pulses must be an integer array with one count per edge")
        if np.unique(e).size != e.size:
            raise ConfigError("each edge may appear once per programming call")
        counts = p.astype(np.int64)
        self._check_budget(counts)
        with self._guard("program_pulses"):
            applied, status = self._pulse(e, counts)
        nan = np.full(e.size, np.nan)
        return ProgramResult(
            edges=e,
            requested_pulses=counts,
            applied_pulses=applied,
            requested_delta_s=nan,
            g_before_s=nan.copy(),
            g_after_s=nan.copy(),
            status=status,
            pulse_amplitude_v=self._bf.pulse.amplitude_v,
            pulse_width_s=self._bf.pulse.width_s,
        )

    def program_deltas(
        self, edges: NDArray[np.integer] | None, delta_g_s: FloatArray
    ) -> ProgramResult:
        """Request conductance changes, S: rounded to pulses of the nominal step (open loop).

        ``edges=None`` addresses every edge in board order.
        """
        self._check_open()
        d = np.asarray(delta_g_s, dtype=np.float64)
        if edges is None:
            if d.shape != (self._desc.n_edges,):
                raise ConfigError(
                    f"delta_g_s must have shape ({self._desc.n_edges},) for all edges"
                )
            e = np.arange(self._desc.n_edges)
        else:
            e = self._check_edges(edges)
            if d.shape != e.shape:
                raise ConfigError("delta_g_s must have one value per edge")
            if np.unique(e).size != e.size:
                raise ConfigError("each edge may appear once per programming call")
        if not np.all(np.isfinite(d)):
            raise ConfigError("requested conductance changes contain NaN or inf")
        counts = np.rint(d / self._bf.pulse.step_s).astype(np.int64)
        self._check_budget(counts)
        with self._guard("program_deltas"):
            applied, status = self._pulse(e, counts)
        known = np.full(e.size, np.nan) if edges is not None else np.zeros(0)
        return ProgramResult(
            edges=None if edges is None else e,
            requested_pulses=counts,
            applied_pulses=applied,
            requested_delta_s=d,
            g_before_s=known,
            g_after_s=known.copy(),
            status=status,
            pulse_amplitude_v=self._bf.pulse.amplitude_v,
            pulse_width_s=self._bf.pulse.width_s,
        )

    # ------------------------------------------------------------------ safety
    def safe_state(self) -> None:
        """Every instrument to its safe state (sources first); release the nudge. Idempotent.

        Raises:
            HwloopError: an instrument could not confirm it (not raised again after a
                fault that was already reported: the first error is the one to see).
        """
        self._nudge_a = None
        if self._v_in is not None:
            self._v_in = np.zeros_like(self._v_in)
        if self._closed:
            return
        failed = self._all_safe()
        if failed:
            report = "safe state NOT confirmed for " + "; ".join(failed)
            if report != self._unsafe_report:  # once per distinct report
                self._event("safety", report)
            self._unsafe_report = report
            if not self._faulted:
                self._faulted = True
                raise HwloopError(
                    "the safe state could not be confirmed for " + "; ".join(failed)
                    + "; switch the outputs off by hand"
                )

    @property
    def is_safe(self) -> bool:
        """True when every instrument confirmed its safe state and nothing is commanded."""
        return (
            self._safe_confirmed
            and self._nudge_a is None
            and (self._v_in is None or not np.any(self._v_in))
        )

    def close(self) -> None:
        """Go to the safe state and release every instrument. Idempotent."""
        if self._closed:
            return
        err: HwloopError | None = None
        try:
            self.safe_state()
        except HwloopError as exc:
            err = exc
        self._closed = True
        for inst in self._inst.values():
            closers = inst.hard_closers if inst.dead else inst.closers
            for c in closers:
                try:
                    c()
                except Exception as exc:
                    if not inst.dead:
                        inst.dead = True
                        for h in inst.hard_closers:
                            with contextlib.suppress(Exception):
                                h()
                    self._event("warning", f"closing {inst.label}: "
                                f"{' '.join(str(exc).split())[:160]}")
        self._sink = None
        if err is not None:
            raise err

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError("the board is closed; open a new one")

    def __enter__(self) -> RealBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _confirm_driver(d: Any) -> None:
    """One round trip that a SCPI/TSP instrument answers only after its earlier writes."""
    from instruments.daq6510 import DAQ6510
    from instruments.keithley707b import Keithley707B
    from instruments.keithley2400 import Keithley2400
    from instruments.keithley2600 import Keithley2600
    from instruments.scpi_util import parse_float

    if isinstance(d, _MatrixPair):
        _confirm_driver(d.cross.matrix)
        _confirm_driver(d.smu_inst)
    elif isinstance(d, Keithley2600 | Keithley707B):
        d.check_errors()  # TSP: executed in order; also raises a queued error
    elif isinstance(d, Keithley2400 | DAQ6510):
        d.transport.query("*OPC?", parse=parse_float, idempotent=True)


class _RetryExampleError(Exception):
    """A compliance trip during a write: re-apply the example (internal)."""


REAL_BOARD_OPTIONS = (
    Option("board", "path", "board file (TOML): instruments, wiring, calibration, limits "
           "(examples in examples/boards/)", required=True),
    Option("arch", "str", "layer sizes; must equal the board file's [network] arch "
           "(unset: the board file's)"),
)
"""Options of the ``board`` backend (``hwloop backends board``)."""


def real_board_arch(options: Mapping[str, Any]) -> str | None:
    """The architecture a ``board`` option table trains: the board file's ``[network] arch``."""
    path = options.get("board")
    if not path:
        return None
    return load_board_file(Path(str(path))).network.arch


@backend(REAL_BOARD_OPTIONS, arch=real_board_arch)
def make_real_board(options: Mapping[str, Any], rng: np.random.Generator) -> RealBoard:
    """A real board: source-measure units, meters and switch matrices from a board file.

    Backend factory for the ``board`` entry point; ``options`` are checked against
    :data:`REAL_BOARD_OPTIONS` first. A bench draws no random numbers: ``rng`` is not
    used.

    Raises:
        ConfigError: a board-file error, or an ``arch`` that disagrees with it.
    """
    del rng
    bf = load_board_file(Path(str(options["board"])))
    arch = options.get("arch")
    if arch:
        sizes = parse_arch(str(arch))
        if sizes != bf.network.sizes:
            raise ConfigError(
                f"--arch {arch} disagrees with the board file {bf.path} (arch "
                f"{bf.network.arch}); drop --arch or pass --arch {bf.network.arch}"
            )
    board = RealBoard(bf)
    # current sources on the outputs, no switched pull resistors (apply_nudge refuses them)
    board._desc = dataclasses.replace(board._desc, supports_resistive_nudge=False)
    return board
