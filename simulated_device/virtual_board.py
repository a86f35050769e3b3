"""A virtual hwloop serial board: the board protocol served over TCP or a pseudo-terminal.

The board sits on a :class:`~simulated_device.bench_network.BenchNetwork` and
speaks ``docs/board-protocol.md``, so the real driver
(:class:`instruments.serial_board.SerialBoardDriver`) runs against it unchanged::

    with VirtualBoard({"arch": "8-4-2", "preset": "reram"}, seed=1) as vb:
        port = serial.serial_for_url(vb.url)          # "socket://127.0.0.1:PORT"

or from a shell (prints the URL, serves until Ctrl-C)::

    python -m simulated_device.virtual_board --arch 8-4-2 --preset reram --port 0
    python -m simulated_device.virtual_board --arch 8-4-2 --pty    # prints /dev/pts/N

Channel map (0-based):

* input channel ``i``  = the ``i``-th input node of the network;
* nudge channel ``j``  = the ``j``-th output node (current injected into it);
* bias channel ``b``   = the ``b``-th bias node (``describe().bias_nodes``);
* ADC channel ``c``    = the ``c``-th free node (``describe().free_nodes``: hidden, then outputs);
* crosspoint ``e``     = edge ``e`` of the network.

The board keeps its own safe state: every source to 0 and off on SAFE_STATE,
on a compliance trip, and when the client disconnects. It serves one client at
a time (others wait in the listen backlog). Faults for tests are configured by
:class:`FaultConfig` (see :meth:`VirtualBoard.set_faults`): whole-board counts, and
per-command :class:`~simulated_device.virtual_faults.FaultRule` s with a count, a rate
and a start (what ``hwloop virtual-board --fault`` installs). With
``FaultConfig.watchdog_s`` the board keeps the host watchdog of
``docs/board-protocol.md``: no valid frame for that long with an output on puts it in
its safe state.

Units: V, A, S, s. Timestamps are the emulator's simulated clock, s.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import os
import select
import socket
import sys
import threading
import time
import tty
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hwloop import __version__
from hwloop import board_protocol as bp
from hwloop.device import SampleFlag
from hwloop.errors import ConfigError, HwloopError, LimitError
from simulated_device.bench_network import BenchNetwork
from simulated_device.virtual_faults import FaultRule, fire_serial_rules

FRAME_GAP_S = 0.05
"""Silence after which the board drops an incomplete frame, s (the protocol's frame gap)."""


@dataclass(frozen=True)
class FaultConfig:
    """Faults the virtual board injects (all off by default).

    Count fields apply to the next ``N`` request frames (valid CRC) whose command
    is in :attr:`commands` (every command when ``None``), counted from the
    :meth:`VirtualBoard.set_faults` call that installed the configuration.

    Attributes:
        commands: command codes the count fields apply to (``None``: all).
        silent: ignore this many frames: not executed, never answered (a timeout).
        drop_replies: execute this many frames but drop their replies.
        delayed_replies: delay this many replies by :attr:`reply_delay_s` (-1: all).
        reply_delay_s: delay of a delayed reply, s (>= 0).
        garble_replies: flip bits in this many replies (header or payload; the CRC
            no longer matches).
        bad_crc_replies: send this many replies with a wrong CRC field.
        noise_before_replies: send this many replies preceded by :attr:`noise`.
        noise: garbage bytes sent before a noisy reply (may contain false starts).
        busy_replies: answer this many frames with a BUSY error, not executing them.
        compliance_on_set: answer this many SET_* frames with COMPLIANCE_TRIP and go
            to the safe state (nothing is applied).
        compliance_after_pulses: a PULSE frame trips compliance once this many pulses
            of it have been applied (``None``: never): the crosspoint that trips
            gets a partial count and ``COMPLIANCE``, later ones ``SKIPPED``, the
            board goes to its safe state and reports the frame aborted.
        nan_channels: ADC channels that read NaN (not flagged: the driver must flag).
        overrange_channels: ADC channels that read full scale, flagged ``OVERRANGE``.
        stop_after_frames: after this many more frames (any command) the board never
            answers again (``None``: never stops).
        rules: per-command rules with a count, a rate and a start
            (:class:`~simulated_device.virtual_faults.FaultRule`, kinds in
            :data:`~simulated_device.virtual_faults.SERIAL_KINDS`); what
            ``hwloop virtual-board --fault`` installs.
        watchdog_s: host watchdog, s: no valid request frame for this long while an
            output is on puts the board in its safe state (``None``: off; see
            ``docs/board-protocol.md``, "Host watchdog").
    """

    commands: frozenset[int] | None = None
    silent: int = 0
    drop_replies: int = 0
    delayed_replies: int = 0
    reply_delay_s: float = 0.0
    garble_replies: int = 0
    bad_crc_replies: int = 0
    noise_before_replies: int = 0
    noise: bytes = b"\x00\xa5\x01\xff\xff\x00\x00\x13\x37\xa5"
    busy_replies: int = 0
    compliance_on_set: int = 0
    compliance_after_pulses: int | None = None
    nan_channels: frozenset[int] = frozenset()
    overrange_channels: frozenset[int] = frozenset()
    stop_after_frames: int | None = None
    rules: tuple[FaultRule, ...] = ()
    watchdog_s: float | None = None

    def __post_init__(self) -> None:
        if not (np.isfinite(self.reply_delay_s) and self.reply_delay_s >= 0):
            raise ConfigError(f"reply_delay_s={self.reply_delay_s} must be >= 0 s")
        if self.compliance_after_pulses is not None and self.compliance_after_pulses < 0:
            raise ConfigError("compliance_after_pulses must be >= 0 or None")
        if self.watchdog_s is not None and not (
            np.isfinite(self.watchdog_s) and self.watchdog_s > 0
        ):
            raise ConfigError(f"watchdog_s={self.watchdog_s} must be > 0 s (or None: off)")


_COUNTED = (
    "silent",
    "drop_replies",
    "delayed_replies",
    "garble_replies",
    "bad_crc_replies",
    "noise_before_replies",
    "busy_replies",
    "compliance_on_set",
)

_SET_COMMANDS = (bp.Command.SET_INPUTS, bp.Command.SET_NUDGE_CURRENTS, bp.Command.SET_BIAS_CURRENTS)
_ERROR_KINDS = {
    "busy": bp.ErrorCode.BUSY,
    "out-of-range": bp.ErrorCode.OUT_OF_RANGE,
    "bad-argument": bp.ErrorCode.BAD_ARGUMENT,
    "unknown-command": bp.ErrorCode.UNKNOWN_COMMAND,
    "internal": bp.ErrorCode.INTERNAL,
}
HANG_UP = -1.0
"""A send delay that means: close the connection (a dropped link)."""


class VirtualBoard:
    """A board that serves the hwloop board protocol, backed by a :class:`BenchNetwork`.

    Args:
        options: emulator options (``arch``, ``preset``, ``read_noise_v``, ...; see
            :func:`simulated_device.board.make_emulated_board`).
        seed: seed of the bench's generator (device draws and all noise).
        faults: initial fault configuration.
        name: board name reported by IDENTIFY.
        serial_number: serial number reported by IDENTIFY.
        identify: overrides of IDENTIFY reply fields (ranges, timing), by field name.
    """

    def __init__(
        self,
        options: Mapping[str, Any] | None = None,
        *,
        seed: int = 0,
        faults: FaultConfig | None = None,
        name: str = "hwloop virtual board",
        serial_number: str = "VB-0001",
        identify: Mapping[str, Any] | None = None,
    ) -> None:
        opts = dict(options or {"arch": "8-4-2"})
        self.bench = BenchNetwork(opts, np.random.default_rng(seed))
        desc = self.bench.desc
        lim = desc.limits
        n_in, n_out = len(desc.input_nodes), len(desc.output_nodes)
        info = bp.IdentifyReply(
            protocol_version=bp.PROTOCOL_VERSION,
            n_input_channels=n_in,
            n_nudge_channels=n_out,
            n_bias_channels=len(desc.bias_nodes),
            n_adc_channels=len(desc.free_nodes),
            n_crosspoints=desc.n_edges,
            v_input_max_v=lim.v_input_max_v,
            i_nudge_max_a=lim.i_nudge_max_a,
            i_bias_max_a=lim.i_nudge_max_a,
            adc_range_v=desc.v_read_range_v,
            v_read_max_v=0.5,
            pulse_amplitude_max_v=lim.pulse_amplitude_max_v,
            pulse_width_min_s=1e-8,
            pulse_width_max_s=lim.pulse_width_max_s,
            max_samples=100_000,
            max_pulses_per_crosspoint=lim.max_pulses_per_call,
            sample_time_s=2e-3,
            pulse_overhead_s=1e-6,
            g_read_time_s=1e-4,
            board_name=name,
            serial_number=serial_number,
            firmware=f"virtual-{__version__}",
        )
        if identify:
            try:
                info = dataclasses.replace(info, **dict(identify))
            except TypeError as e:
                raise ConfigError(f"unknown IDENTIFY field in overrides: {e}") from None
        self.info: bp.IdentifyReply = info
        self._free = np.asarray(desc.free_nodes, dtype=np.int64)
        self._lock = threading.RLock()
        self._faults = FaultConfig()
        self._left: dict[str, int] = {}
        self._frames_left: int | None = None
        self.set_faults(faults or FaultConfig())
        self._outputs_on = False
        self.frames_received = 0
        """Valid request frames received since start (all connections)."""
        self.command_counts: dict[int, int] = {}
        """Valid request frames received per command byte since start."""
        self.replies_sent = 0
        """Reply frames sent since start."""
        self.disconnects = 0
        """Client disconnects seen (each one put the board in its safe state)."""
        self.reboots = 0
        """Injected reboots (each one lost its request and put the board in its safe state)."""
        self.watchdog_trips = 0
        """Host-watchdog expiries that put the board in its safe state."""
        self._rule_reads: dict[str, float] = {}
        self._last_reply: bp.Frame | None = None
        """The reply to the last non-idempotent request answered (LAST_REPLY serves it)."""
        self._last_valid_rx = time.monotonic()
        self.url: str = ""
        """Where the board is served: ``socket://127.0.0.1:PORT`` or a ``/dev/pts/N`` path."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closers: list[Any] = []
        self._connected = threading.Event()

    # ----------------------------------------------------------------- faults & state
    def set_faults(self, faults: FaultConfig) -> None:
        """Install a fault configuration; its counts start now."""
        with self._lock:
            self._faults = faults
            self._left = {k: int(getattr(faults, k)) for k in _COUNTED}
            self._frames_left = faults.stop_after_frames

    @property
    def faults(self) -> FaultConfig:
        """The installed fault configuration."""
        return self._faults

    @property
    def is_safe(self) -> bool:
        """True when every source is at 0 and off."""
        with self._lock:
            return not self._outputs_on and not self.bench.energised

    @property
    def outputs_on(self) -> bool:
        """True when a SET_* command has turned outputs on since the last safe state."""
        return self._outputs_on

    def true_voltages(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        """``(n_nodes,)`` noise-free node voltages under the present levels, V."""
        with self._lock:
            return self.bench.true_voltages()

    def energise(
        self,
        inputs_v: np.ndarray[Any, np.dtype[np.float64]] | None = None,
        nudge_a: np.ndarray[Any, np.dtype[np.float64]] | None = None,
        bias_a: np.ndarray[Any, np.dtype[np.float64]] | None = None,
    ) -> None:
        """Leave sources on at these levels (V, A), as a previous host might have.

        For tests of what a driver does on connect; lengths are the channel counts.
        """
        with self._lock:
            b = self.bench
            for arr, setter in ((inputs_v, b.set_inputs), (nudge_a, b.set_nudge_currents),
                                (bias_a, b.set_bias_currents)):
                if arr is not None:
                    v = np.asarray(arr, dtype=np.float64)
                    setter(np.arange(v.size), v)
            self._outputs_on = True

    def go_safe(self) -> None:
        """Every source to 0 and off (what SAFE_STATE and a disconnect do)."""
        with self._lock:
            self.bench.all_off()
            self._outputs_on = False

    def _take(self, field: str, cmd: int) -> bool:
        """Consume one count of fault ``field`` if it applies to ``cmd``."""
        cmds = self._faults.commands
        if cmds is not None and cmd not in cmds:
            return False
        n = self._left.get(field, 0)
        if n == 0:
            return False
        if n > 0:
            self._left[field] = n - 1
        return True

    # ----------------------------------------------------------------- protocol
    def respond(self, frame: bp.Frame) -> list[tuple[float, bytes]]:
        """What the board sends in answer to one valid frame: ``[(delay_s, bytes), ...]``.

        Pure of I/O (the servers do the sending), so tests can drive it directly.
        """
        with self._lock:
            self.frames_received += 1
            self.command_counts[frame.command] = self.command_counts.get(frame.command, 0) + 1
            if self._frames_left is not None:
                if self._frames_left <= 0:
                    return []
                self._frames_left -= 1
            cmd = frame.command
            fired = fire_serial_rules(self._faults.rules, cmd, self.frames_received)
            early = self._rule_outcome(frame, fired)
            if early is not None:
                if early and early[0][1]:
                    self._keep_reply(cmd, early[0][1])
                return early
            if self._take("silent", cmd):
                return []
            if self._take("busy_replies", cmd):
                busy = bp.encode_error(frame.seq, cmd, bp.ErrorCode.BUSY, "busy")
                self._keep_reply(cmd, busy)
                return [(0.0, busy)]
            self._rule_reads = fired
            try:
                out = self._execute(frame)
            finally:
                self._rule_reads = {}
            self._keep_reply(cmd, out)
            if self._take("drop_replies", cmd) or "drop" in fired:
                return []
            delay = self._faults.reply_delay_s if self._take("delayed_replies", cmd) else 0.0
            delay += fired.get("delay", 0.0)
            if "truncate" in fired:
                out = out[: max(1, len(out) // 2)]
            if self._take("garble_replies", cmd) or "garble" in fired:
                b = bytearray(out)
                # flip a bit in the sequence number and one in the last payload/CRC byte
                b[6] ^= 0x04
                b[-5] ^= 0x10
                out = bytes(b)
            if self._take("bad_crc_replies", cmd) or "crc-reply" in fired:
                b = bytearray(out)
                b[-1] ^= 0xFF
                out = bytes(b)
            sends = [(delay, out)]
            if self._take("noise_before_replies", cmd):
                sends = [(delay, self._faults.noise), (0.0, out)]
            self.replies_sent += 1
            return sends

    def _keep_reply(self, cmd: int, reply: bytes) -> None:
        """Keep the reply to a non-idempotent request (before any reply fault) for LAST_REPLY."""
        try:
            idempotent = bp.Command(cmd) in bp.IDEMPOTENT_COMMANDS
        except ValueError:
            return
        if not idempotent:
            self._last_reply = bp.decode_frame(reply)

    def _rule_outcome(
        self, frame: bp.Frame, fired: dict[str, float]
    ) -> list[tuple[float, bytes]] | None:
        """The answer decided by the fired rules before execution (None: execute)."""
        seq, cmd = frame.seq, frame.command
        if "stop" in fired:
            self._frames_left = 0
            return []
        if "disconnect" in fired:
            return [(HANG_UP, b"")]
        if "reboot" in fired:
            self.go_safe()
            self.reboots += 1
            self._last_reply = None  # a restart forgets the kept reply
            return []
        if "timeout" in fired:
            return []
        if "crc-request" in fired:
            msg = "request CRC does not match; nothing was done"
            return [(0.0, bp.encode_error(seq, cmd, bp.ErrorCode.BAD_CRC, msg))]
        if "length-request" in fired:
            msg = "payload length does not match the command; nothing was done"
            return [(0.0, bp.encode_error(seq, cmd, bp.ErrorCode.BAD_LENGTH, msg))]
        for kind, code in _ERROR_KINDS.items():
            if kind in fired:
                if code in (bp.ErrorCode.INTERNAL, bp.ErrorCode.COMPLIANCE_TRIP):
                    self.go_safe()
                return [(0.0, bp.encode_error(seq, cmd, code, f"injected {kind}"))]
        if "compliance" in fired and cmd in _SET_COMMANDS:
            self.go_safe()
            msg = "injected compliance trip; the board went to its safe state"
            return [(0.0, bp.encode_error(seq, cmd, bp.ErrorCode.COMPLIANCE_TRIP, msg))]
        return None

    def respond_fault(self, fault: bp.FrameFault) -> list[tuple[float, bytes]]:
        """The board's answer to a damaged frame (BAD_CRC / BAD_LENGTH error replies)."""
        if fault.seq is None or fault.command is None or fault.command & 0x80:
            return []
        if self._frames_left is not None and self._frames_left <= 0:
            return []  # a board that stopped answering answers nothing
        if fault.kind == bp.FaultKind.BAD_CRC:
            msg = "request CRC does not match; nothing was done"
            return [(0.0, bp.encode_error(fault.seq, fault.command, bp.ErrorCode.BAD_CRC, msg))]
        if fault.kind == bp.FaultKind.OVERSIZE:
            msg = "declared payload length exceeds the maximum; nothing was done"
            return [(0.0, bp.encode_error(fault.seq, fault.command, bp.ErrorCode.BAD_LENGTH, msg))]
        return []

    def _execute(self, frame: bp.Frame) -> bytes:
        cmd = frame.command
        try:
            request = bp.decode_request(frame)
            reply = self._dispatch(request)
        except bp.ProtocolError as e:
            return bp.encode_error(frame.seq, cmd, e.error_code, str(e))
        except LimitError as e:
            return bp.encode_error(frame.seq, cmd, bp.ErrorCode.OUT_OF_RANGE, str(e))
        except _ComplianceTripError as e:
            self.go_safe()
            return bp.encode_error(frame.seq, cmd, bp.ErrorCode.COMPLIANCE_TRIP, str(e))
        except HwloopError as e:
            return bp.encode_error(frame.seq, cmd, bp.ErrorCode.BAD_ARGUMENT, str(e))
        except Exception as e:  # a firmware bug: answer INTERNAL and go safe
            self.go_safe()
            message = f"{type(e).__name__}: {e}"
            return bp.encode_error(frame.seq, cmd, bp.ErrorCode.INTERNAL, message)
        return bp.encode_reply(frame.seq, cmd, reply)

    def _dispatch(self, req: bp.Request) -> bp.Reply:
        if isinstance(req, bp.Identify):
            return self.info
        if isinstance(req, bp.GetState):
            b = self.bench
            return bp.StateReply(self._outputs_on, b.inputs_v.copy(), b.nudge_a.copy(),
                              b.bias_a.copy())
        if isinstance(req, bp.SafeState):
            self.go_safe()
            return bp.Ack()
        if isinstance(req, bp.LastReply):
            return bp.LastReplyReply(self._last_reply)
        if isinstance(req, bp.SetInputs | bp.SetNudgeCurrents | bp.SetBiasCurrents):
            return self._set_levels(req)
        if isinstance(req, bp.ReadNodes):
            return self._read_nodes(req)
        if isinstance(req, bp.ReadConductance):
            return self._read_conductance(req)
        if isinstance(req, bp.Pulse):
            return self._pulse(req)
        raise bp.ProtocolError(
            f"{req.COMMAND.name} is not implemented", bp.ErrorCode.UNKNOWN_COMMAND
        )

    def _check_channels(self, ch: np.ndarray[Any, Any], n: int, what: str) -> None:
        if ch.size and int(ch.max()) >= n:
            raise bp.ProtocolError(f"{what} channel {int(ch.max())} does not exist (board has {n})")

    def _set_levels(self, req: bp.SetInputs | bp.SetNudgeCurrents | bp.SetBiasCurrents) -> bp.Reply:
        info = self.info
        setter: Callable[[NDArray[np.integer], NDArray[np.float64]], None]
        if isinstance(req, bp.SetInputs):
            n, lim, unit, setter = (info.n_input_channels, info.v_input_max_v, "V",
                                    self.bench.set_inputs)
        elif isinstance(req, bp.SetNudgeCurrents):
            n, lim, unit, setter = (info.n_nudge_channels, info.i_nudge_max_a, "A",
                                    self.bench.set_nudge_currents)
        else:
            n, lim, unit, setter = (info.n_bias_channels, info.i_bias_max_a, "A",
                                    self.bench.set_bias_currents)
        what = req.COMMAND.name
        self._check_channels(req.channels, n, what)
        if not np.all(np.isfinite(req.values)):
            raise bp.ProtocolError(f"{what}: levels must be finite")
        peak = float(np.max(np.abs(req.values), initial=0.0))
        if peak > lim:
            raise LimitError(f"{what}: level {peak:.6g} {unit} beyond the range {lim:.6g} {unit}")
        if self._take("compliance_on_set", req.COMMAND):
            raise _ComplianceTripError(f"{what}: a source hit its compliance; all sources are off")
        setter(req.channels, req.values)
        self._outputs_on = True
        return bp.Ack()

    def _read_nodes(self, req: bp.ReadNodes) -> bp.Reply:
        info = self.info
        self._check_channels(req.channels, info.n_adc_channels, "READ_NODES")
        if req.n_samples > info.max_samples:
            raise LimitError(f"READ_NODES: {req.n_samples} samples beyond {info.max_samples}")
        k = req.channels.size
        if k == 0:
            samples = np.zeros((req.n_samples, 0))
            flags = np.zeros((req.n_samples, 0), dtype=np.uint8)
            stamps = np.full(req.n_samples, self.bench.board.clock_s)
        else:
            reading = self.bench.read_nodes(self._free[req.channels], req.n_samples)
            samples = np.array(reading.samples_v[:, 0, :], dtype=np.float64)
            flags = np.array(reading.flags[:, 0, :], dtype=np.uint8)
            stamps = np.array(reading.timestamps_s[:, 0], dtype=np.float64)
        f = self._faults
        fired = self._rule_reads
        if "nan" in fired:
            samples[:] = np.nan
        if "overrange" in fired:
            samples[:] = info.adc_range_v if np.isfinite(info.adc_range_v) else np.inf
            flags |= np.uint8(SampleFlag.OVERRANGE)
        if "compliance" in fired:
            flags |= np.uint8(SampleFlag.COMPLIANCE)
        for pos, c in enumerate(req.channels.tolist()):
            if c in f.nan_channels:
                samples[:, pos] = np.nan
            if c in f.overrange_channels:
                samples[:, pos] = info.adc_range_v if np.isfinite(info.adc_range_v) else np.inf
                flags[:, pos] |= np.uint8(SampleFlag.OVERRANGE)
        if req.mode == bp.ReadMode.SAMPLES:
            return bp.ReadNodesSamplesReply(samples, flags, stamps)
        n = req.n_samples
        spread = samples.std(axis=0, ddof=1) if n > 1 else np.zeros(k)
        return bp.ReadNodesMeanReply(
            n, samples.mean(axis=0), spread, np.bitwise_or.reduce(flags, axis=0),
            float(stamps[0]), float(stamps[-1]),
        )

    def _check_crosspoints(self, cp: np.ndarray[Any, Any]) -> None:
        n = self.info.n_crosspoints
        if cp.size and int(cp.max()) >= n:
            raise bp.ProtocolError(f"crosspoint {int(cp.max())} does not exist (board has {n})")

    def _read_conductance(self, req: bp.ReadConductance) -> bp.Reply:
        self._check_crosspoints(req.crosspoints)
        if abs(req.v_read_v) > self.info.v_read_max_v:
            raise LimitError(
                f"READ_CONDUCTANCE: read voltage {req.v_read_v:.6g} V beyond "
                f"{self.info.v_read_max_v:.6g} V"
            )
        if req.crosspoints.size == 0:
            return bp.ReadConductanceReply(np.zeros(0))
        return bp.ReadConductanceReply(self.bench.conductances(req.crosspoints))

    def _pulse(self, req: bp.Pulse) -> bp.Reply:
        info = self.info
        self._check_crosspoints(req.crosspoints)
        if req.amplitude_v > info.pulse_amplitude_max_v:
            raise LimitError(
                f"PULSE: amplitude {req.amplitude_v:.6g} V beyond {info.pulse_amplitude_max_v} V"
            )
        if not info.pulse_width_min_s <= req.width_s <= info.pulse_width_max_s:
            raise LimitError(
                f"PULSE: width {req.width_s:.6g} s outside {info.pulse_width_min_s:.3g}.."
                f"{info.pulse_width_max_s:.3g} s"
            )
        counts = req.counts.copy()
        if counts.size and int(np.abs(counts).max()) > info.max_pulses_per_crosspoint:
            raise LimitError(
                f"PULSE: {int(np.abs(counts).max())} pulses on one crosspoint beyond "
                f"{info.max_pulses_per_crosspoint}"
            )
        k = counts.size
        status = np.where(counts == 0, bp.PulseStatus.NO_CHANGE, bp.PulseStatus.OK).astype(np.uint8)
        aborted = False
        trip = self._faults.compliance_after_pulses
        if "compliance" in self._rule_reads:
            trip = int(self._rule_reads["compliance"])
        if trip is not None and k:
            cum = np.cumsum(np.abs(counts))
            hit = np.flatnonzero((cum >= trip) & (counts != 0))
            if hit.size:
                i = int(hit[0])
                before = int(cum[i - 1]) if i > 0 else 0
                counts[i] = np.sign(counts[i]) * (trip - before)
                counts[i + 1 :] = 0
                status[i] = bp.PulseStatus.COMPLIANCE
                status[i + 1 :] = bp.PulseStatus.SKIPPED
                aborted = True
        applied = np.zeros(k, dtype=np.int64)
        nz = np.flatnonzero(counts)
        if nz.size:
            res = self.bench.board.program_pulses(req.crosspoints[nz], counts[nz])
            # the levels cache of the bench is stale after programming (re-solve on next read)
            self.bench.set_inputs(np.zeros(0, dtype=np.int64), np.zeros(0))
            applied[nz] = res.applied_pulses
            st = np.asarray(res.status, dtype=np.uint8)
            keep = status[nz] == bp.PulseStatus.OK
            status[nz[keep]] = st[keep]
        if aborted:
            self.go_safe()
        return bp.PulseReply(aborted, applied, status)

    # ----------------------------------------------------------------- serving
    def _handle(
        self, events: Sequence[bp.Frame | bp.FrameFault], send: Callable[[bytes], None]
    ) -> None:
        for ev in events:
            handled = isinstance(ev, bp.Frame) and not (
                self._frames_left is not None and self._frames_left <= 0
            )
            if handled:
                self._last_valid_rx = time.monotonic()  # a frame the firmware handles
            sends = self.respond(ev) if isinstance(ev, bp.Frame) else self.respond_fault(ev)
            for delay, data in sends:
                if delay == HANG_UP:
                    raise _HangUpError
                if delay > 0 and self._stop.wait(delay):
                    return
                send(data)
            if handled:
                self._last_valid_rx = time.monotonic()  # the watchdog restarts at the reply

    def _serve_stream(
        self, recv: Callable[[], bytes | None], send: Callable[[bytes], None]
    ) -> None:
        """Serve one connection until it closes (``recv`` returns ``b""``) or stop."""
        dec = bp.FrameDecoder()
        last_rx = time.monotonic()
        while not self._stop.is_set():
            data = recv()
            now = time.monotonic()
            if data is None:  # nothing arrived in the poll interval
                if dec.pending and now - last_rx > FRAME_GAP_S:
                    self._handle(dec.drop_pending(), send)
                self._check_watchdog(now)
                continue
            if data == b"":
                return
            last_rx = now
            self._handle(dec.feed(data), send)

    def _serve_tcp(self, lsock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = lsock.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.settimeout(0.01)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._connected.set()

                def recv(c: socket.socket = conn) -> bytes | None:
                    try:
                        return c.recv(1 << 20)
                    except TimeoutError:
                        return None
                    except OSError:
                        return b""

                def send(data: bytes, c: socket.socket = conn) -> None:
                    with contextlib.suppress(OSError):
                        c.sendall(data)

                try:
                    self._serve_stream(recv, send)
                except _HangUpError:
                    with contextlib.suppress(OSError):
                        conn.shutdown(socket.SHUT_RDWR)
                finally:
                    self._disconnected()

    def _serve_pty(self, master: int) -> None:
        connected = False
        dec = bp.FrameDecoder()
        last_rx = time.monotonic()

        def send(data: bytes) -> None:
            mv = memoryview(data)
            with contextlib.suppress(OSError):
                while mv:
                    n = os.write(master, mv)
                    mv = mv[n:]

        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([master], [], [], 0.01)
            except (OSError, ValueError):
                return
            now = time.monotonic()
            if not ready:
                if dec.pending and now - last_rx > FRAME_GAP_S:
                    self._handle_pty(dec, dec.drop_pending(), send)
                self._check_watchdog(now)
                continue
            try:
                data = os.read(master, 1 << 16)
            except OSError as e:
                if e.errno != errno.EIO:
                    return
                # EIO: no process has the terminal open (the client closed it)
                if connected:
                    connected = False
                    dec.reset()
                    self._disconnected()
                self._stop.wait(0.01)
                continue
            if not connected:
                connected = True
                self._connected.set()
            last_rx = now
            self._handle_pty(dec, dec.feed(data), send)

    def _handle_pty(
        self,
        dec: bp.FrameDecoder,
        events: Sequence[bp.Frame | bp.FrameFault],
        send: Callable[[bytes], None],
    ) -> None:
        """As :meth:`_handle`; a dropped link on a terminal loses the pending bytes."""
        try:
            self._handle(events, send)
        except _HangUpError:
            dec.reset()
            self._disconnected()

    def _check_watchdog(self, now: float) -> None:
        """Host watchdog: no valid frame for ``watchdog_s`` with outputs on -> safe state."""
        wd = self._faults.watchdog_s
        if wd is None or now - self._last_valid_rx <= wd:
            return
        with self._lock:
            if self._outputs_on or self.bench.energised:
                self.go_safe()
                self.watchdog_trips += 1

    def _disconnected(self) -> None:
        self.disconnects += 1
        self._connected.clear()
        self.go_safe()

    def start_tcp(self, port: int = 0, host: str = "127.0.0.1") -> str:
        """Serve on ``host:port`` (0: a free port) in a background thread.

        Returns:
            The pyserial URL, ``socket://HOST:PORT``.
        """
        if self._thread is not None:
            raise ConfigError("the virtual board is already being served")
        lsock = socket.create_server((host, port))
        lsock.settimeout(0.05)
        self._closers.append(lsock)
        self.url = f"socket://{host}:{lsock.getsockname()[1]}"
        self._start(self._serve_tcp, lsock)
        return self.url

    def start_pty(self) -> str:
        """Serve on a new pseudo-terminal (POSIX); returns its path for ``serial.Serial``."""
        if self._thread is not None:
            raise ConfigError("the virtual board is already being served")
        master, slave = os.openpty()
        tty.setraw(slave)
        path = os.ttyname(slave)
        os.close(slave)  # the client opens the path; EIO on the master means "no client"
        self._closers.append(master)
        self.url = path
        self._start(self._serve_pty, master)
        return path

    def _start(self, target: Any, arg: Any) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=target, args=(arg,), name="virtual-board", daemon=True
        )
        self._thread.start()

    def wait_connected(self, timeout_s: float) -> bool:
        """Wait until a client is connected (TCP) or has the terminal open; True if so."""
        return self._connected.wait(timeout_s)

    def close(self) -> None:
        """Stop serving, close the port and go to the safe state. Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        for c in self._closers:
            with contextlib.suppress(OSError):
                if isinstance(c, int):
                    os.close(c)
                else:
                    c.close()
        self._closers.clear()
        self.go_safe()

    def __enter__(self) -> VirtualBoard:
        if self._thread is None:
            self.start_tcp()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _HangUpError(Exception):
    """An injected dropped link: the server closes the connection."""


class _ComplianceTripError(HwloopError):
    """A simulated compliance trip (answered with COMPLIANCE_TRIP)."""


@contextlib.contextmanager
def serve(
    options: Mapping[str, Any] | None = None,
    *,
    seed: int = 0,
    faults: FaultConfig | None = None,
    pty: bool = False,
    port: int = 0,
) -> Iterator[str]:
    """Run a :class:`VirtualBoard` for the duration of the block; yields its URL."""
    vb = VirtualBoard(options, seed=seed, faults=faults)
    try:
        yield vb.start_pty() if pty else vb.start_tcp(port)
    finally:
        vb.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: serve a virtual board, print its URL, run until Ctrl-C."""
    p = argparse.ArgumentParser(
        prog="python -m simulated_device.virtual_board",
        description="Serve a virtual hwloop serial board (docs/board-protocol.md).",
    )
    p.add_argument("--arch", default="8-4-2", help="layer sizes, e.g. 8-4-2")
    p.add_argument("--preset", default="ideal", help="device preset (ideal, reram)")
    p.add_argument("--read-noise-v", type=float, default=None, help="read noise per sample, V")
    p.add_argument("--seed", type=int, default=0, help="seed of the bench's generator")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=0, help="TCP port (0: a free one)")
    p.add_argument("--pty", action="store_true", help="serve on a pseudo-terminal instead")
    a = p.parse_args(argv)
    opts: dict[str, Any] = {"arch": a.arch, "preset": a.preset}
    if a.read_noise_v is not None:
        opts["read_noise_v"] = a.read_noise_v
    try:
        vb = VirtualBoard(opts, seed=a.seed)
        url = vb.start_pty() if a.pty else vb.start_tcp(a.port, a.host)
    except (HwloopError, OSError) as e:
        print(f"virtual_board: {e}", file=sys.stderr)
        return 2
    try:  # a Ctrl-C right after the URL went out also closes the board
        print(url, flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        vb.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
