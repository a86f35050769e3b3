"""Progress of a long command on stderr: a bar on a terminal, a periodic line otherwise.

``hwloop replay`` and the re-verification of ``hwloop resume`` use it: on a terminal a
tqdm bar (as ``hwloop train`` shows), into a pipe or a file one line every
:data:`LINE_EVERY_S` seconds (a log must show that the command is alive without a bar's
carriage returns). Nothing with ``quiet``.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

LINE_EVERY_S = 10.0
"""Interval of the progress lines when stderr is not a terminal, s."""


class StepProgress:
    """Progress over ``total`` steps labelled ``label`` (e.g. ``"hwloop replay"``)."""

    def __init__(
        self, label: str, total: int, *, quiet: bool = False, file: IO[str] | None = None,
        every_s: float | None = None,
    ) -> None:
        self.label, self.total = label, int(total)
        self.file = sys.stderr if file is None else file
        self.every_s = LINE_EVERY_S if every_s is None else float(every_s)
        self.done = 0
        self._t0 = self._last = time.monotonic()
        self._bar: Any = None
        self._lines = not quiet and not _is_tty(self.file)
        if not quiet and not self._lines:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, unit="step", leave=False, desc=label,
                             file=self.file, mininterval=0.5)

    def update(self, done: int) -> None:
        """``done`` steps of ``total`` are finished."""
        self.done = done
        if self._bar is not None:
            self._bar.n = done
            self._bar.refresh()
        elif self._lines:
            now = time.monotonic()
            if now - self._last >= self.every_s:
                self._last = now
                rate = done / max(now - self._t0, 1e-9)
                print(f"{self.label}: {done}/{self.total} steps ({rate:,.0f} steps/s)",
                      file=self.file, flush=True)

    def close(self) -> None:
        """Remove the bar (lines stay)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _is_tty(f: IO[str]) -> bool:
    try:
        return bool(f.isatty())
    except (AttributeError, ValueError):
        return False
