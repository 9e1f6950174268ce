"""The machinery of the corrupt-segment tests (contract/test_fuzz_corrupt.py
and its long run, stress/test_fuzz_corrupt_stress.py): a channel with a second
mapping to write garbage through (``rig``), every read and write form run in
a forked child that reports what each raised (``exercise``, ``in_child``), and
the hypothesis strategy of random 8-byte corruptions (``corruption``,
``run_fuzz``).

It runs in a child so that a segfault or a hang is a test failure (signal or
timeout reported), not the death of pytest.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import select
import signal
import struct
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import strategies as st

import shmring
from shmring import _layout as L
from shmring._layout import TRAITS

# Readers may only say "corrupt/broken", "nothing yet" or "end of stream".
READ_ERRORS = (shmring.Broken, shmring.Timeout, shmring.WouldBlock, shmring.EndOfStream)
WAIT = 0.02  # timeout of the blocking forms in the child
CHILD_DEADLINE = 30.0  # a child still running after this has hung

# A record is [u64 word | u64 seq | payload] (layout.h, RECORD); these are the
# word's fields. test_record_word_helper checks them against a real record.
REC_WORD, REC_SEQ = 0, 8
LEN_BITS, TYPE_SHIFT, STATE_SHIFT, OWNER_SHIFT, LAP_SHIFT = 32, 32, 36, 40, 53
U64 = (1 << 64) - 1


def rec_word(length: int, rtype: int, lap: int, state: int = 0, owner: int = 0) -> int:
    return ((length & ((1 << LEN_BITS) - 1)) | (rtype & 0xF) << TYPE_SHIFT
            | (state & 0xF) << STATE_SHIFT | (owner & 0x1FFF) << OWNER_SHIFT
            | (lap & 0x7FF) << LAP_SHIFT)


# ------------------------------------------------------------ child runs --
def in_child(fn: Callable[[], list[str]]) -> list[str]:
    """Run ``fn`` in a forked child and return what it reports. A signal, an
    uncaught exception or a hang in the child fails the test."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(r)
            payload = json.dumps(fn()).encode()
        except BaseException:
            payload = json.dumps(["UNCAUGHT " + traceback.format_exc()]).encode()
            code = 3
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(w, view):]
        finally:
            os._exit(code)
    os.close(w)
    chunks: list[bytes] = []
    deadline = time.monotonic() + CHILD_DEADLINE
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"child hung for {CHILD_DEADLINE} s (killed); it said "
                            f"{b''.join(chunks)[:2000]!r}")
            ready, _, _ = select.select([r], [], [], left)
            if ready:
                chunk = os.read(r, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        pytest.fail(f"child died of signal {os.WTERMSIG(status)} "
                    f"({signal.Signals(os.WTERMSIG(status)).name})")
    out: list[str] = json.loads(b"".join(chunks) or b"[]")
    assert os.WEXITSTATUS(status) == 0, "\n".join(out)
    return out


def fixed_header(mv: memoryview) -> bytes:
    """Header line 0 without the words that change in use (``slot_high``
    rises as slots are first taken): what no endpoint may write."""
    line = bytearray(mv[:L.LINE])
    line[L.HDR_SLOT_HIGH:L.HDR_SLOT_HIGH + 8] = bytes(8)
    return bytes(line)


def check_report(out: list[str]) -> None:
    bad = [line for line in out if line.startswith(("UNTYPED", "UNCAUGHT", "BOUNDS", "WROTE"))]
    assert not bad, "\n".join(bad)


# ------------------------------------------------------------------- rig --
@dataclass
class Rig:
    """A channel with traffic behind it, endpoints open, messages pending."""

    name: str
    pattern: str
    lossy: bool
    ch: shmring.Channel
    tx: shmring.Producer
    rx: shmring.Consumer
    other: shmring.Consumer | None  # mpmc, broadcast: a second consumer
    cap: int
    max_message: int
    doff: int
    ring_lo: int  # address range of the ring in this process's mapping
    ring_hi: int

    def next_pos(self) -> int:
        """Position of the record the consumer reads next."""
        region = self.ch.region
        if self.pattern == "mpmc":
            return region.counter(L.OFF_READ_CLAIM)
        if self.pattern == "broadcast":
            return region.counter(L.slot_offset(self.rx._slot) + L.SLOT_CURSOR)
        return region.counter(L.OFF_HEAD)

    def rec_off(self, pos: int) -> int:
        return self.doff + pos % self.cap

    def lap(self, pos: int) -> int:
        return (pos // self.cap) & 0xFFFF


_names = itertools.count()


@contextmanager
def rig(uname: str, pattern: str, lossy: bool, cap: int = 4096) -> Iterator[Rig]:
    name = f"{uname}-{next(_names)}"
    ch = shmring.Channel.create(name, capacity=cap, pattern=pattern, lossy=lossy, slots=8)
    try:
        tx, rx = ch.producer(), ch.consumer()
        # Twice round the ring or more, ending with a few messages pending.
        pending = 0
        for i in range(48):
            tx.send(bytes([i]) * (i * 37 % (cap // 16)), timeout=1)
            pending += 1
            while pending > 3:
                rx.recv_nowait()
                pending -= 1
        other = ch.consumer() if TRAITS[pattern].multi_consumer else None
        tx.send(b"after the second consumer joined")
        buf = ch.region.buf
        assert buf is not None
        lo = int(np.frombuffer(buf, dtype=np.uint8).ctypes.data)
        doff = struct.unpack_from("<Q", buf, L.HDR_DATA_OFFSET)[0]
        yield Rig(name, pattern, lossy, ch, tx, rx, other, cap, ch.max_message, doff,
                  lo + doff, lo + doff + cap)
    finally:
        try:
            ch.close()
        finally:
            # By name, unconditionally: Channel.unlink leaves a segment whose
            # header (creation time) no longer looks like the one it made.
            with suppress(shmring.RegionNotFound):
                ch.region.unlink()


def attempt(out: list[str], what: str, fn: Callable[[], object],
            allowed: tuple[type[BaseException], ...]) -> object:
    try:
        res = fn()
    except allowed as e:
        out.append(f"{what}: {type(e).__name__}")
        return None
    except Exception as e:
        out.append(f"UNTYPED {what}: {type(e).__name__}: {e}")
        return None
    out.append(f"{what}: ok")
    return res


def read_all_forms(rg: Rig, rx: shmring.Consumer, out: list[str], tag: str) -> None:
    """Every read form, a few times each; results must be typed and sane."""
    for i in range(3):
        got = attempt(out, f"{tag} recv_nowait {i}", rx.recv_nowait, READ_ERRORS)
        if isinstance(got, bytes) and len(got) > rg.max_message:
            out.append(f"BOUNDS {tag}: {len(got)}-byte message")
    got = attempt(out, f"{tag} recv", lambda: rx.recv(timeout=WAIT), READ_ERRORS)
    if isinstance(got, bytes) and len(got) > rg.max_message:
        out.append(f"BOUNDS {tag}: {len(got)}-byte message")
    many = attempt(out, f"{tag} recv_many", lambda: rx.recv_many(4, timeout=WAIT), READ_ERRORS)
    if isinstance(many, list) and any(len(m) > rg.max_message for m in many):
        out.append(f"BOUNDS {tag}: recv_many returned an oversized message")
    rv = attempt(out, f"{tag} recv_view", lambda: rx.recv_view(timeout=WAIT), READ_ERRORS)
    if isinstance(rv, shmring.RecordView):
        n = len(rv.view)
        if n > rg.max_message:
            out.append(f"BOUNDS {tag}: {n}-byte view")
        if n and not rg.lossy:  # a lossy view is of a private copy
            a = int(np.frombuffer(rv.view, dtype=np.uint8).ctypes.data)
            if not (rg.ring_lo <= a and a + n <= rg.ring_hi):
                out.append(f"BOUNDS {tag}: view at ring offset {a - rg.ring_lo}, {n} bytes")
        rv.release()


def write_all_forms(rg: Rig, tx: shmring.Producer, out: list[str], tag: str) -> None:
    """Sends and a claim: typed errors or success, claims inside the ring."""
    for n in (0, 1, rg.max_message // 2, rg.max_message):
        attempt(out, f"{tag} send_nowait {n}", functools.partial(tx.send_nowait, b"s" * n),
                (shmring.ShmringError,))
    attempt(out, f"{tag} send", lambda: tx.send(b"blocking", timeout=WAIT),
            (shmring.ShmringError,))
    cl = attempt(out, f"{tag} claim", lambda: tx.claim(64, timeout=WAIT),
                 (shmring.ShmringError,))
    if isinstance(cl, shmring.Claim):
        a = int(np.frombuffer(cl.view, dtype=np.uint8).ctypes.data)
        if not (rg.ring_lo <= a and a + 64 <= rg.ring_hi):
            out.append(f"BOUNDS {tag}: claim at ring offset {a - rg.ring_lo}")
        else:
            cl.view[:] = b"c" * 64
        attempt(out, f"{tag} commit", lambda: cl.commit(10), (shmring.ShmringError,))


def exercise(rg: Rig, corrupt: Callable[[memoryview], None], *, fresh: bool = True
             ) -> Callable[[], list[str]]:
    """The child's work: corrupt through a second mapping, then use the
    channel every way a reader and a writer can."""

    def child() -> list[str]:
        second = shmring.Region.attach(rg.name, timeout=0.2)
        buf = second.buf
        assert buf is not None
        mv = memoryview(buf)
        corrupt(mv)
        header = fixed_header(mv)
        out: list[str] = []
        read_all_forms(rg, rg.rx, out, "reader")
        if rg.other is not None:
            read_all_forms(rg, rg.other, out, "second reader")
        write_all_forms(rg, rg.tx, out, "writer")
        read_all_forms(rg, rg.rx, out, "reader after writes")
        if fresh:
            # New endpoints start from the corrupt counters.
            rg.rx.close()
            rx2 = attempt(out, "new consumer", rg.ch.consumer, (shmring.ShmringError,))
            if isinstance(rx2, shmring.Consumer):
                read_all_forms(rg, rx2, out, "new reader")
            rg.tx.close()
            tx2 = attempt(out, "new producer", rg.ch.producer, (shmring.ShmringError,))
            if isinstance(tx2, shmring.Producer):
                write_all_forms(rg, tx2, out, "new writer")
                if isinstance(rx2, shmring.Consumer):
                    read_all_forms(rg, rx2, out, "new reader after writes")
        if fixed_header(mv) != header:
            out.append("WROTE the header line changed")
        return out

    return child


def put64(mv: memoryview, off: int, value: int) -> None:
    struct.pack_into("<Q", mv, off, value & U64)


def get64(mv: memoryview, off: int) -> int:
    return int(struct.unpack_from("<Q", mv, off)[0])


def put(*pairs: int) -> Callable[[memoryview], None]:
    """A corruption: 64-bit ``value`` at ``offset``, for each (offset, value)."""

    def corrupt(mv: memoryview) -> None:
        for off, value in zip(pairs[::2], pairs[1::2], strict=True):
            put64(mv, off, value)

    return corrupt


def put32(*pairs: int) -> Callable[[memoryview], None]:
    """A corruption: 32-bit ``value`` at ``offset``, for each (offset, value)."""

    def corrupt(mv: memoryview) -> None:
        for off, value in zip(pairs[::2], pairs[1::2], strict=True):
            struct.pack_into("<I", mv, off, value & 0xFFFFFFFF)

    return corrupt


# ----------------------------------------------------- hypothesis-driven --
AREAS = ["header", "counters", "slots", "ring", "next record"]
interesting = st.sampled_from([0, 1, 8, 16, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32,
                               1 << 63, U64, U64 - 15])
corruption = st.tuples(
    st.sampled_from(AREAS),
    st.integers(0, 1 << 20),  # where in the area (scaled down to it)
    st.sampled_from(["set", "xor", "add"]),
    st.one_of(interesting, st.integers(0, U64), st.integers(-256, 256).map(lambda v: v & U64)),
)


def apply(rg: Rig, mv: memoryview, changes: list[tuple[str, int, str, int]]) -> None:
    slots_end = L.SLOTS_OFFSET + rg.ch.region.slot_count * L.SLOT_SIZE
    for area, where, mode, value in changes:
        if area == "header":
            lo, n = 0, L.LINE
        elif area == "counters":
            lo, n = L.LINE, L.REGION_HEADER_SIZE - L.LINE
        elif area == "slots":
            lo, n = L.SLOTS_OFFSET, slots_end - L.SLOTS_OFFSET
        elif area == "ring":
            lo, n = rg.doff, rg.cap
        else:  # the record the consumer reads next, word or seq
            lo, n = rg.rec_off(rg.next_pos()), L.RECORD_HEADER
        off = lo + (where % (n // 8)) * 8
        old = get64(mv, off)
        new = value if mode == "set" else old ^ value if mode == "xor" else old + value
        put64(mv, off, new)


def run_fuzz(uname: str, pattern: str, lossy: bool,
             changes: list[tuple[str, int, str, int]]) -> None:
    with rig(uname, pattern, lossy, cap=1024) as rg:
        touches_header = any(area == "header" for area, *_ in changes)

        def corrupt(mv: memoryview) -> None:
            apply(rg, mv, changes)

        # After a header change, existing endpoints still run on what they
        # validated; new ones may be refused (CorruptRegion) or not.
        out = in_child(exercise(rg, corrupt, fresh=not touches_header))
        check_report([line for line in out if not line.startswith("WROTE")]
                     if touches_header else out)

