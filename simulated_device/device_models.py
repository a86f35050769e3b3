"""Device models of the board emulator: read noise plus write model, and the presets.

A :class:`DeviceModel` pairs the node-voltage read noise
(:class:`~simulated_device.read_noise.ReadNoise`, :mod:`simulated_device.read_noise`)
with the conductance write model (:class:`~simulated_device.write_model.WriteModel`
and the device state :class:`~simulated_device.write_model.DeviceArray`,
:mod:`simulated_device.write_model`). :data:`PRESETS` holds ready-made models
("ideal" and "reram"; the numbers of the latter are the defaults of the
device-models doc section 6). The three classes are re-exported here.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field

from hwloop.errors import ConfigError
from simulated_device.read_noise import ReadNoise
from simulated_device.write_model import DeviceArray, WriteModel

__all__ = [
    "PRESETS",
    "DeviceArray",
    "DeviceModel",
    "ReadNoise",
    "WriteModel",
    "get_preset",
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


_IDEAL = DeviceModel(name="ideal", read=ReadNoise(), write=WriteModel())

_RERAM = DeviceModel(
    name="reram",
    # Node reads: bench ADC, 16 bit on ±10 V, with 1 LSB (= 20 V / 2**16) of
    # additive output noise (doc section 6 rows "ADC resolution" and
    # "output/ADC additive noise").
    read=ReadNoise(sigma_v=20.0 / 2**16, relative=0.0, adc_bits=16, adc_range_v=10.0),
    write=WriteModel(
        g_min_s=1e-6,  # section 6 "min conductance": 1 µS
        g_max_s=100e-6,  # section 6 "max conductance": 100 µS
        n_states=100,  # section 6 "effective pulse states over range": 100
        bound_mode="soft",  # section 6 "update law": soft-bounds
        c2c=0.3,  # section 6 "c2c noise per pulse": 0.3
        d2d=0.3,  # section 6 "d2d spread of step size": 0.3
        up_down=0.0,  # section 6 "up/down asymmetry": 0 (mean) ...
        up_down_d2d=0.05,  # ... d2d 0.05
        bounds_d2d=0.2,  # section 6 "d2d spread of bounds": 0.2
        write_noise=0.02,  # section 6 "write (persistent-vs-apparent) noise": 2 % of range
        stuck_fraction=0.01,  # section 6 "stuck / unresponsive devices": 1 %
        read_relative=0.01,  # section 6 "per-read noise": 1 % relative, fresh every read
        drift_nu=0.0,  # section 6 "drift exponent": 0 for ReRAM
        drift_t0_s=20.0,  # section 6 "drift reference time": 20 s
    ),
)

PRESETS: Mapping[str, DeviceModel] = types.MappingProxyType({"ideal": _IDEAL, "reram": _RERAM})
"""Ready-made device models.

* ``"ideal"``: no read noise, continuous noiseless device with ``g`` in ``[0, inf)``.
* ``"reram"``: the moderately realistic ReRAM-on-CMOS defaults of the
  device-models doc section 6 (cited field by field in the source): G in
  1..100 µS, 100 soft-bound states, c2c 0.3, step d2d 0.3, asymmetry 0 ± 0.05
  d2d, bounds d2d 0.2, write noise 2 % of range, 1 % stuck, 1 % conductance read
  noise, no drift; node reads through a 16-bit ±10 V ADC with 1 LSB additive
  noise. Stuck devices keep their initial conductance (a simplification of the
  doc's "stuck at random G": the emulator chooses the initial values).
"""


def get_preset(name: str) -> DeviceModel:
    """Return the preset device model called ``name``.

    Raises:
        ConfigError: unknown name (the message lists the known presets).

    """
    try:
        return PRESETS[name]
    except KeyError:
        known = ", ".join(sorted(PRESETS))
        raise ConfigError(f"unknown device preset {name!r}; known presets: {known}") from None
