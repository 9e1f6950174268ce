"""``shmring.Pipeline``: stages of worker processes joined by channels, each
item passed on exactly once whatever worker is killed (docs/design.md,
"Pipelines")."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable
from typing import Any

from .._errors import InvalidArgument
from .run import Run
from .stage import StageSpec, Stream, stage_name


class Pipeline:
    """A chain of stages fed by one source, run by worker processes.

    Example::

        import shmring

        def square(x: int) -> int:
            return x * x

        p = shmring.Pipeline("squares")
        p.source(range(10)).map(square, workers=2)
        with p.run() as run:
            print(sorted(run))

    ``name`` names its channels (``shmring ls`` shows them while it runs);
    ``context`` is the ``multiprocessing`` start method of its workers
    (``"fork"``, the default where there is one, runs lambdas and closures;
    ``"spawn"`` and ``"forkserver"`` need functions importable by name);
    ``namespace``, the channels' namespace.
    """

    def __init__(self, name: str, *, context: str | None = None,
                 namespace: str | None = None) -> None:
        if not isinstance(name, str) or not name or len(name) > 64 or not all(
                c.isalnum() or c in "_-" for c in name):
            raise InvalidArgument(f"bad pipeline name {name!r}: use 1-64 letters, digits, "
                                  "'_' or '-'")
        methods = multiprocessing.get_all_start_methods()
        if context is None:
            context = "fork" if "fork" in methods else methods[0]
        if context not in methods:
            raise InvalidArgument(f"context must be one of {', '.join(methods)}")
        self.name = name
        self.context = context
        self.namespace = namespace
        self._source: Iterable[Any] | None = None
        self._chunksize = 1
        self._stages: list[StageSpec] = []
        self._runs = 0

    def source(self, iterable: Iterable[Any], *, chunksize: int = 1) -> Stream:
        """Feed the pipeline from ``iterable`` (read lazily, in the parent, no
        further ahead than the first edge has room for). ``chunksize``: items
        travel in chunks of up to that many, one record each (faster for
        small items; ``max_inflight`` then counts chunks). Exactly once holds
        as for single items; a chunk's items are run one after another by
        one worker."""
        if self._source is not None:
            raise InvalidArgument("a pipeline has one source")
        if not isinstance(chunksize, int) or not 1 <= chunksize <= 1 << 20:
            raise InvalidArgument("chunksize must be 1..1048576")
        iter(iterable)  # a TypeError now, not in the feeder thread
        self._source = iterable
        self._chunksize = chunksize
        return Stream(self._add_stage, 0)

    def _add_stage(self, position: int, kind: str, fn: Callable[..., Any],
                   kw: dict[str, Any]) -> Stream:
        if position != len(self._stages):
            raise InvalidArgument("a pipeline is one chain: add each stage to the stream "
                                  "the previous one returned")
        name = stage_name(fn, kw.pop("name"))
        taken = {s.name for s in self._stages}
        unique, n = name, 2
        while unique in taken:
            unique, n = f"{name}-{n}", n + 1
        spec = StageSpec(kind, fn, unique, **kw)
        spec.check()
        self._stages.append(spec)
        return Stream(self._add_stage, len(self._stages))

    @property
    def stages(self) -> list[str]:
        """The stages' names, in order."""
        return [s.name for s in self._stages]

    def run(self, *, on_error: str = "raise", progress: bool = False) -> Run:
        """Start every stage's workers; use the result as a context manager.
        ``on_error``: ``"raise"`` (the first exception in a worker stops the
        run and is raised here as :class:`~shmring.RemoteError`), ``"skip"``
        (the item is dropped and counted), ``"dead_letter"`` (it goes to
        ``run.dead_letters`` with the exception text). ``progress``: a line
        of counts on stderr while it runs."""
        if self._source is None:
            raise InvalidArgument("the pipeline has no source: call source() first")
        self._runs += 1
        return Run(f"{self.name}.{os.getpid()}.{self._runs}", self.context, self.namespace,
                   self._source, list(self._stages), on_error, progress, self._chunksize)
