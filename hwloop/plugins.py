"""Entry-point discovery for subcommands and board backends, and backend option tables.

``hwloop`` never imports ``instruments``, ``protocols`` or ``simulated_device``
directly: each package (and any lab's plugin package) declares its pieces in
its own ``pyproject.toml`` under two entry-point groups:

* ``hwloop.commands``: ``name = "module:register"`` where ``register(subparsers)``
  adds one ``argparse`` subparser and sets ``func`` on it.
* ``hwloop.backends``: ``name = "module:make"`` where ``make(options, rng)``
  returns an object implementing :class:`hwloop.device.Device`.

Backend options travel as an opaque table (``[backend]`` in a TOML config,
``--backend-opt KEY=VALUE`` on the command line). A backend declares the options
it takes next to its factory with :func:`backend` (a tuple of :class:`Option`);
the declared factory validates its table (:func:`validate_options`: unknown keys,
wrong types and out-of-range values are one-line :class:`ConfigError` s naming the
key, its unit and its range) before it runs. ``hwloop backends`` lists the
backends, ``hwloop backends NAME`` the options of one. A factory without a
declaration still loads; its table then reaches it unchecked.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import numpy as np

from hwloop.device import Device
from hwloop.errors import ConfigError

COMMANDS_GROUP = "hwloop.commands"
BACKENDS_GROUP = "hwloop.backends"
DEFAULT_BACKEND = "emulator"
"""The backend a command opens when none is named (the numerical emulator)."""

BackendFactory = Callable[[Mapping[str, Any], np.random.Generator], Device]

_F = TypeVar("_F", bound=Callable[..., Any])

OptionType = Literal["float", "int", "str", "bool", "path"]


@dataclass(frozen=True)
class Option:
    """One option a backend takes.

    Attributes:
        name: key in the option table (``[backend]`` / ``--backend-opt NAME=VALUE``).
        type: ``float``, ``int``, ``str``, ``bool`` or ``path`` (a string naming a
            file; stored resolved to an absolute path so a run resumes from anywhere).
        help: one line: what the option does.
        unit: SI unit of the value (``V``, ``S``, ``s``, ``F``, ``A``; ``1`` for a
            dimensionless number; ``""`` for strings and flags).
        default: the value used when the key is absent (``None``: absent means unset).
        min: smallest allowed value of a number (``None``: unbounded).
        max: largest allowed value of a number (``None``: unbounded).
        min_exclusive: the value must be strictly above ``min``.
        max_exclusive: the value must be strictly below ``max``.
        allow_inf: ``inf`` is allowed (e.g. "no range"); NaN never is.
        choices: allowed values of a string (empty: any string).
        required: the table must hold the key.
        normalise: applied to a checked value (e.g. a file path made absolute, so a run
            resumes from another directory).
    """

    name: str
    type: OptionType
    help: str
    unit: str = ""
    default: Any = None
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    max_exclusive: bool = False
    allow_inf: bool = False
    choices: tuple[str, ...] = ()
    required: bool = False
    normalise: Callable[[Any], Any] | None = None

    def range_text(self) -> str:
        """The allowed values, e.g. ``[0, 1] V``, ``> 0 s`` or ``one of a, b``."""
        unit = "" if self.unit in ("", "1") else f" {self.unit}"
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.type in ("float", "int"):
            lo_b = "(" if self.min_exclusive else "["
            hi_b = ")" if self.max_exclusive else "]"
            inf = " (inf allowed)" if self.allow_inf else ""
            if self.min is not None and self.max is not None:
                return f"{lo_b}{self.min:g}, {self.max:g}{hi_b}{unit}{inf}"
            if self.min is not None:
                return f"{'>' if self.min_exclusive else '>='} {self.min:g}{unit}{inf}"
            if self.max is not None:
                return f"{'<' if self.max_exclusive else '<='} {self.max:g}{unit}{inf}"
            return f"any finite number{unit}{inf}"
        if self.type == "bool":
            return "true or false"
        if self.type == "path":
            return "a file path"
        return "a string"

    def check(self, backend: str, value: Any) -> Any:
        """``value`` converted, checked (see :meth:`_check`) and normalised."""
        checked = self._check(backend, value)
        return checked if self.normalise is None else self.normalise(checked)

    def _check(self, backend: str, value: Any) -> Any:
        """``value`` converted to this option's type and checked against its range.

        Strings (from ``--backend-opt KEY=VALUE``) are parsed as the declared type.

        Raises:
            ConfigError: wrong type or out of range; one line naming the key, unit, range.
        """
        shown = value if isinstance(value, str) and self.type in ("float", "int", "bool") \
            else repr(value)
        where = f"backend {backend} option {self.name} = {shown}"
        fix = f"; pass {self.range_text()} ({self.help})"
        bad = ConfigError(f"{where} must be {self._type_text()}{fix}")
        if self.type == "bool":
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                return value.lower() in ("true", "1")
            if not isinstance(value, bool):
                raise bad
            return value
        if self.type in ("float", "int"):
            num: Any = value
            if isinstance(value, str):
                try:
                    num = int(value) if self.type == "int" else float(value)
                except ValueError:
                    raise bad from None
            if isinstance(num, bool) or not isinstance(num, int | float):
                raise bad
            if self.type == "int":
                if isinstance(num, float):
                    if not num.is_integer():
                        raise bad
                    num = int(num)
            else:
                num = float(num)
            if math.isnan(num) or (math.isinf(num) and not (self.allow_inf and num > 0)):
                raise bad
            low = self.min is not None and (
                num < self.min or (self.min_exclusive and num == self.min))
            high = self.max is not None and (
                num > self.max or (self.max_exclusive and num == self.max))
            if low or high:
                raise ConfigError(f"{where} is out of range{fix}")
            return num
        if not isinstance(value, str):
            raise bad
        if self.choices and value not in self.choices:
            raise ConfigError(f"{where} is not allowed{fix}")
        if self.type == "path":
            if not value:
                raise bad
            return str(Path(value).expanduser().resolve())
        return value

    def _type_text(self) -> str:
        return {"float": "a number", "int": "an integer", "bool": "true or false",
                "path": "a file path", "str": "a string"}[self.type]


ArchHook = Callable[[Mapping[str, Any]], "str | None"]
DetailsHook = Callable[[], list[str]]


def backend(
    options: Iterable[Option],
    *,
    summary: str | None = None,
    arch: ArchHook | None = None,
    details: DetailsHook | None = None,
) -> Callable[[_F], _F]:
    """Declare a backend factory's options (a decorator, used next to the factory).

    The decorated factory validates its table with :func:`validate_options` (defaults
    are filled in) before it runs, and carries ``options`` (the declaration),
    ``summary`` (one line for ``hwloop backends``; default: its docstring's first line)
    and ``arch``: an optional hook that returns the architecture (``"1568-16-10"``) an
    option table implies without opening the board (a board file's network), so a run
    that names no ``arch`` trains the board's own; ``details``: optional further lines
    for ``hwloop backends NAME`` (e.g. the presets and their sources).
    """
    table = tuple(options)
    names = [o.name for o in table]
    if len(set(names)) != len(names):
        raise ValueError(f"backend options declared twice: {names}")

    def wrap(factory: _F) -> _F:
        name = factory.__module__.rsplit(".", 1)[-1]

        def make(opts: Mapping[str, Any], rng: np.random.Generator) -> Any:
            return factory(validate_options(getattr(make, "backend_name", name), table, opts),
                           rng)

        make.__doc__ = factory.__doc__
        make.__name__ = factory.__name__
        make.__qualname__ = factory.__qualname__
        make.__module__ = factory.__module__
        make.options = table  # type: ignore[attr-defined]
        make.arch = arch  # type: ignore[attr-defined]
        make.details = details  # type: ignore[attr-defined]
        make.summary = summary or (factory.__doc__ or "").strip().splitlines()[0]  # type: ignore[attr-defined]
        return cast(_F, make)

    return wrap


def validate_options(
    backend_name: str, declared: Iterable[Option], options: Mapping[str, Any]
) -> dict[str, Any]:
    """Check a backend option table against its declaration; return it with defaults.

    Raises:
        ConfigError: an unknown key, a missing required key, a wrong type or an
            out-of-range value; one line naming the key, its unit and its range.
    """
    decl = {o.name: o for o in declared}
    unknown = sorted(set(options) - set(decl))
    if unknown:
        known = ", ".join(sorted(decl)) or "none"
        raise ConfigError(
            f"backend {backend_name} has no option {unknown[0]!r} (its options: {known}); "
            f"see 'hwloop backends {backend_name}'"
        )
    out: dict[str, Any] = {}
    for name, opt in decl.items():
        value = options.get(name)
        if value is None:
            if opt.required:
                raise ConfigError(
                    f"backend {backend_name} needs option {name} ({opt.help}); pass "
                    f"--backend-opt {name}=VALUE or set it under [backend]"
                )
            out[name] = opt.default
            continue
        out[name] = opt.check(backend_name, value)
    return out


def _group(name: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=name)}


def command_entry_points() -> dict[str, EntryPoint]:
    """Installed subcommands, by name."""
    return _group(COMMANDS_GROUP)


def backend_names() -> list[str]:
    """Names of the installed board backends, sorted."""
    return sorted(_group(BACKENDS_GROUP))


def load_backend(name: str) -> BackendFactory:
    """Return the factory of backend ``name``.

    Raises:
        ConfigError: no installed package provides that backend.
    """
    eps = _group(BACKENDS_GROUP)
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none"
        raise ConfigError(
            f"unknown backend {name!r} (installed: {known}); install the package that "
            f"provides it or pick one of those"
        )
    factory = eps[name].load()
    if hasattr(factory, "options"):
        factory.backend_name = name  # the entry-point name, for its error messages
    return cast(BackendFactory, factory)


def backend_options_declared(name: str) -> tuple[Option, ...] | None:
    """The options backend ``name`` declares (``None``: it declares none)."""
    return cast("tuple[Option, ...] | None", getattr(load_backend(name), "options", None))


def backend_arch(name: str, options: Mapping[str, Any]) -> str | None:
    """The architecture backend ``name`` implies for ``options`` (``None``: none implied)."""
    hook = getattr(load_backend(name), "arch", None)
    return None if hook is None else cast("str | None", hook(options))


def split_assignment(item: str, flag: str, example: str = "") -> tuple[str, str]:
    """``"KEY=VALUE"`` -> ``(key, value)``, dashes in the key read as underscores.

    Raises:
        ConfigError: no ``=`` or an empty key (the message names ``flag``).
    """
    key, sep, raw = item.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise ConfigError(f"{flag} {item!r} must look like KEY=VALUE{example}")
    return key, raw


def parse_option_assignments(
    name: str, items: Iterable[str], flag: str = "--backend-opt"
) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> a table, values parsed by backend ``name``'s declaration.

    Undeclared backends get JSON values where the text is JSON, else the string.

    Raises:
        ConfigError: an item without ``=``, or a value that does not fit (see
            :meth:`Option.check`).
    """
    declared = backend_options_declared(name)
    decl = {o.name: o for o in declared or ()}
    out: dict[str, Any] = {}
    for item in items:
        key, raw = split_assignment(item, flag)
        if key in decl:
            out[key] = decl[key].check(name, raw)
        elif declared is not None:
            validate_options(name, declared, {key: raw})  # raises: unknown key
        else:
            try:
                out[key] = json.loads(raw)
            except json.JSONDecodeError:
                out[key] = raw
    return out


def check_backend_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``options`` for backend ``name`` without opening it; return them normalised.

    Only the keys given are returned (defaults are not filled in), so the table a
    session stores is the one the user wrote.
    """
    declared = backend_options_declared(name)
    if declared is None:
        return dict(options)
    checked = validate_options(name, declared, options)
    return {k: checked[k] for k in options if options[k] is not None}


def open_board(name: str, options: Mapping[str, Any], rng: np.random.Generator) -> Device:
    """Create a board from the backend ``name`` with ``options`` and the run's ``rng``."""
    return load_backend(name)(options, rng)


# ----------------------------------------------------------------------- hwloop backends


def _describe_backend(name: str) -> dict[str, Any]:
    factory = load_backend(name)
    options = getattr(factory, "options", None)
    details = getattr(factory, "details", None)
    return {
        "details": [] if details is None else list(details()),
        "name": name,
        "summary": str(getattr(factory, "summary", (factory.__doc__ or "").strip()
                                .split("\n")[0])),
        "options": None if options is None else [
            {"name": o.name, "type": o.type, "unit": o.unit, "default": o.default,
             "range": o.range_text(), "required": o.required, "help": o.help}
            for o in options
        ],
    }


def _run_backends(args: argparse.Namespace) -> int:
    if args.name is None:
        rows = [_describe_backend(n) for n in backend_names()]
        if args.json:
            print(json.dumps({"group": BACKENDS_GROUP, "backends": [r["name"] for r in rows],
                              "summaries": {r["name"]: r["summary"] for r in rows}}))
        else:
            width = max((len(r["name"]) for r in rows), default=0)
            for r in rows:
                print(f"{r['name']:<{width}}  {r['summary']}")
        return 0
    d = _describe_backend(args.name)
    if args.json:
        print(json.dumps(d, default=str))
        return 0
    print(f"{d['name']}: {d['summary']}")
    if d["options"] is None:
        print("  (declares no options: its table is passed through unchecked)")
        return 0
    print("options (--backend-opt KEY=VALUE or [backend] KEY = VALUE in a config file):")
    for o in d["options"]:
        default = "required" if o["required"] else (
            "unset" if o["default"] is None else f"default {o['default']!r}")
        unit = "" if o["unit"] in ("", "1") else f", {o['unit']}"
        print(f"  {o['name']} ({o['type']}{unit}; {o['range']}; {default}): {o['help']}")
    for line in d["details"]:
        print(line)
    return 0


def register_backends(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``hwloop backends [NAME]``: the installed board backends, or one's options."""
    p = sub.add_parser("backends", help="list the installed board backends (or one's options)",
                       description="Without NAME: every installed backend with one line on "
                       "it. With NAME: the options it takes (name, type, unit, range, default).")
    p.add_argument("name", nargs="?", default=None, help="a backend: list its options")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=_run_backends)
