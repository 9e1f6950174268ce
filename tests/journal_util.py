"""Helpers of the journal tests: deterministic payloads, a writer process
that reports each append that returned, and reading a journal back whole.

Shared by journal/ (a bounded number of seeded trials) and
stress/test_journal_stress.py (many more, under a time budget).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import shutil
import struct
from collections.abc import Callable
from typing import Any

from shmring._errors import CorruptJournal
from shmring._journal import Journal

CTX = mp.get_context("fork")
_SIZES = (0, 1, 7, 16, 64, 300, 2000, 9000)


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
    """Copy a live journal's files: the meta page first (its durable point
    is never ahead of the segment bytes copied after it), then segments."""
    os.mkdir(dst)
    shutil.copyfile(os.path.join(src, "journal.meta"), os.path.join(dst, "journal.meta"))
    for name in sorted(os.listdir(src)):
        if name.endswith(".seg"):
            try:
                shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))
            except FileNotFoundError:
                pass


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
