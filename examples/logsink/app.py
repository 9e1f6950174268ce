#!/usr/bin/env python3
"""A small program that logs through shmring.logging.Handler.

It logs ``--count`` records, one every ``--interval`` seconds, to the sink
of ``--channel`` (start ``logsinkd.py run`` first, or later: records logged
while no sink runs are dropped, counted and reported once one does), then
prints how many went out and how many were dropped::

    python app.py --count 1000 --interval 0.001 --json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from types import FrameType

import shmring.logging as shlog


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(prog="app", description=__doc__.split("\n\n")[0])
    p.add_argument("--channel", default=shlog.DEFAULT_CHANNEL)
    p.add_argument("--namespace", default=None)
    p.add_argument("--count", type=int, default=10, help="records to log (default %(default)s)")
    p.add_argument("--interval", type=float, default=0.0, help="seconds between records")
    p.add_argument("--name", default="app", help="logger name (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = p.parse_args(argv)
    if args.count < 0 or args.interval < 0:
        p.error("--count and --interval must be >= 0")
    stop = False

    def on_signal(signo: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    handler = shlog.Handler(args.channel, namespace=args.namespace)
    log = logging.getLogger(args.name)
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    log.propagate = False
    done = 0
    for i in range(args.count):
        if stop:
            break
        if i == 0:
            try:
                settings: dict[str, int] = {}
                settings["missing"] += 1
            except KeyError:
                log.exception("record %d of %d (with a traceback)", i, args.count)
        else:
            log.info("record %d of %d", i, args.count)
        done += 1
        if args.interval:
            time.sleep(args.interval)
    sent, dropped = handler.sent, handler.dropped
    handler.close()  # reports drops not yet reported, if a sink is there
    summary = {"pid": os.getpid(), "logged": done, "sent": sent, "dropped": dropped}
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print(f"pid {summary['pid']}: logged {done}, sent {sent}, dropped {dropped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
