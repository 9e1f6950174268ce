"""Stateful tests of the record protocol of every pattern, in one process.

A Hypothesis ``RuleBasedStateMachine`` drives real endpoints of one channel
(sends and receives of random sizes, zero-copy claims committed in full or in
part or aborted, held views, batches, several producers with claims open at
once, consumers joining and leaving) and checks every result against a model
of the ring that knows the byte position of every record. The model predicts
exactly which message each call returns, and whether a call finds the ring
full or empty, from record sizes (``align16(len + RECORD_HEADER)``) and the
padding record a wrap leaves; so a lost, duplicated, reordered or torn
message, a spurious ``WouldBlock`` and a missed one all fail the test.

Capacities are small (1024..8192) and ``max_message`` goes up to half the
ring, so wraps and full rings happen every few steps.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import pytest
from hypothesis import Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from pattern_util import KIND_IDS, KINDS

import shmring
from shmring import _layout as L
from shmring._layout import TRAITS

CAPACITIES = [1024, 2048, 4096, 8192]
MAX_CONSUMERS = 4
GARBAGE = 0xEE  # what an aborted or not yet committed claim holds

READY, TAKEN, DONE = "ready", "taken", "done"
T = TypeVar("T")


def record_size(n: int) -> int:
    """Ring bytes of a record with an ``n``-byte payload."""
    a = L.RECORD_ALIGN
    return (n + L.RECORD_HEADER + a - 1) // a * a


@dataclass
class Msg:
    producer: int
    seq: int  # per-producer number, in claim order
    data: bytes
    msgno: int = 0  # broadcast: the ring's message number (1-based)
    redelivered: bool = False  # mpmc: handed back by a consumer that left holding it


@dataclass
class Rec:
    """A record as the model places it: a message, or padding (msg None)."""

    pos: int
    alen: int
    msg: Msg | None
    committed: bool = True  # multi-producer claims sit in the ring uncommitted
    state: str = READY  # mpmc


@dataclass
class OpenClaim:
    claim: shmring.Claim
    n: int
    t: int  # where the claim starts (its wrap padding first, if any)
    pad: int
    full: int
    end: int

    @property
    def pos(self) -> int:
        return self.t + self.pad


@dataclass
class Prod:
    ep: shmring.Producer
    idx: int
    next_seq: int = 0
    claim: OpenClaim | None = None


@dataclass
class Cons:
    ep: shmring.Consumer
    idx: int
    cursor: int = 0  # spsc, mpsc, broadcast: where the endpoint reads next
    last_msgno: int = 0  # broadcast: the newest message number it accounted for
    missed: int = 0  # lossy broadcast: what it must report in ``missed``
    view: shmring.RecordView | None = None
    held: Rec | None = None  # the record behind the view (lossy views are copies)
    received: list[Msg] = field(default_factory=list)


class RingMachine(RuleBasedStateMachine):
    """One channel and a model of its ring. Subclassed per pattern below."""

    pattern = "spsc"
    lossy = False
    base_name = "sm"
    names = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        self.ch: shmring.Channel | None = None
        self.prods: list[Prod] = []
        self.cons: list[Cons] = []
        self.recs: dict[int, Rec] = {}
        self.tail = 0  # single producer: committed tail; else the end of the newest claim
        self.head = 0  # mpmc
        self.read_claim = 0  # mpmc
        self.redeliver = 0  # mpmc: records handed back, not yet taken again
        self.intent = 0  # lossy: the furthest end any claim ever reached
        self.msgno = 0  # broadcast
        self.latest = 0  # broadcast: start of the newest message
        self.eos = False
        self.counter = 0
        self.next_cons = 0
        self.delivered: set[tuple[int, int]] = set()  # mpmc: exactly once overall
        self.cap = 0
        self.max_message = 0

    # ----------------------------------------------------------- helpers --
    @property
    def multi_producer(self) -> bool:
        return TRAITS[self.pattern].multi_producer

    @property
    def multi_consumer(self) -> bool:
        return TRAITS[self.pattern].multi_consumer

    def payload(self, n: int) -> bytes:
        self.counter += 1
        stamp = f"<{self.counter}>".encode()
        return (stamp * (n // len(stamp) + 1))[:n]

    def place(self, n: int) -> tuple[int, int, int, int]:
        """(start, padding, record size, end) of an ``n``-byte claim now."""
        t = self.tail
        full = record_size(n)
        idx = t % self.cap
        pad = self.cap - idx if idx + full > self.cap else 0
        return t, pad, full, t + pad + full

    def gate(self) -> float:
        """Claims must end at or before this."""
        if self.lossy:
            return math.inf
        if self.pattern == "broadcast":
            return min([self.tail] + [c.cursor for c in self.cons]) + self.cap
        if self.pattern == "mpmc":
            return self.head + self.cap
        return self.cons[0].cursor + self.cap  # spsc, mpsc: head is the consumer's cursor

    def size(self, data: st.DataObject) -> int:
        mm = self.max_message
        edges = sorted({0, 1, 15, 16, 17, mm - 1, mm} & set(range(mm + 1)))
        return data.draw(st.one_of(st.integers(0, mm), st.sampled_from(edges)), label="size")

    def pick(self, items: list[T], data: st.DataObject) -> T:
        return items[data.draw(st.integers(0, len(items) - 1), label="index")]

    def new_msg(self, p: Prod, data: bytes) -> Msg:
        m = Msg(p.idx, p.next_seq, data)
        p.next_seq += 1
        return m

    def publish(self, m: Msg, t: int, pad: int, full: int, used: int) -> None:
        """A committed claim of ``full`` record bytes at ``t`` (after ``pad``)
        of which ``used`` payload bytes are published."""
        if pad and t not in self.recs:  # a multi-producer claim placed it already
            event("wrap")
            self.recs[t] = Rec(t, pad, None)
        pos = t + pad
        part = record_size(used)
        if part < full:
            event("prefix commit")
        rec = self.recs.get(pos)
        if rec is None:
            rec = self.recs[pos] = Rec(pos, part, m)
        rec.alen, rec.msg, rec.committed = part, m, True
        if part < full:
            self.recs[pos + part] = Rec(pos + part, full - part, None)
        if self.pattern == "broadcast":
            self.msgno += 1
            m.msgno = self.msgno
            self.latest = pos
        self.tail = max(self.tail, t + pad + full)

    # ---------------------------------------------------- consumer model --
    def peek(self, c: Cons) -> Rec | None:
        """The record ``c`` receives next (None: empty), walking padding."""
        if self.pattern == "mpmc":
            if self.redeliver:
                # Handed back: below read_claim, taken first, oldest first.
                for pos in sorted(p for p in self.recs if self.head <= p < self.read_claim):
                    rec = self.recs[pos]
                    if rec.state == READY and rec.msg is not None:
                        rec.state = TAKEN
                        self.redeliver -= 1
                        event("mpmc: redelivered")
                        return rec
            while True:
                r0 = self.read_claim
                if r0 == self.tail or not self.recs[r0].committed:
                    return None
                rec = self.recs[r0]
                assert rec.state == READY
                rec.state = TAKEN
                self.read_claim += rec.alen
                if rec.msg is not None:
                    return rec
                rec.state = DONE
                self.sweep()
        while True:
            pos = c.cursor
            if pos == self.tail:
                return None
            if self.lossy and self.intent > pos + self.cap:
                # Overrun: jump to the newest record, unless that one is
                # itself being overwritten (then nothing is readable yet).
                event("lapped")
                if pos == self.latest:
                    return None
                c.cursor = self.latest
                continue
            rec = self.recs[pos]
            if not rec.committed:
                return None
            if rec.msg is not None:
                return rec
            c.cursor += rec.alen

    def sweep(self) -> None:
        while self.head < self.tail:
            rec = self.recs[self.head]
            if not rec.committed or rec.state != DONE:
                break
            self.head += rec.alen

    def take(self, c: Cons, rec: Rec) -> Msg:
        """``c`` received ``rec``: account for it (the release comes apart)."""
        m = rec.msg
        assert m is not None
        for prev in reversed(c.received):
            # A work queue redelivers after what was taken since (design.md).
            if prev.producer == m.producer and not m.redelivered:
                assert prev.seq < m.seq, "per-producer order broken"
                break
        c.received.append(m)
        if self.pattern == "mpmc":
            key = (m.producer, m.seq)
            assert key not in self.delivered, "message delivered twice"
            self.delivered.add(key)
        if self.pattern == "broadcast":
            assert m.msgno > c.last_msgno
            c.missed += m.msgno - c.last_msgno - 1
            c.last_msgno = m.msgno
        return m

    def release(self, c: Cons, rec: Rec) -> None:
        if self.pattern == "mpmc":
            rec.state = DONE
            self.sweep()
        else:
            c.cursor = rec.pos + rec.alen

    # ------------------------------------------------------------- setup --
    @initialize(
        cap=st.sampled_from(CAPACITIES),
        nprod=st.integers(1, 3),
        ncons=st.integers(1, 3),
        data=st.data(),
    )
    def setup(self, cap: int, nprod: int, ncons: int, data: st.DataObject) -> None:
        limit = cap // 2 - L.RECORD_HEADER
        mm = data.draw(
            st.one_of(st.sampled_from([cap // 4 - L.RECORD_HEADER, limit]), st.integers(1, limit)),
            label="max_message",
        )
        name = f"{self.base_name}-{next(self.names)}"
        self.ch = shmring.Channel.create(name, capacity=cap, pattern=self.pattern,
                                         max_message=mm, lossy=self.lossy, slots=16)
        self.cap, self.max_message = cap, mm
        if not self.multi_producer:
            nprod = 1
        if not self.multi_consumer:
            ncons = 1
        for i in range(nprod):
            self.prods.append(Prod(self.ch.producer(), i))
        for _ in range(ncons):
            self._add_consumer()

    def _add_consumer(self, cursor: int = 0) -> Cons:
        assert self.ch is not None
        c = Cons(self.ch.consumer(), self.next_cons, cursor)
        self.next_cons += 1
        if self.pattern == "broadcast":
            c.cursor = self.tail
            c.last_msgno = self.msgno
        self.cons.append(c)
        return c

    def teardown(self) -> None:
        ch, self.ch = self.ch, None
        if ch is None:
            return
        try:
            ch.close()
        finally:
            ch.unlink()

    # --------------------------------------------------------- producers --
    def free_producers(self) -> list[Prod]:
        return [p for p in self.prods if p.claim is None]

    def claimed_producers(self) -> list[Prod]:
        return [p for p in self.prods if p.claim is not None]

    @precondition(lambda self: self.ch is not None and self.free_producers())
    @rule(nowait=st.booleans(), data=st.data())
    def send(self, nowait: bool, data: st.DataObject) -> None:
        p: Prod = self.pick(self.free_producers(), data)
        n = self.size(data)
        payload = self.payload(n)
        if self.eos:
            with pytest.raises(shmring.Closed):
                p.ep.send_nowait(payload) if nowait else p.ep.send(payload, timeout=0)
            return
        t, pad, full, end = self.place(n)
        if end > self.gate():
            event("send: full")
            with pytest.raises(shmring.WouldBlock if nowait else shmring.Timeout):
                p.ep.send_nowait(payload) if nowait else p.ep.send(payload, timeout=0)
            return
        if nowait:
            p.ep.send_nowait(payload)
        else:
            p.ep.send(payload, timeout=0)
        self.intent = max(self.intent, end)
        self.publish(self.new_msg(p, payload), t, pad, full, n)

    @precondition(lambda self: self.ch is not None and self.free_producers())
    @rule(count=st.integers(1, 6), data=st.data())
    def send_many(self, count: int, data: st.DataObject) -> None:
        p: Prod = self.pick(self.free_producers(), data)
        items = [self.payload(self.size(data)) for _ in range(count)]
        if self.eos:
            with pytest.raises(shmring.Closed):
                p.ep.send_many(items, timeout=0)
            return
        sent = 0
        for item in items:
            t, pad, full, end = self.place(len(item))
            if end > self.gate():
                break
            self.intent = max(self.intent, end)
            self.publish(self.new_msg(p, item), t, pad, full, len(item))
            sent += 1
        event(f"send_many: {'all' if sent == len(items) else 'part'}")
        if sent == len(items):
            assert p.ep.send_many(items, timeout=0) == len(items)
        else:
            with pytest.raises(shmring.Timeout) as ei:
                p.ep.send_many(items, timeout=0)
            assert ei.value.sent == sent  # type: ignore[attr-defined]

    @precondition(lambda self: self.ch is not None and self.free_producers())
    @rule(data=st.data())
    def claim(self, data: st.DataObject) -> None:
        p: Prod = self.pick(self.free_producers(), data)
        n = self.size(data)
        if self.eos:
            with pytest.raises(shmring.Closed):
                p.ep.claim(n, timeout=0)
            return
        t, pad, full, end = self.place(n)
        if end > self.gate():
            with pytest.raises(shmring.Timeout):
                p.ep.claim(n, timeout=0)
            return
        cl = p.ep.claim(n, timeout=0)
        if self.claimed_producers():
            event("two claims open")
        assert len(cl.view) == n and not cl.view.readonly
        cl.view[:] = bytes([GARBAGE]) * n  # what a reader must never see
        p.claim = OpenClaim(cl, n, t, pad, full, end)
        self.intent = max(self.intent, end)
        if self.multi_producer:
            # The claim is in the ring already: it holds back what follows.
            if pad:
                event("wrap")
                self.recs[t] = Rec(t, pad, None)
            self.recs[t + pad] = Rec(t + pad, full, None, committed=False)
            self.tail = end

    @precondition(lambda self: self.ch is not None and self.claimed_producers())
    @rule(data=st.data())
    def commit(self, data: st.DataObject) -> None:
        p: Prod = self.pick(self.claimed_producers(), data)
        oc = p.claim
        assert oc is not None
        whole = data.draw(st.booleans(), label="whole")
        used = oc.n if whole else data.draw(st.integers(0, oc.n), label="used")
        payload = self.payload(used)
        oc.claim.view[:used] = payload
        if whole:
            oc.claim.commit()
        else:
            oc.claim.commit(used)
        p.claim = None
        self.publish(self.new_msg(p, payload), oc.t, oc.pad, oc.full, used)

    @precondition(lambda self: self.ch is not None and self.claimed_producers())
    @rule(data=st.data())
    def abort(self, data: st.DataObject) -> None:
        p: Prod = self.pick(self.claimed_producers(), data)
        oc = p.claim
        assert oc is not None
        oc.claim.abort()
        p.claim = None
        if self.multi_producer:
            rec = self.recs[oc.pos]
            rec.committed = True  # now padding

    @precondition(lambda self: self.ch is not None and self.claimed_producers())
    @rule(data=st.data())
    def send_while_claimed(self, data: st.DataObject) -> None:
        p: Prod = self.pick(self.claimed_producers(), data)
        with pytest.raises(RuntimeError):
            p.ep.send_nowait(b"x")

    @precondition(lambda self: self.ch is not None and not self.eos and self.counter >= 40
                  and not self.claimed_producers())
    @rule()
    def close_send(self) -> None:
        """End of stream (late in a run: nothing can be sent after it)."""
        assert self.ch is not None
        self.ch.close_send()
        self.eos = True

    # --------------------------------------------------------- consumers --
    def empty_error(self, blocking: bool) -> type[Exception]:
        if self.eos:
            return shmring.EndOfStream
        return shmring.Timeout if blocking else shmring.WouldBlock

    @precondition(lambda self: self.ch is not None)
    @rule(blocking=st.booleans(), data=st.data())
    def recv(self, blocking: bool, data: st.DataObject) -> None:
        c: Cons = self.pick(self.cons, data)
        call: Callable[[], bytes] = (
            (lambda: c.ep.recv(timeout=0)) if blocking else c.ep.recv_nowait)
        if c.view is not None:
            with pytest.raises(RuntimeError):
                call()
            return
        rec = self.peek(c)
        if rec is None:
            with pytest.raises(self.empty_error(blocking)):
                call()
            return
        got = call()
        m = self.take(c, rec)
        self.release(c, rec)
        assert got == m.data, f"consumer {c.idx} got {got[:24]!r}, expected {m.data[:24]!r}"

    @precondition(lambda self: self.ch is not None)
    @rule(count=st.integers(1, 8), data=st.data())
    def recv_many(self, count: int, data: st.DataObject) -> None:
        c: Cons = self.pick(self.cons, data)
        if c.view is not None:
            with pytest.raises(RuntimeError):
                c.ep.recv_many(count, timeout=0)
            return
        expected: list[bytes] = []
        while len(expected) < count:
            rec = self.peek(c)
            if rec is None:
                break
            expected.append(self.take(c, rec).data)
            self.release(c, rec)
        if not expected:
            with pytest.raises(self.empty_error(True)):
                c.ep.recv_many(count, timeout=0)
            return
        assert c.ep.recv_many(count, timeout=0) == expected

    @precondition(lambda self: self.ch is not None)
    @rule(data=st.data())
    def recv_view(self, data: st.DataObject) -> None:
        c: Cons = self.pick(self.cons, data)
        if c.view is not None:
            with pytest.raises(RuntimeError):
                c.ep.recv_view(timeout=0)
            return
        rec = self.peek(c)
        if rec is None:
            with pytest.raises(self.empty_error(True)):
                c.ep.recv_view(timeout=0)
            return
        rv = c.ep.recv_view(timeout=0)
        m = self.take(c, rec)
        assert bytes(rv.view) == m.data
        assert rv.view.readonly
        c.view = rv
        if self.lossy:
            self.release(c, rec)  # a lossy view is of a validated copy
        else:
            c.held = rec

    @precondition(lambda self: self.ch is not None and any(c.view for c in self.cons))
    @rule(data=st.data())
    def release_view(self, data: st.DataObject) -> None:
        c: Cons = self.pick([c for c in self.cons if c.view], data)
        rv = c.view
        assert rv is not None
        rv.release()
        with pytest.raises(ValueError):
            bytes(rv.view)  # the view does not outlive the record
        c.view = None
        if c.held is not None:
            self.release(c, c.held)
            c.held = None

    @precondition(lambda self: self.ch is not None and self.multi_consumer
                  and len(self.cons) < MAX_CONSUMERS)
    @rule()
    def join_consumer(self) -> None:
        self._add_consumer()

    @precondition(lambda self: self.ch is not None and self.multi_consumer and len(self.cons) > 1)
    @rule(data=st.data())
    def close_consumer(self, data: st.DataObject) -> None:
        """A consumer may leave holding a view: broadcast, its cursor stops
        gating; mpmc, the record it held goes back to the queue."""
        c: Cons = self.pick(self.cons, data)
        c.ep.close()
        self.cons.remove(c)
        if c.view is not None:
            with pytest.raises(ValueError):
                bytes(c.view.view)  # released with the endpoint
        if self.pattern == "mpmc" and c.held is not None:
            m = c.received.pop()
            assert m is c.held.msg
            self.delivered.remove((m.producer, m.seq))
            m.redelivered = True
            c.held.state = READY
            self.redeliver += 1
            event("mpmc: a held record handed back")

    @precondition(lambda self: self.ch is not None and not self.multi_consumer)
    @rule()
    def reopen_consumer(self) -> None:
        """spsc, mpsc: a new consumer continues where the old one stopped; a
        record the old one held but never released is read again."""
        assert self.ch is not None
        old = self.cons.pop()
        old.ep.close()
        if old.held is not None:
            # Held but never released: not consumed, so it comes again.
            assert old.received.pop().seq == old.held.msg.seq  # type: ignore[union-attr]
        self._add_consumer(old.cursor).received = old.received

    @precondition(lambda self: self.ch is not None and not self.claimed_producers()
                  and not any(c.view for c in self.cons))
    @rule()
    def drain(self) -> None:
        """Everything committed reaches its consumers: broadcast, every
        message since each joined; otherwise every message exactly once."""
        for c in self.cons:
            while True:
                rec = self.peek(c)
                if rec is None:
                    break
                m = self.take(c, rec)
                self.release(c, rec)
                assert c.ep.recv_nowait() == m.data
            with pytest.raises(self.empty_error(False)):
                c.ep.recv_nowait()
        if self.pattern != "broadcast":
            everything = sorted((m.producer, m.seq) for c in self.cons for m in c.received)
            assert len(everything) == len(set(everything))

    # -------------------------------------------------------- invariants --
    @invariant()
    def counters_match(self) -> None:
        ch = self.ch
        if ch is None:
            return
        region = ch.region
        assert region.counter(L.OFF_TAIL) == self.tail
        if not self.multi_consumer:
            assert region.counter(L.OFF_HEAD) == self.cons[0].cursor
        if self.pattern == "mpmc":
            assert region.counter(L.OFF_HEAD) == self.head
            assert region.counter(L.OFF_READ_CLAIM) == self.read_claim
            assert region.counter(L.OFF_REDELIVER) == self.redeliver
        if self.pattern == "broadcast":
            assert region.counter(L.OFF_MSGNO) == self.msgno
            if self.msgno:
                assert region.counter(L.OFF_LATEST) == self.latest
            for c in self.cons:
                assert c.ep.missed == c.missed, f"consumer {c.idx}: missed"
                if not self.lossy:  # the cursor that gates the producer
                    slot = L.slot_offset(c.ep._slot)
                    assert region.counter(slot + L.SLOT_CURSOR) == c.cursor
        for p in self.prods:
            assert bool(p.ep._claimed) == (p.claim is not None)


def machine(pattern: str, lossy: bool, base: str) -> type[RingMachine]:
    return type(
        f"Ring_{pattern}{'_lossy' if lossy else ''}",
        (RingMachine,),
        {"pattern": pattern, "lossy": lossy, "base_name": base, "names": itertools.count()},
    )


@pytest.fixture(autouse=True)
def _unsupervised(monkeypatch: pytest.MonkeyPatch) -> None:
    # The test owns its channels' lifetimes (it unlinks): no supervisor.
    monkeypatch.setenv("SHMRING_SUPERVISOR", "0")


@pytest.mark.parametrize(("pattern", "lossy"), KINDS, ids=KIND_IDS)
def test_ring_state_machine(uname: str, pattern: str, lossy: bool) -> None:
    run_state_machine_as_test(
        machine(pattern, lossy, uname),
        # No "explain" phase: tracing every line of a machine takes minutes.
        settings=settings(max_examples=60, stateful_step_count=60, deadline=None,
                          phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink]),
    )
