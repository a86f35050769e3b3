"""A fast reader for the SPICE subset that ``hwloop op`` solves.

Supported input (case-insensitive, SPICE conventions):

* The **first line is the title** and is never parsed as an element.
* Elements, one per statement (``+`` at the start of a line continues the previous one):

  - ``Rname n1 n2 value``: linear resistor, ``value`` in ohm, must be > 0.
  - ``Dname anode cathode MODEL [area]``: junction diode, ``area`` > 0 scales ``IS``.
  - ``Vname n+ n- [DC] value``: independent DC voltage source, ``v(n+) - v(n-) = value`` (V).
  - ``Iname n+ n- [DC] value``: independent DC current source (A). As in SPICE the
    current flows from ``n+`` through the source to ``n-``: it is pulled out of ``n+``
    and pushed into ``n-``.
  - ``Cname n1 n2 value``: capacitor, an **open circuit** at DC (kept so that its nodes
    exist; a node reached only through capacitors is floating).
  - ``Lname n1 n2 value``: inductor, a **short circuit** at DC (a 0 V source).

* ``.model NAME D(IS=... N=...)``: diode model. Used parameters: ``IS`` (A, default
  1e-14), ``N`` (default 1), and for temperatures other than ``TNOM`` the SPICE
  temperature scaling of ``IS`` with ``EG`` (eV, default 1.11), ``XTI`` (default 3)
  and ``TNOM`` (degC, default 27). ``RS`` must be 0 and ``BV`` must be absent, since
  both change the DC curve and are not modelled. Parameters that only affect AC,
  transient or noise analysis (``CJO``/``CJ0``/``CJ``, ``VJ``/``PB``, ``M``/``MJ``,
  ``TT``, ``FC``, ``KF``, ``AF``, ``IBV``) are accepted and ignored; anything else
  is rejected.
* Comments: lines whose first non-blank character is ``*``; inline comments start
  at ``;`` or at a ``$`` followed by a blank or the end of the line.
* Values take SPICE scale suffixes ``f p n u m k meg g t mil`` (``m`` is milli,
  ``meg`` is mega) and any trailing unit letters are ignored: ``10kohm``, ``5uA``,
  ``2.2K``, ``1meg``, ``1e3``.
* Node ``0`` (alias ``gnd``) is ground.
* Skipped dot commands: ``.op .options/.option/.opt .title .end .print .probe .save
  .plot .width .nodeset .ic`` and whole ``.control`` ... ``.endc`` blocks. Text after
  ``.end`` is ignored.
* Rejected with a clear error: ``.temp`` and ``.options temp=/tnom=`` (pass the
  temperature to the solver instead: ``hwloop op --temp C``), ``.include``/``.inc``
  /``.lib``, ``.param``, ``.subckt``, every other dot command and every other
  element letter (E, F, G, H, Q, M, J, X, ...).

Every problem raises :class:`hwloop.errors.NetlistError` with a one-line message
``SOURCE:LINE: problem; fix``.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain
from os import PathLike
from pathlib import Path
from typing import Any, Final, TypeVar

import numpy as np
from numpy.typing import NDArray

from hwloop.errors import NetlistError


def _load_try_array() -> Callable[..., NDArray[np.float64]] | None:
    """Fastnumbers' ``try_array``, or None without the package.

    Correctly rounded C++ float parsing (fast_float), about 5x faster than ``float()``
    per token; without it ``float()`` does the same, slower.
    """
    try:
        module = importlib.import_module("fastnumbers")
    except ImportError:  # pragma: no cover - a dependency of hwloop
        return None
    return module.try_array  # type: ignore[no-any-return]


_try_array = _load_try_array()

__all__ = [
    "GROUND",
    "DiodeModel",
    "Netlist",
    "parse_netlist",
    "parse_value",
    "read_netlist",
]

GROUND: Final = "0"
"""Name of the ground node; ``gnd`` is read as an alias."""

_GROUND_ALIASES: Final = frozenset({"0", "gnd"})

_SCALE: Final[dict[str, float]] = {
    "f": 1e-15,
    "p": 1e-12,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "k": 1e3,
    "g": 1e9,
    "t": 1e12,
}
_NUMBER_RE: Final = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)([a-z]*)\Z")
_EQUALS_RE: Final = re.compile(r"\s*=\s*")

_SKIPPED_DOT: Final = frozenset(
    {".op", ".title", ".print", ".probe", ".save", ".plot", ".width", ".nodeset", ".ic"}
)
_OPTIONS_DOT: Final = frozenset({".options", ".option", ".opt"})
_INCLUDE_DOT: Final = frozenset({".include", ".inc", ".lib"})

# diode model parameters: used, ignored (no DC effect), and rejected (change DC)
_DIODE_DEFAULTS: Final[dict[str, float]] = {
    "is": 1e-14,
    "n": 1.0,
    "eg": 1.11,
    "xti": 3.0,
    "tnom": 27.0,
    "rs": 0.0,
}
_DIODE_IGNORED: Final = frozenset(
    {"cjo", "cj0", "cj", "vj", "pb", "m", "mj", "tt", "fc", "kf", "af", "ibv", "level"}
)
_ELEMENT_HELP: Final[dict[str, str]] = {
    "e": "voltage-controlled voltage source",
    "f": "current-controlled current source",
    "g": "voltage-controlled current source",
    "h": "current-controlled voltage source",
    "q": "bipolar transistor",
    "m": "MOSFET",
    "j": "JFET",
    "x": "subcircuit instance",
    "b": "behavioural source",
    "s": "voltage-controlled switch",
    "w": "current-controlled switch",
    "t": "transmission line",
    "k": "coupled inductor",
}


_SYNTAX: Final[dict[str, tuple[str, str]]] = {
    "r": ("resistor", "Rname n1 n2 value"),
    "d": ("diode", "Dname anode cathode MODEL [area]"),
    "v": ("voltage source", "Vname n+ n- [DC] value"),
    "i": ("current source", "Iname n+ n- [DC] value"),
    "c": ("capacitor", "Cname n1 n2 value"),
    "l": ("inductor", "Lname n1 n2 value"),
}


def parse_value(token: str) -> float:
    """Read a SPICE number such as ``2.2k``, ``1meg``, ``5uA`` or ``1e-3``.

    Args:
        token: the number, lower- or upper-case, with an optional scale suffix
            (``f p n u m k meg g t mil``) and optional trailing unit letters.

    Returns:
        The finite value in SI units (suffix applied, unit letters ignored).

    Raises:
        ValueError: the token is not a finite SPICE number.

    """
    try:
        value = float(token)
    except ValueError:
        pass
    else:
        if math.isfinite(value):
            return value
    match = _NUMBER_RE.match(token.lower())
    if match is None:
        raise ValueError(f"not a number: {token!r}")
    value = float(match.group(1))
    suffix = match.group(2)
    if suffix.startswith("meg"):
        value *= 1e6
    elif suffix.startswith("mil"):
        value *= 25.4e-6
    elif suffix:
        value *= _SCALE.get(suffix[0], 1.0)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {token!r}")
    return value


@dataclass(frozen=True, slots=True)
class DiodeModel:
    """Parameters of one ``.model NAME D(...)`` card.

    Attributes:
        name: model name (lower case).
        is_a: saturation current IS at ``tnom_c``, in A (> 0).
        n: emission coefficient N (> 0, dimensionless).
        eg_ev: activation energy EG for the temperature scaling of IS, in eV.
        xti: saturation-current temperature exponent XTI (dimensionless).
        tnom_c: temperature at which IS was measured, in degC.

    """

    name: str
    is_a: float = 1e-14
    n: float = 1.0
    eg_ev: float = 1.11
    xti: float = 3.0
    tnom_c: float = 27.0


_A = TypeVar("_A", bound="np.ndarray[Any, Any]")


def _ro(a: _A) -> _A:
    a.setflags(write=False)
    return a


@dataclass(frozen=True, slots=True, eq=False)
class Netlist:
    """A parsed netlist: node names plus one set of flat, read-only arrays per element type.

    Node indices refer to :attr:`node_names`; index 0 is always ground (``"0"``).
    Node and element names are lower case (SPICE is case-insensitive).

    Attributes:
        title: the title line (first line of the file), verbatim.
        source: where the text came from (a path or ``"<netlist>"``), used in messages.
        node_names: node names by index; ``node_names[0] == "0"``.
        resistor_names: one name per resistor.
        resistor_nodes: ``(n_r, 2)`` int array of the two terminals.
        resistor_g_s: ``(n_r,)`` conductances in S (> 0).
        diode_names: one name per diode.
        diode_nodes: ``(n_d, 2)`` int array of (anode, cathode).
        diode_is_a: ``(n_d,)`` saturation currents IS at ``diode_tnom_c``, in A (area applied).
        diode_n: ``(n_d,)`` emission coefficients N.
        diode_eg_ev: ``(n_d,)`` activation energies EG, in eV.
        diode_xti: ``(n_d,)`` IS temperature exponents XTI.
        diode_tnom_c: ``(n_d,)`` model reference temperatures TNOM, in degC.
        vsource_names: one name per voltage source.
        vsource_nodes: ``(n_v, 2)`` int array of (n+, n-).
        vsource_v: ``(n_v,)`` source values ``v(n+) - v(n-)``, in V.
        isource_names: one name per current source.
        isource_nodes: ``(n_i, 2)`` int array of (n+, n-).
        isource_a: ``(n_i,)`` currents in A flowing from n+ through the source to n-.
        inductor_names: inductors, treated as 0 V sources (shorts) at DC.
        inductor_nodes: ``(n_l, 2)`` int array of the two terminals.
        capacitor_names: capacitors, treated as open circuits at DC.
        capacitor_nodes: ``(n_c, 2)`` int array of the two terminals.
        models: the diode models by (lower-case) name.

    """

    title: str
    source: str
    node_names: tuple[str, ...]
    resistor_names: tuple[str, ...]
    resistor_nodes: NDArray[np.intp]
    resistor_g_s: NDArray[np.float64]
    diode_names: tuple[str, ...]
    diode_nodes: NDArray[np.intp]
    diode_is_a: NDArray[np.float64]
    diode_n: NDArray[np.float64]
    diode_eg_ev: NDArray[np.float64]
    diode_xti: NDArray[np.float64]
    diode_tnom_c: NDArray[np.float64]
    vsource_names: tuple[str, ...]
    vsource_nodes: NDArray[np.intp]
    vsource_v: NDArray[np.float64]
    isource_names: tuple[str, ...]
    isource_nodes: NDArray[np.intp]
    isource_a: NDArray[np.float64]
    inductor_names: tuple[str, ...] = ()
    inductor_nodes: NDArray[np.intp] = field(
        default_factory=lambda: np.zeros((0, 2), dtype=np.intp)
    )
    capacitor_names: tuple[str, ...] = ()
    capacitor_nodes: NDArray[np.intp] = field(
        default_factory=lambda: np.zeros((0, 2), dtype=np.intp)
    )
    models: dict[str, DiodeModel] = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        """Number of nodes including ground."""
        return len(self.node_names)

    def node_index(self, name: str) -> int:
        """Index of node ``name`` (case-insensitive; ``gnd`` is ground).

        Raises:
            KeyError: no such node.

        """
        key = name.lower()
        if key in _GROUND_ALIASES:
            return 0
        try:
            return self.node_names.index(key)
        except ValueError:
            raise KeyError(f"no node named {name!r}") from None


class _Elements:
    """Columns of one element type, collected while reading (nodes still as names)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.n1: list[str] = []
        self.n2: list[str] = []
        self.lines: list[int] = []
        self.values: list[float] = []
        self.bulk: NDArray[np.float64] | None = None  # values of a kind read in bulk

    def value_array(self) -> NDArray[np.float64]:
        return self.bulk if self.bulk is not None else np.asarray(self.values, dtype=np.float64)

    def add(self, name: str, n1: str, n2: str, lineno: int, value: float) -> None:
        self.names.append(name)
        self.n1.append(n1)
        self.n2.append(n2)
        self.lines.append(lineno)
        self.values.append(value)


class _Builder:
    """Everything read so far; turned into arrays once by :func:`_finish`."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.r = _Elements()  # values: ohm
        self.d = _Elements()  # values: area
        self.v = _Elements()  # values: V
        self.i = _Elements()  # values: A
        self.l = _Elements()  # values: H (unused)
        self.c = _Elements()  # values: F (unused)
        self.d_model: list[str] = []
        self.models: dict[str, DiodeModel] = {}
        self.model_line: dict[str, int] = {}

    def kinds(self) -> tuple[_Elements, ...]:
        return (self.r, self.d, self.v, self.i, self.l, self.c)

    def error(self, lineno: int, message: str) -> NetlistError:
        return NetlistError(f"{self.source}:{lineno}: {message}")

    def value(self, lineno: int, token: str, what: str) -> float:
        try:
            return parse_value(token)
        except ValueError:
            raise self.error(
                lineno,
                f"bad {what} {token!r}; write a number with an optional SPICE suffix "
                f"(f p n u m k meg g t mil), e.g. 2.2k or 1e-3",
            ) from None


def _strip_inline_comment(line: str) -> str:
    cut = line.find(";")
    if cut >= 0:
        line = line[:cut]
    start = 0
    while True:
        cut = line.find("$", start)
        if cut < 0:
            return line
        if cut + 1 == len(line) or line[cut + 1] in " \t":
            return line[:cut]
        start = cut + 1


_SPECIAL: Final = np.array([0, ord("+"), ord("."), ord("*")], dtype=np.uint32)


def _first_codes(texts: list[str]) -> NDArray[np.uint32]:
    r"""Code point of each text's first character (0 for an empty text), in one pass.

    The texts hold no line breaks (they come from ``splitlines``): joined with
    ``"\n"``, each starts right after a separator.
    """
    out = np.zeros(len(texts), dtype=np.uint32)
    if not texts:
        return out
    joined = "\n".join(texts)
    a: NDArray[Any]
    if joined.isascii():
        a = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)
    else:
        a = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    starts = np.empty(len(texts), dtype=np.intp)
    starts[0] = 0
    starts[1:] = np.flatnonzero(a == 10) + 1
    inside = starts < len(a)
    out[inside] = a[starts[inside]]
    out[out == 10] = 0  # an empty text: its first "character" is the next separator
    return out


def _statements(
    lowered: list[str], source: str, inline_comments: bool
) -> tuple[NDArray[np.int64], list[str], NDArray[np.uint32]]:
    """Join continuation lines, drop comments, .control blocks and everything after .end.

    Only the few special lines (blank, ``*``, ``+``, ``.``) are visited one by one;
    the first characters of all lines are found in one vectorised pass.

    Returns:
        ``(line numbers, texts, first characters)`` of the statements, in file order;
        a line number is 1-based (the title is line 1) and is that of the statement's
        first physical line; a first character is a code point (statements are never
        blank).

    """
    body = lowered[1:]
    if inline_comments:
        body = [_strip_inline_comment(s) for s in body]
    texts = list(map(str.strip, body))
    firsts = _first_codes(texts)
    special = np.flatnonzero(np.isin(firsts, _SPECIAL)).tolist()
    end = len(texts)
    dropped: set[int] = set()
    control = -1
    for i in special:
        s = texts[i]
        if control >= 0:
            if s.startswith(".endc") and s.split()[0] == ".endc":
                dropped.update(range(control, i + 1))
                control = -1
            continue
        c = s[:1]
        if c in ("", "*"):
            dropped.add(i)
        elif c == "+":
            j = i - 1
            while j in dropped:
                j -= 1
            if j < 0:
                raise NetlistError(
                    f"{source}:{i + 2}: continuation line '+' has no statement to continue; "
                    f"join it to an element or remove the '+'"
                )
            texts[j] = texts[j] + " " + s[1:]
            dropped.add(i)
        else:
            word = s.split(None, 1)[0]
            if word == ".control":
                control = i
            elif word == ".endc":
                raise NetlistError(
                    f"{source}:{i + 2}: '.endc' without '.control'; remove it or add the "
                    f"missing '.control'"
                )
            elif word == ".end":
                end = i
                break
    if control >= 0:
        raise NetlistError(
            f"{source}:{control + 2}: '.control' block is not closed; add '.endc' after it"
        )
    if dropped:
        mask = np.ones(end, dtype=bool)
        mask[[i for i in dropped if i < end]] = False
        keep = np.flatnonzero(mask)
        return keep + 2, list(map(texts.__getitem__, keep.tolist())), firsts[keep]
    return np.arange(2, end + 2, dtype=np.int64), texts[:end], firsts[:end]


def _parse_model(b: _Builder, lineno: int, text: str) -> None:
    flat = text.replace("(", " ").replace(")", " ").replace(",", " ")
    toks = _EQUALS_RE.sub("=", flat).split()
    if len(toks) < 3:
        raise b.error(
            lineno, "'.model' needs a name and a type; write '.model NAME D(IS=1e-14 N=1)'"
        )
    name, kind = toks[1], toks[2]
    if kind != "d":
        raise b.error(
            lineno,
            f"model {name!r} has type {kind.upper()!r}; only diode models (type D) are "
            f"supported: write '.model {name.upper()} D(IS=... N=...)'",
        )
    if name in b.models:
        raise b.error(
            lineno,
            f"duplicate model name {name!r} (first defined on line {b.model_line[name]}); "
            f"rename or remove one",
        )
    params = dict(_DIODE_DEFAULTS)
    for tok in toks[3:]:
        key, eq, raw = tok.partition("=")
        if not eq or not key or not raw:
            raise b.error(lineno, f"bad model parameter {tok!r} in model {name!r}; write KEY=VALUE")
        if key == "bv":
            raise b.error(
                lineno,
                f"model {name!r}: breakdown (BV) changes the DC curve and is not modelled; "
                f"remove BV (diodes are taken to have no reverse breakdown)",
            )
        if key in _DIODE_IGNORED:
            continue
        if key not in params:
            raise b.error(
                lineno,
                f"model {name!r}: unsupported diode parameter {key.upper()!r}; use only "
                f"IS, N, RS=0, EG, XTI, TNOM (and the ignored AC parameters CJO, VJ, M, "
                f"TT, FC, KF, AF)",
            )
        params[key] = b.value(lineno, raw, f"value of {key.upper()}")
    if params["rs"] != 0.0:
        raise b.error(
            lineno,
            f"model {name!r}: series resistance RS={params['rs']:g} is not modelled; set "
            f"RS=0 and add an explicit resistor in series with the diode",
        )
    if params["is"] <= 0.0 or params["n"] <= 0.0:
        raise b.error(lineno, f"model {name!r}: IS and N must be > 0; fix their values")
    if params["tnom"] <= -273.15:
        raise b.error(lineno, f"model {name!r}: TNOM must be above -273.15 degC; fix it")
    b.models[name] = DiodeModel(
        name=name,
        is_a=params["is"],
        n=params["n"],
        eg_ev=params["eg"],
        xti=params["xti"],
        tnom_c=params["tnom"],
    )
    b.model_line[name] = lineno


def _parse_dot(b: _Builder, lineno: int, text: str) -> None:
    word = text.split(None, 1)[0]
    if word == ".model":
        _parse_model(b, lineno, text)
    elif word in _SKIPPED_DOT:
        return
    elif word in _OPTIONS_DOT:
        for tok in _EQUALS_RE.sub("=", text).split()[1:]:
            key = tok.partition("=")[0]
            if key in ("temp", "tnom"):
                raise b.error(
                    lineno,
                    f"'.options {key}' is not supported; remove it and pass the "
                    f"temperature to the solver ('hwloop op --temp C')",
                )
    elif word == ".temp":
        raise b.error(
            lineno,
            "'.temp' is not supported in the netlist; remove it and pass the temperature "
            "to the solver ('hwloop op --temp C' or solve_op(temperature_c=...))",
        )
    elif word in _INCLUDE_DOT:
        raise b.error(
            lineno,
            f"'{word}' is not supported; paste the included elements and models into this file",
        )
    elif word == ".param":
        raise b.error(lineno, "'.param' is not supported; write the numbers in place")
    elif word in (".subckt", ".ends"):
        raise b.error(lineno, f"'{word}' (subcircuits) is not supported; flatten the circuit")
    else:
        raise b.error(
            lineno,
            f"unknown or unsupported dot command {word!r}; remove it (supported: .model, "
            f".op, .options, .end, .control/.endc, .print, .probe, .save, .plot, .title, "
            f".nodeset, .ic)",
        )


def _source_value(b: _Builder, lineno: int, toks: list[str], kind: str) -> float:
    n = len(toks)
    if n == 4:
        raw = toks[3]
    elif n == 5 and toks[3] == "dc":
        raw = toks[4]
    else:
        unit = "V" if kind == "voltage" else "A"
        letter = "V" if kind == "voltage" else "I"
        raise b.error(
            lineno,
            f"{kind} source {toks[0]!r} has {n} fields; write '{letter}name n+ n- [DC] value' "
            f"with the value in {unit} (AC and transient specifications are not supported)",
        )
    return b.value(lineno, raw, f"{kind} source value")


def _statement(b: _Builder, lineno: int, text: str) -> None:
    """Read one statement (any kind) into ``b``; raise NetlistError on bad input."""
    c = text[0]
    if c == ".":
        _parse_dot(b, lineno, text)
        return
    toks = text.split()
    name = toks[0]
    if c not in "rdvicl":
        what = _ELEMENT_HELP.get(c, "element")
        raise b.error(
            lineno,
            f"unsupported element {name!r} ({what} {c.upper()!r}); the DC "
            f"operating-point solver supports only R, D, V, I (C as open, L as short)",
        )
    if len(toks) < 4:
        kind, syntax = _SYNTAX[c]
        raise b.error(lineno, f"{kind} {name!r} has {len(toks)} fields; write '{syntax}'")
    n1, n2 = toks[1], toks[2]
    if c == "r":
        if len(toks) != 4:
            raise b.error(
                lineno,
                f"resistor {name!r} has {len(toks)} fields; write 'Rname n1 n2 value' "
                f"(value in ohm, no extra parameters)",
            )
        ohm = b.value(lineno, toks[3], "resistance")
        if not ohm > 0.0:
            raise b.error(
                lineno,
                f"resistor {name!r} has resistance {ohm:g} ohm; it must be > 0 (remove "
                f"it for an open circuit, use a 0 V source for a short)",
            )
        b.r.add(name, n1, n2, lineno, ohm)
    elif c == "d":
        if len(toks) > 5:
            raise b.error(
                lineno,
                f"diode {name!r} has {len(toks)} fields; write 'Dname anode cathode MODEL [area]'",
            )
        area = 1.0
        if len(toks) == 5:
            area = b.value(lineno, toks[4], "diode area")
            if not area > 0.0:
                raise b.error(lineno, f"diode {name!r} area must be > 0 (got {area:g})")
        b.d.add(name, n1, n2, lineno, area)
        b.d_model.append(toks[3])
    elif c == "v":
        b.v.add(name, n1, n2, lineno, _source_value(b, lineno, toks, "voltage"))
    elif c == "i":
        b.i.add(name, n1, n2, lineno, _source_value(b, lineno, toks, "current"))
    else:
        kind = "capacitor" if c == "c" else "inductor"
        if len(toks) != 4:
            raise b.error(
                lineno,
                f"{kind} {name!r} has {len(toks)} fields; write "
                f"'{c.upper()}name n1 n2 value' (initial conditions are not supported)",
            )
        val = b.value(lineno, toks[3], f"{kind} value")
        if not val > 0.0:
            raise b.error(lineno, f"{kind} {name!r} value must be > 0 (got {val:g})")
        (b.c if c == "c" else b.l).add(name, n1, n2, lineno, val)


_SEP: Final = "\x00"  # a token between statements, to check every one has its fields


def _columns(texts: list[str], width: int) -> list[str] | None:
    """All tokens of ``texts`` with a separator token between texts, or None.

    None unless every text has exactly ``width`` tokens (one ``split`` for them all).
    """
    n = len(texts)
    joined = f" {_SEP} ".join(texts)
    toks = joined.split()
    step = width + 1
    if len(toks) != step * n - 1 or joined.count(_SEP) != n - 1:
        return None
    if toks[width::step].count(_SEP) != n - 1:
        return None
    return toks


def _numbers(raw: list[str]) -> NDArray[np.float64] | None:
    """The values of SPICE number tokens as :func:`parse_value` reads them, or None.

    None if one is not a finite number (the per-statement path then names it).
    """
    if _try_array is not None:
        nan = math.nan
        v = _try_array(raw, dtype=np.float64, on_fail=nan, on_overflow=nan, inf=nan, nan=nan)
        todo = np.flatnonzero(np.isnan(v)).tolist()
    else:
        try:
            v = np.array(raw, dtype=np.float64)
        except ValueError:
            v = np.full(len(raw), math.nan)
        todo = np.flatnonzero(~np.isfinite(v)).tolist()
    for k in todo:  # SPICE suffixes (2.2k, 1meg, 5ua) and errors
        try:
            v[k] = parse_value(raw[k])
        except ValueError:
            return None
    return v


def _bulk(e: _Elements, c: str, lines: NDArray[np.int64], texts: list[str]) -> bool:
    """Read well-formed statements of element letter ``c`` (r, v, i, c, l) in one go.

    False (nothing read) if any needs the per-statement path: a field count, value
    or sign that :func:`_statement` would reject or read differently.
    """
    toks = _columns(texts, 4)
    width = 4
    if toks is None and c in "vi":
        toks = _columns(texts, 5)
        width = 5
        if toks is None or toks[3::6].count("dc") != len(texts):
            return False
    if toks is None:
        return False
    step = width + 1
    values = _numbers(toks[width - 1 :: step])
    if values is None:
        return False
    if c in "rcl" and not np.all(values > 0.0):
        return False
    e.names = toks[0::step]
    e.n1 = toks[1::step]
    e.n2 = toks[2::step]
    e.lines = lines.tolist()
    e.bulk = values
    return True


def _build(
    b: _Builder, lines: NDArray[np.int64], texts: list[str], firsts: NDArray[np.uint32]
) -> None:
    """Read the statements into ``b``.

    Each element kind in bulk where it can be (R, V, I, C, L), the rest one by one in
    file order, then resistors: the first error found in that order is raised, as the
    per-statement reading of everything would.
    """
    if not texts:
        return
    kinds = {"r": b.r, "v": b.v, "i": b.i, "c": b.c, "l": b.l}
    staged: dict[str, _Elements] = {}
    for c in kinds:
        idx = np.flatnonzero(firsts == ord(c))
        if len(idx):
            e = _Elements()
            if _bulk(e, c, lines[idx], list(map(texts.__getitem__, idx.tolist()))):
                staged[c] = e
    done = np.isin(firsts, np.array([ord(c) for c in staged], dtype=np.uint32))
    is_r = firsts == ord("r")
    for p in np.flatnonzero(~(done | is_r)).tolist():
        _statement(b, int(lines[p]), texts[p])
    for c, e in staged.items():
        kinds[c].__dict__.update(e.__dict__)
    if "r" not in staged:
        for p in np.flatnonzero(is_r).tolist():
            _statement(b, int(lines[p]), texts[p])


def _check_duplicates(b: _Builder) -> None:
    names: list[str] = []
    lines: list[int] = []
    for e in b.kinds():
        names += e.names
        lines += e.lines
    if len(set(names)) == len(names):
        return
    first_line: dict[str, int] = {}
    for k in np.argsort(np.asarray(lines), kind="stable").tolist():
        prev = first_line.setdefault(names[k], lines[k])
        if prev != lines[k]:
            raise b.error(
                lines[k],
                f"duplicate element name {names[k]!r} (first used on line {prev}); "
                f"rename one of them",
            )


def _node_ids(b: _Builder) -> tuple[list[str], list[NDArray[np.intp]]]:
    """Give the nodes ids by first appearance in the file (ground is 0); map every terminal.

    Vectorised: provisional ids from one ``dict.fromkeys`` over every terminal, every
    terminal mapped once, then each node's first appearance (line, side) by
    ``np.minimum.at`` and the final ids from sorting the (few) distinct nodes.
    """
    kinds = b.kinds()
    columns = [nodes for e in kinds for nodes in (e.n1, e.n2)]
    distinct = list(dict.fromkeys(chain(_GROUND_ALIASES, *columns)))
    provisional = dict(zip(distinct, range(len(distinct)), strict=True)).__getitem__
    first = np.full(len(distinct), np.iinfo(np.int64).max, dtype=np.int64)
    first[: len(_GROUND_ALIASES)] = -1  # ground and its alias: id 0, before everything
    mapped: list[NDArray[np.intp]] = []
    for e in kinds:
        key = np.asarray(e.lines, dtype=np.int64) * 2
        for side, nodes in ((0, e.n1), (1, e.n2)):
            ids = np.fromiter(map(provisional, nodes), dtype=np.intp, count=len(nodes))
            np.minimum.at(first, ids, key + side)
            mapped.append(ids)
    order = np.argsort(first, kind="stable")[len(_GROUND_ALIASES) - 1 :]  # drop one alias
    final = np.empty(len(distinct), dtype=np.intp)
    final[order] = np.arange(order.size)
    final[: len(_GROUND_ALIASES)] = 0
    names = [GROUND] + [distinct[k] for k in order[1:].tolist()]
    out: list[NDArray[np.intp]] = []
    for k, e in enumerate(kinds):
        pair = np.empty((len(e.n1), 2), dtype=np.intp, order="F")  # columns contiguous
        pair[:, 0] = final[mapped[2 * k]]
        pair[:, 1] = final[mapped[2 * k + 1]]
        pair.setflags(write=False)
        out.append(pair)
    return names, out


def _finish(
    b: _Builder,
    title: str,
    nodes: tuple[list[str], list[NDArray[np.intp]]] | None = None,
) -> Netlist:
    """The :class:`Netlist` of ``b``; ``nodes`` (names, terminals per kind) if already mapped.

    With ``nodes`` given (the vectorised reader), duplicate names have been checked too.
    """
    if nodes is None:
        _check_duplicates(b)
    d = b.d
    n_d = len(d.names)
    is_a = np.empty(n_d)
    n = np.empty(n_d)
    eg = np.empty(n_d)
    xti = np.empty(n_d)
    tnom = np.empty(n_d)
    for j, model_name in enumerate(b.d_model):
        model = b.models.get(model_name)
        if model is None:
            raise b.error(
                d.lines[j],
                f"diode {d.names[j]!r} uses undefined model {model_name!r}; add "
                f"'.model {model_name.upper()} D(IS=1e-14 N=1)'",
            )
        is_a[j] = model.is_a * d.values[j]
        n[j] = model.n
        eg[j] = model.eg_ev
        xti[j] = model.xti
        tnom[j] = model.tnom_c
    ohm = b.r.value_array()
    names, (r_nodes, d_nodes, v_nodes, i_nodes, l_nodes, c_nodes) = (
        _node_ids(b) if nodes is None else nodes
    )
    return Netlist(
        title=title,
        source=b.source,
        node_names=tuple(names),
        resistor_names=tuple(b.r.names),
        resistor_nodes=r_nodes,
        resistor_g_s=_ro(1.0 / ohm),
        diode_names=tuple(d.names),
        diode_nodes=d_nodes,
        diode_is_a=_ro(is_a),
        diode_n=_ro(n),
        diode_eg_ev=_ro(eg),
        diode_xti=_ro(xti),
        diode_tnom_c=_ro(tnom),
        vsource_names=tuple(b.v.names),
        vsource_nodes=v_nodes,
        vsource_v=_ro(b.v.value_array()),
        isource_names=tuple(b.i.names),
        isource_nodes=i_nodes,
        isource_a=_ro(b.i.value_array()),
        inductor_names=tuple(b.l.names),
        inductor_nodes=l_nodes,
        capacitor_names=tuple(b.c.names),
        capacitor_nodes=c_nodes,
        models=dict(b.models),
    )


# ---- vectorised reader: the whole text as one byte array ---------------------------------
# It reads the common, well-formed netlist (ASCII, no continuation lines, no inline
# comments, every statement of a kind R/V/I/C/L with the same field count) with numpy
# over the bytes, making strings only for element names, values and distinct nodes.
# For anything else (or anything it would reject) it returns None and the reader above
# reads the text: that one produces the same Netlist and names the first bad line, so
# errors and their line numbers are exactly those of the statement-by-statement reading.

_LINE_BREAKS: Final = re.compile(r"[\r\x0b\x0c\x1c-\x1e]")  # splitlines' other breaks
_BULK_KINDS: Final = "rvicl"


def _token_strings(
    a: NDArray[np.uint8], starts: NDArray[np.intp], ends: NDArray[np.intp]
) -> list[str]:
    """The tokens ``a[starts[k]:ends[k]]`` (in increasing order) as str, in one split.

    Each token is taken with the (blank) byte after it, so one ``split`` separates them.
    """
    if not starts.size:
        return []
    lengths = ends + 1 - starts
    offsets = np.cumsum(lengths) - lengths
    picked = np.repeat(starts - offsets, lengths) + np.arange(int(offsets[-1] + lengths[-1]))
    return a[picked].tobytes().decode("ascii").split()


def _first_tokens(
    a: NDArray[np.uint8], tok_start: NDArray[np.intp], line_start: NDArray[np.intp]
) -> NDArray[np.intp]:
    """Index of the first token at or after each line start (the next line's if blank)."""
    if tok_start.size and np.all(a[line_start] > 32):  # no blank line, none indented
        before = a[tok_start - 1]
        before[0] = 10
        first = np.flatnonzero(before == 10)
        if first.size == line_start.size:
            return first
    return np.searchsorted(tok_start, line_start)


_KEY_MASKS: Final = np.array(
    [(1 << (8 * n)) - 1 for n in range(8)] + [(1 << 64) - 1], dtype=np.uint64
)


def _short_keys(
    a: NDArray[np.uint8], starts: NDArray[np.intp], lengths: NDArray[np.intp]
) -> NDArray[np.uint64]:
    """Tokens of at most 8 bytes as little-endian uint64 (zero-padded), from two word reads."""
    padded = np.zeros(-(-(a.size + 16) // 8) * 8, dtype=np.uint8)
    padded[: a.size] = a
    words = padded.view("<u8")
    q = starts // 8
    shift = ((starts % 8) * 8).astype(np.uint64)
    lo = words[q] >> shift
    hi = np.where(shift > 0, words[q + 1] << (np.uint64(64) - shift) % np.uint64(64), 0)
    return (lo | hi.astype(np.uint64)) & _KEY_MASKS[lengths]


def _node_keys(
    a: NDArray[np.uint8], starts: NDArray[np.intp], lengths: NDArray[np.intp], extra: list[str]
) -> NDArray[Any]:
    """One exact, sortable key per terminal token (its bytes, zero-padded), then ``extra``'s."""
    width = max(int(lengths.max(initial=1)), max(map(len, extra), default=1))
    if width <= 8:
        short = np.zeros(starts.size + len(extra), dtype=np.uint64)
        short[: starts.size] = _short_keys(a, starts, lengths)
        for k, name in enumerate(extra):
            short[starts.size + k] = int.from_bytes(name.encode(), "little")
        return short
    m = np.zeros((starts.size + len(extra), -(-width // 8) * 8), dtype=np.uint8)
    if starts.size:
        top = m[: starts.size]
        last = a.size - 1
        for j in range(int(lengths.max())):
            col = a[np.minimum(starts + j, last)]
            col[lengths <= j] = 0
            top[:, j] = col
    for k, name in enumerate(extra):
        m[starts.size + k, : len(name)] = np.frombuffer(name.encode(), dtype=np.uint8)
    if m.shape[1] == 8:
        return m.view("<u8").ravel()
    return m.view(f"S{m.shape[1]}").ravel()


def _fast_parse(low: str, source: str, title: str) -> Netlist | None:
    """Read lower-cased netlist text vectorised, or None (see the comment above)."""
    if "\r" in low:
        low = low.replace("\r\n", "\n")
    head = low.find("\n")
    if head < 0 or _LINE_BREAKS.search(low, 0, head + 1) is not None:
        return None
    text = low[head + 1 :]
    if not text.isascii():
        return None
    body = text.encode("ascii")
    if not body.endswith(b"\n"):
        body += b"\n"
    if b";" in body or b"$" in body or b"\x7f" in body:
        return None  # inline comments: the other reader
    a = np.frombuffer(body, dtype=np.uint8)
    line_end = np.flatnonzero(a == 10)
    if np.count_nonzero(a < 32) != line_end.size + np.count_nonzero(a == 9):
        return None  # other control characters (line breaks, NUL, ...): the other reader
    n_lines = line_end.size
    line_start = np.empty(n_lines, dtype=np.intp)
    line_start[0] = 0
    line_start[1:] = line_end[:-1] + 1
    # tokens: maximal runs of bytes > 32 (space, tab and newline are the only others)
    word = np.empty(a.size + 1, dtype=bool)
    word[0] = False
    np.greater(a, 32, out=word[1:])
    edges = np.flatnonzero(word[1:] != word[:-1])
    tok_start = edges[0::2]
    tok_end = edges[1::2]
    first_tok = _first_tokens(a, tok_start, line_start)
    count = np.diff(np.append(first_tok, tok_start.size))
    first_char = np.zeros(n_lines, dtype=np.uint8)
    has = count > 0
    first_char[has] = a[tok_start[first_tok[has]]]

    keep = has
    end = n_lines
    control = -1
    rare: list[int] = []
    for k in np.flatnonzero(np.isin(first_char, _SPECIAL[1:].astype(np.uint8))).tolist():
        t = int(first_tok[k])
        w = body[int(tok_start[t]) : int(tok_end[t])]
        if control >= 0:
            if w == b".endc":
                keep[control : k + 1] = False
                control = -1
        elif w[:1] == b"*":
            keep[k] = False
        elif w[:1] == b"+" or w == b".endc":
            return None
        elif w == b".control":
            control = k
        elif w == b".end":
            end = k
            break
        else:
            rare.append(k)
    if control >= 0:
        return None
    keep[end:] = False
    in_bulk = keep & np.isin(first_char, np.frombuffer(_BULK_KINDS.encode(), dtype=np.uint8))
    rare = sorted(rare + np.flatnonzero(keep & ~in_bulk & (first_char != ord("."))).tolist())

    lines = np.flatnonzero(in_bulk)  # body line indices (file line - 2), file order
    kind = first_char[lines]
    n_tok = count[lines]
    sel = {c: np.flatnonzero(kind == ord(c)) for c in _BULK_KINDS}
    for c in "vi":
        five = sel[c][n_tok[sel[c]] == 5]
        if five.size and five.size == sel[c].size:
            dc = first_tok[lines[five]] + 3
            s = tok_start[dc]
            if not np.all((tok_end[dc] - s == 2) & (a[s] == ord("d")) & (a[s + 1] == ord("c"))):
                return None
            n_tok[five] = 4  # "dc" is not the value: the value is the last token
    if not np.all(n_tok == 4):
        return None  # fields the other reader reads one by one (and may reject)

    b = _Builder(source)
    try:  # (an error here may not be the first in file order: the other reader finds that)
        for k in rare:
            _statement(b, k + 2, body[int(line_start[k]) : int(line_end[k])].decode().strip())
    except NetlistError:
        return None
    first = first_tok[lines]
    last = first + count[lines] - 1
    picked = np.empty(2 * lines.size, dtype=np.intp)  # name, value, name, value, ...
    picked[0::2] = first
    picked[1::2] = last
    strings = _token_strings(a, tok_start[picked], tok_end[picked])
    names = strings[0::2]
    values = _numbers(strings[1::2])
    if values is None:
        return None
    all_names = names + b.d.names
    if len(set(all_names)) != len(all_names):
        return None
    for c in _BULK_KINDS:
        idx = sel[c]
        e: _Elements = getattr(b, c)
        e.bulk = values[idx]
        if c in "rcl" and not np.all(e.bulk > 0.0):
            return None
        if idx.size and int(idx[-1]) - int(idx[0]) + 1 == idx.size:  # (usually: one block)
            e.names = names[int(idx[0]) : int(idx[-1]) + 1]
        else:
            e.names = list(map(names.__getitem__, idx.tolist()))
    n1 = first + 1
    return _finish(b, title, _fast_nodes(b, a, tok_start, tok_end, n1, lines, sel))


def _index_keys(keys: NDArray[Any]) -> tuple[NDArray[Any], NDArray[np.intp]]:
    """Sorted distinct keys and each key's index among them (``np.unique`` with inverse).

    uint64 keys (never 0) go through a hash table (Fibonacci hashing): one scatter and
    one gather over all keys, sorting only the distinct ones and the keys whose slot
    another key took; other keys are sorted.
    """
    if keys.dtype != np.uint64 or keys.size < 4096:
        distinct, inverse = np.unique(keys, return_inverse=True)
        return distinct, inverse.ravel()
    bits = min(max(int(keys.size).bit_length() - 1, 12), 20)
    shift = np.uint64(64 - bits)
    mult = np.uint64(0x9E3779B97F4A7C15)
    slot = (keys * mult) >> shift
    table = np.zeros(1 << bits, dtype=np.uint64)
    table[slot] = keys
    hit = table[slot] == keys
    lost = keys[~hit]
    distinct = np.unique(np.concatenate([table[table != 0], lost]))
    d_slot = (distinct * mult) >> shift
    owner = table[d_slot] == distinct
    position = np.zeros(1 << bits, dtype=np.intp)
    position[d_slot[owner]] = np.flatnonzero(owner)
    inverse = position[slot]
    inverse[~hit] = np.searchsorted(distinct, lost)
    return distinct, inverse


def _fast_nodes(
    b: _Builder,
    a: NDArray[np.uint8],
    tok_start: NDArray[np.intp],
    tok_end: NDArray[np.intp],
    n1: NDArray[np.intp],
    lines: NDArray[np.intp],
    sel: dict[str, NDArray[np.intp]],
) -> tuple[list[str], list[NDArray[np.intp]]]:
    """Node names by first appearance (ground 0) and each kind's terminals, vectorised.

    ``n1``: the token index of each bulk line's first terminal (the second follows it).
    """
    d = b.d
    n = lines.size
    term = np.empty(2 * n, dtype=np.intp)  # n1, n2 of each bulk line, in file order
    term[0::2] = n1
    term[1::2] = n1 + 1
    starts = tok_start[term]
    keys = _node_keys(a, starts, tok_end[term] - starts, [*_GROUND_ALIASES, *d.n1, *d.n2])
    order_key = np.empty(keys.size, dtype=np.int64)  # 2 * line + side of each terminal
    order_key[0 : 2 * n : 2] = lines * 2
    order_key[1 : 2 * n : 2] = lines * 2 + 1
    n_g = len(_GROUND_ALIASES)
    order_key[2 * n : 2 * n + n_g] = -1
    d_lines = np.asarray(d.lines, dtype=np.int64) - 2
    order_key[2 * n + n_g :] = np.concatenate([d_lines * 2, d_lines * 2 + 1])
    distinct, inverse = _index_keys(keys)
    first = np.full(distinct.size, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, inverse, order_key)
    ranked = np.argsort(first, kind="stable")
    final = np.empty(distinct.size, dtype=np.intp)
    final[ranked] = np.arange(distinct.size) - (n_g - 1)
    final[first < 0] = 0  # ground and its alias
    raw_names = distinct.view(np.uint8).reshape(distinct.size, -1)[ranked[n_g:]]
    blank = np.full((raw_names.shape[0], 1), ord(" "), dtype=np.uint8)
    spaced = np.hstack([np.where(raw_names == 0, ord(" "), raw_names), blank])
    node_names = [GROUND, *spaced.astype(np.uint8).tobytes().decode("ascii").split()]
    ids = final[inverse]
    out: list[NDArray[np.intp]] = []
    for c in "rdvilc":
        if c == "d":
            pair = np.empty((len(d.names), 2), dtype=np.intp, order="F")
            pair[:, 0] = ids[2 * n + n_g : 2 * n + n_g + len(d.names)]
            pair[:, 1] = ids[2 * n + n_g + len(d.names) :]
        else:
            idx = sel[c]
            pair = np.empty((idx.size, 2), dtype=np.intp, order="F")
            pair[:, 0] = ids[2 * idx]
            pair[:, 1] = ids[2 * idx + 1]
        pair.setflags(write=False)
        out.append(pair)
    return node_names, out


def parse_netlist(text: str, source: str = "<netlist>") -> Netlist:
    """Parse SPICE-subset netlist text (see the module docstring for the subset).

    Args:
        text: the whole netlist; its first line is the title and is not parsed.
        source: name used in error messages (``source:LINE: ...``), e.g. the path.

    Returns:
        The parsed :class:`Netlist` (node 0 is ground).

    Raises:
        NetlistError: malformed or unsupported input; the message names the line
            and the fix.

    """
    first = text.split("\n", 1)[0].splitlines()  # (the title: no need to split it all)
    title = first[0].strip() if first else ""
    low = text.lower()
    fast = _fast_parse(low, source, title)
    return fast if fast is not None else _read_statements(low, source, title)


def _read_statements(low: str, source: str, title: str) -> Netlist:
    """Read lower-cased text statement by statement (bulk where it can): any netlist."""
    b = _Builder(source)
    _build(b, *_statements(low.splitlines(), source, ";" in low or "$" in low))
    return _finish(b, title)


def read_netlist(path: str | PathLike[str]) -> Netlist:
    """Read and parse the netlist file at ``path`` (UTF-8 or Latin-1 text).

    Raises:
        NetlistError: the file cannot be read, or its content is malformed.

    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise NetlistError(f"{p}: cannot read netlist: {reason}; check the path") from None
    if b"\0" in raw:
        raise NetlistError(f"{p}: not a text file; give the path of a SPICE netlist")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return parse_netlist(text, source=str(p))
