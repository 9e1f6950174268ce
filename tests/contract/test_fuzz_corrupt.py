"""Corrupt segments: whatever bytes another process writes into a region,
readers raise typed errors and never crash or read out of bounds; producers
raise typed errors or send, and never write out of bounds (DESIGN.md,
invariant 2).

Header corruption must make ``Channel.open`` raise ``CorruptRegion``. Ring,
counter and attach-table corruption is written through a second mapping into
a channel whose endpoints are open, then every read form (``recv_nowait``,
``recv``, ``recv_many``, ``recv_view``), sends, a claim, and fresh endpoints
are exercised. All of that runs in a forked child: a segfault or a hang is
then a test failure (signal or timeout reported), not the death of pytest.
The child also checks that every zero-copy view lies inside the ring and that
nobody wrote to the header line. The rig, the child runs and the random
corruptions live in corrupt_util.py, shared with the long run under stress/.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

import pytest
from corrupt_util import (
    REC_SEQ,
    REC_WORD,
    U64,
    Rig,
    check_report,
    corruption,
    exercise,
    get64,
    in_child,
    put,
    put32,
    put64,
    read_all_forms,
    rec_word,
    rig,
    run_fuzz,
    write_all_forms,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pattern_util import KIND_IDS, KINDS, patterns

import shmring
from shmring import _layout as L

PATTERNS, PATTERN_IDS = KINDS, KIND_IDS

@pytest.fixture(autouse=True)
def _unsupervised(monkeypatch: pytest.MonkeyPatch) -> None:
    # Lifetimes here are the test's own (it unlinks); no supervisor process.
    monkeypatch.setenv("SHMRING_SUPERVISOR", "0")


# ----------------------------------------------------------------- header --
def header_cases(cap: int, total: int, doff: int, slots: int) -> list[tuple[str, int, str, int]]:
    """(what, offset, struct format, value) of bad header fields."""
    return [
        ("magic zero", L.HDR_MAGIC, "<Q", 0),
        ("magic one byte off", L.HDR_MAGIC, "<Q", L.SHMRING_MAGIC ^ (1 << 56)),
        ("version 0", L.HDR_VERSION, "<I", 0),
        ("version next", L.HDR_VERSION, "<I", L.LAYOUT_VERSION + 1),
        ("version all ones", L.HDR_VERSION, "<I", 0xFFFFFFFF),
        ("pattern 0", L.HDR_PATTERN, "<I", 0),
        ("pattern unknown", L.HDR_PATTERN, "<I", max(L.PATTERN_NAMES) + 1),
        ("total_size short", L.HDR_TOTAL_SIZE, "<Q", total - 1),
        ("total_size long", L.HDR_TOTAL_SIZE, "<Q", total + L.PAGE_ALIGN),
        ("total_size huge", L.HDR_TOTAL_SIZE, "<Q", U64),
        ("capacity zero", L.HDR_CAPACITY, "<Q", 0),
        ("capacity not a power of two", L.HDR_CAPACITY, "<Q", cap - 1),
        ("capacity three halves", L.HDR_CAPACITY, "<Q", cap + cap // 2),
        ("capacity past the segment", L.HDR_CAPACITY, "<Q", cap * 2),
        ("capacity below the minimum", L.HDR_CAPACITY, "<Q", L.MIN_CAPACITY // 2),
        ("capacity the maximum", L.HDR_CAPACITY, "<Q", L.MAX_CAPACITY),
        ("capacity top bit", L.HDR_CAPACITY, "<Q", 1 << 63),
        ("max_message zero", L.HDR_MAX_MESSAGE, "<Q", 0),
        ("max_message over half", L.HDR_MAX_MESSAGE, "<Q", cap // 2 - L.RECORD_HEADER + 1),
        ("max_message the capacity", L.HDR_MAX_MESSAGE, "<Q", cap),
        ("max_message wraps a sum", L.HDR_MAX_MESSAGE, "<Q", U64 - L.RECORD_HEADER + 8),
        ("max_message all ones", L.HDR_MAX_MESSAGE, "<Q", U64),
        ("slot_count zero", L.HDR_SLOT_COUNT, "<I", 0),
        ("slot_count over the maximum", L.HDR_SLOT_COUNT, "<I", L.MAX_SLOTS + 1),
        ("slot_count all ones", L.HDR_SLOT_COUNT, "<I", 0xFFFFFFFF),
        ("slot_count into the ring", L.HDR_SLOT_COUNT, "<I",
         min(L.MAX_SLOTS, (doff - L.SLOTS_OFFSET) // L.SLOT_SIZE + 1)),
        ("data_offset zero", L.HDR_DATA_OFFSET, "<Q", 0),
        ("data_offset on the slot table", L.HDR_DATA_OFFSET, "<Q",
         L.SLOTS_OFFSET + (slots - 1) * L.SLOT_SIZE),
        ("data_offset misaligned", L.HDR_DATA_OFFSET, "<Q", doff + 8),
        ("data_offset ring short", L.HDR_DATA_OFFSET, "<Q", doff + L.RECORD_ALIGN),
        ("data_offset ring not at the end", L.HDR_DATA_OFFSET, "<Q", doff - L.PAGE_ALIGN),
        ("data_offset past the segment", L.HDR_DATA_OFFSET, "<Q", total),
        ("data_offset wraps a sum", L.HDR_DATA_OFFSET, "<Q", (U64 - cap + 1) & ~0xF),
        ("data_offset all ones", L.HDR_DATA_OFFSET, "<Q", U64),
    ]


# Fields only Channel.open checks (against the segment): an endpoint made
# from an already open channel validates what it uses (ring_init), and a ring
# that lies inside the segment but does not end it is still inside.
ENDPOINTS_MAY_ACCEPT = {"version 0", "version next", "version all ones", "total_size short",
                        "total_size long", "total_size huge", "data_offset ring not at the end"}


def _header_case_ids() -> list[str]:
    return [c[0] for c in header_cases(4096, 8192, 4096, 8)]


@pytest.mark.parametrize(("pattern", "lossy"), PATTERNS[::2] + PATTERNS[3:4],
                         ids=["spsc", "mpmc", "broadcast-lossy", "broadcast"])
@pytest.mark.parametrize("case", range(len(_header_case_ids())), ids=_header_case_ids())
def test_corrupt_header_refused(uname: str, pattern: str, lossy: bool, case: int) -> None:
    """Channel.open raises CorruptRegion; a new endpoint on a channel already
    open refuses too; endpoints already open keep to what they validated."""
    with rig(uname, pattern, lossy) as rg:
        total = rg.ch.region.size
        slots = rg.ch.region.slot_count
        what, off, fmt, value = header_cases(rg.cap, total, rg.doff, slots)[case]

        def child() -> list[str]:
            out: list[str] = []
            buf = rg.ch.region.buf
            assert buf is not None
            struct.pack_into(fmt, buf, off, value)
            try:
                shmring.Channel.open(rg.name, timeout=0.2).close()
                out.append(f"UNTYPED {what}: Channel.open accepted it")
            except shmring.CorruptRegion:
                out.append("open: CorruptRegion")
            except Exception as e:
                out.append(f"UNTYPED {what}: open raised {type(e).__name__}: {e}")
            for make in (rg.ch.consumer, rg.ch.producer):
                try:
                    make().close()
                    if what not in ENDPOINTS_MAY_ACCEPT:
                        out.append(f"UNTYPED {what}: {make.__name__}() accepted it")
                except shmring.ShmringError:
                    pass  # CorruptRegion; RoleTaken (the rig holds spsc roles);
                    # AttachTableFull (slot_count zero)
                except Exception as e:
                    out.append(f"UNTYPED {what}: {make.__name__}() raised "
                               f"{type(e).__name__}: {e}")
            read_all_forms(rg, rg.rx, out, "open reader")
            write_all_forms(rg, rg.tx, out, "open writer")
            return out

        check_report(in_child(child))


# ---------------------------------------------------------------- records --
def record_cases(rg: Rig) -> list[tuple[str, Callable[[memoryview], None]]]:
    """Bad words and sequence numbers in the record the consumer reads next
    (and the one after)."""
    cap, mm = rg.cap, rg.max_message
    pos = rg.next_pos()
    off = rg.rec_off(pos)
    lap = rg.lap(pos)
    idx = pos % cap

    def word(value: int, where: int = off) -> Callable[[memoryview], None]:
        return lambda mv: put64(mv, where + REC_WORD, value)

    def second(mv: memoryview) -> None:
        w = get64(mv, off + REC_WORD)
        alen = (w & 0xFFFFFFFF) + L.RECORD_ALIGN - 1 & ~(L.RECORD_ALIGN - 1)
        nxt = pos + alen
        put64(mv, rg.rec_off(nxt) + REC_WORD,
              rec_word(cap - nxt % cap + L.RECORD_HEADER, L.REC_MSG, rg.lap(nxt)))

    msg = L.REC_MSG
    cases: list[tuple[str, Callable[[memoryview], None]]] = [
        ("length past the end of the ring", word(rec_word(cap - idx + L.RECORD_HEADER, msg, lap))),
        ("pad past the end of the ring",
         word(rec_word(cap - idx + L.RECORD_ALIGN, L.REC_PAD, lap))),
        ("length past the tail", word(rec_word(min(cap - idx, mm), L.REC_PAD, lap))),
        ("length negative", word(rec_word(-48, msg, lap))),
        ("length most negative", word(rec_word(-(1 << 31), msg, lap))),
        ("length huge", word(rec_word((1 << 31) - 1, msg, lap))),
        ("length zero (tail advanced)", word(0)),
        ("length below a header", word(rec_word(L.RECORD_HEADER - 1, msg, lap))),
        ("length over max_message", word(rec_word(mm + L.RECORD_HEADER + 1, msg, lap))),
        ("type zero", word(rec_word(64, 0, lap))),
        ("type unknown", word(rec_word(64, 0xF, lap))),
        ("lap ahead", word(rec_word(64, msg, lap + 1))),
        ("lap behind", word(rec_word(64, msg, lap - 1))),
        ("all ones", word(U64)),
        ("seq a lap off", lambda mv: put64(mv, off + REC_SEQ, get64(mv, off + REC_SEQ) + cap)),
        ("seq garbage", lambda mv: put64(mv, off + REC_SEQ, 0xDEADBEEFDEADBEEF)),
        ("next record runs off the ring", second),
    ]
    if rg.pattern == "mpmc":
        cases += [
            ("taken by a slot that does not exist",
             word(rec_word(64, msg, lap, L.ST_TAKEN, 0x1FFF))),
            ("done at read_claim", word(rec_word(64, msg, lap, L.ST_DONE, 1))),
            ("being swept", word(rec_word(64, msg, lap, L.ST_SWEEP, 1))),
            ("state unknown", word(rec_word(64, msg, lap, 0xF, 0))),
        ]
    return cases


def _record_case_ids() -> list[str]:
    return ["length past the end of the ring", "pad past the end of the ring",
            "length past the tail", "length negative", "length most negative", "length huge",
            "length zero (tail advanced)", "length below a header", "length over max_message",
            "type zero", "type unknown", "lap ahead", "lap behind", "all ones",
            "seq a lap off", "seq garbage", "next record runs off the ring"]


@pytest.mark.parametrize(("pattern", "lossy"), PATTERNS, ids=PATTERN_IDS)
def test_corrupt_records(uname: str, pattern: str, lossy: bool) -> None:
    """Each bad record word or sequence number, one child per case."""
    with rig(uname, pattern, lossy) as rg0:
        names = [c[0] for c in record_cases(rg0)]
    assert names[: len(_record_case_ids())] == _record_case_ids()
    for i, what in enumerate(names):
        with rig(uname, pattern, lossy) as rg:
            corrupt = record_cases(rg)[i][1]
            out = in_child(exercise(rg, corrupt))
            check_report([f"{what}: {line}" if line.startswith(("UNT", "BOU", "WRO")) else line
                          for line in out])
            # Not vacuous: the first read sees these. (A lossy reader takes a
            # bad record for one being overwritten and skips to the newest.)
            seq_checked = pattern != "broadcast" and what in SEQ_CHECKED
            if not lossy and (what in DETECTED or seq_checked):
                assert out[0] == "reader recv_nowait 0: CorruptRegion", (what, out[0])


DETECTED = {"length past the end of the ring", "pad past the end of the ring", "length huge",
            "length below a header", "length over max_message", "type zero", "type unknown",
            "lap ahead", "lap behind"}
SEQ_CHECKED = {"seq a lap off", "seq garbage"}  # broadcast: seq is the message number


# --------------------------------------------------------------- counters --
def counter_cases(rg: Rig) -> list[tuple[str, Callable[[memoryview], None]]]:
    cap = rg.cap
    region = rg.ch.region
    tail, head = region.counter(L.OFF_TAIL), region.counter(L.OFF_HEAD)
    rx_slot = L.slot_offset(rg.rx._slot)

    cases: list[tuple[str, Callable[[memoryview], None]]] = [
        ("tail behind head", put(L.OFF_TAIL, head - L.RECORD_ALIGN)),
        ("tail zero", put(L.OFF_TAIL, 0)),
        ("tail more than a ring past head", put(L.OFF_TAIL, head + cap + L.RECORD_ALIGN)),
        ("tail one record past", put(L.OFF_TAIL, tail + 4 * L.RECORD_ALIGN)),
        ("tail misaligned", put(L.OFF_TAIL, tail + 8)),
        ("tail all ones", put(L.OFF_TAIL, U64)),
        ("tail near wrap of 64 bits", put(L.OFF_TAIL, U64 - L.RECORD_ALIGN + 1)),
        ("head beyond tail", put(L.OFF_HEAD, tail + 4 * L.RECORD_ALIGN)),
        ("head a ring behind", put(L.OFF_HEAD, max(0, tail - 2 * cap))),
        ("head all ones", put(L.OFF_HEAD, U64 - L.RECORD_ALIGN + 1)),
        ("head and tail swapped", put(L.OFF_TAIL, head, L.OFF_HEAD, tail)),
        ("eos set", put32(L.OFF_EOS, 1)),
        ("broken set", put32(L.OFF_BROKEN, 0xFFFFFFFF)),
        ("waiters huge", put32(L.OFF_DATA_WAITERS, 0xFFFFFFFF, L.OFF_SPACE_WAITERS, 7)),
        ("consumer slot cursor garbage", put(rx_slot + L.SLOT_CURSOR, 0xDEADBEEF)),
        ("consumer slot role garbage", put32(rx_slot + L.SLOT_ROLE, 0xFFFFFFFF)),
    ]
    if rg.pattern == "mpmc":
        rc = region.counter(L.OFF_READ_CLAIM)
        cases += [
            ("read_claim zero", put(L.OFF_READ_CLAIM, 0)),
            ("read_claim past tail", put(L.OFF_READ_CLAIM, tail + cap)),
            ("read_claim behind head", put(L.OFF_READ_CLAIM, head - 2 * L.RECORD_ALIGN)),
            ("read_claim misaligned", put(L.OFF_READ_CLAIM, rc + 8)),
            ("read_claim all ones", put(L.OFF_READ_CLAIM, U64)),
            ("redeliver one", put(L.OFF_REDELIVER, 1)),
            ("redeliver huge", put(L.OFF_REDELIVER, U64)),
            ("redeliver with read_claim far ahead",
             put(L.OFF_REDELIVER, 5, L.OFF_READ_CLAIM, U64 - 15)),
        ]
    if rg.pattern == "broadcast":
        assert rg.other is not None
        other_slot = L.slot_offset(rg.other._slot)
        cases += [
            ("latest past tail", put(L.OFF_LATEST, tail + cap)),
            ("latest all ones", put(L.OFF_LATEST, U64)),
            ("latest misaligned", put(L.OFF_LATEST, tail - 8)),
            ("intent huge", put(L.OFF_INTENT, U64)),
            ("intent a ring ahead", put(L.OFF_INTENT, tail + 2 * cap)),
            ("intent and latest garbage", put(L.OFF_INTENT, tail + cap + 16, L.OFF_LATEST, 8)),
            ("msgno garbage", put(L.OFF_MSGNO, U64)),
            ("gating cursor zero", put(other_slot + L.SLOT_CURSOR, 0)),
            ("gating cursor past tail", put(other_slot + L.SLOT_CURSOR, tail + 5 * cap)),
            ("gating cursor all ones", put(other_slot + L.SLOT_CURSOR, U64)),
            ("last_msgno garbage", put(rx_slot + L.SLOT_LAST_MSGNO, U64)),
        ]
    return cases


@pytest.mark.parametrize(("pattern", "lossy"), PATTERNS, ids=PATTERN_IDS)
def test_corrupt_counters(uname: str, pattern: str, lossy: bool) -> None:
    """Each bad counter, one child per case; new endpoints start from them."""
    with rig(uname, pattern, lossy) as rg0:
        names = [c[0] for c in counter_cases(rg0)]
    for i, what in enumerate(names):
        with rig(uname, pattern, lossy) as rg:
            corrupt = counter_cases(rg)[i][1]
            out = in_child(exercise(rg, corrupt))
            check_report([f"{what}: {line}" if line.startswith(("UNT", "BOU", "WRO")) else line
                          for line in out])


def test_corrupt_dead_slot_recovered(uname: str) -> None:
    """Recovery of a dead producer's slot with a garbage claim stays in
    bounds and leaves readers with typed errors."""
    for pattern in patterns(multi_producer=True):
        dead = os.fork()
        if dead == 0:  # pragma: no cover - a process that is gone at once
            os._exit(0)
        os.waitpid(dead, 0)
        for claim_pos, claim_len in [(U64 - 15, 64), (0, 1 << 40), (12345, 48), (16, 4096)]:
            with rig(uname, pattern, False) as rg:
                slot = L.slot_offset(rg.ch.region.slot_count - 1)

                def corrupt(mv: memoryview, slot: int = slot, p: int = claim_pos,
                            n: int = claim_len, dead: int = dead) -> None:
                    put64(mv, slot + L.SLOT_PID, dead)
                    put64(mv, slot + L.SLOT_START_TIME, 1)
                    struct.pack_into("<I", mv, slot + L.SLOT_ROLE, L.ROLE_PRODUCER)
                    put64(mv, slot + L.SLOT_CLAIM_POS, p)
                    put64(mv, slot + L.SLOT_CLAIM_LEN, n)
                    rg.ch.recover_dead()

                check_report(in_child(exercise(rg, corrupt)))


@pytest.mark.parametrize(("pattern", "lossy"), PATTERNS, ids=PATTERN_IDS)
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(changes=st.lists(corruption, min_size=1, max_size=4))
def test_fuzz_random_words(uname: str, pattern: str, lossy: bool,
                           changes: list[tuple[str, int, str, int]]) -> None:
    """Random 8-byte values at random aligned offsets of the header, the
    counter lines, the attach table and the ring (seeded: derandomized)."""
    run_fuzz(uname, pattern, lossy, changes)


# ----------------------------------------------------------- self-checks --
@pytest.mark.parametrize("pattern", ["spsc", "mpmc"])
def test_record_word_helper(make_channel: Callable[..., shmring.Channel], pattern: str) -> None:
    """The test's record-word packing matches what the ring writes."""
    cap = 1024
    ch = make_channel(capacity=cap, pattern=pattern)
    tx, rx = ch.producer(), ch.consumer()
    buf = ch.region.buf
    assert buf is not None
    doff = struct.unpack_from("<Q", buf, L.HDR_DATA_OFFSET)[0]
    pos = 0
    for n in (5, 200, 0, 100, 150, 33, 240, 240, 240, 7):  # wraps once
        before = ch.region.counter(L.OFF_TAIL)
        tx.send(b"w" * n)
        after = ch.region.counter(L.OFF_TAIL)
        size = (n + L.RECORD_HEADER + L.RECORD_ALIGN - 1) // L.RECORD_ALIGN * L.RECORD_ALIGN
        pos = after - size
        if pos != before:  # padding first, up to the end of the ring
            pad = get64(memoryview(buf), doff + before % cap + REC_WORD)
            assert pad == rec_word(pos - before, L.REC_PAD, before // cap)
        w = get64(memoryview(buf), doff + pos % cap + REC_WORD)
        assert w == rec_word(n + L.RECORD_HEADER, L.REC_MSG, pos // cap)
        assert get64(memoryview(buf), doff + pos % cap + REC_SEQ) == pos
        assert rx.recv_nowait() == b"w" * n
    assert pos > cap
