"""Child processes under a watchdog.

Every party of a measurement (producer, consumer, pinger...) runs in its own
forked process and reports one result dict through its own pipe. The parent
waits for all of them until a deadline, then kills whatever is left.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection as mpc
import signal
import time
from collections.abc import Callable, Sequence
from threading import BrokenBarrierError
from typing import Any, TypeVar

MP = mp.get_context("fork")

Party = tuple[Callable[..., dict[str, Any]], tuple[Any, ...]]
T = TypeVar("T")


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
    grace = 0.2  # on failure, kill the rest promptly
    try:
        for fn, args in parties:
            reader, writer = MP.Pipe(duplex=False)
            proc = MP.Process(target=_child, args=(fn, args, writer), daemon=True)
            proc.start()
            writer.close()
            procs.append(proc)
            pending[reader] = len(procs) - 1
        results = _collect(procs, pending, time.monotonic() + deadline, parties)
        grace = 2.0  # all reported: give them time to exit on their own
        return results
    finally:
        for conn in pending:
            conn.close()
        _reap(procs, grace)


def _collect(
    procs: list[Any], pending: dict[mpc.Connection, int], end: float, parties: Sequence[Party]
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
        late = ", ".join(parties[i][0].__name__ for i in sorted(pending.values()))
        raise RunTimeout(f"{len(pending)} of {len(procs)} processes did not finish in time: {late}")
    return results


def _reap(procs: list[Any], grace: float) -> None:
    """Join children, killing those still alive after ``grace`` seconds."""
    end = time.monotonic() + grace
    for proc in procs:
        proc.join(max(0.0, end - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join(5.0)


def in_time(seconds: float, fn: Callable[..., T], *args: Any) -> T:
    """Call ``fn(*args)`` in this process; raise :class:`RunTimeout` after ``seconds``.

    For the parent's own steps (creating and destroying channels), which no child
    watchdog covers. Uses SIGALRM, so a blocking call is interrupted at its next
    signal check.
    """

    def on_alarm(signum: int, frame: object) -> None:
        raise RunTimeout(f"{getattr(fn, '__name__', 'call')} took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
