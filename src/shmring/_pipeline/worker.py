"""A stage's worker process: take an item, run the stage's function, send
its outputs by linked commits (csrc/ring/link.c), until end of stream.

What a worker holds when it dies is never lost nor repeated: the input stays
taken in the ring until every output is committed, and recovery reads which
outputs were. The worker's board entry says which item it is on and since
when (the parent kills it past ``timeout``) and counts what it did.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import _core
from .._errors import Closed, EndOfStream, LeaseRevoked, Timeout
from .._objects.frame import VALUE_TAG, encode
from .._objects.serializers import PICKLE
from . import arrays as A
from . import board as B
from . import edge as E
from . import item as I
from .chunk import ChunkRunner
from .stage import StageSpec

_encode_value = _core.encode_value
_decode_value = _core.decode_value
monotonic_ns = time.monotonic_ns
#: The exit code of a worker that left after its stage's ``max_tasks``
#: items: the parent replaces it without counting a death.
RETIRED = 75


#: ``_link_map``'s mode: the stage's kind, and flags (csrc/py/link_map.c).
LINK_MODE = {"map": 0, "filter": 1, "sink": 2}
MODE_STATE, MODE_ORDERED = 4, 8


class _Orphaned(BaseException):
    """The run's parent is gone: the worker leaves (what it holds is
    recovered like a dead worker's). A BaseException, so that no handler of
    a stage function's errors takes it for the item's fault."""


@dataclass
class WorkerSpec:
    """Everything a worker needs, sent to it when it starts (picklable)."""

    stage: StageSpec
    index: int  # position of the stage in the pipeline
    entry: int  # the worker's board entry
    namespace: str | None
    edge_in: str
    edge_out: str | None  # None: a sink
    ctl: str
    board: str
    ordered: bool
    on_error: str
    parent: int
    out_inflight: int | None  # the next stage's max_inflight (edge index + 1 counts)
    chunked: bool = False  # the source sends chunks of items (chunk.py)
    pool: str | None = None  # the run's array pool (arrays.py), if a stage is zero_copy
    pool_out: bool = False  # the next stage is zero_copy: large new arrays go to the pool


class _Worker:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        st = spec.stage
        self.stage = st
        self.cin = E.attach(spec.edge_in, spec.namespace)
        self.rx = self.cin.consumer()
        self.cctl = E.attach(spec.ctl, spec.namespace)
        self.ctl = self.cctl.producer()
        self.ctl_region = self.cctl.region.inode
        self.cout = None if spec.edge_out is None else E.attach(spec.edge_out, spec.namespace)
        self.tx = self.ctl if self.cout is None else self.cout.producer()
        self.out_region = self.ctl_region if self.cout is None else self.cout.region.inode
        self.board = B.Board.open(spec.board, spec.namespace)
        self.words = self.board.words
        self.base = B.Board.base(spec.entry)
        self.words[self.base + B.PID] = os.getpid()
        self.ordered = spec.ordered and self.stage.kind != "sink"
        self.state: Any = None
        # The current item: its id, path, outputs sent by earlier attempts,
        # and the number of the next output.
        self.item = 0
        self.path: I.Path = ()
        self.done = 0
        self.j = 0
        self.retired = False  # left after max_tasks items
        self.leases = 0  # items whose lease was revoked while we held them
        self.pool = None if spec.pool is None else A.ArrayPool.open(spec.pool, spec.namespace)
        # The pool slots the current input owns, and those of them its
        # output took on (freed: the others, once the input is done).
        self.held: list[A.Alloc] = []
        self.moved: list[A.Alloc] = []

    def close(self) -> None:
        self.board.close()
        if self.pool is not None:
            self.pool.close()
        for ch in (self.cin, self.cctl, self.cout):
            if ch is not None:
                ch.close()

    # ------------------------------------------------------------ sending --
    def _wait_room(self, limit: int) -> None:
        """max_inflight of the next stage: wait while its edge is full,
        before taking an input, so that no item is held meanwhile (a worker
        killed while it waits costs no item an attempt). Each worker may
        then send one item past the bound."""
        edge = self.spec.index + 1
        while self.board.inflight(edge) >= limit:
            if self.words[self.base + B.STOP]:
                return
            time.sleep(0.0005)
            if os.getppid() != self.spec.parent:
                raise _Orphaned

    def out(self, kind: int, path: I.Path, obj: Any, last: bool, to_ctl: bool = False) -> None:
        """Output number ``j`` of the current item, unless an earlier attempt
        sent it (``j < done``): to the next stage, or for ERROR and DEAD
        notes (and ``to_ctl``) to the parent. ``last``: the input is done."""
        j = self.j
        self.j = j + 1
        if j < self.done:
            if last:
                self.rx._link_finish()
            return
        if kind in (I.ERROR, I.DEAD) or to_ctl:
            body = I.note_body(obj) if kind in (I.ERROR, I.DEAD) else None
            if body is not None:
                self._patient(I.send_raw, self.ctl, self.rx, self.item, self.ctl_region,
                              I.prefix(kind, path) + body, last)
            else:
                self._patient(I.send, self.ctl, self.rx, self.item, self.ctl_region,
                              I.prefix(kind, path), obj, last)
            return
        if kind in (I.VALUE, I.CHUNK, I.COMPACT):
            data = _encode_value(obj)
            if data is None and kind == I.VALUE and self.pool is not None:
                # Large buffers go by reference (arrays.py); a flat_map's
                # outputs never take on its input's slots.
                held = self.held if self.stage.kind != "flat_map" else []
                if held or self.spec.pool_out:
                    self._pooled(path, obj, held, last)
                    self.words[self.base + B.OUT] += 1
                    self.counted()
                    return
            if data is None:  # not a plain value: pickled, maybe framed
                self._patient(I.send, self.tx, self.rx, self.item, self.out_region,
                              I.prefix(kind, path), obj, last)
            else:
                record = (I.PLAIN if not path and kind == I.VALUE
                          else I.prefix(kind, path)) + data
                try:
                    self.tx._link_send(self.rx, record, self.item, self.out_region, last, 1.0)
                except Timeout:
                    self._patient(I.send_raw, self.tx, self.rx, self.item, self.out_region,
                                  record, last)
            if kind == I.VALUE:
                self.words[self.base + B.OUT] += 1
        else:
            self._patient(I.send_raw, self.tx, self.rx, self.item, self.out_region,
                          I.prefix(kind, path) + (obj or b""), last)
        self.counted()

    def _pooled(self, path: I.Path, obj: Any, held: list[A.Alloc], last: bool) -> None:
        data, buffers = encode(obj, PICKLE)
        head = I.prefix(I.VALUE, path)
        if not buffers:
            self._patient(I.send_raw, self.tx, self.rx, self.item, self.out_region,
                          head + bytes(data), last)
            return
        assert self.pool is not None
        plan = self.pool.plan(data, buffers, held, self.moved, self.spec.pool_out)
        try:
            self._patient(self._send_pooled, head, plan, last)
        finally:
            plan.release()

    def _send_pooled(self, head: bytes, plan: A.PooledPlan, last: bool,
                     timeout: float) -> None:
        view = self.tx._link_claim(self.rx, len(head) + plan.size, self.item,
                                   self.out_region, timeout)
        try:
            view[:len(head)] = head
            plan.write(view[len(head):])
        except BaseException:
            self.tx._link_abort(self.rx)
            raise
        self.tx._link_commit(self.rx, None, last)
        plan.commit()

    def forward(self, path: I.Path, body: memoryview) -> None:
        """A filter keeps a pooled item: its record goes on as it came,
        with the slots it owns."""
        if self.j < self.done:
            self.out(I.VALUE, path, None, True)
            return
        self.j += 1
        self._patient(I.send_raw, self.tx, self.rx, self.item, self.out_region,
                      I.prefix(I.VALUE, path) + bytes(body), True)
        self.moved.extend(self.held)
        self.words[self.base + B.OUT] += 1
        self.counted()

    def decode(self, body: memoryview, zero_copy: bool) -> Any:
        """The current input's value; a pooled one's slots are held."""
        if self.pool is not None and A.pooled(body):
            value, self.held = self.pool.decode(body, zero_copy)
            return value
        return I.decode(body, zero_copy)

    def settle(self) -> None:
        """The last input is done with: free the pool slots it owned that
        its output did not take on."""
        pool = self.pool
        if pool is not None:
            for alloc in self.held:
                if alloc not in self.moved:
                    pool.free(alloc)
        self.held, self.moved = [], []

    def counted(self) -> None:
        """A record went into the next edge: count it there (max_inflight;
        its consumer counts it down when it first takes it)."""
        if self.spec.out_inflight is not None:
            self.board.sent(self.spec.index + 1)

    def _patient(self, send: Callable[..., None], *args: Any) -> None:
        """``send(*args, timeout)`` until it goes through: a full edge waits
        as long as the run's parent lives (its stages drain it)."""
        while True:
            try:
                send(*args, 1.0)
                return
            except Timeout:
                if os.getppid() != self.spec.parent:
                    raise _Orphaned from None

    def nothing_more(self) -> None:
        """The current item has no more outputs. In an ordered run its place
        is kept (a tombstone; for a flat_map the END of its outputs)."""
        if not self.ordered:
            self.rx._link_finish()
        elif self.stage.kind == "flat_map":
            self.out(I.END, self.path, I.end_body(self.j), True)
        else:
            self.out(I.TOMBSTONE, self.path, None, True)

    def note(self, kind: int, reason: str | None, tb: str, body: memoryview) -> None:
        """The current item failed: an ERROR or DEAD note, its last output
        (the parent keeps its place in an ordered run)."""
        if self.pool is not None and A.pooled(body):
            try:
                value, self.held = self.pool.decode(body, False)
                item = I.encoded(value)
            except Exception as e:  # a corrupt record: say so
                item = I.encoded(f"<item not decodable: {e}>")
        else:
            item = I.note_item(bytes(body))
        self.out(kind, self.path, I.Note(self.stage.name, reason, tb, item, self.path, self.j),
                 True)

    # ------------------------------------------------------------ running --
    def run(self) -> None:
        st = self.stage
        words, base = self.words, self.base
        if st.init is not None:
            try:
                self.state = st.init()
            except Exception as e:
                # Fatal for the run whatever on_error says: the stage cannot work.
                note = I.Note(st.name, f"init failed: {type(e).__name__}: {e}",
                              traceback.format_exc(), b"", fatal=True)
                self.ctl.send(I.link_header(0) + I.prefix(I.ERROR, ()) + I.note_body(note))
                return
        fn = st.fn
        with_state = st.init is not None
        kind_of = st.kind
        single = kind_of in ("map", "filter")
        max_attempts = st.max_redeliveries + 1
        zero_copy = st.zero_copy
        rx = self.rx
        counter = (self.board.channel.region._mapping() if st.max_inflight is not None
                   else None)
        counter_at = self.board.offset(B.INFLIGHT + self.spec.index)
        in_region = self.cin.region.inode
        out_limit = self.spec.out_inflight
        chunks = ChunkRunner(self, fn)
        take_mode: int = 2 if self.spec.chunked else int(single)  # 2: chunk.py
        taken = 0
        finished = 0
        max_tasks = st.max_tasks
        # A map, filter or sink stage's common item (a plain value, and for
        # a map a plain result) is one C call: csrc/py/link_map.c. It hands
        # back to the code below whatever it does not do itself.
        fast = (kind_of in LINK_MODE and not self.spec.chunked
                and (self.cout is not None or kind_of == "sink"))
        mode = (LINK_MODE.get(kind_of, 0) | (MODE_STATE if with_state else 0)
                | (MODE_ORDERED if self.ordered else 0))
        board_buf = self.board.channel.region._mapping()
        entry_off = self.board.offset(base)
        sent_off = (None if out_limit is None
                    else self.board.offset(B.INFLIGHT + self.spec.index + 1))
        while True:
            if self.held:
                self.settle()
            if words[base + B.STOP]:
                return
            if max_tasks is not None and finished >= max_tasks:
                self.retired = True
                return
            if out_limit is not None:
                self._wait_room(out_limit)
            taken += 1
            if not taken & 63 and os.getppid() != self.spec.parent:
                return  # the run's parent is gone: leave its backlog
            try:
                if fast:
                    got = rx._link_map(self.tx, fn, self.state, mode, 0.5, counter,
                                       counter_at, in_region, self.out_region, board_buf,
                                       entry_off, max_attempts, sent_off)
                    if got is None:
                        finished += 1
                        continue
                    if len(got) == 7:
                        finished += 1
                        self._after_fn(*got)
                        continue
                    item, attempts, done, mv = got
                else:
                    item, attempts, done, mv = rx._link_take(0.5, take_mode, counter,
                                                             counter_at, in_region)
            except LeaseRevoked:
                words[base + B.ITEM] = 0
                self.leases += 1
                continue
            except Timeout:
                if os.getppid() != self.spec.parent:
                    return  # the run's parent is gone
                continue
            except EndOfStream:
                if E.drained(self.cin):
                    return
                # Nothing left to take, but a record is still taken: its
                # worker may die and recovery hand it back. Stay until every
                # record of the input is done, so that the stage is never
                # left without a worker while it holds one.
                time.sleep(0.002)
                continue
            try:
                self.item, self.done, self.j = item, done, 0
                finished += 1
                path: I.Path
                if mv[1] == 0:  # no path: the common case, parsed here
                    kind, path, off = mv[0], (), 8
                else:
                    kind, path, off = I.parse(mv)
                self.path = path
                if kind == I.CHUNK or kind == I.COMPACT:
                    chunks.run(kind, I.decode(mv[off:], zero_copy), attempts, done, max_attempts)
                    continue
                if kind == I.VALUE:
                    words[base + (B.FIRST if attempts == 1 else B.AGAIN)] += 1
                else:
                    # Tombstones and END markers pass through (ordered runs).
                    if kind_of == "sink":
                        rx._link_finish()
                    else:
                        self._patient(I.send_raw, self.tx, rx, item, self.out_region, mv, True)
                        self.counted()
                    continue
                body = mv[off:]
                if attempts > max_attempts:
                    words[base + B.DEAD] += 1
                    self.j = done  # what earlier attempts sent stays sent
                    self.note(I.DEAD, None, "", body)
                    continue
                t0 = monotonic_ns()
                words[base + B.STARTED] = t0  # before ITEM: see Run._timeouts
                words[base + B.ITEM] = item + 1
                try:
                    # A plain value is decoded by one C call.
                    value = (_decode_value(body) if body[0] == VALUE_TAG
                             else self.decode(body, zero_copy))
                    result = fn(value, self.state) if with_state else fn(value)
                    if kind_of == "map":
                        self.out(I.VALUE, path, result, True)
                    elif kind_of == "filter":
                        if result and self.held:
                            self.forward(path, body)
                        elif result:
                            self.out(I.VALUE, path, value, True)
                        else:
                            self.nothing_more()
                    elif kind_of == "flat_map":
                        for k, one in enumerate(result):
                            self.out(I.VALUE, (*path, k), one, False)
                        self.nothing_more()
                    else:
                        rx._link_finish()
                except LeaseRevoked:
                    raise
                except Exception as e:
                    self.failed(e, body)
                self._timed(t0)
            except LeaseRevoked:
                # Held past the edge's lease (stopped, or stuck): the item went
                # to another worker and nothing of ours goes out; on to the next.
                # Its pool slots went with it.
                self.held, self.moved = [], []
                words[base + B.ITEM] = 0
                self.leases += 1

    def _after_fn(self, item: int, attempts: int, done: int, mv: memoryview, t0: int,
                  raised: int, obj: Any) -> None:
        """``_link_map`` ran the function on an item and handed the rest
        back: ``obj`` is what it raised (``raised``), or its result: a map's
        that is not a small plain value, or a filter's no in an ordered run,
        or either's whose output found the next edge full."""
        self.item, self.done, self.j, self.path = item, done, 0, ()
        try:
            if raised:
                raise obj
            if self.stage.kind == "map":
                self.out(I.VALUE, (), obj, True)
            elif self.stage.kind == "filter" and obj:
                self.out(I.VALUE, (), _decode_value(mv[8:]), True)
            else:
                self.nothing_more()
        except LeaseRevoked:
            raise
        except Exception as e:
            self.failed(e, mv[8:])
        finally:
            del obj
        self._timed(t0)

    def _timed(self, t0: int) -> None:
        """The current item, begun at ``t0``, is done with: no item held,
        its time counted."""
        words, base = self.words, self.base
        dt = monotonic_ns() - t0
        words[base + B.ITEM] = 0
        words[base + B.BUSY_NS] += dt
        words[base + B.HIST + B.bucket(dt)] += 1

    def failed(self, e: Exception, body: memoryview) -> None:
        """``fn`` raised on the current item (or its output could not be
        sent): ``on_error`` decides. The input is still held."""
        words, base = self.words, self.base
        mode = self.spec.on_error
        if mode == "skip":
            words[base + B.SKIPPED] += 1
            self.nothing_more()
            return
        words[base + (B.ERRORS if mode == "raise" else B.DEAD)] += 1
        self.note(I.ERROR if mode == "raise" else I.DEAD, f"{type(e).__name__}: {e}",
                  traceback.format_exc(), body)


def main(spec: WorkerSpec) -> None:
    """A worker process's entry point (``multiprocessing`` target)."""
    # The parent handles Ctrl-C for the whole run and stops its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        w = _Worker(spec)
    except Closed:
        return  # started as its stage finished: the next edge is closed already
    try:
        w.run()
    except _Orphaned:
        pass
    finally:
        w.close()
    if w.retired:
        sys.exit(RETIRED)
