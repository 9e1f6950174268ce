"""Child processes under a watchdog.

Every party of a measurement (producer, consumer, pinger...) runs in its own
forked process and reports one result dict through its own pipe. The parent
waits for all of them until a deadline, then kills whatever is left.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection as mpc
import time
from collections.abc import Callable, Sequence
from threading import BrokenBarrierError
from typing import Any

MP = mp.get_context("fork")

Party = tuple[Callable[..., dict[str, Any]], tuple[Any, ...]]


class RunTimeout(Exception):
    """The parties did not all report before the deadline."""


class PartyError(Exception):
    """A party raised, or died without reporting."""


def _child(fn: Callable[..., dict[str, Any]], args: tuple[Any, ...], out: mpc.Connection) -> None:
    """Body of a child process: run ``fn`` and send ``(ok, result_or_error)``."""
    try:
        result = fn(*args)
    except BaseException as exc:  # everything is reported to the parent
        out.send((False, f"{type(exc).__name__}: {exc}"))
    else:
        out.send((True, result))
    finally:
        out.close()


def run_parties(parties: Sequence[Party], deadline: float) -> list[dict[str, Any]]:
    """Run each ``(fn, args)`` in a forked child; return their results in order.

    Raises :class:`RunTimeout` when the deadline passes, :class:`PartyError`
    when a party fails (its own error is preferred over the
    ``BrokenBarrierError`` it causes in the others). Children are always reaped.
    """
    procs: list[Any] = []
    pending: dict[mpc.Connection, int] = {}
    try:
        for fn, args in parties:
            reader, writer = MP.Pipe(duplex=False)
            proc = MP.Process(target=_child, args=(fn, args, writer), daemon=True)
            proc.start()
            writer.close()
            procs.append(proc)
            pending[reader] = len(procs) - 1
        return _collect(procs, pending, time.monotonic() + deadline)
    finally:
        for conn in pending:
            conn.close()
        _reap(procs)


def _collect(
    procs: list[Any], pending: dict[mpc.Connection, int], end: float
) -> list[dict[str, Any]]:
    """Gather one message per pending connection until ``end``."""
    results: list[dict[str, Any]] = [{} for _ in procs]
    errors: list[str] = []
    while pending:
        left = end - time.monotonic()
        if left <= 0:
            break
        for conn in mpc.wait(list(pending), timeout=left):
            index = pending.pop(conn)
            try:
                ok, payload = conn.recv()
            except EOFError:
                procs[index].join(1.0)
                ok, payload = False, f"party {index} died (exit code {procs[index].exitcode})"
            conn.close()
            if ok:
                results[index] = payload
            else:
                errors.append(payload)
                end = min(end, time.monotonic() + 1.0)  # let the root cause arrive
    if errors:
        root = [e for e in errors if not e.startswith(BrokenBarrierError.__name__)]
        raise PartyError((root or errors)[0])
    if pending:
        raise RunTimeout(f"{len(pending)} of {len(procs)} processes did not finish in time")
    return results


def _reap(procs: list[Any], grace: float = 2.0) -> None:
    """Join children, killing those still alive after ``grace`` seconds."""
    end = time.monotonic() + grace
    for proc in procs:
        proc.join(max(0.0, end - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join(5.0)
