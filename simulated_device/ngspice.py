"""Reading ngspice's DC operating point: the reference that tests and benchmarks compare with.

``OP_CONTROL`` is the ``.control`` block appended to a netlist deck so that ``ngspice -b``
solves the operating point at tight tolerances (reltol 1e-12, vntol 1e-12 V, abstol
1e-18 A, no gmin) and prints every node voltage with 16 digits; :func:`parse_op_print`
reads that printout back. ngspice itself is an external program (``apt-get install
ngspice``); nothing in hwloop runs it at run time.
"""

from __future__ import annotations

import re

__all__ = ["OP_CONTROL", "parse_op_print"]

OP_CONTROL = """.options reltol=1e-12 abstol=1e-18 vntol=1e-12 gmin=0
.control
set numdgt=16
op
print all
quit 0
.endc
.end
"""

# "v(1) = 5.0e+00" for numeric node names, "n3 = 6.9e-01" for the others
_LINE = re.compile(
    r"^\s*(?:v\(([^)\s]+)\)|([^\s=#]+))\s*=\s*([-+]?[0-9.]+(?:e[-+]?\d+)?)\s*$", re.I
)


def parse_op_print(stdout: str) -> dict[str, float]:
    """Node name (lower case) -> voltage, V, from the ``print all`` output of ngspice."""
    volts: dict[str, float] = {}
    for line in stdout.splitlines():
        m = _LINE.match(line)
        if m:
            volts[(m.group(1) or m.group(2)).lower()] = float(m.group(3))
    return volts
