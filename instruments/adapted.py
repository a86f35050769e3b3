r"""Bring your own driver: any importable instrument class, mapped onto hwloop's roles.

The ``python-class`` instrument kind opens an instrument with a class the lab
already uses (a PyMeasure or QCoDeS instrument class, or a script of its own) and
drives it through a small adapter declared in the board file: which attribute or
method sets a voltage or a current on a channel, reads a voltage, puts a channel
in its safe state, tells whether an output is on. hwloop's limit checks, its
safe state on every exit path and its session logging apply as to any kind.

Example (the sources of a 2600B through PyMeasure, ``examples/boards``)::

    [instruments.smu]
    kind = "python-class"
    resource = "${HWLOOP_SMU_RESOURCE}"

    [instruments.smu.options]
    class = "pymeasure.instruments.keithley:Keithley2600"
    kwargs = { visa_library = "@py", read_termination = "\n" }
    channels = ["ChA", "ChB"]
    set_voltage = ["source_mode = 'voltage'", "source_voltage = value", "source_output = 'ON'"]
    set_current = ["source_mode = 'current'", "source_current = value", "source_output = 'ON'"]
    read_voltage = "voltage"
    safe_state = ["source_voltage = 0", "source_current = 0", "source_output = 'OFF'"]
    output_state = "source_output"
    output_on = "ON"
    v_max_v = 20.0
    i_max_a = 0.01

Actions are one line each, on a channel object (``channels[i]``, an attribute path
of the instrument; ``""`` is the instrument itself) or, for ``identity``,
``setup``, ``confirm`` and ``close``, on the instrument: an assignment ``path = X``, a call
``path(X, ...)`` or, for a reading, a plain ``path``. ``X`` is a Python literal or
the name ``value`` (the level to set, V or A); inside a string literal ``{value}``
and ``{channel}`` are replaced by the level and the channel's name, so a driver's raw
``write`` can address any channel: with ``channel_objects = false`` the channels are
names only and every action runs on the instrument, e.g.
``write('{channel}.source.levelv = {value}')``. Actions are parsed, never evaluated
as code: only attribute access, assignment and calls with literal arguments run.
Levels beyond ``v_max_v`` / ``i_max_a`` are refused before anything is sent (many
drivers silently truncate out-of-range values; hwloop never clips).

The ``python-class+smu`` kind plays the crosspoint role with two such instances: a
switch matrix (``resource``; ``channels`` are the crosspoint names, one per board
crosspoint; ``close_crosspoint`` / ``open_crosspoint`` on ``{channel}``,
``closed_crosspoints`` reading the closed ones back, ``safe_state`` opening every relay)
and a pulsing SMU (``smu_resource``; options ``smu_class``, ``smu_kwargs``, ...;
``smu_pulse`` gets ``value`` / ``{value}`` (V), ``{width}`` (s) and ``{count}`` and reads
the pulses applied, ``smu_read_current`` gets the read voltage and reads the current, A).
Routing, the single-route guard, the read-back and the order SMU-off-then-relays are
hwloop's (:class:`~instruments.keithley707b.SwitchedCrosspoints`); an action's reading is
the last non-``None`` value of its list.
"""

from __future__ import annotations

import ast
import importlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from hwloop.device import SampleFlag
from hwloop.errors import ConfigError, HwloopError, LimitError
from instruments.keithley707b import MatrixWithSmu, SwitchedCrosspoints, confirm_all_open
from instruments.kinds import (
    InstrumentKind,
    KindOption,
    OpenContext,
    OpenedInstrument,
    RoleDrivers,
)
from instruments.roles import CrosspointRole, CurrentSourceRole, MeterRole, VoltageSourceRole

__all__ = [
    "CROSSPOINT_KIND",
    "KIND",
    "Action",
    "AdaptedInstrument",
    "AdaptedMatrix",
    "AdaptedPulser",
    "crosspoint_kind",
    "instrument_kind",
    "load_class",
]

FloatArray = NDArray[np.float64]

_OVERFLOW = 9.9e37
"""Readings at or above this magnitude are overflow codes (SCPI 9.9E37, 9.91E37)."""

_NOTHING = object()


@dataclass(frozen=True)
class Action:
    """One adapter action, parsed from its text.

    Attributes:
        text: the action as written.
        path: the attribute path (``("source_voltage",)``).
        op: ``"set"`` (assignment), ``"call"`` or ``"get"``.
        args: literal arguments (``_VALUE`` stands for the level).
        kwargs: literal keyword arguments.
    """

    text: str
    path: tuple[str, ...]
    op: str
    args: tuple[object, ...] = ()
    kwargs: tuple[tuple[str, object], ...] = ()

    @classmethod
    def parse(cls, text: str, where: str) -> Action:
        """Parse ``text``; ConfigError (one line, naming ``where``) when it is not an action."""
        try:
            tree = ast.parse(text.strip(), mode="exec")
        except SyntaxError:
            raise _bad(text, where) from None
        if len(tree.body) != 1:
            raise _bad(text, where)
        node = tree.body[0]
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            return cls(text, _path(node.targets[0], text, where), "set",
                       (_literal(node.value, text, where),))
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            call = node.value
            if any(k.arg is None for k in call.keywords):
                raise _bad(text, where)
            return cls(
                text,
                _path(call.func, text, where),
                "call",
                tuple(_literal(a, text, where) for a in call.args),
                tuple((str(k.arg), _literal(k.value, text, where)) for k in call.keywords),
            )
        if isinstance(node, ast.Expr):
            return cls(text, _path(node.value, text, where), "get")
        raise _bad(text, where)

    def run(self, target: object, value: float | None = None, channel: str = "",
            fields: Mapping[str, float | int] | None = None) -> Any:
        """Perform the action on ``target``.

        Args:
            target: the object the path starts from.
            value: the level, for ``value`` arguments and ``{value}`` in strings.
            channel: the channel's name, for ``{channel}`` in strings.
            fields: further ``{name}`` replacements in strings (a pulse's ``{width}``, s,
                and ``{count}``).
        """
        obj = target
        for name in self.path[:-1]:
            obj = getattr(obj, name)
        last = self.path[-1]

        def arg(x: object) -> object:
            if x is _VALUE:
                return value
            if isinstance(x, str):
                if "{value}" in x:
                    x = x.replace("{value}", "nil" if value is None else format(value, ".12g"))
                for k, f in (fields or {}).items():
                    x = x.replace("{" + k + "}", format(f, ".12g"))
                return x.replace("{channel}", channel)
            return x

        if self.op == "set":
            setattr(obj, last, arg(self.args[0]))
            return None
        attr = getattr(obj, last)
        if self.op == "get":
            return attr
        return attr(*(arg(a) for a in self.args), **{k: arg(v) for k, v in self.kwargs})


class _Value:
    def __repr__(self) -> str:
        return "value"


_VALUE = _Value()


def _bad(text: str, where: str) -> ConfigError:
    return ConfigError(
        f"{where} = {text!r} is not an adapter action; write 'path = X', 'path(X, ...)' or "
        "'path' with X a literal or value"
    )


def _path(node: ast.expr, text: str, where: str) -> tuple[str, ...]:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        raise _bad(text, where)
    parts.append(node.id)
    return tuple(reversed(parts))


def _literal(node: ast.expr, text: str, where: str) -> object:
    if isinstance(node, ast.Name) and node.id == "value":
        return _VALUE
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise _bad(text, where) from None


def _actions(value: object, where: str) -> tuple[Action, ...]:
    items = [value] if isinstance(value, str) else list(value or ())  # type: ignore[call-overload]
    return tuple(Action.parse(str(t), where) for t in items)


def load_class(spec: str, key: str = "class") -> type:
    """The class named ``module:Class`` or ``module.Class`` (option ``key`` in messages).

    Raises:
        ConfigError: it cannot be imported (one line naming it and the fix).
    """
    module, sep, name = spec.partition(":")
    if not sep:
        module, _, name = spec.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name) if module and name else None
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"options.{key} = {spec!r} cannot be imported ({' '.join(str(exc).split())}); "
            "install the package that provides it or fix the name"
        ) from None
    if not isinstance(cls, type):
        raise ConfigError(f"options.{key} = {spec!r} is not a class; write 'module:Class'")
    return cls


class AdaptedInstrument:
    """An instance of a lab's class, driven through declared actions (see the module).

    Plays :class:`~instruments.roles.Instrument` and, where actions are declared,
    :class:`~instruments.roles.VoltageSourceRole`, :class:`~instruments.roles.CurrentSourceRole`
    and :class:`~instruments.roles.MeterRole`; channel ``i`` is ``channels[i]``.

    Args:
        name: the instrument's name (messages).
        device: the instance of the lab's class.
        channels: attribute path of each channel (``""``: the instance).
        actions: parsed actions by option name.
        v_max_v: largest |voltage level| accepted, V (``inf``: the board file's limit only).
        i_max_a: largest |current level| accepted, A.
        output_on: the ``output_state`` value that means "on".
    """

    def __init__(self, name: str, device: object, channels: Sequence[str],
                 actions: Mapping[str, tuple[Action, ...]], *, v_max_v: float = math.inf,
                 i_max_a: float = math.inf, output_on: object = _NOTHING,
                 channel_objects: bool = True) -> None:
        self.name = name
        self.device = device
        self._paths = tuple(channels)
        self._targets = [self._resolve(p) if channel_objects else device for p in self._paths]
        self._a = actions
        self.v_max_v = v_max_v
        self.i_max_a = i_max_a
        self._output_on = output_on
        self._closed = False

    def _resolve(self, path: str) -> object:
        obj = self.device
        for part in filter(None, path.split(".")):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise ConfigError(
                    f"{self.name}: channel {path!r} is not an attribute of "
                    f"{type(self.device).__name__}; fix options.channels"
                ) from None
        return obj

    def has(self, key: str) -> bool:
        """True when the adapter declares ``key``."""
        return bool(self._a.get(key))

    @property
    def n_channels(self) -> int:
        """Channels declared."""
        return len(self._targets)

    def _run(self, key: str, target: object, value: float | None = None,
             channel: int | None = None, fields: Mapping[str, float | int] | None = None) -> Any:
        out = None
        name = "" if channel is None else self._paths[channel]
        for act in self._a.get(key, ()):
            try:
                got = act.run(target, value, name, fields)
                out = out if got is None else got
            except HwloopError:
                raise
            except Exception as exc:  # the lab's driver raises its own types
                raise HwloopError(
                    f"{self.name}: {key} action {act.text!r} failed: {type(exc).__name__}: "
                    f"{' '.join(str(exc).split())}"
                ) from exc
        return out

    def _channels(self, channels: NDArray[np.integer]) -> list[int]:
        idx = [int(c) for c in np.asarray(channels).reshape(-1)]
        bad = [c for c in idx if not 0 <= c < len(self._targets)]
        if bad:
            raise ConfigError(f"{self.name}: channel(s) {bad} do not exist "
                              f"(0..{len(self._targets) - 1}); check the board file")
        return idx

    # ------------------------------------------------------------------ Instrument
    def identity(self) -> str:
        """The ``identity`` action's value (default: the class name)."""
        if not self.has("identity"):
            return type(self.device).__name__
        return " ".join(str(self._run("identity", self.device)).split())

    def safe_state(self) -> None:
        """Every channel's ``safe_state`` actions (all attempted; the first error raised)."""
        first: BaseException | None = None
        for c, t in enumerate(self._targets):
            try:
                self._run("safe_state", t, channel=c)
            except HwloopError as exc:
                first = first or exc
        if first is not None:
            raise first

    def is_energised(self) -> bool:
        """True when a channel's ``output_state`` equals ``output_on``.

        An adapter without source actions (a meter) sources nothing: False. A source
        without ``output_state`` / ``output_on``: True (it cannot say, so it is put safe).
        """
        if not (self.has("set_voltage") or self.has("set_current")):
            return False
        if not self.has("output_state") or self._output_on is _NOTHING:
            return True
        return any(_same(self._run("output_state", t, channel=c), self._output_on)
                   for c, t in enumerate(self._targets))

    def confirm(self) -> None:
        """The ``confirm`` actions: a round trip answered after the earlier writes."""
        self._run("confirm", self.device)

    def setup(self) -> None:
        """The ``setup`` actions, once after opening (e.g. the meter's function and NPLC)."""
        self._run("setup", self.device)

    def close(self) -> None:
        """Safe state, then the ``close`` actions (both attempted). Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.safe_state()
        finally:
            self._run("close", self.device)

    # ------------------------------------------------------------------ roles
    def _set(self, key: str, channels: NDArray[np.integer], levels: FloatArray, limit: float,
             unit: str) -> None:
        idx = self._channels(channels)
        lv = np.asarray(levels, dtype=np.float64).reshape(-1)
        if lv.size != len(idx) or not np.all(np.isfinite(lv)):
            raise ConfigError(f"{self.name}: give one finite level per channel")
        peak = float(np.max(np.abs(lv), initial=0.0))
        if peak > limit:
            raise LimitError(f"{self.name}: level {peak:.6g} {unit} exceeds the adapter's "
                             f"limit {limit:.6g} {unit}; nothing was sent")
        for c, x in zip(idx, lv, strict=True):
            self._run(key, self._targets[c], float(x), channel=c)

    def set_voltages(self, channels: NDArray[np.integer], volts: FloatArray) -> None:
        """Run ``set_voltage`` on each channel with its level, V (checked first)."""
        self._set("set_voltage", channels, volts, self.v_max_v, "V")

    def set_currents(self, channels: NDArray[np.integer], amps: FloatArray) -> None:
        """Run ``set_current`` on each channel with its level, A (checked first)."""
        self._set("set_current", channels, amps, self.i_max_a, "A")

    def read_voltages(
        self, channels: NDArray[np.integer], n_samples: int
    ) -> tuple[FloatArray, NDArray[np.uint8], FloatArray]:
        """Run ``read_voltage`` on each channel ``n_samples`` times (one row per pass).

        Returns:
            ``(samples_v (n, k), flags (n, k), timestamps_s (n,))``, host monotonic
            clock (the start of each pass); a non-finite or overflow reading is NaN
            flagged ``OVERRANGE``.
        """
        idx = self._channels(channels)
        n = int(n_samples)
        samples = np.zeros((n, len(idx)))
        stamps = np.zeros(n)
        for s in range(n):
            stamps[s] = time.monotonic()
            for j, c in enumerate(idx):
                self._run("select", self._targets[c], channel=c)
                raw = self._run("read_voltage", self._targets[c], channel=c)
                try:
                    samples[s, j] = float(raw)
                except (TypeError, ValueError):
                    raise HwloopError(f"{self.name}: read_voltage gave {raw!r}, not a number; "
                                      "fix options.read_voltage") from None
        bad = ~np.isfinite(samples) | (np.abs(samples) >= _OVERFLOW)
        samples[bad] = np.nan
        flags = np.where(bad, np.uint8(SampleFlag.OVERRANGE), np.uint8(0)).astype(np.uint8)
        return samples, flags, stamps


def _same(reading: object, on: object) -> bool:
    """``reading == on``, as numbers when both read as numbers (``"1.00000e+00"`` is 1)."""
    try:
        return float(str(reading)) == float(str(on))
    except ValueError:
        return str(reading).strip() == str(on)


_ACTION_KEYS = ("identity", "setup", "set_voltage", "set_current", "select", "read_voltage",
                "safe_state", "output_state", "confirm", "close")


_A = TypeVar("_A", bound="AdaptedInstrument")


def _build(
    ctx: OpenContext, prefix: str, address: str, keys: Sequence[str],
    make: Callable[[object, dict[str, tuple[Action, ...]]], _A],
) -> tuple[_A, str, Callable[[], None]]:
    """Open one instance of a lab's class from the options ``{prefix}class`` etc.

    Returns:
        ``(adapter, identity, hard_close)``; the instance is released again when its
        identity or setup fails.
    """
    spec = ctx.option(prefix + "class")
    if not spec:
        raise ConfigError(f"instrument {ctx.name!r} has no options.{prefix}class; "
                          "name the driver class as 'module:Class'")
    cls = load_class(str(spec), prefix + "class")
    where = f"[instruments.{ctx.name}.options]"
    actions = {k: _actions(ctx.option(prefix + k), f"{where} {prefix}{k}") for k in keys}
    if not actions["safe_state"]:
        raise ConfigError(f"{where} has no {prefix}safe_state; declare the actions that put it "
                          "safe (hwloop puts every instrument safe on every exit)")
    kwargs = dict(ctx.option(prefix + "kwargs") or {})
    address_arg = str(ctx.option(prefix + "address_arg"))
    try:
        device = (cls(**{address_arg: address}, **kwargs) if address_arg
                  else cls(address, **kwargs))
    except Exception as exc:
        raise HwloopError(
            f"instrument {ctx.name!r}: {cls.__name__}({address!r}) failed: "
            f"{type(exc).__name__}: {' '.join(str(exc).split())}; check the address and "
            f"options.{prefix}kwargs"
        ) from None
    try:
        inst = make(device, actions)
        ident = inst.identity()
        inst.setup()
    except BaseException:
        _close_quietly(actions["close"], device)
        raise
    return inst, ident, lambda: _close_quietly(actions["close"], device)


def _open(ctx: OpenContext) -> OpenedInstrument:
    on = ctx.option("output_on")
    inst, ident, hard_close = _build(
        ctx, "", ctx.address, _ACTION_KEYS,
        lambda device, actions: AdaptedInstrument(
            ctx.label, device, tuple(ctx.option("channels")), actions,
            v_max_v=float(ctx.option("v_max_v")), i_max_a=float(ctx.option("i_max_a")),
            output_on=_NOTHING if on is None else on,
            channel_objects=bool(ctx.option("channel_objects")),
        ),
    )
    n = inst.n_channels
    roles = RoleDrivers(
        inputs=inst if inst.has("set_voltage") else None,
        nudges=inst if inst.has("set_current") else None,
        biases=inst if inst.has("set_current") else None,
        meter=inst if inst.has("read_voltage") else None,
    )
    counts = {r: n for r in ("inputs", "nudges", "biases", "meter") if getattr(roles, r)}
    return OpenedInstrument(
        identity=ident,
        device=inst,
        roles=roles,
        channel_counts=counts,
        hard_close=hard_close,
        confirm=inst.confirm,
    )


def _close_quietly(close: tuple[Action, ...], device: object) -> None:
    for act in close:
        try:
            act.run(device)
        except Exception:  # releasing what no longer answers: nothing more to do
            continue


KIND = InstrumentKind(
    name="python-class",
    help="any importable instrument class (PyMeasure, QCoDeS, a lab's own) through an adapter",
    roles=(VoltageSourceRole, CurrentSourceRole, MeterRole),
    options=(
        KindOption("class", "str", "", None, "the driver class, 'module:Class'"),
        KindOption("kwargs", "table", "", None, "keyword arguments of the constructor"),
        KindOption("address_arg", "str", "", "",
                   "keyword that takes the address (default: the first positional argument)"),
        KindOption("channels", "strlist", "", ("",),
                   'attribute path of each channel ("": the instrument itself)'),
        KindOption("channel_objects", "bool", "", True,
                   "channels are attributes of the instrument (false: names for {channel})"),
        KindOption("identity", "str", "", None, "reading that identifies the instrument"),
        KindOption("setup", "strlist", "", None,
                   "actions run once on the instrument after it is opened"),
        KindOption("set_voltage", "strlist", "", None, "actions setting a channel's voltage"),
        KindOption("set_current", "strlist", "", None, "actions setting a channel's current"),
        KindOption("select", "strlist", "", None,
                   "actions on a channel before each read_voltage (e.g. close its scan channel)"),
        KindOption("read_voltage", "str", "", None, "reading of a channel's voltage, V"),
        KindOption("safe_state", "strlist", "", None, "actions putting a channel at 0 and off"),
        KindOption("output_state", "str", "", None, "reading of a channel's output state"),
        KindOption("output_on", "str", "", None, "the output_state value meaning on"),
        KindOption("confirm", "strlist", "", None,
                   "actions answered only after earlier writes (a query)"),
        KindOption("close", "strlist", "", None, "actions releasing the connection"),
        KindOption("v_max_v", "number", "V", math.inf, "largest |voltage| sent"),
        KindOption("i_max_a", "number", "A", math.inf, "largest |current| sent"),
    ),
    open=_open,
)
"""The ``python-class`` instrument kind (entry point ``hwloop.instruments``)."""


def instrument_kind() -> InstrumentKind:
    """Entry point of the ``python-class`` kind (group ``hwloop.instruments``)."""
    return KIND



# --------------------------------------------------------------------------- crosspoints


class AdaptedMatrix(AdaptedInstrument):
    """A switch matrix driven through declared actions (a ``RouteMatrix``).

    Its channels are the crosspoint names (``{channel}`` in the actions); every
    action runs on the instance. ``closed_crosspoints`` reads the closed ones back
    as one string, names separated by ``;`` or ``,`` (``closed_none``: none closed).

    Args:
        name: the instrument's name (messages).
        device: the instance of the lab's class.
        channels: the crosspoint names, one per board crosspoint.
        actions: parsed actions by option name.
        closed_none: the ``closed_crosspoints`` reading that means none is closed.
    """

    def __init__(self, name: str, device: object, channels: Sequence[str],
                 actions: Mapping[str, tuple[Action, ...]], *, closed_none: str = "") -> None:
        super().__init__(name, device, channels, actions, channel_objects=False)
        self._index = {c: i for i, c in enumerate(self._paths)}
        self._none = closed_none.strip()

    def check_spec(self, spec: str) -> str:
        """Return ``spec`` if it is one of the declared crosspoints."""
        if spec not in self._index:
            raise ConfigError(f"{self.name}: {spec!r} is not in options.channels; "
                              "declare every crosspoint the wiring uses")
        return spec

    def closed_channels(self) -> tuple[str, ...]:
        """The ``closed_crosspoints`` reading as crosspoint names, sorted."""
        text = str(self._run("closed_crosspoints", self.device)).strip()
        if not text or text == self._none:
            return ()
        return tuple(sorted(p.strip() for p in text.replace(",", ";").split(";") if p.strip()))

    def _each(self, key: str, specs: Sequence[str]) -> None:
        for spec in specs:
            self._run(key, self.device, channel=self._index[self.check_spec(spec)])

    def close_channels(self, specs: Sequence[str]) -> None:
        """The ``close_crosspoint`` actions on each crosspoint."""
        self._each("close_crosspoint", specs)

    def open_channels(self, specs: Sequence[str]) -> None:
        """The ``open_crosspoint`` actions on each crosspoint."""
        self._each("open_crosspoint", specs)

    def safe_state(self) -> None:
        """The ``safe_state`` actions once (every relay open), then read back.

        Raises:
            InstrumentStateError: a crosspoint still reads closed (stuck relay).
        """
        self._run("safe_state", self.device)
        confirm_all_open(self, "the safe_state actions")

    def is_energised(self) -> bool:
        """True when any crosspoint reads closed."""
        return bool(self.closed_channels())


class AdaptedPulser(AdaptedInstrument):
    """A source-measure unit that pulses through a matrix, by declared actions (a ``PulsingSmu``).

    One channel (``{channel}``); ``pulse`` actions get the amplitude as ``value`` /
    ``{value}`` (V), ``{width}`` (s) and ``{count}``, and the last one reads the number
    of pulses applied; ``read_current`` actions get the read voltage as ``value`` and the
    last one reads the current, A. Amplitudes and read voltages beyond ``v_max_v`` are
    refused before anything is sent.
    """

    def _level(self, v: float, what: str) -> float:
        x = float(v)
        if not math.isfinite(x) or abs(x) > self.v_max_v:
            raise LimitError(f"{self.name}: {what} {x:.6g} V exceeds the adapter's limit "
                             f"{self.v_max_v:.6g} V; nothing was sent")
        return x

    def _number(self, key: str, raw: object) -> float:
        try:
            return float(str(raw))
        except ValueError:
            raise HwloopError(f"{self.name}: {key} gave {raw!r}, not a number; fix "
                              f"options.smu_{key}") from None

    def pulse_voltage(self, amplitude_v: float, width_s: float, count: int) -> int:
        """Run the ``pulse`` actions; returns the pulses applied (0..count)."""
        a = self._level(amplitude_v, "pulse amplitude")
        n = int(count)
        done = self._number("pulse", self._run(
            "pulse", self._targets[0], a, 0, {"width": float(width_s), "count": n}))
        if not done.is_integer() or not 0 <= done <= n:
            raise HwloopError(f"{self.name}: pulse reports {done:g} pulses applied of {n}; "
                              "fix options.smu_pulse (its last action reads the count)")
        return int(done)

    def measure_current_at(self, v_read: float) -> float:
        """Run the ``read_current`` actions at ``v_read`` V; the current, A (NaN on overflow)."""
        v = self._level(v_read, "read voltage")
        i = self._number("read_current", self._run("read_current", self._targets[0], v, 0))
        return i if math.isfinite(i) and abs(i) < _OVERFLOW else math.nan

    def is_energised(self) -> bool:
        """True when ``output_state`` reads ``output_on`` (no such reading: True)."""
        if not self.has("output_state") or self._output_on is _NOTHING:
            return True
        return _same(self._run("output_state", self._targets[0], channel=0), self._output_on)


_MATRIX_KEYS = ("identity", "setup", "close_crosspoint", "open_crosspoint",
                "closed_crosspoints", "safe_state", "confirm", "close")
_PULSER_KEYS = ("identity", "setup", "pulse", "read_current", "safe_state", "output_state",
                "confirm", "close")


def _open_crosspoints(ctx: OpenContext) -> OpenedInstrument:
    lim = ctx.limits
    where = f"[instruments.{ctx.name}.options]"
    missing = [k for k in ("channels", "close_crosspoint", "open_crosspoint",
                           "closed_crosspoints", "smu_pulse", "smu_read_current")
               if not ctx.option(k)]
    if missing:
        raise ConfigError(f"{where} has no {', '.join(missing)}; declare them (see "
                          "'hwloop instruments python-class+smu')")
    names = tuple(str(c) for c in ctx.option("channels"))
    matrix, m_ident, m_close = _build(
        ctx, "", ctx.address, _MATRIX_KEYS,
        lambda device, actions: AdaptedMatrix(f"{ctx.label} matrix", device, names, actions,
                                              closed_none=str(ctx.option("closed_none"))),
    )
    on = ctx.option("smu_output_on")
    try:
        pulser, p_ident, p_close = _build(
            ctx, "smu_", ctx.extra_address("smu_resource"), _PULSER_KEYS,
            lambda device, actions: AdaptedPulser(
                f"{ctx.label} SMU", device, (str(ctx.option("smu_channel")),), actions,
                v_max_v=float(ctx.option("smu_v_max_v")),
                output_on=_NOTHING if on is None else on, channel_objects=False),
        )
    except BaseException:
        m_close()
        raise

    def hard_close() -> None:
        try:
            m_close()
        finally:
            p_close()

    w_max, n_max = ctx.option("pulse_width_max_s"), ctx.option("max_pulses")
    try:
        cross = SwitchedCrosspoints(
            matrix,
            pulser,
            [[c] for c in names],
            pulse_amplitude_max_v=lim.pulse_amplitude_max_v,
            pulse_width_range_s=(float(ctx.option("pulse_width_min_s")),
                                 float(lim.pulse_width_max_s if w_max is None else w_max)),
            max_pulses=int(lim.max_pulses_per_call if n_max is None else n_max),
            v_read_max_v=ctx.v_read_max_v,
        )
    except BaseException:
        hard_close()
        raise

    def confirm() -> None:
        matrix.confirm()
        pulser.confirm()

    return OpenedInstrument(
        identity=f"{m_ident} | {p_ident}",
        device=MatrixWithSmu(matrix, pulser),
        roles=RoleDrivers(crosspoints=cross),
        channel_counts={"crosspoints": len(names)},
        hard_close=hard_close,
        confirm=confirm,
    )


def _instance_options(prefix: str, what: str) -> tuple[KindOption, ...]:
    return (
        KindOption(prefix + "class", "str", "", None, f"the {what}'s driver class, 'module:Class'"),
        KindOption(prefix + "kwargs", "table", "", None,
                   f"keyword arguments of the {what}'s class"),
        KindOption(prefix + "address_arg", "str", "", "",
                   "keyword that takes the address (default: the first positional argument)"),
        KindOption(prefix + "identity", "str", "", None, f"reading that identifies the {what}"),
        KindOption(prefix + "setup", "strlist", "", None, f"actions run once on the {what}"),
        KindOption(prefix + "safe_state", "strlist", "", None, f"actions putting the {what} safe"),
        KindOption(prefix + "confirm", "strlist", "", None,
                   "actions answered only after earlier writes (a query)"),
        KindOption(prefix + "close", "strlist", "", None, "actions releasing the connection"),
    )


CROSSPOINT_KIND = InstrumentKind(
    name="python-class+smu",
    help="crosspoints through a switch matrix and a pulsing SMU, both lab classes with adapters",
    roles=(CrosspointRole,),
    options=(
        *_instance_options("", "matrix"),
        KindOption("channels", "strlist", "", None,
                   "crosspoint names ({channel}), one per board crosspoint, in order"),
        KindOption("close_crosspoint", "strlist", "", None, "actions closing crosspoint {channel}"),
        KindOption("open_crosspoint", "strlist", "", None, "actions opening crosspoint {channel}"),
        KindOption("closed_crosspoints", "str", "", None,
                   "reading of the closed crosspoints, names separated by ';' or ','"),
        KindOption("closed_none", "str", "", "", "the closed_crosspoints reading meaning none"),
        *_instance_options("smu_", "pulsing SMU"),
        KindOption("smu_channel", "str", "", "", "the SMU channel wired to the matrix ({channel})"),
        KindOption("smu_pulse", "strlist", "", None,
                   "actions applying {count} pulses of value V, {width} s; the last reads "
                   "the number applied"),
        KindOption("smu_read_current", "strlist", "", None,
                   "actions sourcing value V and reading the current, A (the last one)"),
        KindOption("smu_output_state", "str", "", None, "reading of the SMU's output state"),
        KindOption("smu_output_on", "str", "", None, "the smu_output_state value meaning on"),
        KindOption("smu_v_max_v", "number", "V", math.inf, "largest |pulse or read voltage| sent"),
        KindOption("pulse_width_min_s", "number", "s", 1e-5, "shortest pulse accepted"),
        KindOption("pulse_width_max_s", "number", "s", None,
                   "longest pulse accepted (default: [safety] pulse_width_max_s)"),
        KindOption("max_pulses", "int", "", None,
                   "most pulses per train (default: [safety] max_pulses_per_step)"),
    ),
    open=_open_crosspoints,
    extra_address_keys=("smu_resource",),
)
"""The ``python-class+smu`` instrument kind (entry point ``hwloop.instruments``)."""


def crosspoint_kind() -> InstrumentKind:
    """Entry point of the ``python-class+smu`` kind (group ``hwloop.instruments``)."""
    return CROSSPOINT_KIND
