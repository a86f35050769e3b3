"""A SCPI message parser for the virtual SCPI instruments (DAQ6510, 2400).

Follows IEEE 488.2 section 7 and SCPI-99 volume 1 section 6 as the instruments'
manuals summarise them (DAQ6510 reference manual, "SCPI command programming
notes"; 2400 series manual, section 18 "SCPI signal oriented measurement commands"
and "Programming syntax"):

* a command tree of mnemonics with a short form (the upper-case letters of the
  manual's spelling) and a long form, case-insensitive; ``[optional]`` nodes; a
  numeric suffix on any node (``CALC3``, ``TIM1``); ``?`` makes a query;
* a program message is split on ``;`` (outside quotes and parentheses); a unit
  without a leading ``:`` is relative to the path of the previous one (IEEE 488.2
  7.6.1.4), common commands (``*...``) do not change the path; every query reply
  of one message comes back in one line, separated by ``;``;
* parameters separated by ``,``: numbers (also ``MIN``, ``MAX``, ``DEF``), booleans
  (``ON``, ``OFF``, ``1``, ``0``), strings in single or double quotes, channel lists
  ``(@101,103:105)`` and character data.

Errors are :class:`ScpiError` with the standard codes (-102 syntax error, -104 data
type error, -108 parameter not allowed, -109 missing parameter, -113 undefined header,
-221 settings conflict, -222 data out of range, -224 illegal parameter value).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Handler", "ScpiCall", "ScpiError", "ScpiTree", "channel_list", "split_units"]


class ScpiError(Exception):
    """A SCPI error with its standard code and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def split_units(text: str, sep: str = ";") -> list[str]:
    """Split ``text`` on ``sep`` outside quotes and parentheses (parts stripped)."""
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
            depth = max(0, depth - 1)
        elif ch == sep and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur).strip())
    return out


def channel_list(param: str) -> list[int]:
    """Channels of a SCPI channel list ``(@101,103:105)`` (ranges inclusive)."""
    m = re.fullmatch(r"\s*\(@([^()]*)\)\s*", param)
    if m is None:
        raise ScpiError(-104, "Data type error; a channel list (@...) expected")
    out: list[int] = []
    for part in m.group(1).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if ":" in part:
                a, b = (int(x) for x in part.split(":"))
                if b < a:
                    a, b = b, a
                if b - a > 10_000:
                    raise ScpiError(-222, "Data out of range; channel range too long")
                out += list(range(a, b + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise ScpiError(-104, f"Data type error; bad channel {part!r}") from None
    return out


@dataclass
class ScpiCall:
    """One parsed program message unit handed to a command's handler."""

    query: bool
    params: list[str]
    suffixes: list[int]

    def nparams(self, lo: int, hi: int) -> None:
        """Check the parameter count (-109 too few, -108 too many)."""
        if len(self.params) < lo:
            raise ScpiError(-109, "Missing parameter")
        if len(self.params) > hi:
            raise ScpiError(-108, "Parameter not allowed")

    def number(
        self,
        k: int,
        lo: float,
        hi: float,
        default: float | None = None,
        clamp_to: tuple[float, float] | None = None,
    ) -> float:
        """Parameter ``k`` as a number within ``[lo, hi]`` (MIN/MAX/DEF accepted)."""
        p = self._present(k).upper()
        if p in ("MIN", "MINIMUM"):
            return lo
        if p in ("MAX", "MAXIMUM"):
            return hi
        if p in ("DEF", "DEFAULT"):
            if default is None:
                raise ScpiError(-224, "Illegal parameter value")
            return default
        try:
            v = float(p)
        except ValueError:
            raise ScpiError(-104, f"Data type error; {self.params[k]!r} is not a number") from None
        if not math.isfinite(v):
            raise ScpiError(-222, "Data out of range")
        if not lo <= v <= hi:
            raise ScpiError(-222, f"Data out of range; {v:g} not in [{lo:g}, {hi:g}]")
        return v

    def boolean(self, k: int) -> bool:
        """Parameter ``k`` as a boolean (ON/OFF/1/0)."""
        p = self._present(k).upper()
        if p in ("ON", "1"):
            return True
        if p in ("OFF", "0"):
            return False
        try:
            return round(float(p)) != 0
        except ValueError:
            raise ScpiError(-224, f"Illegal parameter value {self.params[k]!r}") from None

    def choice(self, k: int, options: dict[str, str]) -> str:
        """Parameter ``k`` as one of ``options`` (mnemonic in mixed case -> value)."""
        p = self.string(k).upper()
        for spelled, value in options.items():
            if _mnemonic_match(p, spelled):
                return value
        raise ScpiError(-224, f"Illegal parameter value {self.params[k]!r}")

    def string(self, k: int) -> str:
        """Parameter ``k`` without its quotes."""
        return self._present(k).strip("\"'")

    def _present(self, k: int) -> str:
        """Parameter ``k`` without surrounding white space; SCPI error -109 when missing."""
        if k >= len(self.params):
            raise ScpiError(-109, "Missing parameter")
        return self.params[k].strip()


Handler = Callable[[ScpiCall], str | None]


def _mnemonic_match(token: str, spelled: str) -> bool:
    """``token`` (upper case) is the short or long form of ``spelled`` (mixed case)."""
    short = "".join(ch for ch in spelled if ch.isupper() or ch.isdigit())
    return token in (short, spelled.upper())


@dataclass
class _Node:
    spelled: str
    optional: bool


@dataclass
class _Entry:
    nodes: list[_Node]
    handler: Handler
    query: bool
    set_: bool


def _compile(pattern: str) -> list[_Node]:
    """``"[SENSe]:VOLTage[:DC]:NPLCycles"`` -> nodes (optional flags)."""
    nodes: list[_Node] = []
    pattern = re.sub(r"\[(\d)\]", "", pattern)  # numeric suffixes: any node takes one
    for m in re.finditer(r"\[:?([A-Za-z]+)\]|:?([A-Za-z]+)", pattern):
        if m.group(1):
            nodes.append(_Node(m.group(1), True))
        else:
            nodes.append(_Node(m.group(2), False))
    return nodes


@dataclass
class ScpiTree:
    """A command tree: register handlers, then :meth:`execute` program messages."""

    entries: list[_Entry] = field(default_factory=list)

    def add(self, pattern: str, handler: Handler, *, query: bool = True, set_: bool = True) -> None:
        """Register ``pattern`` (its query and/or its set form) to ``handler``."""
        self.entries.append(_Entry(_compile(pattern), handler, query, set_))

    def _match(self, tokens: list[str]) -> tuple[_Entry, list[int]] | None:
        parsed: list[tuple[str, int]] = []
        for t in tokens:
            m = re.fullmatch(r"([A-Z][A-Z0-9]*?)(\d*)", t)
            if m is None:
                return None
            parsed.append((m.group(1), int(m.group(2)) if m.group(2) else 1))
        for entry in self.entries:
            suf = _match_nodes(entry.nodes, 0, parsed, 0, [])
            if suf is not None:
                return entry, suf
        return None

    def execute(self, unit: str, path: list[str]) -> tuple[str | None, list[str]]:
        """Run one program message unit (not a common command) relative to ``path``.

        Returns the reply (None for a command) and the path for the next unit.
        """
        m = re.match(r"^(:?[A-Za-z0-9:]*)(\?)?(?:\s+(.*))?$", unit, re.DOTALL)
        if m is None or not m.group(1).strip(":"):
            raise ScpiError(-102, f"Syntax error; {unit[:40]!r}")
        header, query, rest = m.group(1), m.group(2) == "?", (m.group(3) or "").strip()
        absolute = header.startswith(":")
        tokens = [t.upper() for t in header.strip(":").split(":")]
        if any(not t for t in tokens):
            raise ScpiError(-102, f"Syntax error; empty mnemonic in {header!r}")
        found = None
        if not absolute and path:
            found = self._match(path + tokens)
            if found is not None:
                tokens = path + tokens
        if found is None:
            found = self._match(tokens)
        if found is None:
            raise ScpiError(-113, f"Undefined header; {header}{'?' if query else ''}")
        entry, suffixes = found
        if query and not entry.query:
            raise ScpiError(-113, f"Undefined header; {header}? (a command, not a query)")
        if not query and not entry.set_:
            raise ScpiError(-113, f"Undefined header; {header} (a query only)")
        params = [p for p in split_units(rest, ",")] if rest else []
        if params and any(p == "" for p in params):
            raise ScpiError(-102, "Syntax error; empty parameter")
        reply = entry.handler(ScpiCall(query, params, suffixes))
        return reply, tokens[:-1]


def _match_nodes(
    nodes: list[_Node], i: int, toks: list[tuple[str, int]], j: int, suf: list[int]
) -> list[int] | None:
    if i == len(nodes):
        return suf if j == len(toks) else None
    node = nodes[i]
    if j < len(toks) and _mnemonic_match(toks[j][0], node.spelled):
        got = _match_nodes(nodes, i + 1, toks, j + 1, [*suf, toks[j][1]])
        if got is not None:
            return got
    if j < len(toks) and toks[j][1] == 1 and _mnemonic_match(
        toks[j][0] + "1", node.spelled
    ):
        # a mnemonic that ends in a digit in the manual (e.g. "NVBuffer1") is not a suffix
        got = _match_nodes(nodes, i + 1, toks, j + 1, [*suf, 1])
        if got is not None:
            return got
    if node.optional:
        return _match_nodes(nodes, i + 1, toks, j, [*suf, 1])
    return None


def run_message(
    line: str,
    tree: ScpiTree,
    common: Callable[[str, str], str | None],
    on_error: Callable[[int, str], None],
) -> list[str]:
    """Execute one SCPI program message; the replies as one line (or none).

    ``common(header, args)`` runs IEEE 488.2 common commands (raise ``KeyError`` for
    an unknown one). Errors go to ``on_error(code, message)`` and the rest of the
    message is skipped (IEEE 488.2 6.1.6.1.1: a parser error discards the message).
    """
    replies: list[str] = []
    path: list[str] = []
    for unit in split_units(line):
        if not unit:
            continue
        try:
            if unit.startswith("*"):
                head, _, args = unit.partition(" ")
                try:
                    r = common(head.upper(), args)
                except KeyError:
                    raise ScpiError(-113, f"Undefined header; {head}") from None
                except ValueError as exc:
                    raise ScpiError(-224, f"Illegal parameter value; {exc}") from None
            else:
                r, path = tree.execute(unit, path)
        except ScpiError as exc:
            on_error(exc.code, exc.message)
            break
        if r is not None:
            replies.append(r)
    return [";".join(replies)] if replies else []
