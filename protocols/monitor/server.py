"""The read-only HTTP server of ``hwloop monitor`` (standard library ``http.server``).

``GET /`` gives the page, ``GET /api/snapshot`` the JSON document; every other path is
404 and every other method 405 (nothing can be changed through it). Snapshots are read
at most once per interval however many browsers poll, and only when one asks.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from protocols.monitor.page import render_page
from protocols.monitor.snapshot import RunWatcher, SweepWatcher


class SnapshotCache:
    """The watcher's snapshot, re-read when older than ``interval_s`` (thread-safe).

    Args:
        watcher: what to read.
        interval_s: shortest time between two reads of the files, s (> 0).
    """

    def __init__(self, watcher: RunWatcher | SweepWatcher, interval_s: float) -> None:
        self.watcher = watcher
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._body = b""
        self._t = -float("inf")
        self.reads = 0

    def get(self) -> bytes:
        """The JSON document, as bytes."""
        with self._lock:
            now = time.monotonic()
            if now - self._t >= self.interval_s or not self._body:
                doc = self.watcher.snapshot()
                self._body = json.dumps(doc, allow_nan=False).encode()
                self._t = now
                self.reads += 1
            return self._body


class _Handler(BaseHTTPRequestHandler):
    server: MonitorServer
    server_version = "hwloop-monitor"
    sys_version = ""

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        """Serve the page or the snapshot."""
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8")
        elif path == "/api/snapshot":
            self._send(HTTPStatus.OK, self.server.cache.get(), "application/json")
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

    def do_HEAD(self) -> None:
        """As GET, without the body."""
        self.do_GET()

    def _refuse(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: no line per request."""


class MonitorServer(ThreadingHTTPServer):
    """A threading HTTP server holding the page and the snapshot cache."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], cache: SnapshotCache, title: str,
                 interval_s: float) -> None:
        super().__init__(address, _Handler)
        self.cache = cache
        self.page = render_page(title=title, mode="live", interval_s=interval_s).encode()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Say nothing when a client went away mid-reply; print anything else.

        A closed tab or a timed-out poll is normal; other errors are printed as the
        standard library does.
        """
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):  # BrokenPipe, ConnectionReset, ConnectionAborted
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        """``http://HOST:PORT/`` of the server."""
        host, port = self.server_address[:2]
        h = str(host)
        if ":" in h:
            h = f"[{h}]"
        return f"http://{h}:{port}/"
