"""Per-command fault rules for the virtual instruments (``hwloop virtual-board --fault``).

A :class:`FaultRule` names a fault kind, the commands it applies to (a
case-insensitive substring of the command line or of the board-protocol command
name; ``*`` for every command), a count (how many times it fires; ``None``: no
limit), a rate (the probability that a matching exchange is hit, drawn from the
bench's own seeded generator) and a start (``after`` exchanges of that instrument
have passed first).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FaultRule", "ReplyPlan", "apply_scpi_rules"]


@dataclass
class FaultRule:
    """One fault rule (see the module docstring); ``value`` is kind-specific."""

    kind: str
    match: str = "*"
    count: int | None = 1
    rate: float = 1.0
    after: int = 0
    value: float = 0.0
    fired: int = 0
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def matches(self, command: str) -> bool:
        """True when the rule applies to ``command``."""
        return self.match == "*" or self.match.lower() in command.lower()

    def fire(self, command: str, exchange: int) -> bool:
        """True when the rule hits this exchange (and counts it)."""
        if exchange <= self.after or not self.matches(command):
            return False
        if self.count is not None and self.fired >= self.count:
            return False
        if self.rate < 1.0 and self.rng.random() >= self.rate:
            return False
        self.fired += 1
        return True


@dataclass
class ReplyPlan:
    """What the server does with one exchange."""

    skip_execution: bool = False
    disconnect: bool = False
    drop: bool = False
    garble: bool = False
    truncate: bool = False
    delay_s: float = 0.0


def apply_scpi_rules(bench: Any, name: str, device: Any, line: str, exchange: int) -> ReplyPlan:
    """Fire the rules of SCPI instrument ``name`` on one command line."""
    plan = ReplyPlan()
    for rule in device.faults.rules:
        if not rule.fire(line, exchange):
            continue
        k = rule.kind
        if k in ("timeout", "drop"):
            plan.drop = True
        elif k == "delay":
            plan.delay_s += rule.value
        elif k == "garble":
            plan.garble = True
        elif k == "truncate":
            plan.truncate = True
    return plan
