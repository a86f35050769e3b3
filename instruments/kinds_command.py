"""``hwloop instruments``: the installed instrument kinds, and one kind's options.

``hwloop instruments`` lists every kind a board file can name (``kind = "..."``), the
roles it can play and a line about it; ``hwloop instruments KIND`` lists its address
key and options (name, type, unit, default, help). ``--json`` prints the same as JSON.
"""

from __future__ import annotations

import argparse
import json
import math

from instruments.kinds import GROUP, ROLE_PROTOCOLS, InstrumentKind, installed_kinds, load_kind

__all__ = ["register_instruments"]


def _roles(kind: InstrumentKind) -> list[str]:
    return [r for r in ROLE_PROTOCOLS if kind.plays(r)]


def _default(value: object) -> object:
    """The default as shown: ``-`` for none (the help says what applies), ``""`` quoted."""
    if value is None or (isinstance(value, float) and math.isinf(value)):
        return "-"
    return '""' if value == "" else value


def _describe(kind: InstrumentKind) -> dict[str, object]:
    return {
        "kind": kind.name,
        "help": kind.help,
        "roles": _roles(kind),
        "address": [kind.address_key, *kind.extra_address_keys],
        "options": [
            {"name": o.name, "type": o.type, "unit": o.unit, "default": _default(o.default),
             "help": o.help}
            for o in kind.options
        ],
    }


def _run(args: argparse.Namespace) -> int:
    if args.kind is None:
        kinds = installed_kinds()
        if args.json:
            print(json.dumps({"group": GROUP, "kinds": {
                n: {"roles": _roles(k), "help": k.help} for n, k in kinds.items()}}))
            return 0
        for name, k in kinds.items():
            print(f"{name:18s} {', '.join(_roles(k)):42s} {k.help}")
        return 0
    d = _describe(load_kind(args.kind))
    if args.json:
        print(json.dumps(d, default=str))
        return 0
    print(f"{d['kind']}: {d['help']}")
    print(f"  roles:   {', '.join(d['roles'])}")  # type: ignore[arg-type]
    print(f"  address: {', '.join(d['address'])}")  # type: ignore[arg-type]
    print("  options ([instruments.NAME.options]):")
    for o in d["options"]:  # type: ignore[attr-defined]
        unit = f" {o['unit']}" if o["unit"] else ""
        print(f"    {o['name']:18s} {o['type']:8s} default {o['default']!s}{unit}: {o['help']}")
    return 0


def register_instruments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``hwloop instruments [KIND]``."""
    p = sub.add_parser("instruments", help="list the installed instrument kinds (board files)",
                       description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("kind", nargs="?", help="show this kind's roles, address and options")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=_run)
