"""Virtual SCPI/TSP instruments on a :class:`BenchNetwork`, served over TCP on 127.0.0.1.

A :class:`VirtualScpiBench` starts one TCP server per virtual instrument (raw
socket, newline-terminated messages, as a ``TCPIP::host::port::SOCKET`` resource):

``smu``
    A 2600B-style SMU mainframe with TSP-Link nodes. Channels (``smua``, ``smub``,
    ``node[2].smua``, ...) are wired in order to the network's input nodes (voltage
    sources) and then to its output nodes (current sources: the nudges).
``daq``
    A DAQ6510-style scanning voltmeter; channels 101.., 201.. (20 per slot) are wired
    to the network's free nodes (hidden, then output) in board order.
``matrix``
    A 707B-style switching matrix; crosspoint ``"<slot><row><col>"`` (rows A..H,
    columns 01..12, 96 per slot) number ``e`` routes edge ``e`` to the ``xsmu``.
``xsmu``
    A one-channel 2600B-style SMU (``smua``) behind the matrix: pulses go to
    :meth:`BenchNetwork.pulse` of every routed edge, current reads see the routed
    edges' conductances (:meth:`BenchNetwork.conductances`) in parallel.

The command subsets are parsed here from the instruments' manuals (Series 2600B
reference manual, TSP command reference; DAQ6510 reference manual, SCPI command
reference; 707B reference manual, TSP command reference) and do not depend on the
drivers in ``instruments``. TSP errors go to ``errorqueue`` with no reply, as on the
instruments; SCPI errors to ``:SYSTem:ERRor?``.

Fault injection per instrument through :meth:`VirtualScpiBench.faults`: slow replies,
dropped replies (a timeout), a device that stops answering, garbled replies,
compliance trips (SMU channels, pulse trains) and overrange/NaN readings (DAQ).

Simplifications: a routed crosspoint is measured in isolation (I = V x g of the
routed edges); pulse amplitude and width only set the polarity (the device model's
pulse law sets the step); compliance is only what the faults inject; time stamps are
synthetic (NPLC / 50 Hz per reading); replies come as fast as the host allows.
Units: V, A, S, s.
"""

from __future__ import annotations

import abc
import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np

from simulated_device.bench_network import BenchNetwork

__all__ = ["Faults", "VirtualScpiBench"]

ROWS = "ABCDEFGH"
COLUMNS = 12
PER_SLOT = len(ROWS) * COLUMNS
DAQ_PER_SLOT = 20
OVERFLOW = 9.9e37
NAN_CODE = 9.91e37


@dataclass
class Faults:
    """Faults injected into one virtual instrument (change them at any time).

    Attributes:
        reply_delay_s: every reply is sent this late, s (a slow instrument).
        slow_replies: the next N replies are sent ``slow_delay_s`` late.
        slow_delay_s: delay of those replies, s.
        drop_replies: the next N replies are not sent (the commands are executed).
        garble_replies: the next N replies are replaced by garbage.
        dead: the instrument reads commands but executes and answers nothing.
        compliance: SMU channels (``"smua"``, ``"node[2].smub"``...) that report
            ``source.compliance == true``.
        compliance_after_pulses: a pulse train stops in compliance after this many
            pulses (``None``: never).
        overrange_channels: DAQ channels that read an overflow (9.9E37).
        nan_channels: DAQ channels that read NaN (9.91E37).
    """

    reply_delay_s: float = 0.0
    slow_replies: int = 0
    slow_delay_s: float = 0.5
    drop_replies: int = 0
    garble_replies: int = 0
    dead: bool = False
    compliance: set[str] = field(default_factory=set)
    compliance_after_pulses: int | None = None
    overrange_channels: set[int] = field(default_factory=set)
    nan_channels: set[int] = field(default_factory=set)


def _fmt(x: float) -> str:
    return f"{x:.6e}"


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside quotes and parentheses."""
    out: list[str] = []
    cur: list[str] = []
    depth, quote = 0, ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == sep and depth == 0:
            out.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur))
    return [p.strip() for p in out]


class _Virtual(abc.ABC):
    """Base of a virtual instrument: identity, faults, error queue."""

    def __init__(self, bench: VirtualScpiBench, identity: str) -> None:
        self.bench = bench
        self.net = bench.network
        self.identity = identity
        self.faults = Faults()
        self.errors: list[tuple[int, str]] = []

    def error(self, code: int, message: str) -> None:
        self.errors.append((code, message))

    @abc.abstractmethod
    def process(self, line: str) -> list[str]:
        """Execute one command line; return the reply lines."""


# ---------------------------------------------------------------------- 2600B-style SMU
_CH = r"(?:node\[(\d+)\]\.)?(smu[ab])"
_CH_RE = re.compile(rf"^{_CH}$")
_ATTR_RE = re.compile(rf"^{_CH}\.(source|measure)\.(\w+)$")
_PULSE_RE = re.compile(
    rf"^{_CH}\.source\.func = .*?for hwl_k = 1, (\d+) do \S+\.source\.levelv = ([^;]+);"
    r" delay\(([^)]+)\);.*print\(hwl_n\)$"
)


def _canon(node: str | None, smu: str) -> str:
    return smu if node in (None, "1") else f"node[{node}].{smu}"


@dataclass
class _SmuChannel:
    kind: str  # "input" | "output" | "bias" | "cross"
    index: int
    func: int = 1  # OUTPUT_DCAMPS = 0, OUTPUT_DCVOLTS = 1 (2600B reference manual)
    levelv: float = 0.0
    leveli: float = 0.0
    limiti: float = 0.1
    limitv: float = 20.0
    output: int = 0
    nplc: float = 1.0
    count: int = 1
    readings: list[float] = field(default_factory=list)
    stamps: list[float] = field(default_factory=list)
    timestamps_on: int = 0


class _Smu2600(_Virtual):
    """A 2600B-style TSP SMU: channels by canonical name (see module docstring)."""

    def __init__(
        self, bench: VirtualScpiBench, identity: str, channels: dict[str, _SmuChannel]
    ) -> None:
        super().__init__(bench, identity)
        self.channels = channels
        self.vars: dict[str, Any] = {}

    # -------------------------------------------------------------- physics
    def _push(self, name: str) -> None:
        """Apply a channel's effective source level to the network."""
        c = self.channels[name]
        on = c.output == 1
        if c.kind == "input":
            if on and c.func == 0:
                self.error(5001, f"virtual bench: {name} drives an input node: source volts")
            v = c.levelv if (on and c.func == 1) else 0.0
            self.net.set_inputs(np.array([c.index]), np.array([v]))
        elif c.kind in ("output", "bias"):
            if on and c.func == 1:
                self.error(5001, f"virtual bench: {name} drives a {c.kind} node: source amps")
            i = c.leveli if (on and c.func == 0) else 0.0
            if c.kind == "output":
                self.net.set_nudge_currents(np.array([c.index]), np.array([i]))
            else:
                self.net.set_bias_currents(np.array([c.index]), np.array([i]))

    def _node(self, c: _SmuChannel) -> int:
        d = self.net.desc
        nodes = {"input": d.input_nodes, "output": d.output_nodes, "bias": d.bias_nodes}[c.kind]
        return int(nodes[c.index])

    def _measure(self, name: str, what: str, n: int) -> list[float]:
        c = self.channels[name]
        if c.kind == "cross":
            edges = self.bench.routed_edges()
            if what == "i":
                if c.output != 1 or c.func != 1 or not edges:
                    return [0.0] * n
                g = float(np.sum(self.net.conductances(np.array(edges))))
                return [c.levelv * g] * n
            return [c.levelv if c.output == 1 else 0.0] * n
        if what == "i":
            return [NAN_CODE] * n  # source currents are not modelled
        r = self.net.read_nodes(np.array([self._node(c)]), n)
        return [float(x) for x in np.asarray(r.samples_v)[:, 0, 0]]

    def _pulse(self, name: str, count: int, amplitude: float) -> int:
        c = self.channels[name]
        lim = self.faults.compliance_after_pulses
        done = count if lim is None else min(count, lim)
        if c.kind == "cross" and amplitude != 0.0:
            sign = 1 if amplitude > 0 else -1
            for e in self.bench.routed_edges():
                self.net.pulse(e, sign * done)
        c.levelv = 0.0
        c.output = 0
        return done

    # -------------------------------------------------------------- TSP subset
    def process(self, line: str) -> list[str]:
        text = line.strip()
        if not text:
            return []
        up = text.upper()
        if up == "*IDN?":
            return [self.identity]
        if up in ("*RST", "RESET()"):
            for name, c in self.channels.items():
                c.levelv = c.leveli = 0.0
                c.output, c.func = 0, 1
                self._push(name)
            return []
        if up == "*CLS":
            self.errors.clear()
            return []
        m = _PULSE_RE.match(text)
        if m is not None:
            name = _canon(m.group(1), m.group(2))
            if name not in self.channels:
                self.error(-285, f"unknown channel {name}")
                return []
            done = self._pulse(name, int(m.group(3)), float(m.group(4)))
            return [_fmt(done)]
        replies: list[str] = []
        for stmt in _split_top(text, ";"):
            if stmt:
                try:
                    out = self._exec(stmt)
                except (KeyError, ValueError, IndexError) as exc:
                    self.error(-285, f"TSP Syntax error at {stmt!r}: {exc}")
                    return replies  # the chunk stops at the first error
                if out is not None:
                    replies.append(out)
        return replies

    def _exec(self, stmt: str) -> str | None:
        if stmt.startswith("printbuffer(") and stmt.endswith(")"):
            args = _split_top(stmt[len("printbuffer(") : -1], ",")
            lo, hi = int(float(args[0])), int(float(args[1]))
            cols = [self._buffer(a) for a in args[2:]]
            vals = [col[i - 1] for i in range(lo, hi + 1) for col in cols]
            return ", ".join(_fmt(v) for v in vals)
        if stmt.startswith("print(") and stmt.endswith(")"):
            args = _split_top(stmt[len("print(") : -1], ",")
            return "\t".join(self._show(self._eval(a)) for a in args)
        if stmt.startswith("delay(") and stmt.endswith(")"):
            return None
        m = re.match(rf"^{_CH}\.nvbuffer1\.clear\(\)$", stmt)
        if m:
            c = self._chan(m.group(1), m.group(2))
            c.readings, c.stamps = [], []
            return None
        m = re.match(rf"^{_CH}\.measure\.v\({_CH}\.nvbuffer1\)$", stmt)
        if m:
            name = _canon(m.group(1), m.group(2))
            c = self.channels[name]
            vals = self._measure(name, "v", c.count)
            dt = c.nplc / 50.0 + 1e-4
            t0 = c.stamps[-1] + dt if c.stamps else 0.0
            c.readings += vals
            c.stamps += [t0 + k * dt for k in range(len(vals))]
            return None
        if "=" in stmt:
            lhs, rhs = (p.strip() for p in stmt.split("=", 1))
            self._assign(lhs, self._eval(rhs))
            return None
        raise ValueError("unknown statement")

    def _chan(self, node: str | None, smu: str) -> _SmuChannel:
        return self.channels[_canon(node, smu)]

    def _buffer(self, expr: str) -> list[float]:
        m = re.match(rf"^{_CH}\.nvbuffer1(?:\.(readings|timestamps))?$", expr)
        if m is None:
            raise ValueError(f"not a buffer: {expr}")
        c = self._chan(m.group(1), m.group(2))
        return c.stamps if m.group(3) == "timestamps" else c.readings

    def _eval(self, expr: str) -> Any:
        e = expr.strip()
        if e in ("true", "false"):
            return e == "true"
        if e in self.vars:
            return self.vars[e]
        try:
            return float(e)
        except ValueError:
            pass
        if e == "errorqueue.count":
            return float(len(self.errors))
        if e == "errorqueue.next()":
            code, msg = self.errors.pop(0) if self.errors else (0, "Queue Is Empty")
            return f"{code:.5e}\t{msg}\t0\t1"
        m = re.match(rf"^{_CH}\.(OUTPUT_ON|OUTPUT_OFF|OUTPUT_DCVOLTS|OUTPUT_DCAMPS)$", e)
        if m:
            return {"OUTPUT_ON": 1.0, "OUTPUT_OFF": 0.0, "OUTPUT_DCVOLTS": 1.0}.get(m.group(3), 0.0)
        m = re.match(rf"^{_CH}\.measure\.([vi])\(\)$", e)
        if m:
            return self._measure(_canon(m.group(1), m.group(2)), m.group(3), 1)[0]
        m = _ATTR_RE.match(e)
        if m:
            name = _canon(m.group(1), m.group(2))
            c = self.channels[name]
            attr = m.group(4)
            if m.group(3) == "source" and attr == "compliance":
                return name in self.faults.compliance
            key = {"func": "func", "output": "output"}.get(attr, attr)
            if m.group(3) == "measure" and attr not in ("nplc", "count"):
                raise ValueError(f"unknown attribute {e}")
            return float(getattr(c, key))
        raise ValueError(f"cannot evaluate {e}")

    def _assign(self, lhs: str, value: Any) -> None:
        if re.match(r"^hwl_\w+$", lhs):
            self.vars[lhs] = value
            return
        m = re.match(rf"^{_CH}\.nvbuffer1\.collecttimestamps$", lhs)
        if m:
            self._chan(m.group(1), m.group(2)).timestamps_on = int(value)
            return
        m = _ATTR_RE.match(lhs)
        if m is None:
            raise ValueError(f"cannot assign {lhs}")
        name = _canon(m.group(1), m.group(2))
        c = self.channels[name]
        section, attr = m.group(3), m.group(4)
        allowed = {
            "source": ("func", "levelv", "leveli", "limiti", "limitv", "output"),
            "measure": ("nplc", "count"),
        }[section]
        if attr not in allowed:
            raise ValueError(f"cannot assign {lhs}")
        if attr in ("func", "output", "count"):
            setattr(c, attr, int(value))
        else:
            setattr(c, attr, float(value))
        if section == "source":
            self._push(name)

    @staticmethod
    def _show(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float):
            return _fmt(v)
        return str(v)


# ---------------------------------------------------------------------- 707B-style matrix
_SPEC_RE = re.compile(r"^([1-6])([A-H])(\d\d)$")


class _Matrix707B(_Virtual):
    """A 707B-style matrix: ``channel.close/open/getclose`` and the error queue."""

    def __init__(self, bench: VirtualScpiBench, identity: str, n_slots: int) -> None:
        super().__init__(bench, identity)
        self.n_slots = n_slots
        self.closed: set[str] = set()

    def _specs(self, arg: str, allow_slots: bool) -> list[str] | None:
        items = [p.strip() for p in arg.split(",") if p.strip()]
        out: list[str] = []
        for it in items:
            if allow_slots and it == "allslots":
                out += sorted(self.closed)
                continue
            m = _SPEC_RE.match(it)
            if m is None or int(m.group(1)) > self.n_slots or not 1 <= int(m.group(3)) <= COLUMNS:
                self.error(1115, f"Parameter error, invalid channel {it!r}")
                return None
            out.append(it)
        return out

    def process(self, line: str) -> list[str]:
        text = line.strip()
        if text.upper() == "*IDN?":
            return [self.identity]
        replies: list[str] = []
        for stmt in _split_top(text, ";"):
            m = re.match(r'^channel\.(close|open)\("([^"]*)"\)$', stmt)
            if m:
                specs = self._specs(m.group(2), allow_slots=m.group(1) == "open")
                if specs is None:
                    return replies
                if m.group(1) == "close":
                    self.closed.update(specs)
                else:
                    self.closed.difference_update(specs)
                continue
            if stmt == 'print(channel.getclose("allslots"))':
                replies.append(";".join(sorted(self.closed)) if self.closed else "nil")
            elif stmt == "print(errorqueue.count)":
                replies.append(_fmt(len(self.errors)))
            elif stmt == "print(errorqueue.next())":
                code, msg = self.errors.pop(0) if self.errors else (0, "Queue Is Empty")
                replies.append(f"{code:.5e}\t{msg}\t0\t1")
            elif stmt in ("reset()", "*RST"):
                self.closed.clear()
            elif stmt:
                self.error(-285, f"TSP Syntax error at {stmt!r}")
                return replies
        return replies


# ---------------------------------------------------------------------- DAQ6510-style meter
def _scpi_header(header: str, pattern: str) -> bool:
    """True when SCPI ``header`` matches ``pattern`` in short or long form per node.

    ``pattern`` spells each node in mixed case: upper case = short form
    (``"ROUTe:SCAN:COUNt:SCAN"``).
    """
    got = header.lstrip(":").upper().split(":")
    want = pattern.split(":")
    if len(got) != len(want):
        return False
    for g, w in zip(got, want, strict=True):
        short = "".join(ch for ch in w if ch.isupper() or ch.isdigit())
        if g not in (short, w.upper()):
            return False
    return True


def _channel_numbers(arg: str) -> list[int]:
    m = re.search(r"\(@([^)]*)\)", arg)
    if m is None:
        raise ValueError("no channel list")
    out: list[int] = []
    for part in m.group(1).split(","):
        part = part.strip()
        if ":" in part:
            a, b = (int(x) for x in part.split(":"))
            out += list(range(a, b + 1))
        elif part:
            out.append(int(part))
    return out


class _Daq6510(_Virtual):
    """A DAQ6510-style scanner.

    Channel ``slot * 100 + k`` reads free node number ``(slot - 1) * 20 + k - 1``.
    """

    def __init__(self, bench: VirtualScpiBench, identity: str) -> None:
        super().__init__(bench, identity)
        free = self.net.desc.free_nodes
        self.node_of = {
            (i // DAQ_PER_SLOT + 1) * 100 + i % DAQ_PER_SLOT + 1: int(n) for i, n in enumerate(free)
        }
        self.nplc: dict[int, float] = {}
        self.range_v: dict[int, float] = {}
        self.scan: list[int] = []
        self.scan_count = 1
        self.buffer: list[tuple[float, float]] = []

    def process(self, line: str) -> list[str]:
        replies: list[str] = []
        for cmd in _split_top(line.strip(), ";"):
            if not cmd:
                continue
            header, _, args = cmd.partition(" ")
            try:
                out = self._command(header.strip(), args.strip())
            except (KeyError, ValueError, IndexError) as exc:
                self.error(-102, f"Syntax error; {cmd!r}: {exc}")
                continue
            if out is not None:
                replies.append(out)
        return replies

    def _command(self, h: str, args: str) -> str | None:
        hu = h.upper()
        if hu == "*IDN?":
            return self.identity
        if hu == "*OPC?":
            return "1"
        if hu in ("*RST", "*CLS", "*WAI"):
            if hu == "*RST":
                self.scan, self.scan_count, self.buffer = [], 1, []
            if hu == "*CLS":
                self.errors.clear()
            return None
        if _scpi_header(h, "SENSe:FUNCtion"):
            if '"VOLT:DC"' not in args.upper().replace("'", '"'):
                raise ValueError("only VOLT:DC is wired on the virtual bench")
            for c in _channel_numbers(args):
                self._check(c)
            return None
        if _scpi_header(h, "SENSe:VOLTage:NPLCycles"):
            for c in _channel_numbers(args):
                self.nplc[self._check(c)] = float(args.split(",")[0])
            return None
        if _scpi_header(h, "SENSe:VOLTage:RANGe"):
            for c in _channel_numbers(args):
                self.range_v[self._check(c)] = float(args.split(",")[0])
            return None
        if _scpi_header(h, "ROUTe:SCAN:CREate"):
            self.scan = [self._check(c) for c in _channel_numbers(args)]
            return None
        if _scpi_header(h, "ROUTe:SCAN:COUNt:SCAN"):
            self.scan_count = int(float(args))
            return None
        if _scpi_header(h, "TRACe:CLEar"):
            self.buffer = []
            return None
        if _scpi_header(h, "INITiate") or _scpi_header(h, "INITiate:IMMediate"):
            self._run_scan()
            return None
        if _scpi_header(h, "TRACe:ACTual?"):
            return str(len(self.buffer))
        if _scpi_header(h, "TRACe:DATA?"):
            parts = _split_top(args, ",")
            lo, hi = int(parts[0]), int(parts[1])
            elems = [p.upper() for p in parts[3:]] or ["READ"]
            out: list[str] = []
            for value, rel in self.buffer[lo - 1 : hi]:
                for el in elems:
                    out.append(_fmt(value) if el.startswith("READ") else _fmt(rel))
            return ",".join(out)
        if _scpi_header(h, "ROUTe:OPEN:ALL") or _scpi_header(h, "ABORt"):
            return None
        if _scpi_header(h, "SYSTem:ERRor?") or _scpi_header(h, "SYSTem:ERRor:NEXT?"):
            code, msg = self.errors.pop(0) if self.errors else (0, "No error")
            return f'{code},"{msg}"'
        raise ValueError("undefined header")

    def _check(self, c: int) -> int:
        if c not in self.node_of:
            raise ValueError(f"channel {c} is not wired")
        return c

    def _run_scan(self) -> None:
        if not self.scan:
            raise ValueError("empty scan list")
        nodes = np.array([self.node_of[c] for c in self.scan])
        n = self.scan_count
        samples = np.asarray(self.net.read_nodes(nodes, n).samples_v)[:, 0, :]
        self.buffer = []
        t = 0.0
        for s in range(n):
            for j, c in enumerate(self.scan):
                v = float(samples[s, j])
                rng = self.range_v.get(c)
                if c in self.faults.overrange_channels or (rng is not None and abs(v) > 1.2 * rng):
                    v = OVERFLOW
                if c in self.faults.nan_channels:
                    v = NAN_CODE
                self.buffer.append((v, t))
                t += self.nplc.get(c, 1.0) / 50.0 + 1e-3


# ---------------------------------------------------------------------- the bench
class _Server:
    """One TCP listener on 127.0.0.1 serving newline-terminated messages to a device."""

    def __init__(self, device: _Virtual, lock: threading.Lock, port: int) -> None:
        self.device = device
        self.lock = lock
        self.sock = socket.create_server(("127.0.0.1", port))
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.conns: list[socket.socket] = []
        t = threading.Thread(target=self._accept, name=f"virtual-scpi-{self.port}", daemon=True)
        self.threads.append(t)
        t.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(0.1)
            self.conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while not self.stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    line = raw.decode("ascii", errors="replace").strip("\r")
                    for reply in self._handle(line):
                        try:
                            conn.sendall(reply.encode("ascii", errors="replace") + b"\n")
                        except OSError:
                            return

    def _handle(self, line: str) -> list[str]:
        f = self.device.faults
        if f.dead:
            return []
        with self.lock:
            replies = self.device.process(line)
        out: list[str] = []
        for r in replies:
            if f.drop_replies > 0:
                f.drop_replies -= 1
                continue
            if f.garble_replies > 0:
                f.garble_replies -= 1
                r = "?#GARBLED#" + r[::-1][:20]
            delay = f.reply_delay_s
            if f.slow_replies > 0:
                f.slow_replies -= 1
                delay += f.slow_delay_s
            if delay > 0:
                time.sleep(delay)
            out.append(r)
        return out

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        for t in self.threads:
            t.join(timeout=2.0)


def smu_channel_names(n: int) -> tuple[str, ...]:
    """Names of ``n`` 2600B channels: ``smua, smub, node[2].smua, node[2].smub, ...``."""
    names = []
    for j in range(n):
        node, smu = j // 2 + 1, "smua" if j % 2 == 0 else "smub"
        names.append(smu if node == 1 else f"node[{node}].{smu}")
    return tuple(names)


def crosspoint_spec(edge: int) -> str:
    """The virtual matrix's crosspoint for ``edge`` (``0`` -> ``"1A01"``)."""
    slot, rem = divmod(int(edge), PER_SLOT)
    row, col = divmod(rem, COLUMNS)
    return f"{slot + 1}{ROWS[row]}{col + 1:02d}"


class VirtualScpiBench:
    """Virtual SMU, DAQ, matrix and crosspoint SMU on one :class:`BenchNetwork`.

    Use as a context manager (servers start on entry and stop on exit):

    >>> with VirtualScpiBench(network) as bench:        # doctest: +SKIP
    ...     bench.resources["smu"]   # 'TCPIP::127.0.0.1::40123::SOCKET'

    Args:
        network: the emulated network (its generator draws the read noise).
        ports: TCP port per instrument (``"smu"``, ``"daq"``, ``"matrix"``,
            ``"xsmu"``); 0 or missing: an ephemeral port. Always bound to 127.0.0.1.
        bias_channels: also wire one SMU channel (current source) to each bias node
            of the network, after the output channels.
    """

    NAMES = ("smu", "daq", "matrix", "xsmu")

    def __init__(
        self,
        network: BenchNetwork,
        *,
        ports: dict[str, int] | None = None,
        bias_channels: bool = False,
    ) -> None:
        self.network = network
        self._ports_wanted = dict(ports or {})
        self._lock = threading.Lock()
        desc = network.desc
        n_in, n_out = len(desc.input_nodes), len(desc.output_nodes)
        n_bias = len(desc.bias_nodes) if bias_channels else 0
        names = smu_channel_names(n_in + n_out + n_bias)
        kinds = [("input", j) for j in range(n_in)] + [("output", j) for j in range(n_out)]
        kinds += [("bias", j) for j in range(n_bias)]
        chans = {nm: _SmuChannel(k, j) for nm, (k, j) in zip(names, kinds, strict=True)}
        self.smu_channels: tuple[str, ...] = names
        """SMU channel names: input nodes first (voltage), then output nodes (current: the
        nudges), then with ``bias_channels`` the bias nodes (current)."""
        self.devices: dict[str, _Virtual] = {
            "smu": _Smu2600(self, "Keithley Instruments Inc., Model 2602B, VSMU0001, 4.0.0", chans),
            "daq": _Daq6510(self, "KEITHLEY INSTRUMENTS,MODEL DAQ6510,VDAQ0001,1.7.12b"),
            "matrix": _Matrix707B(
                self,
                "Keithley Instruments Inc., Model 707B, VMTX0001, 1.6.1",
                n_slots=max(1, min(6, -(-desc.n_edges // PER_SLOT))),
            ),
            "xsmu": _Smu2600(
                self,
                "Keithley Instruments Inc., Model 2601B, VXSM0001, 4.0.0",
                {"smua": _SmuChannel("cross", 0)},
            ),
        }
        daq = self.devices["daq"]
        assert isinstance(daq, _Daq6510)
        self.daq_channels: tuple[int, ...] = tuple(daq.node_of)
        """DAQ channel of each free node, in board order (``desc.free_nodes``)."""
        n_routed = min(desc.n_edges, 6 * PER_SLOT)
        self.crosspoint_routes: tuple[tuple[str], ...] = tuple(
            (crosspoint_spec(e),) for e in range(n_routed)
        )
        """Route (matrix crosspoints) of each edge ``e`` (edges beyond 576: none)."""
        self._servers: dict[str, _Server] = {}

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the TCP servers (idempotent)."""
        if self._servers:
            return
        try:
            for name in self.NAMES:
                port = int(self._ports_wanted.get(name, 0))
                self._servers[name] = _Server(self.devices[name], self._lock, port)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the servers and close every connection (idempotent)."""
        servers, self._servers = self._servers, {}
        for s in servers.values():
            s.close()

    def __enter__(self) -> VirtualScpiBench:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ addresses
    @property
    def ports(self) -> dict[str, int]:
        """TCP port of each running instrument."""
        return {n: s.port for n, s in self._servers.items()}

    @property
    def resources(self) -> dict[str, str]:
        """VISA resource string of each running instrument (``TCPIP::...::SOCKET``)."""
        return {n: f"TCPIP::127.0.0.1::{p}::SOCKET" for n, p in self.ports.items()}

    # ------------------------------------------------------------------ state
    def faults(self, name: str) -> Faults:
        """The fault settings of instrument ``name`` (``"smu"``, ``"daq"``, ...)."""
        return self.devices[name].faults

    def routed_edges(self) -> list[int]:
        """Edges whose crosspoint is closed on the matrix."""
        m = self.devices["matrix"]
        assert isinstance(m, _Matrix707B)
        spec_to_edge = {r[0]: e for e, r in enumerate(self.crosspoint_routes)}
        return sorted(spec_to_edge[s] for s in m.closed if s in spec_to_edge)

    def closed_crosspoints(self) -> tuple[str, ...]:
        """Closed crosspoints of the matrix (sorted)."""
        m = self.devices["matrix"]
        assert isinstance(m, _Matrix707B)
        with self._lock:
            return tuple(sorted(m.closed))

    def with_lock(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` while no instrument command is being processed."""
        with self._lock:
            return fn()

    @property
    def is_safe(self) -> bool:
        """True when every SMU output is off at 0, no relay is closed, no source is on."""
        with self._lock:
            for name in ("smu", "xsmu"):
                dev = self.devices[name]
                assert isinstance(dev, _Smu2600)
                for c in dev.channels.values():
                    if c.output != 0 or c.levelv != 0.0 or c.leveli != 0.0:
                        return False
            m = self.devices["matrix"]
            assert isinstance(m, _Matrix707B)
            return not m.closed and not self.network.energised
