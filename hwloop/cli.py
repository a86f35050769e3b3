"""The ``hwloop`` command: a thin dispatcher over entry-point subcommands.

Every subcommand comes from the ``hwloop.commands`` entry-point group (see
:mod:`hwloop.plugins`). Errors derived from :class:`hwloop.errors.HwloopError`
print one line on stderr and exit with code 2; so do errors the HDF5 library
raises while a command that reads a session file (a ``run`` argument) reads it
(a damaged or incomplete file; :func:`hwloop.sessionlog.open_session` refuses
truncated and unopenable files first); Ctrl-C exits with 130.

Start-up is lazy (DR-32): an entry point may name a :class:`LazyCommand`
(the ``module:register`` of the command and its one-line help, declared in a small
index module that imports nothing heavy). ``hwloop --help`` lists those from their
help alone; only the chosen command's module is imported. A plain ``register``
callable still works (its module is imported to list it).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from hwloop import __version__
from hwloop.errors import HwloopError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
COMMANDS_GROUP = "hwloop.commands"  # as hwloop.plugins (not imported here: it needs numpy)

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]
    Register = Callable[[SubParsers], None]


@dataclass(frozen=True)
class LazyCommand:
    """A subcommand declared without importing its module.

    Attributes:
        target: ``"module:register"``, the callable that adds the full subparser.
        help: the one-line help shown by ``hwloop --help`` (the same text the
            subparser is registered with).
    """

    target: str
    help: str

    def load(self) -> Register:
        """Import the module and return its ``register``."""
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]

    def __call__(self, sub: SubParsers) -> None:
        """Register the full subparser (imports the command's module)."""
        self.load()(sub)


def _command_entry_points() -> dict[str, Any]:
    """Installed subcommands, by name (entry points, not loaded)."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=COMMANDS_GROUP)}


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit with code 2.

    Abbreviated options are refused (``--epoch`` is not taken for ``--epochs``):
    a typo must never be silently reinterpreted.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"hwloop: error: {message} (see '{self.prog} --help')\n")


def _raised_in_h5py(exc: BaseException) -> bool:
    """True when ``exc`` was raised by h5py (the HDF5 library refused to read something)."""
    tb: TracebackType | None = exc.__traceback__
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith("h5py"):
            return True
        tb = tb.tb_next
    return False


def _hdf5_message(exc: BaseException) -> str:
    """The first line of an h5py error (KeyError's without its quotes)."""
    msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    text = str(msg).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (the first non-option word), if any."""
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word
    return None


def build_parser(command: str | None = "*") -> argparse.ArgumentParser:
    """Build the top-level parser with one subparser per installed subcommand.

    Args:
        command: the subcommand to register in full (its module is imported); the
            others are listed by their declared help only. ``"*"`` registers all of
            them in full; ``None`` none (enough for ``hwloop --help``).
    """
    parser = _Parser(
        prog="hwloop",
        description="Hardware-in-the-loop Equilibrium Propagation for resistive-network boards.",
    )
    parser.add_argument("--version", action="version", version=f"hwloop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, ep in sorted(_command_entry_points().items()):
        try:
            register = ep.load()
            if isinstance(register, LazyCommand):
                if command not in (name, "*"):
                    sub.add_parser(name, help=register.help)
                    continue
                register = register.load()
        except Exception as exc:  # a broken plugin must not take the CLI down
            print(f"hwloop: warning: subcommand {name!r} failed to load: {exc}", file=sys.stderr)
            continue
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_chosen_command(words))
    args = parser.parse_args(words)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        code = func(args)
    except HwloopError as exc:
        print(f"hwloop {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # the reader went away (`hwloop solve-drn | head -1`)
        # keep the interpreter's final flush of stdout from raising again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
        run = getattr(args, "run", None)
        if run is None or not _raised_in_h5py(exc):
            raise
        hint = "" if args.command == "inspect" else f"; 'hwloop inspect {run}' shows what it holds"
        print(
            f"hwloop {args.command}: error: cannot read session file {run} "
            f"({_hdf5_message(exc)}): it is damaged or incomplete{hint}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"hwloop {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return int(code or 0)


BACKENDS = LazyCommand("hwloop.plugins:register_backends",
                       "list the installed board backends (or one's options)")
INSPECT = LazyCommand(
    "hwloop.inspect_cmd:register_inspect",
    "show a session file: configuration, board, steps, metrics, status, integrity",
)

if __name__ == "__main__":  # pragma: no cover
    # run the imported module's main: the index modules' LazyCommand is hwloop.cli's
    from hwloop.cli import main as _main

    raise SystemExit(_main())
