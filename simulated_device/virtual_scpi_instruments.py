"""Virtual SCPI instruments: a DAQ6510 scanning meter and a 2400 SourceMeter.

DAQ6510 (DAQ6510 reference manual, section 13 "SCPI command reference": ROUTe,
SENSe1, TRACe, TRIGger, FORMat, SYSTem, DISPlay, STATus subsystems; section 12 status
model): channels ``slot*100 + k`` of a 7700-style card read the bench's free nodes;
``:ROUT:CLOS`` connects one channel to the DMM for ``:READ?``/``:MEAS?``; scans
(``:ROUT:SCAN``, ``:ROUT:SCAN:COUN:SCAN``, ``:INIT``) fill ``defbuffer1``
(``:TRAC:ACT?``, ``:TRAC:DATA?``). Voltage (``VOLT[:DC]``) is wired; current and
resistance are accepted as functions but read the overflow code 9.9E37 on channels
(nothing is wired there).

2400 (Series 2400 SourceMeter user's manual, section 18 "SCPI signal oriented
measurement commands", 17 "SCPI reference tables", 16 status model): one SMU behind
the matrix (it sources the routed crosspoints, like the 2601B); ``:SOUR``, ``:SENS``
(concurrent functions, ``PROT`` compliance), ``:OUTP``, ``:FORM:ELEM``, ``:TRIG:COUN``,
``:ARM:COUN``, ``:READ?``, ``:MEAS?``, ``:FETC?``, ``:INIT``, ``:TRAC`` buffer,
``:SOUR:CLE:AUTO``; each source-measure cycle at a level above
:data:`~simulated_device.virtual_tsp_instruments.PULSE_THRESHOLD_V` is one
programming pulse of the routed devices.

Every error is queued with its standard code (see
:mod:`simulated_device.virtual_scpi_parser`), none closes a connection.
Units: V, A, ohm, s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from simulated_device.virtual_ieee488 import StatusModel
from simulated_device.virtual_scpi_parser import (
    Handler,
    ScpiCall,
    ScpiError,
    ScpiTree,
    channel_list,
    run_message,
)

if TYPE_CHECKING:
    from simulated_device.virtual_faults import Faults
    from simulated_device.virtual_scpi import VirtualScpiBench

__all__ = ["K2400", "Daq6510", "ScpiInstrument"]

OVERFLOW = 9.9e37
NAN_CODE = 9.91e37
DAQ_PER_SLOT = 20
DAQ_V_RANGES = (0.1, 1.0, 10.0, 100.0, 1000.0)


class ScpiInstrument:
    """A SCPI instrument: common commands, error queue, a command tree."""

    def __init__(self, bench: VirtualScpiBench, identity: str) -> None:
        from simulated_device.virtual_faults import Faults

        self.bench = bench
        self.net = bench.network
        self.identity = identity
        self.faults: Faults = Faults()
        self.status = StatusModel(empty_message="No error")
        self.tree = ScpiTree()
        self._system_commands()

    @property
    def errors(self) -> list[tuple[int, str]]:
        """The error queue (code, message), oldest first."""
        return self.status.errors

    def error(self, code: int, message: str) -> None:
        """Queue error ``code`` with ``message``."""
        self.status.error(code, message)

    def reset(self) -> None:
        """``*RST``: settings to defaults."""

    def process(self, line: str) -> list[str]:
        """Execute one message; the reply lines (errors are queued)."""
        def common(head: str, args: str) -> str | None:
            if head == "*LANG?":
                return "SCPI"
            if head == "*LANG":
                return None
            return self.status.common(head, args, self.identity, self.reset)

        try:
            return run_message(line.strip(), self.tree, common, self.error)
        except (ValueError, ArithmeticError, TypeError, IndexError, KeyError) as exc:
            self.error(-100, f"Command error; {exc}")
            return []

    def _system_commands(self) -> None:
        t, st = self.tree, self.status

        def err(c: ScpiCall) -> str:
            c.nparams(0, 0)
            code, msg = st.pop()
            return f'{code},"{msg}"'

        def err_count(c: ScpiCall) -> str:
            return str(len(st.errors))

        def err_all(c: ScpiCall) -> str:
            out = []
            while st.errors:
                code, msg = st.pop()
                out.append(f'{code},"{msg}"')
            return ",".join(out) if out else f'0,"{st.empty_message}"'

        def clear_errors(c: ScpiCall) -> None:
            st.errors.clear()

        t.add("SYSTem:ERRor[:NEXT]", err, set_=False)
        t.add("SYSTem:ERRor:COUNt", err_count, set_=False)
        t.add("SYSTem:ERRor:ALL", err_all, set_=False)
        t.add("SYSTem:ERRor:CLEar", clear_errors, query=False)
        t.add("SYSTem:CLEar", clear_errors, query=False)
        t.add("STATus:QUEue[:NEXT]", err, set_=False)
        t.add("STATus:QUEue:CLEar", clear_errors, query=False)
        t.add("SYSTem:VERSion", lambda c: "1999.0", set_=False)
        t.add("SYSTem:PRESet", lambda c: self.reset(), query=False)
        t.add("STATus:PRESet", lambda c: None, query=False)
        t.add("SYSTem:BEEPer[:IMMediate]", self._beep, query=False)
        for reg in ("OPERation", "QUEStionable", "MEASurement"):
            t.add(f"STATus:{reg}[:EVENt]", lambda c: "0", set_=False)
            t.add(f"STATus:{reg}:CONDition", lambda c: "0", set_=False)
            t.add(f"STATus:{reg}:ENABle", self._register, query=True)
        t.add("FORMat[:DATA]", self._format, query=True)
        self._register_store: dict[str, int] = {}

    def _beep(self, c: ScpiCall) -> None:
        c.nparams(1, 2)
        c.number(0, 20.0, 8000.0)
        if len(c.params) > 1:
            c.number(1, 0.001, 100.0)

    def _register(self, c: ScpiCall) -> str | None:
        if c.query:
            return str(self._register_store.get("enable", 0))
        c.nparams(1, 1)
        self._register_store["enable"] = int(c.number(0, 0, 65535))
        return None

    def _format(self, c: ScpiCall) -> str | None:
        if c.query:
            return "ASC"
        c.nparams(1, 2)
        fmt = c.choice(0, {"ASCii": "ASC", "REAL": "REAL", "SREal": "SRE"})
        if fmt != "ASC":
            raise ScpiError(-221, "Settings conflict; only ASCII is served virtually")
        return None


def _constant(answer: str) -> Handler:
    """A setting that is accepted and always reads ``answer``."""

    def h(c: ScpiCall) -> str | None:
        return answer if c.query else None

    return h


def _flag(store: Callable[[], dict[str, bool]], key: str) -> Handler:
    """A boolean setting kept in ``store()[key]`` (ON/OFF/1/0; reads 1 or 0)."""

    def h(c: ScpiCall) -> str | None:
        if c.query:
            return "1" if store()[key] else "0"
        c.nparams(1, 1)
        store()[key] = c.boolean(0)
        return None

    return h


def _fmt(x: float) -> str:
    return f"{x:.9E}" if abs(x) < 1e30 else f"{x:.2E}"


# ---------------------------------------------------------------------- DAQ6510
_FUNCS = {
    "VOLTage[:DC]": "VOLT:DC", "VOLTage:AC": "VOLT:AC", "CURRent[:DC]": "CURR:DC",
    "CURRent:AC": "CURR:AC", "RESistance": "RES", "FRESistance": "FRES",
    "TEMPerature": "TEMP", "FREQuency[:VOLTage]": "FREQ:VOLT", "CONTinuity": "CONT",
    "DIODe": "DIOD",
}


def _func_of(text: str) -> str:
    s = text.strip().strip("\"'").upper()
    for spelled, canon in _FUNCS.items():
        base, _, opt = spelled.partition("[")
        forms = [base]
        if opt:
            forms.append(base + opt.rstrip("]"))
        for f in forms:
            parts_spelled = f.split(":")
            parts = s.split(":")
            if len(parts) == len(parts_spelled) and all(
                p in ("".join(ch for ch in w if ch.isupper()), w.upper())
                for p, w in zip(parts, parts_spelled, strict=True)
            ):
                return canon
    raise ScpiError(-224, f"Illegal parameter value; function {text!r}")


class Daq6510(ScpiInstrument):
    """A DAQ6510 with a 7700-style card.

    Channel ``slot * 100 + k`` reads free node ``(slot - 1) * 20 + k - 1`` of the bench
    (board order).
    """

    def __init__(self, bench: VirtualScpiBench, identity: str) -> None:
        super().__init__(bench, identity)
        free = self.net.desc.free_nodes
        self.node_of = {
            (i // DAQ_PER_SLOT + 1) * 100 + i % DAQ_PER_SLOT + 1: int(n) for i, n in enumerate(free)
        }
        self.reset()
        self._commands()

    def reset(self) -> None:
        """Every setting to its default."""
        self.func: dict[int, str] = {}  # channel (0: front) -> function
        self.nplc: dict[int, float] = {}
        self.range_v: dict[int, float] = {}
        self.autorange: dict[int, bool] = {}
        self.azero = True
        self.scan: list[int] = []
        self.scan_count = 1
        self.scan_interval = 0.0
        self.count = 1
        self.closed: list[int] = []
        self.buffer: list[tuple[float, float, int]] = []  # (reading, relative time, channel)
        self.clock_s = 0.0

    # -------------------------------------------------------------- commands
    def _chans(self, c: ScpiCall, k: int) -> list[int]:
        if len(c.params) <= k:
            return [0]
        out = channel_list(c.params[k])
        for ch in out:
            if ch not in self.node_of:
                raise ScpiError(-222, f"Data out of range; channel {ch} does not exist")
        return out

    def _commands(self) -> None:
        t = self.tree

        def func(c: ScpiCall) -> str | None:
            if c.query:
                chans = self._chans(c, 0)
                return ";".join(f'"{self.func.get(ch, "VOLT:DC")}"' for ch in chans)
            c.nparams(1, 2)
            f = _func_of(c.params[0])
            for ch in self._chans(c, 1):
                self.func[ch] = f
            return None

        t.add("[SENSe[1]]:FUNCtion[:ON]", func)

        def per_channel(store: dict[int, float], lo: float, hi: float, dflt: float) -> Handler:
            def h(c: ScpiCall) -> str | None:
                if c.query:
                    return ";".join(_fmt(store.get(ch, dflt)) for ch in self._chans(c, 0))
                c.nparams(1, 2)
                v = c.number(0, lo, hi, dflt)
                for ch in self._chans(c, 1):
                    store[ch] = v
                return None

            return h

        for fn in ("VOLTage[:DC]", "VOLTage:AC", "CURRent[:DC]", "RESistance", "FRESistance"):
            t.add(f"[SENSe[1]]:{fn}:NPLCycles", per_channel(self.nplc, 5e-4, 15.0, 1.0))

        def vrange(c: ScpiCall) -> str | None:
            if c.query:
                return ";".join(_fmt(self.range_v.get(ch, 10.0)) for ch in self._chans(c, 0))
            c.nparams(1, 2)
            v = c.number(0, 0.0, 1000.0, 10.0)
            r = next(x for x in DAQ_V_RANGES if v <= x * 1.0000001)
            for ch in self._chans(c, 1):
                self.range_v[ch] = r
                self.autorange[ch] = False
            return None

        def autorange(c: ScpiCall) -> str | None:
            if c.query:
                return ";".join("1" if self.autorange.get(ch, True) else "0"
                                for ch in self._chans(c, 0))
            c.nparams(1, 2)
            on = c.boolean(0)
            for ch in self._chans(c, 1):
                self.autorange[ch] = on
            return None

        def other_range(c: ScpiCall) -> str | None:
            if c.query:
                return _fmt(1.0)
            c.nparams(1, 2)
            c.number(0, 0.0, 1e9, 1.0)
            return None

        t.add("[SENSe[1]]:VOLTage[:DC]:RANGe[:UPPer]", vrange)
        t.add("[SENSe[1]]:VOLTage[:DC]:RANGe:AUTO", autorange)
        for fn in ("CURRent[:DC]", "RESistance", "FRESistance", "VOLTage:AC"):
            t.add(f"[SENSe[1]]:{fn}:RANGe[:UPPer]", other_range)
            t.add(f"[SENSe[1]]:{fn}:RANGe:AUTO", autorange)

        def azer(c: ScpiCall) -> str | None:
            if c.query:
                return "1" if self.azero else "0"
            c.nparams(1, 2)
            self.azero = c.boolean(0)
            return None

        for fn in ("VOLTage[:DC]", "CURRent[:DC]", "RESistance", "FRESistance"):
            t.add(f"[SENSe[1]]:{fn}:AZERo[:STATe]", azer)
            t.add(f"[SENSe[1]]:{fn}:AVERage[:STATe]", lambda c: "0" if c.query else None)
            t.add(f"[SENSe[1]]:{fn}:AVERage:COUNt", lambda c: "10" if c.query else None)
            t.add(f"[SENSe[1]]:{fn}:AVERage:TCONtrol", lambda c: "REP" if c.query else None)
        t.add("[SENSe[1]]:FRESistance:OCOMpensated", lambda c: "OFF" if c.query else None)

        def count(c: ScpiCall) -> str | None:
            if c.query:
                return str(self.count)
            c.nparams(1, 1)
            self.count = int(c.number(0, 1, 1_000_000, 1))
            return None

        t.add("[SENSe[1]]:COUNt", count)

        def route(close: bool) -> Handler:
            def h(c: ScpiCall) -> str | None:
                if c.query:
                    return f"(@{','.join(str(x) for x in self.closed)})"
                c.nparams(1, 1)
                chans = self._chans(c, 0)
                if close:
                    self.closed = chans[-1:]  # one channel connects to the DMM at a time
                else:
                    self.closed = [x for x in self.closed if x not in chans]
                return None

            return h

        t.add("ROUTe:CLOSe", route(True))
        t.add("ROUTe:OPEN", route(False), query=False)
        t.add("ROUTe:OPEN:ALL", lambda c: self.closed.clear(), query=False)

        def scan(c: ScpiCall) -> str | None:
            if c.query:
                return f"(@{','.join(str(x) for x in self.scan)})"
            c.nparams(1, 1)
            self.scan = self._chans(c, 0)
            return None

        def scan_add(c: ScpiCall) -> None:
            c.nparams(1, 1)
            self.scan += self._chans(c, 0)

        def scan_count(c: ScpiCall) -> str | None:
            if c.query:
                return str(self.scan_count)
            c.nparams(1, 1)
            self.scan_count = int(c.number(0, 1, 100_000, 1))
            return None

        def scan_int(c: ScpiCall) -> str | None:
            if c.query:
                return _fmt(self.scan_interval)
            c.nparams(1, 1)
            self.scan_interval = c.number(0, 0.0, 1e5, 0.0)
            return None

        t.add("ROUTe:SCAN[:CREate]", scan)
        t.add("ROUTe:SCAN:ADD", scan_add, query=False)
        t.add("ROUTe:SCAN:COUNt:SCAN", scan_count)
        t.add("ROUTe:SCAN:INTerval", scan_int)
        t.add("ROUTe:SCAN:COUNt:STEP", lambda c: str(len(self.scan)), set_=False)

        def init(c: ScpiCall) -> None:
            c.nparams(0, 0)
            if self.scan:
                self._run_scan()
            else:
                self._read_front(self.count, store=True)

        t.add("INITiate[:IMMediate]", init, query=False)
        t.add("ABORt", lambda c: None, query=False)
        t.add("TRIGger:LOAD", lambda c: None, query=False)
        t.add("TRIGger:COUNt", count)

        def trace_clear(c: ScpiCall) -> None:
            self.buffer = []

        def actual(c: ScpiCall) -> str:
            return str(len(self.buffer))

        def trace_data(c: ScpiCall) -> str:
            n = len(self.buffer)
            lo = int(c.number(0, 1, max(1, n), 1)) if c.params else 1
            hi = int(c.number(1, lo, max(lo, n), n)) if len(c.params) > 1 else n
            if n == 0 or hi > n:
                raise ScpiError(-222, f"Data out of range; the buffer holds {n} readings")
            elems = [p.strip().upper() for p in c.params[3:]] or ["READ"]
            out: list[str] = []
            for value, rel, ch in self.buffer[lo - 1 : hi]:
                for el in elems:
                    out.append(self._element(el, value, rel, ch))
            return ",".join(out)

        t.add("TRACe:CLEar", trace_clear, query=False)
        t.add("TRACe:ACTual", actual, set_=False)
        t.add("TRACe:ACTual:END", actual, set_=False)
        t.add("TRACe:ACTual:STARt", lambda c: "1" if self.buffer else "0", set_=False)
        t.add("TRACe:DATA", trace_data, set_=False)
        t.add("TRACe:MAKE", lambda c: None, query=False)
        t.add("TRACe:POINts", lambda c: "100000" if c.query else None)
        t.add("TRACe:FILL:MODE", lambda c: "ONCE" if c.query else None)

        def read(c: ScpiCall) -> str:
            if self.scan and self.closed == []:
                self._run_scan()
                value, rel, ch = self.buffer[-1]
            else:
                value, rel, ch = self._read_front(self.count, store=True)[-1]
            elems = [p.strip().upper() for p in c.params[1:]] or ["READ"]
            return ",".join(self._element(el, value, rel, ch) for el in elems)

        def fetch(c: ScpiCall) -> str:
            if not self.buffer:
                raise ScpiError(-230, "Data corrupt or stale; no reading")
            value, rel, ch = self.buffer[-1]
            return self._element("READ", value, rel, ch)

        def measure(c: ScpiCall) -> str:
            chans = self._chans(c, 0) if c.params else (self.closed[-1:] or [0])
            vals = []
            for ch in chans:
                vals.append(_fmt(self._sample(ch, 1)[0]))
            return ",".join(vals)

        t.add("READ", read, set_=False)
        t.add("FETCh", fetch, set_=False)
        t.add("MEASure[:VOLTage][:DC]", measure, set_=False)
        t.add("DISPlay:SCReen", lambda c: None, query=False)
        t.add("DISPlay:LIGHt:STATe", lambda c: "ON100" if c.query else None)
        t.add("DISPlay:CLEar", lambda c: None, query=False)
        t.add("DISPlay:USER1:TEXT[:DATA]", lambda c: None, query=False)
        t.add("DISPlay:USER2:TEXT[:DATA]", lambda c: None, query=False)
        t.add("DISPlay:VOLTage[:DC]:DIGits", lambda c: "6" if c.query else None)

    def _element(self, el: str, value: float, rel: float, ch: int) -> str:
        if el.startswith("READ"):
            return _fmt(value)
        if el.startswith("REL"):
            return _fmt(rel)
        if el.startswith("CHAN"):
            return str(ch) if ch else ""
        if el.startswith("UNIT"):
            return "Volt DC"
        if el.startswith("TST"):
            return f"{rel:.6f}"
        raise ScpiError(-224, f"Illegal parameter value; buffer element {el!r}")

    # -------------------------------------------------------------- readings
    def _sample(self, ch: int, n: int) -> list[float]:
        """``n`` readings of channel ``ch`` (0: the front terminals: nothing wired)."""
        f = self.func.get(ch, "VOLT:DC")
        if ch == 0 or f != "VOLT:DC":
            return [OVERFLOW if f != "VOLT:DC" else 0.0] * n
        self.bench.regulate()
        r = self.net.read_nodes(np.array([self.node_of[ch]]), n)
        vals = [float(x) for x in np.asarray(r.samples_v)[:, 0, 0]]
        return [self._mark(ch, v) for v in vals]

    def _mark(self, ch: int, v: float) -> float:
        rng = self.range_v.get(ch)
        if ch in self.faults.overrange_channels or (
            rng is not None and not self.autorange.get(ch, True) and abs(v) > 1.2 * rng
        ):
            v = OVERFLOW
        if ch in self.faults.nan_channels:
            v = NAN_CODE
        return self.bench.reading_fault(self, v)

    def _read_front(self, n: int, store: bool) -> list[tuple[float, float, int]]:
        ch = self.closed[-1] if self.closed else 0
        vals = self._sample(ch, n)
        out = []
        for v in vals:
            self.clock_s += self.nplc.get(ch, 1.0) / 60.0 + 1e-3
            out.append((v, self.clock_s, ch))
        if store:
            self.buffer = out if not self.buffer else self.buffer + out
        return out

    def _run_scan(self) -> None:
        if not self.scan:
            raise ScpiError(-221, "Settings conflict; no scan list")
        n_read = self.scan_count * len(self.scan)
        if n_read > 1_000_000:
            raise ScpiError(-225, "Out of memory; scan too long")
        nodes = np.array([self.node_of[c] for c in self.scan])
        self.bench.regulate()
        samples = np.asarray(self.net.read_nodes(nodes, self.scan_count).samples_v)[:, 0, :]
        self.buffer = []
        t = 0.0
        for s in range(self.scan_count):
            for j, ch in enumerate(self.scan):
                v = self._mark(ch, float(samples[s, j]))
                self.buffer.append((v, t, ch))
                t += self.nplc.get(ch, 1.0) / 60.0 + 1e-3


# ---------------------------------------------------------------------- 2400
K2400_V_RANGES = (0.2, 2.0, 20.0, 200.0)
K2400_I_RANGES = (1e-6, 10e-6, 100e-6, 1e-3, 10e-3, 100e-3, 1.0)


class K2400(ScpiInstrument):
    """A 2400 SourceMeter behind the matrix (sources the routed crosspoints)."""

    def __init__(self, bench: VirtualScpiBench, identity: str) -> None:
        super().__init__(bench, identity)
        self.reset()
        self._commands()

    def reset(self) -> None:
        """Every setting to its default."""
        self.output = False
        self.sfunc = "VOLT"
        self.level = {"VOLT": 0.0, "CURR": 0.0}
        self.srange = {"VOLT": 20.0, "CURR": 100e-6}
        self.sauto = {"VOLT": True, "CURR": True}
        self.prot = {"CURR": 105e-6, "VOLT": 21.0}
        self.mrange = {"CURR": 100e-6, "VOLT": 21.0, "RES": 2.1e5}
        self.mauto = {"CURR": True, "VOLT": True, "RES": True}
        self.nplc = {"CURR": 1.0, "VOLT": 1.0, "RES": 1.0}
        self.sense = ["CURR"]  # concurrent functions on
        self.elements = ["VOLT", "CURR", "RES", "TIME", "STAT"]
        self.trig_count = 1
        self.arm_count = 1
        self.delay = 0.0
        self.auto_clear = False
        self.trace: list[float] = []
        self.trace_points = 100
        self.trace_feed_next = False
        self.last: list[float] = []
        self.clock_s = 0.0
        self.tripped = False

    def _commands(self) -> None:
        t = self.tree

        def outp(c: ScpiCall) -> str | None:
            if c.query:
                return "1" if self.output else "0"
            c.nparams(1, 1)
            self.output = c.boolean(0)
            self.bench.source_changed(self, "k2400")
            return None

        t.add("OUTPut[1][:STATe]", outp)
        t.add("OUTPut[1]:SMODe", lambda c: "NORM" if c.query else None)

        def sfunc(c: ScpiCall) -> str | None:
            if c.query:
                return self.sfunc
            c.nparams(1, 1)
            self.sfunc = c.choice(0, {"VOLTage": "VOLT", "CURRent": "CURR"})
            self.bench.source_changed(self, "k2400")
            return None

        t.add("[SOURce[1]]:FUNCtion[:MODE]", sfunc)

        def level(kind: str) -> Handler:
            hi = 210.0 if kind == "VOLT" else 1.05

            def h(c: ScpiCall) -> str | None:
                if c.query:
                    return _fmt(self.level[kind])
                c.nparams(1, 1)
                v = c.number(0, -hi, hi, 0.0)
                if not self.sauto[kind] and abs(v) > self.srange[kind] * 1.05:
                    raise ScpiError(-222, f"Data out of range; level {v:g} beyond the "
                                          f"{self.srange[kind]:g} range")
                self.level[kind] = v
                self.bench.source_changed(self, "k2400")
                return None

            return h

        def srange(kind: str) -> Handler:
            ranges = K2400_V_RANGES if kind == "VOLT" else K2400_I_RANGES

            def h(c: ScpiCall) -> str | None:
                if c.query:
                    return _fmt(self.srange[kind])
                c.nparams(1, 1)
                v = abs(c.number(0, -ranges[-1] * 1.05, ranges[-1] * 1.05, ranges[-1]))
                self.srange[kind] = next((r for r in ranges if v <= r * 1.05), ranges[-1])
                self.sauto[kind] = False
                return None

            return h

        for kind, spelled in (("VOLT", "VOLTage"), ("CURR", "CURRent")):
            t.add(f"[SOURce[1]]:{spelled}[:LEVel][:IMMediate][:AMPLitude]", level(kind))
            t.add(f"[SOURce[1]]:{spelled}:RANGe", srange(kind))
            t.add(f"[SOURce[1]]:{spelled}:RANGe:AUTO", _flag(lambda: self.sauto, kind))
            t.add(f"[SOURce[1]]:{spelled}:MODE",
                  lambda c: "FIXED" if c.query else (c.choice(0, {"FIXed": "FIX", "LIST": "LIST",
                                                                  "SWEep": "SWE"}) and None))

        def sdelay(c: ScpiCall) -> str | None:
            if c.query:
                return _fmt(self.delay)
            c.nparams(1, 1)
            self.delay = c.number(0, 0.0, 9999.999, 0.0)
            return None

        def auto_clear(c: ScpiCall) -> str | None:
            if c.query:
                return "1" if self.auto_clear else "0"
            c.nparams(1, 1)
            self.auto_clear = c.boolean(0)
            return None

        t.add("[SOURce[1]]:DELay", sdelay)
        t.add("[SOURce[1]]:DELay:AUTO", lambda c: "0" if c.query else None)
        t.add("[SOURce[1]]:CLEar:AUTO", auto_clear)
        t.add("[SOURce[1]]:CLEar[:IMMediate]", lambda c: self._source_clear(), query=False)

        def prot(kind: str) -> Handler:
            lo, hi = (1e-9, 1.05) if kind == "CURR" else (0.2, 210.0)

            def h(c: ScpiCall) -> str | None:
                if c.query:
                    return _fmt(self.prot[kind])
                c.nparams(1, 1)
                self.prot[kind] = abs(c.number(0, -hi, hi, hi))
                if self.prot[kind] < lo:
                    raise ScpiError(-222, "Data out of range; compliance too small")
                self.bench.source_changed(self, "k2400")
                return None

            return h

        def tripped(kind: str) -> Handler:
            def h(c: ScpiCall) -> str:
                self.bench.regulate()
                return "1" if self._in_compliance() else "0"

            return h

        def mrange(kind: str) -> Handler:
            def h(c: ScpiCall) -> str | None:
                if c.query:
                    return _fmt(self.mrange[kind])
                c.nparams(1, 1)
                self.mrange[kind] = abs(c.number(0, -1e9, 1e9, 1.0))
                self.mauto[kind] = False
                return None

            return h

        def nplc(kind: str) -> Handler:
            def h(c: ScpiCall) -> str | None:
                if c.query:
                    return _fmt(self.nplc[kind])
                c.nparams(1, 1)
                self.nplc[kind] = c.number(0, 0.01, 10.0, 1.0)
                return None

            return h

        for kind, spelled in (("CURR", "CURRent[:DC]"), ("VOLT", "VOLTage[:DC]"),
                              ("RES", "RESistance")):
            if kind != "RES":
                t.add(f"[SENSe[1]]:{spelled}:PROTection[:LEVel]", prot(kind))
                t.add(f"[SENSe[1]]:{spelled}:PROTection:TRIPped", tripped(kind), set_=False)
            t.add(f"[SENSe[1]]:{spelled}:RANGe[:UPPer]", mrange(kind))
            t.add(f"[SENSe[1]]:{spelled}:RANGe:AUTO", _flag(lambda: self.mauto, kind))
            t.add(f"[SENSe[1]]:{spelled}:NPLCycles", nplc(kind))
        t.add("[SENSe[1]]:RESistance:MODE", lambda c: "MAN" if c.query else None)

        def sense_func(c: ScpiCall) -> str | None:
            if c.query:
                return ",".join(f'"{f}:DC"' if f != "RES" else '"RES"' for f in self.sense)
            c.nparams(1, 3)
            for k in range(len(c.params)):
                f = c.choice(k, {"VOLTage": "VOLT", "VOLTage:DC": "VOLT", "CURRent": "CURR",
                                 "CURRent:DC": "CURR", "RESistance": "RES"})
                if f not in self.sense:
                    self.sense.append(f)
            return None

        def sense_all(c: ScpiCall) -> None:
            self.sense = ["VOLT", "CURR", "RES"]

        def sense_off(c: ScpiCall) -> None:
            for k in range(len(c.params)):
                f = c.choice(k, {"VOLTage": "VOLT", "CURRent": "CURR", "RESistance": "RES"})
                if f in self.sense:
                    self.sense.remove(f)

        t.add("[SENSe[1]]:FUNCtion[:ON]", sense_func)
        t.add("[SENSe[1]]:FUNCtion[:ON]:ALL", sense_all, query=False)
        t.add("[SENSe[1]]:FUNCtion:OFF", sense_off, query=False)
        t.add("[SENSe[1]]:FUNCtion:CONCurrent", lambda c: "1" if c.query else None)
        t.add("[SENSe[1]]:AVERage[:STATe]", lambda c: "0" if c.query else None)
        t.add("[SENSe[1]]:AVERage:TCONtrol", lambda c: "REP" if c.query else None)
        t.add("[SENSe[1]]:AVERage:COUNt", lambda c: "10" if c.query else None)

        def elements(c: ScpiCall) -> str | None:
            if c.query:
                return ",".join(self.elements)
            c.nparams(1, 5)
            self.elements = [
                c.choice(k, {"VOLTage": "VOLT", "CURRent": "CURR", "RESistance": "RES",
                             "TIME": "TIME", "STATus": "STAT"})
                for k in range(len(c.params))
            ]
            return None

        t.add("FORMat:ELEMents[:SENSe[1]]", elements)

        def counts(which: str) -> Handler:
            def h(c: ScpiCall) -> str | None:
                if c.query:
                    return str(self.trig_count if which == "TRIG" else self.arm_count)
                c.nparams(1, 1)
                v = int(c.number(0, 1, 2500, 1))
                if which == "TRIG":
                    self.trig_count = v
                else:
                    self.arm_count = v
                if self.trig_count * self.arm_count > 2500:
                    raise ScpiError(-221, "Settings conflict; arm count x trigger count > 2500")
                return None

            return h

        t.add("TRIGger[:SEQuence[1]]:COUNt", counts("TRIG"))
        t.add("ARM[:SEQuence[1]][:LAYer[1]]:COUNt", counts("ARM"))
        for node in ("TRIGger[:SEQuence[1]]", "ARM[:SEQuence[1]][:LAYer[1]]"):
            for leaf, dflt in (("DELay", "0"), ("SOURce", "IMM"), ("TIMer", "0.1"),
                               ("ILINe", "1"), ("OLINe", "2"), ("OUTPut", "NONE")):
                t.add(f"{node}:{leaf}", _constant(dflt))
        t.add("TRIGger:CLEar", lambda c: None, query=False)

        def init(c: ScpiCall) -> None:
            self._cycle(store=True)

        def read(c: ScpiCall) -> str:
            return self._reply(self._cycle(store=False))

        def fetch(c: ScpiCall) -> str:
            if not self.last:
                raise ScpiError(-230, "Data corrupt or stale")
            return self._reply([self.last])

        def measure(kind: str | None) -> Handler:
            def h(c: ScpiCall) -> str:
                if kind is not None and kind not in self.sense:
                    self.sense = [kind]
                self.output = True
                self.bench.source_changed(self, "k2400")
                return self._reply(self._cycle(store=False))

            return h

        t.add("INITiate[:IMMediate]", init, query=False)
        t.add("ABORt", lambda c: None, query=False)
        t.add("READ", read, set_=False)
        t.add("FETCh", fetch, set_=False)
        t.add("MEASure[:VOLTage][:DC]", measure("VOLT"), set_=False)
        t.add("MEASure:CURRent[:DC]", measure("CURR"), set_=False)
        t.add("MEASure:RESistance", measure("RES"), set_=False)
        t.add("CONFigure:VOLTage[:DC]", lambda c: sense_func(ScpiCall(False, ["VOLT"], [])),
              query=False)
        t.add("CONFigure:CURRent[:DC]", lambda c: sense_func(ScpiCall(False, ["CURR"], [])),
              query=False)

        def trace_data(c: ScpiCall) -> str:
            if not self.trace:
                raise ScpiError(-230, "Data corrupt or stale; buffer empty")
            return ",".join(_fmt(x) for x in self.trace)

        def trace_points(c: ScpiCall) -> str | None:
            if c.query:
                return str(self.trace_points)
            c.nparams(1, 1)
            self.trace_points = int(c.number(0, 1, 2500, 100))
            return None

        def feed_control(c: ScpiCall) -> str | None:
            if c.query:
                return "NEXT" if self.trace_feed_next else "NEV"
            self.trace_feed_next = c.choice(0, {"NEXT": "NEXT", "NEVer": "NEV"}) == "NEXT"
            return None

        t.add("TRACe:DATA", trace_data, set_=False)
        t.add("TRACe:CLEar", lambda c: self.trace.clear(), query=False)
        t.add("TRACe:POINts", trace_points)
        t.add("TRACe:POINts:ACTual", lambda c: str(len(self.trace)), set_=False)
        t.add("TRACe:FEED", lambda c: "SENS" if c.query else None)
        t.add("TRACe:FEED:CONTrol", feed_control)
        t.add("SYSTem:AZERo[:STATe]", lambda c: "1" if c.query else None)
        t.add("SYSTem:LFRequency", lambda c: "60" if c.query else None)
        t.add("SYSTem:LFRequency:AUTO", lambda c: "1" if c.query else None)
        t.add("SYSTem:RSENse", lambda c: "0" if c.query else None)
        t.add("SYSTem:BEEPer:STATe", lambda c: "1" if c.query else None)
        t.add("SYSTem:TIME:RESet", lambda c: None, query=False)
        t.add("DISPlay:ENABle", lambda c: "1" if c.query else None)
        t.add("DISPlay[:WINDow[1]]:TEXT[:DATA]", lambda c: '""' if c.query else None)
        t.add("DISPlay[:WINDow[1]]:TEXT:STATe", lambda c: "0" if c.query else None)
        t.add("ROUTe:TERMinals", lambda c: "FRON" if c.query else None)
        for calc in ("CALCulate3:FORMat", "CALCulate3:DATA"):
            t.add(calc, self._calc3)
        self._calc3_format = "MEAN"

    def _calc3(self, c: ScpiCall) -> str | None:
        if not c.query:
            self._calc3_format = c.choice(0, {"MEAN": "MEAN", "SDEViation": "SDEV",
                                              "MAXimum": "MAX", "MINimum": "MIN", "PKPK": "PKPK"})
            return None
        if not self.trace:
            raise ScpiError(-230, "Data corrupt or stale; buffer empty")
        arr = np.array(self.trace)
        stats = {"MEAN": arr.mean(), "SDEV": arr.std(), "MAX": arr.max(), "MIN": arr.min(),
                 "PKPK": arr.max() - arr.min()}
        return _fmt(float(stats[self._calc3_format]))

    def _source_clear(self) -> None:
        self.output = False
        self.bench.source_changed(self, "k2400")

    def _in_compliance(self) -> bool:
        return self.output and (self.tripped or "k2400" in self.faults.compliance)

    def _cycle(self, store: bool) -> list[list[float]]:
        """Run arm x trigger source-measure cycles; rows of (V, I, R, time, status)."""
        if not self.output and not self.auto_clear:
            raise ScpiError(803, "Output disabled")
        n = self.trig_count * self.arm_count
        rows: list[list[float]] = []
        was_on = self.output
        if self.auto_clear:
            self.output = True
            self.bench.source_changed(self, "k2400")
        for _ in range(n):
            i_a, v_v, comp = self.bench.measure_k2400(self, self.delay)
            self.clock_s += self.delay + self.nplc.get(self.sense[0] if self.sense else "CURR",
                                                       1.0) / 60.0
            status = (8 if comp else 0) | (1 << 13 if self.sfunc == "VOLT" else 1 << 14)
            r = v_v / i_a if i_a != 0 else OVERFLOW
            rows.append([v_v, i_a, r, self.clock_s, float(status)])
        if self.auto_clear:
            self.output = was_on and not self.auto_clear
            self.bench.source_changed(self, "k2400")
        self.last = rows[-1] if rows else []
        if store or self.trace_feed_next:
            room = self.trace_points - len(self.trace)
            for row in rows[: max(0, room)]:
                self.trace += self._values(row)
        return rows

    def _values(self, row: list[float]) -> list[float]:
        idx = {"VOLT": 0, "CURR": 1, "RES": 2, "TIME": 3, "STAT": 4}
        out = []
        for el in self.elements:
            v = row[idx[el]]
            if el in ("VOLT", "CURR", "RES"):
                v = self.bench.reading_fault(self, v)
                if el == "RES" and "RES" not in self.sense:
                    v = OVERFLOW
            out.append(v)
        return out

    def _reply(self, rows: list[list[float]]) -> str:
        vals: list[float] = []
        for row in rows:
            vals += self._values(row)
        return ",".join(_fmt(v) for v in vals)
