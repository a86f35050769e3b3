"""The HTML page: one template; the style sheet, the script and a report's data go inline."""

from __future__ import annotations

import html
import json
import re
from importlib import resources
from typing import Any

_CSP_LIVE = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
             "connect-src 'self'; img-src data:")
_CSP_REPORT = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; " \
              "img-src data:"


def _static(name: str) -> str:
    return resources.files("protocols.monitor").joinpath("static", name).read_text("utf-8")


def embed_json(doc: Any) -> str:
    """``doc`` as JSON safe inside a ``<script>`` element (``<`` escaped; no NaN)."""
    text = json.dumps(doc, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(*, title: str, mode: str, data: Any = None, interval_s: float = 2.0) -> str:
    """The complete page.

    Args:
        title: shown in the header and the window title.
        mode: ``live`` (the script polls ``api/snapshot``) or ``report`` (draws ``data``).
        data: the snapshot embedded in the page (None: the live page fetches it).
        interval_s: polling interval of the live page, s (> 0).
    """
    if mode not in ("live", "report"):
        raise ValueError(f"mode {mode!r} is not 'live' or 'report'")
    subs = {
        "{{CSP}}": _CSP_LIVE if mode == "live" else _CSP_REPORT,
        "{{TITLE}}": html.escape(title),
        "{{MODE}}": mode,
        "{{INTERVAL_MS}}": str(round(1000 * interval_s)),
        "{{STYLE}}": _static("monitor.css"),
        "{{DATA}}": embed_json(data),
        "{{SCRIPT}}": _static("monitor.js").replace("</script", "<\\/script"),
    }
    # one pass: text substituted in is never scanned again
    return re.sub(r"\{\{[A-Z_]+\}\}", lambda m: subs[m.group(0)], _static("page.html"))
