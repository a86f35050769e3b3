"""Per-command fault rules for the virtual instruments (``hwloop virtual-board --fault``).

A :class:`FaultRule` names a fault kind, the commands it applies to (a
case-insensitive substring of the command line or of the board-protocol command
name; ``*`` for every command), a count (how many times it fires; ``None``: no
limit), a rate (the probability that a matching exchange is hit, drawn from the
bench's own seeded generator) and a start (``after`` exchanges of that instrument
have passed first).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "SCPI_KINDS",
    "SERIAL_KINDS",
    "FaultRule",
    "ReplyPlan",
    "apply_scpi_rules",
    "fire_serial_rules",
    "parse_fault",
]


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
    """What the server does with one SCPI exchange (from the fired rules)."""

    fired: dict[str, float] = field(default_factory=dict)

    def has(self, kind: str) -> bool:
        """True when a rule of ``kind`` fired."""
        return kind in self.fired

    @property
    def drop(self) -> bool:
        """The reply is lost."""
        return self.has("timeout") or self.has("drop")

    @property
    def delay_s(self) -> float:
        """Extra reply delay, s."""
        return self.fired.get("delay", 0.0)

    def execute(self, device: Any, line: str) -> list[str]:
        """Run ``line`` on ``device`` with the reading and relay faults of this exchange."""
        f = device.faults
        if self.has("error"):
            code = int(self.fired["error"]) or -300
            device.error(code, "Device-specific error; injected")
        if self.has("reboot"):
            # a power cycle: settings to their defaults, the error queue empty and the
            # standard event register at its power-on value (PON, bit 7, set; IEEE 488.2
            # 11.5.1.1.2; 2600B manual "Standard event register": PON "set bit indicates
            # that the instrument has been turned off and turned back on")
            device.reset()
            device.status.clear()
            device.status.power_on()
            return []
        saved = (set(f.compliance), f.compliance_after_pulses, f.nan_readings,
                 f.overrange_readings)
        if self.has("compliance"):
            channels = getattr(device, "channels", {"k2400": None})
            f.compliance = set(f.compliance) | set(channels)
            f.compliance_after_pulses = int(self.fired["compliance"])
        if self.has("nan"):
            f.nan_readings = 1 << 30
        if self.has("overrange"):
            f.overrange_readings = 1 << 30
        try:
            replies: list[str] = device.process(line)
        finally:
            f.compliance, f.compliance_after_pulses, f.nan_readings, f.overrange_readings = saved
            if self.has("stuck") and hasattr(device, "stuck"):
                device.stuck |= set(device.closed)
        return replies


def apply_scpi_rules(device: Any, line: str, exchange: int) -> ReplyPlan:
    """Fire the rules of one SCPI instrument on one command line."""
    plan = ReplyPlan()
    for rule in device.faults.rules:
        if rule.fire(line, exchange):
            plan.fired[rule.kind] = rule.value
    return plan


SERIAL_KINDS: dict[str, str] = {
    "timeout": "the request is lost: not executed, no reply",
    "drop": "executed, the reply is lost",
    "delay": "the reply comes value= s late",
    "garble": "bits of the reply flipped (its CRC no longer matches)",
    "truncate": "only the first half of the reply is sent",
    "crc-reply": "the reply's CRC field is wrong",
    "crc-request": "the request arrives with a bad CRC: a BAD_CRC reply, nothing done",
    "length-request": "the request arrives cut: a BAD_LENGTH reply, nothing done",
    "busy": "a BUSY reply, nothing done",
    "out-of-range": "an OUT_OF_RANGE reply, nothing done",
    "bad-argument": "a BAD_ARGUMENT reply, nothing done",
    "unknown-command": "an UNKNOWN_COMMAND reply, nothing done",
    "internal": "an INTERNAL reply; the board goes safe",
    "compliance": "SET_*: a COMPLIANCE_TRIP reply and the safe state; PULSE: a trip after "
    "value= pulses; READ_NODES: readings flagged COMPLIANCE",
    "nan": "READ_NODES: every reading NaN",
    "overrange": "READ_NODES: every reading at full scale, flagged OVERRANGE",
    "stop": "the board never answers again",
    "disconnect": "the link drops (socket closed); the board goes safe",
    "reboot": "the board restarts: the request is lost, every source off",
}
"""Fault kinds of the serial board (``hwloop virtual-board --kind serial --fault``)."""

SCPI_KINDS: dict[str, str] = {
    "timeout": "executed, no reply (a timeout)",
    "drop": "executed, no reply (a timeout)",
    "delay": "the reply comes value= s late",
    "garble": "the reply replaced by garbage",
    "truncate": "only the first half of the reply is sent",
    "error": "an error-queue entry (code value=, default -300) besides the command",
    "compliance": "SMU readings report compliance; a pulse train trips after value= pulses",
    "nan": "every reading of the command is the NaN code 9.91E37",
    "overrange": "every reading of the command is the overflow code 9.9E37",
    "stuck": "the matrix relays closed after the command stay closed (stuck relays)",
    "stop": "the instrument never answers again",
    "disconnect": "the connection drops (socket closed); the command is lost",
    "reboot": "the instrument restarts: the command is lost, settings and errors reset, "
    "the power-on bit (PON) of the event register set",
}
"""Fault kinds of the SCPI bench (``hwloop virtual-board --kind scpi --fault``)."""


def fire_serial_rules(
    rules: tuple[FaultRule, ...], command: int, exchange: int
) -> dict[str, float]:
    """The kinds fired by one board-protocol request (kind -> rule value)."""
    from hwloop.board_protocol import Command

    try:
        name = Command(command).name
    except ValueError:
        name = f"0x{command:02x}"
    fired: dict[str, float] = {}
    for rule in rules:
        if rule.match != "*" and rule.match.upper() != name:
            continue
        if rule.fire(name, exchange):
            fired[rule.kind] = rule.value
    return fired


def parse_fault(spec: str, kinds: dict[str, str], seed: int) -> tuple[FaultRule, str | None]:
    """Parse ``KIND[,command=C][,count=N|inf][,rate=P][,after=N][,value=X][,instrument=I]``.

    Returns the rule and the instrument it is for (None: every instrument).
    Raises ``ValueError`` with a one-line message naming the problem and the fix.
    """
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise ValueError("--fault needs a kind, e.g. --fault garble,command=READ_NODES,count=3")
    kind = parts[0].lower()
    if kind not in kinds:
        raise ValueError(f"--fault {spec!r}: unknown kind {kind!r}; use one of "
                         f"{', '.join(kinds)}")
    rule = FaultRule(kind, rng=random.Random(seed))
    instrument: str | None = None
    for p in parts[1:]:
        key, sep, val = p.partition("=")
        key = key.strip().lower()
        if not sep or not val.strip():
            raise ValueError(f"--fault {spec!r}: {p!r} is not key=value (keys: command, count, "
                             "rate, after, value, instrument)")
        val = val.strip()
        try:
            if key == "command":
                rule.match = val
            elif key == "count":
                rule.count = None if val.lower() in ("inf", "all") else int(val)
                if rule.count is not None and rule.count < 1:
                    raise ValueError("count must be >= 1 or inf")
            elif key == "rate":
                rule.rate = float(val)
                if not 0.0 < rule.rate <= 1.0:
                    raise ValueError("rate must lie in (0, 1]")
            elif key == "after":
                rule.after = int(val)
                if rule.after < 0:
                    raise ValueError("after must be >= 0")
            elif key == "value":
                rule.value = float(val)
                if not math.isfinite(rule.value):
                    raise ValueError("value must be finite")
            elif key == "instrument":
                instrument = val
            else:
                raise ValueError(f"unknown key {key!r} (keys: command, count, rate, after, "
                                 "value, instrument)")
        except ValueError as exc:
            raise ValueError(f"--fault {spec!r}: {exc}") from None
    if kind == "delay" and rule.value <= 0:
        raise ValueError(f"--fault {spec!r}: delay needs value=SECONDS > 0")
    return rule, instrument


@dataclass
class Faults:
    """Faults injected into one virtual instrument (change them at any time).

    Attributes:
        reply_delay_s: every reply is sent this late, s (a slow instrument).
        slow_replies: the next N replies are sent ``slow_delay_s`` late.
        slow_delay_s: delay of those replies, s.
        drop_replies: the next N replies are not sent (the commands are executed).
        garble_replies: the next N replies are replaced by garbage.
        dead: the instrument reads commands but executes and answers nothing.
        compliance: SMU channels (``"smua"``, ``"node[2].smub"``, ``"k2400"``...)
            that report compliance.
        compliance_after_pulses: a pulse train stops in compliance after this many
            pulses (``None``: never).
        overrange_channels: DAQ channels that read an overflow (9.9E37).
        nan_channels: DAQ channels that read NaN (9.91E37).
        nan_readings: the next N readings (any instrument) are the NaN code.
        overrange_readings: the next N readings are the overflow code.
        rules: per-command faults (:class:`~simulated_device.virtual_faults.FaultRule`).
    """

    reply_delay_s: float = 0.0
    slow_replies: int = 0
    slow_delay_s: float = 0.5
    drop_replies: int = 0
    garble_replies: int = 0
    dead: bool = False
    compliance: set[str] = field(default_factory=set)
    compliance_after_pulses: int | None = None
    overrange_channels: set[int] = field(default_factory=set)
    nan_channels: set[int] = field(default_factory=set)
    nan_readings: int = 0
    overrange_readings: int = 0
    rules: list[Any] = field(default_factory=list)
