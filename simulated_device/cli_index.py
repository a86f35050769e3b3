"""The ``hwloop`` subcommands of :mod:`simulated_device`, declared without importing them.

See :mod:`protocols.cli_index` (DR-32): entry points of ``hwloop.commands``
point here; only the chosen command's module is imported. Imports nothing but
:mod:`hwloop.cli`.
"""

from __future__ import annotations

from hwloop.cli import LazyCommand

OP = LazyCommand("simulated_device.op_command:register_op",
                 "DC operating point of a SPICE-subset netlist (R, D, V, I)")
SOLVE_DRN = LazyCommand("simulated_device.drn_command:register_solve_drn",
                        "solve one free-phase equilibrium of a deep resistive network")
VIRTUAL_BOARD = LazyCommand(
    "simulated_device.virtual_command:register_virtual_board",
    "serve virtual instruments (serial board or SCPI bench) for a board file",
)
