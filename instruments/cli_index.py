"""The ``hwloop`` subcommands of :mod:`instruments`, declared without importing them.

Each name is a :class:`hwloop.cli.LazyCommand` that an entry point of the
``hwloop.commands`` group points at: ``hwloop --help`` lists it from its help alone,
and only the chosen command's module is imported. Keep the help text equal to the one
the command registers (tests/test_cli_startup.py checks). This module imports nothing
but :mod:`hwloop.cli`.
"""

from __future__ import annotations

from hwloop.cli import LazyCommand

INSTRUMENTS = LazyCommand("instruments.kinds_command:register_instruments",
                          "list the installed instrument kinds (board files)")
