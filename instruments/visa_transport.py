"""A message-based VISA connection with locking, logging, timeouts and safe recovery.

:class:`VisaTransport` wraps one pyvisa resource (a real instrument, a pyvisa-sim
resource opened through ``ResourceManager("@sim")``, or a virtual instrument at
``TCPIP::127.0.0.1::PORT::SOCKET`` through the ``@py`` backend) and is what every
SCPI/TSP driver in :mod:`instruments` talks through.

Rules (DR-17 in docs/architecture.md):

* One :class:`threading.Lock` per connection: an exchange (a write, or a write and
  its reply) is never interleaved with another thread's.
* Every exchange can be logged through ``on_exchange(direction, text, time_s)``
  (``direction`` is ``"write"`` or ``"read"``; ``time_s`` from :func:`time.monotonic`);
  every retry and resynchronisation is reported through ``on_event(kind, message)``
  with ``kind`` ``"retry"`` or ``"warning"``.
* Ctrl-C is held back during each exchange (:func:`hwloop.session.sigint_held`), so
  a command is never cut in half.
* The timeout of an exchange is sized by the caller from the planned work (see
  :func:`planned_timeout_s`: NPLC x readings), default :attr:`VisaTransport.timeout_s`.
* After a timeout or an unreadable reply the link is recovered: device clear
  (``clear()``), input flush, then ``*IDN?`` resynchronisation, which must return the
  identity read at connect (a different instrument answering is an error, never
  silently accepted). Only idempotent queries are then retried, at most
  ``max_retries`` times with exponential back-off. A write, or a query that sources
  or pulses, is never retried: :class:`InstrumentWriteError` tells the caller to
  re-read the instrument's state (a pulse may or may not have been applied).

``*IDN?`` is IEEE 488.2 common command (identification query); every instrument
driven here answers it in SCPI and in TSP mode.
"""

from __future__ import annotations

import contextlib
import logging
import math
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from pyvisa import constants
from pyvisa.errors import VisaIOError

from hwloop.errors import HwloopError
from hwloop.session import sigint_held
from instruments.transport import ClosesOnce

__all__ = [
    "EventSink",
    "ExchangeLogger",
    "InstrumentError",
    "InstrumentIdentityError",
    "InstrumentReplyError",
    "InstrumentStateError",
    "InstrumentTimeoutError",
    "InstrumentWriteError",
    "ResourceLike",
    "VisaTransport",
    "planned_timeout_s",
]

_log = logging.getLogger("hwloop.instruments.visa")

T = TypeVar("T")

ExchangeLogger = Callable[[str, str, float], None]
"""``on_exchange(direction, text, time_s)``: direction ``"write"``/``"read"``, s."""

EventSink = Callable[[str, str], None]
"""``on_event(kind, message)``: kind ``"retry"`` or ``"warning"``."""


class InstrumentError(HwloopError):
    """An instrument did not do what was asked (communication or state)."""


class InstrumentRestartedError(InstrumentError):
    """The instrument restarted during the run: the power-on bit of its event register is set."""


class InstrumentTimeoutError(InstrumentError):
    """No (usable) reply within the timeout, also after the allowed retries."""


class InstrumentWriteError(InstrumentError):
    """A command that may change the instrument's outputs failed; it was not retried."""


class InstrumentIdentityError(InstrumentError):
    """The instrument answering ``*IDN?`` is not the one the connection was opened to."""


class InstrumentReplyError(InstrumentError):
    """A reply could not be understood (garbled, wrong count), also after retries."""


class InstrumentStateError(InstrumentError):
    """The instrument is in a state in which the request is refused (e.g. two routes)."""


class ResourceLike(Protocol):
    """What :class:`VisaTransport` needs from a pyvisa ``MessageBasedResource``.

    ``timeout`` is in milliseconds (pyvisa's convention); ``None`` waits forever.
    """

    timeout: float | None

    def write(self, message: str) -> Any:
        """Send one message (the write termination is appended by the resource)."""
        ...

    def read(self) -> str:
        """Read one message up to the read termination (stripped)."""
        ...

    def clear(self) -> None:
        """Device clear (VISA ``viClear``)."""
        ...

    def close(self) -> None:
        """Close the session."""
        ...


def planned_timeout_s(
    n_conversions: int,
    nplc: float,
    *,
    line_frequency_hz: float = 50.0,
    per_conversion_s: float = 1.0e-3,
    fixed_s: float = 0.0,
    margin: float = 2.0,
    floor_s: float = 1.0,
) -> float:
    """Timeout of an exchange that makes ``n_conversions`` A/D conversions, s.

    ``margin * (n * (nplc / f_line + per_conversion_s) + fixed_s)``, at least
    ``floor_s``. One PLC lasts 1/50 s (50 Hz mains) or 1/60 s (60 Hz); Keithley
    2400 manual section 7 "Speed", 2600B reference manual ``smuX.measure.nplc``.

    Args:
        n_conversions: readings the instrument takes before it replies (>= 0).
        nplc: integration time in power-line cycles (> 0).
        line_frequency_hz: mains frequency, Hz.
        per_conversion_s: overhead per reading (auto-zero, relay settling), s.
        fixed_s: fixed time (pulses, relay settling, script start), s.
        margin: safety factor (>= 1).
        floor_s: smallest timeout returned, s.
    """
    work = n_conversions * (nplc / line_frequency_hz + per_conversion_s) + fixed_s
    return max(floor_s, margin * work)


def _is_timeout(exc: BaseException) -> bool:
    """True for a VISA timeout (``VI_ERROR_TMO``) or a socket timeout."""
    if isinstance(exc, TimeoutError):
        return True
    code = getattr(exc, "error_code", None)
    return code is not None and int(code) == int(constants.StatusCode.error_timeout)


_IO_ERRORS: tuple[type[Exception], ...] = (VisaIOError, OSError, UnicodeDecodeError)
"""What a failed exchange raises: VISA errors (timeouts), socket errors, undecodable bytes."""
_RETRYABLE: tuple[type[Exception], ...] = (ValueError, *_IO_ERRORS)
_FLUSH_ERRORS: tuple[type[Exception], ...] = (NotImplementedError, *_IO_ERRORS)


class VisaTransport(ClosesOnce):
    """One message-based instrument connection (see the module docstring).

    Args:
        resource: an open pyvisa message-based resource (or anything with the same
            ``write``/``read``/``clear``/``close``/``timeout``), with its read and
            write terminations already set. Use :meth:`open` to open one by name.
        name: instrument name used in messages and logs (e.g. ``"smu1 (2602B)"``).
        timeout_s: default timeout of one exchange, s (> 0).
        max_retries: retries of an idempotent query after a failure (>= 0).
        backoff_s: wait before the first retry, s; doubled for each further retry.
        backoff_max_s: longest wait between retries, s.
        resync_timeout_s: timeout of each read during ``*IDN?`` resynchronisation, s.
        on_exchange: optional ``(direction, text, time_s)`` callback for every
            exchange (the session log's instrument journal).
        on_event: optional ``(kind, message)`` callback for ``"retry"`` and
            ``"warning"`` events.
        expected_identity: if given, the ``*IDN?`` reply at connect must equal it.

    Raises:
        InstrumentTimeoutError: the instrument does not answer ``*IDN?``.
        InstrumentIdentityError: it answers with another identity than expected.
    """

    def __init__(
        self,
        resource: ResourceLike,
        *,
        name: str,
        timeout_s: float = 2.0,
        max_retries: int = 3,
        backoff_s: float = 0.05,
        backoff_max_s: float = 1.0,
        resync_timeout_s: float = 1.0,
        on_exchange: ExchangeLogger | None = None,
        on_event: EventSink | None = None,
        expected_identity: str | None = None,
    ) -> None:
        if not (timeout_s > 0 and resync_timeout_s > 0):
            raise ValueError("timeout_s and resync_timeout_s must be > 0 s")
        if max_retries < 0 or backoff_s < 0 or backoff_max_s < 0:
            raise ValueError("max_retries, backoff_s and backoff_max_s must be >= 0")
        self._res = resource
        self.name = name
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.backoff_max_s = float(backoff_max_s)
        self.resync_timeout_s = float(resync_timeout_s)
        self.on_exchange = on_exchange
        self.on_event = on_event
        self._lock = threading.Lock()
        self._closed = False
        self.reopen: Callable[[], ResourceLike] | None = None
        """Opens a fresh session to the same address (set by :meth:`open`)."""
        self._identity = ""
        self._identity = self.query("*IDN?", parse=_identity_reply, idempotent=True)
        if expected_identity is not None and self._identity != expected_identity:
            raise InstrumentIdentityError(
                f"{name}: *IDN? answered {self._identity!r}, expected {expected_identity!r};"
                " check the address in the board file"
            )

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        resource_name: str,
        *,
        resource_manager: Any | None = None,
        visa_library: str = "",
        name: str | None = None,
        read_termination: str = "\n",
        write_termination: str = "\n",
        open_timeout_s: float = 5.0,
        **kwargs: Any,
    ) -> VisaTransport:
        r"""Open ``resource_name`` and connect (reads ``*IDN?``).

        Args:
            resource_name: VISA address, e.g. ``"GPIB0::24::INSTR"`` or
                ``"TCPIP::127.0.0.1::5025::SOCKET"``.
            resource_manager: a ``pyvisa.ResourceManager`` to open it with (e.g.
                ``ResourceManager("path.yaml@sim")``); default: a new one for
                ``visa_library`` (``""``: the default backend; ``"@py"``: pyvisa-py).
            visa_library: backend used when no resource manager is given.
            name: instrument name for messages (default: the address).
            read_termination: end of every reply (``"\\n"`` for the Keithleys here).
            write_termination: appended to every command.
            open_timeout_s: time allowed to open the session, s.
            **kwargs: passed to :class:`VisaTransport`.
        """
        import pyvisa

        rm = (
            resource_manager
            if resource_manager is not None
            else pyvisa.ResourceManager(visa_library)
        )
        label = name or resource_name

        def reopen() -> Any:
            try:
                res: Any = rm.open_resource(
                    resource_name,
                    read_termination=read_termination,
                    write_termination=write_termination,
                    open_timeout=int(open_timeout_s * 1000),
                )
            except Exception as exc:
                raise InstrumentError(
                    f"{label}: cannot open {resource_name!r} ({_one_line(exc)}); check the "
                    "address, that the instrument is on and that the VISA backend is installed"
                ) from exc
            _set_nodelay(res)
            return res

        res = reopen()
        try:
            t = cls(res, name=label, **kwargs)
        except BaseException:
            res.close()
            raise
        t.reopen = reopen
        return t

    # ------------------------------------------------------------------ properties
    @property
    def identity(self) -> str:
        """The ``*IDN?`` reply read at connect."""
        return self._identity

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    @contextmanager
    def timeout(self, timeout_s: float) -> Iterator[None]:
        """Temporarily change the default exchange timeout to ``timeout_s`` s."""
        if not timeout_s > 0:
            raise ValueError("timeout_s must be > 0 s")
        old = self.timeout_s
        self.timeout_s = float(timeout_s)
        try:
            yield
        finally:
            self.timeout_s = old

    # ------------------------------------------------------------------ exchanges
    def write(self, command: str, *, timeout_s: float | None = None) -> None:
        """Send ``command``; never retried.

        Raises:
            InstrumentWriteError: the write failed; the link was resynchronised but
                the command may or may not have been executed.
        """
        with self._lock:
            self._check_open()
            try:
                with sigint_held():
                    self._write(command, timeout_s)
            except _IO_ERRORS as exc:
                self._recover(command, exc)
                raise InstrumentWriteError(
                    f"{self.name}: write {command!r} failed ({_one_line(exc)}); not retried"
                    " because it may have changed an output: re-read the instrument state"
                ) from exc

    def query(
        self,
        command: str,
        *,
        parse: Callable[[str], T] | None = None,
        timeout_s: float | None = None,
        idempotent: bool | None = None,
    ) -> Any:
        """Send ``command`` and return its reply (parsed by ``parse`` if given).

        Args:
            command: the query.
            parse: converts the reply; a ``ValueError`` from it counts as a garbled
                reply (resynchronise, then retry if idempotent).
            timeout_s: timeout of this exchange, s (default :attr:`timeout_s`).
            idempotent: whether the query may be repeated after a failure. Default:
                True when the command ends with ``?`` (a SCPI query) and False
                otherwise (a TSP chunk, which may source or pulse).

        Raises:
            InstrumentTimeoutError: no reply, also after the retries.
            InstrumentReplyError: reply not understood, also after the retries.
            InstrumentWriteError: a non-idempotent query failed (not retried).
            InstrumentIdentityError: another instrument answered the resync.
        """
        if idempotent is None:
            idempotent = command.rstrip().endswith("?")
        attempt = 0
        while True:
            with self._lock:
                self._check_open()
                try:
                    with sigint_held():
                        self._write(command, timeout_s)
                        reply = self._read(timeout_s)
                    return reply if parse is None else parse(reply)
                except _RETRYABLE as exc:
                    timeout = _is_timeout(exc)
                    kind = (
                        "timeout"
                        if timeout
                        else ("garbled reply" if isinstance(exc, ValueError) else "I/O error")
                    )
                    self._recover(command, exc)
                    if not idempotent:
                        raise InstrumentWriteError(
                            f"{self.name}: {kind} on {command!r} ({_one_line(exc)}); not"
                            " retried because it sources or pulses: re-read the instrument"
                            " state before continuing"
                        ) from exc
                    if attempt >= self.max_retries:
                        cls: type[InstrumentError] = (
                            InstrumentReplyError
                            if isinstance(exc, ValueError)
                            else InstrumentTimeoutError
                        )
                        t = self.timeout_s if timeout_s is None else timeout_s
                        raise cls(
                            f"{self.name}: {kind} on {command!r} after {attempt + 1} tries"
                            f" ({t:.3g} s each; {_one_line(exc)}); check the connection and"
                            " that the instrument is not busy, or raise the timeout"
                        ) from exc
                    wait = min(self.backoff_max_s, self.backoff_s * 2.0**attempt)
                    attempt += 1
                    self._event(
                        "retry",
                        f"{self.name}: {kind} on {command!r}; retry {attempt} of"
                        f" {self.max_retries} in {wait:.3g} s",
                    )
            time.sleep(wait)

    def resync(self) -> None:
        """Clear the device, flush input and check the identity with ``*IDN?``."""
        with self._lock:
            self._check_open()
            self._resync()

    def reconnect(self, fresh: bool) -> None:
        """Recover the link: device clear and ``*IDN?``, on the live or a fresh session.

        Args:
            fresh: close the session and open a new one to the same address first
                (only for a transport made by :meth:`open`).

        Raises:
            InstrumentError: no fresh session can be opened.
            InstrumentTimeoutError: no identity came back.
            InstrumentIdentityError: another instrument answered.
        """
        with self._lock, sigint_held():
            if fresh:
                if self.reopen is None:
                    raise InstrumentError(
                        f"{self.name}: the session was given open; it cannot be reopened"
                    )
                with contextlib.suppress(*_IO_ERRORS):
                    self._res.close()
                self._res = self.reopen()
                self._closed = False
            else:
                self._check_open()
            self._resync()

    def close(self) -> None:
        """Close the session (idempotent). The driver puts the instrument safe first."""
        self._close_once(
            self._res.close, _IO_ERRORS,
            lambda e: self._event("warning", f"{self.name}: error while closing ({_one_line(e)})"),
        )

    # ------------------------------------------------------------------ internals
    def _check_open(self) -> None:
        if self._closed:
            raise InstrumentError(f"{self.name}: the connection is closed; open it again")

    def _set_timeout(self, timeout_s: float | None) -> None:
        t = self.timeout_s if timeout_s is None else timeout_s
        if not (t > 0 and math.isfinite(t)):
            raise ValueError(f"timeout {t!r} s must be a finite number > 0")
        ms = math.ceil(t * 1000.0)
        if self._res.timeout != ms:
            self._res.timeout = ms

    def _write(self, command: str, timeout_s: float | None) -> None:
        self._set_timeout(timeout_s)
        self._journal("write", command)
        self._res.write(command)

    def _read(self, timeout_s: float | None) -> str:
        self._set_timeout(timeout_s)
        reply = self._res.read()
        self._journal("read", reply)
        return reply

    def _journal(self, direction: str, text: str) -> None:
        now = time.monotonic()
        _log.debug("%s %s %r", self.name, direction, text)
        if self.on_exchange is not None:
            self.on_exchange(direction, text, now)

    def _event(self, kind: str, message: str) -> None:
        if kind == "warning":
            _log.warning("%s", message)
        else:
            _log.info("%s", message)
        if self.on_event is not None:
            self.on_event(kind, message)

    def _recover(self, command: str, exc: BaseException) -> None:
        """After a failed exchange: warn, clear, flush and resynchronise (lock held)."""
        self._event(
            "warning",
            f"{self.name}: exchange {command!r} failed ({_one_line(exc)}); clearing and"
            " resynchronising with *IDN?",
        )
        with sigint_held():
            self._resync()

    def _resync(self) -> None:
        """Device clear, flush, ``*IDN?`` until the identity read at connect comes back.

        Stale replies (a late answer to the failed command) are read and discarded.

        Raises:
            InstrumentIdentityError: an identity other than the one at connect.
            InstrumentTimeoutError: no identity within the resync budget.
        """
        errors = _IO_ERRORS
        try:
            if _socket_closed_by_peer(self._res):
                # pyvisa-py's clear() drains a raw socket until select() finds nothing to
                # read, and a socket closed by the peer is always readable: it never returns
                raise OSError("the instrument closed the connection")
            self._res.clear()
        except _FLUSH_ERRORS as exc:
            self._event("warning", f"{self.name}: device clear failed ({_one_line(exc)})")
        flush = getattr(self._res, "flush", None)
        if flush is not None:
            with contextlib.suppress(*_FLUSH_ERRORS):
                flush(constants.BufferOperation.discard_read_buffer_no_io)
        if not self._identity:  # resync before the identity is known: nothing to check
            return
        try:
            self._write("*IDN?", self.resync_timeout_s)
        except errors as exc:
            raise InstrumentTimeoutError(
                f"{self.name}: cannot send *IDN? to resynchronise ({_one_line(exc)}); check"
                " the connection and power, then reconnect"
            ) from exc
        for _ in range(16):  # a few stale replies at most, then the identity
            try:
                reply = self._read(self.resync_timeout_s).strip()
            except errors as exc:
                raise InstrumentTimeoutError(
                    f"{self.name}: no answer to *IDN? after a device clear"
                    f" ({_one_line(exc)}); the instrument stopped answering: check it and"
                    " reconnect"
                ) from exc
            if reply == self._identity:
                self._event("warning", f"{self.name}: resynchronised (identity confirmed)")
                return
            if _looks_like_identity(reply):
                raise InstrumentIdentityError(
                    f"{self.name}: after resynchronising *IDN? answered {reply!r}, not"
                    f" {self._identity!r}; another instrument is on this address:"
                    " check the wiring and the board file"
                )
            self._event("warning", f"{self.name}: discarded stale reply {reply[:60]!r}")
        raise InstrumentTimeoutError(
            f"{self.name}: could not resynchronise (no identity among the replies);"
            " reconnect the instrument"
        )


def _identity_reply(text: str) -> str:
    """Parse an ``*IDN?`` reply (IEEE 488.2: manufacturer, model, serial, firmware)."""
    reply = text.strip()
    if not _looks_like_identity(reply):
        raise ValueError(f"not an identity reply: {reply[:60]!r}")
    return reply


def _looks_like_identity(reply: str) -> bool:
    return reply.count(",") >= 3 and any(c.isalpha() for c in reply)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:160]


def _set_nodelay(res: Any) -> None:
    """Disable Nagle's algorithm on TCPIP SOCKET sessions (small commands go out at once).

    Without it a command that follows a write without reply waits for the peer's
    delayed ACK (about 40 ms on Linux). pyvisa-py 0.8 does not implement setting
    ``VI_ATTR_TCPIP_NODELAY`` on SOCKET sessions, so its socket is set directly.
    """
    with contextlib.suppress(Exception):  # optional: not every backend has the attribute
        res.set_visa_attribute(constants.ResourceAttribute.tcpip_nodelay, True)
    with contextlib.suppress(Exception):
        sessions = getattr(getattr(res, "visalib", None), "sessions", {})
        sock = getattr(sessions.get(res.session), "interface", None)
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _socket_closed_by_peer(res: Any) -> bool:
    """True when ``res`` is a pyvisa-py raw socket that the instrument has closed (EOF).

    Anything else (another VISA library, a socket with data or nothing pending) is False.
    """
    try:
        sock = res.visalib.sessions[res.session].interface
        if not isinstance(sock, socket.socket):
            return False
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (AttributeError, KeyError, TypeError, ValueError, OSError):
        return False
