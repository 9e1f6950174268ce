r"""The byte layout of a metrics region: one owner for every offset.

A metrics region is a channel (a persistent ``spsc`` one, so that it gets
the lifecycle, the listing and the permissions of every other region) whose
ring bytes are never used as a ring: they hold, as 64-bit words::

    ring bytes (HDR_DATA_OFFSET of the region)
    +--------------------------------------------------------------+
    | HEAD   64 words: magic, sizes, allocation and fold words        |
    +--------------------------------------------------------------+
    | ENTRIES x ENTRY_BYTES: the name table, open addressing by a     |
    |   hash of the key; each entry:                                  |
    |   [state | kind | value base | value words | text length |     |
    |    text (JSON: name, help, label names, buckets / label values)]|
    +--------------------------------------------------------------+
    | RETIRED copy 0: VALUES words  \ totals of folded (dead)         |
    | RETIRED copy 1: VALUES words  / processes; FOLD_SEQ & 1 is live |
    +--------------------------------------------------------------+
    | SLABS x (SLAB_HEAD + VALUES) words, each on its own lines:      |
    |   [owner | pad ... | value words]                               |
    +--------------------------------------------------------------+

Every series (one metric and one set of label values) owns the same run of
value words in every slab and in both retired copies: a counter one word
(an unsigned 64-bit count), a gauge one (a double), a histogram one count
per bucket, the ``+Inf`` bucket included, then its sum (a double).

An *owner word* names a process: ``start << 38 | tag << 22 | pid`` (pids
are below 2**22 on Linux), so that a pid reused by another process never
passes for the one that took the word, and one compare-exchange takes it.
``start`` is its start time in clock ticks since boot modulo 2**25 (3.9 days
at 100 Hz: a new process with the pid of a dead owner would have to start
in the same tick of a later lap to pass for it), and ``tag`` names its PID
namespace (``ns_tag``: 1 + the namespace's inode modulo 65535; 0 unknown):
the pid means something only there. The inodes of the namespaces alive at
one time are allocated close together (the kernel reuses the lowest free
ones), so two of them get the same tag only if more than 65535 namespaces
of any kind live at once.
"""

from __future__ import annotations

from typing import Final

MAGIC: Final = 0x3152_5445_4D53_4853  # "SHSMETR1" read little-endian
VERSION: Final = 2  # 2: owner words carry a PID namespace tag
WORD: Final = 8
LINE: Final = 128  # bytes: slabs start on lines of their own

# Header words (indexes, times WORD for bytes from the ring's start).
H_MAGIC: Final = 0  # stored last by the creator (release): the layout is ready
H_VERSION: Final = 1
H_ENTRIES: Final = 2
H_ENTRY_BYTES: Final = 3
H_SLABS: Final = 4
H_VALUES: Final = 5
H_NEXT_VALUE: Final = 6  # value words handed out (fetch_add)
H_FOLD_LOCK: Final = 16  # owner word of the process folding now (0: nobody)
H_FOLD_SEQ: Final = 17  # folds committed; retired copy FOLD_SEQ & 1 is the live one
H_COPY_SLAB: Final = (18, 19)  # per copy: slab whose fold made it ...
H_COPY_OWNER: Final = (20, 21)  # ... and that slab's owner then
H_DAEMON: Final = 32  # owner word of the daemon serving the region (0: none)
H_DAEMON_PORT: Final = 33  # its HTTP port
H_DAEMON_SINCE: Final = 34  # when it took the region, ns since the epoch
HEAD_WORDS: Final = 64

# Entry: header words, then text.
E_STATE: Final = 0  # FREE, WRITING | owner, READY
E_KIND: Final = 1
E_VBASE: Final = 2  # first value word of a series
E_VWORDS: Final = 3  # its number of value words
E_TEXT_LEN: Final = 4
E_TEXT: Final = 5 * WORD  # byte offset of the text in the entry

FREE: Final = 0
READY: Final = 1
WRITING: Final = 1 << 63  # | owner word of the writer

# Entry kinds: a family (a metric's name, help, label names, buckets) or one
# series of it (its label values and value words).
K_COUNTER: Final = 1
K_GAUGE: Final = 2
K_HISTOGRAM: Final = 3
FAMILY: Final = 16  # added to a kind: the family entry
KIND_NAMES: Final = {K_COUNTER: "counter", K_GAUGE: "gauge", K_HISTOGRAM: "histogram"}

# Slab words.
S_OWNER: Final = 0
SLAB_HEAD: Final = LINE // WORD

PID_BITS: Final = 22
PID_MASK: Final = (1 << PID_BITS) - 1
NS_BITS: Final = 16
NS_SHIFT: Final = PID_BITS
START_SHIFT: Final = PID_BITS + NS_BITS
START_LIMIT: Final = 1 << 25  # START_SHIFT + 25 = 63: WRITING stays free

# Defaults of a new region.
DEFAULT_ENTRIES: Final = 1024
DEFAULT_ENTRY_BYTES: Final = 512
DEFAULT_SLABS: Final = 256
DEFAULT_VALUES: Final = 1024


def ns_tag(ns: int) -> int:
    """The tag of PID namespace ``ns`` (its inode) in owner words; 0 for 0."""
    return ns % ((1 << NS_BITS) - 1) + 1 if ns else 0


def owner_word(pid: int, start: int, ns: int) -> int:
    """The owner word of process ``pid`` started at ``start`` (clock ticks)
    in PID namespace ``ns`` (its inode)."""
    return (start % START_LIMIT) << START_SHIFT | ns_tag(ns) << NS_SHIFT | pid


def owner_pid(word: int) -> int:
    """The pid of an owner word."""
    return word & PID_MASK


def owner_start(word: int) -> int:
    """The start time of an owner word (modulo START_LIMIT)."""
    return (word & ~WRITING) >> START_SHIFT


def owner_ns_tag(word: int) -> int:
    """The PID namespace tag of an owner word (0: not known)."""
    return word >> NS_SHIFT & ((1 << NS_BITS) - 1)


class Geometry:
    """Where each part lies, in bytes from the start of the mapping, for a
    region of ``entries`` entries of ``entry_bytes``, ``slabs`` slabs and
    ``values`` value words per slab; ``base`` is the ring's offset."""

    __slots__ = (
        "base",
        "entries",
        "entry_bytes",
        "retired",
        "size",
        "slab0",
        "slab_bytes",
        "slabs",
        "table",
        "values",
    )

    def __init__(self, base: int, entries: int, entry_bytes: int, slabs: int,
                 values: int) -> None:
        self.base = base
        self.entries = entries
        self.entry_bytes = entry_bytes
        self.slabs = slabs
        self.values = values
        self.table = base + HEAD_WORDS * WORD
        self.retired = self.table + entries * entry_bytes
        self.retired = -(-self.retired // LINE) * LINE
        self.slab_bytes = -(-(SLAB_HEAD + values) * WORD // LINE) * LINE
        self.slab0 = self.retired + -(-2 * values * WORD // LINE) * LINE
        #: Bytes from ``base`` to the end of the last slab.
        self.size = self.slab0 + slabs * self.slab_bytes - base

    def head(self, word: int) -> int:
        """Byte offset of header word ``word``."""
        return self.base + word * WORD

    def entry(self, index: int) -> int:
        """Byte offset of entry ``index``."""
        return self.table + index * self.entry_bytes

    def copy(self, which: int) -> int:
        """Byte offset of retired copy ``which`` (0 or 1)."""
        return self.retired + which * self.values * WORD

    def slab(self, index: int) -> int:
        """Byte offset of slab ``index`` (its owner word)."""
        return self.slab0 + index * self.slab_bytes

    def slab_values(self, index: int) -> int:
        """Byte offset of the first value word of slab ``index``."""
        return self.slab(index) + SLAB_HEAD * WORD
