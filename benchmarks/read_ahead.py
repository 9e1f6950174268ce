"""Reading ahead against ``recv_many``, per record, in one process: 64 B
records are sent in batches, then taken either with ``recv_many(256)`` or
with ``_ahead(256, ...)`` followed by ``_settle`` of the last key (what an
exporting bridge does, minus the network). Only the consuming side is
timed; each pattern, median of the runs.

    python -m benchmarks.read_ahead [--runs 5] [--records 200000] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid

import shmring

SIZE = 64
BATCH = 256
CAPACITY = 1 << 20


def consume_ns(pattern: str, how: str, records: int, lossy: bool = False) -> float:
    """Nanoseconds per record taken, consumer side only."""
    ch = shmring.Channel.create(f"ra-{uuid.uuid4().hex[:10]}", capacity=CAPACITY,
                                pattern=pattern, lossy=lossy)
    try:
        tx, rx = ch.producer(), ch.consumer()
        msgs = [b"r" * SIZE] * BATCH
        spent = 0
        done = 0
        while done < records:
            for _ in range(CAPACITY // 2 // (SIZE + 16) // BATCH):
                tx.send_many(msgs)
            t = time.perf_counter_ns()
            if how == "recv_many":
                while True:
                    try:
                        got = rx.recv_many(BATCH, timeout=0)
                    except shmring.Timeout:
                        break
                    done += len(got)
            else:
                while True:
                    window = rx._ahead(BATCH, 1 << 30, 0)
                    if not window:
                        break
                    rx._settle(window[-1][0])
                    done += len(window)
            spent += time.perf_counter_ns() - t
        return spent / done
    finally:
        ch.close()
        ch.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rows = []
    for pattern, lossy in [("spsc", False), ("mpsc", False), ("mpmc", False),
                           ("broadcast", False), ("broadcast", True)]:
        row: dict[str, object] = {"pattern": pattern + ("-lossy" if lossy else "")}
        for how in ("recv_many", "ahead"):
            row[how] = statistics.median(consume_ns(pattern, how, a.records, lossy)
                                         for _ in range(a.runs))
        rows.append(row)
    if a.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"| pattern | recv_many({BATCH}) ns/record | _ahead({BATCH})+_settle ns/record |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['pattern']} | {r['recv_many']:.0f} | {r['ahead']:.0f} |")


if __name__ == "__main__":
    main()
