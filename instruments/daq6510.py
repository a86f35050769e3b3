"""Keithley DAQ6510 Data Acquisition / Logging Multimeter as a multichannel voltmeter.

SCPI commands from the *DAQ6510 Reference Manual* (DAQ6510-901-01), section "SCPI
command reference":

* ``:SENSe:FUNCtion "VOLT:DC", (@<channels>)`` -- measure function of scan channels,
* ``:SENSe:VOLTage:NPLCycles <n>, (@<channels>)`` -- integration time (0.0005 to 12
  PLC at 60 Hz, 15 at 50 Hz),
* ``:SENSe:VOLTage:RANGe <n>, (@<channels>)`` -- DCV range (0.1 V to 1000 V),
* ``:ROUTe:SCAN:CREate (@<channels>)`` -- the scan list,
* ``:ROUTe:SCAN:COUNt:SCAN <n>`` -- how many times the scan list is run,
* ``:TRACe:CLEar "defbuffer1"``, ``:INITiate``, ``*OPC?`` (wait for the scan),
* ``:TRACe:DATA? <start>, <end>, "defbuffer1", READ, REL`` -- readings and their
  time relative to the first reading, in scan order,
* ``:ROUTe:OPEN:ALL``, ``:ABORt``.

An overflowed reading comes back as 9.9E37 (SCPI overflow convention; the DAQ6510
manual's "overflow" display); it becomes NaN with the OVERRANGE flag. Channel
numbers are the card's (slot x 100 + channel, e.g. 101..120 on a 7700 card in slot 1).
Commands of one call are joined with ``;`` into one program message.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from hwloop.device import SampleFlag
from hwloop.errors import ConfigError
from instruments import kinds
from instruments import scpi_util as su
from instruments.roles import MeterRole
from instruments.visa_transport import VisaTransport, planned_timeout_s

FloatArray = NDArray[np.float64]

NPLC_RANGE = (0.0005, 12.0)
"""``:SENS:VOLT:NPLC``: 0.0005 to 12 (60 Hz mains; 15 at 50 Hz, not used here)."""
RANGE_V = (0.1, 1000.0)
"""DCV ranges 100 mV .. 1000 V."""
BUFFER_READINGS = 100_000
"""Readings one call may put in ``defbuffer1`` (the default buffer's size here)."""
VOLTAGE_CARD_CHANNELS = tuple(s * 100 + c for s in (1, 2) for c in range(1, 21))
"""Voltage channels of 7700/7702/7708-type cards in slots 1 and 2 (101..120, 201..220)."""


def channel_list(numbers: Sequence[int]) -> str:
    """``(@101,102,105)`` for a list of channel numbers."""
    return "(@" + ",".join(str(int(c)) for c in numbers) + ")"


class DAQ6510(su.VisaDriver):
    """DAQ6510 scan channels as a ``MeterRole`` (plus ``Instrument``).

    Args:
        transport: the connection.
        channel_numbers: instrument channel of each role channel index (e.g.
            ``[101, 102, 103]``: index 0 is channel 101).
        nplc: integration time, power-line cycles.
        range_v: fixed DCV range, V (None: autorange).
        line_frequency_hz: mains frequency, Hz (sizes timeouts).
        valid_channels: channel numbers that exist on the installed cards.
    """

    def __init__(
        self,
        transport: VisaTransport,
        channel_numbers: Sequence[int],
        *,
        nplc: float = 1.0,
        range_v: float | None = 10.0,
        line_frequency_hz: float = 50.0,
        valid_channels: Sequence[int] = VOLTAGE_CARD_CHANNELS,
    ) -> None:
        self.transport = transport
        self.name = transport.name
        nums = [int(c) for c in channel_numbers]
        if not nums:
            raise ConfigError(f"{self.name}: give at least one scan channel")
        if len(set(nums)) != len(nums):
            raise ConfigError(f"{self.name}: channel numbers {nums} have duplicates")
        bad = [c for c in nums if c not in set(valid_channels)]
        if bad:
            raise ConfigError(
                f"{self.name}: channel(s) {bad} are not voltage channels of the installed"
                " cards (e.g. 101..120); check the board file"
            )
        self.channel_numbers = tuple(nums)
        self.nplc = su.check_range(self.name, "NPLC", nplc, *NPLC_RANGE, "PLC")
        self.range_v = (
            None if range_v is None
            else su.check_range(self.name, "DCV range", range_v, *RANGE_V, "V")
        )
        self.line_frequency_hz = float(line_frequency_hz)
        self._scan: tuple[int, ...] | None = None  # scan list presently configured
        self._closed = False

    # ------------------------------------------------------------------ Instrument
    def safe_state(self) -> None:
        """Abort any scan and open every relay of the cards (idempotent)."""
        self.transport.write(":ABOR;:ROUT:OPEN:ALL")

    def is_energised(self) -> bool:
        """A meter sources nothing, and its card relays open after each scan: False."""
        return False

    # ------------------------------------------------------------------ meter
    def configure_scan(self, numbers: Sequence[int]) -> None:
        """Set function, NPLC, range and scan list for ``numbers`` (ascending)."""
        cl = channel_list(numbers)
        parts = [f':SENS:FUNC "VOLT:DC", {cl}', f":SENS:VOLT:NPLC {su.num(self.nplc)}, {cl}"]
        if self.range_v is not None:
            parts.append(f":SENS:VOLT:RANG {su.num(self.range_v)}, {cl}")
        parts.append(f":ROUT:SCAN:CRE {cl}")
        self.transport.write(";".join(parts))
        self._scan = tuple(numbers)

    def read_voltages(
        self, channels: NDArray[np.integer], n_samples: int
    ) -> tuple[FloatArray, NDArray[np.uint8], FloatArray]:
        """Scan the channels ``n_samples`` times and read the buffer.

        Scan count = ``n_samples``; the scan list (ascending channel numbers) is
        (re)configured only when it changes. ``:INIT;*OPC?`` waits for the scan with a
        timeout from NPLC x readings; after a lost reply the scan is run again (a
        meter sources nothing, the buffer is refilled), and ``:TRAC:DATA?`` is retried.

        Returns:
            ``(samples_v (n, k), flags (n, k), timestamps_s (n,))`` with columns in
            the order of ``channels``; timestamps on the host monotonic clock (s),
            spaced as the instrument's relative times of each scan's first reading.
            Overflow (9.9E37) or non-finite -> NaN + OVERRANGE.
        """
        idx = su.check_channels(self.name, channels, len(self.channel_numbers))
        k = len(idx)
        n = su.check_count(self.name, "samples per channel", n_samples, 1, BUFFER_READINGS)
        if k == 0:
            return np.zeros((n, 0)), np.zeros((n, 0), dtype=np.uint8), np.zeros(n)
        su.check_count(
            self.name, "readings per call (samples x channels)", n * k, 1, BUFFER_READINGS
        )
        wanted = [self.channel_numbers[i] for i in idx]
        scan = sorted(wanted)
        if self._scan != tuple(scan):
            self.configure_scan(scan)
        total = n * k
        self.transport.write(f':ROUT:SCAN:COUN:SCAN {n};:TRAC:CLE "defbuffer1"')
        t0 = time.monotonic()
        timeout = planned_timeout_s(total, self.nplc, line_frequency_hz=self.line_frequency_hz)
        # a scan sources nothing: repeating it after a lost reply only refills the buffer
        self.transport.query(
            ":INIT;*OPC?", parse=su.parse_float, timeout_s=timeout, idempotent=True
        )
        vals = self.transport.query(
            f':TRAC:DATA? 1, {total}, "defbuffer1", READ, REL',
            parse=lambda t: su.parse_floats(t, ",", 2 * total),
            timeout_s=max(self.transport.timeout_s, 1e-4 * total),
        )
        arr = np.asarray(vals).reshape(n, k, 2)  # scan-major: scan, channel (ascending)
        order = [scan.index(c) for c in wanted]
        samples, bad = su.overflow_to_nan(arr[:, order, 0])
        flags = np.zeros((n, k), dtype=np.uint8)
        flags[bad] |= np.uint8(SampleFlag.OVERRANGE)
        rel = arr[:, 0, 1]
        stamps = t0 + (rel - rel[0])
        return samples, flags, stamps


# --------------------------------------------------------------------------- the instrument kind


def _open(ctx: kinds.OpenContext) -> kinds.OpenedInstrument:
    if ctx.has_option("channels"):
        nums = tuple(ctx.option("channels"))
    else:
        n = int(ctx.option("n_channels") or 0) or ctx.used_channels(("meter",))
        nums = VOLTAGE_CARD_CHANNELS[: max(n, 1)]
    d = kinds.on_visa(ctx, lambda t: DAQ6510(
        t,
        nums,
        nplc=float(ctx.option("nplc")),
        range_v=ctx.option("range_v"),
        line_frequency_hz=float(ctx.option("line_frequency_hz")),
    ))

    def opc() -> None:
        d.transport.query("*OPC?", parse=su.parse_float, idempotent=True)

    return kinds.opened_on_visa(
        d,
        roles=kinds.RoleDrivers(meter=d),
        channel_counts={"meter": len(nums)},
        confirm=opc,
        v_read_range_v=float("inf") if d.range_v is None else float(d.range_v),
    )


KIND = kinds.InstrumentKind(
    name="daq6510",
    help="a Keithley DAQ6510 scanning its voltage channels as the node meter",
    roles=(MeterRole,),
    options=(
        *kinds.VISA_OPTIONS,
        *kinds.TIMING_OPTIONS,
        kinds.KindOption("channels", "intlist", "", None,
                   "scan channel of each meter channel (default: 101, 102, ...)"),
        kinds.KindOption("n_channels", "int", "", None,
                   "number of scan channels (default: what the wiring uses)"),
        kinds.KindOption("range_v", "number", "V", 10.0, "fixed DCV range"),
    ),
    open=_open,
    exclusive_options=(("channels", "n_channels"),),
)
"""The ``daq6510`` instrument kind (entry point ``hwloop.instruments``)."""


def instrument_kind() -> kinds.InstrumentKind:
    """Entry point of the ``daq6510`` kind (group ``hwloop.instruments``)."""
    return KIND
