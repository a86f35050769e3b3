"""Noise-model files (written by ``hwloop characterize``) -> emulator options.

A noise-model file is TOML (or JSON) with at least ``read_noise_v``, the additive
read-noise std of one node-voltage sample, V; optionally ``preset`` (a device
preset name) and a ``[read]`` table with the fit ``sigma_v`` (V) and ``relative``
(a multiplicative std relative to ``|v|``). :func:`emulator_options` maps a file
onto the options :func:`simulated_device.board.make_emulated_board` already has
(``read_noise_v``, ``preset``); what those options cannot express (a non-zero
``relative`` term) is returned in a list of notes instead of being dropped
silently.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Any

from hwloop.errors import ConfigError


def read_noise_model(path: str | Path) -> dict[str, Any]:
    """Read and check a noise-model file (TOML, or JSON when the name ends in ``.json``)."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"noise-model file {p} not found; check the path") from None
    try:
        raw: Any = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"noise-model file {p} cannot be parsed: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"noise-model file {p} must hold a table of values")
    sigma = raw.get("read_noise_v")
    if isinstance(sigma, bool) or not isinstance(sigma, int | float):
        raise ConfigError(f"noise-model file {p} needs read_noise_v = <std per sample in V>")
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ConfigError(f"noise-model file {p}: read_noise_v = {sigma} must be finite and >= 0 V")
    return raw


def emulator_options(path: str | Path) -> tuple[dict[str, Any], list[str]]:
    """Emulator options from a noise-model file, and notes on what they leave out.

    Returns:
        ``({"read_noise_v": ..., ["preset": ...]}, notes)``.
    """
    raw = read_noise_model(path)
    opts: dict[str, Any] = {"read_noise_v": float(raw["read_noise_v"])}
    if "preset" in raw:
        opts["preset"] = str(raw["preset"])
    notes: list[str] = []
    read = raw.get("read")
    if isinstance(read, dict):
        rel = float(read.get("relative", 0.0))
        if rel > 0:
            notes.append(
                f"relative read noise {rel:.3g} x |v| is not an emulator option; only the "
                "additive read_noise_v is applied"
            )
    return opts, notes
