"""Device models of the board emulator: read noise plus write model, and the presets.

A :class:`DeviceModel` pairs the node-voltage read noise
(:class:`~simulated_device.read_noise.ReadNoise`, :mod:`simulated_device.read_noise`)
with the conductance write model (:class:`~simulated_device.write_model.WriteModel`
and the device state :class:`~simulated_device.write_model.DeviceArray`,
:mod:`simulated_device.write_model`). :data:`PRESETS` holds ready-made models, read
from the data files in ``simulated_device/presets/`` (ideal, reram, pcm, taox, each
with its source; format: :mod:`hwloop.device_preset`); :func:`get_preset` also reads
a user's own preset file by path. The three classes are re-exported here.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from hwloop.device_preset import parse_preset, read_preset
from hwloop.errors import ConfigError
from simulated_device.read_noise import ReadNoise
from simulated_device.write_model import DeviceArray, WriteModel

__all__ = [
    "PRESETS",
    "PRESET_SOURCES",
    "DeviceArray",
    "DeviceModel",
    "ReadNoise",
    "WriteModel",
    "get_preset",
    "model_from_preset",
    "preset_tables",
]


@dataclass(frozen=True)
class DeviceModel:
    """A named device kind: node-read noise plus conductance write model.

    Attributes:
        name: preset or user name.
        read: node-voltage measurement noise.
        write: pulsed conductance update model of the crosspoints.

    """

    name: str
    read: ReadNoise = field(default_factory=ReadNoise)
    write: WriteModel = field(default_factory=WriteModel)


def model_from_preset(data: Mapping[str, Any]) -> DeviceModel:
    """A :class:`DeviceModel` from a parsed preset (:func:`hwloop.device_preset.parse_preset`).

    Raises:
        ConfigError: a value the models refuse (one line naming the field).
    """
    read = dict(data["read"])
    write = dict(data["write"])
    if "adc_range_v" in read:
        read["adc_range_v"] = float(read["adc_range_v"])
    return DeviceModel(name=str(data["name"]), read=ReadNoise(**read), write=WriteModel(**write))


def preset_tables(model: DeviceModel) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``[read]`` and ``[write]`` tables of ``model`` (for :func:`preset_toml`)."""
    read = {f.name: getattr(model.read, f.name) for f in dataclasses.fields(model.read)}
    write = {f.name: getattr(model.write, f.name) for f in dataclasses.fields(model.write)}
    return read, write


_PRESET_DIR = resources.files("simulated_device") / "presets"


def _load_packaged() -> dict[str, tuple[DeviceModel, str]]:
    out: dict[str, tuple[DeviceModel, str]] = {}
    for entry in sorted(_PRESET_DIR.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            data = parse_preset(entry.read_text(encoding="utf-8"), f"presets/{entry.name}")
            out[data["name"]] = (model_from_preset(data), data["source"])
    return out


_PACKAGED = _load_packaged()

PRESETS: Mapping[str, DeviceModel] = types.MappingProxyType(
    {k: m for k, (m, _) in _PACKAGED.items()})
"""Ready-made device models, read from the data files shipped in
``simulated_device/presets/`` (each names its source).

* ``"ideal"``: no read noise, continuous noiseless device with ``g`` in ``[0, inf)``.
* ``"reram"``: the moderately realistic ReRAM-on-CMOS defaults of the
  docs/devices.md §6 (cited field by field in the file): G in
  1..100 µS, 100 soft-bound states, c2c 0.3, step d2d 0.3, asymmetry 0 ± 0.05
  d2d, bounds d2d 0.2, write noise 2 % of range, 1 % stuck, 1 % conductance read
  noise, no drift; node reads through a 16-bit ±10 V ADC with 1 LSB additive
  noise. Stuck devices keep their initial conductance (a simplification of the
  sources' "stuck at random G", docs/devices.md §1.4: the emulator chooses the initial values).
* ``"pcm"``: phase-change memory (0.25..25 µS, 200 states, c2c 0.6, drift
  exponent 0.05 at t0 = 20 s, 1.75 % read noise).
* ``"taox"``: TaOx memristors on CMOS (0..150 µS, 30 write-verify levels, 2.6 %
  write noise).
"""

PRESET_SOURCES: Mapping[str, str] = types.MappingProxyType(
    {k: src for k, (_, src) in _PACKAGED.items()})
"""Where each packaged preset's numbers come from."""


def get_preset(name: str) -> DeviceModel:
    """Return the preset device model called ``name``, or read the preset file ``name``.

    Raises:
        ConfigError: neither a packaged preset nor a readable preset file (the message
            lists the known presets).

    """
    if name in PRESETS:
        return PRESETS[name]
    if name.endswith(".toml") or "/" in name or Path(name).is_file():
        return model_from_preset(read_preset(name))
    known = ", ".join(sorted(PRESETS))
    raise ConfigError(
        f"unknown device preset {name!r}; known presets: {known}, or a preset file path "
        "(a .toml file as written by hwloop characterize)")
