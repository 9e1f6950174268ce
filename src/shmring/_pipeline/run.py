"""A running pipeline: its channels, its worker processes, and the parent's
two threads (the feeder reading the source, the controller watching the
workers).

The controller recovers what a dead worker held and replaces it at once,
kills a worker past its stage's ``timeout``, reads the workers' notes
(errors, dead letters), and closes each edge for sending once the stage
before it is done: its input edge closed and drained (edge.py). Workers
leave by themselves once their input is closed and drained.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .. import _layout as L
from .._channel.channel import Channel
from .._errors import InvalidArgument, NoSpace, RemoteError, Timeout
from . import arrays as A
from . import board as B
from . import edge as E
from . import item as I
from .feed import feed
from .order import Reorderer
from .outputs import Outputs
from .stage import StageSpec
from .stats import StageRun, progress_line, stage_stats
from .worker import RETIRED, WorkerSpec, main

ON_ERROR = ("raise", "skip", "dead_letter")
#: A stage whose workers die this many times per worker without finishing
#: anything is given up (RemoteError): they cannot run at all.
MAX_FUTILE_RESTARTS = 20


class Run:
    """The context manager ``Pipeline.run()`` returns; iterate it for the
    last stage's outputs."""

    _board: B.Board  # made by _open, with the channels

    def __init__(self, base: str, context: str, namespace: str | None,
                 source: Iterable[Any], specs: list[StageSpec], on_error: str,
                 progress: bool, chunksize: int = 1,
                 on_dead: Callable[[int, Any, bool, str], None] | None = None) -> None:
        if on_error not in ON_ERROR:
            raise InvalidArgument(f"on_error must be one of {', '.join(ON_ERROR)}")
        if not specs:
            raise InvalidArgument("the pipeline has no stages: add one after source()")
        self._base = base  # the channels' names start with it
        self._label = base.split(".")[0]
        self._specs = specs
        self._context = context
        self._on_error = on_error
        self._progress = progress
        self._ctx: Any = multiprocessing.get_context(context)
        self._ns = namespace
        self.ordered = any(s.ordered for s in specs)
        self._sink = specs[-1].kind == "sink"
        self._chunksize = chunksize
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._finished = threading.Event()
        self._error: BaseException | None = None
        self._dead: list[tuple[int, I.Note]] = []
        self._reasons: dict[int, str] = {}
        self._order = Reorderer() if self.ordered else None
        self._channels: list[Channel] = []
        self._stages: list[StageRun] = []
        self._started = False
        self._out: Channel | None = None
        self._pool: A.ArrayPool | None = None  # large arrays by reference (arrays.py)
        self._final: dict[str, dict[str, Any]] | None = None  # stats once closed
        self._outputs: Outputs | None = None  # the last edge's values (outputs.py)
        self._source = source
        # Called with (source id, item, killed, reason) for each item given
        # up (a Pool fails that task's result at once); ``killed``: its
        # attempts killed their workers, ``reason`` says how (else it is
        # the error's text).
        self._on_dead = on_dead

    def _open(self) -> None:
        """Create the run's channels (edges, output, control, board)."""
        specs, base = self._specs, self._base
        try:
            for i, s in enumerate(specs):
                self._stages.append(StageRun(s, i, self._edge(f"{base}.{i}.{s.name}",
                                                              s.max_bytes, "mpmc", s.lease)))
            if not self._sink:
                self._out = self._edge(f"{base}.out", specs[-1].max_bytes, "mpsc")
            # A sink's chunk sends its notes here in one record.
            ctl_bytes = max(1 << 20, specs[-1].max_bytes if self._chunksize > 1 else 0)
            self._ctl = self._edge(f"{base}.ctl", ctl_bytes, "mpsc")
            entries = sum(s.workers for s in specs) * 2 + 64
            self._board = B.Board.create(f"{base}.board", entries, self._ns)
            self._channels.append(self._board.channel)
            # Chunks of items (chunksize > 1) carry their arrays inside.
            copyless = [s.max_bytes for s in specs if s.zero_copy and self._chunksize == 1]
            if copyless:
                # Without room for a pool the run goes on without one: its
                # arrays are copied into each edge, as a pool's would be
                # when it is full.
                with contextlib.suppress(NoSpace):
                    self._pool = A.ArrayPool.create(f"{base}.pool", A.size_for(copyless),
                                                    self._ns)
                    self._channels.append(self._pool.channel)
        except BaseException:
            self._close_channels()
            raise
        self._free = list(range(self._board.entries))
        self._ctl_rx = self._ctl.consumer()
        self._out_rx = self._out.consumer() if self._out is not None else None
        if self._out_rx is not None:
            self._outputs = Outputs(self._out_rx, self._order, raise_error=self._raise_error,
                                    chunk=self._chunk, stop=self._stop,
                                    finished=self._finished, lock=self._lock, pool=self._pool)
        self._feed_tx = self._stages[0].channel.producer()

    def _edge(self, name: str, max_bytes: int, pattern: str, lease: float | None = None) -> Channel:
        ch = E.create(name, max_bytes, pattern, self._ns, lease)
        self._channels.append(ch)
        return ch

    # ------------------------------------------------------------ workers --
    def _start_worker(self, st: StageRun) -> None:
        if not self._free:
            raise InvalidArgument("the run has no room for more workers")
        entry = self._free.pop()
        self._board.clear(entry)
        nxt = st.index + 1
        spec = WorkerSpec(
            stage=st.spec, index=st.index, entry=entry, namespace=self._ns,
            edge_in=st.channel.name,
            edge_out=(self._stages[nxt].channel.name if nxt < len(self._stages)
                      else (self._out.name if self._out is not None else None)),
            ctl=self._ctl.name, board=self._board.channel.name, ordered=self.ordered,
            on_error=self._on_error, parent=os.getpid(),
            out_inflight=(self._stages[nxt].spec.max_inflight if nxt < len(self._stages)
                          else None),
            chunked=self._chunksize > 1,
            pool=None if self._pool is None else self._pool.channel.name,
            pool_out=nxt < len(self._stages) and self._stages[nxt].spec.zero_copy)
        p = self._ctx.Process(target=main, args=(spec,), daemon=True,
                              name=f"shmring-{self._label}-{st.spec.name}")
        try:
            p.start()
        except (pickle.PicklingError, AttributeError, TypeError) as e:
            self._free.append(entry)
            raise InvalidArgument(
                f"stage {st.spec.name!r}: its function cannot be sent to a "
                f"{self._context!r} worker ({e}); use a function defined at module "
                "level, or Pipeline(..., context='fork')") from e
        except BaseException:
            self._free.append(entry)
            raise
        st.procs[entry] = p

    def _reap(self) -> None:
        for st in self._stages:
            for entry, p in list(st.procs.items()):
                if p.is_alive():
                    continue
                p.join()
                code = p.exitcode
                item = self._board.word(entry, B.ITEM)
                retired = code == RETIRED
                if retired:
                    code = 0
                if code and item:
                    if entry in st.timed_out:
                        why = "timeout"
                    elif code < 0:
                        why = f"killed by {signal.Signals(-code).name}"
                    else:
                        why = f"worker exited with code {code}"
                    self._reasons[item - 1] = why
                st.fold(self._board.totals([entry]))
                st.timed_out.discard(entry)
                del st.procs[entry]
                self._free.append(entry)
                if code:
                    st.deaths += 1
                    # What it held goes back now, not when the supervisor gets to it.
                    nxt = st.index + 1
                    E.recover((st.channel, self._stages[nxt].channel if nxt < len(self._stages)
                               else self._out, self._ctl))
                if ((code or retired) and not st.closed and not self._stop.is_set()
                        and not self._drained(st)):
                    futile = st.deaths - st.totals[B.FIRST]
                    if futile > MAX_FUTILE_RESTARTS * st.spec.workers:
                        self._fail(RemoteError(
                            f"stage {st.spec.name!r}: its workers keep dying before they "
                            f"finish anything (last exit code {code})", stage=st.spec.name))
                        return
                    self._start_worker(st)

    def _timeouts(self) -> None:
        now = time.monotonic_ns()
        for st in self._stages:
            limit = st.spec.timeout
            if limit is None:
                continue
            for entry, p in st.procs.items():
                item = self._board.word(entry, B.ITEM)
                started = self._board.word(entry, B.STARTED)
                if (item and self._board.word(entry, B.ITEM) == item
                        and now - started > limit * 1e9 and entry not in st.timed_out):
                    st.timed_out.add(entry)
                    if p.pid is not None:
                        os.kill(p.pid, signal.SIGKILL)

    def _scale(self) -> None:
        for st in self._stages:
            # Once its input is closed a stage's workers leave as they run out
            # of items: only a dead one is replaced (_reap).
            if st.eos or self._stop.is_set():
                continue
            live = [e for e in st.procs if not self._board.word(e, B.STOP)]
            while len(live) < st.target:
                self._start_worker(st)
                live = [e for e in st.procs if not self._board.word(e, B.STOP)]
            for e in live[st.target:]:
                self._board.words[B.Board.base(e) + B.STOP] = 1

    @staticmethod
    def _drained(st: StageRun) -> bool:
        """The stage's input is closed and every item of it passed on."""
        return st.eos and E.drained(st.channel)

    def _cascade(self) -> None:
        for i, st in enumerate(self._stages):
            if st.closed:
                continue
            if not self._drained(st):
                return
            st.closed = True
            if i + 1 < len(self._stages):
                self._stages[i + 1].channel.close_send()
                self._stages[i + 1].eos = True
            elif self._out is not None:
                self._out.close_send()

    # ---------------------------------------------------------- the notes --
    def _read_ctl(self) -> None:
        rx = self._ctl_rx
        while True:
            try:
                mv = rx._peek(0)
            except Timeout:
                return
            try:
                item = int.from_bytes(mv[:8], "little")
                body = mv[L.LINK_HDR:]
                kind, _path, off = I.parse(body)
                if kind == I.CHUNK:
                    notes = [(e[1][0], e[0], e[2]) for e in I.decode(body[off:], False)]
                else:
                    notes = [(item, kind, I.read_note(body[off:]))]
            finally:
                rx._release()
            for n_item, n_kind, note in notes:
                self._note(n_item, n_kind, note)

    def _note(self, item: int, kind: int, note: I.Note) -> None:
        """An ERROR or DEAD note about source item ``item``."""
        if note.fatal:
            self._fail(RemoteError(f"stage {note.stage!r}: {note.reason}\n{note.traceback}",
                                   stage=note.stage, remote_traceback=note.traceback))
            return
        if kind == I.ERROR and self._on_error == "raise":
            value = I.item_value(note)
            self._fail(RemoteError(
                f"stage {note.stage!r} raised on item {value!r}:\n{note.traceback}",
                stage=note.stage, item=value, remote_traceback=note.traceback))
        else:
            with self._lock:
                self._dead.append((item, note))
            if self._on_dead is not None:
                self._on_dead(item, I.item_value(note), note.reason is None,
                              note.reason or self._reasons.get(item, "killed"))
        if self._order is not None:
            key = (item, *note.path)
            with self._lock:
                if self._stage_kind(note.stage) == "flat_map":
                    self._order.end(key, note.outputs)
                else:
                    self._order.tombstone(key)

    def _chunk(self, entries: list[Any]) -> list[Any]:
        """The values of a CHUNK record that reached the parent, in the
        order to yield them (notes handled, the others put in order)."""
        order = self._order
        out: list[Any] = []
        for tag, key, value in entries:
            if tag in (I.ERROR, I.DEAD):
                self._note(key[0], tag, value)
            elif order is None:
                if tag == I.VALUE:
                    out.append(value)
            else:
                with self._lock:
                    if tag == I.VALUE:
                        order.value(tuple(key), value)
                    elif tag == I.END:
                        order.end(tuple(key), value)
                    else:
                        order.tombstone(tuple(key))
        if order is not None:
            with self._lock:
                out = order.ready()
        return out

    def _stage_kind(self, name: str) -> str:
        for st in self._stages:
            if st.spec.name == name:
                return st.spec.kind
        return "map"

    def _fail(self, e: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error = e
        self._halt()

    # ------------------------------------------------------------ threads --
    def _control(self) -> None:
        last_line = 0.0
        try:
            while True:
                sentinels = [p.sentinel for st in self._stages for p in st.procs.values()]
                multiprocessing.connection.wait(sentinels, timeout=0.01)
                self._read_ctl()
                if self._stop.is_set():
                    break
                self._reap()
                self._timeouts()
                self._scale()
                self._cascade()
                if self._progress and time.monotonic() - last_line > 0.5:
                    last_line = time.monotonic()
                    progress_line(self.stats, final=False)
                if all(st.closed for st in self._stages) and not any(
                        st.procs for st in self._stages):
                    self._read_ctl()
                    break
                if all(st.closed for st in self._stages):
                    self._reap()
        except BaseException as e:  # a bug here must not hang the run
            self._fail(e)
        finally:
            if self._progress:
                progress_line(self.stats, final=True)
            self._finished.set()

    def _feed(self) -> None:
        st0 = self._stages[0]
        try:
            pool = self._pool if st0.spec.zero_copy else None
            if feed(self._feed_tx, iter(self._source), self._chunksize, st0.spec.max_inflight,
                    self._board, self._stop, pool):
                st0.channel.close_send()
                st0.eos = True
        except BaseException as e:
            self._fail(e)

    # ------------------------------------------------------------- public --
    def __enter__(self) -> Run:
        if self._started:
            raise InvalidArgument("a run is entered once; call pipeline.run() again")
        self._started = True
        self._open()
        try:
            for st in self._stages:
                for _ in range(st.spec.workers):
                    self._start_worker(st)
        except BaseException:
            self._shutdown()
            raise
        self._controller = threading.Thread(target=self._control, daemon=True,
                                            name="shmring-pipeline-control")
        self._feeder = threading.Thread(target=self._feed, daemon=True,
                                        name="shmring-pipeline-source")
        self._feeder.start()  # first: items move while the controller starts
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._shutdown()

    def __iter__(self) -> Iterator[Any]:
        if not self._started:
            raise InvalidArgument("start the run first: with pipeline.run() as run: ...")
        if self._out_rx is None:
            raise InvalidArgument("this pipeline ends in a sink: use run.wait()")
        assert self._outputs is not None
        return iter(self._outputs)

    def wait(self, timeout: float | None = None) -> list[Any]:
        """Wait until every stage is done; returns the outputs not iterated
        (none for a pipeline ending in a sink). Raises :class:`Timeout`, or
        the run's :class:`~shmring.RemoteError`."""
        if not self._started:
            raise InvalidArgument("start the run first: with pipeline.run() as run: ...")
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._out_rx is None:
            if not self._finished.wait(timeout):
                raise Timeout(f"the pipeline did not finish within {timeout} s")
            self._raise_error()
            return []
        assert self._outputs is not None
        try:
            return self._outputs.collect(deadline)  # on Timeout, kept for the next wait or loop
        except Timeout:
            raise Timeout(f"the pipeline did not finish within {timeout} s") from None

    def cancel(self) -> None:
        """Stop every stage now; iteration ends, unfinished items are dropped."""
        self._halt()

    def pids(self, stage: str) -> list[int]:
        """The pids of stage ``stage``'s live workers."""
        procs = list(self._stage(stage).procs.values())  # the controller changes the dict
        return [p.pid for p in procs if p.pid is not None and p.is_alive()]

    def scale(self, stage: str, n: int) -> None:
        """Resize stage ``stage``'s pool to ``n`` workers (1..200) while it
        runs; workers beyond ``n`` leave after their current item."""
        if not isinstance(n, int) or not 1 <= n <= 200:
            raise InvalidArgument("a stage has 1..200 workers")
        st = self._stage(stage)
        if n - len(st.procs) > len(self._free):
            raise InvalidArgument(f"the run has room for {len(self._free)} more workers")
        st.target = n

    @property
    def stats(self) -> dict[str, dict[str, Any]]:
        """Per stage: ``in`` (items taken), ``out`` (outputs sent),
        ``redelivered`` (items taken again after a worker died), ``skipped``,
        ``dead_lettered``, ``errors``, ``workers`` (live), ``busy`` (working on
        an item now), ``restarts``, ``p50_s`` and ``p99_s`` (time per item)."""
        if self._final is not None:
            return self._final
        if not self._started:
            return {}
        return {st.spec.name: stage_stats(st, self._board) for st in self._stages}

    @property
    def dead_letters(self) -> list[tuple[Any, str]]:
        """``(item, reason)`` for every item given up: the exception text,
        ``"killed by SIGKILL"`` (or another signal), or ``"timeout"``."""
        with self._lock:
            dead = list(self._dead)
        return [(I.item_value(n), n.reason or self._reasons.get(item, "killed"))
                for item, n in dead]

    # ----------------------------------------------------------- internal --
    def _stage(self, name: str) -> StageRun:
        for st in self._stages:
            if st.spec.name == name:
                return st
        raise InvalidArgument(f"no stage named {name!r}: "
                              f"{', '.join(s.spec.name for s in self._stages)}")

    def _raise_error(self) -> None:
        e = self._error
        if e is not None:
            raise e

    def _halt(self) -> None:
        self._stop.set()
        for st in self._stages:
            for p in list(st.procs.values()):
                if p.pid is not None and p.is_alive():
                    # The controller may reap it meanwhile (a Pool's terminate
                    # runs in the user's thread while the run goes on).
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p.pid, signal.SIGKILL)

    def _shutdown(self) -> None:
        if not self._finished.is_set():
            self._halt()
        for t in (getattr(self, "_feeder", None), getattr(self, "_controller", None)):
            if t is not None:
                t.join()
        if self._stop.is_set():
            # A worker the controller started as the halt went by (its check
            # of the stop flag just before) is killed now that it has stopped.
            self._halt()
        for st in self._stages:
            for p in list(st.procs.values()):
                p.join()
            st.procs.clear()
        self._close_channels()

    def _close_channels(self) -> None:
        if "_board" in self.__dict__:
            self._final = {st.spec.name: stage_stats(st, self._board) for st in self._stages}
            self._board.words.release()
            del self._board
        if self._pool is not None:
            self._pool.view.release()
        for ch in reversed(self._channels):
            ch.unlink()  # the run's own: without a supervisor nobody else would
            ch.close()
        self._channels.clear()

