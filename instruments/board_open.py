"""Opening the instruments of a board file, through the instrument-kind registry.

:class:`Opener` opens each ``[instruments.NAME]`` table with its kind's opener
(:mod:`instruments.kinds`), handing it an :class:`~instruments.kinds.OpenContext`
(the options with their declared defaults, the wiring's channel use, VISA
sessions, the board's event callbacks). The connect-time steps that follow are
here too: the wiring is checked against the channels each instrument offers
(:func:`check_wiring`), outputs found on are ramped down or switched off
(:func:`go_safe_on_connect`) and the board file's limits are applied
(:func:`configure`).

Nothing here knows an instrument kind by name.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from hwloop.device import SafetyLimits
from hwloop.errors import ConfigError
from instruments.board_file import BoardFile, InstrumentSpec
from instruments.kinds import (
    InstrumentKind,
    OpenedInstrument,
    PulseWindow,
    RoleDrivers,
    installed_kinds,
    load_kind,
)

if TYPE_CHECKING:
    from instruments.visa_transport import VisaTransport

__all__ = [
    "ROLES",
    "BoardInstrument",
    "Opener",
    "check_wiring",
    "configure",
    "go_safe_on_connect",
]

ROLES = ("inputs", "nudges", "biases", "meter", "crosspoints")
"""The board roles, in board-file order."""

EventFn = Callable[[str, str], None]


@dataclass
class BoardInstrument:
    """One opened instrument of the board file and its state on this board.

    Attributes:
        spec: its board-file table.
        opened: what its kind opened.
        dead: True once it stopped answering (no further exchange is attempted).
    """

    spec: InstrumentSpec
    opened: OpenedInstrument
    dead: bool = False

    @property
    def name(self) -> str:
        """Its name in the board file."""
        return self.spec.name

    @property
    def label(self) -> str:
        """``'NAME' (KIND at ADDRESS)``, for messages."""
        return f"{self.spec.name!r} ({self.spec.kind} at {self.spec.address})"

    @property
    def identity(self) -> str:
        """Its identity string(s)."""
        return self.opened.identity

    @property
    def roles(self) -> RoleDrivers:
        """The driver of each role it offers."""
        return self.opened.roles


@dataclass(frozen=True)
class _Context:
    """The :class:`~instruments.kinds.OpenContext` of one instrument.

    ``name``, ``address``, ``label``, ``limits`` and ``v_read_max_v`` are the protocol's
    read-only attributes (the limits from the board file's ``[safety]``; volts, amperes).
    """

    opener: Opener
    spec: InstrumentSpec
    kind: InstrumentKind
    address: str
    label: str
    fallback: InstrumentKind | None = None
    name: str = field(init=False)
    limits: SafetyLimits = field(init=False)
    v_read_max_v: float = field(init=False)

    def __post_init__(self) -> None:
        safety = self.opener.bf.safety
        object.__setattr__(self, "name", self.spec.name)
        object.__setattr__(self, "limits", safety.limits)
        object.__setattr__(self, "v_read_max_v", safety.v_read_max_v)

    def option(self, key: str) -> Any:
        if key in self.spec.options:
            return self.spec.options[key]
        for kind in (self.kind, self.fallback):
            if kind is not None:
                try:
                    return kind.option(key).default
                except KeyError:
                    continue
        raise KeyError(f"instrument kind {self.kind.name!r} declares no option {key!r}")

    def has_option(self, key: str) -> bool:
        return key in self.spec.options

    def extra_address(self, key: str) -> str:
        return self.spec.extra_addresses[key]

    def used_channels(self, roles: Sequence[str]) -> int:
        bf = self.opener.bf
        n = 0
        for role in roles:
            if getattr(bf.roles, role) == self.spec.name:
                ch = getattr(bf.wiring, role)
                if ch.size:
                    n = max(n, int(ch.max()) + 1)
        return n

    def visa(self, address: str, label: str) -> VisaTransport:
        return self.opener.visa(self.spec, self, address, label)

    def callbacks(self) -> tuple[Callable[[str], None], EventFn]:
        name, o = self.spec.name, self.opener
        return (
            lambda text: o.on_exchange(f"{name} {text}"),
            lambda kind, msg: o.on_event(kind, f"{name}: {msg}"),
        )

    def open_pulser(self, kind: str, address: str, window: PulseWindow) -> OpenedInstrument:
        k = load_kind(kind)
        if k.open_pulser is None:
            able = ", ".join(n for n, x in installed_kinds().items() if x.open_pulser is not None)
            raise ConfigError(
                f"instrument {self.spec.name!r}: options.smu_kind = {kind!r} is not known as a "
                f"pulsing SMU; use one of {able}"
            )
        ctx = _Context(self.opener, self.spec, k, address, f"{self.spec.name} SMU",
                       fallback=self.kind)
        return k.open_pulser(ctx, window)


class Opener:
    """Opens the instruments of a board file.

    Args:
        bf: the board file.
        on_exchange: ``on_exchange(text)`` for each wire-level exchange.
        on_event: ``on_event(kind, message)`` for retries and warnings.
    """

    def __init__(self, bf: BoardFile, on_exchange: Callable[[str], None],
                 on_event: EventFn) -> None:
        self.bf = bf
        self.on_exchange = on_exchange
        self.on_event = on_event
        self._rms: dict[str, Any] = {}

    def open(self, spec: InstrumentSpec) -> BoardInstrument:
        """Open, identify and wrap one instrument (its kind closes what it opened on error)."""
        kind = load_kind(spec.kind)
        ctx = _Context(self, spec, kind, spec.address, spec.name)
        return BoardInstrument(spec, kind.open(ctx))

    def visa(self, spec: InstrumentSpec, ctx: _Context, address: str,
             label: str) -> VisaTransport:
        """A VISA connection with the board's callbacks (one resource manager per library)."""
        from instruments.visa_transport import VisaTransport

        lib = str(ctx.option("visa_library"))
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
        timeout_s = float(ctx.option("timeout_s"))
        return VisaTransport.open(
            address,
            resource_manager=self._rms[lib],
            name=label,
            timeout_s=timeout_s,
            max_retries=int(ctx.option("max_retries")),
            resync_timeout_s=min(1.0, timeout_s),
            on_exchange=lambda d, text, t: self.on_exchange(f"{name} {d} {text!r}"),
            on_event=self.on_event,
        )


def check_wiring(bf: BoardFile, instruments: Mapping[str, BoardInstrument]) -> None:
    """Every wired channel exists on its instrument.

    Raises:
        ConfigError: a channel beyond what the instrument offers (one line).
    """
    for role in ROLES:
        name = getattr(bf.roles, role)
        if name is None:
            continue
        inst = instruments[name]
        if getattr(inst.roles, role) is None:
            raise ConfigError(
                f"board file {bf.path}: [roles] {role} = {name!r}, but {inst.label} offers no "
                f"{role} driver as opened; declare it in its options or pick another instrument"
            )
        ch = getattr(bf.wiring, role)
        n = inst.opened.channel_counts.get(role)
        if n is not None and ch.size and int(ch.max()) >= n:
            raise ConfigError(
                f"board file {bf.path}: [wiring] {role} uses channel {int(ch.max())} but "
                f"{inst.label} has {n} (0..{n - 1}); fix the wiring, or check that the "
                f"instrument serves the network {bf.network.arch}"
            )


def go_safe_on_connect(bf: BoardFile, instruments: Mapping[str, BoardInstrument],
                       event: EventFn) -> list[str]:
    """Read back every instrument's outputs; ramp down / go safe; return the energised ones.

    An instrument that can read its levels back is ramped down in ``ramp_steps``
    steps of ``ramp_step_time_s``; another is switched to 0 and off at once.
    """
    found = []
    for inst in instruments.values():
        o = inst.opened
        if o.read_levels is not None:
            st = o.read_levels()
            if st.energised:
                found.append(inst.name)
                _ramp_down(bf, inst, st.levels, event)
        elif o.device.is_energised():
            found.append(inst.name)
            o.device.safe_state()
            event(
                "safety",
                f"{inst.label} had outputs on (or relays closed) at connect; they were "
                "switched to 0 and off (this driver cannot read the levels to ramp them)",
            )
        o.device.safe_state()
    return found


def _ramp_down(bf: BoardFile, inst: BoardInstrument, levels: Mapping[str, Any],
               event: EventFn) -> None:
    roles = inst.roles
    steps = bf.board.ramp_steps
    wait = bf.board.ramp_step_time_s
    zero = np.zeros(0)
    v = np.asarray(levels.get("inputs", zero), dtype=np.float64)
    i_n = np.asarray(levels.get("nudges", zero), dtype=np.float64)
    i_b = np.asarray(levels.get("biases", zero), dtype=np.float64)
    iv, inn, ib = np.flatnonzero(v), np.flatnonzero(i_n), np.flatnonzero(i_b)
    for k in range(steps - 1, 0, -1):
        frac = k / steps
        if iv.size and roles.inputs is not None:
            roles.inputs.set_voltages(iv, v[iv] * frac)
        if inn.size and roles.nudges is not None:
            roles.nudges.set_currents(inn, i_n[inn] * frac)
        if ib.size and roles.biases is not None:
            roles.biases.set_currents(ib, i_b[ib] * frac)
        if wait > 0:
            time.sleep(wait)
    inst.opened.device.safe_state()
    event(
        "safety",
        f"{inst.label} had outputs on at connect (largest input "
        f"{float(np.max(np.abs(v), initial=0)):.4g} V, nudge "
        f"{float(np.max(np.abs(i_n), initial=0)):.4g} A, bias "
        f"{float(np.max(np.abs(i_b), initial=0)):.4g} A); ramped down in {steps} steps "
        "and put in the safe state",
    )


def configure(limits: SafetyLimits, instruments: Mapping[str, BoardInstrument]) -> None:
    """Apply the board file's limits (compliance) on every instrument that takes them."""
    for inst in instruments.values():
        inst.opened.configure(limits)
