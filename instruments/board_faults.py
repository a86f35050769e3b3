"""Faults and events of a real board: the event log, dead instruments, the safe state.

:class:`EventLog` keeps the board's ``(kind, message)`` events (retries, warnings,
safety actions, connections, and per ``log_exchanges`` the wire-level exchanges
around each fault) and hands them to the sink the session connects, buffering
those from before it.

:class:`Faults` runs driver calls for :class:`instruments.real_board.RealBoard`:
an instrument that stops answering is marked dead; any fault inside
:meth:`Faults.guard` is recorded and every instrument is put in its safe state
(sources first) before the error propagates.

Recovery (:meth:`Faults.all_safe`): an instrument that is dead, or fails to confirm
its safe state, is reconnected -- first on its live link (device clear or
IDENTIFY resynchronisation), then on fresh connections -- up to
:data:`RECONNECT_ATTEMPTS` times with doubling back-off from
:data:`RECONNECT_BACKOFF_S`, and commanded to its safe state as soon as it
answers. Only an instrument that never answered again is reported "not
answering", and it is not retried after that.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from hwloop.errors import HwloopError
from instruments.board_file import BoardSettings, Roles
from instruments.board_open import BoardInstrument

__all__ = ["RECONNECT_ATTEMPTS", "RECONNECT_BACKOFF_S", "EventLog", "EventSink", "Faults"]

RECONNECT_ATTEMPTS = 3
"""Reconnection attempts of an instrument that stopped answering (the first on its live link)."""

RECONNECT_BACKOFF_S = 0.2
"""Wait before the second reconnection attempt, s; doubled for each further one."""

_log = logging.getLogger("hwloop.instruments.real_board")

EventSink = Callable[[str, str], None]
"""``sink(kind, message)``; kind ``"retry"``, ``"warning"``, ``"safety"`` or ``"info"``."""

T = TypeVar("T")


class EventLog:
    """The board's events (see the module docstring).

    Args:
        settings: the board file's ``[board]`` (``log_exchanges``, ``exchange_history``).
    """

    def __init__(self, settings: BoardSettings) -> None:
        self._settings = settings
        self._sink: EventSink | None = None
        self._pending: list[tuple[str, str]] = []
        self._history: collections.deque[tuple[str, str]] = collections.deque(maxlen=2000)
        self._wire: collections.deque[str] = collections.deque(maxlen=settings.exchange_history)

    def set_sink(self, sink: EventSink | None) -> None:
        """Send events to ``sink(kind, message)`` (buffered ones first); ``None`` detaches."""
        self._sink = sink
        if sink is not None:
            pending, self._pending = self._pending, []
            for kind, msg in pending:
                self._deliver(kind, msg)

    @property
    def events(self) -> list[tuple[str, str]]:
        """Every event so far, oldest first (at most 2000)."""
        return list(self._history)

    def _deliver(self, kind: str, message: str) -> None:
        if self._sink is None:
            if len(self._pending) < 2000:
                self._pending.append((kind, message))
            return
        try:
            self._sink(kind, message)
        except Exception as exc:  # the log must never stop the board going safe
            self._sink = None  # warned once; later events stay in the history and the log
            _log.warning(
                "event sink failed (%s); events are no longer recorded there: %s %s",
                " ".join(str(exc).split()), kind, message,
            )

    def event(self, kind: str, message: str) -> None:
        """Record an event (whitespace folded to one line); a fault flushes the wire log."""
        msg = " ".join(message.split())
        if kind in ("retry", "warning", "safety") and self._settings.log_exchanges == "faults":
            wire, self._wire = list(self._wire), collections.deque(
                maxlen=self._settings.exchange_history
            )
            for w in wire:
                self._history.append(("info", w))
                self._deliver("info", f"wire: {w}")
        self._history.append((kind, msg))
        (_log.warning if kind != "info" else _log.info)("%s: %s", kind, msg)
        self._deliver(kind, msg)

    def exchange(self, text: str) -> None:
        """A wire-level exchange (kept for the next fault, logged, or dropped)."""
        mode = self._settings.log_exchanges
        if mode == "faults":
            self._wire.append(text)
        elif mode == "all":
            self._deliver("info", f"wire: {text}")


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (never cut)."""
    return " ".join(str(exc).split())


class Faults:
    """Driver calls, dead instruments and the safe state of every instrument.

    Args:
        instruments: the opened instruments by name (filled while the board opens).
        roles: the board file's roles (sources go safe first).
        log: the event log.
        after_safe: called after every attempt to put all instruments safe.
    """

    def __init__(self, instruments: Mapping[str, BoardInstrument], roles: Roles, log: EventLog,
                 after_safe: Callable[[], None]) -> None:
        self._inst = instruments
        self._roles = roles
        self._log = log
        self._after_safe = after_safe
        self.faulted = False
        """True once a fault was reported (later safe-state failures do not raise again)."""
        self.unsafe_report = ""
        """The last "safe state NOT confirmed ..." report."""
        self.safe_confirmed = False
        """True when every instrument confirmed its safe state and nothing was driven since."""
        self._given_up: dict[str, str] = {}
        """Instruments given up on, with why (said again as it was: no new report)."""

    @contextlib.contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Any instrument fault: record it, put every instrument safe, re-raise."""
        try:
            yield
        except HwloopError as exc:
            self.fault(what, exc)
            raise

    def call(self, inst: BoardInstrument, fn: Callable[..., T], *args: Any) -> T:
        """Call a driver method; an instrument that stops answering is marked dead."""
        from instruments.transport import BoardTimeoutError, LinkError, UnconfirmedCommandError
        from instruments.visa_transport import InstrumentTimeoutError

        if inst.dead:
            raise HwloopError(
                f"{inst.label} stopped answering earlier in this run; reconnect it and start "
                "a new run"
            )
        try:
            return fn(*args)
        except (BoardTimeoutError, LinkError, InstrumentTimeoutError):
            inst.dead = True
            raise
        except UnconfirmedCommandError as exc:
            if not exc.resynchronised:  # not even IDENTIFY was answered afterwards
                inst.dead = True
            raise

    def confirm(self, inst: BoardInstrument) -> None:
        """Wait until the instrument executed its writes (and check its errors).

        Writes to a SCPI/TSP instrument return before it executes them; the meter is
        another instrument, so without this a reading could precede the new levels.
        """
        self.call(inst, inst.opened.confirm)

    def fault(self, what: str, exc: BaseException) -> None:
        """Record a fault and put every instrument in its safe state."""
        self.faulted = True
        text = " ".join(str(exc).split())
        self._log.event("safety", f"{what} failed: {type(exc).__name__}: {text}")
        failed = self.all_safe()
        if failed:
            self.unsafe_report = "safe state NOT confirmed for " + "; ".join(failed)
            self._log.event("safety", self.unsafe_report)
        else:
            self._log.event("safety", "every instrument confirmed its safe state after the fault")

    def all_safe(self) -> list[str]:
        """Put every instrument in its safe state (sources first); return the failures."""
        sources = {self._roles.inputs, self._roles.nudges, self._roles.biases}
        order = sorted(self._inst.values(), key=lambda i: 0 if i.name in sources else 1)
        failed = []
        for inst in order:
            why = self._make_safe(inst)
            if why:
                failed.append(f"{inst.label}: {why}")
        self._after_safe()
        self.safe_confirmed = not failed
        return failed

    def _safe(self, inst: BoardInstrument) -> None:
        self.call(inst, inst.opened.device.safe_state)
        self.confirm(inst)

    def _make_safe(self, inst: BoardInstrument) -> str:
        """Command and confirm one instrument's safe state, reconnecting it if needed.

        Returns:
            ``""`` when confirmed, else why not (one line).
        """
        last = "not answering"
        if not inst.dead:
            try:
                self._safe(inst)
                return ""
            except Exception as exc:
                last = one_line(exc)
        if inst.name in self._given_up:
            return self._given_up[inst.name]
        reconnect = inst.opened.reconnect
        if reconnect is None:
            return (f"{last} (its link is closed on close(); a board goes safe when its host "
                    "disconnects)")
        for attempt in range(1, RECONNECT_ATTEMPTS + 1):
            if attempt > 1:
                time.sleep(RECONNECT_BACKOFF_S * 2 ** (attempt - 2))
            fresh = attempt > 1
            self._log.event("retry", f"{inst.label}: reconnecting on a "
                            f"{'fresh' if fresh else 'live'} connection (attempt {attempt} of "
                            f"{RECONNECT_ATTEMPTS}) to command its safe state")
            try:
                reconnect(fresh)
            except Exception as exc:
                last = one_line(exc)
                continue
            inst.dead = False
            try:
                self._safe(inst)
            except Exception as exc:
                last = one_line(exc)
                continue
            self._log.event("safety", f"{inst.label}: reconnected (attempt {attempt}) and "
                            "confirmed its safe state")
            return ""
        inst.dead = True
        why = (f"not answering after {RECONNECT_ATTEMPTS} reconnection attempts (last: {last}); "
               "its link is closed on close()")
        self._given_up[inst.name] = why
        return why

    def close_all(self) -> None:
        """Release every instrument (a dead one without talking to it); warn on failures."""
        for inst in self._inst.values():
            try:
                if inst.dead:
                    inst.opened.hard_close()
                else:
                    inst.opened.device.close()
            except Exception as exc:
                if not inst.dead:
                    inst.dead = True
                    with contextlib.suppress(Exception):
                        inst.opened.hard_close()
                self._log.event("warning", f"closing {inst.label}: {one_line(exc)}")
