"""``shmring top``: the command around the pieces: arguments, the choice of
view, and the loop (sample, draw, wait for the next frame or a key).

A frame is taken every ``--interval`` seconds on a fixed schedule (a slow
frame does not shift the next ones); ``--once`` and ``--json`` take two
samples one interval apart so their rates are real. ``q`` quits with status
0, as does SIGTERM; Ctrl-C ends it as it ends every shmring command (status
130), the terminal restored either way.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from types import FrameType
from typing import Protocol

from ..._region.names import check_namespace, default_namespace
from .. import args as _types
from .keys import QUIT, Keys
from .model import Frame
from .plain_view import PlainScreen
from .plain_view import render as plain_render
from .rates import Tracker
from .sample import take

#: Default seconds between frames (the issue asks for at least two a second).
INTERVAL = 0.5


def interval(text: str) -> float:
    """Seconds between frames: 0.05 to 3600."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.05 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r}: must be 0.05 to 3600 seconds")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``shmring top``."""
    p.add_argument("--namespace", "-n", type=_types.namespace,
                   help="the namespace to watch (default: $SHMRING_NAMESPACE or 'default')")
    p.add_argument("--interval", "-i", type=interval, default=INTERVAL,
                   help=f"seconds between frames (default {INTERVAL}); also the sampling "
                        "window of --once and --json")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument("--json", action="store_true",
                   help="print one frame as JSON and exit (rates over one interval)")
    p.add_argument("--plain", action="store_true",
                   help="plain text instead of rich tables (the default without rich)")


def have_rich() -> bool:
    """True if rich (the ``top`` extra) can be imported."""
    try:
        import rich.live  # noqa: F401
    except ImportError:
        return False
    return True


def one_frame(namespace: str, window: float) -> Frame:
    """A frame whose rates are measured over ``window`` seconds."""
    tracker = Tracker()
    tracker.frame(take(namespace, supervisor=False))
    time.sleep(window)
    return tracker.frame(take(namespace))


class Screen(Protocol):
    """What the loop needs of a view (``PlainScreen``, ``RichScreen``)."""

    def show(self, f: Frame) -> None:
        """Draw a frame."""

    def close(self) -> None:
        """Restore the terminal."""


class _Quit(Exception):
    """SIGTERM: leave like ``q``."""


def _on_term(_sig: int, _frame: FrameType | None) -> None:
    raise _Quit


def run(args: argparse.Namespace) -> int:
    """Show the namespace until ``q`` (or print one frame)."""
    ns = check_namespace(args.namespace or default_namespace())
    use_rich = not args.plain and have_rich()
    if args.json:
        json.dump(one_frame(ns, args.interval).to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if args.once:
        f = one_frame(ns, args.interval)
        if use_rich:
            from .rich_view import print_once

            print_once(f, args.interval)
        else:
            sys.stdout.write(plain_render(f, args.interval))
        return 0
    old = signal.signal(signal.SIGTERM, _on_term)
    try:
        return _loop(ns, args.interval, use_rich)
    except _Quit:
        return 0
    finally:
        signal.signal(signal.SIGTERM, old)


#: Niceness added to a live top: the traffic it watches goes first, and on
#: a busy machine a frame waits rather than preempting a producer.
NICE = 10


def _loop(ns: str, every: float, use_rich: bool) -> int:
    with contextlib.suppress(OSError):
        os.nice(NICE)
    tracker = Tracker()
    with Keys() as keys:
        screen: Screen
        if use_rich and sys.stdout.isatty():
            from .rich_view import RichScreen

            screen = RichScreen(every, keys=keys.active)
        else:
            screen = PlainScreen(sys.stdout, every, keys=keys.active)
        try:
            due = time.monotonic()
            while True:
                screen.show(tracker.frame(take(ns)))
                due += every
                now = time.monotonic()
                if due < now:  # a frame took longer than the interval: skip, do not pile up
                    due = now
                if QUIT & set(keys.wait(due - now)):
                    return 0
        finally:
            screen.close()
