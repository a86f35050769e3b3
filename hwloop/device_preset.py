"""The device-preset file format: what the emulator reads and ``hwloop characterize`` writes.

A preset file is TOML with a ``name``, a ``source`` (where the numbers come from),
a ``[read]`` table (the node-voltage measurement chain) and a ``[write]`` table (the
conductance write model). Keys left out take the model's neutral default (no noise,
no quantisation, a continuous ideal device). The format lives in ``hwloop`` because
two packages share it: ``simulated_device`` reads it into its device model and
``protocols.characterize`` writes it from measurements, so a characterised board
becomes a preset (``--backend-opt preset=PATH``).

``[read]`` keys (:data:`READ_KEYS`): ``sigma_v`` (additive Gaussian std per sample,
V), ``relative`` (multiplicative std relative to ``|v|``), ``adc_bits`` (converter
resolution, bits; absent: no quantisation), ``adc_range_v`` (converter full scale,
V; ``inf``: none), ``slow_v`` (slow additive std, V: one draw per node per read,
shared by its repeat samples; absent: 0).

``[write]`` keys (:data:`WRITE_KEYS`): ``g_min_s``, ``g_max_s`` (bounds, S),
``n_states`` (pulse states over the range; absent: continuous device),
``bound_mode`` (``"hard"`` or ``"soft"``), ``c2c``, ``d2d``, ``up_down``,
``up_down_d2d``, ``bounds_d2d``, ``write_noise`` (fraction of the range),
``stuck_fraction``, ``read_relative`` (conductance read noise, relative),
``drift_nu`` (power-law drift exponent), ``drift_t0_s`` (drift reference time, s),
``drift_nu_d2d`` (device-to-device std of the drift exponent).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hwloop.errors import ConfigError

READ_KEYS: dict[str, type] = {"sigma_v": float, "relative": float, "adc_bits": int,
                              "adc_range_v": float, "slow_v": float}
"""``[read]`` keys and their types."""

WRITE_KEYS: dict[str, type] = {
    "g_min_s": float, "g_max_s": float, "n_states": float, "bound_mode": str, "c2c": float,
    "d2d": float, "up_down": float, "up_down_d2d": float, "bounds_d2d": float,
    "write_noise": float, "stuck_fraction": float, "read_relative": float, "drift_nu": float,
    "drift_t0_s": float, "drift_nu_d2d": float,
}
"""``[write]`` keys and their types."""


def _check_table(path: str, table: str, raw: Any, keys: Mapping[str, type]) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"preset file {path}: [{table}] must be a table of KEY = VALUE")
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if k not in keys:
            raise ConfigError(
                f"preset file {path}: unknown key {table}.{k}; known: {', '.join(keys)}")
        want = keys[k]
        if want is str:
            ok = isinstance(v, str)
        elif want is int:
            ok = isinstance(v, int) and not isinstance(v, bool)
        else:
            ok = isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v)
        if not ok:
            kind = {str: "a string", int: "an integer", float: "a number"}[want]
            raise ConfigError(f"preset file {path}: {table}.{k} = {v!r} must be {kind}")
        out[k] = float(v) if want is float and not isinstance(v, int) else v
    return out


def parse_preset(text: str, path: str) -> dict[str, Any]:
    """Parse preset-file text: ``{"name", "source", "read": {...}, "write": {...}}``.

    Raises:
        ConfigError: not TOML, unknown tables or keys, wrong types (one line each).
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"preset file {path} is not valid TOML: {exc}") from None
    extra = sorted(set(raw) - {"name", "source", "read", "write"})
    if extra:
        raise ConfigError(f"preset file {path}: unknown key {extra[0]!r}; a preset has name, "
                          "source, [read] and [write]")
    name = raw.get("name", Path(path).stem)
    source = raw.get("source", "")
    if not isinstance(name, str) or not isinstance(source, str):
        raise ConfigError(f"preset file {path}: name and source must be strings")
    return {"name": name, "source": source,
            "read": _check_table(path, "read", raw.get("read"), READ_KEYS),
            "write": _check_table(path, "write", raw.get("write"), WRITE_KEYS)}


def read_preset(path: str | Path) -> dict[str, Any]:
    """Read a preset file (see :func:`parse_preset`).

    Raises:
        ConfigError: missing, unreadable or not UTF-8, or not a valid preset.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"preset file {p} not found; give a preset name or an existing "
                          "file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"preset file {p} cannot be read ({type(exc).__name__}); give a "
                          "UTF-8 TOML file") from None
    return parse_preset(text, str(p))


def _value(v: Any) -> str:
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return repr(v)


def preset_toml(name: str, source: str, read: Mapping[str, Any], write: Mapping[str, Any],
                comments: Mapping[str, str] | None = None) -> str:
    """Preset-file text; ``None`` values are left out, ``comments`` annotate keys."""
    notes = comments or {}
    lines = [f"name = {_value(name)}", f"source = {_value(source)}"]
    for table, values, keys in (("read", read, READ_KEYS), ("write", write, WRITE_KEYS)):
        lines += ["", f"[{table}]"]
        for k, v in values.items():
            if k not in keys:
                raise ValueError(f"unknown preset key {table}.{k}")
            if v is None:
                continue
            note = notes.get(f"{table}.{k}")
            lines.append(f"{k} = {_value(v)}" + (f"  # {note}" if note else ""))
    text = "\n".join(lines) + "\n"
    parse_preset(text, name)  # what is written reads back
    return text
