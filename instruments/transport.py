"""``SerialTransport``: request/reply exchanges of the hwloop board protocol over pyserial.

One transport owns one port (opened from a pyserial URL with
``serial.serial_for_url``: ``/dev/ttyACM0``, ``socket://127.0.0.1:PORT``,
``loop://``, ``spy://...``; or any object with the :class:`SerialPortLike`
methods) and runs one exchange at a time under its lock:

1. write the request frame (a fresh sequence number per attempt);
2. read until the reply with that sequence number arrives, discarding stale
   replies (older sequence numbers) and garbage. The first byte of the reply to
   an idempotent command must come within ``base_timeout_s + work_s + request
   transfer time`` (``work_s`` is the caller's estimate of the board's planned
   work, e.g. samples x sample time); from its first byte the reply has 1.5 x its
   transfer time at the line rate plus ``base_timeout_s``. A state-changing
   command (not retried) waits the sum of both for its first byte;
3. on a timeout or a damaged reply: flush the input, resynchronise (IDENTIFY with
   a fresh sequence number) and, **only for idempotent commands** (IDENTIFY,
   GET_STATE, SAFE_STATE, READ_NODES, READ_CONDUCTANCE), retry with bounded
   exponential back-off. SET_* and PULSE are never resent: the transport raises
   :class:`UnconfirmedCommandError` and the caller re-reads the state
   (GET_STATE / READ_CONDUCTANCE) and reconciles.

Every frame sent or received can be logged through ``on_exchange`` (an
:class:`ExchangeRecord`), and every retry or anomaly is reported through
``on_event(kind, message)`` with kind ``"retry"`` or ``"warning"``, so a session
log can record them. Ctrl-C is held back for the duration of each exchange
(:func:`hwloop.session.sigint_held`), so an exchange is never cut in half.

Timing rules (``docs/board-protocol.md``, "Timing"): a frame's bytes follow each
other with gaps under the frame gap (default 50 ms); a partial frame followed by
a longer silence is dropped (a false start) and scanning resumes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from hwloop.board_protocol import (
    FRAME_OVERHEAD,
    IDEMPOTENT_COMMANDS,
    BoardError,
    Command,
    ErrorCode,
    Frame,
    FrameDecoder,
    FrameFault,
    Identify,
    IdentifyReply,
    LastReply,
    LastReplyReply,
    ProtocolError,
    Reply,
    Request,
    decode_reply,
    encode_request,
)
from hwloop.errors import ConfigError, HwloopError
from hwloop.session import sigint_held

__all__ = [
    "BoardTimeoutError",
    "ClosesOnce",
    "ExchangeRecord",
    "LinkError",
    "RetryPolicy",
    "SerialPortLike",
    "SerialTransport",
    "TransportError",
    "UnconfirmedCommandError",
]

REPLY_MARGIN = 1.5
"""A reply may take this many times its transfer time at the line rate (from its first byte)."""

R = TypeVar("R", bound=Reply)


class TransportError(HwloopError):
    """An exchange with the board failed at the link level."""


class BoardTimeoutError(TransportError):
    """An idempotent command got no valid reply in any of its attempts.

    The board state is unchanged by the failed command (it only reads).
    """


class UnconfirmedCommandError(TransportError):
    """A state-changing command (SET_*, PULSE) got no valid reply.

    The board may or may not have applied it. It was not resent; re-read the
    state (GET_STATE / READ_CONDUCTANCE) and reconcile.

    Attributes:
        command: the command that was sent.
        seq: its sequence number.
        resynchronised: True when the link answered an IDENTIFY afterwards (the
            state can be re-read now).
    """

    def __init__(self, message: str, command: Command, seq: int, resynchronised: bool) -> None:
        super().__init__(message)
        self.command = command
        self.seq = seq
        self.resynchronised = resynchronised


class LinkError(TransportError):
    """The port itself failed (cannot open, disconnected, closed)."""


class SerialPortLike(Protocol):
    """What the transport needs of a port (pyserial ``Serial`` and URL handlers have it)."""

    timeout: float | None

    def write(self, data: bytes) -> int | None:
        """Write bytes."""
        ...

    def read(self, size: int = 1) -> bytes:
        """Read up to ``size`` bytes, waiting at most ``timeout`` s."""
        ...

    def reset_input_buffer(self) -> None:
        """Discard received bytes not yet read."""
        ...

    def close(self) -> None:
        """Close the port."""
        ...


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries of idempotent commands.

    Attributes:
        attempts: tries per idempotent command, including the first (>= 1).
        backoff_s: wait before the first retry, s (>= 0).
        backoff_factor: each further wait is this many times longer (>= 1).
        backoff_max_s: longest wait, s.
    """

    attempts: int = 3
    backoff_s: float = 0.02
    backoff_factor: float = 2.0
    backoff_max_s: float = 1.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError(f"retry attempts={self.attempts} must be >= 1")
        if self.backoff_s < 0 or self.backoff_factor < 1 or self.backoff_max_s < 0:
            raise ConfigError("retry back-off must be >= 0 s with a factor >= 1")

    def delay_s(self, retry: int) -> float:
        """Back-off before retry number ``retry`` (1 for the first), s."""
        return float(min(self.backoff_max_s, self.backoff_s * self.backoff_factor ** (retry - 1)))


@dataclass(frozen=True)
class ExchangeRecord:
    """One frame on the wire, for the session log.

    Attributes:
        direction: ``"tx"`` (host to board) or ``"rx"`` (board to host).
        data_hex: the frame's bytes as lowercase hex.
        time_s: wall-clock time, s since the Unix epoch (``time.time()``).
        seq: the frame's sequence number.
        command: the command's name (``"READ_NODES"``).
    """

    direction: Literal["tx", "rx"]
    data_hex: str
    time_s: float
    seq: int
    command: str


class _NoReplyError(Exception):
    """No valid reply before the deadline (internal)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class ClosesOnce:
    """A link whose ``close()`` closes its resource once, under the link's lock."""

    _lock: threading.Lock
    _closed: bool

    def _close_once(
        self,
        close: Callable[[], None],
        errors: tuple[type[Exception], ...],
        warn: Callable[[Exception], None],
    ) -> None:
        """Call ``close`` unless closed already; an exception of ``errors`` goes to ``warn``."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                close()
            except errors as exc:  # closing must not raise
                warn(exc)


class SerialTransport(ClosesOnce):
    """Request/reply exchanges with a hwloop board over one serial port.

    Args:
        port: a pyserial URL (opened with ``serial.serial_for_url``) or an open port.
        baudrate: line rate, baud (used to open a device and to estimate transfer
            times; ignored by ``socket://``).
        base_timeout_s: fixed part of every exchange's deadline, s (> 0).
        retry: retry policy of idempotent commands.
        frame_gap_s: silence after which a partial frame is dropped, s (> 0).
        poll_s: longest single blocking read, s (deadline granularity; > 0).
        on_exchange: called with an :class:`ExchangeRecord` per frame sent/received.
        on_event: called as ``on_event(kind, message)`` on every retry (``"retry"``)
            and anomaly (``"warning"``: stale reply, garbage, failed resync).

    Raises:
        LinkError: the URL cannot be opened.
    """

    def __init__(
        self,
        port: str | SerialPortLike,
        *,
        baudrate: int = 115_200,
        base_timeout_s: float = 0.5,
        retry: RetryPolicy | None = None,
        frame_gap_s: float = 0.05,
        poll_s: float = 0.01,
        on_exchange: Callable[[ExchangeRecord], None] | None = None,
        on_event: Callable[[str, str], None] | None = None,
    ) -> None:
        if not base_timeout_s > 0 or not frame_gap_s > 0 or not poll_s > 0:
            raise ConfigError("base_timeout_s, frame_gap_s and poll_s must be > 0 s")
        if baudrate <= 0:
            raise ConfigError(f"baudrate={baudrate} must be > 0")
        self.baudrate = int(baudrate)
        self.base_timeout_s = float(base_timeout_s)
        self.retry = retry or RetryPolicy()
        self.frame_gap_s = float(frame_gap_s)
        self.poll_s = float(poll_s)
        self.on_exchange = on_exchange
        self.on_event = on_event
        self._reopenable = isinstance(port, str)
        if isinstance(port, str):
            self.url = port
            self._port: SerialPortLike = _open_url(port, self.baudrate, self.poll_s)
        else:
            self.url = getattr(port, "port", None) or type(port).__name__
            self._port = port
            self._port.timeout = self.poll_s
        self._lock = threading.Lock()
        self._decoder = FrameDecoder()
        self._seq = 0
        self._last_reply_said_not_executed = False
        self._closed = False
        # bytes left on a persistent line by an earlier session are not ours
        self._flush()
        self.stats: dict[str, int] = {
            "exchanges": 0,
            "retries": 0,
            "resyncs": 0,
            "timeouts": 0,
            "stale_replies": 0,
            "bad_frames": 0,
        }
        """Counters since the transport was opened."""

    # ------------------------------------------------------------------ public
    @property
    def port(self) -> SerialPortLike:
        """The underlying port."""
        return self._port

    @property
    def is_open(self) -> bool:
        """False after :meth:`close`."""
        return not self._closed

    def transfer_time_s(self, nbytes: int) -> float:
        """Time to move ``nbytes`` over the line at :attr:`baudrate` (10 bits a byte), s."""
        return 10.0 * nbytes / self.baudrate

    def first_byte_timeout(self, request_bytes: int, work_s: float = 0.0) -> float:
        """Wait for the first byte of a reply: base + planned work + request transfer, s."""
        return (
            self.base_timeout_s
            + max(0.0, float(work_s))
            + self.transfer_time_s(request_bytes + FRAME_OVERHEAD)
        )

    def reply_transfer_timeout(self, reply_bytes: int) -> float:
        """Time a reply may take from its first byte: its transfer time x 1.5 + base, s."""
        return REPLY_MARGIN * self.transfer_time_s(reply_bytes + FRAME_OVERHEAD) + (
            self.base_timeout_s
        )

    def timeout_for(self, request_bytes: int, work_s: float = 0.0, reply_bytes: int = 0) -> float:
        """Deadline of one attempt: base + planned work + transfer of both frames, s.

        The first-byte wait of a state-changing command (its lost reply is not
        retried, so it gets the whole allowance).

        Args:
            request_bytes: request payload size, bytes.
            work_s: the board's planned work, s.
            reply_bytes: expected reply payload size, bytes.
        """
        return (
            self.base_timeout_s
            + max(0.0, float(work_s))
            + self.transfer_time_s(request_bytes + reply_bytes + 2 * FRAME_OVERHEAD)
        )

    def exchange(
        self,
        request: Request,
        expect: type[R],
        *,
        work_s: float = 0.0,
        reply_bytes: int = 0,
    ) -> R:
        """Send ``request`` and return its reply, with recovery as the module describes.

        Args:
            request: the request.
            expect: the reply type (a mismatch raises :class:`ProtocolError`).
            work_s: the board's planned work for this request, s (added to the deadline).
            reply_bytes: expected reply payload size, bytes (its transfer time is added).

        Raises:
            BoardError: the board answered with an error (not retried, except BUSY
                BAD_CRC and BAD_LENGTH for idempotent commands).
            BoardTimeoutError: an idempotent command failed every attempt.
            UnconfirmedCommandError: a SET_*/PULSE got no valid reply.
            LinkError: the port failed or is closed.
            ProtocolError: the reply does not fit the command's layout.
        """
        with self._lock, sigint_held():
            reply = self._exchange_locked(request, work_s, reply_bytes)
        if not isinstance(reply, expect):
            raise ProtocolError(
                f"{request.COMMAND.name} reply is a {type(reply).__name__}, "
                f"expected {expect.__name__}"
            )
        return reply

    def resync(self) -> IdentifyReply:
        """Flush the input and exchange an IDENTIFY (public form of the recovery step).

        Raises:
            BoardTimeoutError: no valid IDENTIFY reply.
        """
        with self._lock, sigint_held():
            reply = self._resync_locked()
        if reply is None:
            raise BoardTimeoutError(
                f"board at {self.url} did not answer IDENTIFY within "
                f"{self.base_timeout_s:.3g} s; check the cable, the port and the board's power"
            )
        return reply

    def reconnect(self, fresh: bool) -> IdentifyReply:
        """Re-establish the link: IDENTIFY on the live port, or on a freshly opened one.

        Args:
            fresh: close the port and open the URL again first (only for a transport
                opened from a URL).

        Raises:
            LinkError: the port cannot be opened again (or was given as an object).
            BoardTimeoutError: no valid IDENTIFY reply.
        """
        with self._lock, sigint_held():
            if fresh:
                if not self._reopenable:
                    raise LinkError(f"the port {self.url} was given open; it cannot be reopened")
                try:
                    self._port.close()
                except OSError as e:
                    self.report_event("warning", f"closing {self.url} to reopen it: {e}")
                self._port = _open_url(self.url, self.baudrate, self.poll_s)
                self._closed = False
            elif self._closed:
                raise LinkError(f"the transport to {self.url} is closed; open a new one")
            reply = self._resync_locked()
        if reply is None:
            raise BoardTimeoutError(
                f"board at {self.url} did not answer IDENTIFY on a "
                f"{'fresh' if fresh else 'live'} connection; check the cable, the port and the "
                "board's power"
            )
        return reply

    def report_event(self, kind: str, message: str) -> None:
        """Forward ``(kind, message)`` to ``on_event`` (drivers report through it)."""
        if self.on_event is not None:
            self.on_event(kind, message)

    def close(self) -> None:
        """Close the port. Idempotent."""
        self._close_once(self._port.close, (OSError,),
                         lambda e: self.report_event("warning", f"closing {self.url}: {e}"))

    def __enter__(self) -> SerialTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        return self._seq

    def _exchange_locked(self, request: Request, work_s: float, reply_bytes: int) -> Reply:
        if self._closed:
            raise LinkError(f"the transport to {self.url} is closed; open a new one")
        cmd = request.COMMAND
        idempotent = cmd in IDEMPOTENT_COMMANDS
        # a PULSE is sent again only when LAST_REPLY shows the board never executed it
        attempts = self.retry.attempts if idempotent or cmd == Command.PULSE else 1
        payload = request.payload()
        # a lost reply to a read is noticed after the planned work and retried; the reply
        # itself gets its transfer time at the line rate with a margin from its first byte
        timeout_s = (
            self.first_byte_timeout(len(payload), work_s)
            if idempotent
            else self.timeout_for(len(payload), work_s, reply_bytes)
        )
        transfer_s = self.reply_transfer_timeout(reply_bytes)
        last = ""
        for attempt in range(1, attempts + 1):
            seq = self._next_seq()
            self.stats["exchanges"] += 1
            try:
                frame = self._attempt(request, seq, timeout_s, transfer_s)
                return decode_reply(frame, cmd)
            except BoardError as e:
                transient = e.error_code in (ErrorCode.BUSY, ErrorCode.BAD_CRC,
                                             ErrorCode.BAD_LENGTH)
                if not (idempotent and transient) or attempt == attempts:
                    raise
                last = f"board answered {e.error_code.name}"
            except _NoReplyError as t:
                self.stats["timeouts"] += 1
                last = t.why
                if not idempotent:
                    ok = self._resync_locked() is not None
                    if ok and cmd == Command.PULSE and attempt < attempts:
                        kept = self._last_reply_locked(seq)
                        if kept is not None:
                            self.report_event(
                                "warning", f"{cmd.name} (seq {seq}): {t.why}; LAST_REPLY shows "
                                "the board executed it and gives its reply; continuing")
                            return decode_reply(kept, cmd)
                        if self._last_reply_said_not_executed:
                            self.report_event(
                                "retry", f"{cmd.name} (seq {seq}): {t.why}; LAST_REPLY shows the "
                                "board never executed it (nothing applied); sending it again "
                                f"(attempt {attempt + 1} of {attempts})")
                            continue
                    raise UnconfirmedCommandError(
                        f"{cmd.name} (seq {seq}) was sent to {self.url} but {t.why}: the board "
                        "may or may not have applied it; it was not resent. Re-read the state "
                        "(GET_STATE / READ_CONDUCTANCE) and reconcile"
                        + ("" if ok else "; the board did not answer IDENTIFY afterwards either"),
                        cmd,
                        seq,
                        ok,
                    ) from None
                if attempt == attempts:
                    break
            delay = self.retry.delay_s(attempt)
            self.stats["retries"] += 1
            self.report_event(
                "retry",
                f"{cmd.name} seq {seq}: {last}; resynchronising and retrying "
                f"(attempt {attempt + 1} of {attempts}) after {delay:.3g} s",
            )
            if delay > 0:
                time.sleep(delay)
            if self._resync_locked() is None:
                last += "; IDENTIFY resync also failed"
        raise BoardTimeoutError(
            f"no valid reply to {cmd.name} from {self.url} in {attempts} attempt(s) "
            f"(last: {last}); check the cable, the port and the board's power. "
            "The command only reads, so the board state is unchanged by it"
        )

    def _last_reply_locked(self, seq: int) -> Frame | None:
        """After a lost reply to request ``seq``: the board's kept reply to it, if it ran.

        One LAST_REPLY exchange (idempotent, retried). Returns the kept reply frame when
        its sequence number is ``seq`` (the board executed the request; the reply may be
        an error reply). Sets :attr:`_last_reply_said_not_executed` when the board's
        last non-idempotent reply is to another request, or it has none (``seq`` never
        ran). A board without LAST_REPLY (UNKNOWN_COMMAND) or no answer: neither.
        """
        self._last_reply_said_not_executed = False
        try:
            rep = self._exchange_locked(LastReply(), 0.0, 0)
        except (BoardError, BoardTimeoutError, ProtocolError) as e:
            self.report_event("warning", f"LAST_REPLY after the lost reply to seq {seq} "
                              f"failed: {e}")
            return None
        assert isinstance(rep, LastReplyReply)
        if rep.frame is not None and rep.frame.seq == seq:
            return rep.frame
        self._last_reply_said_not_executed = True
        return None

    def _resync_locked(self) -> IdentifyReply | None:
        """Flush, IDENTIFY with a fresh sequence number; the reply or None."""
        self.stats["resyncs"] += 1
        self._flush()
        seq = self._next_seq()
        try:
            frame = self._attempt(Identify(), seq, self.first_byte_timeout(0),
                                  self.reply_transfer_timeout(512))
            reply = decode_reply(frame, Command.IDENTIFY)
        except (_NoReplyError, ProtocolError) as e:
            self.report_event("warning", f"resync IDENTIFY (seq {seq}) failed: {e}")
            self._flush()
            return None
        assert isinstance(reply, IdentifyReply)
        return reply

    def _flush(self) -> None:
        try:
            self._port.reset_input_buffer()
        except OSError as e:
            raise LinkError(f"flushing {self.url} failed: {e}") from e
        self._decoder.reset()

    def _log(self, direction: Literal["tx", "rx"], data: bytes, seq: int, command: str) -> None:
        if self.on_exchange is not None:
            self.on_exchange(ExchangeRecord(direction, data.hex(), time.time(), seq, command))

    def _attempt(self, request: Request, seq: int, timeout_s: float, transfer_s: float) -> Frame:
        """Write one request frame and read until its reply; raise ``_NoReplyError``.

        The deadline is ``timeout_s`` until a byte arrives, then ``transfer_s`` from
        the first byte (the reply's transfer time with a margin): a lost reply is
        noticed after the planned work, not after the transfer time of a reply that
        never started.
        """
        data = encode_request(seq, request)
        name = request.COMMAND.name
        try:
            self._port.write(data)
        except OSError as e:  # serial.SerialException is an OSError
            raise LinkError(f"writing {name} to {self.url} failed: {e}") from e
        self._log("tx", data, seq, name)
        deadline = time.monotonic() + timeout_s
        last_rx = time.monotonic()
        receiving = False
        damaged = False
        dec = self._decoder
        while True:
            now = time.monotonic()
            if now >= deadline:
                why = "only damaged frames arrived" if damaged else "no reply arrived"
                limit = (f"{transfer_s:.3g} s of its first byte" if receiving
                         else f"{timeout_s:.3g} s")
                raise _NoReplyError(f"{why} within {limit}")
            try:
                chunk = self._port.read(dec.wanted())
            except OSError as e:
                raise LinkError(f"reading from {self.url} failed: {e}") from e
            now = time.monotonic()
            if chunk:
                if not receiving:
                    receiving = True
                    deadline = max(deadline, now + transfer_s)
                last_rx = now
                events = dec.feed(chunk)
            elif now - last_rx > self.frame_gap_s:
                if dec.pending:
                    events = dec.drop_pending()
                elif damaged:
                    raise _NoReplyError("the reply arrived damaged (bad CRC or garbage)")
                else:
                    continue
            else:
                continue
            for ev in events:
                if isinstance(ev, FrameFault):
                    damaged = True
                    self.stats["bad_frames"] += 1
                    self.report_event(
                        "warning",
                        f"{name} seq {seq}: skipped {ev.nbytes} byte(s) ({ev.kind.value})",
                    )
                    continue
                self._log("rx", ev.to_bytes() if self.on_exchange else b"", ev.seq, ev.name)
                if ev.is_reply and ev.seq == seq and ev.code == request.COMMAND:
                    # bytes buffered after it (a late frame) are decoded, and discarded by
                    # sequence number, in the next exchange
                    return ev
                self.stats["stale_replies"] += 1
                self.report_event(
                    "warning",
                    f"{name} seq {seq}: discarded a stale {ev.name} "
                    f"{'reply' if ev.is_reply else 'frame'} (seq {ev.seq})",
                )


def _open_url(url: str, baudrate: int, timeout_s: float) -> Any:
    import serial

    try:
        return serial.serial_for_url(url, baudrate=baudrate, timeout=timeout_s)
    except (serial.SerialException, ValueError, OSError) as e:
        raise LinkError(
            f"cannot open {url!r}: {e}; check the device path or URL and that the board "
            "(or virtual board) is running"
        ) from e
