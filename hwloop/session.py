"""Holding Ctrl-C and SIGTERM back while a write or an instrument exchange runs.

Shared by the session writer (:mod:`hwloop.sessionlog`), the instrument transports
(``instruments``) and the run loop (``protocols``): each write or exchange runs inside
:func:`sigint_held`, so a signal never cuts it in half; the signal is delivered when
the block ends. The run-level policy (first Ctrl-C stops after the step, second
aborts, SIGTERM aborts, safe state on every exit) is ``protocols.session``.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def sigint_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back while a write or exchange runs (main thread only).

    Each signal caught meanwhile is delivered when the block ends, to the handler
    that was installed before it (a second Ctrl-C held back here still aborts; a
    SIGTERM with the default action still terminates the process, afterwards).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    previous_term = signal.signal(signal.SIGTERM, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)
        for signum in caught:
            before = previous if signum == signal.SIGINT else previous_term
            if callable(before):
                before(signum, None)
            elif before == signal.SIG_DFL:
                signal.raise_signal(signum)
