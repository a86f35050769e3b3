"""A headless Chromium driven over the DevTools protocol, for the monitor and report tests.

``Browser`` starts Debian's ``chromium`` with its own profile directory and
``--remote-debugging-port=0``, reads the port it chose from ``DevToolsActivePort`` and
talks to its first page over a WebSocket (the ``websockets`` package). Every wait has a
deadline; ``close`` (also on an exception: use it as a context manager) kills the browser
and its children.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,2400", "--hide-scrollbars"]


def wait_until(cond: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.2) -> Any:
    """Call ``cond`` until it returns something truthy (returned) or the deadline passes."""
    t_end = time.monotonic() + timeout_s
    last: Any = None
    while True:
        last = cond()
        if last:
            return last
        if time.monotonic() > t_end:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what} "
                               f"(last: {last!r})")
        time.sleep(every_s)


class Browser:
    """A headless Chromium with one page.

    Args:
        profile: an empty directory for the browser's profile.
    """

    def __init__(self, profile: Path) -> None:
        from websockets.sync.client import connect

        assert CHROMIUM is not None
        profile.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            port_file = profile / "DevToolsActivePort"
            wait_until(lambda: (port_file.exists() and len(port_file.read_text().split()) >= 2)
                       or self.proc.poll() is not None, 90, "chromium's DevTools port")
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}")
            port = int(port_file.read_text().split()[0])

            def page_ws() -> str | None:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                    pages = [t for t in json.load(r) if t.get("type") == "page"]
                return pages[0]["webSocketDebuggerUrl"] if pages else None

            url = wait_until(page_ws, 60, "chromium's first page")
            self._stack = contextlib.ExitStack()
            self.ws = self._stack.enter_context(connect(url, max_size=None, open_timeout=30))
        except BaseException:
            self._kill()
            raise
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, timeout_s: float = 60.0, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (events are kept in ``events``)."""
        self._id += 1
        my = self._id
        self.ws.send(json.dumps({"id": my, "method": method, "params": params}))
        t_end = time.monotonic() + timeout_s
        while True:
            left = t_end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"DevTools {method} did not answer in {timeout_s:.0f} s")
            msg = json.loads(self.ws.recv(timeout=left))
            if msg.get("id") == my:
                if "error" in msg:
                    raise RuntimeError(f"DevTools {method}: {msg['error']}")
                return dict(msg.get("result", {}))
            self.events.append(msg)

    def navigate(self, url: str) -> None:
        """Load ``url`` and wait for its load event."""
        self.call("Page.enable")
        self.events.clear()
        self.call("Page.navigate", url=url)
        wait_until(lambda: any(e.get("method") == "Page.loadEventFired" for e in self.events)
                   or self._pump(), 60, f"{url} to load")

    def _pump(self) -> bool:
        """Read pending events for a moment (lets ``navigate`` see the load event)."""
        try:
            msg = json.loads(self.ws.recv(timeout=0.2))
        except TimeoutError:
            return False
        self.events.append(msg)
        return msg.get("method") == "Page.loadEventFired"

    def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"JavaScript error: {r['exceptionDetails']}")
        return r["result"].get("value")

    def text(self, element_id: str) -> str | None:
        """The text of the element with this id (None when absent)."""
        return self.eval(  # type: ignore[no-any-return]
            f"(e => e ? e.textContent : null)(document.getElementById({json.dumps(element_id)}))")

    def screenshot(self, path: Path) -> Path:
        """Save a PNG of the whole page."""
        h = int(self.eval("Math.ceil(document.documentElement.scrollHeight)") or 1200)
        self.call("Emulation.setDeviceMetricsOverride", width=1400, height=min(h, 6000),
                  deviceScaleFactor=1, mobile=False)
        r = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(r["data"]))
        keep = os.environ.get("HWLOOP_SCREENSHOT_DIR")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(keep) / path.name)
        return path

    def close(self) -> None:
        """Close the connection and kill the browser (and its helper processes)."""
        with contextlib.suppress(Exception):
            self._stack.close()
        self._kill()

    def _kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
