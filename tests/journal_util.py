"""Helpers of the journal tests: deterministic payloads, a writer process
that reports each append that returned, and reading a journal back whole.

The SIGKILL and crash-copy trials are shared by journal/ (a bounded number
of seeded trials) and stress/test_journal_stress.py (many more, under a
time budget).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import shutil
import signal
import struct
import time
from collections.abc import Callable
from typing import Any

from shmring._errors import CorruptJournal
from shmring._journal import Journal
from shmring._journal import format as F
from shmring._journal.meta import Meta
from shmring._journal.segment import Segment, list_segments

CTX = mp.get_context("fork")
_SIZES = (0, 1, 7, 16, 64, 300, 2000, 9000)
MODES = ("append", "claim", "mixed")
COPIES = 4


def payload(seed: int, seq: int) -> bytes:
    """The bytes record ``seq`` of trial ``seed`` carries (its seq inside)."""
    n = random.Random(seed * 1_000_003 + seq).choice(_SIZES)
    head = struct.pack("<QQ", seed, seq)
    body = bytes([(seq * 7 + seed) % 251]) * max(n - len(head), 0)
    return (head + body)[:max(n, 16)]


def read_all(path: str) -> list[tuple[int, bytes]]:
    """Every record of the journal at ``path``, opened afresh."""
    with Journal.open(path) as j:
        return list(j.reader(timeout=0))


def check_prefix(records: list[tuple[int, bytes]], seed: int, at_least: int) -> None:
    """The records are 0..n-1 with the payloads of ``seed``, n >= at_least."""
    assert len(records) >= at_least, f"{len(records)} records, expected >= {at_least}"
    for i, (seq, data) in enumerate(records):
        assert seq == i, f"record {i} has seq {seq}"
        assert data == payload(seed, seq), f"record {seq} differs"


def write_loop(path: str, seed: int, acked: Any, flushed: Any, mode: str,
               sync: str = "none", limit: int = 1 << 62) -> None:
    """A writer process: appends payload(seed, 0..) for ever (or ``limit``
    records), storing in ``acked`` how many appends returned and in
    ``flushed`` the last durable_seq flush() returned. ``mode``: "append",
    "claim", or "mixed" (also flushes now and then)."""
    j = Journal.open(path, sync=sync)
    w = j.writer()
    rng = random.Random(seed)
    seq = w.next_seq
    while seq < limit:
        data = payload(seed, seq)
        if mode == "claim" or (mode == "mixed" and rng.random() < 0.3):
            with w.claim(len(data)) as buf:
                buf[:] = data
        else:
            assert w.append(data) == seq
        seq += 1
        acked.value = seq
        if mode == "mixed" and rng.random() < 0.05:
            flushed.value = w.flush()
    j.close()


def start_writer(path: str, seed: int, mode: str, sync: str = "none",
                 limit: int = 1 << 62) -> tuple[Any, Any, Any]:
    """(process, acked, flushed) of a :func:`write_loop` in a forked child."""
    acked = CTX.Value("q", 0, lock=False)
    flushed = CTX.Value("q", 0, lock=False)
    p = CTX.Process(target=write_loop, args=(path, seed, acked, flushed, mode, sync, limit))
    p.start()
    return p, acked, flushed


def copy_journal(src: str, dst: str) -> None:
    """Copy a live journal's files as a crash could leave them: the meta
    page first (its durable point is never ahead of the segment bytes
    copied after it), then the segments from the newest to the oldest (an
    older one is sealed and no longer changes once a newer one has records;
    one created after the listing is left out, as if the crash came before
    its creation)."""
    os.mkdir(dst)
    shutil.copyfile(os.path.join(src, "journal.meta"), os.path.join(dst, "journal.meta"))
    for name in sorted((n for n in os.listdir(src) if n.endswith(".seg")), reverse=True):
        shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))


def expect_corrupt_or_same(path: str, original: list[tuple[int, bytes]],
                           damage: Callable[[], None]) -> str:
    """Damage the journal, then read it whole: "corrupt" if that raised
    CorruptJournal (naming a file of the journal and an offset), "same" if
    it read exactly ``original`` back."""
    damage()
    try:
        got = read_all(path)
    except CorruptJournal as e:
        assert e.path is not None and e.path.startswith(path), e
        assert e.path in str(e)
        return "corrupt"
    assert got == original
    return "same"


# ------------------------------------------------------ SIGKILL trials --
def kill_trial(tmp: str, seed: int) -> int:
    """One trial: two writers in turn, each SIGKILLed at a random moment;
    returns how many records survived."""
    rng = random.Random(seed)
    path = os.path.join(tmp, f"j{seed}")
    Journal.create(path, segment_size=rng.choice((16 << 10, 64 << 10, 1 << 20))).close()
    acked = 0
    for _ in range(2):
        p, done, _ = start_writer(path, seed, rng.choice(MODES),
                                  sync=rng.choice(("none", "bytes:20000", "interval:2ms")))
        deadline = time.monotonic() + 30
        while done.value <= acked and time.monotonic() < deadline:
            time.sleep(0.001)  # the child's writer is up and appending
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(p.pid, signal.SIGKILL)
        p.join(30)
        assert p.exitcode == -signal.SIGKILL
        acked = done.value
        records = read_all(path)
        check_prefix(records, seed, acked)
        # At most the one record in flight when the kill came is there unacked.
        assert len(records) <= acked + 1
        with Journal.open(path) as j:  # recovery msynced what the dead writer left
            assert j.durable_seq == j.next_seq == len(records)
        acked = len(records)
    return acked


# ---------------------------------------------------- crash-copy trials --
def offset_of(path: str, seq: int) -> tuple[str, int] | None:
    """(segment file, offset) where record ``seq`` starts (or would start,
    if it is the next one), in the journal at ``path``; None if not found."""
    for first, file in reversed(list_segments(path)):
        with open(file, "rb") as f:
            head = f.read(F.SEG_HEADER.size)
        if first > seq or len(head) < F.SEG_HEADER.size or head.count(0) == len(head):
            continue  # after it, or created but its header not written yet
        seg = Segment(file, first, writable=False)
        try:
            off, at = seg.start_at(seq=seq)
            while at < seq:
                r = seg.read(off)
                if not isinstance(r, F.Rec) or r.kind != F.KIND_DATA:
                    return None
                off, at = r.next_off, r.seq + 1
            return file, off
        finally:
            seg.close()
    return None


def _has_records(file: str) -> bool:
    """True if the segment's first record word is written."""
    with open(file, "rb") as f:
        head = f.read(F.SEG_HEADER.size)
        if len(head) < F.SEG_HEADER.size or head.count(0) == len(head):
            return False
        _, _, data_off = F.geometry(F.SEG_HEADER.unpack(head)[3])
        f.seek(data_off)
        return f.read(4) not in (b"", b"\0\0\0\0")


def damage_past(path: str, bound: int, rng: random.Random) -> None:
    """What a crash may do to pages no msync covered: zero some of them,
    or cut the tail file at a page boundary. Not covered: pages past record
    ``bound`` in its segment and in the segments after it, except those
    before a segment with records (the writer msynced a segment when it
    sealed it, before it wrote the next one), and never page 0 (the header,
    fsynced at creation)."""
    where = offset_of(path, bound)
    assert where is not None
    file, off = where
    segs = [f for _, f in list_segments(path)]
    start = segs.index(file)
    with_records = [i for i in range(start, len(segs)) if _has_records(segs[i])]
    if with_records and with_records[-1] > start:
        start = with_records[-1]  # the segments before it are all durable
    for f in segs[start:]:
        size = os.path.getsize(f)
        lo = max(1, -(-off // F.PAGE)) if f == file else 1
        pages = list(range(lo, size // F.PAGE))
        if not pages:
            continue
        if rng.random() < 0.3 and f == segs[-1]:
            os.truncate(f, rng.choice(pages) * F.PAGE)
            continue
        with open(f, "r+b") as fh:
            for page in rng.sample(pages, min(len(pages), rng.randint(1, 6))):
                fh.seek(page * F.PAGE)
                fh.write(bytes(F.PAGE))


def crash_trial(tmp: str, seed: int) -> list[int]:
    """One trial; returns how many records each copy kept."""
    rng = random.Random(seed)
    path = os.path.join(tmp, f"j{seed}")
    Journal.create(path, segment_size=rng.choice((16 << 10, 64 << 10))).close()
    p, acked, flushed = start_writer(path, seed, "mixed",
                                     sync=rng.choice(("none", "interval:3ms", "bytes:8000")))
    kept = []
    try:
        for k in range(COPIES):
            time.sleep(rng.uniform(0.005, 0.06))
            if k == COPIES - 1:
                # The last copy comes after a flush, so it has records it
                # must keep (a loaded machine may not have run the writer yet).
                deadline = time.monotonic() + 30
                while flushed.value == 0:
                    assert time.monotonic() < deadline, "the writer never flushed"
                    time.sleep(0.005)
            durable = flushed.value
            copy = os.path.join(tmp, f"c{seed}-{k}")
            copy_journal(path, copy)
            meta = Meta(copy)
            bound = max(durable, meta.durable)
            meta.close()
            damage_past(copy, bound, rng)
            records = read_all(copy)
            check_prefix(records, seed, bound)
            assert len(records) <= acked.value + 1
            kept.append(len(records))
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.join(30)
    return kept
