"""A full disk: the append that needs a new segment raises NoSpace (the
new file is allocated with posix_fallocate before it is mapped, so no page
of a mapping is ever without its block: no SIGBUS), nothing is left half
made, the writer keeps working once room is made, and creating a journal
on a full file system is NoSpace with nothing left behind. On a small
tmpfs this test mounts itself (the tests run as root)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from journal_util import CTX, payload

import shmring
from shmring._journal import Journal

SEG = 64 << 10


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[str]:
    mnt = str(tmp_path / "mnt")
    os.mkdir(mnt)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", mnt], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", mnt], check=True)


def _fill(path: str, out: object) -> None:
    j = Journal.create(path, segment_size=SEG)
    w = j.writer()
    seq = 0
    try:
        while True:
            assert w.append(payload(5, seq)) == seq
            seq += 1
    except shmring.NoSpace as e:
        err = str(e)
    before = w.next_seq
    sizes = [os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)
             if f.endswith(".seg")]
    freed = j.retain(max_bytes=0)
    after = w.append(payload(5, seq))
    w.flush()
    out.put((seq, err, before, sizes, freed, after))  # type: ignore[attr-defined]
    j.close()


def test_full_disk_is_nospace_at_the_append_that_needs_a_segment(small_fs: str) -> None:
    path = os.path.join(small_fs, "j")
    q = CTX.Queue()
    p = CTX.Process(target=_fill, args=(path, q))
    p.start()
    seq, err, before, sizes, freed, after = q.get(timeout=60)
    p.join(30)
    assert p.exitcode == 0  # no SIGBUS, no other crash
    assert "no room for a new journal segment" in err
    assert before == seq  # the failed append took no sequence number
    assert len(sizes) >= 3 and all(s == SEG for s in sizes)  # no half-made file
    assert freed >= SEG and after == seq  # room made: the same record goes in
    with Journal.open(path) as j:
        got = list(j.reader(timeout=0))
    assert got[-1] == (seq, payload(5, seq)) and got[0][0] > 0
    assert all(data == payload(5, s) for s, data in got)


def test_creating_a_journal_on_a_full_fs_is_nospace(small_fs: str) -> None:
    with open(os.path.join(small_fs, "ballast"), "wb") as f:
        f.write(bytes(360 << 10))
    path = os.path.join(small_fs, "j")
    with pytest.raises(shmring.NoSpace):
        Journal.create(path, segment_size=SEG)
    assert not os.path.exists(path)
