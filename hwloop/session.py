"""Session safety: Ctrl-C that waits for the current step, and the safe state on every exit.

* First Ctrl-C: :attr:`StopRequest.requested` becomes True; the run finishes the
  EP step under way (so no instrument exchange or log write is cut in half),
  records "stopped" and exits cleanly.
* Second Ctrl-C: ``KeyboardInterrupt`` is raised at once; the ``finally`` of
  :func:`safe_session` still puts the board in its safe state.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from hwloop.device import Device


class StopRequest:
    """A flag set by the first Ctrl-C."""

    def __init__(self) -> None:
        self.requested = False
        self.reason = ""

    def request(self, reason: str) -> None:
        """Ask the run to stop at the next step boundary."""
        self.requested = True
        self.reason = reason


@contextmanager
def deferred_interrupt(stop: StopRequest) -> Iterator[StopRequest]:
    """Install the two-stage Ctrl-C handler for the duration of the block.

    Only in the main thread (signal handlers cannot be installed elsewhere);
    elsewhere the block runs with the default behaviour.
    """
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.requested:
            raise KeyboardInterrupt
        stop.request("interrupted by Ctrl-C")
        print(
            "\nhwloop: stopping after the current step (press Ctrl-C again to abort now)",
            file=sys.stderr,
        )

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def sigint_held() -> Iterator[None]:
    """Hold Ctrl-C back while the file is being written (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if callable(previous):
            for _ in caught:  # each one: a second Ctrl-C held back here still aborts
                previous(signal.SIGINT, None)


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
