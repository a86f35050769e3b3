"""hwloop: hardware-in-the-loop Equilibrium Propagation for resistive-network boards.

The core package: the Device contract (:mod:`hwloop.device`), errors, plugin
discovery, the CLI dispatcher, the session file format (:mod:`hwloop.sessionlog`,
``hwloop inspect``) and what two implementation packages share (signal holding,
the serial board codec, layered-network topology). It imports none of
``instruments``, ``protocols`` or ``simulated_device`` (docs/architecture.md, "What
lives in hwloop").
"""

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
