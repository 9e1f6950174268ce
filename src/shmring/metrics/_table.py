"""The name table: which metrics and label sets exist, and which value
words each series owns. Shared by every process of the region.

Why it is built this way
------------------------
Entries are found by open addressing from a hash of their key (crc32, the
same in every process). Two processes declaring the same metric at once
walk the same probe sequence, so they meet at the first free entry of it:
one takes it by compare-exchange (``FREE`` to ``WRITING | owner``), writes
the entry, and publishes it with a release store of ``READY``; the other
waits there for ``READY`` and finds the same key. An entry is never freed
once ready (metrics live as long as the region), so a probe sequence never
gets a hole that would hide a key behind it. A writer that dies between its
compare-exchange and ``READY`` leaves ``WRITING | owner`` with a dead owner:
whoever meets it gives it back (compare-exchange to ``FREE``) and goes on.

A family entry holds a metric's kind, help, label names and buckets; a
series entry one set of label values and the first of its value words,
handed out once by a compare-exchange on the header's ``NEXT_VALUE``, so
that every slab and both retired copies keep that series at the same words.
A ready entry never changes: each process decodes it once and keeps it.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .. import _core
from .._errors import Broken, InvalidArgument
from . import _layout as M
from ._errors import MetricsFull
from ._owners import owner_alive

#: Seconds to wait for an entry another live process is writing.
WRITE_WAIT = 10.0


@dataclass(frozen=True)
class Entry:
    """A ready entry of the table: a family (``family`` True: ``labels``,
    ``help``, ``buckets``) or a series (``values``: its label values, and
    its value words ``vbase`` .. ``vbase + vwords``)."""

    index: int
    kind: int
    family: bool
    name: str
    help: str = ""
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    values: tuple[str, ...] = ()
    vbase: int = 0
    vwords: int = 0


def _key(family: bool, name: str, values: tuple[str, ...]) -> bytes:
    return json.dumps(["F" if family else "S", name, list(values)]).encode()


class Table:
    """The name table of one mapping ``buf`` laid out as ``geo``; ``me`` is
    this process's owner word (a callable: it changes after a fork)."""

    def __init__(self, buf: Any, geo: M.Geometry) -> None:
        self.buf = buf
        self.geo = geo
        self._ready: dict[int, Entry] = {}

    # ------------------------------------------------------------ reading --
    def _decode(self, index: int) -> Entry:
        off = self.geo.entry(index)
        words = memoryview(self.buf)[off:off + M.E_TEXT].cast("Q")
        kind, vbase, vwords, n = (int(words[M.E_KIND]), int(words[M.E_VBASE]),
                                  int(words[M.E_VWORDS]), int(words[M.E_TEXT_LEN]))
        words.release()
        if n > self.geo.entry_bytes - M.E_TEXT:
            raise Broken(f"metrics entry {index} says its text is {n} bytes: the region is "
                         "corrupt")
        doc = json.loads(bytes(self.buf[off + M.E_TEXT:off + M.E_TEXT + n]))
        fam = bool(kind & M.FAMILY)
        return Entry(index, kind & ~M.FAMILY, fam, doc["n"], doc.get("h", ""),
                     tuple(doc.get("l", ())), tuple(float(b) for b in doc.get("b", ())),
                     tuple(doc.get("v", ())), vbase, vwords)

    def get(self, index: int) -> Entry | None:
        """Entry ``index`` if it is ready, else None."""
        e = self._ready.get(index)
        if e is not None:
            return e
        # SYNC: acquire, pairs with the writer's release store of READY in add().
        if _core.load(self.buf, self.geo.entry(index) + M.E_STATE * M.WORD) != M.READY:
            return None
        e = self._ready[index] = self._decode(index)
        return e

    def ready(self) -> Iterator[Entry]:
        """Every ready entry, in table order."""
        for i in range(self.geo.entries):
            e = self.get(i)
            if e is not None:
                yield e

    # ------------------------------------------------------------ writing --
    def find_or_add(self, me: int, *, kind: int, family: bool, name: str, help: str = "",
                    labels: tuple[str, ...] = (), buckets: tuple[float, ...] = (),
                    values: tuple[str, ...] = (), vwords: int = 0) -> Entry:
        """The entry of (``family``, ``name``, ``values``): the existing one
        (whatever it holds: the caller compares), or a new one holding the
        rest, written by this process (owner word ``me``)."""
        doc: dict[str, Any] = {"n": name}
        if family:
            doc.update(h=help, l=list(labels), b=list(buckets))
        else:
            doc["v"] = list(values)
        text = json.dumps(doc, separators=(",", ":")).encode()
        room = self.geo.entry_bytes - M.E_TEXT
        if len(text) > room:
            raise InvalidArgument(
                f"metric {name!r}: its name, help and labels take {len(text)} bytes encoded, "
                f"more than the {room} an entry holds (shorten the help or the label values)")
        n = self.geo.entries
        start = zlib.crc32(_key(family, name, values)) % n
        for i in range(n):
            index = (start + i) % n
            e = self._probe(index, me, kind | (M.FAMILY if family else 0), text, vwords)
            if e is not None and e.family == family and e.name == name and e.values == values:
                return e
        raise MetricsFull(
            f"the metrics table is full: all {n} entries (metrics and label sets) are taken; "
            "use fewer label values or a region made with more entries", "entries")

    def _probe(self, index: int, me: int, kind: int, text: bytes, vwords: int) -> Entry | None:
        """Entry ``index`` once it is ready: the one found there, or ours if
        it was free (then written with ``kind``, ``text`` and ``vwords``)."""
        state_off = self.geo.entry(index) + M.E_STATE * M.WORD
        deadline = time.monotonic() + WRITE_WAIT
        while True:
            e = self.get(index)
            if e is not None:
                return e
            state = _core.load(self.buf, state_off)
            if state == M.FREE:
                if _core.cas(self.buf, state_off, M.FREE, M.WRITING | me):
                    return self._write(index, kind, text, vwords)
                continue
            writer = state & ~M.WRITING
            if not owner_alive(writer):
                # Its writer died before READY: give it back (once, whoever wins).
                _core.cas(self.buf, state_off, state, M.FREE)
                continue
            if time.monotonic() > deadline:
                raise Broken(f"metrics entry {index} has been written by pid "
                             f"{M.owner_pid(writer)} for {WRITE_WAIT:g} s without finishing")
            time.sleep(0.0005)

    def _write(self, index: int, kind: int, text: bytes, vwords: int) -> Entry:
        off = self.geo.entry(index)
        try:
            vbase = self._alloc_values(vwords) if vwords else 0
        except BaseException:
            _core.store(self.buf, off + M.E_STATE * M.WORD, M.FREE)
            raise
        self.buf[off + M.E_TEXT:off + M.E_TEXT + len(text)] = text
        _core.store(self.buf, off + M.E_KIND * M.WORD, kind)
        _core.store(self.buf, off + M.E_VBASE * M.WORD, vbase)
        _core.store(self.buf, off + M.E_VWORDS * M.WORD, vwords)
        _core.store(self.buf, off + M.E_TEXT_LEN * M.WORD, len(text))
        # SYNC: release, pairs with the acquire load of READY in get(): the
        # words and the text above are visible before the entry is.
        _core.store(self.buf, off + M.E_STATE * M.WORD, M.READY)
        e = self.get(index)
        assert e is not None
        return e

    def _alloc_values(self, n: int) -> int:
        at = self.geo.head(M.H_NEXT_VALUE)
        while True:
            cur = _core.load(self.buf, at)
            if cur + n > self.geo.values:
                raise MetricsFull(
                    f"the metrics region's value words are all taken ({cur} of "
                    f"{self.geo.values} used, {n} more needed): use fewer label values or "
                    "histogram buckets, or a region made with more values", "values")
            if _core.cas(self.buf, at, cur, cur + n):
                return int(cur)

    def values_used(self) -> int:
        """Value words handed out so far."""
        return int(_core.load(self.buf, self.geo.head(M.H_NEXT_VALUE)))
