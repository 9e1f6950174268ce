"""``python -m benchmarks [--quick] [--only WORKLOAD,...] [--repeats N]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .params import Params
from .runner import main
from .workloads import BENCHES, select

#: What ``--help`` says (plain text; the module docstring is reStructuredText).
DESCRIPTION = (
    "Measure shmring and its peers (multiprocessing queues and pipes, faster-fifo, "
    "ZeroMQ, iceoryx2) on the same workloads: the tables go to stdout, progress to "
    "stderr, and latest.md, latest.json and latest.png to the output directory."
)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    # `shmring bench` runs this module with argv[0] set to its own name.
    prog = sys.argv[0] if sys.argv[0] == "shmring bench" else "python -m benchmarks"
    ap = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    ap.add_argument("--quick", action="store_true", help="short runs, 1 repeat (under a minute)")
    ap.add_argument(
        "--only",
        metavar="WORKLOAD,...",
        help="workload ids or group numbers: " + ", ".join(f"{b.id} ({b.group})" for b in BENCHES),
    )
    ap.add_argument("--repeats", type=int, help="repeats per measurement (default 3, --quick 1)")
    ap.add_argument(
        "--systems",
        metavar="NAME,...",
        help="only these systems (shmring always included): "
        "mp_queue, mp_pipe, faster_fifo, zmq, iceoryx2, memcpy",
    )
    ap.add_argument(
        "--spread",
        type=int,
        metavar="RUNS",
        help="instead: run the 64 B 1->1 stream RUNS times (at least 10), spawned and unpinned, "
        "and print min, median and max beside the per-call ceiling (benchmarks/spread.py)",
    )
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results", help="output directory"
    )
    return ap.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    if args.repeats is not None and args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    if args.spread is not None:
        from . import spread

        if args.spread < spread.MIN_RUNS:
            raise SystemExit(f"--spread must be at least {spread.MIN_RUNS}")
        raise SystemExit(spread.main(args.spread, 0.2 if args.quick else 1.0, args.out))
    raise SystemExit(
        main(Params.make(args.quick, args.repeats), select(args.only), args.systems, args.out)
    )
