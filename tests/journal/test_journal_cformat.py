"""The C record path (csrc/journal/record.c, py/journal.c) against the
Python definition of the format (shmring/_journal/format.py), both ways:
records the C writer wrote are decoded by the Python decoder byte for byte,
and records written by a writer made only of format.py's functions are
scanned by the C scanner. The C scanner is also fuzzed with hostile bytes
in a buffer that ends at an inaccessible page, and must agree with a
reference scanner built on format.read_record at every stop."""

from __future__ import annotations

import ctypes
import faulthandler
import mmap
import os
import random
import signal
import struct
import zlib
from collections import Counter
from pathlib import Path

import pytest

from shmring import _core
from shmring._journal import Journal
from shmring._journal import format as F
from shmring._journal import meta as M
from shmring._journal.segment import list_segments

SIZES = (0, 1, 15, 16, 17, 64, 100, 4096, 5000)
OK, EMPTY, BAD, OTHER_SEQ, END = 0, 1, 2, 3, 4


def _payload(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


def _python_records(raw: bytes | memoryview, data_off: int,
                    end: int) -> list[tuple[int, int, int, bytes]]:
    """(kind, seq, time_ns, payload) of every record from data_off, decoded
    by format.read_record (the Python decoder) alone."""
    buf = memoryview(raw)
    out: list[tuple[int, int, int, bytes]] = []
    off = data_off
    while True:
        r = F.read_record(buf, off, end)
        if not isinstance(r, F.Rec):
            assert r is F.EMPTY, f"a record at {off} does not check"
            return out
        out.append((r.kind, r.seq, r.time_ns, bytes(buf[r.payload_off:r.payload_off + r.length])))
        if r.kind == F.KIND_END:
            return out
        off = r.next_off


def test_the_c_side_agrees_with_the_python_constants() -> None:
    rng = random.Random(1)
    for _ in range(300):
        word = rng.getrandbits(32)
        seq, t = rng.getrandbits(64), rng.getrandbits(64)
        data = rng.randbytes(rng.randrange(0, 3000))
        assert _core.journal_crc(word, seq, t, data) == F.record_crc(word, seq, t, data)
    assert (F.REC_SIZE, F.REC_ALIGN, F.INDEX_OFF, F.INDEX_ENTRY.size) == (32, 16, 64, 24)
    assert (M.OFF_WAKE, M.OFF_WAITERS, M.OFF_NEXT) == (28, 32, 40)  # JMETA_* in record.h


def test_the_c_crc_is_zlibs_at_every_length_and_alignment() -> None:
    """journal/crc.c folds runs of 64 bytes and more with carry-less
    multiplies where the CPU has them (JOURNAL_CRC_CLMUL) and hands the rest
    to zlib: the sum is zlib.crc32's for every length, start alignment and
    preceding state, up to sizes where the 4-lane loop runs many times."""
    rng = random.Random(4)
    blob = rng.randbytes((1 << 20) + 64)
    view = memoryview(blob)
    lengths = [*range(0, 1100), *(rng.randrange(1100, 1 << 20) for _ in range(60)), 1 << 20]
    for n in lengths:
        for o in ((0, 1, 3, 8, 15) if n < 1100 else (0, 7)):
            data = view[o:o + n]
            word, seq, t = rng.getrandbits(32), rng.getrandbits(64), rng.getrandbits(64)
            assert _core.journal_crc(word, seq, t, data) == F.record_crc(word, seq, t, data), \
                (n, o)
    assert _core.JOURNAL_CRC_CLMUL in (0, 1)


def test_nonzero_finds_the_first_non_zero_byte() -> None:
    """journal_nonzero (recovery's scan for bytes to cut past a torn tail)."""
    rng = random.Random(5)
    for _ in range(300):
        buf = bytearray(rng.choice((0, 1, 100, 4096, 4097, 20000)))
        for _ in range(rng.randrange(3)):
            if buf:
                buf[rng.randrange(len(buf))] = rng.randrange(1, 256)
        start, end = rng.randrange(0, len(buf) + 2), rng.randrange(0, len(buf) + 9000)
        lim = min(end, len(buf))
        want = next((i for i in range(start, lim) if buf[i]), max(start, lim))
        assert _core.journal_nonzero(buf, start, end) == want


def test_c_written_records_decode_in_python_byte_for_byte(tmp_path: Path) -> None:
    """Appends (C), claims (C commit) and objects, across rolls: the Python
    decoder reads every record back with the seq, a non-decreasing time and
    the payload given, and every sparse-index entry checks and names a
    record at the start of its stride."""
    rng = random.Random(2)
    path = str(tmp_path / "j")
    sent: list[bytes] = []
    with Journal.create(path, segment_size=16 << 10) as j:
        w = j.writer()
        for i in range(600):
            data = _payload(rng, rng.choice(SIZES))
            if i % 3 == 1:
                with w.claim(len(data)) as view:
                    view[:] = data
            else:
                assert w.append(data) == i
            sent.append(data)
    got: list[tuple[int, int, int, bytes]] = []
    segs = list_segments(path)
    assert len(segs) > 10
    for first, file in segs:
        with open(file, "rb") as f:
            raw = f.read()
        head = F.unpack_header(raw[:F.SEG_HEADER.size], file, first)
        recs = _python_records(raw, head.data_off, len(raw))
        got += [r for r in recs if r[0] == F.KIND_DATA]
        for i in range(head.n_index):
            e = F.unpack_index(raw, F.INDEX_OFF + F.INDEX_ENTRY.size * i)
            if e is None:
                assert raw[F.INDEX_OFF + 24 * i:F.INDEX_OFF + 24 * i + 24] == bytes(24)
                continue
            seq, t, off = e
            assert off >= head.data_off + i * head.stride
            r = F.read_record(memoryview(raw), off, len(raw))
            assert isinstance(r, F.Rec) and (r.seq, r.time_ns) == (seq, t)
    assert [g[1] for g in got] == list(range(len(sent)))
    assert [g[3] for g in got] == sent
    times = [g[2] for g in got]
    assert times == sorted(times)


class PyWriter:
    """A writer made of format.py's functions only (the reference)."""

    def __init__(self, size: int, data_off: int) -> None:
        self.buf = bytearray(size)
        self.off = data_off
        self.seq = 0

    def put(self, data: bytes, kind: int = F.KIND_DATA, seq: int | None = None) -> int:
        seq = self.seq if seq is None else seq
        word = (len(data) << F.KIND_BITS) | kind
        t = 1_700_000_000_000_000_000 + seq
        at = self.off
        self.buf[at + F.REC_SIZE:at + F.REC_SIZE + len(data)] = data
        F.REC.pack_into(self.buf, at, word, F.record_crc(word, seq, t, data), seq, t, 0)
        self.off = F.align(at + F.REC_SIZE + len(data))
        self.seq = seq + 1
        return at


def test_python_written_records_scan_in_c() -> None:
    rng = random.Random(3)
    w = PyWriter(1 << 20, 4096)
    sent = [_payload(rng, rng.choice(SIZES)) for _ in range(150)]
    for data in sent:
        w.put(data)
    end_at = w.put(b"", kind=F.KIND_END)
    buf = bytes(w.buf)
    out: list[tuple[int, bytes]] = []
    off, seq, status = 4096, 0, OK
    while status == OK:
        recs, off, seq, status = _core.journal_read_many(buf, off, len(buf), seq, 7, 1 << 20)
        out += recs
    assert out == list(enumerate(sent))
    assert (status, off, seq) == (END, end_at, len(sent))
    # max_bytes: a batch stops once that many payload bytes were copied (at least one record).
    recs, _, _, status = _core.journal_read_many(buf, 4096, len(buf), 0, 1000, 1)
    assert len(recs) == 1 and status == OK
    # A record of another seq, nothing written yet, a checksum that does not match.
    assert _core.journal_read_many(buf, 4096, len(buf), 5, 10, 1 << 20)[1:] == (4096, 5, OTHER_SEQ)
    assert _core.journal_read_many(buf, end_at + 32, len(buf), 0, 10, 1 << 20)[3] == EMPTY
    flipped = bytearray(buf)
    flipped[4096 + F.REC_SIZE] ^= 1 if sent[0] else 0
    flipped[4096 + 4] ^= 0x10  # the CRC itself
    assert _core.journal_read_many(bytes(flipped), 4096, len(buf), 0, 10, 1 << 20)[1:] == \
        (4096, 0, BAD)


def _reference_scan(buf: memoryview, off: int, end: int, seq: int, max_n: int,
                    max_bytes: int) -> tuple[list[tuple[int, bytes]], int, int, int]:
    """What journal_read_many must return, from format.read_record."""
    out: list[tuple[int, bytes]] = []
    copied = 0
    end = min(end, len(buf))
    while len(out) < max_n and (not out or copied < max_bytes):
        if off % F.REC_ALIGN and off + 4 <= end:
            return out, off, seq, BAD  # the C scanner refuses an unaligned record
        r = F.read_record(buf, off, end) if off <= end else F.EMPTY
        if r is F.EMPTY:
            return out, off, seq, EMPTY
        if not isinstance(r, F.Rec):
            return out, off, seq, BAD
        if r.seq != seq:
            return out, off, seq, OTHER_SEQ
        if r.kind == F.KIND_END:
            return out, off, seq, END
        out.append((seq, bytes(buf[r.payload_off:r.payload_off + r.length])))
        copied += r.length
        seq += 1
        off = r.next_off
    return out, off, seq, OK


def _guarded(n_pages: int) -> tuple[mmap.mmap, memoryview]:
    """A mapping of n_pages readable pages followed by one PROT_NONE page:
    a read past the buffer (the view) faults and kills the process."""
    mm = mmap.mmap(-1, (n_pages + 1) * mmap.PAGESIZE)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    rc = libc.mprotect(addr + n_pages * mmap.PAGESIZE, mmap.PAGESIZE, 0)
    assert rc == 0, os.strerror(ctypes.get_errno())
    return mm, memoryview(mm)[:n_pages * mmap.PAGESIZE]


def _assert_guard_faults(mm: mmap.mmap, size: int) -> None:
    """The page after the buffer is really inaccessible: a child that reads
    its first byte dies of SIGSEGV."""
    addr = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    pid = os.fork()
    if pid == 0:
        faulthandler.disable()  # the fault is the point: no traceback in the run's log
        ctypes.string_at(addr + size - 1, 1)  # the last byte of the buffer reads
        ctypes.string_at(addr + size, 1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSEGV, status


@pytest.mark.parametrize("seed", range(4))
def test_the_c_scanner_survives_hostile_bytes_and_agrees_with_python(seed: int) -> None:
    """Valid records, then hostile edits (flips, length words pointing past
    the end, huge lengths, END records with a length, stray words), in a
    buffer whose next page is inaccessible: the C scan never reads out of it
    and stops exactly where, and as, the Python decoder says."""
    rng = random.Random(seed)
    pages = 4
    mm, view = _guarded(pages)
    seen: Counter[int] = Counter()
    try:
        size = len(view)
        _assert_guard_faults(mm, size)
        for trial in range(150):
            w = PyWriter(size, 0)
            starts = []
            while True:
                n = rng.choice(SIZES[:7])
                if F.align(w.off + F.REC_SIZE + n) > size - 64:
                    break
                starts.append((w.off, w.seq))
                w.put(_payload(rng, n))
            raw = w.buf
            for _ in range(rng.randrange(1, 6)):
                at = rng.randrange(0, size - 32) & ~3
                how = rng.randrange(5)
                if how == 0:
                    raw[rng.randrange(size)] ^= 1 << rng.randrange(8)
                elif how == 1:  # a length reaching past the end of the buffer
                    n = size - at - F.REC_SIZE + rng.randrange(-8, 64)
                    struct.pack_into("<I", raw, at, ((max(n, 0) & 0x0FFFFFFF) << 4) | 1)
                elif how == 2:
                    struct.pack_into("<I", raw, at, rng.getrandbits(32))
                elif how == 3:  # an END record with a length, or a kind that is neither
                    kind = rng.choice((2, 0, 3, 15))
                    struct.pack_into("<I", raw, at, (rng.randrange(1, 50) << 4) | kind)
                else:  # a header whose CRC matches a wrong length
                    n = rng.randrange(0, 4 * 4096)
                    word = (n << 4) | 1
                    body = bytes(raw[at + 32:at + 32 + n])
                    crc = zlib.crc32(body, zlib.crc32(struct.pack("<IQQQ", word, 0, 0, 0)))
                    struct.pack_into("<IIQQQ", raw, at, word, crc, 0, 0, 0)
            view[:] = raw
            for _ in range(8):
                off, seq = rng.choice(starts)  # mostly where a record starts, with its seq
                if rng.random() < 0.4:
                    off = rng.choice((rng.randrange(0, size + 64) & ~15, rng.randrange(0, size + 8),
                                      size - 32, size - 16, size - 4, size))
                if rng.random() < 0.2:
                    seq = rng.randrange(0, 200)
                end = rng.choice((size, size, size + 4096, rng.randrange(0, size + 1)))
                max_n, max_bytes = rng.choice((1, 3, 1000)), rng.choice((1, 500, 1 << 20))
                want = _reference_scan(view, off, end, seq, max_n, max_bytes)
                got = _core.journal_read_many(view, off, end, seq, max_n, max_bytes)
                assert got == want, (trial, off, end, seq)
                seen[got[3]] += 1
                seen[-1] += len(got[0])
        # Every way of stopping came up, and records were read before them.
        assert all(seen[k] for k in (OK, EMPTY, BAD, OTHER_SEQ)), seen
        assert seen[-1] > 2000, seen
    finally:
        view.release()
        mm.close()


def test_the_writer_takes_any_buffer_and_still_says_why_not(tmp_path: Path) -> None:
    """Strided and multi-dimensional buffers go through the Python side of
    append (the C side takes contiguous ones); a non-buffer is a TypeError;
    a closed writer is Closed, as before."""
    import array

    from shmring._errors import Closed, MessageTooLarge
    path = str(tmp_path / "j")
    big = bytes(range(256)) * 4
    two_d = memoryview(bytearray(big)).cast("B", (32, 32))
    with Journal.create(path, segment_size=16 << 10) as j:
        w = j.writer()
        assert w.append(memoryview(big)[::3]) == 0
        assert w.append(two_d) == 1
        assert w.append(array.array("d", [1.5, 2.5])) == 2
        assert w.append(bytearray(b"x")) == 3
        with pytest.raises(TypeError):
            w.append(12345)  # type: ignore[arg-type]
        with pytest.raises(MessageTooLarge):
            w.append(bytes(20 << 10))
        assert w.append(b"after") == 4
        w.close()
        with pytest.raises(Closed):
            w.append(b"late")
        with j.reader(from_seq=0, timeout=0) as r:
            assert list(r) == [(0, big[::3]), (1, big), (2, array.array("d", [1.5, 2.5]).tobytes()),
                               (3, b"x"), (4, b"after")]


def test_a_reader_resumes_inside_a_batch(tmp_path: Path) -> None:
    """The C scan copies records ahead; seq, read() and a second iteration
    still go one record at a time from where the reader stopped."""
    path = str(tmp_path / "j")
    with Journal.create(path, segment_size=64 << 10) as j:
        w = j.writer()
        for i in range(3000):
            w.append(i.to_bytes(4, "little"))
        with j.reader(from_seq=10, timeout=0) as r:
            for seq, data in r:
                assert int.from_bytes(data, "little") == seq
                if seq == 20:
                    break
            assert r.seq == 21
            assert r.read(timeout=0) == (21, (21).to_bytes(4, "little"))
            assert r.seq == 22
            rest = list(r)
            assert [s for s, _ in rest] == list(range(22, 3000))
            w.append(b"live")
            assert r.read(timeout=1) == (3000, b"live")
            assert r.seq == 3001
