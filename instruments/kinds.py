"""Instrument kinds as plugins: what ``kind = "..."`` in a board file can name.

Each driver module declares its kind once, as an :class:`InstrumentKind`: its name,
its options (name, type, unit, default, one-line help), the roles it can play (the
role protocols of :mod:`instruments.roles`), how its address is spelled in the board
file, and how to open it. Opening returns an :class:`OpenedInstrument`: its identity,
one typed driver per role it offers, how to confirm that written levels were
executed, how to put it in its safe state and how to release it.

Kinds are found through the entry-point group ``hwloop.instruments``
(``name = "module:KIND"``, the value an :class:`InstrumentKind` or a callable
returning one; the entry point's name must equal the kind's). hwloop's own kinds
are declared in its ``pyproject.toml``; a lab's package adds its own the same way,
with no change to hwloop. :mod:`instruments.board_file` validates board files
against this registry and :mod:`instruments.board_open` opens instruments through
it.

Board roles and the protocols that play them: ``inputs`` :class:`VoltageSourceRole`,
``nudges`` and ``biases`` :class:`CurrentSourceRole`, ``meter`` :class:`MeterRole`,
``crosspoints`` :class:`CrosspointRole`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from hwloop.device import SafetyLimits
from hwloop.errors import ConfigError
from instruments.roles import (
    CrosspointRole,
    CurrentSourceRole,
    Instrument,
    MeterRole,
    PulsingSmu,
    VoltageSourceRole,
)

if TYPE_CHECKING:
    from instruments.visa_transport import VisaTransport

__all__ = [
    "GROUP",
    "ROLE_PROTOCOLS",
    "InstrumentKind",
    "KindOption",
    "OpenContext",
    "OpenedInstrument",
    "PulseWindow",
    "RoleDrivers",
    "SourceLevels",
    "VisaInstrument",
    "installed_kind_names",
    "installed_kinds",
    "load_kind",
    "on_visa",
    "opened_on_visa",
]

GROUP = "hwloop.instruments"
"""Entry-point group of instrument kinds."""

FloatArray = NDArray[np.float64]

ROLE_PROTOCOLS: Mapping[str, type] = {
    "inputs": VoltageSourceRole,
    "nudges": CurrentSourceRole,
    "biases": CurrentSourceRole,
    "meter": MeterRole,
    "crosspoints": CrosspointRole,
}
"""The protocol an instrument must offer to play each board role."""

OptionType = Literal["number", "int", "str", "bool", "strlist", "intlist", "routes", "table"]


@dataclass(frozen=True)
class KindOption:
    """One option of a kind (``[instruments.NAME.options]``).

    Attributes:
        name: the key.
        type: ``number``, ``int``, ``str``, ``bool``, ``strlist``, ``intlist``, ``routes``
            or ``table`` (names to strings, numbers or booleans).
        unit: SI unit of a number (``""`` for none).
        default: value used when the key is absent (``None``: derived, as ``help`` says).
        help: one line.
    """

    name: str
    type: OptionType
    unit: str = ""
    default: object = None
    help: str = ""


@dataclass(frozen=True)
class PulseWindow:
    """What a switch matrix asks of the SMU that pulses through it.

    Attributes:
        channel: the SMU channel name (``None``: the instrument's only one).
        width_min_s: shortest pulse, s.
        width_max_s: longest pulse, s.
        max_count: most pulses in one train.
    """

    channel: str | None
    width_min_s: float
    width_max_s: float
    max_count: int


@dataclass(frozen=True)
class SourceLevels:
    """An instrument's source levels as read back (GET_STATE or equivalent).

    Attributes:
        energised: any output on at a nonzero level.
        levels: per board role the instrument offers, its channels' levels (V or A).
    """

    energised: bool
    levels: Mapping[str, FloatArray]


@dataclass(frozen=True)
class RoleDrivers:
    """The driver of each role an opened instrument offers (``None``: not offered)."""

    inputs: VoltageSourceRole | None = None
    nudges: CurrentSourceRole | None = None
    biases: CurrentSourceRole | None = None
    meter: MeterRole | None = None
    crosspoints: CrosspointRole | None = None


def _nothing() -> None:
    return None


def _no_limits(_lim: SafetyLimits) -> None:
    return None


@dataclass
class OpenedInstrument:
    """An instrument as its kind opened it.

    Attributes:
        identity: its identity string(s).
        device: identity, safe state, energised check and close (safe first).
        roles: the driver of each role it offers.
        channel_counts: channels available per board role (for the wiring check).
        hard_close: release the connection(s) without talking to the instrument.
        confirm: one round trip that returns only after earlier writes executed
            (and raises an error the instrument queued); a no-op where every write
            is acknowledged.
        configure: apply the board file's safety limits (compliance) after connect.
        read_levels: read back the source levels (``None``: the kind cannot; then an
            energised instrument is switched off rather than ramped down).
        v_read_range_v: the meter's range, V (``inf``: unknown or not a meter).
        pulser: the pulsing SMU, when opened for a switch matrix
            (:meth:`InstrumentKind.open_pulser`).
        reconnect: ``reconnect(fresh)``: recover a link that stopped answering, on the
            live connection (device clear / resynchronisation) or, ``fresh``, a newly
            opened one, checking that the same instrument answers; raises when it
            does not (``None``: the kind cannot).
    """

    identity: str
    device: Instrument
    roles: RoleDrivers
    channel_counts: Mapping[str, int]
    hard_close: Callable[[], None]
    confirm: Callable[[], None] = _nothing
    configure: Callable[[SafetyLimits], None] = _no_limits
    read_levels: Callable[[], SourceLevels] | None = None
    v_read_range_v: float = math.inf
    pulser: PulsingSmu | None = None
    reconnect: Callable[[bool], None] | None = None


class OpenContext(Protocol):
    """What a kind's opener is given (implemented by :mod:`instruments.board_open`)."""

    @property
    def name(self) -> str:
        """The instrument's name in the board file."""
        ...

    @property
    def address(self) -> str:
        """Its address (the kind's ``address_key``), after ``${VAR}`` substitution."""
        ...

    @property
    def label(self) -> str:
        """Name used in logs and errors for this connection."""
        ...

    @property
    def limits(self) -> SafetyLimits:
        """The board file's safety limits."""
        ...

    @property
    def v_read_max_v(self) -> float:
        """The board file's largest conductance read voltage, V."""
        ...

    def option(self, key: str) -> Any:
        """The option's value from the board file, else its declared default."""
        ...

    def has_option(self, key: str) -> bool:
        """True when the board file sets the option."""
        ...

    def extra_address(self, key: str) -> str:
        """A further address the kind declared (``extra_address_keys``)."""
        ...

    def used_channels(self, roles: Sequence[str]) -> int:
        """One more than the highest channel the wiring uses for these roles (0: none)."""
        ...

    def visa(self, address: str, label: str) -> VisaTransport:
        """Open a VISA connection (options ``visa_library``, ``timeout_s``, ``max_retries``)."""
        ...

    def callbacks(
        self,
    ) -> tuple[Callable[[str], None], Callable[[str, str], None]]:
        """``(on_exchange(text), on_event(kind, message))``, prefixed with the instrument's name.

        The board's event log, for a transport the kind opens itself.
        """
        ...

    def open_pulser(self, kind: str, address: str, window: PulseWindow) -> OpenedInstrument:
        """Open the SMU of kind ``kind`` at ``address`` as a pulser (``pulser`` set)."""
        ...


@dataclass(frozen=True)
class InstrumentKind:
    """One instrument kind (see the module docstring).

    Attributes:
        name: what ``kind = "..."`` names.
        help: one line.
        roles: the role protocols it can play (of :mod:`instruments.roles`).
        options: its options.
        open: ``open(ctx) -> OpenedInstrument``; closes what it opened when it fails.
        address_key: the key of its address (``"resource"`` for VISA, ``"url"``).
        extra_address_keys: further address keys it requires.
        exclusive_options: pairs of options that must not both be set.
        shared_source_channels: its source roles share one set of channels (an
            SMU), so inputs, nudges and biases must not overlap on it.
        open_pulser: ``open_pulser(ctx, window)``: open it as the pulsing SMU of a
            switch matrix (``None``: it cannot pulse).
    """

    name: str
    help: str
    roles: tuple[type, ...]
    options: tuple[KindOption, ...]
    open: Callable[[OpenContext], OpenedInstrument]
    address_key: str = "resource"
    extra_address_keys: tuple[str, ...] = ()
    exclusive_options: tuple[tuple[str, str], ...] = ()
    shared_source_channels: bool = False
    open_pulser: Callable[[OpenContext, PulseWindow], OpenedInstrument] | None = None

    def option(self, key: str) -> KindOption:
        """The declared option ``key`` (KeyError when it has none)."""
        for o in self.options:
            if o.name == key:
                return o
        raise KeyError(key)

    def plays(self, role: str) -> bool:
        """True when it offers the protocol of board role ``role``."""
        return ROLE_PROTOCOLS[role] in self.roles


VISA_OPTIONS = (
    KindOption("timeout_s", "number", "s", 2.0, "default reply timeout of an exchange"),
    KindOption("max_retries", "int", "", 3, "retries of an idempotent query after a timeout"),
    KindOption("visa_library", "str", "", "", 'pyvisa backend ("@py", "@sim"; "": the default)'),
)
"""Options of every kind opened through VISA (:meth:`OpenContext.visa`)."""

TIMING_OPTIONS = (
    KindOption("nplc", "number", "PLC", 1.0, "integration time"),
    KindOption("line_frequency_hz", "number", "Hz", 50.0, "mains frequency"),
)
"""Integration-time options of a measuring instrument."""


D = TypeVar("D")


def on_visa(ctx: OpenContext, build: Callable[[VisaTransport], D]) -> D:
    """Open the instrument's VISA address and build its driver on the connection.

    The connection is closed again when ``build`` raises.
    """
    t = ctx.visa(ctx.address, ctx.label)
    try:
        return build(t)
    except BaseException:
        t.close()
        raise


class VisaInstrument(Instrument, Protocol):
    """An instrument driven over one VISA connection (:func:`on_visa`)."""

    transport: VisaTransport


def opened_on_visa(
    d: VisaInstrument,
    *,
    confirm: Callable[[], None],
    roles: RoleDrivers | None = None,
    channel_counts: Mapping[str, int] | None = None,
    configure: Callable[[SafetyLimits], None] = _no_limits,
    v_read_range_v: float = math.inf,
    pulser: PulsingSmu | None = None,
) -> OpenedInstrument:
    """:class:`OpenedInstrument` of the VISA driver ``d``.

    Its identity is read now; hard close and reconnect go through its connection.
    ``roles`` None: no role (a matrix's pulser); ``configure``: as in OpenedInstrument.
    """
    return OpenedInstrument(
        identity=d.identity(),
        device=d,
        roles=RoleDrivers() if roles is None else roles,
        channel_counts={} if channel_counts is None else channel_counts,
        hard_close=d.transport.close,
        reconnect=d.transport.reconnect,
        confirm=confirm,
        configure=configure,
        v_read_range_v=v_read_range_v,
        pulser=pulser,
    )


def _group() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def installed_kind_names() -> list[str]:
    """Names of the installed instrument kinds, sorted (nothing is imported)."""
    return sorted(_group())


def _load(ep: EntryPoint) -> InstrumentKind:
    try:
        obj = ep.load()
        kind = obj if isinstance(obj, InstrumentKind) else obj()
    except Exception as exc:
        raise ConfigError(
            f"instrument kind {ep.name!r} ({ep.value}) cannot be loaded: "
            f"{' '.join(str(exc).split())}; reinstall the package that provides it"
        ) from None
    if not isinstance(kind, InstrumentKind) or kind.name != ep.name:
        raise ConfigError(
            f"entry point {ep.name!r} of {GROUP} ({ep.value}) does not give an InstrumentKind "
            f"named {ep.name!r}; fix the package that declares it"
        )
    return kind


def load_kind(name: str) -> InstrumentKind:
    """The installed kind ``name``.

    Raises:
        ConfigError: no installed package provides it (the message lists those that
            are installed), or its entry point is broken.
    """
    eps = _group()
    if name not in eps:
        raise ConfigError(
            f"instrument kind {name!r} is not installed (installed: "
            f"{', '.join(sorted(eps)) or 'none'}); install the package that provides it or "
            "use one of those"
        )
    return _load(eps[name])


def installed_kinds() -> dict[str, InstrumentKind]:
    """Every installed kind, by name (each entry point loaded)."""
    return {name: _load(ep) for name, ep in sorted(_group().items())}
