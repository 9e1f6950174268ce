"""``python -m benchmarks [--quick] [--only WORKLOAD,...] [--repeats N]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .params import Params
from .runner import main
from .workloads import BENCHES, select


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
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
        "--out", type=Path, default=Path(__file__).parent / "results", help="output directory"
    )
    return ap.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    if args.repeats is not None and args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    raise SystemExit(
        main(Params.make(args.quick, args.repeats), select(args.only), args.systems, args.out)
    )
