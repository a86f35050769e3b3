"""The ``hwloop`` command: a thin dispatcher over entry-point subcommands.

Every subcommand comes from the ``hwloop.commands`` entry-point group (see
:mod:`hwloop.plugins`). Errors derived from :class:`hwloop.errors.HwloopError`
print one line on stderr and exit with code 2; so do errors the HDF5 library
raises while a command that reads a session file (a ``run`` argument) reads it
(a damaged or incomplete file; :func:`hwloop.sessionlog.open_session` refuses
truncated and unopenable files first); Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from hwloop import __version__
from hwloop.errors import HwloopError
from hwloop.plugins import command_entry_points

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


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


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with one subparser per installed subcommand."""
    parser = _Parser(
        prog="hwloop",
        description="Hardware-in-the-loop Equilibrium Propagation for resistive-network boards.",
    )
    parser.add_argument("--version", action="version", version=f"hwloop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, ep in sorted(command_entry_points().items()):
        try:
            register = ep.load()
        except Exception as exc:  # a broken plugin must not take the CLI down
            print(f"hwloop: warning: subcommand {name!r} failed to load: {exc}", file=sys.stderr)
            continue
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
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


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
