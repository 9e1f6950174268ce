"""The attach table: the one place in Python that reads or writes slot words.

Every open channel object and every endpoint holds one 128-byte slot of its
region's attach table (layout in ``csrc/layout.h``; offsets ``L.SLOT_*``).
The C hot paths update their own slot (claims, cursors, counts); everything
Python does to a slot -- taking it, giving it back, marking it being
recovered, switching its state, reading who holds it -- goes through
:class:`AttachTable`, so that the protocol on the pid word is written once:

- a free slot has pid 0; a process takes one by compare-exchange of the pid
  from 0 to its own, *then* stores its PID namespace, *then* its start time:
  start time 0 on a taken slot means "being taken right now" (liveness
  checks leave it alone), and a start time read non-zero comes with the
  namespace the pid belongs to (pid and start time are as the holder sees
  itself, and mean nothing in another namespace);
- freeing stores the start time 0, the namespace 0 and the pid 0 last, so
  the slot is never seen free while its other words are still being reset;
- recovery of a dead holder's slot is claimed by compare-exchange of the pid
  to ``pid | RECOVERING``: exactly one of the supervisor and in-process
  reapers wins, and everyone else skips a slot with that bit set.
- a durable broadcast subscription (layout.h, DURABLE) that recovery finds
  within its hold is not freed but made an *orphan*: pid word
  ``RECOVERING | ORPHAN | dead pid``, skipped by every walk as a slot being
  recovered is, its cursor still gating the producer. :meth:`adopt` and
  :meth:`expire` take an orphan by compare-exchange of that word: one wins.

The table also owns the two owner words of the exclusive roles (the single
producer of spsc/broadcast, the single consumer of spsc/mpsc): they hold
``slot + 1`` of the owning slot, so they are part of the same protocol.

The slot count is read from the header at every walk, not once: a header
overwritten after validation must not make a walk leave the segment.

A table may have thousands of slots (``L.MAX_SLOTS``, so thousands of
processes can share one queue) and costs no ``/dev/shm`` until used: a free
slot is all zeros, which a fresh segment already is, and walks stop at the
header's ``slot_high`` (the slots ever taken), so the pages of slots nobody
took are never read (tmpfs allocates a page at its first fault, a read's
too). Taking a slot and finding a process's slots scan in C
(``_core.slot_take``, ``_core.slots_of``: csrc/ring/slots.c), which raises
``slot_high`` before it takes a slot's pid word.
Liveness policy (is that pid alive?) is not here but in ``region.py``; this
module only moves words.
"""

from __future__ import annotations

import mmap
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import _core
from .. import _layout as L
from .._errors import CorruptRegion

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

#: Set in a slot's pid word by whoever recovers it (one winner, by CAS).
RECOVERING = L.SLOT_RECOVERING
#: Set, with RECOVERING, in the pid word of a held durable subscription
#: whose holder died (an orphan).
ORPHAN = L.SLOT_ORPHAN

_COUNTS = (L.SLOT_CLAIM_LEN, L.SLOT_CURSOR, L.SLOT_MESSAGES, L.SLOT_BYTES, L.SLOT_MISSED,
           L.SLOT_LAST_MSGNO, L.SLOT_LINK_IN, L.SLOT_LINK_OUT, L.SLOT_LINK_REGION,
           L.SLOT_LINK_DONE,
           L.SLOT_LEASE)


def slots_end(n: int) -> int:
    """The byte offset where slot ``n`` begins (just past slot ``n - 1``)."""
    return L.slot_offset(n)


def slots_in(end: int, count: int) -> int:
    """How many slots lie wholly below byte ``end`` of a region (at most ``count``)."""
    return max(0, min(count, (end - L.SLOTS_OFFSET) // L.SLOT_SIZE))


def _owner_word(producer: bool) -> int:
    return L.OFF_PRODUCER_OWNER if producer else L.OFF_CONSUMER_OWNER


#: States of a consumer slot that has joined its ring (an untethered
#: broadcast consumer is still one: it gates again when it reads).
_JOINED = frozenset((L.SLOT_ACTIVE, L.SLOT_UNTETHERED))


@dataclass(frozen=True)
class SlotInfo:
    """One entry of the attach table, as read at one moment."""

    index: int
    pid: int
    start_time: int
    role: str
    state: int
    claim_pos: int | None
    cursor: int
    messages: int
    bytes: int
    missed: int
    pidns: int = 0  # the holder's PID namespace (0: not known)
    orphan: bool = False  # a durable subscription held for a dead process


class AttachTable:
    """The attach table of one mapped region.

    ``buf`` is the region's writable mapping; ``name`` only names the region
    in errors. Walks (:meth:`entries`, :meth:`alloc`, ...) read the slot count
    from the header each time and check it against the mapping.
    """

    __slots__ = ("_buf", "_name")

    def __init__(self, buf: mmap.mmap, name: str = "") -> None:
        self._buf = buf
        self._name = name

    # ------------------------------------------------------------ size --
    @property
    def count(self) -> int:
        """Entries in the table (the header's slot count, checked)."""
        n = int(struct.unpack_from("<I", self._buf, L.HDR_SLOT_COUNT)[0])
        if n > L.MAX_SLOTS or L.slot_offset(n) > len(self._buf):
            # Overwritten after it was validated: walking it would leave the segment.
            raise CorruptRegion(f"region {self._name!r} has {n} attach slots: corrupt header")
        return n

    @property
    def used(self) -> int:
        """How many slots a walk looks at: those ever taken (``slot_high``),
        at most :attr:`count`. Every slot past it is free and untouched."""
        return min(self.count, int(_core.load(self._buf, L.HDR_SLOT_HIGH)))

    # -------------------------------------------------- take and give --
    @property
    def high(self) -> int:
        """The header's ``slot_high`` as stored: slots ever taken."""
        return int(_core.load(self._buf, L.HDR_SLOT_HIGH))

    def alloc(self, role: int, pid: int, start: int, ns: int,
              limit: int = L.MAX_SLOTS) -> int | None:
        """Take a free slot below ``limit`` for process ``pid`` (started at
        ``start``, in PID namespace ``ns``) in ``role``; None if every one is
        taken. The caller makes sure the pages of the slots below ``limit``
        are allocated."""
        buf = self._buf
        _ = self.count  # CorruptRegion for a count the mapping cannot hold
        i = _core.slot_take(buf, pid, limit)
        if i is not None:
            so = L.slot_offset(i)
            _core.store(buf, so + L.SLOT_PIDNS, ns)
            _core.store(buf, so + L.SLOT_START_TIME, start)
            _core.store32(buf, so + L.SLOT_ROLE, role)
            _core.store(buf, so + L.SLOT_CLAIM_POS, L.CLAIM_NONE)
            for off in _COUNTS:
                _core.store(buf, so + off, 0)
            state = L.SLOT_ACTIVE if role != L.ROLE_CONSUMER else L.SLOT_CLOSING
            _core.store32(buf, so + L.SLOT_STATE, state)
            return i
        return None

    def lend(self, slot: int, role: int) -> None:
        """Turn this process's channel slot ``slot`` (``ROLE_ATTACH``) into
        an endpoint's of ``role``: a process that opens a channel and makes
        one endpoint holds one slot, not two. Its counts are zero already
        (:meth:`alloc`); a consumer's state is closing until it joins, set
        before the role so that no walk sees an active consumer early."""
        buf = self._buf
        so = L.slot_offset(slot)
        _core.store(buf, so + L.SLOT_CLAIM_POS, L.CLAIM_NONE)
        if role == L.ROLE_CONSUMER:
            _core.store32(buf, so + L.SLOT_STATE, L.SLOT_CLOSING)
        _core.store32(buf, so + L.SLOT_ROLE, role)

    def give_back(self, slot: int) -> None:
        """The endpoint that was lent ``slot`` is closed: its counts go to
        the header totals, as :meth:`free` does, and the slot is the
        channel's again (``ROLE_ATTACH``)."""
        buf = self._buf
        so = L.slot_offset(slot)
        self._fold(so)
        _core.store32(buf, so + L.SLOT_ROLE, L.ROLE_ATTACH)
        _core.store(buf, so + L.SLOT_CLAIM_POS, L.CLAIM_NONE)
        for off in _COUNTS:
            _core.store(buf, so + off, 0)
        _core.store32(buf, so + L.SLOT_STATE, L.SLOT_ACTIVE)

    def _fold(self, so: int) -> None:
        buf = self._buf
        role = _core.load32(buf, so + L.SLOT_ROLE)
        if role in (L.ROLE_PRODUCER, L.ROLE_CONSUMER):
            msgs, nbytes = (L.OFF_STATS_IN_MSGS, L.OFF_STATS_IN_BYTES) \
                if role == L.ROLE_PRODUCER else (L.OFF_STATS_OUT_MSGS, L.OFF_STATS_OUT_BYTES)
            _core.fetch_add(buf, msgs, _core.load(buf, so + L.SLOT_MESSAGES))
            _core.fetch_add(buf, nbytes, _core.load(buf, so + L.SLOT_BYTES))

    def free(self, slot: int) -> None:
        """Give slot ``slot`` back; its endpoint's counts go to the header
        totals (``shmring ls`` still shows them)."""
        buf = self._buf
        so = L.slot_offset(slot)
        self._fold(so)
        _core.store32(buf, so + L.SLOT_STATE, L.SLOT_FREE)
        _core.store32(buf, so + L.SLOT_ROLE, 0)
        # Start time 0 marks a slot being taken (alloc sets it right after
        # winning the pid word): liveness checks leave such a slot alone.
        _core.store(buf, so + L.SLOT_START_TIME, 0)
        _core.store(buf, so + L.SLOT_PIDNS, 0)
        _core.store(buf, so + L.SLOT_PID, 0)

    def recover(self, slot: int, pid: int, *,
                find_region: Callable[[int], WriteableBuffer | None] | None = None,
                force: bool = False) -> bool:
        """Recover slot ``slot`` of dead process ``pid`` (``_core.recover_slot``:
        its claim, taken records, cursor and exclusive roles), then free it.
        Exactly one caller wins (CAS of the pid word to ``pid | RECOVERING``);
        True if this call did it.

        A pipeline worker's slots are linked (csrc/ring/link.c): recovering
        its input slot reads the region its outputs went to, which
        ``find_region(region_id)`` maps (None if it cannot); a producer slot
        whose linked claim waits for that (:meth:`link_pending`) is left
        alone (False) unless ``force`` (then the input's slot is told the
        claim was not committed, and the claim is padded)."""
        buf = self._buf
        so = L.slot_offset(slot)
        if not force and self.link_pending(slot):
            return False
        if not _core.cas(buf, so + L.SLOT_PID, pid, pid | RECOVERING):
            return False
        out = None
        if find_region is not None and (self.links_input(slot) or self.link_pending(slot)):
            # An input slot: the region its outputs went to; a producer's
            # (forced): the region of the input.
            out = find_region(int(_core.load(buf, so + L.SLOT_LINK_REGION)))
        done = _core.recover_slot(buf, slot, out, force)
        if done == _core.RECOVER_DEFERRED:
            _core.cas(buf, so + L.SLOT_PID, pid | RECOVERING, pid)
            return False
        if done == _core.RECOVER_ORPHANED:
            # A durable subscription within its hold: kept, cursor and all.
            _core.store(buf, so + L.SLOT_PID,
                        RECOVERING | ORPHAN | (pid & L.SLOT_ORPHAN_PID))
            return True
        self.free(slot)
        return True

    # ------------------------------------------- durable subscriptions --
    def make_durable(self, slot: int, tag: int, hold_ns: int) -> None:
        """Make this process's consumer slot ``slot`` a durable subscription
        with ``tag``, held ``hold_ns`` nanoseconds after its holder dies
        (before it joins: layout.h, DURABLE)."""
        so = L.slot_offset(slot)
        _core.store(self._buf, so + L.SLOT_DURABLE_TAG, tag)
        _core.store(self._buf, so + L.SLOT_DURABLE_UNTIL, 0)
        _core.store(self._buf, so + L.SLOT_DURABLE_HOLD, hold_ns)

    def durable_hold(self, slot: int) -> int:
        """The hold (ns) of durable subscription ``slot``; 0 if it is not one."""
        so = L.slot_offset(slot)
        if _core.load32(self._buf, so + L.SLOT_ROLE) != L.ROLE_CONSUMER:
            return 0
        return int(_core.load(self._buf, so + L.SLOT_DURABLE_HOLD))

    def orphan(self, slot: int, pid: int) -> None:
        """This process (``pid``) lets go of its durable subscription
        ``slot`` without ending it: an orphan from now, held for its hold,
        as if ``pid`` had died (its endpoint is closed already)."""
        buf = self._buf
        so = L.slot_offset(slot)
        hold = int(_core.load(buf, so + L.SLOT_DURABLE_HOLD))
        _core.store(buf, so + L.SLOT_DURABLE_UNTIL, time.monotonic_ns() + hold)
        if not _core.cas(buf, so + L.SLOT_PID, pid,
                         RECOVERING | ORPHAN | (pid & L.SLOT_ORPHAN_PID)):
            raise CorruptRegion(f"slot {slot} of region {self._name!r} is not this process's")

    def tagged(self, tag: int) -> list[tuple[int, int]]:
        """(slot, pid word) of every taken durable consumer slot with
        ``tag``: held by a process, being recovered, or an orphan."""
        buf = self._buf
        out = []
        for i in range(self.used):
            so = L.slot_offset(i)
            word = int(_core.load(buf, so + L.SLOT_PID))
            if (word and _core.load32(buf, so + L.SLOT_ROLE) == L.ROLE_CONSUMER
                    and _core.load(buf, so + L.SLOT_DURABLE_HOLD)
                    and _core.load(buf, so + L.SLOT_DURABLE_TAG) == tag):
                out.append((i, word))
        return out

    def orphans(self) -> list[tuple[int, int, int, int]]:
        """(slot, pid word, tag, expiry in CLOCK_MONOTONIC ns) of every
        orphan: a durable subscription held for a dead process."""
        buf = self._buf
        out = []
        for i in range(self.used):
            so = L.slot_offset(i)
            word = int(_core.load(buf, so + L.SLOT_PID))
            if word & ORPHAN and word & RECOVERING:
                out.append((i, word, int(_core.load(buf, so + L.SLOT_DURABLE_TAG)),
                            int(_core.load(buf, so + L.SLOT_DURABLE_UNTIL))))
        return out

    def adopt(self, slot: int, word: int, pid: int, start: int, ns: int) -> bool:
        """Take orphan ``slot`` (pid word ``word`` as read) for process
        ``pid`` (started at ``start``, in PID namespace ``ns``); its cursor
        and counts are kept. False if someone else took it first."""
        buf = self._buf
        so = L.slot_offset(slot)
        if not word & ORPHAN or not _core.cas(buf, so + L.SLOT_PID, word, RECOVERING | pid):
            return False
        # Walks skip it until the pid word is plain again: its start time and
        # namespace are the dead holder's until then.
        _core.store(buf, so + L.SLOT_PIDNS, ns)
        _core.store(buf, so + L.SLOT_START_TIME, start)
        _core.store(buf, so + L.SLOT_DURABLE_UNTIL, 0)
        _core.store(buf, so + L.SLOT_PID, pid)
        return True

    def expire(self, slot: int, word: int) -> bool:
        """Free orphan ``slot`` (pid word ``word`` as read), whose hold the
        caller found passed: recovered as any dead slot (it gates no more),
        then freed. False if it was adopted (or expired) meanwhile."""
        buf = self._buf
        so = L.slot_offset(slot)
        dead = RECOVERING | (word & L.SLOT_ORPHAN_PID)
        if not word & ORPHAN or not _core.cas(buf, so + L.SLOT_PID, word, dead):
            return False
        _core.recover_slot(buf, slot, None, True)  # forced: not held again
        self.free(slot)
        return True

    def link_pending(self, slot: int) -> bool:
        """True if ``slot`` is a producer's whose linked claim waits for the
        recovery of the input it came from (csrc/ring/link.c)."""
        so = L.slot_offset(slot)
        return (_core.load32(self._buf, so + L.SLOT_ROLE) == L.ROLE_PRODUCER
                and _core.load(self._buf, so + L.SLOT_LINK_IN) != 0)

    def links_input(self, slot: int) -> bool:
        """True if ``slot`` is a consumer's passing an input on by linked
        commits (its recovery needs the output region)."""
        so = L.slot_offset(slot)
        return (_core.load32(self._buf, so + L.SLOT_ROLE) == L.ROLE_CONSUMER
                and _core.load(self._buf, so + L.SLOT_LINK_IN) != 0)

    def set_state(self, slot: int, state: int) -> None:
        """Store ``state`` (``L.SLOT_ACTIVE``/``SLOT_CLOSING``) in ``slot``:
        a broadcast consumer gates the producer only while active."""
        _core.store32(self._buf, L.slot_offset(slot) + L.SLOT_STATE, state)

    # ---------------------------------------------- exclusive roles --
    def take_owner(self, slot: int, *, producer: bool) -> bool:
        """Make ``slot`` the owner of the exclusive producer (or consumer)
        role if nobody has it."""
        return bool(_core.cas(self._buf, _owner_word(producer), 0, slot + 1))

    def owned(self, *, producer: bool) -> bool:
        """True if some endpoint holds the exclusive producer (or consumer)
        role now (one load: cheap enough for a check before every send)."""
        return bool(_core.load(self._buf, _owner_word(producer)))

    def owner_pid(self, *, producer: bool) -> int | None:
        """The pid holding the exclusive producer (or consumer) role, or
        None if nobody does (a snapshot: for error messages)."""
        return self.owner(producer=producer)[0]

    def owner(self, *, producer: bool) -> tuple[int | None, int]:
        """(pid, PID namespace) of the holder of the exclusive producer (or
        consumer) role; (None, 0) if nobody holds it (a snapshot: for error
        messages; the pid is as its holder sees itself)."""
        word = int(_core.load(self._buf, _owner_word(producer)))
        if word == 0 or word > self.count:
            return None, 0
        pid = self.pid(word - 1) & ~RECOVERING
        return (pid or None), self.pidns(word - 1) if pid else 0

    def release_owner(self, slot: int, *, producer: bool) -> None:
        """Give the exclusive producer (or consumer) role back, if ``slot``
        holds it."""
        _core.cas(self._buf, _owner_word(producer), slot + 1, 0)

    # ------------------------------------------------------- reading --
    def pid(self, slot: int) -> int:
        """The pid word of ``slot`` as stored (0 free; may carry RECOVERING)."""
        return int(_core.load(self._buf, L.slot_offset(slot) + L.SLOT_PID))

    def start_time(self, slot: int) -> int:
        """The start time its holder stored in ``slot`` (0: being taken)."""
        return int(_core.load(self._buf, L.slot_offset(slot) + L.SLOT_START_TIME))

    def pidns(self, slot: int) -> int:
        """The PID namespace its holder stored in ``slot`` (0: not known)."""
        return int(_core.load(self._buf, L.slot_offset(slot) + L.SLOT_PIDNS))

    def entries(self) -> Iterator[tuple[int, int, int, int]]:
        """(slot, pid, start time, PID namespace) of every taken slot not
        being recovered. The start time is read after the pid (0: being
        taken right now), the namespace after the start time (0: not known
        yet, only while the start time is 0). The count is read by this call
        (CorruptRegion here, not mid-walk); each slot when the walk reaches it."""
        return self._entries(self.used)

    def _entries(self, count: int) -> Iterator[tuple[int, int, int, int]]:
        buf = self._buf
        for i in range(count):
            so = L.slot_offset(i)
            pid = _core.load(buf, so + L.SLOT_PID)
            if pid == 0 or pid & RECOVERING:
                continue
            started = _core.load(buf, so + L.SLOT_START_TIME)
            yield i, pid, started, _core.load(buf, so + L.SLOT_PIDNS)

    def endpoints(self, role: int) -> Iterator[tuple[int, int, int]]:
        """(pid, start time, PID namespace) of every endpoint slot of
        ``role`` taken now, a consumer only once it has joined the ring,
        untethered ones too (dead processes included: the caller tells them
        apart)."""
        buf = self._buf
        for i, pid, started, ns in self.entries():
            so = L.slot_offset(i)
            if _core.load32(buf, so + L.SLOT_ROLE) != role:
                continue
            if role == L.ROLE_CONSUMER and _core.load32(buf, so + L.SLOT_STATE) not in _JOINED:
                continue
            yield pid, started, ns

    def slots_of(self, pid: int, start: int, ns: int) -> Iterator[int]:
        """Every slot held by process ``pid`` started at ``start`` in PID
        namespace ``ns`` (0: any; a slot whose namespace is not stored yet
        matches every ``ns``). Found by a scan in C (``_core.slots_of``)."""
        buf = self._buf
        _ = self.count  # CorruptRegion for a count the mapping cannot hold
        for i in _core.slots_of(buf, pid, start):
            held = _core.load(buf, L.slot_offset(i) + L.SLOT_PIDNS)
            if ns and held and held != ns:
                continue
            yield i

    def producer_claims(self) -> Iterator[tuple[int, int, int]]:
        """(slot, pid word, claim position) of every producer slot with a
        claim in flight (what a claim watch compares between its looks)."""
        buf = self._buf
        for i in range(self.used):
            so = L.slot_offset(i)
            pid = _core.load(buf, so + L.SLOT_PID)
            if not pid or _core.load32(buf, so + L.SLOT_ROLE) != L.ROLE_PRODUCER:
                continue
            pos = _core.load(buf, so + L.SLOT_CLAIM_POS)
            if pos == L.CLAIM_NONE:
                continue
            yield i, pid, pos

    def holder(self, slot: int) -> tuple[int, int, int, int, int]:
        """(pid, start time, messages, link_in, link_region) of ``slot``:
        who holds a record a lease watch sees held (compared between its
        looks), and the linked commit it is in (a pipeline worker's)."""
        buf = self._buf
        so = L.slot_offset(slot)
        return (int(_core.load(buf, so + L.SLOT_PID)) & ~L.SLOT_RECOVERING,
                int(_core.load(buf, so + L.SLOT_START_TIME)),
                int(_core.load(buf, so + L.SLOT_MESSAGES)),
                int(_core.load(buf, so + L.SLOT_LINK_IN)),
                int(_core.load(buf, so + L.SLOT_LINK_REGION)))

    def snapshot(self) -> list[SlotInfo]:
        """Every taken slot, as read now (a slot being recovered included,
        with its pid)."""
        buf = self._buf
        out = []
        for i in range(self.used):
            so = L.slot_offset(i)
            pid = _core.load(buf, so + L.SLOT_PID)
            if pid == 0:
                continue
            claim = _core.load(buf, so + L.SLOT_CLAIM_POS)
            orphan = bool(pid & ORPHAN and pid & RECOVERING)
            out.append(SlotInfo(
                index=i,
                pid=pid & L.SLOT_ORPHAN_PID if orphan else pid & ~RECOVERING,
                start_time=_core.load(buf, so + L.SLOT_START_TIME),
                role=L.ROLE_NAMES.get(_core.load32(buf, so + L.SLOT_ROLE), "?"),
                state=_core.load32(buf, so + L.SLOT_STATE),
                claim_pos=None if claim == L.CLAIM_NONE else claim,
                cursor=_core.load(buf, so + L.SLOT_CURSOR),
                messages=_core.load(buf, so + L.SLOT_MESSAGES),
                bytes=_core.load(buf, so + L.SLOT_BYTES),
                missed=_core.load(buf, so + L.SLOT_MISSED),
                pidns=_core.load(buf, so + L.SLOT_PIDNS),
                orphan=orphan,
            ))
        return out
