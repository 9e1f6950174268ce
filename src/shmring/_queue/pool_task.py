"""A :class:`~shmring.Pool` task as it travels: the bytes the parent sends
(``encode_task``), what a worker does with them (``execute``, the function
of the pool's one pipeline stage), and the outcome read back
(``decode_outcome``).

A task is ``(task id, pickled (mode, func, args, kwds))``, pickled by the
parent with ``multiprocessing``'s reduction, so it fails there (and only its
result) if it cannot travel. The worker answers with bytes: the task id
(8 bytes, little endian) and the pickled ``(status, value)``. Pickling the
outcome in the worker, not leaving it to the ring, keeps a result that
cannot be pickled, or is too large for the pool's edge, the task's failure
instead of the pool's.
"""

from __future__ import annotations

import itertools
import multiprocessing.pool as _mp_pool
import traceback
from collections.abc import Callable
from multiprocessing.reduction import ForkingPickler
from typing import Any

from .._errors import MessageTooLarge, RemoteError
from .pool_results import APPLY, MAP, Task

#: Outcomes: a result; an exception that pickles (raised as itself, its
#: remote traceback as ``__cause__``); one that does not (its type, text and
#: traceback: a RemoteError in the parent).
OK, ERROR, REMOTE = 0, 1, 2
# multiprocessing's own wrappers (not in its type stubs): an exception that
# unpickles with its remote traceback as __cause__, and the error of a
# result that cannot be pickled.
ExceptionWithTraceback: Any = _mp_pool.__dict__["ExceptionWithTraceback"]
MaybeEncodingError: Any = _mp_pool.__dict__["MaybeEncodingError"]


def dumps(obj: Any) -> bytes:
    """``obj`` pickled as ``multiprocessing`` pickles what it sends."""
    return bytes(ForkingPickler.dumps(obj))


def encode_task(task: Task) -> bytes:
    """The pickled task; raises whatever pickling raises."""
    return dumps(task)


def initialize(initializer: Callable[..., object] | None, initargs: tuple[Any, ...],
               limit: int) -> int:
    """A worker's ``init``: the pool's ``initializer``, once per worker;
    the state it keeps is the largest outcome its edge takes."""
    if initializer is not None:
        initializer(*initargs)
    return limit


def execute(task: tuple[int, bytes], limit: int) -> bytes:
    """Run one task in a worker: its outcome, encoded."""
    tid, payload = task
    head = tid.to_bytes(8, "little")
    try:
        mode, func, args, kwds = ForkingPickler.loads(payload)
        if mode == APPLY:
            value: Any = func(*args, **kwds)
        elif mode == MAP:
            value = list(map(func, args))
        else:
            value = list(itertools.starmap(func, args))
        status = OK
    except Exception as e:
        status, value = ERROR, e
    if status == OK:
        try:
            out = head + dumps((OK, value))
        except Exception as e:  # as multiprocessing: the task fails, not the worker
            out = head + dumps((ERROR, MaybeEncodingError(e, value)))
    else:
        out = _error(head, value)
    if len(out) > limit:
        err = MessageTooLarge(f"the task's result is {len(out)} bytes pickled; the pool "
                              f"takes at most {limit} (Pool(max_bytes=...))")
        out = _error(head, err)
    return out


def _error(head: bytes, e: BaseException) -> bytes:
    try:
        return head + dumps((ERROR, ExceptionWithTraceback(e, e.__traceback__)))
    except Exception:
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        return head + dumps((REMOTE, (type(e).__qualname__, str(e)[:4096], tb)))


def decode_outcome(out: bytes) -> tuple[int, bool, Any]:
    """``(task id, ok, value)`` of a worker's answer; ``value`` is the
    exception to raise when not ``ok``."""
    tid = int.from_bytes(out[:8], "little")
    try:
        status, value = ForkingPickler.loads(out[8:])
    except Exception as e:  # the result cannot be rebuilt here
        return tid, False, e
    if status == OK:
        return tid, True, value
    if status == REMOTE:
        name, text, tb = value
        return tid, False, RemoteError(
            f"the task raised {name}: {text} (the exception cannot be pickled)\n{tb}",
            stage="pool", remote_traceback=tb)
    return tid, False, value


def describe(item: Any, fallback: str) -> str:
    """A task named for an error: its function and arguments, read back
    from the item a dead note carries (``fallback`` if it cannot be)."""
    try:
        _tid, payload = item
        mode, func, args, kwds = ForkingPickler.loads(payload)
        name = getattr(func, "__qualname__", None) or repr(func)
        if mode == APPLY:
            parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in (kwds or {}).items()]
            text = f"{name}({', '.join(parts)})"
        else:
            text = f"{name} over the chunk {args!r}"
    except Exception:
        return fallback
    return text if len(text) <= 300 else text[:297] + "..."
