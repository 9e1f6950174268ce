"""The journal's API in one process and across processes: round trips of
bytes, claims and objects, reopening, info, bad arguments, one writer at a
time, a live reader in another process, named cursors and retention."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from journal_util import CTX, check_prefix, payload, read_all, start_writer

import shmring
from shmring._errors import WriterTaken
from shmring._journal import Journal

SEG = 64 << 10


def test_round_trip_bytes_claims_objects_and_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "j")
    with Journal.create(path, segment_size=SEG) as j:
        w = j.writer()
        for seq in range(3000):  # several segments of 64 KiB
            assert w.append(payload(1, seq)) == seq
        with w.claim(5) as buf:
            buf[:] = b"hello"
        obj = {"a": [1, 2.5, "x", None], "b": (b"raw", True)}
        assert w.append_obj(obj) == 3001
        assert j.next_seq == 3002
        assert w.flush() == 3002 and j.durable_seq == 3002
        info = j.info()
    assert len(info["segments"]) > 3
    assert info["next_seq"] == 3002 and info["durable_seq"] == 3002
    assert sum(s["records"] for s in info["segments"]) == 3002
    assert all(s["sealed"] for s in info["segments"][:-1])
    assert info["segments"][-1]["last_seq"] == 3001
    records = read_all(path)
    check_prefix(records[:3000], 1, 3000)
    assert records[3000] == (3000, b"hello")
    with Journal.open(path) as j:
        assert j.next_seq == 3002 and j.durable_seq == 3002
        assert list(j.reader(from_seq=3001, timeout=0).objects()) == [(3001, obj)]
        assert next(iter(j.reader(from_seq=1234, timeout=0))) == (1234, payload(1, 1234))
        w = j.writer()  # appends go on after the reopened tail
        assert w.append(b"more") == 3002


def test_from_time_starts_at_the_first_record_at_or_after_it(tmp_path: Path) -> None:
    path = str(tmp_path / "j")
    with Journal.create(path, segment_size=SEG) as j:
        w = j.writer()
        for seq in range(500):
            w.append(payload(2, seq))
        mid = time.time()
        time.sleep(0.002)
        for seq in range(500, 1500):
            w.append(payload(2, seq))
        first = next(iter(j.reader(from_time=mid, timeout=0)))
        assert first == (500, payload(2, 500))


def test_bad_arguments_are_typed_errors(tmp_path: Path) -> None:
    path = str(tmp_path / "j")
    for bad in (0, 1000, SEG + 1, "big", 1 << 40):
        with pytest.raises(shmring.InvalidArgument):
            Journal.create(path, segment_size=bad)  # type: ignore[arg-type]
    for sync in ("sometimes", "interval:0ms", "interval:5s", "bytes:0", "bytes:x", 3):
        with pytest.raises(shmring.InvalidArgument):
            Journal.create(path, sync=sync)  # type: ignore[arg-type]
    assert not os.path.exists(path)
    with pytest.raises(shmring.RegionNotFound):
        Journal.open(path)
    with pytest.raises(shmring.RegionNotFound):
        Journal.create(str(tmp_path / "no" / "j"))
    with Journal.create(path, segment_size=SEG) as j:
        with pytest.raises(shmring.RegionExists):
            Journal.create(path)
        w = j.writer()
        with pytest.raises(shmring.MessageTooLarge):
            w.append(bytes(SEG))
        for kw in ({"from_seq": -1}, {"from_seq": 1, "from_time": 1.0}, {"timeout": -1},
                   {"name": ""}, {"name": "x" * 41}):
            with pytest.raises(shmring.InvalidArgument):
                j.reader(**kw)
        with pytest.raises(shmring.InvalidArgument):
            j.reader().ack(0)  # an anonymous reader has no cursor
        with pytest.raises(shmring.InvalidArgument):
            j.retain(-1)
        with pytest.raises(shmring.Timeout):
            j.reader().read(timeout=0.01)
    with pytest.raises(shmring.Closed):
        w.append(b"x")


def _hold_writer(path: str, ready: object) -> None:
    j = Journal.open(path)
    j.writer().append(b"child")
    ready.send(os.getpid())  # type: ignore[attr-defined]
    time.sleep(60)  # SIGKILLed by the test long before


def test_one_writer_at_a_time_and_the_lock_dies_with_it(tmp_path: Path) -> None:
    path = str(tmp_path / "j")
    Journal.create(path, segment_size=SEG).close()
    rx, tx = CTX.Pipe(duplex=False)
    p = CTX.Process(target=_hold_writer, args=(path, tx))
    p.start()
    try:
        assert rx.poll(30) and rx.recv() == p.pid
        with Journal.open(path) as j:
            with pytest.raises(WriterTaken) as e:
                j.writer()
            assert e.value.pid == p.pid and isinstance(e.value, shmring.RoleTaken)
            assert j.next_seq == 1
            assert p.pid is not None
            os.kill(p.pid, 9)
            p.join(30)
            w = j.writer()  # the kernel dropped the dead writer's lock
            assert w.append(b"parent") == 1
            with pytest.raises(WriterTaken):
                j.writer()
        assert read_all(path) == [(0, b"child"), (1, b"parent")]
    finally:
        if p.is_alive():
            p.kill()
        p.join(30)


def _follow(path: str, n: int, out: object) -> None:
    j = Journal.open(path)
    got = []
    t0 = time.monotonic()
    for seq, data in j.reader(timeout=10):
        got.append((seq, data))
        if len(got) == n:
            break
    try:
        j.reader(from_seq=n).read(timeout=0.2)
    except shmring.Timeout:
        waited = time.monotonic() - t0
    out.put((got, waited))  # type: ignore[attr-defined]
    j.close()


def test_a_live_reader_in_another_process_sleeps_and_wakes(tmp_path: Path) -> None:
    path = str(tmp_path / "j")
    with Journal.create(path, segment_size=SEG) as j:
        w = j.writer()
        q = CTX.Queue()
        p = CTX.Process(target=_follow, args=(path, 400, q))
        p.start()
        try:
            for seq in range(400):  # crosses segments while the reader follows
                w.append(payload(3, seq))
                if seq % 100 == 0:
                    time.sleep(0.05)  # the reader is asleep on the futex word here
            got, waited = q.get(timeout=30)
        finally:
            p.join(30)
        assert p.exitcode == 0
        check_prefix(got, 3, 400)
        assert waited >= 0.2  # the timeout was waited, not skipped


def test_a_named_cursor_survives_reopen_and_holds_retention(tmp_path: Path) -> None:
    path = str(tmp_path / "j")
    with Journal.create(path, segment_size=SEG) as j:
        w = j.writer()
        for seq in range(4000):
            w.append(payload(4, seq))
        r = j.reader(name="indexer", timeout=0)
        for seq, _ in r:
            if seq == 1999:
                r.ack(seq)
                break
        nseg = len(j.info()["segments"])
    with Journal.open(path) as j:
        assert j.info()["cursors"] == {"indexer": 2000}
        r = j.reader(name="indexer", timeout=0)
        assert next(iter(r)) == (2000, payload(4, 2000))
        freed = j.retain(max_bytes=0)
        info = j.info()
        assert freed > 0 and len(info["segments"]) < nseg
        # Every segment with a record the cursor has not read is still there.
        assert info["first_seq"] <= 2000
        assert info["segments"][1]["first_seq"] > 2000
        assert next(iter(j.reader(from_seq=2000, timeout=0)))[0] == 2000
        r.ack(3999)
        j.retain(max_bytes=0)
        info = j.info()
        assert len(info["segments"]) == 1  # the tail always stays
        old = j.reader(from_seq=0, timeout=0)
        first = next(iter(old))
        assert first[0] == info["first_seq"] and old.missed == info["first_seq"]


def test_a_live_reader_goes_on_across_a_killed_writer_and_its_successor(
        tmp_path: Path) -> None:
    path = str(tmp_path / "j")
    Journal.create(path, segment_size=SEG).close()
    with Journal.open(path) as j:
        r = j.reader(timeout=10)
        p, acked, _ = start_writer(path, 8, "mixed", limit=300)
        got = [r.read(timeout=10) for _ in range(100)]
        os.kill(p.pid, 9)  # mid-stream, wherever it is
        p.join(30)
        n = acked.value
        # The next writer (another process) recovers the tail and goes on.
        p2, _, _ = start_writer(path, 8, "append", limit=n + 500)
        p2.join(60)
        assert p2.exitcode == 0
        assert j.next_seq == n + 500
        while r.seq < n + 500:
            got.append(r.read(timeout=10))
    check_prefix(got, 8, n + 500)


def test_a_claim_that_raises_writes_nothing(tmp_path: Path) -> None:
    with Journal.create(str(tmp_path / "j"), segment_size=SEG) as j:
        w = j.writer()
        with pytest.raises(KeyError), w.claim(1000) as buf:
            buf[:] = b"\xff" * 1000
            raise KeyError("abandoned")
        assert w.append(b"short") == 0  # the abandoned claim took no seq
        # Where the next records go, the abandoned bytes are gone.
        assert bytes(w._seg.buf[w._off:w._off + 1000]) == bytes(1000)
        with Journal.open(j.path) as other:
            r = other.reader(timeout=0)
            assert list(r) == [(0, b"short")]
            assert r.seq == 1  # and the next record's place reads as not yet written
