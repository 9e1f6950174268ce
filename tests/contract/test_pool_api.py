"""shmring.Pool's surface is multiprocessing.Pool's: every public method
there is here, taking the same parameters in the same order with the same
defaults (shmring's additions come after, keyword-only), and the result
objects have AsyncResult's and IMapIterator's methods."""

from __future__ import annotations

import inspect
import multiprocessing.pool

import pytest

from shmring._queue import pool_results
from shmring._queue.pool import Pool

MP_POOL = multiprocessing.pool.Pool
# ``Process`` is multiprocessing's factory of its own worker processes, a
# hook of its internals (a shmring pool's workers are the pipeline's).
PUBLIC = sorted(n for n, v in vars(MP_POOL).items()
                if not n.startswith("_") and callable(v) and n != "Process")


def _params(fn: object) -> list[tuple[str, object, object]]:
    sig = inspect.signature(fn)  # type: ignore[arg-type]
    # ``kwds={}`` there is ``kwds=None`` here (no shared mutable default):
    # either means no keyword arguments.
    return [(p.name, p.kind, None if p.default == {} else p.default)
            for p in sig.parameters.values()]


def test_the_public_methods_are_all_there() -> None:
    assert {"map", "imap", "imap_unordered", "starmap", "apply", "apply_async", "map_async",
            "starmap_async", "close", "terminate", "join"} <= set(PUBLIC)
    missing = [n for n in PUBLIC if not callable(getattr(Pool, n, None))]
    assert missing == []
    for dunder in ("__enter__", "__exit__", "__del__", "__repr__"):
        assert dunder in vars(Pool)


@pytest.mark.parametrize("name", [*PUBLIC, "__init__"])
def test_same_parameters_as_multiprocessing(name: str) -> None:
    ours = _params(getattr(Pool, name))
    theirs = _params(getattr(MP_POOL, name))
    assert ours[:len(theirs)] == theirs
    extra = ours[len(theirs):]
    assert all(kind == inspect.Parameter.KEYWORD_ONLY for _, kind, _ in extra), extra


def test_result_objects_have_multiprocessings_methods() -> None:
    for ours, theirs in ((pool_results.AsyncResult, multiprocessing.pool.ApplyResult),
                         (pool_results.MapResult, multiprocessing.pool.MapResult),
                         (pool_results.IMapIterator, multiprocessing.pool.IMapIterator)):
        public = {n for n, v in vars(theirs).items() if not n.startswith("_") and callable(v)}
        public |= {"__next__", "__iter__"} & set(vars(theirs))
        assert {n for n in public if not hasattr(ours, n)} == set(), ours
    assert pool_results.ApplyResult is pool_results.AsyncResult
