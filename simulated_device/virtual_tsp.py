"""A small interpreter for the Lua subset that TSP instruments (2600B, 707B) accept.

Test Script Processor (TSP) commands are Lua 5.0 chunks (Series 2600B reference
manual, section "Introduction to TSP operation" and "Fundamentals of scripting for
TSP"; 707B reference manual, same sections). This module implements the part of the
language that remote-control clients send, in a bounded way:

* statements: assignment (also several targets), ``local``, function calls as
  statements, ``for i = a, b[, c] do ... end``, ``while``, ``if/elseif/else``,
  ``do ... end``, ``break``, ``;`` or white space between statements;
* expressions: ``nil``, ``true``, ``false``, numbers, strings in single or double
  quotes, ``{}`` tables, arithmetic ``+ - * / % ^``, concatenation ``..``,
  comparisons, ``and``/``or``/``not``, ``#``, indexing ``a.b`` and ``a[b]``, calls
  ``f(...)`` and method calls ``o:f(...)``, several return values;
* the instrument library is made of :class:`TspTable` objects whose entries are
  plain values, :class:`Prop` (checked read/write attributes) or Python callables
  (TSP functions; they return a list of values).

Errors are :class:`TspError` with the manual's codes: -285 for a syntax error (the
chunk is not run at all, as on the instruments), -286 for a run-time error (the
chunk stops there), and instrument codes (e.g. 1102 "Parameter too big") raised by
attribute setters. Loops are bounded by a step budget (a run-time error when spent),
so that no input can keep the instrument busy for ever.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Prop", "TspError", "TspInterpreter", "TspTable", "lua_number", "lua_tostring"]

SYNTAX = -285
RUNTIME = -286
_RT = "TSP Runtime error at line 1:"
STEP_BUDGET = 200_000
"""Statements and loop iterations one chunk may execute (a run-time error beyond)."""


class TspError(Exception):
    """A TSP error: ``code`` and the manual's message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _BreakError(Exception):
    pass


@dataclass
class Prop:
    """A checked attribute of a :class:`TspTable` (``set`` None: read-only)."""

    get: Callable[[], Any]
    set: Callable[[Any], None] | None = None


class TspTable:
    """A Lua table of the instrument library (or a script's own table)."""

    def __init__(self, name: str, entries: dict[Any, Any] | None = None) -> None:
        self.name = name
        self.entries: dict[Any, Any] = dict(entries or {})

    def get(self, key: Any) -> Any:
        """The value at ``key`` (a :class:`Prop` is read)."""
        if isinstance(key, float) and key.is_integer():
            key = int(key)
        v = self.entries.get(key)
        if isinstance(v, Prop):
            return v.get()
        return v

    def set(self, key: Any, value: Any) -> None:
        """Store ``value`` at ``key`` (a :class:`Prop` is checked and written)."""
        if isinstance(key, float) and key.is_integer():
            key = int(key)
        cur = self.entries.get(key)
        if isinstance(cur, Prop):
            if cur.set is None:
                raise TspError(RUNTIME, f"TSP Runtime error: {self.name}.{key} is read-only")
            cur.set(value)
            return
        if key in self.entries and (callable(cur) or isinstance(cur, TspTable)) and (
            self.name != "_G"
        ):
            raise TspError(RUNTIME, f"TSP Runtime error: cannot overwrite {self.name}.{key}")
        if value is None:
            self.entries.pop(key, None)
        else:
            self.entries[key] = value

    def length(self) -> int:
        """Lua's ``#``: the length of the array part."""
        n = 0
        while (n + 1) in self.entries:
            n += 1
        return n


class LuaFunction:
    """A Python function exposed as a TSP function (returns a list of values)."""

    def __init__(self, name: str, fn: Callable[..., list[Any] | None]) -> None:
        self.name = name
        self.fn = fn

    def __call__(self, *args: Any) -> list[Any]:
        out = self.fn(*args)
        return [] if out is None else out


def lua_number(v: Any, what: str = "value") -> float:
    """``v`` as a Lua number (strings convert as in Lua), else a run-time error."""
    if isinstance(v, bool) or v is None:
        raise TspError(RUNTIME, f"TSP Runtime error: {what} is not a number")
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            pass
    raise TspError(RUNTIME, f"TSP Runtime error: {what} is not a number")


def lua_tostring(v: Any, precision: int = 6) -> str:
    """``print`` rendering: numbers with ``precision`` significant digits."""
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        x = float(v)
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return f"{x:.{max(1, precision) - 1}e}"
    if isinstance(v, str):
        return v
    if isinstance(v, TspTable):
        return f"table: 0x{id(v) & 0xFFFFFF:06x}"
    return f"function: 0x{id(v) & 0xFFFFFF:06x}"


# ---------------------------------------------------------------------- tokenizer
_KEYWORDS = {
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "if", "in",
    "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
}
_TOKEN = re.compile(
    r"""(?P<ws>\s+|--[^\n]*)
      | (?P<num>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
      | (?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op>\.\.\.|\.\.|==|~=|<=|>=|[-+*/%^\#<>=(){}\[\];:,.])
    """,
    re.VERBOSE,
)
_ESC = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a"}


def _unescape(body: str) -> str:
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            out.append(_ESC.get(body[i + 1], body[i + 1]))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _tokenize(text: str) -> list[tuple[str, Any]]:
    toks: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise TspError(SYNTAX, f"Syntax error at line 1: unexpected symbol near '{text[pos]}'")
        pos = m.end()
        kind = m.lastgroup
        val = m.group()
        if kind == "ws":
            continue
        if kind == "num":
            toks.append(("num", float(int(val, 16)) if val[:2].lower() == "0x" else float(val)))
        elif kind == "str":
            toks.append(("str", _unescape(val[1:-1])))
        elif kind == "name":
            toks.append(("kw", val) if val in _KEYWORDS else ("name", val))
        else:
            toks.append(("op", val))
    toks.append(("eof", None))
    return toks


# ---------------------------------------------------------------------- parser -> AST
# The AST is made of tuples: (kind, ...). Kept small on purpose.
_BINARY = {
    "or": 1, "and": 2, "<": 3, ">": 3, "<=": 3, ">=": 3, "~=": 3, "==": 3, "..": 4,
    "+": 5, "-": 5, "*": 6, "/": 6, "%": 6, "^": 8,
}
_RIGHT = {"..", "^"}
_UNARY_PRI = 7


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokenize(text)
        self.i = 0

    def peek(self, k: int = 0) -> tuple[str, Any]:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def next(self) -> tuple[str, Any]:
        t = self.toks[self.i]
        self.i = min(self.i + 1, len(self.toks) - 1)
        return t

    def check(self, kind: str, val: Any = None) -> bool:
        t = self.peek()
        return t[0] == kind and (val is None or t[1] == val)

    def accept(self, kind: str, val: Any = None) -> bool:
        if self.check(kind, val):
            self.next()
            return True
        return False

    def expect(self, kind: str, val: Any = None) -> Any:
        if not self.check(kind, val):
            got = self.peek()[1]
            want = val if val is not None else kind
            near = "<eof>" if got is None else got
            raise TspError(SYNTAX, f"Syntax error at line 1: '{want}' expected near '{near}'")
        return self.next()[1]

    def chunk(self) -> list[Any]:
        body = self.block()
        if not self.check("eof"):
            near = self.peek()[1]
            raise TspError(SYNTAX, f"Syntax error at line 1: unexpected symbol near '{near}'")
        return body

    def block(self) -> list[Any]:
        out: list[Any] = []
        while True:
            while self.accept("op", ";"):
                pass
            t = self.peek()
            if t[0] == "eof" or (t[0] == "kw" and t[1] in ("end", "else", "elseif", "until")):
                return out
            out.append(self.statement())

    def statement(self) -> Any:
        t = self.peek()
        if t[0] == "kw":
            kw = t[1]
            if kw == "local":
                self.next()
                if self.check("kw", "function"):
                    raise TspError(SYNTAX, "Syntax error at line 1: functions are not supported")
                names = [self.expect("name")]
                while self.accept("op", ","):
                    names.append(self.expect("name"))
                exprs = self.exprlist() if self.accept("op", "=") else []
                return ("local", names, exprs)
            if kw == "for":
                self.next()
                var = self.expect("name")
                self.expect("op", "=")
                a = self.expr()
                self.expect("op", ",")
                b = self.expr()
                c = self.expr() if self.accept("op", ",") else ("const", 1.0)
                self.expect("kw", "do")
                body = self.block()
                self.expect("kw", "end")
                return ("for", var, a, b, c, body)
            if kw == "while":
                self.next()
                cond = self.expr()
                self.expect("kw", "do")
                body = self.block()
                self.expect("kw", "end")
                return ("while", cond, body)
            if kw == "if":
                self.next()
                arms = []
                cond = self.expr()
                self.expect("kw", "then")
                arms.append((cond, self.block()))
                other: list[Any] = []
                while True:
                    if self.accept("kw", "elseif"):
                        cond = self.expr()
                        self.expect("kw", "then")
                        arms.append((cond, self.block()))
                        continue
                    if self.accept("kw", "else"):
                        other = self.block()
                    self.expect("kw", "end")
                    return ("if", arms, other)
            if kw == "do":
                self.next()
                body = self.block()
                self.expect("kw", "end")
                return ("do", body)
            if kw == "break":
                self.next()
                return ("break",)
            raise TspError(SYNTAX, f"Syntax error at line 1: unexpected symbol near '{kw}'")
        target = self.suffixed()
        if self.check("op", "=") or self.check("op", ","):
            targets = [target]
            while self.accept("op", ","):
                targets.append(self.suffixed())
            self.expect("op", "=")
            for tg in targets:
                if tg[0] not in ("name", "index"):
                    raise TspError(SYNTAX, "Syntax error at line 1: cannot assign to a call")
            return ("assign", targets, self.exprlist())
        if target[0] not in ("call", "method"):
            near = self.peek()[1]
            raise TspError(SYNTAX, f"Syntax error at line 1: '=' expected near '{near}'")
        return ("callstat", target)

    def exprlist(self) -> list[Any]:
        out = [self.expr()]
        while self.accept("op", ","):
            out.append(self.expr())
        return out

    def primary(self) -> Any:
        if self.check("name"):
            return ("name", self.next()[1])
        if self.accept("op", "("):
            e = self.expr()
            self.expect("op", ")")
            return ("paren", e)
        near = self.peek()[1]
        raise TspError(SYNTAX, f"Syntax error at line 1: unexpected symbol near '{near}'")

    def suffixed(self) -> Any:
        e = self.primary()
        while True:
            if self.accept("op", "."):
                e = ("index", e, ("const", self.expect("name")))
            elif self.accept("op", "["):
                k = self.expr()
                self.expect("op", "]")
                e = ("index", e, k)
            elif self.accept("op", ":"):
                name = self.expect("name")
                e = ("method", e, name, self.args())
            elif self.check("op", "(") or self.check("str"):
                e = ("call", e, self.args())
            else:
                return e

    def args(self) -> list[Any]:
        if self.check("str"):
            return [("const", self.next()[1])]
        self.expect("op", "(")
        if self.accept("op", ")"):
            return []
        out = self.exprlist()
        self.expect("op", ")")
        return out

    def simple(self) -> Any:
        t = self.peek()
        if t[0] == "num" or t[0] == "str":
            self.next()
            return ("const", t[1])
        if t[0] == "kw" and t[1] in ("nil", "true", "false"):
            self.next()
            return ("const", {"nil": None, "true": True, "false": False}[t[1]])
        if self.accept("op", "{"):
            items = []
            while not self.check("op", "}"):
                items.append(self.expr())
                if not (self.accept("op", ",") or self.accept("op", ";")):
                    break
            self.expect("op", "}")
            return ("table", items)
        if t[0] == "kw" and t[1] == "function":
            raise TspError(SYNTAX, "Syntax error at line 1: functions are not supported")
        return self.suffixed()

    def expr(self, limit: int = 0) -> Any:
        left: Any
        t = self.peek()
        if (t[0] == "kw" and t[1] == "not") or (t[0] == "op" and t[1] in ("-", "#")):
            self.next()
            left = ("unop", t[1], self.expr(_UNARY_PRI))
        else:
            left = self.simple()
        while True:
            t = self.peek()
            op = t[1] if t[0] in ("op", "kw") else None
            pri = _BINARY.get(op) if isinstance(op, str) else None
            if pri is None or pri <= limit:
                return left
            self.next()
            right = self.expr(pri - 1 if op in _RIGHT else pri)
            left = ("binop", op, left, right)


# ---------------------------------------------------------------------- evaluator
class TspInterpreter:
    """Runs TSP chunks against a global table.

    Args:
        globals_: the global environment (the instrument library).
        output: called with each line the chunk prints.
        precision: a callable giving ``format.asciiprecision`` (digits of printed numbers).
    """

    def __init__(
        self,
        globals_: TspTable,
        output: Callable[[str], None],
        precision: Callable[[], int] = lambda: 6,
    ) -> None:
        self.g = globals_
        self.output = output
        self.precision = precision
        self.steps = 0

    def run(self, text: str) -> None:
        """Parse ``text`` (a syntax error: nothing runs) and execute it."""
        ast = _Parser(text).chunk()
        self.steps = 0
        try:
            self._block(ast, [{}])
        except _BreakError:
            raise TspError(SYNTAX, "Syntax error at line 1: no loop to break") from None
        except RecursionError:
            raise TspError(RUNTIME, "TSP Runtime error: stack overflow") from None

    # -------------------------------------------------------------- statements
    def _tick(self) -> None:
        self.steps += 1
        if self.steps > STEP_BUDGET:
            raise TspError(RUNTIME, "TSP Runtime error: execution budget exceeded")

    def _block(self, stmts: list[Any], scopes: list[dict[str, Any]]) -> None:
        scopes = [*scopes, {}]
        for s in stmts:
            self._tick()
            self._stat(s, scopes)

    def _stat(self, s: Any, scopes: list[dict[str, Any]]) -> None:
        kind = s[0]
        if kind == "assign":
            values = self._exprlist(s[2], scopes)
            for k, tg in enumerate(s[1]):
                self._store(tg, values[k] if k < len(values) else None, scopes)
        elif kind == "local":
            values = self._exprlist(s[2], scopes)
            for k, nm in enumerate(s[1]):
                scopes[-1][nm] = values[k] if k < len(values) else None
        elif kind == "callstat":
            self._call(s[1], scopes)
        elif kind == "for":
            _, var, a, b, c, body = s
            lo = lua_number(self._eval(a, scopes), "'for' initial value")
            hi = lua_number(self._eval(b, scopes), "'for' limit")
            st = lua_number(self._eval(c, scopes), "'for' step")
            if st == 0:
                raise TspError(RUNTIME, "TSP Runtime error: 'for' step is zero")
            x = lo
            try:
                while (st > 0 and x <= hi) or (st < 0 and x >= hi):
                    self._tick()
                    self._block(body, [*scopes, {var: x}])
                    x += st
            except _BreakError:
                pass
        elif kind == "while":
            try:
                while _truthy(self._eval(s[1], scopes)):
                    self._tick()
                    self._block(s[2], scopes)
            except _BreakError:
                pass
        elif kind == "if":
            for cond, body in s[1]:
                if _truthy(self._eval(cond, scopes)):
                    self._block(body, scopes)
                    return
            self._block(s[2], scopes)
        elif kind == "do":
            self._block(s[1], scopes)
        elif kind == "break":
            raise _BreakError

    def _store(self, tg: Any, value: Any, scopes: list[dict[str, Any]]) -> None:
        if tg[0] == "name":
            for sc in reversed(scopes):
                if tg[1] in sc:
                    sc[tg[1]] = value
                    return
            self.g.set(tg[1], value)
            return
        obj = self._eval(tg[1], scopes)
        key = self._eval(tg[2], scopes)
        if not isinstance(obj, TspTable):
            raise TspError(
                RUNTIME, f"TSP Runtime error at line 1: attempt to index {_describe(tg[1])}"
            )
        obj.set(key, value)

    # -------------------------------------------------------------- expressions
    def _exprlist(self, exprs: list[Any], scopes: list[dict[str, Any]]) -> list[Any]:
        out: list[Any] = []
        for k, e in enumerate(exprs):
            if k == len(exprs) - 1 and e[0] in ("call", "method"):
                out += self._call(e, scopes)
            else:
                out.append(self._eval(e, scopes))
        return out

    def _call(self, e: Any, scopes: list[dict[str, Any]]) -> list[Any]:
        if e[0] == "method":
            obj = self._eval(e[1], scopes)
            if not isinstance(obj, TspTable):
                raise TspError(RUNTIME, f"{_RT} attempt to index {_describe(e[1])}")
            fn = obj.get(e[2])
            args = [obj, *self._exprlist(e[3], scopes)]
            what = e[2]
        else:
            fn = self._eval(e[1], scopes)
            args = self._exprlist(e[2], scopes)
            what = _describe(e[1])
        if not callable(fn):
            nil = " (a nil value)" if fn is None else ""
            raise TspError(RUNTIME, f"{_RT} attempt to call {what}{nil}")
        result = fn(*args)
        return list(result) if result is not None else []

    def _eval(self, e: Any, scopes: list[dict[str, Any]]) -> Any:
        kind = e[0]
        if kind == "const":
            return e[1]
        if kind == "name":
            for sc in reversed(scopes):
                if e[1] in sc:
                    return sc[e[1]]
            return self.g.get(e[1])
        if kind == "paren":
            return self._eval(e[1], scopes)
        if kind == "index":
            obj = self._eval(e[1], scopes)
            if not isinstance(obj, TspTable):
                nil = " (a nil value)" if obj is None else ""
                raise TspError(RUNTIME, f"{_RT} attempt to index {_describe(e[1])}{nil}")
            return obj.get(self._eval(e[2], scopes))
        if kind in ("call", "method"):
            out = self._call(e, scopes)
            return out[0] if out else None
        if kind == "table":
            t = TspTable("table")
            for k, item in enumerate(e[1]):
                t.entries[k + 1] = self._eval(item, scopes)
            return t
        if kind == "unop":
            v = self._eval(e[2], scopes)
            if e[1] == "not":
                return not _truthy(v)
            if e[1] == "-":
                return -lua_number(v, "operand of '-'")
            if isinstance(v, str):
                return float(len(v))
            if isinstance(v, TspTable):
                return float(v.length())
            raise TspError(RUNTIME, "TSP Runtime error at line 1: attempt to get length")
        if kind == "binop":
            op = e[1]
            if op == "and":
                a = self._eval(e[2], scopes)
                return self._eval(e[3], scopes) if _truthy(a) else a
            if op == "or":
                a = self._eval(e[2], scopes)
                return a if _truthy(a) else self._eval(e[3], scopes)
            a = self._eval(e[2], scopes)
            b = self._eval(e[3], scopes)
            return _binop(op, a, b, self.precision())
        raise TspError(RUNTIME, "TSP Runtime error at line 1: bad expression")


def _truthy(v: Any) -> bool:
    return v is not None and v is not False


def _describe(e: Any) -> str:
    if e[0] == "name":
        return f"global '{e[1]}'"
    if e[0] == "index" and e[2][0] == "const":
        return f"field '{e[2][1]}'"
    return "an expression"


def _binop(op: str, a: Any, b: Any, precision: int) -> Any:
    if op == "==":
        return (a == b and type(a) is type(b)) or (
            isinstance(a, (int, float)) and isinstance(b, (int, float)) and a == b
            and not isinstance(a, bool) and not isinstance(b, bool)
        )
    if op == "~=":
        return not _binop("==", a, b, precision)
    if op == "..":
        if isinstance(a, (str, int, float)) and not isinstance(a, bool) and isinstance(
            b, (str, int, float)
        ) and not isinstance(b, bool):
            fa = a if isinstance(a, str) else _num_text(float(a))
            fb = b if isinstance(b, str) else _num_text(float(b))
            return fa + fb
        raise TspError(RUNTIME, "TSP Runtime error at line 1: attempt to concatenate")
    if op in ("<", ">", "<=", ">="):
        if isinstance(a, str) and isinstance(b, str):
            pa, pb = a, b
            return {"<": pa < pb, ">": pa > pb, "<=": pa <= pb, ">=": pa >= pb}[op]
        x, y = lua_number(a, "operand"), lua_number(b, "operand")
        return {"<": x < y, ">": x > y, "<=": x <= y, ">=": x >= y}[op]
    x, y = lua_number(a, "operand"), lua_number(b, "operand")
    try:
        if op == "+":
            return x + y
        if op == "-":
            return x - y
        if op == "*":
            return x * y
        if op == "/":
            return x / y if y != 0 else (math.copysign(math.inf, x) if x else math.nan)
        if op == "%":
            return x - math.floor(x / y) * y if y != 0 else math.nan
        if op == "^":
            return float(x**y) if not (x < 0 and not float(y).is_integer()) else math.nan
    except OverflowError:
        return math.inf
    raise TspError(RUNTIME, f"TSP Runtime error at line 1: unknown operator {op}")


def _num_text(x: float) -> str:
    """Lua's number-to-string for concatenation (``%.14g``)."""
    return f"{x:.14g}"
