"""The session file: one HDF5 file per run, written step by step, crash-safe.

The layout (schema ``hwloop-session`` version 1) is documented group by group in
``docs/session-format.md``; :class:`SessionWriter` is the reference. In short:

* root attributes: identity, times, exit status, seed, the resolved configuration;
* ``/device``: the full board description (topology, limits, noise model);
* ``/steps``: one row per completed EP step in chunked, resizable datasets
  (raw samples ``[step, example, phase, sample, node]``, flags, timestamps,
  inputs, nudges, updates, per-step metrics and the generator state);
* ``/programming``: one row per programmed edge (structured table);
* ``/checkpoints``: full state every K steps (conductances, biases, optimiser,
  programmer and board state, generator state, the epoch's example order);
* ``/epochs`` and ``/events``: per-epoch metrics and the event log.

Crash safety (decision record DR-12 in ``docs/architecture.md``): every dataset
is created before writing starts; the file is then switched to HDF5's SWMR mode
(single writer, multiple readers), in which the library orders its metadata
writes so that the file on disk is always a consistent, readable file, and
everything is flushed at each step boundary. A step counts as complete when its
row in ``/steps/index`` exists (that row is written last) and its checksum
matches. A file left behind by a killed writer is opened read-only in SWMR mode
(plain ``h5py.File`` refuses it because its "open for writing" flag is still
set); :func:`repair` rewrites it as a clean file, which ``hwloop resume`` does
before appending.

Nothing in a session file is ever executed or unpickled: configuration is TOML
text, structured data are numeric tables, JSON is only parsed.

The package, one concern per module: :mod:`~hwloop.sessionlog.schema` (names, record
types, units, checksum), :mod:`~hwloop.sessionlog.description` (the ``/device``
group), :mod:`~hwloop.sessionlog.writer` (:class:`SessionWriter`),
:mod:`~hwloop.sessionlog.reader` (:class:`SessionFile` and the file checks),
:mod:`~hwloop.sessionlog.repair` and :mod:`~hwloop.sessionlog.summary`
(:func:`load_run`). Import the public names from ``hwloop.sessionlog``: each module's
``__all__`` names them, and this package re-exports them.
"""

from __future__ import annotations

from hwloop.sessionlog.description import *  # noqa: F403
from hwloop.sessionlog.reader import *  # noqa: F403
from hwloop.sessionlog.repair import *  # noqa: F403
from hwloop.sessionlog.schema import *  # noqa: F403
from hwloop.sessionlog.summary import *  # noqa: F403
from hwloop.sessionlog.writer import *  # noqa: F403
