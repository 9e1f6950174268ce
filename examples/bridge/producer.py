"""Host b's side of examples/bridge: creates work queue ``jobs`` (mpmc) and
sends ``--count`` jobs into it, then ends the stream. Its bridge exports
``jobs``; workers here and on other hosts take the jobs, each job once."""

from __future__ import annotations

import argparse
import time

import shmring


def job(i: int) -> dict[str, int]:
    """Job ``i``: what the worker computes from, and the answer it must get."""
    return {"id": i, "n": i % 1000, "square": (i % 1000) ** 2}


def main() -> None:
    """Create ``jobs``, send the jobs, close the stream."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--count", type=int, default=10_000)
    p.add_argument("--consumers", type=int, default=2,
                   help="consumers to wait for before sending (a remote worker counts as its "
                        "bridge's one consumer here; default 2: one local, one remote)")
    args = p.parse_args()
    ch = shmring.Channel.create("jobs", capacity=1 << 20, pattern="mpmc", lease=None)
    tx = ch.producer()
    print(f"waiting for {args.consumers} consumers (a remote worker's is its bridge)",
          flush=True)
    while ch.consumers < args.consumers:
        time.sleep(0.01)
    for i in range(args.count):
        tx.send_obj(job(i), timeout=60)
    ch.close_send()
    print(f"sent {args.count} jobs", flush=True)
    ch.close()


if __name__ == "__main__":
    main()
