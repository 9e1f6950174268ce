"""A machine crash, simulated: a journal's files are copied at random
moments while a writer in another process appends and flushes, then pages
of the copy past the durable point are zeroed (at random, leaving holes)
or the tail file is cut at a page: the reopened copy is an exact prefix of
what was appended, at or beyond the last durable_seq flush() returned, with
no hole and no torn record."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest
from journal_util import check_prefix, copy_journal, read_all, start_writer

from shmring._journal import Journal
from shmring._journal import format as F
from shmring._journal.meta import Meta
from shmring._journal.segment import Segment, list_segments

TRIALS = 4
COPIES = 4


def offset_of(path: str, seq: int) -> tuple[str, int] | None:
    """(segment file, offset) where record ``seq`` starts (or would start,
    if it is the next one), in the journal at ``path``; None if not found."""
    for first, file in reversed(list_segments(path)):
        if first > seq:
            continue
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


def damage_past(path: str, bound: int, rng: random.Random) -> None:
    """What a crash may do to pages no msync covered: zero some of them,
    or cut the tail file at a page boundary (all beyond record ``bound``)."""
    where = offset_of(path, bound)
    assert where is not None
    file, off = where
    first_page = -(-off // F.PAGE)
    segs = [f for _, f in list_segments(path)]
    for f in segs[segs.index(file):]:
        size = os.path.getsize(f)
        lo = first_page if f == file else 1  # a later segment's header was fsynced
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


@pytest.mark.parametrize("seed", range(TRIALS))
def test_crash_copy_reopens_to_a_durable_prefix(tmp_path: Path, seed: int) -> None:
    kept = crash_trial(str(tmp_path), seed)
    assert kept[-1] > 0
