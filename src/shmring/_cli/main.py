"""The ``shmring`` command: ``demo`` and the tools to see what runs.

Each subcommand is a function taking the parsed arguments and returning an
exit status; ``COMMANDS`` maps names to (help, add_arguments, run).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--count", type=int, default=1_000_000, help="messages to move")


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
        print("shmring bench runs from a source checkout: cd into it, then "
              "`pip install '.[bench]'` and `shmring bench --quick`")
        return 2
    sys.argv = ["benchmarks", *args.rest]
    try:
        runpy.run_module("benchmarks", run_name="__main__")
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 1
    return 0


COMMANDS: dict[str, Command] = {
    "bench": ("compare shmring with its peers (from a source checkout)", _bench_args, _bench),
    "demo": ("move a million messages between two processes", _demo_args, _demo),
    "supervisor": ("run the supervisor of a namespace in the foreground",
                   _supervisor_args, _supervisor),
    "ls": ("list regions: size, pattern, processes, fill, messages", *_tool("ls")),
    "inspect": ("show one region's header, counters and attach table", *_tool("inspect")),
    "gc": ("list regions no live process uses (remove them with --yes)", *_tool("gc")),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``shmring`` console script."""
    parser = argparse.ArgumentParser(prog="shmring", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_, add, _run) in COMMANDS.items():
        add(sub.add_parser(name, help=help_, description=help_))
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # everything after it belongs to the benchmarks
        return _bench(argparse.Namespace(rest=argv[1:]))
    args = parser.parse_args(argv)
    return COMMANDS[args.command][2](args)


if __name__ == "__main__":
    sys.exit(main())
