"""Items in chunks (``source(iterable, chunksize=K)``): one record carries up
to K items, so the cost of a record (a take, a linked commit, a wake-up) is
paid once per chunk instead of once per item.

A COMPACT record is the common case, items at the top of their source item
with nothing else among them: its body is ``(ids, values)``, ``ids`` the
first item's source id (the others follow it) or a list of ids, one per
value. A source sends its chunks so, and map and (unordered) filter keep
them so, in one comprehension per chunk. Anything else is a CHUNK record,
whose body is one encoded list of *entries*, ``(tag, key, value)``:
``key`` is the item's ``(source id, *path)``, ``tag`` one of
VALUE (``value`` is the item), TOMBSTONE, END (``value``: the number of
outputs of a flat_map's input), ERROR and DEAD (``value``: a
:class:`~shmring._pipeline.item.Note`). A stage turns each VALUE entry into
its outputs and passes the others on; the parent reads notes wherever they
arrive (a sink sends them to the control channel).

Exactly once holds per chunk, as per item: on its first attempt a chunk's
outputs go out as *one* record (``single=2``: one output completes it), so
a kill anywhere repeats the whole chunk, nothing of it having gone out. A
chunk that comes back (its worker died) is done item by item: output ``j``
is entry ``j``'s outputs (maybe an empty list), so resume by count skips
the entries an earlier attempt finished, and once the chunk has killed its
workers ``max_redeliveries + 1`` times, the entry the last attempts died on
(``done``) is the one given up as dead, and the rest go on.
"""

from __future__ import annotations

import itertools
import time
import traceback
from collections.abc import Callable
from typing import Any, Protocol

from .._channel.endpoints import Consumer
from .._errors import MessageTooLarge
from . import board as B
from . import item as I
from .stage import StageSpec


class _Worker(Protocol):
    """What of a worker (worker.py) the chunk code uses."""

    stage: StageSpec
    ordered: bool
    state: Any
    words: memoryview
    base: int
    rx: Consumer
    j: int
    done: int

    @property
    def spec(self) -> Any: ...

    def out(self, kind: int, path: I.Path, obj: Any, last: bool,
            to_ctl: bool = False) -> None: ...

Entry = tuple[int, tuple[int, ...], Any]


def source_chunk(first: int, objs: list[Any]) -> tuple[bytes, Any]:
    """The record of source items ``first``, ``first + 1``, ...: as
    :func:`item.source_record` makes."""
    return I.source_record(first, (first, objs), kind=I.COMPACT)


def expand(compact: Any) -> list[Entry]:
    """The entries of a COMPACT body."""
    ids, values = compact
    if isinstance(ids, int):
        return [(I.VALUE, (ids + k,), v) for k, v in enumerate(values)]
    return [(I.VALUE, (i,), v) for i, v in zip(ids, values, strict=True)]


class ChunkRunner:
    """A worker's handling of CHUNK records (``_Worker.run`` hands them
    here)."""

    def __init__(self, w: _Worker, fn: Callable[..., Any]) -> None:
        self.w = w
        self.fn = fn
        self.kind = w.stage.kind
        self.sink = self.kind == "sink"
        self.ordered = w.ordered
        self.with_state = w.stage.init is not None
        self.traced = False
        # map and (unordered) filter run a first attempt's chunk in one
        # comprehension, timed as a whole: not with a per-item timeout.
        self.fast = w.stage.timeout is None and (
            self.kind in ("map", "sink") or (self.kind == "filter" and not self.ordered))

    def run(self, kind: int, body: Any, attempts: int, done: int, max_attempts: int) -> None:
        """Process one chunk (taken with ``single=2``)."""
        w = self.w
        self.traced = False  # a chunk's notes carry one traceback: the first
        if attempts == 1 and kind == I.COMPACT and self.fast and self.compact(body):
            return
        entries = expand(body) if kind == I.COMPACT else body
        if attempts == 1:
            per = [self.entry(e, True) for e in entries]
            try:
                self.send([o for outs in per for o in outs], True, False)
            except MessageTooLarge:
                self.split(per)
            return
        last = len(entries) - 1
        if done > last:
            w.rx._link_finish()
            return
        w.j = done  # outputs before it were sent by earlier attempts
        for j in range(done, last + 1):
            e = entries[j]
            if j == done and attempts > max_attempts and e[0] == I.VALUE:
                w.words[w.base + B.DEAD] += 1
                note = I.Note(w.stage.name, None, "", I.encoded(e[2]), e[1][1:])
                outs = [(I.DEAD, e[1], note)]
            else:
                outs = self.entry(e, False)
            self.send(outs, j == last, True)

    def compact(self, body: Any) -> bool:
        """A COMPACT chunk through map or filter in one comprehension, sent
        on COMPACT; False (nothing done that counts) if an item raised: then
        the chunk goes entry by entry."""
        w = self.w
        words, base = w.words, w.base
        fn, state = self.fn, w.state
        ids, values = body
        first = ids if isinstance(ids, int) else (ids[0] if ids else 0)
        t0 = time.monotonic_ns()
        words[base + B.STARTED] = t0
        words[base + B.ITEM] = first + 1
        try:
            # The fastest forms on CPython 3.11: a comprehension calls a plain
            # function faster than map(), map() with repeat() a function of two.
            if self.kind == "map":
                out = (list(map(fn, values, itertools.repeat(state))) if self.with_state
                       else [fn(v) for v in values])
                out_ids = ids
            else:
                keep = (list(map(fn, values, itertools.repeat(state))) if self.with_state
                        else [fn(v) for v in values])
                if isinstance(ids, int):
                    ids = range(ids, ids + len(values))
                out = list(itertools.compress(values, keep))
                out_ids = list(itertools.compress(ids, keep))
        except Exception:
            return False
        finally:
            words[base + B.ITEM] = 0
        n = len(values)
        dt = time.monotonic_ns() - t0
        words[base + B.FIRST] += n
        words[base + B.BUSY_NS] += dt
        if n:
            words[base + B.HIST + B.bucket(dt // n)] += n
        words[base + B.OUT] += len(out)
        if self.sink:
            w.rx._link_finish()
            return True
        try:
            w.out(I.COMPACT, (), (out_ids, out), True)
        except MessageTooLarge:
            if isinstance(out_ids, int):
                out_ids = range(out_ids, out_ids + len(out))
            by_id = dict(zip(out_ids, out, strict=True))
            ids_in = ids if not isinstance(ids, int) else range(ids, ids + n)
            self.split([[(I.VALUE, (i,), by_id[i])] if i in by_id else [] for i in ids_in])
        return True

    def split(self, per: list[list[Entry]]) -> None:
        """The chunk's outputs are too large for one record: send them item
        by item, output ``j`` being item ``j``'s, as a chunk handed back
        does (no output is out yet: one output no longer completes it)."""
        w = self.w
        w.rx._link_many()
        last = len(per) - 1
        for j, outs in enumerate(per):
            self.send(outs, j == last, True)
        if not per:
            w.rx._link_finish()

    def entry(self, e: Entry, first: bool) -> list[Entry]:
        """The outputs of one entry."""
        tag, key, value = e
        if tag != I.VALUE:
            if self.sink and tag in (I.TOMBSTONE, I.END):
                return []
            return [e]
        w = self.w
        words, base = w.words, w.base
        words[base + (B.FIRST if first else B.AGAIN)] += 1
        t0 = time.monotonic_ns()
        words[base + B.STARTED] = t0
        words[base + B.ITEM] = key[0] + 1
        outs: list[Entry] = []
        try:
            result = self.fn(value, w.state) if self.with_state else self.fn(value)
            kind = self.kind
            if kind == "map":
                outs.append((I.VALUE, key, result))
            elif kind == "filter":
                if result:
                    outs.append(e)
                elif self.ordered:
                    outs.append((I.TOMBSTONE, key, None))
            elif kind == "flat_map":
                for k, one in enumerate(result):
                    outs.append((I.VALUE, (*key, k), one))
                if self.ordered:
                    outs.append((I.END, key, len(outs)))
        except Exception as exc:
            outs = self.failed(exc, key, value, outs)
        dt = time.monotonic_ns() - t0
        words[base + B.ITEM] = 0
        words[base + B.BUSY_NS] += dt
        words[base + B.HIST + B.bucket(dt)] += 1
        words[base + B.OUT] += sum(1 for o in outs if o[0] == I.VALUE)
        return outs

    def failed(self, exc: Exception, key: tuple[int, ...], value: Any,
               outs: list[Entry]) -> list[Entry]:
        """``fn`` raised on one entry: on_error decides (as for one item).
        What a flat_map yielded before stays."""
        w = self.w
        mode = w.spec.on_error
        if mode == "skip":
            w.words[w.base + B.SKIPPED] += 1
            if self.ordered:
                if self.kind == "flat_map":
                    return [*outs, (I.END, key, len(outs))]
                return [(I.TOMBSTONE, key, None)]
            return outs
        w.words[w.base + (B.ERRORS if mode == "raise" else B.DEAD)] += 1
        tb = "" if self.traced else traceback.format_exc()
        self.traced = True
        note = I.Note(w.stage.name, f"{type(exc).__name__}: {exc}", tb,
                      I.encoded(value), key[1:], len(outs))
        return [*outs, (I.ERROR if mode == "raise" else I.DEAD, key, note)]

    def send(self, outs: list[Entry], last: bool, per_item: bool) -> None:
        """One output of the chunk: the list of entries it became. Done item
        by item, every entry has its output, even an empty one, so that the
        count of outputs is the count of entries done."""
        w = self.w
        if self.sink:
            notes = [o for o in outs if o[0] in (I.ERROR, I.DEAD)]
            if not notes and not per_item:
                w.rx._link_finish()
                return
            w.out(I.CHUNK, (), notes, last, to_ctl=True)
            return
        w.out(I.CHUNK, (), outs, last)
