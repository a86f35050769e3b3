"""Watch a run or a sweep: ``hwloop monitor`` (live page) and ``hwloop report`` (one HTML file).

Both read only the files: a run's session file through the SWMR reader of
:mod:`hwloop.sessionlog` (re-opened at each poll, so a crash, a repair and a
``hwloop resume`` of the same file are followed), a sweep directory through its
``index.json`` (:mod:`protocols.sweep`). :mod:`protocols.monitor.snapshot` turns them into
one JSON document; the page (:mod:`protocols.monitor.page`, with the small script and
style sheet in ``static/``) draws every view from that document as inline SVG, in the
browser, with no library and no network.

The package lives in ``protocols`` because the sweep view needs the sweep layout, its
measured limits and the planner's predicted limit; the run view needs only ``hwloop``.
"""
