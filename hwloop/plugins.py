"""Entry-point discovery for subcommands and board backends.

``hwloop`` never imports ``instruments``, ``protocols`` or ``simulated_device``
directly: each package (and any lab's plugin package) declares its pieces in
its own ``pyproject.toml`` under two entry-point groups:

* ``hwloop.commands``: ``name = "module:register"`` where ``register(subparsers)``
  adds one ``argparse`` subparser and sets ``func`` on it.
* ``hwloop.backends``: ``name = "module:make"`` where ``make(options, rng)``
  returns an object implementing :class:`hwloop.device.Device`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any, cast

import numpy as np

from hwloop.device import Device
from hwloop.errors import ConfigError

COMMANDS_GROUP = "hwloop.commands"
BACKENDS_GROUP = "hwloop.backends"

BackendFactory = Callable[[Mapping[str, Any], np.random.Generator], Device]


def _group(name: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=name)}


def command_entry_points() -> dict[str, EntryPoint]:
    """Installed subcommands, by name."""
    return _group(COMMANDS_GROUP)


def backend_names() -> list[str]:
    """Names of the installed board backends, sorted."""
    return sorted(_group(BACKENDS_GROUP))


def load_backend(name: str) -> BackendFactory:
    """Return the factory of backend ``name``.

    Raises:
        ConfigError: no installed package provides that backend.
    """
    eps = _group(BACKENDS_GROUP)
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none"
        raise ConfigError(
            f"unknown backend {name!r} (installed: {known}); install the package that "
            f"provides it or pick one of those"
        )
    return cast(BackendFactory, eps[name].load())


def open_board(name: str, options: Mapping[str, Any], rng: np.random.Generator) -> Device:
    """Create a board from the backend ``name`` with ``options`` and the run's ``rng``."""
    return load_backend(name)(options, rng)
