"""Child processes for tests: waited on by lines and deadlines, always stopped.

:func:`child` starts a command in its own process group and yields a :class:`Child`.
Two reader threads drain its stdout and stderr line by line (a full pipe never
blocks the child) and wake anyone waiting for a line. However the test ends, the
whole process group is killed and reaped when the block exits, so no test leaves a
process behind (also when an assertion fails half-way).

Waits are on conditions with generous deadlines (:data:`DEADLINE_S`), never fixed
sleeps: on a busy machine a child takes several times longer to start, never less.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

import pytest

DEADLINE_S = 120.0
"""Default deadline of every wait, s: generous, a loaded 2-core machine must pass."""


class Child:
    """A running child process and the lines it has written so far."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self._cond = threading.Condition()
        self._lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._open = {"stdout": True, "stderr": True}
        self._triggers: list[tuple[str, Callable[[str], bool], Callable[[], None]]] = []
        self._readers = [
            threading.Thread(target=self._pump, args=(name, stream), daemon=True)
            for name, stream in (("stdout", proc.stdout), ("stderr", proc.stderr))
        ]
        for t in self._readers:
            t.start()

    def _pump(self, name: str, stream: IO[str] | None) -> None:
        if stream is not None:
            for line in stream:
                with self._cond:
                    self._lines[name].append(line)
                    fire = [t for t in self._triggers if t[0] == name and t[1](line)]
                    for t in fire:
                        self._triggers.remove(t)
                    self._cond.notify_all()
                for _, _, action in fire:
                    action()
        with self._cond:
            self._open[name] = False
            self._cond.notify_all()

    @property
    def pid(self) -> int:
        """Process id (also the id of its process group)."""
        return self.proc.pid

    def text(self, stream: str = "stderr") -> str:
        """All of ``stream`` ("stdout" or "stderr") read so far."""
        with self._cond:
            return "".join(self._lines[stream])

    def wait_line(
        self,
        match: Callable[[str], bool],
        stream: str = "stdout",
        timeout_s: float = DEADLINE_S,
    ) -> str:
        """The first line of ``stream`` for which ``match`` is true.

        Raises:
            AssertionError: the stream ended or the deadline passed first (the
                message holds the child's stderr).
        """
        end = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for line in self._lines[stream]:
                    if match(line):
                        return line
                left = end - time.monotonic()
                if not self._open[stream] or left <= 0:
                    why = "ended" if not self._open[stream] else f"gave none in {timeout_s} s"
                    raise AssertionError(
                        f"{stream} of pid {self.pid} {why}; stderr:\n"
                        + "".join(self._lines["stderr"])
                    )
                self._cond.wait(left)

    def on_line(self, match: Callable[[str], bool], action: Callable[[], None],
                stream: str = "stderr") -> None:
        """Run ``action`` once, in the reader thread, as soon as a matching line arrives.

        For a reaction that must come as early as possible (no second thread to wake).
        """
        with self._cond:
            self._triggers.append((stream, match, action))

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the child itself (not its group)."""
        self.proc.send_signal(signum)

    def wait(self, timeout_s: float = DEADLINE_S) -> int:
        """Wait for the exit and for both streams to be read; the exit code.

        Raises:
            AssertionError: the child is still running after ``timeout_s``.
        """
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"pid {self.pid} still running after {timeout_s} s; stderr:\n"
                + self.text("stderr")
            ) from None
        for t in self._readers:
            t.join(timeout_s)
        return code

    def kill_group(self) -> None:
        """SIGKILL the whole process group and reap the child. Idempotent."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(DEADLINE_S)
        for t in self._readers:
            t.join(5.0)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError, ValueError):
                    stream.close()


@contextlib.contextmanager
def child(
    cmd: Sequence[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> Iterator[Child]:
    """Run ``cmd`` (text pipes, own process group) for the block; killed at its end."""
    proc = subprocess.Popen(
        [str(c) for c in cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=None if env is None else dict(env),
        cwd=cwd,
        start_new_session=True,
    )
    c = Child(proc)
    try:
        yield c
    finally:
        c.kill_group()


def wait_until(cond: Callable[[], bool], timeout_s: float = DEADLINE_S,
               poll_s: float = 0.005) -> bool:
    """Poll ``cond`` until it is true or the deadline passes; its last value.

    For states that have no event to wait on (a file appearing, a counter of
    another process); ``poll_s`` only sets how soon a true condition is seen.
    """
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(poll_s)
    return bool(cond())


def steps_recorded(path: Path) -> int:
    """Steps a running child has committed to its session file (SWMR read); -1: none yet."""
    import h5py

    try:
        with h5py.File(path, "r", libver=("v110", "latest"), swmr=True) as f:
            return int(f["steps/index"].shape[0])
    except (OSError, KeyError):
        return -1


# --------------------------------------------------------------------------- in-process CLI


def run_cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """Run ``hwloop`` in-process; (exit code, stdout, stderr). Usage errors exit via SystemExit."""
    from hwloop.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_usage_error(
    code: int, out: str, err: str, *must_contain: object, prefix: str = "hwloop"
) -> str:
    """Exit code 2, nothing on stdout, one line on stderr (starting with ``prefix`` and
    holding ``error:`` and every item of ``must_contain``), no traceback; the line."""
    assert code == 2, (code, out, err)
    assert out == ""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix) and "error:" in lines[0], err
    for part in must_contain:
        assert str(part) in lines[0], f"{part!r} not in {lines[0]!r}"
    return lines[0]
