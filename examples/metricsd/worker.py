"""A worker that counts what it does with shmring.metrics, for metricsd to
serve: ``jobs_total{kind}`` (a counter), ``jobs_in_progress`` (a gauge) and
``job_seconds`` (a histogram). Run several, kill some, and watch the totals
at http://127.0.0.1:PORT/metrics keep everything they counted. ::

    $ python examples/metricsd/worker.py --jobs 1000 --sleep 0.001

``--die-after K`` SIGKILLs the worker right after its K-th job (what a
crash looks like to metricsd); ``--json`` prints what it counted at the
end. SIGTERM or Ctrl-C stop it cleanly between jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
from types import FrameType

import shmring.metrics as m
from shmring.metrics import DEFAULT_NAME

KINDS = ("small", "large")


def main(argv: list[str] | None = None) -> int:
    """Do jobs, counting them; the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", default=DEFAULT_NAME, help="metrics region (default metrics)")
    ap.add_argument("--namespace", default=None, help="shmring namespace")
    ap.add_argument("--jobs", type=int, default=0, help="jobs to do (default 0: until stopped)")
    ap.add_argument("--sleep", type=float, default=0.01, metavar="S",
                    help="seconds each job takes (default 0.01)")
    ap.add_argument("--die-after", type=int, default=0, metavar="K",
                    help="SIGKILL this worker right after its K-th job")
    ap.add_argument("--seed", type=int, default=None, help="of the job kinds and times")
    ap.add_argument("--json", action="store_true", help="print what it counted, as JSON")
    args = ap.parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    rng = random.Random(args.seed)
    reg = m.Registry(args.name, namespace=args.namespace)
    jobs = m.Counter("jobs_total", "Jobs done, by kind", labels=["kind"], registry=reg)
    busy = m.Gauge("jobs_in_progress", "Jobs being done now", registry=reg)
    took = m.Histogram("job_seconds", "Time per job", buckets=(0.001, 0.01, 0.1, 1.0),
                       registry=reg)
    done = {k: 0 for k in KINDS}
    n = 0
    try:
        while not stop.is_set() and (args.jobs <= 0 or n < args.jobs):
            kind = rng.choice(KINDS)
            busy.inc()
            t0 = time.perf_counter()
            if args.sleep > 0:
                stop.wait(args.sleep * (1 + rng.random()))
            took.observe(time.perf_counter() - t0)
            busy.dec()
            jobs.labels(kind).inc()
            done[kind] += 1
            n += 1
            if args.die_after and n == args.die_after:
                os.kill(os.getpid(), signal.SIGKILL)
    finally:
        reg.close()
    if args.json:
        print(json.dumps({"pid": os.getpid(), "jobs": n, "by_kind": done}))
    else:
        print(f"worker {os.getpid()}: {n} jobs ({', '.join(f'{k} {v}' for k, v in done.items())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
