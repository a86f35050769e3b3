"""Exception types shared by every hwloop package.

The CLI turns any :class:`HwloopError` into a one-line message on stderr and exit
code 2, with no traceback. Each message names the problem and, where there is
one, the fix.
"""

from __future__ import annotations


class HwloopError(Exception):
    """Base class for errors caused by user input or by the state of the board.

    The message must be one line that names the problem and the fix.
    """


class ConfigError(HwloopError):
    """A configuration value, command-line option or input file is invalid."""


class NetlistError(ConfigError):
    """A SPICE netlist could not be read; the message carries the line number."""


class LimitError(HwloopError):
    """A request would exceed a safety limit; nothing was applied to the board."""


class UnsupportedError(HwloopError):
    """The backend cannot do what was asked (for example a complex-valued nudge)."""


class CircuitError(HwloopError):
    """The circuit has no unique operating point (floating node, source loop, ...)."""
