"""``shmring.Pool``: ``multiprocessing.Pool``'s interface on a pipeline of
one map stage (docs/pool.md).

One long-lived pipeline run per pool: its source is a generator that reads
the pool's inbox of jobs (each ``apply_async``, ``map_async``, ``imap``...)
as the feeder thread asks, numbering each task as the run numbers its items,
so a task id is the item id the workers and their dead notes carry. A
collector thread reads the run's outputs and hands each outcome to its job.
What the pipeline gives: a worker SIGKILLed (or OOM-killed) mid-task loses
nothing, the task goes back to the ring and runs again on a new worker; a
task that has killed ``max_redeliveries + 1`` workers is given up and its
result fails with an error naming it, while the others go on.
"""

from __future__ import annotations

import functools
import itertools
import multiprocessing
import multiprocessing.util
import os
import queue
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.pool import CLOSE, RUN, TERMINATE
from typing import Any

from .._errors import Closed, InvalidArgument, MessageTooLarge, RemoteError
from .._pipeline.run import Run
from .._pipeline.stage import StageSpec
from .pool_results import (
    AsyncResult,
    IMapIterator,
    IMapUnorderedIterator,
    MapResult,
    _Job,
)
from .pool_task import decode_outcome, describe, encode_task, execute, initialize

__all__ = ["AsyncResult", "IMapIterator", "IMapUnorderedIterator", "MapResult", "Pool"]

#: Default bound of each of the pool's two edges (tasks in, results out):
#: a task's pickled arguments or result may be up to about half of it.
DEFAULT_MAX_BYTES = 8 << 20
_pools = itertools.count()


class Pool:
    """A pool of worker processes with ``multiprocessing.Pool``'s methods.

    Example::

        from shmring import Pool

        def square(x: int) -> int:
            return x * x

        with Pool(2) as pool:
            print(pool.map(square, range(10)))

    ``processes`` (default ``os.cpu_count()``), ``initializer(*initargs)``
    run once in each worker, ``maxtasksperchild`` (a worker is replaced after
    that many tasks) and ``context`` (a ``multiprocessing`` context or start
    method name; default ``fork`` where there is one) are as in
    ``multiprocessing``. Beyond it: ``max_redeliveries`` (a task whose
    workers die is run again up to that many times, then fails with
    :class:`~shmring.RemoteError` naming it), ``task_timeout`` (seconds a
    task may run before its worker is killed, which counts as one of those
    tries; default: no limit), ``max_bytes`` (the bound of a
    task's pickled arguments or result is about half of it) and
    ``namespace`` (of the pool's channels).
    """

    def __init__(self, processes: int | None = None,
                 initializer: Callable[..., object] | None = None,
                 initargs: Iterable[Any] = (), maxtasksperchild: int | None = None,
                 context: Any = None, *, max_redeliveries: int = 2,
                 task_timeout: float | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                 namespace: str | None = None) -> None:
        self._state = TERMINATE  # until started: __del__ has nothing to warn of
        if processes is None:
            processes = os.cpu_count() or 1
        if not isinstance(processes, int) or processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if processes > 200:
            raise ValueError("shmring.Pool runs at most 200 processes")
        if maxtasksperchild is not None and (
                not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0):
            raise ValueError("maxtasksperchild must be a positive int or None")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self._processes = processes
        self._max_redeliveries = max_redeliveries
        method = _start_method(context)
        self._limit = max_bytes // 2 - 4096
        spec = StageSpec(
            "map", execute, "task", workers=processes,
            init=functools.partial(initialize, initializer, tuple(initargs), self._limit),
            max_redeliveries=max_redeliveries, timeout=task_timeout, max_bytes=max_bytes,
            max_tasks=maxtasksperchild)
        spec.check()
        self._lock = threading.Lock()
        self._inbox: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._cache: dict[int, tuple[_Job, int]] = {}  # task id -> (job, index)
        # Jobs with tasks out: id(job) -> [job, how many].
        self._jobs: dict[int, list[Any]] = {}
        self._broken: BaseException | None = None
        self._unmatched = 0  # outcomes of no task out: none, by exactly once
        pid = os.getpid()
        self._run = Run(f"pool-{pid}-{next(_pools)}.{pid}.1", method, namespace,
                        self._source(), [spec], "dead_letter", False, on_dead=self._dead)
        self._run.__enter__()
        self._state = RUN
        self._collector = threading.Thread(target=self._collect, daemon=True,
                                           name="shmring-pool-results")
        self._collector.start()
        self._joined = False
        # At exit, before multiprocessing kills its daemonic children (which
        # the run would replace, and run their tasks again), the pool stops
        # as terminate() stops it. A weak reference: no pool kept alive.
        self._at_exit = multiprocessing.util.Finalize(
            self, _terminate_at_exit, args=(weakref.ref(self),), exitpriority=15)

    # -------------------------------------------------- the run's source --
    def _source(self) -> Iterator[tuple[int, bytes]]:
        """The run's items, read by its feeder thread: every job's tasks in
        the order they were submitted, each numbered as the run numbers it."""
        tid = 0
        while True:
            try:
                job = self._inbox.get(timeout=0.1)
            except queue.Empty:
                if self._state == TERMINATE:
                    return
                continue
            if job is None or self._state == TERMINATE:
                return
            try:
                for index, task in job.tasks():
                    if self._state == TERMINATE:
                        return
                    try:
                        payload = encode_task(task)
                    except Exception as e:  # this task fails, as in multiprocessing
                        job._set(index, False, e)
                        continue
                    if len(payload) > self._limit:
                        job._set(index, False, MessageTooLarge(
                            f"the task's arguments are {len(payload)} bytes pickled; the "
                            f"pool takes at most {self._limit} (Pool(max_bytes=...))"))
                        continue
                    with self._lock:
                        self._cache[tid] = (job, index)
                        self._jobs.setdefault(id(job), [job, 0])[1] += 1
                    yield tid, payload
                    tid += 1
            except Exception as e:  # a bug must fail the job, not the pool
                job._abandon(e)
            # Hold no task's arguments while waiting for the next job.
            job = task = None  # type: ignore[assignment]

    # --------------------------------------------------------- outcomes --
    def _collect(self) -> None:
        """The collector thread: each output of the run to its job."""
        try:
            for out in self._run:
                tid, ok, value = decode_outcome(out)
                self._deliver(tid, ok, value)
                value = None  # hold no result while waiting for the next
        except BaseException as e:  # the run failed: no task can finish now
            self._broken = e
        self._abandon_all(self._broken or Closed("the pool was terminated"))

    def _deliver(self, tid: int, ok: bool, value: Any) -> None:
        with self._lock:
            entry = self._cache.pop(tid, None)
            if entry is None:
                self._unmatched += 1
                return
            job, index = entry
            out = self._jobs.get(id(job))
            if out is not None:
                out[1] -= 1
                if not out[1]:
                    del self._jobs[id(job)]
        job._set(index, ok, value)

    def _dead(self, tid: int, item: Any, killed: bool, reason: str) -> None:
        """The run gave up task ``tid``: its result fails, naming it."""
        with self._lock:
            entry = self._cache.get(tid)
        if entry is None:
            return
        job = entry[0]
        name = describe(item, f"task {tid} ({getattr(job.func, '__qualname__', job.func)!r})")
        if killed:
            n = self._max_redeliveries + 1
            tries = "its one try" if n == 1 else f"each of its {n} tries"
            text = (f"task {tid}, {name}, was given up: {tries} killed its worker "
                    f"(the last: {reason})")
        else:
            text = f"task {tid}, {name}, failed in the pool: {reason}"
        self._deliver(tid, False, RemoteError(text, stage="pool", item=name))

    def _abandon_all(self, error: BaseException) -> None:
        with self._lock:
            jobs = [job for job, _ in self._jobs.values()]
            self._jobs.clear()
            self._cache.clear()
        for job in jobs:
            job._abandon(error)

    # ------------------------------------------------------- submitting --
    def _submit(self, job: _Job) -> None:
        with self._lock:
            if self._state != RUN:
                raise ValueError("Pool not running")
            broken = self._broken
        if broken is not None:
            job._abandon(broken)
            return
        self._inbox.put(job)

    def apply_async(self, func: Callable[..., Any], args: Iterable[Any] = (),
                    kwds: dict[str, Any] | None = None,
                    callback: Callable[[Any], object] | None = None,
                    error_callback: Callable[[BaseException], object] | None = None,
                    ) -> AsyncResult:
        """Run ``func(*args, **kwds)`` in a worker; an :class:`AsyncResult`."""
        job = AsyncResult(func, args, kwds or {}, callback, error_callback)
        self._submit(job)
        return job

    def apply(self, func: Callable[..., Any], args: Iterable[Any] = (),
              kwds: dict[str, Any] | None = None) -> Any:
        """``func(*args, **kwds)`` run in a worker; waits for it."""
        return self.apply_async(func, args, kwds).get()

    def _map_async(self, func: Callable[..., Any], iterable: Iterable[Any],
                   chunksize: int | None, star: bool,
                   callback: Callable[[Any], object] | None,
                   error_callback: Callable[[BaseException], object] | None) -> MapResult:
        with self._lock:
            if self._state != RUN:
                raise ValueError("Pool not running")
        items = list(iterable)
        if chunksize is None:
            chunksize, extra = divmod(len(items), self._processes * 4)
            if extra:
                chunksize += 1
        if not items:
            chunksize = 1
        if not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize!r}")
        job = MapResult(func, items, chunksize, star, callback, error_callback)
        if items:
            self._submit(job)
        return job

    def map_async(self, func: Callable[..., Any], iterable: Iterable[Any],
                  chunksize: int | None = None,
                  callback: Callable[[Any], object] | None = None,
                  error_callback: Callable[[BaseException], object] | None = None,
                  ) -> MapResult:
        """``[func(x) for x in iterable]`` run in the workers, in chunks of
        ``chunksize`` items (default: about four chunks per worker)."""
        return self._map_async(func, iterable, chunksize, False, callback, error_callback)

    def starmap_async(self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]],
                      chunksize: int | None = None,
                      callback: Callable[[Any], object] | None = None,
                      error_callback: Callable[[BaseException], object] | None = None,
                      ) -> MapResult:
        """As :meth:`map_async`, calling ``func(*args)`` for each ``args``."""
        return self._map_async(func, iterable, chunksize, True, callback, error_callback)

    def map(self, func: Callable[..., Any], iterable: Iterable[Any],
            chunksize: int | None = None) -> list[Any]:
        """``[func(x) for x in iterable]``, run in the workers."""
        return self.map_async(func, iterable, chunksize).get()  # type: ignore[no-any-return]

    def starmap(self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]],
                chunksize: int | None = None) -> list[Any]:
        """``[func(*args) for args in iterable]``, run in the workers."""
        return self.starmap_async(func, iterable, chunksize).get()  # type: ignore[no-any-return]

    def _imap(self, cls: type[IMapIterator], func: Callable[..., Any],
              iterable: Iterable[Any], chunksize: int) -> Iterator[Any]:
        if not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize!r}")
        job = cls(func, iterable, chunksize)
        self._submit(job)
        if chunksize == 1:
            return job
        return (value for chunk in job for value in chunk)

    def imap(self, func: Callable[..., Any], iterable: Iterable[Any],
             chunksize: int = 1) -> Iterator[Any]:
        """``func(x)`` for each item, in order, as they come; ``iterable`` is
        read lazily, ``chunksize`` items per task. With ``chunksize`` 1 an
        :class:`IMapIterator` (``next(timeout)``), else a generator, as in
        ``multiprocessing``."""
        return self._imap(IMapIterator, func, iterable, chunksize)

    def imap_unordered(self, func: Callable[..., Any], iterable: Iterable[Any],
                       chunksize: int = 1) -> Iterator[Any]:
        """As :meth:`imap`, the results in the order they are done."""
        return self._imap(IMapUnorderedIterator, func, iterable, chunksize)

    # -------------------------------------------------------- lifecycle --
    def close(self) -> None:
        """No more tasks: the workers leave once the submitted ones are done."""
        with self._lock:
            if self._state != RUN:
                return
            self._state = CLOSE
        self._inbox.put(None)

    def terminate(self) -> None:
        """Stop now: the workers are killed, tasks not done fail with
        :class:`~shmring.Closed`, and the pool's segments are removed."""
        with self._lock:
            if self._state == TERMINATE and self._joined:
                return
            self._state = TERMINATE
        self._inbox.put(None)
        self._run.cancel()
        self._finish()
        self._at_exit.cancel()

    def join(self) -> None:
        """Wait for the workers to leave (after :meth:`close` or
        :meth:`terminate`)."""
        if self._state == RUN:
            raise ValueError("Pool is still running")
        self._finish()

    def _finish(self) -> None:
        self._collector.join()
        with self._lock:
            if self._joined:
                return
            self._joined = True
        self._run.__exit__(None, None, None)
        self._at_exit.cancel()

    def __reduce__(self) -> Any:
        raise NotImplementedError("pool objects cannot be passed between processes or pickled")

    def __enter__(self) -> Pool:
        if self._state != RUN:
            raise ValueError("Pool not running")
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()

    def __del__(self) -> None:
        if getattr(self, "_state", TERMINATE) == RUN:
            warnings.warn(f"unclosed running multiprocessing pool {self!r}", ResourceWarning,
                          stacklevel=2, source=self)

    def __repr__(self) -> str:
        return (f"<{type(self).__module__}.{type(self).__qualname__} "
                f"state={getattr(self, '_state', '?')} pool_size={self._processes}>")

    # ----------------------------------------------------------- status --
    @property
    def _pool(self) -> list[multiprocessing.process.BaseProcess]:
        """The live worker processes (``multiprocessing.Pool._pool``)."""
        return [p for p in list(self._run._stage("task").procs.values()) if p.is_alive()]

    @property
    def stats(self) -> dict[str, Any]:
        """The workers' counts (``Pipeline`` run stats of the pool's stage:
        ``in``, ``redelivered``, ``dead_lettered``, ``restarts``...) and
        ``unmatched``, outcomes that matched no task waiting for one (two
        of one task would count here: 0, by exactly once)."""
        return {**self._run.stats.get("task", {}), "unmatched": self._unmatched}


def _terminate_at_exit(ref: weakref.ref[Pool]) -> None:
    pool = ref()
    if pool is not None:
        pool.terminate()


def _start_method(context: Any) -> str:
    methods = multiprocessing.get_all_start_methods()
    if context is None:
        return "fork" if "fork" in methods else methods[0]
    method = context if isinstance(context, str) else context.get_start_method()
    if method not in methods:
        raise InvalidArgument(f"context must be one of {', '.join(methods)}")
    return str(method)

