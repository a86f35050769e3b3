"""Virtual TSP instruments: a 2600B-series SMU (2601B/2602B) and a 707B matrix.

Written from the Series 2600B reference manual (section 7 "TSP command reference":
``smuX.source.*``, ``smuX.measure.*``, ``smuX.nvbufferY``, ``smuX.reset()``,
``reset()``, ``localnode.*``, ``errorqueue.*``, ``status.*``, ``format.*``,
``display.*``, ``delay()``, ``waitcomplete()``, ``print()``, ``printbuffer()``;
section 8 "Troubleshooting guide", error summary; appendix "Status model") and the
707B reference manual (``channel.close/open/exclusiveclose/getclose/reset``, the same
system functions). Commands run through :mod:`simulated_device.virtual_tsp`; every
error goes to the error queue, none closes the connection.

Physics: a channel wired to an input node sources volts (or amps: the bench solves
the input voltage that draws that current), one wired to an output or bias node
sources amps; the bench regulates the levels so that no source exceeds its limit
(a voltage source in compliance becomes current-limited and reads
``source.compliance == true``; see :meth:`VirtualScpiBench.regulate`). Levels,
limits and ranges beyond the 2602B's are refused with error 1102 "Parameter too big"
or 1103 "Parameter too small" and leave the setting unchanged.

Units: V, A, s, ohm, W.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from simulated_device.virtual_ieee488 import StatusModel
from simulated_device.virtual_tsp import (
    LuaFunction,
    Prop,
    TspError,
    TspInterpreter,
    TspTable,
    lua_number,
    lua_tostring,
)

if TYPE_CHECKING:
    from simulated_device.virtual_faults import Faults
    from simulated_device.virtual_scpi import VirtualScpiBench

__all__ = ["Matrix707B", "Smu2600", "SmuChannel", "TspInstrument"]

V_RANGES = (0.1, 1.0, 6.0, 40.0)
"""2602B voltage ranges, V."""
I_RANGES = (100e-9, 1e-6, 10e-6, 100e-6, 1e-3, 10e-3, 100e-3, 1.0, 1.5, 3.0)
"""2602B current ranges, A."""
V_MAX = 40.4  # 101 % of the 40 V range
I_MAX = 3.03
LIMITV = (10e-3, 40.0)
LIMITI = (10e-9, 3.0)
NAN_CODE = 9.91e37
PULSE_THRESHOLD_V = 0.5
"""On a crosspoint SMU, a level above this magnitude applied for a ``delay()`` (or a
source-measure cycle) is one programming pulse; at or below it, a read."""
ROWS = "ABCDEFGH"
COLUMNS = 12


def _too(value: float, lo: float, hi: float, what: str) -> None:
    if not math.isfinite(value) or value > hi:
        raise TspError(1102, f"Parameter too big, {what} = {value:g} (max {hi:g})")
    if value < lo:
        raise TspError(1103, f"Parameter too small, {what} = {value:g} (min {lo:g})")


def _fit_range(value: float, ranges: tuple[float, ...], what: str) -> float:
    a = abs(value)
    _too(a, 0.0, ranges[-1], what)
    for r in ranges:
        if a <= r * 1.0000001:
            return r
    return ranges[-1]


@dataclass
class SmuChannel:
    """One 2600B SMU channel and the node it is wired to.

    ``kind``: ``"input"`` (an input node), ``"output"`` (an output node: the nudges),
    ``"bias"`` (a bias node), ``"cross"`` (behind the matrix). Levels in V and A.
    """

    kind: str
    index: int
    func: int = 1  # OUTPUT_DCAMPS = 0, OUTPUT_DCVOLTS = 1
    levelv: float = 0.0
    leveli: float = 0.0
    limiti: float = 0.1
    limitv: float = 20.0
    rangev: float = 0.1
    rangei: float = 100e-9
    autorangev: int = 1
    autorangei: int = 1
    output: int = 0
    offmode: int = 0
    nplc: float = 1.0
    count: int = 1
    m_rangev: float = 0.1
    m_rangei: float = 100e-9
    m_autorangev: int = 1
    m_autorangei: int = 1
    autozero: int = 2
    sense: int = 0
    source_delay: float = -1.0
    measure_delay: float = -1.0
    filter_enable: int = 0
    filter_count: int = 1
    readings: list[float] = field(default_factory=list)
    stamps: list[float] = field(default_factory=list)
    readings2: list[float] = field(default_factory=list)
    stamps2: list[float] = field(default_factory=list)
    timestamps_on: int = 0
    # regulated by the bench: effective source levels and limit flags
    eff_v: float = 0.0
    eff_i: float = 0.0
    in_compliance: bool = False

    def reset(self) -> None:
        """``smuX.reset()``: every attribute back to its factory default."""
        kind, index = self.kind, self.index
        fresh = SmuChannel(kind, index)
        for f in fresh.__dataclass_fields__:
            setattr(self, f, getattr(fresh, f))


class TspInstrument:
    """A TSP instrument: common commands, the system library, the interpreter."""

    model = "TSP"
    EMPTY_QUEUE = "No Error"
    """``errorqueue.next()`` on an empty queue: code 0 and this message (2600B reference
    manual, appendix "Status model", "Error queue")."""

    def __init__(self, bench: VirtualScpiBench, identity: str) -> None:
        from simulated_device.virtual_faults import Faults

        self.bench = bench
        self.net = bench.network
        self.identity = identity
        self.faults: Faults = Faults()
        self.status = StatusModel(empty_message=self.EMPTY_QUEUE)
        self.precision = 6
        self.linefreq = 60.0
        self.clock_s = 0.0
        self.vars = TspTable("_G")
        self._out: list[str] = []
        self.interp = TspInterpreter(self.vars, self._out.append, lambda: self.precision)
        self._install_system()

    @property
    def errors(self) -> list[tuple[int, str]]:
        """The error queue (code, message), oldest first."""
        return self.status.errors

    def error(self, code: int, message: str) -> None:
        """Queue error ``code`` with ``message``."""
        self.status.error(code, message)

    # -------------------------------------------------------------- library
    def fn(self, name: str, f: Callable[..., list[Any] | None]) -> LuaFunction:
        """A Python function as a TSP function."""
        return LuaFunction(name, f)

    def _install_system(self) -> None:
        g = self.vars.entries
        g["print"] = self.fn("print", self._print)
        g["printbuffer"] = self.fn("printbuffer", self._printbuffer)
        g["delay"] = self.fn("delay", self._delay)
        g["waitcomplete"] = self.fn("waitcomplete", lambda *a: None)
        g["reset"] = self.fn("reset", lambda *a: self.reset())
        g["opc"] = self.fn("opc", lambda *a: self._opc())
        g["tonumber"] = self.fn("tonumber", _tonumber)
        g["tostring"] = self.fn("tostring", lambda v=None, *a: [lua_tostring(v, self.precision)])
        g["type"] = self.fn("type", lambda v=None, *a: [_lua_type(v)])
        g["math"] = TspTable(
            "math",
            {
                "abs": self.fn("abs", lambda x, *a: [abs(lua_number(x))]),
                "floor": self.fn("floor", lambda x, *a: [float(math.floor(lua_number(x)))]),
                "ceil": self.fn("ceil", lambda x, *a: [float(math.ceil(lua_number(x)))]),
                "sqrt": self.fn("sqrt", lambda x, *a: [math.sqrt(max(0.0, lua_number(x)))]),
                "min": self.fn("min", lambda *a: [min(lua_number(x) for x in a)]),
                "max": self.fn("max", lambda *a: [max(lua_number(x) for x in a)]),
                "pi": math.pi,
                "huge": math.inf,
            },
        )
        st = self.status
        g["errorqueue"] = TspTable(
            "errorqueue",
            {
                "count": Prop(lambda: float(len(st.errors))),
                "next": self.fn("next", self._next_error),
                "clear": self.fn("clear", lambda *a: st.errors.clear()),
            },
        )
        g["eventlog"] = TspTable(
            "eventlog",
            {"count": Prop(lambda: 0.0), "clear": self.fn("clear", lambda *a: None),
             "enable": 0.0, "ENABLE": 1.0, "DISABLE": 0.0},
        )

        def set_linefreq(v: Any) -> None:
            f = lua_number(v, "linefreq")
            if f not in (50.0, 60.0):
                raise TspError(1102 if f > 60 else 1103, f"Parameter error, linefreq = {f:g}")
            self.linefreq = f

        model = self.identity.split(",")[1].strip().replace("Model ", "").replace("MODEL ", "")
        serial = self.identity.split(",")[2].strip()
        revision = self.identity.split(",")[3].strip()
        localnode = TspTable(
            "localnode",
            {
                "model": Prop(lambda: model),
                "serialno": Prop(lambda: serial),
                "revision": Prop(lambda: revision),
                "description": "Keithley virtual instrument",
                "linefreq": Prop(lambda: self.linefreq, set_linefreq),
                "autolinefreq": Prop(lambda: False, lambda v: None),
                "prompts": Prop(lambda: 0.0, self._flag01("localnode.prompts")),
                "prompts4882": Prop(lambda: 1.0, self._flag01("localnode.prompts4882")),
                "showerrors": Prop(lambda: 0.0, self._flag01("localnode.showerrors")),
                "password": Prop(lambda: "", lambda v: None),
                "reset": self.fn("reset", lambda *a: self.reset()),
                "ENABLE": 1.0,
                "DISABLE": 0.0,
            },
        )
        g["localnode"] = localnode
        g["status"] = self._status_table()
        g["display"] = _NoOpTable("display")
        g["beeper"] = _NoOpTable("beeper")
        g["lan"] = _NoOpTable("lan")
        g["tsplink"] = _NoOpTable("tsplink")
        g["digio"] = _NoOpTable("digio")
        fmt = TspTable(
            "format",
            {
                "ASCII": 1.0, "REAL32": 4.0, "REAL64": 12.0, "REAL": 12.0,
                "NORMAL": 1.0, "SWAPPED": 0.0, "BIGENDIAN": 1.0, "LITTLEENDIAN": 0.0,
            },
        )
        fmt.entries["data"] = Prop(lambda: 1.0, self._set_format_data)
        fmt.entries["asciiprecision"] = Prop(lambda: float(self.precision), self._set_precision)
        fmt.entries["byteorder"] = Prop(lambda: 1.0, lambda v: None)
        g["format"] = fmt
        t0 = [0.0]
        g["timer"] = TspTable(
            "timer",
            {
                "reset": self.fn("reset", lambda *a: t0.__setitem__(0, self.clock_s)),
                "measure": TspTable(
                    "timer.measure", {"t": self.fn("t", lambda *a: [self.clock_s - t0[0]])}
                ),
            },
        )
        g["os"] = TspTable("os", {"time": self.fn("time", lambda *a: [float(int(self.clock_s))])})

    def _flag01(self, what: str) -> Callable[[Any], None]:
        def set_(v: Any) -> None:
            x = lua_number(v, what)
            if x not in (0.0, 1.0):
                raise TspError(1102 if x > 1 else 1103, f"Parameter error, {what} = {x:g}")

        return set_

    def _set_format_data(self, v: Any) -> None:
        x = lua_number(v, "format.data")
        if x != 1.0:
            raise TspError(1105, "Settings conflict, only format.ASCII is served virtually")

    def _set_precision(self, v: Any) -> None:
        x = lua_number(v, "format.asciiprecision")
        _too(x, 0, 16, "format.asciiprecision")
        self.precision = 6 if x == 0 else int(x)

    def _status_table(self) -> TspTable:
        st = self.status

        def reg(name: str, cond: Callable[[], float]) -> TspTable:
            t = TspTable(name)
            store = {"enable": 0.0, "ntr": 0.0, "ptr": 0.0}
            t.entries["condition"] = Prop(cond)
            t.entries["event"] = Prop(cond)
            for k in store:
                t.entries[k] = _register_prop(store, k, name)
            return t

        status = reg("status", lambda: float(st.stb))

        def set_sre(v: Any) -> None:
            st.sre = int(lua_number(v, "status.request_enable")) & 0xBF

        status.entries["request_enable"] = Prop(lambda: float(st.sre), set_sre)
        status.entries["reset"] = self.fn("reset", lambda *a: self._status_reset())
        std = reg("status.standard", lambda: float(st.esr))

        def set_ese(v: Any) -> None:
            st.ese = int(lua_number(v, "status.standard.enable")) & 0xFF

        std.entries["enable"] = Prop(lambda: float(st.ese), set_ese)
        std.entries["event"] = Prop(lambda: float(st.read_esr()))
        status.entries["standard"] = std
        status.entries["operation"] = reg("status.operation", lambda: 0.0)
        status.entries["questionable"] = reg("status.questionable", lambda: 0.0)
        status.entries["system"] = reg("status.system", lambda: 0.0)
        meas = reg("status.measurement", lambda: self._measurement_condition(None))
        inst = TspTable("status.measurement.instrument")
        for name in self._status_channels():
            inst.entries[name] = reg(
                f"status.measurement.instrument.{name}", self._condition_of(name)
            )
        meas.entries["instrument"] = inst
        status.entries["measurement"] = meas
        return status

    def _condition_of(self, name: str) -> Callable[[], float]:
        return lambda: self._measurement_condition(name)

    def _status_reset(self) -> None:
        self.status.ese = 0
        self.status.sre = 0

    def _status_channels(self) -> list[str]:
        return []

    def _measurement_condition(self, channel: str | None) -> float:
        return 0.0

    # -------------------------------------------------------------- functions
    def _print(self, *args: Any) -> None:
        self._out.append("\t".join(lua_tostring(a, self.precision) for a in args))

    def _printbuffer(self, *args: Any) -> None:
        if len(args) < 3:
            raise TspError(-286, "TSP Runtime error: printbuffer needs start, end and a buffer")
        lo = int(lua_number(args[0], "printbuffer start"))
        hi = int(lua_number(args[1], "printbuffer end"))
        cols = []
        for b in args[2:]:
            if not isinstance(b, _BufferView):
                raise TspError(-286, "TSP Runtime error: printbuffer argument is not a buffer")
            cols.append(b.values())
        n = min(len(c) for c in cols)
        if lo < 1 or hi > n or hi < lo:
            raise TspError(1102 if hi > n else 1103,
                           f"Parameter error, printbuffer range {lo}..{hi} of {n} readings")
        vals = [lua_tostring(c[i - 1], self.precision) for i in range(lo, hi + 1) for c in cols]
        self._out.append(", ".join(vals))

    def _delay(self, *args: Any) -> None:
        t = lua_number(args[0] if args else None, "delay")
        if t < 0:
            raise TspError(1103, f"Parameter too small, delay = {t:g}")
        self.clock_s += t
        self.on_delay(t)

    def on_delay(self, t: float) -> None:
        """Hook: a ``delay(t)`` passed with the present source levels."""

    def _opc(self) -> None:
        self.status.esr |= 0x01

    def _next_error(self, *args: Any) -> list[Any]:
        code, msg = self.status.pop()
        return [float(code), msg, 0.0 if code == 0 else 20.0, 1.0]

    # -------------------------------------------------------------- entry
    def reset(self) -> None:
        """``reset()`` / ``*RST``: every setting to its default (errors kept)."""
        self.precision = 6

    def process(self, line: str) -> list[str]:
        """Execute one message; the lines printed (errors are queued)."""
        text = line.strip()
        self._out.clear()
        if not text:
            return []
        if text.startswith("*"):
            head, _, args = text.partition(" ")
            try:
                r = self.status.common(head.upper(), args, self.identity, self.reset)
            except KeyError:
                self.error(-285, f"Program syntax error at line 1: unexpected symbol near '{head}'")
                return []
            except ValueError as exc:
                self.error(-286, f"TSP Runtime error: {exc}")
                return []
            return [] if r is None else [r]
        try:
            self.interp.run(text)
        except TspError as exc:
            self.error(exc.code, exc.message)
        except (ValueError, ArithmeticError, TypeError, IndexError, KeyError) as exc:
            self.error(-286, f"TSP Runtime error at line 1: {exc}")
        return list(self._out)


def _register_prop(store: dict[str, float], key: str, name: str) -> Prop:
    """A 16-bit status register setting (enable, ntr, ptr)."""

    def set_(v: Any) -> None:
        store[key] = float(int(lua_number(v, f"{name}.{key}")) & 0xFFFF)

    return Prop(lambda: store[key], set_)


def _tonumber(v: Any = None, *args: Any) -> list[Any]:
    try:
        return [lua_number(v)]
    except TspError:
        return [None]


def _lua_type(v: Any) -> str:
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, TspTable):
        return "table"
    return "function"


class _NoOpTable(TspTable):
    """``display.*`` and the like: every attribute and function accepted, no effect."""

    def get(self, key: Any) -> Any:
        if key in self.entries:
            return super().get(key)
        if isinstance(key, str) and key.isupper():
            return 0.0  # constants such as display.SMUA_SMUB
        return _NoOpTable(f"{self.name}.{key}")

    def set(self, key: Any, value: Any) -> None:
        self.entries[key] = value

    def __call__(self, *args: Any) -> list[Any]:
        return []


class _BufferView(TspTable):
    """A reading buffer (``smua.nvbuffer1``) or one of its columns (``.readings``)."""

    def __init__(self, name: str, values: Callable[[], list[float]]) -> None:
        super().__init__(name)
        self.values = values

    def get(self, key: Any) -> Any:
        if isinstance(key, (int, float)) and not isinstance(key, bool):
            vals = self.values()
            k = int(key)
            return vals[k - 1] if 1 <= k <= len(vals) else None
        return super().get(key)

    def length(self) -> int:
        return len(self.values())


# ---------------------------------------------------------------------- 2600B
_CONSTANTS = {
    "OUTPUT_DCAMPS": 0.0, "OUTPUT_DCVOLTS": 1.0, "OUTPUT_OFF": 0.0, "OUTPUT_ON": 1.0,
    "OUTPUT_HIGH_Z": 2.0, "OUTPUT_NORMAL": 0.0, "OUTPUT_ZERO": 2.0,
    "AUTORANGE_OFF": 0.0, "AUTORANGE_ON": 1.0, "AUTORANGE_FOLLOW_LIMIT": 2.0,
    "SENSE_LOCAL": 0.0, "SENSE_REMOTE": 1.0, "SENSE_CALA": 3.0,
    "AUTOZERO_OFF": 0.0, "AUTOZERO_ONCE": 1.0, "AUTOZERO_AUTO": 2.0,
    "DELAY_OFF": 0.0, "DELAY_AUTO": -1.0, "FILTER_MOVING_AVG": 0.0, "FILTER_REPEAT_AVG": 1.0,
    "FILTER_MEDIAN": 2.0, "FILTER_OFF": 0.0, "FILTER_ON": 1.0, "ENABLE": 1.0, "DISABLE": 0.0,
}


class Smu2600(TspInstrument):
    """A 2600B mainframe with TSP-Link nodes (channels by canonical name)."""

    def __init__(
        self, bench: VirtualScpiBench, identity: str, channels: dict[str, SmuChannel]
    ) -> None:
        self.channels = channels
        super().__init__(bench, identity)
        nodes = TspTable("node")
        for name, ch in channels.items():
            m = re.fullmatch(r"(?:node\[(\d+)\]\.)?(smu[ab])", name)
            assert m is not None
            table = self._channel_table(name, ch)
            if m.group(1) is None:
                self.vars.entries[m.group(2)] = table
                node_no = 1
            else:
                node_no = int(m.group(1))
            node = nodes.entries.setdefault(node_no, TspTable(f"node[{node_no}]"))
            node.entries[m.group(2)] = table
        if 1 in nodes.entries:
            for k, v in self.vars.entries["localnode"].entries.items():
                nodes.entries[1].entries.setdefault(k, v)
        self.vars.entries["node"] = nodes

    def _status_channels(self) -> list[str]:
        return [n for n in self.channels if "." not in n]

    def _measurement_condition(self, channel: str | None) -> float:
        self.bench.regulate()
        names = [channel] if channel else list(self.channels)
        bits = 0
        for n in names:
            c = self.channels[n]
            if self._compliant(n, c):
                bits |= 2 if c.func == 1 else 1  # ILMT (bit 1) / VLMT (bit 0)
        return float(bits)

    def _compliant(self, name: str, c: SmuChannel) -> bool:
        return c.output == 1 and (c.in_compliance or name in self.faults.compliance)

    def reset(self) -> None:
        """Every setting to its default."""
        super().reset()
        for name, c in self.channels.items():
            c.reset()
            self.bench.source_changed(self, name)

    # -------------------------------------------------------------- channel library
    def _channel_table(self, name: str, c: SmuChannel) -> TspTable:
        def num(attr: str, lo: float, hi: float, push: bool = False) -> Prop:
            def set_(v: Any) -> None:
                x = lua_number(v, f"{name}.{attr}")
                _too(x, lo, hi, f"{name}.{attr}")
                setattr(c, attr, x)
                if push:
                    self.bench.source_changed(self, name)

            return Prop(lambda: float(getattr(c, attr)), set_)

        def choice(attr: str, allowed: tuple[float, ...], push: bool = False) -> Prop:
            def set_(v: Any) -> None:
                x = lua_number(v, f"{name}.{attr}")
                if x not in allowed:
                    raise TspError(1102 if x > max(allowed) else 1103,
                                   f"Parameter error, {name}.{attr} = {x:g}")
                setattr(c, attr, int(x))
                if push:
                    self.bench.source_changed(self, name)

            return Prop(lambda: float(getattr(c, attr)), set_)

        def level(attr: str) -> Prop:
            vmax = V_MAX if attr == "levelv" else I_MAX

            def set_(v: Any) -> None:
                x = lua_number(v, f"{name}.source.{attr}")
                _too(x, -vmax, vmax, f"{name}.source.{attr}")
                auto = c.autorangev if attr == "levelv" else c.autorangei
                rng = c.rangev if attr == "levelv" else c.rangei
                if not auto and abs(x) > rng * 1.01:
                    raise TspError(1102, f"Parameter too big, {name}.source.{attr} = {x:g} "
                                         f"exceeds the {rng:g} range (autorange off)")
                setattr(c, attr, x)
                self.bench.source_changed(self, name)

            return Prop(lambda: float(getattr(c, attr)), set_)

        def rng(attr: str, ranges: tuple[float, ...], auto_attr: str) -> Prop:
            def set_(v: Any) -> None:
                x = lua_number(v, f"{name}.{attr}")
                setattr(c, attr, _fit_range(x, ranges, f"{name}.{attr}"))
                setattr(c, auto_attr, 0)

            return Prop(lambda: float(getattr(c, attr)), set_)

        def compliance() -> bool:
            self.bench.regulate()
            return self._compliant(name, c)

        def set_func(v: Any) -> None:
            x = lua_number(v, f"{name}.source.func")
            if x not in (0.0, 1.0):
                raise TspError(1102 if x > 1 else 1103,
                               f"Parameter error, {name}.source.func = {x:g}")
            c.func = int(x)
            self.bench.source_changed(self, name)

        source = TspTable(
            f"{name}.source",
            {
                "func": Prop(lambda: float(c.func), set_func),
                "levelv": level("levelv"),
                "leveli": level("leveli"),
                "limitv": num("limitv", *LIMITV, push=True),
                "limiti": num("limiti", *LIMITI, push=True),
                "rangev": rng("rangev", V_RANGES, "autorangev"),
                "rangei": rng("rangei", I_RANGES, "autorangei"),
                "autorangev": choice("autorangev", (0.0, 1.0)),
                "autorangei": choice("autorangei", (0.0, 1.0)),
                "output": choice("output", (0.0, 1.0, 2.0), push=True),
                "offmode": choice("offmode", (0.0, 1.0, 2.0)),
                "delay": num("source_delay", -1.0, 1e4),
                "compliance": Prop(compliance),
                "highc": Prop(lambda: 0.0, lambda v: None),
                "settling": Prop(lambda: 0.0, lambda v: None),
                "sink": Prop(lambda: 0.0, lambda v: None),
                "lowrangev": Prop(lambda: V_RANGES[0], lambda v: None),
                "lowrangei": Prop(lambda: I_RANGES[0], lambda v: None),
                "offlimiti": Prop(lambda: 1e-3, lambda v: None),
            },
        )

        def measure_fn(what: str) -> LuaFunction:
            def f(*args: Any) -> list[Any]:
                return self._measure_call(name, what, args)

            return self.fn(what, f)

        filt = TspTable(
            f"{name}.measure.filter",
            {"enable": choice("filter_enable", (0.0, 1.0)), "count": num("filter_count", 1, 100),
             "type": Prop(lambda: 1.0, lambda v: None)},
        )

        def set_count(v: Any) -> None:
            x = lua_number(v, f"{name}.measure.count")
            _too(x, 1, 60000, f"{name}.measure.count")
            c.count = int(x)

        measure = TspTable(
            f"{name}.measure",
            {
                "v": measure_fn("v"), "i": measure_fn("i"), "r": measure_fn("r"),
                "p": measure_fn("p"), "iv": measure_fn("iv"),
                "nplc": num("nplc", 0.001, 25.0),
                "count": Prop(lambda: float(c.count), set_count),
                "rangev": rng("m_rangev", V_RANGES, "m_autorangev"),
                "rangei": rng("m_rangei", I_RANGES, "m_autorangei"),
                "autorangev": choice("m_autorangev", (0.0, 1.0)),
                "autorangei": choice("m_autorangei", (0.0, 1.0, 2.0)),
                "autozero": choice("autozero", (0.0, 1.0, 2.0)),
                "delay": num("measure_delay", -1.0, 1e4),
                "interval": Prop(lambda: 0.0, lambda v: None),
                "lowrangev": Prop(lambda: V_RANGES[0], lambda v: None),
                "lowrangei": Prop(lambda: I_RANGES[0], lambda v: None),
                "filter": filt,
                "rel": _NoOpTable(f"{name}.measure.rel"),
            },
        )
        t = TspTable(name, dict(_CONSTANTS))
        t.entries["source"] = source
        t.entries["measure"] = measure
        t.entries["sense"] = choice("sense", (0.0, 1.0, 3.0))
        t.entries["reset"] = self.fn("reset", lambda *a: self._reset_channel(name))
        t.entries["trigger"] = _NoOpTable(f"{name}.trigger")
        t.entries["nvbuffer1"] = self._buffer(f"{name}.nvbuffer1", c, 1)
        t.entries["nvbuffer2"] = self._buffer(f"{name}.nvbuffer2", c, 2)
        t.entries["makebuffer"] = self.fn(
            "makebuffer", lambda *a: [self._buffer(f"{name}.buffer", SmuChannel("x", 0), 1)]
        )
        return t

    def _buffer(self, bname: str, c: SmuChannel, k: int) -> _BufferView:
        def readings() -> list[float]:
            return c.readings if k == 1 else c.readings2

        def stamps() -> list[float]:
            return c.stamps if k == 1 else c.stamps2

        def clear(*args: Any) -> None:
            readings().clear()
            stamps().clear()

        def set_ts(v: Any) -> None:
            c.timestamps_on = int(lua_number(v, bname + ".collecttimestamps"))

        b = _BufferView(bname, readings)
        b.entries.update(
            {
                "n": Prop(lambda: float(len(readings()))),
                "readings": _BufferView(bname + ".readings", readings),
                "timestamps": _BufferView(bname + ".timestamps", stamps),
                "sourcevalues": _BufferView(bname + ".sourcevalues", readings),
                "clear": self.fn("clear", clear),
                "clearcache": self.fn("clearcache", lambda *a: None),
                "collecttimestamps": Prop(lambda: float(c.timestamps_on), set_ts),
                "collectsourcevalues": Prop(lambda: 0.0, lambda v: None),
                "appendmode": Prop(lambda: 1.0, lambda v: None),
                "fillmode": Prop(lambda: 0.0, lambda v: None),
                "capacity": Prop(lambda: 60000.0),
                "basetimestamp": Prop(lambda: 0.0),
            }
        )
        return b

    def _reset_channel(self, name: str) -> None:
        self.channels[name].reset()
        self.bench.source_changed(self, name)

    # -------------------------------------------------------------- measurements
    def _measure_call(self, name: str, what: str, args: tuple[Any, ...]) -> list[Any]:
        c = self.channels[name]
        n = c.count
        bufs = [a for a in args if isinstance(a, _BufferView)]
        if len(bufs) != len(args):
            raise TspError(-286, f"TSP Runtime error: {name}.measure.{what} takes reading buffers")
        iv = self.bench.measure_smu(self, name, n)
        dt = c.nplc / self.linefreq + 1e-4
        out: list[float] = []
        for i_a, v_v in iv:
            if what == "v":
                out.append(v_v)
            elif what == "i":
                out.append(i_a)
            elif what == "r":
                out.append(v_v / i_a if i_a != 0 else NAN_CODE)
            elif what == "p":
                out.append(v_v * i_a)
        stamps = [self.clock_s + (k + 1) * dt for k in range(n)]
        self.clock_s += n * dt
        if what == "iv":
            if bufs:
                self._store(c, bufs[0], [x[0] for x in iv], stamps)
            if len(bufs) > 1:
                self._store(c, bufs[1], [x[1] for x in iv], stamps)
            return [iv[-1][0], iv[-1][1]]
        if bufs:
            self._store(c, bufs[0], out, stamps)
        return [out[-1]]

    def _store(
        self, c: SmuChannel, buf: _BufferView, vals: list[float], stamps: list[float]
    ) -> None:
        target = buf.values()
        target += vals
        if buf.name.endswith("nvbuffer1"):
            c.stamps += stamps
        elif buf.name.endswith("nvbuffer2"):
            c.stamps2 += stamps

    def on_delay(self, t: float) -> None:
        """A ``delay(t)`` passed: the bench may pulse the routed crosspoints."""
        self.bench.delay_passed(self, t)


# ---------------------------------------------------------------------- 707B
_SPEC_RE = re.compile(r"^([1-6])([A-H])(\d\d)$")


class Matrix707B(TspInstrument):
    """A 707B matrix: crosspoints ``"<slot><row><col>"`` (rows A..H, columns 01..12)."""

    EMPTY_QUEUE = "Queue Is Empty"

    def __init__(self, bench: VirtualScpiBench, identity: str, n_slots: int) -> None:
        self.n_slots = n_slots
        self.closed: set[str] = set()
        self.stuck: set[str] = set()
        """Crosspoints whose relay does not open (a fault)."""
        super().__init__(bench, identity)
        ch = TspTable(
            "channel",
            {
                "close": self.fn("close", lambda s=None, *a: self._close(s, exclusive=False)),
                "exclusiveclose": self.fn(
                    "exclusiveclose", lambda s=None, *a: self._close(s, exclusive=True)
                ),
                "exclusiveslotclose": self.fn(
                    "exclusiveslotclose", lambda s=None, *a: self._close(s, exclusive=True)
                ),
                "open": self.fn("open", lambda s=None, *a: self._open(s)),
                "getclose": self.fn("getclose", lambda s=None, *a: [self._getclose(s)]),
                "getstate": self.fn("getstate", lambda s=None, *a: [self._getstate(s)]),
                "reset": self.fn("reset", lambda s=None, *a: self._reset_channels(s)),
                "connectrule": Prop(lambda: 1.0, lambda v: None),
                "connectsequential": Prop(lambda: 0.0, lambda v: None),
                "BREAK_BEFORE_MAKE": 1.0, "MAKE_BEFORE_BREAK": 2.0, "OFF": 0.0, "ON": 1.0,
                "setlabel": self.fn("setlabel", lambda *a: None),
                "setdelay": self.fn("setdelay", lambda *a: None),
                "getcount": self.fn("getcount", lambda *a: [0.0]),
            },
        )
        self.vars.entries["channel"] = ch

    def _specs(self, arg: Any, allow_all: bool = True) -> list[str]:
        if not isinstance(arg, str):
            raise TspError(-286, "TSP Runtime error: a channel list string expected")
        out: list[str] = []
        for it in (p.strip() for p in arg.split(",")):
            if not it:
                continue
            low = it.lower()
            if allow_all and low in ("allslots", "all"):
                out += self._all()
                continue
            m = re.fullmatch(r"slot([1-6])", low)
            if allow_all and m:
                out += [s for s in self._all() if s[0] == m.group(1)]
                continue
            if ":" in it:
                a, b = (x.strip().upper() for x in it.split(":", 1))
                ma, mb = _SPEC_RE.match(a), _SPEC_RE.match(b)
                if ma is None or mb is None or ma.group(1) != mb.group(1):
                    raise TspError(1115, f"Parameter error, invalid channel range {it!r}")
                r0, r1 = sorted((ROWS.index(ma.group(2)), ROWS.index(mb.group(2))))
                c0, c1 = sorted((int(ma.group(3)), int(mb.group(3))))
                for r in range(r0, r1 + 1):
                    for col in range(c0, c1 + 1):
                        out.append(self._check(f"{ma.group(1)}{ROWS[r]}{col:02d}", it))
                continue
            out.append(self._check(it.upper(), it))
        return out

    def _check(self, spec: str, raw: str) -> str:
        m = _SPEC_RE.match(spec)
        if m is None or int(m.group(1)) > self.n_slots or not 1 <= int(m.group(3)) <= COLUMNS:
            raise TspError(1115, f"Parameter error, invalid channel {raw!r}")
        return spec

    def _all(self) -> list[str]:
        return [f"{s}{r}{c:02d}" for s in range(1, self.n_slots + 1) for r in ROWS
                for c in range(1, COLUMNS + 1)]

    def _close(self, arg: Any, exclusive: bool) -> None:
        specs = self._specs(arg, allow_all=False)
        if exclusive:
            self.closed = set(self.stuck & self.closed)
        self.closed.update(specs)
        self.bench.routes_changed()

    def _open(self, arg: Any) -> None:
        specs = self._specs(arg)
        self.closed.difference_update(set(specs) - self.stuck)
        self.bench.routes_changed()

    def _getclose(self, arg: Any) -> str | None:
        specs = set(self._specs(arg if arg is not None else "allslots"))
        hit = sorted(self.closed & specs)
        return ";".join(hit) if hit else None

    def _getstate(self, arg: Any) -> str:
        specs = self._specs(arg if arg is not None else "allslots")
        return ",".join("1" if s in self.closed else "0" for s in specs)

    def _reset_channels(self, arg: Any) -> None:
        self.closed = set(self.stuck & self.closed)
        self.bench.routes_changed()

    def reset(self) -> None:
        """Every setting to its default."""
        super().reset()
        self._reset_channels("allslots")

