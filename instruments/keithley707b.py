"""Keithley 707B switching matrix (TSP) and crosspoints routed to a source-measure unit.

707B commands from the *Models 707B and 708B Switching Matrix Reference Manual*
(707B-901-01), section 7 "TSP command reference" and section 2 "Matrix card channel
specifiers":

* ``channel.close("<channelList>")`` -- closes the listed channels, appended to the
  ones already closed (no channel is opened);
* ``channel.open("<channelList>")`` and ``channel.open("allslots")``;
* ``print(channel.getclose("allslots"))`` -- the closed channels, ``;``-separated,
  or ``nil`` when nothing is closed;
* channel specifier: slot (1..6), row letter, two-digit column (``"1A01"``: slot 1,
  row A, column 01); a 7174A card has rows A..H and columns 01..12;
* ``errorqueue.count`` / ``errorqueue.next()``.

Reed relays must not be hot-switched (manual, "Switch operation": hot switching can
dry-weld them), so :class:`SwitchedCrosspoints` closes a route with the SMU off and
opens it again after the SMU is back at 0 V and off.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from hwloop.device import SafetyLimits
from hwloop.errors import ConfigError
from instruments import kinds
from instruments import scpi_util as su
from instruments.roles import CrosspointRole, Instrument, PulsingSmu
from instruments.visa_transport import InstrumentStateError, VisaTransport

FloatArray = NDArray[np.float64]

_SPEC = re.compile(r"^([1-6])([A-Z])(\d\d)$")


def parse_closed(text: str) -> tuple[str, ...]:
    """Parse ``print(channel.getclose(...))``: ``nil`` or ``1A01;1B02`` (sorted tuple)."""
    t = text.strip()
    if t == "nil" or t == "":
        return ()
    items = [p.strip() for p in t.replace(",", ";").split(";")]
    if any(_SPEC.match(p) is None for p in items):
        raise ValueError(f"not a channel list: {t[:60]!r}")
    return tuple(sorted(items))


class RouteMatrix(Protocol):
    """A switch matrix as :class:`SwitchedCrosspoints` uses it (crosspoints named by strings).

    Implemented by :class:`Keithley707B` and by the ``python-class+smu`` adapter
    (:mod:`instruments.adapted`).
    """

    name: str

    def check_spec(self, spec: str) -> str:
        """Return ``spec`` if it names a crosspoint of the matrix (ConfigError otherwise)."""
        ...

    def closed_channels(self) -> tuple[str, ...]:
        """The closed crosspoints, read back from the instrument, sorted."""
        ...

    def close_channels(self, specs: Sequence[str]) -> None:
        """Close the crosspoints (others stay as they are)."""
        ...

    def open_channels(self, specs: Sequence[str]) -> None:
        """Open the crosspoints."""
        ...

    def identity(self) -> str:
        """The instrument's identity."""
        ...

    def safe_state(self) -> None:
        """Open every relay and confirm it by read-back."""
        ...

    def is_energised(self) -> bool:
        """True when any crosspoint is closed."""
        ...

    def close(self) -> None:
        """Safe state, then release the connection."""
        ...


def confirm_all_open(matrix: RouteMatrix, after: str) -> None:
    """Read back ``matrix``'s closed crosspoints after its safe-state command ``after``.

    Raises:
        InstrumentStateError: a crosspoint still reads closed (a stuck relay): the safe
            state is not confirmed.
    """
    stuck = matrix.closed_channels()
    if stuck:
        raise InstrumentStateError(
            f"{matrix.name}: crosspoint(s) {','.join(stuck)} still closed after "
            f"{after} (stuck relays?); disconnect the device under test"
        )


def close_route(matrix: RouteMatrix, specs: Sequence[str]) -> None:
    """Close one route with the single-route guard, then verify it by read-back.

    Refuses (before writing anything) when any crosspoint outside ``specs`` is
    closed: while a device is programmed, at most one route may be closed.

    Raises:
        InstrumentStateError: another route is closed, or the read-back differs.
    """
    items = tuple(sorted(matrix.check_spec(s) for s in specs))
    if not items:
        raise ConfigError(f"{matrix.name}: a route needs at least one crosspoint")
    before = matrix.closed_channels()
    others = [c for c in before if c not in items]
    if others:
        raise InstrumentStateError(
            f"{matrix.name}: crosspoint(s) {','.join(others)} are closed while route"
            f" {','.join(items)} is to be programmed; only one route may be closed:"
            " open them first (safe_state)"
        )
    missing = [c for c in items if c not in before]
    if missing:
        matrix.close_channels(missing)
    after = matrix.closed_channels()
    if after != items:
        raise InstrumentStateError(
            f"{matrix.name}: after closing {','.join(items)} the closed crosspoints are"
            f" {','.join(after) or 'none'}; check the card and the channel list"
        )


class Keithley707B(su.VisaDriver):
    """A 707B matrix: close/open crosspoints, read them back; an ``Instrument``.

    Args:
        transport: the connection.
        rows: row letters of the installed cards (7174A: ``"ABCDEFGH"``).
        columns: number of columns per card (7174A: 12).
        slots: slots with cards installed.
    """

    def __init__(
        self,
        transport: VisaTransport,
        *,
        rows: str = "ABCDEFGH",
        columns: int = 12,
        slots: Sequence[int] = (1, 2, 3, 4, 5, 6),
    ) -> None:
        self.transport = transport
        self.name = transport.name
        self.rows = rows
        self.columns = int(columns)
        self.slots = tuple(int(s) for s in slots)
        self._closed = False

    def check_spec(self, spec: str) -> str:
        """Return ``spec`` if it names a crosspoint of the installed cards."""
        m = _SPEC.match(spec)
        if (
            m is None
            or int(m.group(1)) not in self.slots
            or m.group(2) not in self.rows
            or not 1 <= int(m.group(3)) <= self.columns
        ):
            raise ConfigError(
                f"{self.name}: {spec!r} is not a crosspoint of the installed cards (slot"
                f" {self.slots}, rows {self.rows}, columns 01..{self.columns:02d}, e.g. '1A01')"
            )
        return spec

    # ------------------------------------------------------------------ Instrument
    def closed_channels(self) -> tuple[str, ...]:
        """The closed crosspoints (``print(channel.getclose("allslots"))``), sorted."""
        closed: tuple[str, ...] = self.transport.query(
            'print(channel.getclose("allslots"))', parse=parse_closed, idempotent=True
        )
        return closed

    def close_channels(self, specs: Sequence[str]) -> None:
        """``channel.close("...")``: close the crosspoints (others stay as they are)."""
        items = [self.check_spec(s) for s in specs]
        if items:
            self.transport.write(f'channel.close("{",".join(items)}")')

    def open_channels(self, specs: Sequence[str]) -> None:
        """``channel.open("...")``: open the crosspoints."""
        items = [self.check_spec(s) for s in specs]
        if items:
            self.transport.write(f'channel.open("{",".join(items)}")')

    def close_route(self, specs: Sequence[str]) -> None:
        """Close one route: single-route guard, read-back (:func:`close_route`)."""
        close_route(self, specs)

    def check_errors(self) -> None:
        """Raise :class:`InstrumentError` with the first queued error, if any."""
        su.check_tsp_errors(self, "check the channel list")

    def safe_state(self) -> None:
        """Open every relay: ``channel.open("allslots")``, then read back (idempotent).

        Raises:
            InstrumentStateError: a crosspoint still reads closed (a stuck relay): the
                safe state is not confirmed.
        """
        self.transport.write('channel.open("allslots")')
        confirm_all_open(self, 'channel.open("allslots")')

    def is_energised(self) -> bool:
        """True when any crosspoint is closed (read back)."""
        return bool(self.closed_channels())


def _smu_then_matrix_safe(smu: Instrument | PulsingSmu, matrix: RouteMatrix) -> None:
    """Put ``smu`` in its safe state, then open every relay of ``matrix`` (both attempted)."""
    try:
        smu.safe_state()
    finally:
        matrix.safe_state()


class SwitchedCrosspoints:
    """A ``CrosspointRole``: a 707B routes each crosspoint (edge) to one SMU.

    For each call the route of the crosspoint is closed (single-route guard), the SMU
    pulses or reads it, and the route is opened again -- also when the SMU call fails.

    Args:
        matrix: the switch matrix.
        smu: the pulsing SMU wired to the matrix (a 2400, or one 2600B channel).
        routes: ``routes[e]`` = crosspoints that connect edge ``e`` to the SMU (e.g.
            ``("1A01", "1B05")``).
        pulse_amplitude_max_v: largest |pulse amplitude| accepted, V.
        pulse_width_range_s: (shortest, longest) pulse accepted, s.
        max_pulses: most pulses per call.
        v_read_max_v: largest |read voltage|, V.
    """

    def __init__(
        self,
        matrix: RouteMatrix,
        smu: PulsingSmu,
        routes: Sequence[Sequence[str]],
        *,
        pulse_amplitude_max_v: float = 3.0,
        pulse_width_range_s: tuple[float, float] = (1.0e-5, 1.0e-1),
        max_pulses: int = 1000,
        v_read_max_v: float = 1.0,
    ) -> None:
        self.matrix = matrix
        self.smu = smu
        self.name = f"{matrix.name}+SMU"
        self.routes = tuple(tuple(matrix.check_spec(s) for s in r) for r in routes)
        if any(not r for r in self.routes):
            raise ConfigError(f"{self.name}: every crosspoint needs a route of >= 1 relay")
        self.pulse_amplitude_max_v = float(pulse_amplitude_max_v)
        self.pulse_width_range_s = (float(pulse_width_range_s[0]), float(pulse_width_range_s[1]))
        self.max_pulses = int(max_pulses)
        self.v_read_max_v = float(v_read_max_v)

    def _route(self, crosspoint: int) -> tuple[str, ...]:
        su.check_count(self.name, "crosspoint", crosspoint, 0, len(self.routes) - 1)
        return self.routes[int(crosspoint)]

    def pulse(self, crosspoint: int, amplitude_v: float, width_s: float, count: int) -> int:
        """Route ``crosspoint`` to the SMU, apply ``count`` pulses, open the route.

        Returns:
            Pulses applied (fewer after a compliance trip).

        Raises:
            LimitError: amplitude, width or count beyond the limits (nothing applied).
            InstrumentStateError: another route is closed (nothing applied).
        """
        route = self._route(crosspoint)
        a = self.pulse_amplitude_max_v
        su.check_range(self.name, "pulse amplitude", amplitude_v, -a, a, "V")
        su.check_range(self.name, "pulse width", width_s, *self.pulse_width_range_s, "s")
        n = su.check_count(self.name, "pulse count", count, 0, self.max_pulses)
        if n == 0 or amplitude_v == 0.0:
            return 0
        self.smu.safe_state()  # never hot-switch the reed relays
        close_route(self.matrix, route)
        try:
            return self.smu.pulse_voltage(amplitude_v, width_s, n)
        finally:
            self._release(route)

    def read_conductance(self, crosspoints: NDArray[np.integer], v_read: float) -> FloatArray:
        """Conductance ``I / v_read`` of each crosspoint, S, one route at a time."""
        v = su.check_range(
            self.name, "read voltage", v_read, -self.v_read_max_v, self.v_read_max_v, "V"
        )
        if v == 0.0:
            raise ConfigError(f"{self.name}: the read voltage must be nonzero")
        cps = [int(c) for c in np.asarray(crosspoints).reshape(-1)]
        routes = [self._route(c) for c in cps]
        out = np.empty(len(cps))
        self.smu.safe_state()
        for j, route in enumerate(routes):
            close_route(self.matrix, route)
            try:
                out[j] = self.smu.measure_current_at(v) / v
            finally:
                self._release(route)
        return out

    def _release(self, route: Sequence[str]) -> None:
        """SMU off, then open the route (both attempted even if one fails)."""
        try:
            self.smu.safe_state()
        finally:
            self.matrix.open_channels(route)

    # ------------------------------------------------------------------ Instrument
    def identity(self) -> str:
        """Identities of the matrix and the SMU's instrument."""
        return self.matrix.identity()

    def safe_state(self) -> None:
        """SMU to 0 and off, then every relay open (both attempted)."""
        _smu_then_matrix_safe(self.smu, self.matrix)

    def is_energised(self) -> bool:
        """True when any crosspoint of the matrix is closed."""
        return self.matrix.is_energised()

    def close(self) -> None:
        """Safe state (the instruments themselves are closed by their owners)."""
        self.safe_state()


# --------------------------------------------------------------------------- the instrument kind


def sequential_routes(n: int, rows: str, columns: int, slots: Sequence[int]) -> list[list[str]]:
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


class MatrixWithSmu:
    """A switch matrix and its pulsing SMU as one :class:`~instruments.roles.Instrument`."""

    def __init__(self, matrix: RouteMatrix, smu: Instrument) -> None:
        self.matrix = matrix
        self.smu = smu

    def identity(self) -> str:
        """Both identities, ``"MATRIX | SMU"``."""
        return f"{self.matrix.identity()} | {self.smu.identity()}"

    def safe_state(self) -> None:
        """SMU to 0 and off, then every relay open (both attempted)."""
        _smu_then_matrix_safe(self.smu, self.matrix)

    def is_energised(self) -> bool:
        """True when a relay is closed or the SMU's output is on."""
        return bool(self.matrix.is_energised() or self.smu.is_energised())

    def close(self) -> None:
        """Close the matrix, then the SMU (each goes safe first; both attempted)."""
        try:
            self.matrix.close()
        finally:
            self.smu.close()


def _open(ctx: kinds.OpenContext) -> kinds.OpenedInstrument:
    lim = ctx.limits
    rows = str(ctx.option("rows"))
    columns = int(ctx.option("columns"))
    slots = tuple(ctx.option("slots"))
    routes_opt = ctx.option("routes")
    if routes_opt == "sequential":
        n = int(ctx.option("n_crosspoints") or 0) or ctx.used_channels(("crosspoints",))
        routes: Sequence[Sequence[str]] = sequential_routes(n, rows, columns, slots)
    else:
        routes = routes_opt
    width_min = float(ctx.option("pulse_width_min_s"))
    w_max, n_max = ctx.option("pulse_width_max_s"), ctx.option("max_pulses")
    width_max = float(lim.pulse_width_max_s if w_max is None else w_max)
    max_pulses = int(lim.max_pulses_per_call if n_max is None else n_max)
    smu_kind = str(ctx.option("smu_kind"))
    tm = ctx.visa(ctx.address, f"{ctx.name} matrix")
    try:
        matrix = Keithley707B(tm, rows=rows, columns=columns, slots=slots)
        window = kinds.PulseWindow(str(ctx.option("smu_channel")), width_min, width_max, max_pulses)
        smu = ctx.open_pulser(smu_kind, ctx.extra_address("smu_resource"), window)
    except BaseException:
        tm.close()
        raise
    try:
        assert smu.pulser is not None
        cross = SwitchedCrosspoints(
            matrix,
            smu.pulser,
            routes,
            pulse_amplitude_max_v=lim.pulse_amplitude_max_v,
            pulse_width_range_s=(width_min, width_max),
            max_pulses=max_pulses,
            v_read_max_v=ctx.v_read_max_v,
        )
    except BaseException:
        tm.close()
        smu.hard_close()
        raise

    def confirm() -> None:
        matrix.check_errors()
        smu.confirm()

    def configure(limits: SafetyLimits) -> None:
        smu.configure(limits)

    def reconnect(fresh: bool) -> None:
        try:
            tm.reconnect(fresh)
        finally:
            if smu.reconnect is not None:
                smu.reconnect(fresh)

    def hard_close() -> None:
        try:
            tm.close()
        finally:
            smu.hard_close()

    return kinds.OpenedInstrument(
        identity=f"{matrix.identity()} | {smu.identity}",
        device=MatrixWithSmu(matrix, smu.device),
        roles=kinds.RoleDrivers(crosspoints=cross),
        channel_counts={"crosspoints": len(cross.routes)},
        hard_close=hard_close,
        reconnect=reconnect,
        confirm=confirm,
        configure=configure,
    )


KIND = kinds.InstrumentKind(
    name="keithley707b+smu",
    help="a Keithley 707B matrix routing each crosspoint to a pulsing SMU",
    roles=(CrosspointRole,),
    options=(
        *kinds.VISA_OPTIONS,
        *kinds.TIMING_OPTIONS,
        kinds.KindOption("smu_kind", "str", "", "keithley2600",
                   "instrument kind of the pulsing SMU (one that can pulse)"),
        kinds.KindOption("smu_channel", "str", "", "smua", "the SMU channel wired to the matrix"),
        kinds.KindOption("routes", "routes", "", "sequential",
                   '"sequential" or, per crosspoint, the relays that route it'),
        kinds.KindOption("n_crosspoints", "int", "", None,
                   "crosspoints routed sequentially (default: what the wiring uses)"),
        kinds.KindOption("rows", "str", "", "ABCDEFGH", "row letters of the cards"),
        kinds.KindOption("columns", "int", "", 12, "columns per card"),
        kinds.KindOption("slots", "intlist", "", (1, 2, 3, 4, 5, 6), "slots with cards"),
        kinds.KindOption("pulse_width_min_s", "number", "s", 1e-5, "shortest pulse accepted"),
        kinds.KindOption("pulse_width_max_s", "number", "s", None,
                   "longest pulse accepted (default: [safety] pulse_width_max_s)"),
        kinds.KindOption("max_pulses", "int", "", None,
                   "most pulses per train (default: [safety] max_pulses_per_step)"),
    ),
    open=_open,
    extra_address_keys=("smu_resource",),
)
"""The ``keithley707b+smu`` instrument kind (entry point ``hwloop.instruments``)."""


def instrument_kind() -> kinds.InstrumentKind:
    """Entry point of the ``keithley707b+smu`` kind (group ``hwloop.instruments``)."""
    return KIND
