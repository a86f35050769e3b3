"""Strict configuration from TOML files and command-line overrides, into frozen dataclasses.

A configuration class is a frozen dataclass whose fields have simple types:
``int``, ``float``, ``str``, ``bool``, ``Literal[...]``, ``tuple[float, ...]``
(also ``tuple[int, ...]``) and ``X | None`` of those. :func:`build_config`
checks every key and type and reports the first problem in one line naming
the key and what is expected; unknown keys are errors (a typo must never be
silently ignored). Range checks belong in the class's ``__post_init__`` and
raise :class:`~hwloop.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from hwloop.errors import ConfigError

T = TypeVar("T")


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file.

    Raises:
        ConfigError: missing file or invalid TOML (with the parser's position).
    """
    p = Path(path)
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {p} not found; check the path") from None
    except IsADirectoryError:
        raise ConfigError(f"configuration file {p} is a directory; give a TOML file") from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read configuration file {p} ({exc.strerror or exc}); check its permissions"
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"configuration file {p} is not UTF-8 text (byte {exc.start}); save it as "
            "UTF-8 TOML"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {p} is not valid TOML: {exc}") from None


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is tuple:
        return f"a list of {_type_name(get_args(tp)[0])}"
    if tp is type(None):
        return "none"
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against ``tp`` and return it in canonical form."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(key, value, a)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(f"{key} = {value!r} must be {_type_name(tp)}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{key} = {value!r} must be one of {_type_name(tp)}")
        return value
    if origin is tuple:
        elem = get_args(tp)[0]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} = {value!r} must be {_type_name(tp)}")
        return tuple(_coerce(f"{key}[{i}]", v, elem) for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} = {value!r} must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} = {value!r} must be an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} = {value!r} must be a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} = {value!r} must be a string")
        return value
    raise TypeError(f"unsupported configuration type {tp!r} for {key}")


def build_config(cls: type[T], values: Mapping[str, Any], *, source: str = "configuration") -> T:
    """Build the frozen dataclass ``cls`` from ``values``, strictly.

    Args:
        cls: a dataclass type.
        values: key -> value, e.g. from :func:`read_toml` merged with CLI options.
            Dashes in keys are accepted for underscores.
        source: named in error messages (e.g. the file path).

    Raises:
        ConfigError: unknown key, wrong type, or a range check of the class failed.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for raw_key, value in values.items():
        key = str(raw_key).replace("-", "_")
        if key not in fields:
            close = [k for k in fields if k.startswith(key[:3])]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{source}: unknown key {raw_key!r}{hint}; known keys: {', '.join(sorted(fields))}"
            )
        kwargs[key] = _coerce(f"{source}: {key}", value, hints[key])
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a missing required field
        raise ConfigError(f"{source}: {exc}") from None


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The configuration as a plain dict (tuples become lists), e.g. for TOML or JSON."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def to_toml(values: Mapping[str, Any]) -> str:
    """Serialise a flat mapping of simple values to TOML text (``None`` values omitted)."""
    lines = []
    for k, v in values.items():
        if v is None:
            continue
        lines.append(f"{k} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} to TOML")
