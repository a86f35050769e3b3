"""IEEE 488.2 status reporting and common commands shared by the virtual instruments.

Status model as in IEEE 488.2 section 11 and the manuals' status-model appendices
(Series 2600B reference manual, "Status model"; DAQ6510 reference manual, "Status
model"; 707B reference manual, "Status model"; 2400 series manual, section 14):

* Standard Event Status Register (ESR): bit 0 OPC, 2 QYE (query error, -400..-499),
  3 DDE (device-dependent error, -300..-399 and positive codes), 4 EXE (execution
  error, -200..-299), 5 CME (command error, -100..-199), 7 PON; ``*ESR?`` reads and
  clears it, ``*ESE`` masks it into the ESB bit;
* Status Byte (STB): bit 2 EAV (error queue not empty), bit 4 MAV (message
  available: always 0 when ``*STB?`` is answered, as the query's own reply is not yet
  queued), bit 5 ESB, bit 6 MSS (STB & SRE, bit 6 excluded); ``*SRE`` masks it;
* error queue of ``QUEUE_SIZE`` entries: when full, the last entry becomes -350
  "Queue overflow" and later errors are lost (SCPI-99 volume 2, 21.8);
* ``*CLS`` clears the ESR and the error queue; ``*RST`` does not touch them.

Units: none (register bits).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["QUEUE_SIZE", "StatusModel"]

QUEUE_SIZE = 10
OPC, QYE, DDE, EXE, CME, PON = 0x01, 0x04, 0x08, 0x10, 0x20, 0x80
EAV, MAV, ESB, MSS = 0x04, 0x10, 0x20, 0x40


class StatusModel:
    """ESR, STB, SRE/ESE masks and the error queue of one virtual instrument."""

    def __init__(self, empty_message: str = "No error") -> None:
        self.errors: list[tuple[int, str]] = []
        self.esr = PON
        self.ese = 0
        self.sre = 0
        self.empty_message = empty_message

    def error(self, code: int, message: str) -> None:
        """Queue an error and set its ESR bit."""
        if -199 <= code <= -100:
            self.esr |= CME
        elif -299 <= code <= -200:
            self.esr |= EXE
        elif -499 <= code <= -400:
            self.esr |= QYE
        elif code != 0:
            self.esr |= DDE
        if len(self.errors) >= QUEUE_SIZE:
            self.errors[-1] = (-350, "Queue overflow")
            return
        self.errors.append((code, message))

    def pop(self) -> tuple[int, str]:
        """The oldest error (``(0, empty_message)`` when none)."""
        return self.errors.pop(0) if self.errors else (0, self.empty_message)

    def clear(self) -> None:
        """``*CLS``: error queue and event register cleared."""
        self.errors.clear()
        self.esr = 0

    def power_on(self) -> None:
        """The instrument was (re)started: PON set, masks at their power-on value 0."""
        self.esr |= PON
        self.ese = 0
        self.sre = 0

    @property
    def stb(self) -> int:
        """The status byte (MSS computed from SRE)."""
        b = 0
        if self.errors:
            b |= EAV
        if self.esr & self.ese:
            b |= ESB
        if b & self.sre & ~MSS:
            b |= MSS
        return b

    def read_esr(self) -> int:
        """``*ESR?``: the register, then cleared."""
        v, self.esr = self.esr, 0
        return v

    def common(
        self,
        header: str,
        args: str,
        identity: str,
        reset: Callable[[], None],
        self_test: Callable[[], int] = lambda: 0,
    ) -> str | None:
        """Execute IEEE 488.2 common command ``header`` (upper case, with ``*``).

        Returns the reply (None: no reply). Raises ``KeyError`` for an unknown
        common command and ``ValueError`` for a bad argument (the caller queues
        -113 or -224/-109 as its command language wants).
        """
        a = args.strip()
        if header == "*IDN?":
            return identity
        if header == "*RST":
            reset()
            return None
        if header == "*CLS":
            self.clear()
            return None
        if header == "*OPC":
            self.esr |= OPC
            return None
        if header == "*OPC?":
            return "1"
        if header == "*WAI":
            return None
        if header == "*STB?":
            return str(self.stb)
        if header == "*ESR?":
            return str(self.read_esr())
        if header == "*ESE?":
            return str(self.ese)
        if header == "*SRE?":
            return str(self.sre)
        if header == "*TST?":
            return str(self_test())
        if header == "*TRG":
            return None
        if header in ("*ESE", "*SRE"):
            if not a:
                raise ValueError("missing parameter")
            v = int(float(a))
            if not 0 <= v <= 255:
                raise ValueError("data out of range")
            if header == "*ESE":
                self.ese = v
            else:
                self.sre = v & ~MSS
            return None
        raise KeyError(header)
