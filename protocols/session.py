"""Session safety: Ctrl-C that waits for the current step, and the safe state on every exit.

* First Ctrl-C: :attr:`StopRequest.requested` becomes True; the run finishes the
  EP step under way (so no instrument exchange or log write is cut in half),
  records "stopped" and exits cleanly.
* Second Ctrl-C: ``KeyboardInterrupt`` is raised at once; the ``finally`` of
  :func:`safe_session` still puts the board in its safe state.
* SIGTERM (``kill``, a batch scheduler, a service manager): the same path as a
  second Ctrl-C (:class:`Terminated`, a ``KeyboardInterrupt``), so the run is
  recorded as aborted and the board still ends in its safe state.

Both signals are held back (delivered afterwards) while an instrument exchange,
a session-file write or the safe state is under way
(:func:`hwloop.session.sigint_held`, shared with ``instruments`` and the writer).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from hwloop.device import Device
from hwloop.session import sigint_held


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: abort now, like a second Ctrl-C (the safe state still runs)."""


class StopRequest:
    """A flag set by the first Ctrl-C."""

    def __init__(self) -> None:
        self.requested = False
        self.reason = ""
        self.abort: KeyboardInterrupt | None = None
        """Set with the exception of an abort (second Ctrl-C, SIGTERM) when it is raised."""

    def check_abort(self) -> None:
        """Raise the pending abort again.

        A signal handler's exception is lost when it fires inside a finaliser or a
        weakref callback (Python only prints "Exception ignored"); the run loop calls
        this after every step so that such an abort still takes effect.
        """
        if self.abort is not None:
            raise self.abort

    def request(self, reason: str) -> None:
        """Ask the run to stop at the next step boundary."""
        self.requested = True
        self.reason = reason


@contextmanager
def deferred_interrupt(stop: StopRequest) -> Iterator[StopRequest]:
    """Install the two-stage Ctrl-C handler and the SIGTERM handler for the block.

    SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``: the abort path of a
    second Ctrl-C) after setting ``stop``'s reason. Only in the main thread (signal
    handlers cannot be installed elsewhere); elsewhere the block runs with the
    default behaviour.
    """
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    # Python runs a handler once for signals that arrive during one long C call (an
    # HDF5 commit, a BLAS settle); the wakeup fd gets one byte per delivery, so two
    # quick presses still count as two.
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    os.set_blocking(wfd, False)

    def presses() -> int:
        try:
            data = os.read(rfd, 4096)
        except BlockingIOError:
            return 1
        return max(1, data.count(bytes([signal.SIGINT])))

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.requested or presses() >= 2:
            stop.abort = KeyboardInterrupt("aborted by a second Ctrl-C")
            raise stop.abort
        stop.request("interrupted by Ctrl-C")
        print(
            "\nhwloop: stopping after the current step (press Ctrl-C again to abort now)",
            file=sys.stderr,
        )

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.request("terminated by SIGTERM")
        print("\nhwloop: SIGTERM: aborting now (the board goes to its safe state)",
              file=sys.stderr)
        stop.abort = Terminated("terminated by SIGTERM")
        raise stop.abort

    previous_hook = sys.unraisablehook

    def unraisable(info: sys.UnraisableHookArgs) -> None:
        # An abort raised inside a finaliser or weakref callback cannot propagate;
        # Python would print it with a traceback. It is not lost: the run loop
        # re-raises it (StopRequest.check_abort) after every step and evaluation, and
        # this block re-raises it when it ends, so it is kept quiet here.
        if stop.abort is not None and info.exc_value is stop.abort:
            return
        previous_hook(info)

    previous = signal.signal(signal.SIGINT, handler)
    previous_term = signal.signal(signal.SIGTERM, on_term)
    previous_wakeup = signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
    sys.unraisablehook = unraisable
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)
        signal.set_wakeup_fd(previous_wakeup)
        os.close(rfd)
        os.close(wfd)
        sys.unraisablehook = previous_hook
    # the block ended normally: an abort swallowed in a finaliser after the last check
    # (say during the final evaluation) still ends the command as aborted
    stop.check_abort()


@contextmanager
def safe_session(device: Device) -> Iterator[Device]:
    """Use ``device`` and put it in its safe state and close it on every exit path."""
    try:
        yield device
    finally:
        with sigint_held():  # a Ctrl-C must not cut the way to the safe state short
            try:
                device.safe_state()
            finally:
                device.close()
