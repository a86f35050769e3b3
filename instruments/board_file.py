"""Board files: which instrument plays which role, and how the network is wired to them.

This module's one concern is reading and validating board files (nothing is opened).

A board file is TOML (``examples/boards/*.toml``), read with :func:`load_board_file`
into frozen dataclasses. Validation is strict: an unknown key, a wrong type, a
missing role or a wiring that does not fit the network raises
:class:`hwloop.errors.ConfigError` with one line naming the key and the fix.

Sections (units: SI, with the unit in each key's suffix)::

    [board]            name, settle_time_s, ramp_steps, ramp_step_time_s,
                       log_exchanges ("faults" | "all" | "off"), exchange_history
    [network]          arch ("1568-16-10"), g_min_s, g_max_s, g_scale_s (optional)
    [instruments.NAME] kind, its address (``url`` or ``resource``, as the kind says) and
                       any further address the kind needs, [instruments.NAME.options]
                       (the kind's options: ``hwloop instruments KIND`` lists them)
    [roles]            inputs, nudges, biases (optional), meter, crosspoints = "NAME"
    [wiring]           the same keys: a list (one channel per node / edge, in board
                       order) or { first = N } (consecutive channels from N)
    [calibration.ROLE] gain, offset_v / offset_a, [calibration.ROLE.channel.N] overrides
    [pulse]            amplitude_v, width_s, step_s, read_v
    [safety]           v_input_max_v, i_nudge_max_a, i_bias_max_a, compliance_a,
                       pulse_amplitude_max_v,
                       pulse_width_max_s, v_read_max_v, max_pulses_per_step,
                       max_pulses_per_run, reading_band_v, max_compliance_trips,
                       beta_max_s, v_target_max_v

Node order (``[wiring]``): ``inputs`` has one channel per input node, ``nudges``
one per output node, ``biases`` one per hidden-then-output node, ``meter`` one
per free node (hidden, then outputs), ``crosspoints`` one per edge (layer after
layer, row-major): the order of :func:`hwloop.layered.describe_layered`, which is
also the emulator's, so a board and its emulator twin describe the same network.

Instrument kinds come from the registry of :mod:`instruments.kinds` (entry-point
group ``hwloop.instruments``): a kind is known when a package that declares it is
installed, and its options and the roles it can play are checked here.

Calibration: a meter channel reads ``v_node = gain * v_raw + offset_v``; a source
channel outputs ``gain * setpoint + offset`` (so the setpoint sent is
``(level - offset) / gain``).

Addresses: any string may contain ``${NAME}``, replaced by the environment
variable ``NAME`` when the file is read (an unset variable is an error naming it).
The example files use ``${HWLOOP_BOARD_URL}`` and ``${HWLOOP_SMU_RESOURCE}`` ...,
which ``hwloop virtual-board`` prints.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import os
import re
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hwloop.device import SafetyLimits
from hwloop.errors import ConfigError
from hwloop.layered import LayerSizes, default_g_scale_s, parse_arch
from instruments.kinds import InstrumentKind, installed_kind_names, installed_kinds, load_kind
from instruments.roles import FloatArray, IntArray

__all__ = [
    "BoardFile",
    "BoardSettings",
    "Calibration",
    "InstrumentSpec",
    "NetworkSpec",
    "PulseSpec",
    "Roles",
    "SafetySpec",
    "Wiring",
    "load_board_file",
    "parse_board_file",
]

_REQUIRED_ROLES = ("inputs", "nudges", "meter", "crosspoints")
_ROLES = ("inputs", "nudges", "biases", "meter", "crosspoints")
_ADDRESS_KEYS = ("url", "resource")

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class BoardSettings:
    """The ``[board]`` section.

    Attributes:
        name: board name (in the description and the session log).
        settle_time_s: wait after the sources of an example are set, s (>= 0).
        ramp_steps: steps of the ramp-down of outputs found energised on connect (>= 1).
        ramp_step_time_s: wait per ramp step, s (>= 0).
        log_exchanges: wire-level exchanges in the session log: ``"faults"`` (the last
            ``exchange_history`` ones before each retry, warning or fault), ``"all"``
            (every exchange, slow) or ``"off"``.
        exchange_history: exchanges kept for ``"faults"`` (>= 1).
    """

    name: str
    settle_time_s: float = 0.0
    ramp_steps: int = 5
    ramp_step_time_s: float = 0.01
    log_exchanges: Literal["faults", "all", "off"] = "faults"
    exchange_history: int = 8


@dataclass(frozen=True)
class NetworkSpec(LayerSizes):
    """The ``[network]`` section: a layered DRN-style network.

    Attributes:
        arch: layer sizes, ``"1568-16-10"``.
        sizes: the parsed sizes.
        g_min_s: lowest programmable conductance, S.
        g_max_s: highest programmable conductance, S.
        g_scale_s: conductance standing for 1 simulation unit, S (default: the
            emulator's rule, :func:`hwloop.layered.default_g_scale_s`).
    """

    arch: str
    sizes: tuple[int, ...]
    g_min_s: float
    g_max_s: float
    g_scale_s: float

    @property
    def n_edges(self) -> int:
        """Crosspoints (edges) of the dense layer blocks."""
        return sum(a * b for a, b in zip(self.sizes[:-1], self.sizes[1:], strict=True))


@dataclass(frozen=True)
class InstrumentSpec:
    """One ``[instruments.NAME]`` table.

    Attributes:
        name: the table's name (what ``[roles]`` refers to).
        kind: an installed instrument kind (:mod:`instruments.kinds`).
        address: the kind's address (pyserial URL or VISA resource), after ``${VAR}``
            substitution.
        options: the options set in the file (checked against the kind's declared ones;
            absent ones take the kind's defaults when it is opened).
        extra_addresses: further addresses the kind requires, by key.
    """

    name: str
    kind: str
    address: str
    options: Mapping[str, Any] = field(default_factory=lambda: types.MappingProxyType({}))
    extra_addresses: Mapping[str, str] = field(
        default_factory=lambda: types.MappingProxyType({})
    )

    @property
    def smu_address(self) -> str | None:
        """The ``smu_resource`` address, when the kind has one."""
        return self.extra_addresses.get("smu_resource")


@dataclass(frozen=True)
class Roles:
    """The ``[roles]`` section: instrument name per role (``biases`` may be absent)."""

    inputs: str
    nudges: str
    meter: str
    crosspoints: str
    biases: str | None = None


@dataclass(frozen=True, eq=False)
class Wiring:
    """The ``[wiring]`` section, resolved: one instrument channel per node or edge.

    Attributes:
        inputs: ``(n_inputs,)`` source channel of each input node.
        nudges: ``(n_outputs,)`` current-source channel of each output node.
        biases: ``(n_free,)`` bias channel of each hidden and output node (empty
            without a bias role).
        meter: ``(n_free,)`` meter channel of each hidden and output node.
        crosspoints: ``(n_edges,)`` crosspoint of each edge.
    """

    inputs: IntArray
    nudges: IntArray
    biases: IntArray
    meter: IntArray
    crosspoints: IntArray


@dataclass(frozen=True, eq=False)
class Calibration:
    """Per-node calibration, resolved from the per-channel ``[calibration]`` tables.

    Attributes:
        meter_gain: ``(n_free,)`` reading gain of each free node's channel.
        meter_offset_v: ``(n_free,)`` reading offset, V.
        input_gain: ``(n_inputs,)`` output gain of each input source.
        input_offset_v: ``(n_inputs,)`` output offset, V.
        nudge_gain: ``(n_outputs,)`` output gain of each nudge source.
        nudge_offset_a: ``(n_outputs,)`` output offset, A.
        bias_gain: ``(n_bias,)`` output gain of each bias source.
        bias_offset_a: ``(n_bias,)`` output offset, A.
    """

    meter_gain: FloatArray
    meter_offset_v: FloatArray
    input_gain: FloatArray
    input_offset_v: FloatArray
    nudge_gain: FloatArray
    nudge_offset_a: FloatArray
    bias_gain: FloatArray
    bias_offset_a: FloatArray


@dataclass(frozen=True)
class PulseSpec:
    """The ``[pulse]`` section.

    Attributes:
        amplitude_v: programming pulse amplitude magnitude, V (the sign sets polarity).
        width_s: pulse width, s.
        step_s: nominal conductance change per pulse at mid-range, S (> 0).
        read_v: voltage of a conductance read, V (nonzero).
    """

    amplitude_v: float
    width_s: float
    step_s: float
    read_v: float = 0.1


@dataclass(frozen=True)
class SafetySpec:
    """The ``[safety]`` section.

    Attributes:
        limits: the Device safety limits (``max_pulses_per_step`` is
            ``limits.max_pulses_per_call``).
        v_read_max_v: largest |conductance read voltage|, V.
        i_bias_max_a: largest |bias current|, A (>= ``limits.i_nudge_max_a``, which the
            trainer checks bias updates against before it programs anything).
        reading_band_v: plausible ``(low, high)`` node readings, V; a reading outside
            (or not finite) aborts the run.
        max_compliance_trips: compliance trips tolerated in one run; the next one aborts.
    """

    limits: SafetyLimits
    v_read_max_v: float = 0.5
    i_bias_max_a: float = 1.0e-3
    reading_band_v: tuple[float, float] = (-math.inf, math.inf)
    max_compliance_trips: int = 3


@dataclass(frozen=True, eq=False)
class BoardFile:
    """A validated board file.

    Attributes:
        path: where it was read from (``"<string>"`` for text).
        sha256: hash of its text.
        board: ``[board]``.
        network: ``[network]``.
        instruments: ``[instruments.*]`` by name.
        roles: ``[roles]``.
        wiring: ``[wiring]``, resolved per node.
        calibration: ``[calibration]``, resolved per node.
        pulse: ``[pulse]``.
        safety: ``[safety]``.
        env_used: environment variables substituted, name -> value.
    """

    path: str
    sha256: str
    board: BoardSettings
    network: NetworkSpec
    instruments: Mapping[str, InstrumentSpec]
    roles: Roles
    wiring: Wiring
    calibration: Calibration
    pulse: PulseSpec
    safety: SafetySpec
    env_used: Mapping[str, str]

    def role_instrument(self, role: str) -> InstrumentSpec | None:
        """The instrument playing ``role`` (None for an absent optional role)."""
        name = getattr(self.roles, role)
        return None if name is None else self.instruments[name]


# --------------------------------------------------------------------------- reading


class _Reader:
    """Strict access to one TOML table, with one-line errors naming the key."""

    def __init__(self, source: str, where: str, table: Any) -> None:
        self.source = source
        self.where = where
        if not isinstance(table, dict):
            self.fail(f"{where} must be a table, got {table!r}", "write it as a [table]")
        self.table: dict[str, Any] = table
        self.used: set[str] = set()

    def fail(self, what: str, fix: str) -> ConfigError:
        raise ConfigError(f"board file {self.source}: {what}; {fix}")

    def has(self, key: str) -> bool:
        return key in self.table

    def raw(self, key: str) -> Any:
        self.used.add(key)
        return self.table[key]

    def get(self, key: str, kind: str, default: Any = ..., unit: str = "") -> Any:
        """``kind``: number, posnumber, nonneg, int, posint, str, bool, table."""
        if key not in self.table:
            if default is ...:
                self.fail(
                    f"{self.where} has no {key!r}",
                    f"add {key} = <{_describe_kind(kind, unit)}>",
                )
            return default
        self.used.add(key)
        return _check_value(self, f"{self.where} {key}", self.table[key], kind, unit)

    def sub(self, key: str, required: bool = True) -> _Reader | None:
        if key not in self.table:
            if required:
                self.fail(f"{self.where} has no [{key}] table", f"add a [{key}] section")
            return None
        self.used.add(key)
        name = f"[{key}]" if self.where == "the file" else f"{self.where[:-1]}.{key}]"
        return _Reader(self.source, name, self.table[key])

    def done(self, known: list[str] | None = None) -> None:
        extra = [k for k in self.table if k not in self.used]
        if not extra:
            return
        key = extra[0]
        names = sorted(known if known is not None else self.used)
        close = difflib.get_close_matches(key, names, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "remove it"
        self.fail(
            f"{self.where} has an unknown key {key!r}",
            f"{hint} (known: {', '.join(names) or 'none'})",
        )


def _describe_kind(kind: str, unit: str) -> str:
    text = {
        "number": "a number",
        "posnumber": "a number > 0",
        "nonneg": "a number >= 0",
        "int": "an integer",
        "posint": "an integer >= 1",
        "str": "a string",
        "bool": "true or false",
        "strlist": "a list of strings",
        "intlist": "a list of integers",
        "routes": '"sequential" or a list of lists of crosspoint names',
        "table": "a table of names to strings, numbers or booleans",
    }.get(kind, kind)
    return f"{text} ({unit})" if unit else text


def _check_value(r: _Reader, where: str, v: Any, kind: str, unit: str = "") -> Any:
    def bad() -> ConfigError:
        return r.fail(f"{where} = {v!r} must be {_describe_kind(kind, unit)}", "fix the value")

    if kind in ("number", "posnumber", "nonneg"):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise bad()
        x = float(v)
        if (kind == "posnumber" and not x > 0) or (kind == "nonneg" and x < 0):
            raise bad()
        return x
    if kind in ("int", "posint"):
        if isinstance(v, bool) or not isinstance(v, int) or (kind == "posint" and v < 1):
            raise bad()
        return int(v)
    if kind == "str":
        if not isinstance(v, str) or not v:
            raise bad()
        return v
    if kind == "bool":
        if not isinstance(v, bool):
            raise bad()
        return v
    if kind == "strlist":
        if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
            raise bad()
        return tuple(v)
    if kind == "intlist":
        if not isinstance(v, list) or not v or not all(
            isinstance(x, int) and not isinstance(x, bool) for x in v
        ):
            raise bad()
        return tuple(int(x) for x in v)
    if kind == "routes":
        if v == "sequential":
            return v
        if not isinstance(v, list) or not all(
            isinstance(x, list) and x and all(isinstance(s, str) for s in x) for x in v
        ):
            raise bad()
        return tuple(tuple(x) for x in v)
    if kind == "table":
        if not isinstance(v, dict) or not all(
            isinstance(k, str) and isinstance(x, str | int | float | bool) for k, x in v.items()
        ):
            raise bad()
        return types.MappingProxyType(dict(v))
    raise AssertionError(kind)  # pragma: no cover


def _substitute(value: Any, where: str, source: str, env: Mapping[str, str],
                used: dict[str, str]) -> Any:
    """Replace ``${NAME}`` in every string by the environment variable ``NAME``."""
    if isinstance(value, dict):
        return {k: _substitute(v, f"{where} {k}".strip(), source, env, used)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, where, source, env, used) for v in value]
    if not isinstance(value, str):
        return value

    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in env or not env[name]:
            raise ConfigError(
                f"board file {source}: {where} uses ${{{name}}}, which is not set; export "
                f"{name} (for virtual instruments: start 'hwloop virtual-board' and copy "
                "the line it prints)"
            )
        used[name] = env[name]
        return env[name]

    return _ENV.sub(repl, value)


def load_board_file(path: str | Path, env: Mapping[str, str] | None = None) -> BoardFile:
    """Read and validate a board file.

    Args:
        path: the TOML file.
        env: environment for ``${NAME}`` substitution (default: ``os.environ``).

    Raises:
        ConfigError: missing file, invalid TOML, or any validation error (one line).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"board file {p} not found; check the --board path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"board file {p} cannot be read ({exc}); check the file") from None
    return parse_board_file(text, source=str(p), env=env)


def parse_board_file(
    text: str, *, source: str = "<string>", env: Mapping[str, str] | None = None
) -> BoardFile:
    """Validate board-file ``text`` (see :func:`load_board_file`)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"board file {source} is not valid TOML: {exc}; fix the syntax") from None
    used_env: dict[str, str] = {}
    data = _substitute(raw, "", source, os.environ if env is None else env, used_env)
    top = _Reader(source, "the file", data)
    board = _read_board(top, source)
    network = _read_network(top)
    instruments = _read_instruments(top)
    roles = _read_roles(top, instruments)
    wiring = _read_wiring(top, network, roles, instruments)
    calibration = _read_calibration(top, network, roles, wiring)
    pulse = _read_pulse(top)
    safety = _read_safety(top)
    top.done(["board", "network", "instruments", "roles", "wiring", "calibration", "pulse",
              "safety"])
    _cross_checks(top, pulse, safety)
    return BoardFile(
        path=source,
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        board=board,
        network=network,
        instruments=types.MappingProxyType(instruments),
        roles=roles,
        wiring=wiring,
        calibration=calibration,
        pulse=pulse,
        safety=safety,
        env_used=types.MappingProxyType(used_env),
    )


def _read_board(top: _Reader, source: str) -> BoardSettings:
    r = top.sub("board", required=False)
    if r is None:
        return BoardSettings(name=Path(source).stem)
    log = r.get("log_exchanges", "str", "faults")
    if log not in ("faults", "all", "off"):
        r.fail(f"[board] log_exchanges = {log!r} is not known", 'use "faults", "all" or "off"')
    out = BoardSettings(
        name=r.get("name", "str", Path(source).stem),
        settle_time_s=r.get("settle_time_s", "nonneg", 0.0, "s"),
        ramp_steps=r.get("ramp_steps", "posint", 5),
        ramp_step_time_s=r.get("ramp_step_time_s", "nonneg", 0.01, "s"),
        log_exchanges=log,
        exchange_history=r.get("exchange_history", "posint", 8),
    )
    r.done(["name", "settle_time_s", "ramp_steps", "ramp_step_time_s", "log_exchanges",
            "exchange_history"])
    return out


def _read_network(top: _Reader) -> NetworkSpec:
    r = top.sub("network")
    assert r is not None
    arch = r.get("arch", "str")
    try:
        sizes = parse_arch(arch)
    except ConfigError as exc:
        r.fail(f"[network] arch: {exc}", 'write it as "1568-16-10"')
    g_min = r.get("g_min_s", "nonneg", unit="S")
    g_max = r.get("g_max_s", "posnumber", unit="S")
    if not g_max > g_min:
        r.fail(f"[network] g_max_s = {g_max!r} must exceed g_min_s = {g_min!r}", "fix the range")
    g_scale = r.get("g_scale_s", "posnumber", None, "S")
    if g_scale is None:
        g_scale = default_g_scale_s(sizes, g_min, g_max)
    r.done(["arch", "g_min_s", "g_max_s", "g_scale_s"])
    return NetworkSpec(arch="-".join(map(str, sizes)), sizes=sizes, g_min_s=g_min,
                       g_max_s=g_max, g_scale_s=g_scale)


def _read_instruments(top: _Reader) -> dict[str, InstrumentSpec]:
    r = top.sub("instruments")
    assert r is not None
    if not r.table:
        r.fail("[instruments] is empty", 'add an [instruments.NAME] table with kind = "..."')
    out: dict[str, InstrumentSpec] = {}
    for name in list(r.table):
        t = r.sub(name)
        assert t is not None
        kind_name = t.get("kind", "str")
        installed = installed_kind_names()
        if kind_name not in installed:
            t.fail(f"{t.where} kind = {kind_name!r} is not known",
                   f"use one of {', '.join(installed)} (the installed instrument kinds)")
        kind = load_kind(kind_name)
        addr_key = kind.address_key
        for other in _ADDRESS_KEYS:
            if other != addr_key and t.has(other) and not t.has(addr_key):
                t.fail(f"{t.where} ({kind_name}) has {other!r}", f"name the address {addr_key!r}")
        address = t.get(addr_key, "str")
        extra = {k: t.get(k, "str") for k in kind.extra_address_keys}
        options = _read_options(t, kind)
        t.done(["kind", addr_key, "options", *kind.extra_address_keys])
        out[name] = InstrumentSpec(name=name, kind=kind_name, address=address,
                                   options=types.MappingProxyType(options),
                                   extra_addresses=types.MappingProxyType(extra))
    return out


def _read_options(t: _Reader, kind: InstrumentKind) -> dict[str, Any]:
    """The ``options`` table of an instrument, checked against its kind's declaration."""
    opts_r = t.sub("options", required=False)
    options: dict[str, Any] = {}
    if opts_r is None:
        return options
    known = {o.name: o for o in kind.options}
    for key in list(opts_r.table):
        if key in known:
            options[key] = opts_r.get(key, known[key].type, unit=known[key].unit)
    opts_r.done(sorted(known))
    for a, b in kind.exclusive_options:
        if a in options and b in options:
            opts_r.fail(f"{opts_r.where} has both {a!r} and {b!r}", "keep one of them")
    return options


def _read_roles(top: _Reader, instruments: Mapping[str, InstrumentSpec]) -> Roles:
    r = top.sub("roles")
    assert r is not None
    names: dict[str, str | None] = {}
    for role in _ROLES:
        if role not in r.table:
            if role in _REQUIRED_ROLES:
                r.fail(f"[roles] has no {role!r}",
                       f'add {role} = "<instrument>" (one of: {", ".join(instruments)})')
            names[role] = None
            continue
        name = r.get(role, "str")
        if name not in instruments:
            r.fail(f"[roles] {role} = {name!r} names no instrument",
                   f"use one of {', '.join(instruments)} or add [instruments.{name}]")
        kind = instruments[name].kind
        if not load_kind(kind).plays(role):
            able = [n for n, k in installed_kinds().items() if k.plays(role)]
            r.fail(f"[roles] {role} = {name!r} is a {kind}, which cannot play {role}",
                   f"use an instrument of kind {' or '.join(able)}")
        names[role] = name
    r.done(list(_ROLES))
    inputs, nudges, meter, cross = (names[k] for k in _REQUIRED_ROLES)
    assert inputs and nudges and meter and cross
    return Roles(inputs=inputs, nudges=nudges, meter=meter, crosspoints=cross,
                 biases=names["biases"])


def _role_sizes(network: NetworkSpec) -> dict[str, int]:
    return {
        "inputs": network.n_inputs,
        "nudges": network.n_outputs,
        "biases": network.n_free,
        "meter": network.n_free,
        "crosspoints": network.n_edges,
    }


_ROLE_WHAT = {
    "inputs": "input node",
    "nudges": "output node",
    "biases": "hidden and output node",
    "meter": "hidden and output node",
    "crosspoints": "edge",
}


def _read_wiring(
    top: _Reader, network: NetworkSpec, roles: Roles, instruments: Mapping[str, InstrumentSpec]
) -> Wiring:
    r = top.sub("wiring")
    assert r is not None
    sizes = _role_sizes(network)
    out: dict[str, IntArray] = {}
    for role in _ROLES:
        inst = getattr(roles, role)
        if inst is None:
            if r.has(role):
                r.fail(f"[wiring] has {role!r} but [roles] has no {role}",
                       f"add {role} to [roles] or remove the wiring")
            out[role] = np.zeros(0, dtype=np.int64)
            continue
        n = sizes[role]
        if not r.has(role):
            r.fail(f"[wiring] has no {role!r}",
                   f"add {role} = {{ first = 0 }} or a list of {n} channels")
        v = r.raw(role)
        where = f"[wiring] {role}"
        if isinstance(v, dict):
            if set(v) != {"first"}:
                r.fail(f"{where} table must be {{ first = N }}, got keys {sorted(v)}",
                       "write { first = 0 } or a list")
            first = _check_value(r, f"{where} first", v["first"], "int")
            if first < 0:
                r.fail(f"{where} first = {first} must be >= 0", "fix the value")
            ch = np.arange(first, first + n, dtype=np.int64)
        else:
            ch = np.asarray(_check_value(r, where, v, "intlist"), dtype=np.int64)
            if ch.size != n:
                r.fail(f"{where} lists {ch.size} channels but the network has {n} "
                       f"{_ROLE_WHAT[role]}s ({network.arch})",
                       f"give one channel per {_ROLE_WHAT[role]} in board order")
            if ch.min() < 0:
                r.fail(f"{where} has a negative channel {int(ch.min())}", "fix the value")
            if np.unique(ch).size != ch.size:
                vals, counts = np.unique(ch, return_counts=True)
                dup = int(vals[counts > 1][0])
                r.fail(f"{where} uses channel {dup} twice", "give each node its own channel")
        out[role] = ch
    r.done(list(_ROLES))
    # sources of one SMU share its channels: inputs, nudges and biases must not overlap
    shared: dict[str, list[tuple[str, IntArray]]] = {}
    for role in ("inputs", "nudges", "biases"):
        name = getattr(roles, role)
        if name is not None and load_kind(instruments[name].kind).shared_source_channels:
            shared.setdefault(name, []).append((role, out[role]))
    for name, parts in shared.items():
        for i, (ra, a) in enumerate(parts):
            for rb, b in parts[i + 1 :]:
                both = np.intersect1d(a, b)
                if both.size:
                    r.fail(f"[wiring] {ra} and {rb} both use channel {int(both[0])} of {name!r}",
                           "give every source its own channel")
    return Wiring(**out)


def _read_calibration(
    top: _Reader, network: NetworkSpec, roles: Roles, wiring: Wiring
) -> Calibration:
    r = top.sub("calibration", required=False)
    units = {"meter": "offset_v", "inputs": "offset_v", "nudges": "offset_a", "biases": "offset_a"}
    res: dict[str, tuple[FloatArray, FloatArray]] = {}
    for role, off_key in units.items():
        ch: IntArray = getattr(wiring, role)
        gain = np.ones(ch.size)
        offset = np.zeros(ch.size)
        t = None if r is None else r.sub(role, required=False)
        if t is not None:
            if getattr(roles, role) is None:
                t.fail(f"{t.where} calibrates a role that [roles] does not have",
                       "remove it or add the role")
            unit = off_key.rsplit("_", 1)[1].upper()
            g0 = t.get("gain", "number", 1.0)
            o0 = t.get(off_key, "number", 0.0, unit)
            gain[:] = g0
            offset[:] = o0
            per = t.sub("channel", required=False)
            if per is not None:
                for key in list(per.table):
                    if not key.isdigit() or int(key) not in set(ch.tolist()):
                        per.fail(f"{per.where} {key!r} is not a channel wired to {role}",
                                 f"use one of the channels in [wiring] {role}")
                    c = per.sub(key)
                    assert c is not None
                    pos = int(np.flatnonzero(ch == int(key))[0])
                    gain[pos] = c.get("gain", "number", g0)
                    offset[pos] = c.get(off_key, "number", o0, unit)
                    c.done(["gain", off_key])
                per.done()
            t.done(["gain", off_key, "channel"])
            if np.any(gain == 0):
                t.fail(f"{t.where} gain = 0", "a gain must be nonzero (1.0 for none)")
        res[role] = (gain, offset)
    if r is not None:
        r.done(list(units))
    return Calibration(
        meter_gain=res["meter"][0], meter_offset_v=res["meter"][1],
        input_gain=res["inputs"][0], input_offset_v=res["inputs"][1],
        nudge_gain=res["nudges"][0], nudge_offset_a=res["nudges"][1],
        bias_gain=res["biases"][0], bias_offset_a=res["biases"][1],
    )


def _read_pulse(top: _Reader) -> PulseSpec:
    r = top.sub("pulse")
    assert r is not None
    out = PulseSpec(
        amplitude_v=r.get("amplitude_v", "posnumber", unit="V"),
        width_s=r.get("width_s", "posnumber", unit="s"),
        step_s=r.get("step_s", "posnumber", unit="S"),
        read_v=r.get("read_v", "number", 0.1, "V"),
    )
    if out.read_v == 0:
        r.fail("[pulse] read_v = 0", "a conductance read needs a nonzero voltage, e.g. 0.1")
    r.done(["amplitude_v", "width_s", "step_s", "read_v"])
    return out


def _read_safety(top: _Reader) -> SafetySpec:
    r = top.sub("safety")
    assert r is not None
    d = SafetyLimits()
    band = (-math.inf, math.inf)
    if r.has("reading_band_v"):
        v = r.raw("reading_band_v")
        ok = (
            isinstance(v, list)
            and len(v) == 2
            and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
            and float(v[0]) < float(v[1])
        )
        if not ok:
            r.fail(f"[safety] reading_band_v = {v!r} must be [low, high] in V with low < high",
                   "e.g. reading_band_v = [-12.0, 12.0]")
        band = (float(v[0]), float(v[1]))
    try:
        limits = SafetyLimits(
            v_input_max_v=r.get("v_input_max_v", "posnumber", unit="V"),
            i_nudge_max_a=r.get("i_nudge_max_a", "posnumber", unit="A"),
            compliance_a=r.get("compliance_a", "posnumber", unit="A"),
            beta_max_s=r.get("beta_max_s", "posnumber", d.beta_max_s, "S"),
            v_target_max_v=r.get("v_target_max_v", "posnumber", d.v_target_max_v, "V"),
            pulse_amplitude_max_v=r.get("pulse_amplitude_max_v", "posnumber", unit="V"),
            pulse_width_max_s=r.get("pulse_width_max_s", "posnumber", unit="s"),
            max_pulses_per_call=r.get("max_pulses_per_step", "posint"),
            max_pulses_per_run=r.get("max_pulses_per_run", "posint", d.max_pulses_per_run),
        )
    except ConfigError as exc:
        if str(exc).startswith("board file"):
            raise
        r.fail(f"[safety] {exc}", "fix the value")
    i_bias = r.get("i_bias_max_a", "posnumber", limits.i_nudge_max_a, "A")
    if i_bias < limits.i_nudge_max_a:
        r.fail(f"[safety] i_bias_max_a = {i_bias:g} A is below i_nudge_max_a = "
               f"{limits.i_nudge_max_a:g} A (bias updates are checked against the latter "
               "before programming)", "raise i_bias_max_a or lower i_nudge_max_a")
    out = SafetySpec(
        limits=limits,
        i_bias_max_a=i_bias,
        v_read_max_v=r.get("v_read_max_v", "posnumber", 0.5, "V"),
        reading_band_v=band,
        max_compliance_trips=r.get("max_compliance_trips", "posint", 3),
    )
    r.done(["v_input_max_v", "i_nudge_max_a", "compliance_a", "beta_max_s", "v_target_max_v",
            "pulse_amplitude_max_v", "pulse_width_max_s", "max_pulses_per_step",
            "max_pulses_per_run", "v_read_max_v", "i_bias_max_a", "reading_band_v",
            "max_compliance_trips"])
    return out


def _cross_checks(top: _Reader, pulse: PulseSpec, safety: SafetySpec) -> None:
    lim = safety.limits
    if pulse.amplitude_v > lim.pulse_amplitude_max_v:
        top.fail(f"[pulse] amplitude_v = {pulse.amplitude_v:g} V exceeds [safety] "
                 f"pulse_amplitude_max_v = {lim.pulse_amplitude_max_v:g} V",
                 "lower the amplitude or raise the limit")
    if pulse.width_s > lim.pulse_width_max_s:
        top.fail(f"[pulse] width_s = {pulse.width_s:g} s exceeds [safety] pulse_width_max_s = "
                 f"{lim.pulse_width_max_s:g} s", "shorten the pulse or raise the limit")
    if abs(pulse.read_v) > safety.v_read_max_v:
        top.fail(f"[pulse] read_v = {pulse.read_v:g} V exceeds [safety] v_read_max_v = "
                 f"{safety.v_read_max_v:g} V", "lower the read voltage or raise the limit")
