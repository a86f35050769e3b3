"""``hwloop op``: the DC operating point of a SPICE-subset netlist.

Prints every node voltage (V, ground excluded) in natural order, as a table or, with
``--json``, as one JSON object ``{"node_voltages_v": {...}, "iterations": n,
"max_residual_a": x}``. A missing or malformed netlist, a floating node or a circuit
without an operating point gives a one-line error and exit code 2 (through
:class:`hwloop.errors.HwloopError`).
"""

from __future__ import annotations

import argparse
import json
import math
import re

from hwloop.errors import ConfigError, NetlistError

__all__ = ["natural_key", "register_op", "run_op"]

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[tuple[int | str, ...], str]:
    """Sort key that orders ``n2`` before ``n10`` (digit runs compare as integers)."""
    parts = _DIGITS.split(name)
    return tuple(int(p) if k % 2 else p for k, p in enumerate(parts)), name


def run_op(args: argparse.Namespace) -> int:
    """Solve the netlist named in ``args`` and print the node voltages; return 0."""
    # imported here so that registering the subcommand (done for every hwloop command)
    # does not pay for scipy
    from simulated_device.dcop import solve_op
    from simulated_device.netlist import read_netlist

    if not math.isfinite(args.temp):
        raise ConfigError(f"--temp must be a finite temperature in degC, not {args.temp}")
    netlist = read_netlist(args.netlist)
    if len(netlist.node_names) <= 1:  # ground alone: nothing to solve
        raise NetlistError(
            f"{args.netlist}: the netlist has no elements (only a title line?); SPICE reads "
            "the first line as the title, put the elements (R, D, V, I) after it"
        )
    op = solve_op(
        netlist,
        diodes="ideal" if args.ideal_diodes else "shockley",
        temperature_c=args.temp,
    )
    names = sorted(op.node_voltages_v, key=natural_key)
    volts = op.node_voltages_v
    if args.json:
        print(
            json.dumps(
                {
                    "node_voltages_v": {n: volts[n] for n in names},
                    "iterations": op.iterations,
                    "max_residual_a": op.max_residual_a,
                }
            )
        )
        return 0
    width = max([4, *map(len, names)])
    rows = [f"{'node':<{width}}  voltage_v"]
    rows += [f"{n:<{width}}  {volts[n]: .15g}" for n in names]
    rows.append(
        f"# {len(names)} nodes, {op.diodes} diodes at {op.temperature_c:g} degC, "
        f"{op.iterations} iterations, max KCL residual {op.max_residual_a:.3g} A"
    )
    print("\n".join(rows))
    return 0


def register_op(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``hwloop op``: the DC operating point of a SPICE-subset netlist."""
    p = sub.add_parser(
        "op",
        help="DC operating point of a SPICE-subset netlist (R, D, V, I)",
        description=(
            "Solve the DC operating point of a SPICE-subset netlist (R, D, V, I; C open, "
            "L short) exactly and print every node voltage in volts (ground excluded)."
        ),
    )
    p.add_argument("netlist", metavar="NETLIST", help="path of the SPICE netlist (.cir)")
    p.add_argument(
        "--json",
        action="store_true",
        help='print one JSON object {"node_voltages_v": {...}, "iterations": n, '
        '"max_residual_a": x}',
    )
    p.add_argument(
        "--ideal-diodes",
        action="store_true",
        help="treat diodes as ideal (v_anode <= v_cathode, forward current >= 0) instead "
        "of Shockley diodes",
    )
    p.add_argument(
        "--temp",
        type=float,
        default=27.0,
        metavar="C",
        help="temperature in degC for the diode thermal voltage and IS (default: 27)",
    )
    p.set_defaults(func=run_op)
