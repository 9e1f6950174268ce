"""``python -m benchmarks.journal [--repeats R] [--quick] [--dir DIR] [--json]``:
appending to a ``shmring.Journal`` beside the other ways to write the same
records, and replaying it beside a memcpy of the same bytes, in one run.

Writers, each given the same records one at a time (64 B and 4 KiB; one
call per record, a commit every 1,000 records where the system has them):

- ``Journal`` with ``sync="none"`` (the page cache writes it back when it
  likes) and ``sync="interval:10ms"`` (a flusher thread ``msync``s every
  10 ms), ``writer().append(record)``;
- a ``shmring`` spsc channel, ``send(record)``, to a consumer in a forked
  process that takes them with ``recv_many`` (timed until it has them all);
- ``os.write`` of each record to a file opened ``O_APPEND`` (no fsync);
- SQLite (stdlib ``sqlite3``) in WAL mode with ``synchronous=NORMAL``:
  ``INSERT`` of each record as a BLOB, ``commit`` every 1,000;
- LMDB (the ``lmdb`` package, when it imports; its row says so otherwise):
  ``put`` under an 8-byte big-endian sequence key, ``commit`` every 1,000,
  with the default durability (``sync=True``: an fsync per commit).

The clock runs from the first record to the last call returning (for the
channel, to the consumer having every record), not over a final flush:
each row's notes say what is durable when its clock stops. Replay: one
reader over the journal just written, each record copied out as ``bytes``
(what a ``for seq, data in j.reader()`` loop gets), beside one memcpy of as
many bytes between two buffers (``memoryview`` slice assignment). Every
system runs ``--repeats`` times (default 5, 1 with ``--quick``); the table
shows the median and min-max of records/s and GB/s (10^9 bytes per second).
Files go to a temporary directory under ``--dir`` (default: the system's
temporary directory, which must be a real file system for the sync numbers
to mean anything), removed at the end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

import shmring
from shmring._journal import Journal

SIZES = (64, 4096)
#: Records written per measurement for each size (about 13 MB and 200 MB).
COUNTS = {64: 200_000, 4096: 50_000}
QUICK_COUNTS = {64: 50_000, 4096: 10_000}
BATCH = 1000  # records per commit (SQLite, LMDB)

Writer = Callable[[str, list[bytes]], float]  # (directory, records) -> seconds


def _records(size: int, count: int) -> list[bytes]:
    """``count`` distinct records of ``size`` bytes (a counter, then filler)."""
    fill = bytes(range(256)) * (size // 256 + 1)
    return [i.to_bytes(8, "little") + fill[:size - 8] for i in range(count)]


def journal_append(sync: str) -> Writer:
    """Appends to a new journal with sync policy ``sync``."""
    def run(d: str, recs: list[bytes]) -> float:
        j = Journal.create(os.path.join(d, "journal"), sync=sync)
        try:
            w = j.writer()
            append = w.append
            t = time.perf_counter()
            for r in recs:
                append(r)
            dt = time.perf_counter() - t
            w.flush()
        finally:
            j.close()
        return dt
    return run


def _drain(name: str, count: int) -> None:
    ch = shmring.Channel.open(name)
    rx = ch.consumer()
    got = 0
    try:
        while True:
            got += len(rx.recv_many(1024, timeout=60))
    except shmring.EndOfStream:
        pass
    ch.close()
    if got != count:
        raise SystemExit(f"channel consumer got {got} of {count}")


def channel_send(d: str, recs: list[bytes]) -> float:
    """Sends on an spsc channel to a consumer process."""
    name = f"jbench-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    ch = shmring.Channel.create(name, capacity=1 << 24, pattern="spsc")
    try:
        tx = ch.producer()
        p = mp.get_context("fork").Process(target=_drain, args=(name, len(recs)))
        p.start()
        while ch.consumers == 0 and p.is_alive():
            time.sleep(0.001)
        send = tx.send
        t = time.perf_counter()
        for r in recs:
            send(r)
        ch.close_send()
        p.join(120)
        dt = time.perf_counter() - t
        if p.exitcode != 0:
            raise RuntimeError(f"channel consumer exited with {p.exitcode}")
    finally:
        ch.close()
        ch.unlink()
    return dt


def file_write(d: str, recs: list[bytes]) -> float:
    """``os.write`` of each record to an O_APPEND file."""
    fd = os.open(os.path.join(d, "records"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        write = os.write
        t = time.perf_counter()
        for r in recs:
            write(fd, r)
        return time.perf_counter() - t
    finally:
        os.close(fd)


def sqlite_wal(d: str, recs: list[bytes]) -> float:
    """SQLite WAL, synchronous=NORMAL, a commit every BATCH inserts."""
    db = sqlite3.connect(os.path.join(d, "records.db"), isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE r (seq INTEGER PRIMARY KEY, v BLOB NOT NULL)")
        ins = "INSERT INTO r (v) VALUES (?)"
        t = time.perf_counter()
        for i in range(0, len(recs), BATCH):
            db.execute("BEGIN")
            for r in recs[i:i + BATCH]:
                db.execute(ins, (r,))
            db.execute("COMMIT")
        return time.perf_counter() - t
    finally:
        db.close()


def lmdb_put(d: str, recs: list[bytes]) -> float:
    """LMDB put under a sequence key, a commit (and fsync) every BATCH."""
    import lmdb

    env = lmdb.open(os.path.join(d, "lmdb"), map_size=1 << 31, subdir=True)
    try:
        t = time.perf_counter()
        for i in range(0, len(recs), BATCH):
            with env.begin(write=True) as txn:
                put = txn.put
                for k, r in enumerate(recs[i:i + BATCH], i):
                    put(k.to_bytes(8, "big"), r, append=True)
        return time.perf_counter() - t
    finally:
        env.close()


def _lmdb_missing() -> str | None:
    try:
        import lmdb  # noqa: F401
    except ImportError as e:
        return f"not installed (`pip install lmdb`): {e}"
    return None


#: name -> (writer, notes)
WRITERS: dict[str, tuple[Writer, str]] = {
    'Journal sync="none"': (journal_append("none"),
                            "append; in the page cache when the clock stops"),
    'Journal sync="interval:10ms"': (journal_append("interval:10ms"),
                                     "append; msync(MS_SYNC) every 10 ms by a flusher"),
    "shmring channel (spsc)": (channel_send, "send to a consumer process; not durable"),
    "os.write to a file": (file_write, "one write(2) per record, O_APPEND, no fsync"),
    "SQLite WAL, synchronous=NORMAL": (sqlite_wal,
                                       "INSERT per record, COMMIT every 1,000"),
    "LMDB": (lmdb_put, "put per record, commit (fsync) every 1,000"),
}


def replay_read(d: str, recs: list[bytes]) -> float:
    """Seconds to read back every record of a journal holding ``recs``."""
    path = os.path.join(d, "journal")
    j = Journal.create(path, sync="none")
    try:
        w = j.writer()
        for r in recs:
            w.append(r)
        w.flush()
    finally:
        j.close()
    with Journal.open(path) as j, j.reader(from_seq=0, timeout=0) as reader:
        n = 0
        t = time.perf_counter()
        for _seq, data in reader:
            n += len(data)
        dt = time.perf_counter() - t
    if n != sum(map(len, recs)):
        raise RuntimeError(f"replay read {n} bytes of {sum(map(len, recs))}")
    return dt


def memcpy(d: str, recs: list[bytes]) -> float:
    """Seconds for one copy of as many bytes as ``recs`` hold."""
    total = sum(map(len, recs))
    src, dst = bytearray(os.urandom(1 << 20)) * (total // (1 << 20) + 1), bytearray(total)
    src_v = memoryview(src)[:total]
    dst[:] = src_v  # fault both in before the clock
    t = time.perf_counter()
    memoryview(dst)[:] = src_v
    return time.perf_counter() - t


READERS: dict[str, tuple[Writer, str]] = {
    "Journal replay": (replay_read, "reader from seq 0, each record as bytes"),
    "memcpy": (memcpy, "one copy of the same bytes, buffer to buffer"),
}


def measure(fn: Writer, recs: list[bytes], repeats: int, base: str) -> list[float] | str:
    """Seconds of ``repeats`` runs, each in a fresh directory; an error's text
    instead when a run fails."""
    out = []
    for _ in range(repeats):
        d = tempfile.mkdtemp(prefix="shmring-jbench-", dir=base)
        try:
            out.append(fn(d, recs))
        except Exception as e:  # a system that fails is reported, the others go on
            return f"error: {type(e).__name__}: {e}"
        finally:
            shutil.rmtree(d, ignore_errors=True)
    return out


def _cell(values: list[float], fmt: str) -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-" \
        f"{fmt.format(max(values))})"


def table(results: dict[str, Any]) -> str:
    """The one markdown table of a run."""
    lines = ["| operation | record | records/s, median (min-max) | GB/s, median (min-max) "
             "| notes |", "|---|---|---|---|---|"]
    for row in results["rows"]:
        if isinstance(row["seconds"], str):
            lines.append(f"| {row['system']} | {row['size']} B | n/a | n/a | {row['seconds']} |")
            continue
        krate = [row["count"] / s / 1e3 for s in row["seconds"]]
        gbs = [row["count"] * row["size"] / s / 1e9 for s in row["seconds"]]
        lines.append(f"| {row['system']} | {row['size']:,} B | {_cell(krate, '{:,.0f}k')} "
                     f"| {_cell(gbs, '{:.3f}')} | {row['notes']} |")
    return "\n".join(lines)


def run(repeats: int, quick: bool, base: str) -> dict[str, Any]:
    """Every measurement; the raw seconds per repeat, by row."""
    shmring.Channel.create(f"jbench-warm-{os.getpid()}", capacity=4096).close()
    counts = QUICK_COUNTS if quick else COUNTS
    missing = _lmdb_missing()
    rows: list[dict[str, Any]] = []
    for size in SIZES:
        recs = _records(size, counts[size])
        for group in (WRITERS, READERS):
            for system, (fn, notes) in group.items():
                print(f"  {system}, {size} B x {len(recs):,}", file=sys.stderr, flush=True)
                if system == "LMDB" and missing:
                    secs: list[float] | str = missing
                else:
                    secs = measure(fn, recs, repeats, base)
                rows.append({"system": system, "size": size, "count": len(recs),
                             "seconds": secs, "notes": notes})
    return {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                       f"{platform.python_version()}, {platform.platform()}",
            "repeats": repeats, "rows": rows}


def main() -> None:
    """Run the benchmark and print its table (or ``--json``)."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.journal",
                                 description="Journal appends and replay beside a channel, "
                                 "os.write, SQLite and LMDB.")
    ap.add_argument("--repeats", type=int, help="runs per measurement (default 5, --quick 1)")
    ap.add_argument("--quick", action="store_true", help="fewer records, 1 repeat")
    ap.add_argument("--dir", default=tempfile.gettempdir(),
                    help="where the files go (a real file system; default: the temp dir)")
    ap.add_argument("--json", action="store_true", help="print every repeat's seconds as JSON")
    args = ap.parse_args()
    repeats = args.repeats or (1 if args.quick else 5)
    if repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    results = run(repeats, args.quick, args.dir)
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print(f"{results['machine']}; {repeats} runs each\n")
    print(table(results))


if __name__ == "__main__":
    main()
