"""hwloop: hardware-in-the-loop Equilibrium Propagation for resistive-network boards.

The core package: the Device contract (:mod:`hwloop.device`), errors, plugin
discovery, the CLI dispatcher, the session file format (:mod:`hwloop.sessionlog`,
``hwloop inspect``) and what two implementation packages share (signal holding,
the serial board codec, layered-network topology). It imports none of
``instruments``, ``protocols`` or ``simulated_device`` (docs/architecture.md, "What
lives in hwloop").
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hwloop.device import (
        BoardDescription,
        Clamp,
        CurrentNudge,
        Device,
        LayerBlock,
        NodeReading,
        NodeRole,
        ProgramResult,
        ProgramStatus,
        ResistiveNudge,
        SafetyLimits,
        SampleFlag,
    )
    from hwloop.errors import (
        CircuitError,
        ConfigError,
        HwloopError,
        LimitError,
        NetlistError,
        UnsupportedError,
    )

_LAZY = {
    **dict.fromkeys(
        ["BoardDescription", "Clamp", "CurrentNudge", "Device", "LayerBlock", "NodeReading",
         "NodeRole", "ProgramResult", "ProgramStatus", "ResistiveNudge", "SafetyLimits",
         "SampleFlag"],
        "hwloop.device",
    ),
    **dict.fromkeys(
        ["CircuitError", "ConfigError", "HwloopError", "LimitError", "NetlistError",
         "UnsupportedError"],
        "hwloop.errors",
    ),
}


def __getattr__(name: str) -> object:
    """Import an exported name on first use.

    ``import hwloop`` stays free of numpy: ``hwloop --help`` needs none of it
    (DR-32).
    """
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hwloop' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "BoardDescription",
    "CircuitError",
    "Clamp",
    "ConfigError",
    "CurrentNudge",
    "Device",
    "HwloopError",
    "LayerBlock",
    "LimitError",
    "NetlistError",
    "NodeReading",
    "NodeRole",
    "ProgramResult",
    "ProgramStatus",
    "ResistiveNudge",
    "SafetyLimits",
    "SampleFlag",
    "UnsupportedError",
    "__version__",
]
