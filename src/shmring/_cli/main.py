"""The ``shmring`` command: ``demo`` and the tools to see what runs.

Each subcommand is a function taking the parsed arguments and returning an
exit status; ``COMMANDS`` maps names to (help, add_arguments, run).

:func:`main` is the one place where errors meet the user: bad arguments are
refused by argparse (one line, status 2), a shmring or OS error that reaches
the top is one line with status 1 (2 for ``InvalidArgument``), and Ctrl-C
ends the command quietly with status 130. A traceback is left only for a
bug.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from .. import __version__
from .._errors import InvalidArgument, ShmringError
from . import args as _types

#: What ``shmring --help`` says (the module docstring is for developers).
DESCRIPTION = """\
shmring passes messages between processes through POSIX shared memory.
These commands try it (demo), show what is in /dev/shm (ls, inspect), remove
what no live process uses (gc), watch a namespace live (top), run a
namespace's supervisor in the foreground (supervisor), compare shmring
with its peers (bench), and keep channels in durable journals: record a
channel into one (record), play one back into a channel (replay), print its
records (cat) and show what it holds (inspect DIR), and carry channels to
other hosts (bridge)."""

EPILOG = "`shmring COMMAND --help` describes a command and its options."

#: Exit status of a command ended by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130

Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--count", type=_types.positive_int, default=1_000_000,
                   help="messages to move, at least 1 (default 1,000,000)")


def _demo(args: argparse.Namespace) -> int:
    from .demo import run

    return run(count=args.count)


def _supervisor_args(p: argparse.ArgumentParser) -> None:
    from .._supervisor.command import add_arguments

    add_arguments(p)


def _supervisor(args: argparse.Namespace) -> int:
    from .._supervisor.command import main

    return main(args)


def _tool(name: str) -> tuple[Callable[[argparse.ArgumentParser], None],
                              Callable[[argparse.Namespace], int]]:
    def add(p: argparse.ArgumentParser) -> None:
        from . import inventory as _tools

        getattr(_tools, name + "_args")(p)

    def run(args: argparse.Namespace) -> int:
        from . import inventory as _tools

        result: int = getattr(_tools, name)(args)
        return result

    return add, run


def _top_args(p: argparse.ArgumentParser) -> None:
    from .top import add_arguments

    add_arguments(p)


def _top(args: argparse.Namespace) -> int:
    from .top import run

    return run(args)


def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("rest", nargs=argparse.REMAINDER,
                   help="arguments for `python -m benchmarks` (--quick, --only, ...)")


def _bench(args: argparse.Namespace) -> int:
    # The benchmarks live beside the package in the source tree (they need
    # the peers of the `bench` extra): run them from a checkout.
    import importlib.util
    import os
    import runpy

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if importlib.util.find_spec("benchmarks") is None:
        print("shmring: error: shmring bench runs from a source checkout: cd into it, "
              "then `pip install '.[bench]'` and `shmring bench --quick`", file=sys.stderr)
        return 2
    sys.argv = ["shmring bench", *args.rest]  # the benchmarks' usage names this command
    try:
        runpy.run_module("benchmarks", run_name="__main__")
    except SystemExit as e:
        if isinstance(e.code, str):
            print(f"shmring: error: {e.code}", file=sys.stderr)
            return 2
        return int(e.code or 0)
    return 0


def _module(name: str) -> tuple[Callable[[argparse.ArgumentParser], None],
                                 Callable[[argparse.Namespace], int]]:
    """The ``add_arguments`` and ``run`` of the command module ``name``
    (imported when the command is used, so the journal stays unloaded for
    the others)."""
    def add(p: argparse.ArgumentParser) -> None:
        import importlib

        importlib.import_module(f"{__package__}.{name}").add_arguments(p)

    def run(args: argparse.Namespace) -> int:
        import importlib

        result: int = importlib.import_module(f"{__package__}.{name}").run(args)
        return result

    return add, run


def _inspect_args(p: argparse.ArgumentParser) -> None:
    from .journal_inspect import inspect_args

    inspect_args(p)


def _inspect(args: argparse.Namespace) -> int:
    from .journal_inspect import inspect

    return inspect(args)


COMMANDS: dict[str, Command] = {
    "bench": ("compare shmring with its peers (from a source checkout)", _bench_args, _bench),
    "demo": ("move a million messages between two processes", _demo_args, _demo),
    "supervisor": ("run the supervisor of a namespace in the foreground",
                   _supervisor_args, _supervisor),
    "ls": ("list regions: size, pattern, processes, fill, messages", *_tool("ls")),
    "inspect": ("show one region's header, counters and attach table, or a journal's "
                "segments, sequence range, cursors and durable point", _inspect_args, _inspect),
    "gc": ("list regions no live process uses (remove them with --yes)", *_tool("gc")),
    "top": ("a live view of a namespace: regions, rates, pipelines, supervisor, processes",
            _top_args, _top),
    "record": ("record a channel's messages into a journal (a directory of files)",
               *_module("record")),
    "replay": ("send a journal's records into a channel, bytes exactly as recorded",
               *_module("replay")),
    "cat": ("print a journal's records (objects decoded, bytes shown safely)",
            *_module("journal_cat")),
    "bridge": ("carry channels to and from other hosts over ZeroMQ", *_module("bridge")),
}


class _Parser(argparse.ArgumentParser):
    """argparse, with a refusal in one line: ``shmring: error: ...``."""

    def error(self, message: str) -> NoReturn:
        """Print ``message`` as one line on stderr and exit with status 2."""
        self.exit(2, f"shmring: error: {message} (see `{self.prog} --help`)\n")


def parser() -> argparse.ArgumentParser:
    """The parser of the ``shmring`` command and its subcommands."""
    p = _Parser(prog="shmring", description=DESCRIPTION, epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"shmring {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_, add, _run) in COMMANDS.items():
        add(sub.add_parser(name, help=help_, description=help_))
    return p


def _run(argv: list[str]) -> int:
    if argv[:1] == ["bench"]:  # everything after it belongs to the benchmarks
        return _bench(argparse.Namespace(rest=argv[1:]))
    args = parser().parse_args(argv)
    return COMMANDS[args.command][2](args)


def _say(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror}{where}"
    return str(error) or type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``shmring`` console script; returns the exit status."""
    try:
        return _run(list(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:
        return INTERRUPTED  # the commands have cleaned up on their way out
    except BrokenPipeError:
        # `shmring ls | head`: the reader left. Say nothing, and keep Python
        # from failing again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except InvalidArgument as e:  # e.g. a bad $SHMRING_NAMESPACE
        print(f"shmring: error: {_say(e)}", file=sys.stderr)
        return 2
    except (ShmringError, OSError) as e:
        print(f"shmring: error: {_say(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
