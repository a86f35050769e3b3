r"""Virtual SCPI/TSP instruments on a :class:`BenchNetwork`, served over TCP on 127.0.0.1.

A :class:`VirtualScpiBench` starts one TCP server per virtual instrument (raw
socket, newline-terminated messages, as a ``TCPIP::host::port::SOCKET`` resource;
``\n`` ends a message, a trailing ``\r`` is ignored; replies end in ``\n``):

``smu``
    A 2602B mainframe with TSP-Link nodes (TSP). Channels (``smua``, ``smub``,
    ``node[2].smua``, ...) are wired in order to the network's input nodes (voltage
    sources) and then to its output nodes (current sources: the nudges).
``daq``
    A DAQ6510 scanning meter (SCPI); channels 101.., 201.. (20 per slot) are wired
    to the network's free nodes (hidden, then output) in board order.
``matrix``
    A 707B switching matrix (TSP); crosspoint ``"<slot><row><col>"`` (rows A..H,
    columns 01..12, 96 per slot) number ``e`` routes edge ``e`` to the crosspoint SMUs.
``xsmu``
    A 2601B (TSP, ``smua``) behind the matrix: pulses go to
    :meth:`BenchNetwork.pulse` of every routed edge, current reads see the routed
    edges' conductances (:meth:`BenchNetwork.conductances`) in parallel.
``k2400``
    A 2400 SourceMeter (SCPI) behind the matrix, like ``xsmu``.

The instruments are written from their manuals (see
:mod:`simulated_device.virtual_tsp_instruments` and
:mod:`simulated_device.virtual_scpi_instruments`), not from the drivers in
``instruments``. Every error becomes an error-queue entry; no input closes a
connection.

Physics (:meth:`VirtualScpiBench.regulate`): the SMU channels on input nodes source
a voltage and draw the current the emulated network takes from them
(:meth:`DRN.source_currents`); a voltage source whose current would exceed its limit
is regulated down to the limit (Newton steps on its level, the node's total
conductance as the slope) and reports compliance; a current source on an input node
is solved the same way; a current source on a free node whose node voltage would
exceed its voltage limit is scaled down and reports compliance.

Fault injection per instrument through :meth:`VirtualScpiBench.faults` (and per
command with :class:`FaultRule`, see :mod:`simulated_device.virtual_faults`).

Simplifications: a routed crosspoint is measured in isolation (I = V x g of the
routed edges); a programming pulse is a ``delay()`` or a 2400 source-measure cycle
at a level above 0.5 V (only its sign matters: the device model's pulse law sets
the step); time stamps are synthetic (NPLC / line frequency per reading); ``delay``
does not sleep. Units: V, A, S, s.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol

import numpy as np

from simulated_device.bench_network import BenchNetwork
from simulated_device.virtual_faults import Faults, apply_scpi_rules
from simulated_device.virtual_scpi_instruments import DAQ_PER_SLOT, K2400, Daq6510
from simulated_device.virtual_tsp import lua_tostring
from simulated_device.virtual_tsp_instruments import (
    PULSE_THRESHOLD_V,
    Matrix707B,
    Smu2600,
    SmuChannel,
)

__all__ = ["DAQ_PER_SLOT", "PER_SLOT", "Faults", "VirtualScpiBench", "crosspoint_spec",
           "smu_channel_names"]

ROWS = "ABCDEFGH"
COLUMNS = 12
PER_SLOT = len(ROWS) * COLUMNS
OVERFLOW = 9.9e37
NAN_CODE = 9.91e37
_SmuChannel = SmuChannel  # the name used before the instruments moved out


class _Device(Protocol):
    identity: str
    faults: Faults

    def process(self, line: str) -> list[str]: ...
    def error(self, code: int, message: str) -> None: ...
    def reset(self) -> None: ...


_CH = r"(?:node\[(\d+)\]\.)?(smu[ab])"
_PULSE_RE = re.compile(
    rf"^{_CH}\.source\.func = .*?for hwl_k = 1, (\d+) do \S+\.source\.levelv = ([^;]+);"
    r" delay\(([^)]+)\);.*print\(hwl_n\)$"
)


def _canon(node: str | None, smu: str) -> str:
    return smu if node in (None, "1") else f"node[{node}].{smu}"


class _PulsingSmu(Smu2600):
    """The 2601B behind the matrix: also runs a pulse train chunk in one step.

    A chunk ``smua.source.func = ...; for hwl_k = 1, N do smua.source.levelv = A;
    delay(W); ... end ... print(hwl_n)`` applies N pulses of sign(A) to each routed
    edge (fewer with ``compliance_after_pulses``) and prints the count.
    """

    def process(self, line: str) -> list[str]:
        m = _PULSE_RE.match(line.strip())
        if m is None:
            return super().process(line)
        name = _canon(m.group(1), m.group(2))
        if name not in self.channels:
            self.error(-286, f"TSP Runtime error at line 1: attempt to index global '{name}'")
            return []
        c = self.channels[name]
        count, amplitude = int(m.group(3)), float(m.group(4))
        lim = self.faults.compliance_after_pulses
        done = count if lim is None else min(count, lim)
        if c.kind == "cross" and amplitude != 0.0:
            sign = 1 if amplitude > 0 else -1
            for e in self.bench.routed_edges():
                self.net.pulse(e, sign * done)
        c.levelv = 0.0
        c.output = 0
        self.bench.source_changed(self, name)
        return [lua_tostring(float(done), 7)]


class VirtualScpiBench:
    """Virtual SMU, DAQ, matrix and crosspoint SMUs on one :class:`BenchNetwork`.

    Use as a context manager (servers start on entry and stop on exit):

    >>> with VirtualScpiBench(network) as bench:        # doctest: +SKIP
    ...     bench.resources["smu"]   # 'TCPIP::127.0.0.1::40123::SOCKET'

    Args:
        network: the emulated network (its generator draws the read noise).
        ports: TCP port per instrument (``"smu"``, ``"daq"``, ``"matrix"``,
            ``"xsmu"``, ``"k2400"``); 0 or missing: an ephemeral port. Always bound
            to 127.0.0.1.
        bias_channels: also wire one SMU channel (current source) to each bias node
            of the network, after the output channels.
    """

    NAMES = ("smu", "daq", "matrix", "xsmu", "k2400")

    def __init__(
        self,
        network: BenchNetwork,
        *,
        ports: dict[str, int] | None = None,
        bias_channels: bool = False,
    ) -> None:
        self.network = network
        self._ports_wanted = dict(ports or {})
        self._lock = threading.RLock()
        self._dirty = True
        desc = network.desc
        n_in, n_out = len(desc.input_nodes), len(desc.output_nodes)
        n_bias = len(desc.bias_nodes) if bias_channels else 0
        names = smu_channel_names(n_in + n_out + n_bias)
        kinds = [("input", j) for j in range(n_in)] + [("output", j) for j in range(n_out)]
        kinds += [("bias", j) for j in range(n_bias)]
        chans = {nm: SmuChannel(k, j) for nm, (k, j) in zip(names, kinds, strict=True)}
        self.smu_channels: tuple[str, ...] = names
        """SMU channel names: input nodes first (voltage), then output nodes (current: the
        nudges), then with ``bias_channels`` the bias nodes (current)."""
        self.crosspoint_routes: tuple[tuple[str], ...] = tuple(
            (crosspoint_spec(e),) for e in range(min(desc.n_edges, 6 * PER_SLOT))
        )
        """Route (matrix crosspoints) of each edge ``e`` (edges beyond 576: none)."""
        self._spec_to_edge = {r[0]: e for e, r in enumerate(self.crosspoint_routes)}
        self.smu = Smu2600(self, "Keithley Instruments Inc., Model 2602B, VSMU0001, 4.0.0", chans)
        self.daq = Daq6510(self, "KEITHLEY INSTRUMENTS,MODEL DAQ6510,VDAQ0001,1.7.12b")
        self.matrix = Matrix707B(
            self,
            "Keithley Instruments Inc., Model 707B, VMTX0001, 1.6.1",
            n_slots=max(1, min(6, -(-desc.n_edges // PER_SLOT))),
        )
        self.xsmu = _PulsingSmu(
            self, "Keithley Instruments Inc., Model 2601B, VXSM0001, 4.0.0",
            {"smua": SmuChannel("cross", 0)},
        )
        self.k2400 = K2400(
            self,
            "KEITHLEY INSTRUMENTS INC.,MODEL 2400,VK240001,C32   Oct  4 2010 14:20:11/A02  /S/K",
        )
        self.devices: dict[str, Any] = {
            "smu": self.smu, "daq": self.daq, "matrix": self.matrix, "xsmu": self.xsmu,
            "k2400": self.k2400,
        }
        self.daq_channels: tuple[int, ...] = tuple(self.daq.node_of)
        """DAQ channel of each free node, in board order (``desc.free_nodes``)."""
        self._servers: dict[str, _Server] = {}
        self._source_i = np.zeros(n_in)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the TCP servers (idempotent)."""
        if self._servers:
            return
        try:
            for name in self.NAMES:
                port = int(self._ports_wanted.get(name, 0))
                self._servers[name] = _Server(self, name, port)
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
        return self.devices[name].faults  # type: ignore[no-any-return]

    def routed_edges(self) -> list[int]:
        """Edges whose crosspoint is closed on the matrix."""
        return sorted(self._spec_to_edge[s] for s in self.matrix.closed if s in self._spec_to_edge)

    def closed_crosspoints(self) -> tuple[str, ...]:
        """Closed crosspoints of the matrix (sorted)."""
        with self._lock:
            return tuple(sorted(self.matrix.closed))

    def with_lock(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` while no instrument command is being processed."""
        with self._lock:
            return fn()

    @property
    def is_safe(self) -> bool:
        """True when every SMU output is off at 0, no relay is closed, no source is on."""
        with self._lock:
            for dev in (self.smu, self.xsmu):
                for c in dev.channels.values():
                    if c.output != 0 or c.levelv != 0.0 or c.leveli != 0.0:
                        return False
            k = self.k2400
            if k.output or any(k.level.values()):
                return False
            return not self.matrix.closed and not self.network.energised

    # ------------------------------------------------------------------ physics
    def source_changed(self, dev: object, name: str) -> None:
        """A source level, limit or output state changed: push it, regulate later."""
        if dev is self.smu:
            c = self.smu.channels[name]
            on = c.output == 1
            if c.kind in ("output", "bias") and on and c.func == 1:
                self.smu.error(5001, f"virtual bench: {name} drives a {c.kind} node: "
                                     "source amps")
            if c.kind == "input" and not (on and c.func == 0):
                self._set_input(c.index, c.levelv if on else 0.0)
            elif c.kind in ("output", "bias"):
                i = c.leveli if (on and c.func == 0) else 0.0
                arr = self.network.nudge_a if c.kind == "output" else self.network.bias_a
                if arr[c.index] != i:
                    setter = (self.network.set_nudge_currents if c.kind == "output"
                              else self.network.set_bias_currents)
                    setter(np.array([c.index]), np.array([i]))
        self._dirty = True

    def _set_input(self, k: int, v: float) -> None:
        # only a change re-solves the network (a re-solve is warm-started, not idempotent)
        if self.network.inputs_v[k] != v:
            self.network.set_inputs(np.array([k]), np.array([v]))

    def routes_changed(self) -> None:
        """The matrix opened or closed a crosspoint."""
        self._dirty = True

    def regulate(self) -> None:
        """Bring every SMU source of ``smu`` within its limit (see the module docstring)."""
        if not self._dirty:
            return
        net = self.network
        chans = self.smu.channels
        inputs = [(n, c) for n, c in chans.items() if c.kind == "input"]
        currents = [(n, c) for n, c in chans.items() if c.kind in ("output", "bias")]
        for _, c in chans.items():
            c.in_compliance = False
            if c.kind == "input" and c.output == 1 and c.func == 1:
                self._set_input(c.index, c.levelv)
        rows = np.asarray(net.board.network.input_row_sums(), dtype=np.float64)
        w0 = np.asarray(net.board.network.weights[0], dtype=np.float64)
        n_in = len(net.desc.input_nodes)
        h0 = slice(n_in, n_in + w0.shape[1])
        # current sources on free nodes: scale down while their node exceeds limitv
        for _ in range(4):
            over = False
            v_all = net.true_voltages()
            for _n, c in currents:
                if c.output != 1 or c.func != 0:
                    continue
                node = int((net.desc.output_nodes if c.kind == "output" else
                            net.desc.bias_nodes)[c.index])
                vn = abs(float(v_all[node]))
                i_now = float((net.nudge_a if c.kind == "output" else net.bias_a)[c.index])
                if vn > c.limitv * (1 + 1e-6) and i_now != 0.0:
                    over = True
                    c.in_compliance = True
                    setter = (net.set_nudge_currents if c.kind == "output"
                              else net.set_bias_currents)
                    setter(np.array([c.index]), np.array([i_now * c.limitv / vn]))
            if not over:
                break
        # input sources: voltage sources limited in current, current sources solved
        for _ in range(12):
            v_all = net.true_voltages()
            v_in = np.array(net.inputs_v, dtype=np.float64)
            cur = v_in * rows - w0 @ v_all[h0]
            moved = False
            for _n, c in inputs:
                k = c.index
                if c.output != 1:
                    continue
                g = max(float(rows[k]), 1e-15)
                if c.func == 1:
                    target = float(np.clip(cur[k], -c.limiti, c.limiti))
                    if abs(cur[k]) > c.limiti * (1 + 1e-6):
                        c.in_compliance = True
                else:
                    target = c.leveli
                if abs(cur[k] - target) > 1e-6 * abs(target) + 1e-15:
                    v_new = v_in[k] + (target - cur[k]) / g
                    if c.func == 0 and abs(v_new) > c.limitv:
                        v_new = float(np.sign(v_new)) * c.limitv
                        c.in_compliance = True
                    if c.func == 1 and abs(v_new) > abs(c.levelv):
                        v_new = c.levelv
                    if v_new != v_in[k]:
                        self._set_input(k, v_new)
                        moved = True
            if not moved:
                break
        v_all = net.true_voltages()
        v_in = np.array(net.inputs_v, dtype=np.float64)
        self._source_i = v_in * rows - w0 @ v_all[h0]
        for _n, c in inputs:
            c.eff_v = float(v_in[c.index])
            i = float(self._source_i[c.index])
            if c.output == 1 and c.func == 1 and c.in_compliance:
                i = float(np.clip(i, -c.limiti, c.limiti))
            c.eff_i = i
        for _n, c in currents:
            arr = net.nudge_a if c.kind == "output" else net.bias_a
            c.eff_i = float(arr[c.index])
        self._dirty = False

    def _routed_g(self) -> float:
        edges = self.routed_edges()
        if not edges:
            return 0.0
        return float(np.sum(self.network.conductances(np.array(edges))))

    def measure_smu(self, dev: Smu2600, name: str, n: int) -> list[tuple[float, float]]:
        """``n`` (current A, voltage V) readings of SMU channel ``name``."""
        c = dev.channels[name]
        out: list[tuple[float, float]]
        if c.kind == "cross":
            on = c.output == 1
            g = self._routed_g()
            c.in_compliance = False
            if not on:
                out = [(0.0, 0.0)] * n
            elif c.func == 1:
                v, i = c.levelv, c.levelv * g
                if abs(i) > c.limiti:
                    i = float(np.sign(i)) * c.limiti
                    v = i / g
                    c.in_compliance = True
                out = [(i, v)] * n
            else:
                i = c.leveli
                v = i / g if g > 0 else float(np.sign(i)) * c.limitv
                if abs(v) > c.limitv:
                    v = float(np.sign(v)) * c.limitv
                    i = v * g
                    c.in_compliance = True
                out = [(i, v)] * n
        else:
            self.regulate()
            d = self.network.desc
            nodes = {"input": d.input_nodes, "output": d.output_nodes, "bias": d.bias_nodes}
            node = int(nodes[c.kind][c.index])
            r = self.network.read_nodes(np.array([node]), n)
            vs = [float(x) for x in np.asarray(r.samples_v)[:, 0, 0]]
            i = c.eff_i if (c.output == 1 or c.kind == "input") else 0.0
            out = [(i, v) for v in vs]
        return [(self.reading_fault(dev, i), self.reading_fault(dev, v)) for i, v in out]

    def delay_passed(self, dev: Smu2600, t: float) -> None:
        """A TSP ``delay(t)``: a source above the pulse threshold on a route pulses it."""
        if dev is not self.xsmu:
            return
        c = dev.channels["smua"]
        if c.output == 1 and c.func == 1 and abs(c.levelv) > PULSE_THRESHOLD_V:
            self._pulse_routes(1 if c.levelv > 0 else -1, dev)

    def _pulse_routes(self, sign: int, dev: Any) -> bool:
        f = dev.faults
        if f.compliance_after_pulses is not None:
            if f.compliance_after_pulses <= 0:
                f.compliance.add("smua" if dev is self.xsmu else "k2400")
                return False
            f.compliance_after_pulses -= 1
        for e in self.routed_edges():
            self.network.pulse(e, sign)
        return True

    def measure_k2400(self, dev: K2400, delay_s: float) -> tuple[float, float, bool]:
        """One 2400 source-measure cycle: (current A, voltage V, in compliance)."""
        g = self._routed_g()
        comp = "k2400" in dev.faults.compliance
        if not dev.output:
            return 0.0, 0.0, comp
        if dev.sfunc == "VOLT":
            v = dev.level["VOLT"]
            i = v * g
            if abs(i) > dev.prot["CURR"]:
                i = float(np.sign(i)) * dev.prot["CURR"]
                v = i / g
                comp = True
            pulse = abs(dev.level["VOLT"]) > PULSE_THRESHOLD_V and not comp
            if pulse and not self._pulse_routes(1 if dev.level["VOLT"] > 0 else -1, dev):
                comp = True
        else:
            i = dev.level["CURR"]
            v = i / g if g > 0 else float(np.sign(i)) * dev.prot["VOLT"]
            if abs(v) > dev.prot["VOLT"]:
                v = float(np.sign(v)) * dev.prot["VOLT"]
                i = v * g
                comp = True
        dev.tripped = comp
        return i, v, comp

    def reading_fault(self, dev: Any, value: float) -> float:
        """Apply the NaN/overrange reading faults of ``dev`` to one reading."""
        f = dev.faults
        if f.nan_readings > 0:
            f.nan_readings -= 1
            return NAN_CODE
        if f.overrange_readings > 0:
            f.overrange_readings -= 1
            return OVERFLOW
        return value


# ---------------------------------------------------------------------- the servers
class _Server:
    """One TCP listener on 127.0.0.1 serving newline-terminated messages to a device."""

    def __init__(self, bench: VirtualScpiBench, name: str, port: int) -> None:
        self.bench = bench
        self.name = name
        self.device = bench.devices[name]
        self.lock = bench._lock
        self.sock = socket.create_server(("127.0.0.1", port))
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.conns: list[socket.socket] = []
        self.exchanges = 0
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
                if len(buf) > 1 << 20 and b"\n" not in buf:
                    buf = b""  # an input buffer overrun: the message is lost
                    with self.lock:
                        self.device.error(-363, "Input buffer overrun")
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    line = raw.decode("ascii", errors="replace").strip("\r")
                    try:
                        replies = self._handle(line)
                    except _DisconnectError:
                        with contextlib.suppress(OSError):
                            conn.shutdown(socket.SHUT_RDWR)
                        return
                    for reply in replies:
                        try:
                            conn.sendall(reply)
                        except OSError:
                            return

    def _handle(self, line: str) -> list[bytes]:
        f = self.device.faults
        if f.dead:
            return []
        self.exchanges += 1
        plan = apply_scpi_rules(self.device, line, self.exchanges)
        if plan.has("stop"):
            f.dead = True
            return []
        if plan.has("disconnect"):
            raise _DisconnectError
        with self.lock:
            try:
                replies = plan.execute(self.device, line)
            except Exception as exc:  # no input may close a connection
                self.device.error(-300, f"Device-specific error; {type(exc).__name__}: {exc}")
                replies = []
        out: list[bytes] = []
        for r in replies:
            if plan.drop or f.drop_replies > 0:
                if not plan.drop:
                    f.drop_replies -= 1
                continue
            data = r.encode("ascii", errors="replace") + b"\n"
            if plan.has("garble") or f.garble_replies > 0:
                if not plan.has("garble"):
                    f.garble_replies -= 1
                data = b"?#GARBLED#" + r[::-1][:20].encode("ascii", errors="replace") + b"\n"
            if plan.has("truncate"):
                data = data[: max(1, len(data) // 2)] + b"\n"
            delay = f.reply_delay_s + plan.delay_s
            if f.slow_replies > 0:
                f.slow_replies -= 1
                delay += f.slow_delay_s
            if delay > 0:
                time.sleep(delay)
            out.append(data)
        return out

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        for t in self.threads:
            t.join(timeout=2.0)


class _DisconnectError(Exception):
    """A fault closes the connection."""


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
