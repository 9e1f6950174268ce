"""The byte layout of a region, as the extension defines it.

``csrc/layout.h`` is the single source of truth, with the diagram of every
byte; this module only gives its constants typed Python names, read from the
compiled extension, so no offset is ever written twice.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from . import _core

_L = _core.LAYOUT

SHMRING_MAGIC: Final[int] = _L["SHMRING_MAGIC"]
LAYOUT_VERSION: Final[int] = _L["LAYOUT_VERSION"]
LINE: Final[int] = _L["LINE"]
HDR_MAGIC: Final[int] = _L["HDR_MAGIC"]
HDR_VERSION: Final[int] = _L["HDR_VERSION"]
HDR_PATTERN: Final[int] = _L["HDR_PATTERN"]
HDR_TOTAL_SIZE: Final[int] = _L["HDR_TOTAL_SIZE"]
HDR_CAPACITY: Final[int] = _L["HDR_CAPACITY"]
HDR_MAX_MESSAGE: Final[int] = _L["HDR_MAX_MESSAGE"]
HDR_SLOT_COUNT: Final[int] = _L["HDR_SLOT_COUNT"]
HDR_FLAGS: Final[int] = _L["HDR_FLAGS"]
HDR_CREATED_NS: Final[int] = _L["HDR_CREATED_NS"]
HDR_DATA_OFFSET: Final[int] = _L["HDR_DATA_OFFSET"]
HDR_CREATOR_PID: Final[int] = _L["HDR_CREATOR_PID"]
HDR_LEASE_MS: Final[int] = _L["HDR_LEASE_MS"]
LEASE_NEVER: Final[int] = _L["LEASE_NEVER"]
HDR_UNTETHER_NS: Final[int] = _L["HDR_UNTETHER_NS"]
HDR_SLOT_HIGH: Final[int] = _L["HDR_SLOT_HIGH"]
HDR_FEED_EPOCH: Final[int] = _L["HDR_FEED_EPOCH"]
HDR_FEED_SEQ: Final[int] = _L["HDR_FEED_SEQ"]
HDR_FEED_PENDING: Final[int] = _L["HDR_FEED_PENDING"]
HDR_FEED_MARK: Final[int] = _L["HDR_FEED_MARK"]
FEED_PEND: Final[int] = _L["FEED_PEND"]
FEED_NEW: Final[int] = _L["FEED_NEW"]
FEED_VOID: Final[int] = _L["FEED_VOID"]
FEED_FLAGS: Final[int] = _L["FEED_FLAGS"]
FEED_NOTE: Final[int] = _L["FEED_NOTE"]
OFF_TAIL: Final[int] = _L["OFF_TAIL"]
OFF_HEAD: Final[int] = _L["OFF_HEAD"]
OFF_READ_CLAIM: Final[int] = _L["OFF_READ_CLAIM"]
OFF_LATEST: Final[int] = _L["OFF_LATEST"]
OFF_INTENT: Final[int] = _L["OFF_INTENT"]
OFF_REDELIVER: Final[int] = _L["OFF_REDELIVER"]
OFF_DATA_FUTEX: Final[int] = _L["OFF_DATA_FUTEX"]
OFF_DATA_WAITERS: Final[int] = _L["OFF_DATA_WAITERS"]
OFF_SPACE_FUTEX: Final[int] = _L["OFF_SPACE_FUTEX"]
OFF_SPACE_WAITERS: Final[int] = _L["OFF_SPACE_WAITERS"]
OFF_EOS: Final[int] = _L["OFF_EOS"]
OFF_BROKEN: Final[int] = _L["OFF_BROKEN"]
OFF_PRODUCER_OWNER: Final[int] = _L["OFF_PRODUCER_OWNER"]
OFF_CONSUMER_OWNER: Final[int] = _L["OFF_CONSUMER_OWNER"]
OFF_MSGNO: Final[int] = _L["OFF_MSGNO"]
OFF_GATE_EPOCH: Final[int] = _L["OFF_GATE_EPOCH"]
OFF_STATS_IN_MSGS: Final[int] = _L["OFF_STATS_IN_MSGS"]
OFF_STATS_IN_BYTES: Final[int] = _L["OFF_STATS_IN_BYTES"]
OFF_STATS_OUT_MSGS: Final[int] = _L["OFF_STATS_OUT_MSGS"]
OFF_STATS_OUT_BYTES: Final[int] = _L["OFF_STATS_OUT_BYTES"]
REGION_HEADER_SIZE: Final[int] = _L["REGION_HEADER_SIZE"]
SLOTS_OFFSET: Final[int] = _L["SLOTS_OFFSET"]
SLOT_SIZE: Final[int] = _L["SLOT_SIZE"]
MAX_SLOTS: Final[int] = _L["MAX_SLOTS"]
SLOT_PID: Final[int] = _L["SLOT_PID"]
SLOT_START_TIME: Final[int] = _L["SLOT_START_TIME"]
SLOT_ROLE: Final[int] = _L["SLOT_ROLE"]
SLOT_STATE: Final[int] = _L["SLOT_STATE"]
SLOT_CLAIM_POS: Final[int] = _L["SLOT_CLAIM_POS"]
SLOT_CLAIM_LEN: Final[int] = _L["SLOT_CLAIM_LEN"]
SLOT_CURSOR: Final[int] = _L["SLOT_CURSOR"]
SLOT_MESSAGES: Final[int] = _L["SLOT_MESSAGES"]
SLOT_BYTES: Final[int] = _L["SLOT_BYTES"]
SLOT_MISSED: Final[int] = _L["SLOT_MISSED"]
SLOT_LAST_MSGNO: Final[int] = _L["SLOT_LAST_MSGNO"]
SLOT_LINK_IN: Final[int] = _L["SLOT_LINK_IN"]
SLOT_LINK_OUT: Final[int] = _L["SLOT_LINK_OUT"]
SLOT_LINK_REGION: Final[int] = _L["SLOT_LINK_REGION"]
SLOT_LINK_DONE: Final[int] = _L["SLOT_LINK_DONE"]
SLOT_LEASE: Final[int] = _L["SLOT_LEASE"]
LEASE_BUSY: Final[int] = _L["LEASE_BUSY"]
LEASE_COUNT_MASK: Final[int] = _L["LEASE_COUNT_MASK"]
SLOT_PIDNS: Final[int] = _L["SLOT_PIDNS"]
LINK_COUNT_MASK: Final[int] = _L["LINK_COUNT_MASK"]
LINK_SLOT_SHIFT: Final[int] = _L["LINK_SLOT_SHIFT"]
LINK_SLOT_MASK: Final[int] = _L["LINK_SLOT_MASK"]
LINK_COUNTED: Final[int] = _L["LINK_COUNTED"]
LINK_SINGLE: Final[int] = _L["LINK_SINGLE"]
LINK_COMPLETE: Final[int] = _L["LINK_COMPLETE"]
LINK_RESOLVING: Final[int] = _L["LINK_RESOLVING"]
LINK_HDR: Final[int] = _L["LINK_HDR"]
LINK_HDR_ITEM: Final[int] = _L["LINK_HDR_ITEM"]
LINK_HDR_ATTEMPTS: Final[int] = _L["LINK_HDR_ATTEMPTS"]
LINK_HDR_DONE: Final[int] = _L["LINK_HDR_DONE"]
CLAIM_NONE: Final[int] = _L["CLAIM_NONE"]
CLAIM_CONFIRMED: Final[int] = _L["CLAIM_CONFIRMED"]
PATTERN_SPSC: Final[int] = _L["PATTERN_SPSC"]
PATTERN_MPSC: Final[int] = _L["PATTERN_MPSC"]
PATTERN_MPMC: Final[int] = _L["PATTERN_MPMC"]
PATTERN_BROADCAST: Final[int] = _L["PATTERN_BROADCAST"]
FLAG_PERSISTENT: Final[int] = _L["FLAG_PERSISTENT"]
FLAG_LOSSY: Final[int] = _L["FLAG_LOSSY"]
ROLE_ATTACH: Final[int] = _L["ROLE_ATTACH"]
ROLE_PRODUCER: Final[int] = _L["ROLE_PRODUCER"]
ROLE_CONSUMER: Final[int] = _L["ROLE_CONSUMER"]
SLOT_FREE: Final[int] = _L["SLOT_FREE"]
SLOT_ACTIVE: Final[int] = _L["SLOT_ACTIVE"]
SLOT_CLOSING: Final[int] = _L["SLOT_CLOSING"]
SLOT_UNTETHERED: Final[int] = _L["SLOT_UNTETHERED"]
RECORD_HEADER: Final[int] = _L["RECORD_HEADER"]
RECORD_ALIGN: Final[int] = _L["RECORD_ALIGN"]
REC_MSG: Final[int] = _L["REC_MSG"]
REC_PAD: Final[int] = _L["REC_PAD"]
REC_REVOKED: Final[int] = _L["REC_REVOKED"]
OFF_QUAR_COUNT: Final[int] = _L["OFF_QUAR_COUNT"]
OFF_QUAR_ENTRIES: Final[int] = _L["OFF_QUAR_ENTRIES"]
QUAR_ENTRY: Final[int] = _L["QUAR_ENTRY"]
QUAR_ENTRIES: Final[int] = _L["QUAR_ENTRIES"]
QUAR_POS: Final[int] = _L["QUAR_POS"]
QUAR_LEN: Final[int] = _L["QUAR_LEN"]
QUAR_FLAGS: Final[int] = _L["QUAR_FLAGS"]
QUAR_DONE: Final[int] = _L["QUAR_DONE"]
QUAR_OWNER_SHIFT: Final[int] = _L["QUAR_OWNER_SHIFT"]
QUAR_OWNER_MASK: Final[int] = _L["QUAR_OWNER_MASK"]
SLOT_RECOVERING: Final[int] = _L["SLOT_RECOVERING"]
SLOT_ORPHAN: Final[int] = _L["SLOT_ORPHAN"]
SLOT_ORPHAN_PID: Final[int] = _L["SLOT_ORPHAN_PID"]
SLOT_DURABLE_TAG: Final[int] = _L["SLOT_DURABLE_TAG"]
SLOT_DURABLE_HOLD: Final[int] = _L["SLOT_DURABLE_HOLD"]
SLOT_DURABLE_UNTIL: Final[int] = _L["SLOT_DURABLE_UNTIL"]
REC_WORD: Final[int] = _L["REC_WORD"]
REC_SEQ: Final[int] = _L["REC_SEQ"]
REC_LEN_MASK: Final[int] = _L["REC_LEN_MASK"]
REC_TYPE_SHIFT: Final[int] = _L["REC_TYPE_SHIFT"]
REC_TYPE_MASK: Final[int] = _L["REC_TYPE_MASK"]
REC_STATE_SHIFT: Final[int] = _L["REC_STATE_SHIFT"]
REC_STATE_MASK: Final[int] = _L["REC_STATE_MASK"]
REC_OWNER_SHIFT: Final[int] = _L["REC_OWNER_SHIFT"]
REC_OWNER_MASK: Final[int] = _L["REC_OWNER_MASK"]
REC_LAP_SHIFT: Final[int] = _L["REC_LAP_SHIFT"]
REC_LAP_MASK: Final[int] = _L["REC_LAP_MASK"]
ST_READY: Final[int] = _L["ST_READY"]
ST_TAKEN: Final[int] = _L["ST_TAKEN"]
ST_DONE: Final[int] = _L["ST_DONE"]
ST_SWEEP: Final[int] = _L["ST_SWEEP"]
ST_LEASED: Final[int] = _L["ST_LEASED"]
MIN_CAPACITY: Final[int] = _L["MIN_CAPACITY"]
MAX_CAPACITY: Final[int] = _L["MAX_CAPACITY"]
PAGE_ALIGN: Final[int] = _L["PAGE_ALIGN"]
# The queue control block (shmring.Queue's second region).
CTL_PUTS: Final[int] = _L["CTL_PUTS"]
CTL_GETS: Final[int] = _L["CTL_GETS"]
CTL_NOTFULL_SEQ: Final[int] = _L["CTL_NOTFULL_SEQ"]
CTL_NOTFULL_WAITERS: Final[int] = _L["CTL_NOTFULL_WAITERS"]
CTL_UNFINISHED: Final[int] = _L["CTL_UNFINISHED"]
CTL_JOIN_SEQ: Final[int] = _L["CTL_JOIN_SEQ"]
CTL_JOIN_WAITERS: Final[int] = _L["CTL_JOIN_WAITERS"]
CTL_MAXSIZE: Final[int] = _L["CTL_MAXSIZE"]
CTL_MAGIC: Final[int] = _L["CTL_MAGIC"]
CTL_BYTES: Final[int] = _L["CTL_BYTES"]
CTL_MAGIC_VALUE: Final[int] = _L["CTL_MAGIC_VALUE"]

PATTERNS: Final[dict[str, int]] = {
    "spsc": PATTERN_SPSC,
    "mpsc": PATTERN_MPSC,
    "mpmc": PATTERN_MPMC,
    "broadcast": PATTERN_BROADCAST,
}
PATTERN_NAMES: Final[dict[int, str]] = {v: k for k, v in PATTERNS.items()}
ROLE_NAMES: Final[dict[int, str]] = {
    ROLE_ATTACH: "attach",
    ROLE_PRODUCER: "producer",
    ROLE_CONSUMER: "consumer",
}


def slot_offset(slot: int) -> int:
    """Offset of attach slot ``slot`` from the start of the region."""
    return SLOTS_OFFSET + slot * SLOT_SIZE


def data_offset(slot_count: int) -> int:
    """Offset of the ring bytes for a region with ``slot_count`` slots."""
    end = SLOTS_OFFSET + slot_count * SLOT_SIZE
    return (end + PAGE_ALIGN - 1) // PAGE_ALIGN * PAGE_ALIGN


# ------------------------------------------------------------ pattern traits --
# What each ring pattern allows and promises, once: the code derives its
# pattern sets from this table, and the tests parametrise over it instead of
# restating which patterns take many producers, many consumers, and so on.


class PatternTraits(NamedTuple):
    """What one ring pattern allows and promises."""

    name: str
    """The pattern's name, as ``Channel.create(pattern=...)`` takes it."""
    code: int
    """The pattern's number in the region header (``HDR_PATTERN``)."""
    multi_producer: bool
    """Many producers may send at once (each takes an attach slot);
    otherwise one producer at a time holds the producer role."""
    multi_consumer: bool
    """Many consumers may receive at once; otherwise one consumer at a time
    holds the consumer role."""
    fan_out: bool
    """Every consumer sees every message; otherwise each message goes to one
    consumer."""
    can_be_lossy: bool
    """``lossy=True`` is accepted: the producer never waits for a slow
    consumer, which then misses (and counts) what was overwritten."""


TRAITS: Final[dict[str, PatternTraits]] = {
    t.name: t
    for t in (
        PatternTraits("spsc", PATTERNS["spsc"], multi_producer=False, multi_consumer=False,
                      fan_out=False, can_be_lossy=False),
        PatternTraits("mpsc", PATTERNS["mpsc"], multi_producer=True, multi_consumer=False,
                      fan_out=False, can_be_lossy=False),
        PatternTraits("mpmc", PATTERNS["mpmc"], multi_producer=True, multi_consumer=True,
                      fan_out=False, can_be_lossy=False),
        PatternTraits("broadcast", PATTERNS["broadcast"], multi_producer=False,
                      multi_consumer=True, fan_out=True, can_be_lossy=True),
    )
}
#: Pattern codes on which producers take attach slots, not the producer role.
MULTI_PRODUCER: Final[frozenset[int]] = frozenset(
    t.code for t in TRAITS.values() if t.multi_producer)
#: Pattern codes on which one consumer at a time holds the consumer role.
SINGLE_CONSUMER: Final[frozenset[int]] = frozenset(
    t.code for t in TRAITS.values() if not t.multi_consumer)
