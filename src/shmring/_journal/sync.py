"""When appended records are made durable: the ``sync=`` policy, and the
flusher thread of ``"interval:<n>ms"``.

- ``"none"``: only ``flush()``, a segment's sealing and ``close()`` msync;
- ``"always"``: every append msyncs before it returns;
- ``"interval:<n>ms"``: a thread msyncs what was appended every n ms;
- ``"bytes:<n>"``: an append msyncs once n bytes were appended since the
  last msync.

On Linux ``msync(MS_ASYNC)`` only marks pages dirty, which a shared mapping
already is, so every policy calls ``msync(MS_SYNC)`` (``mmap.flush``). An
error from it is fatal for the writer: the flusher keeps it, and the
writer's next call raises it as :class:`~shmring.SyncFailed` (as does the
call that met it), never retrying, because after a failed msync the kernel
may already have dropped the dirty pages (the fsync-gate lesson).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import NamedTuple

from .._errors import InvalidArgument

_INTERVAL = re.compile(r"^interval:(\d+)ms$")
_BYTES = re.compile(r"^bytes:(\d+)$")


class Policy(NamedTuple):
    """A parsed ``sync=``: its kind, and its interval (s) or byte count."""

    kind: str  # "none" | "always" | "interval" | "bytes"
    interval: float = 0.0
    nbytes: int = 0


def parse(sync: object) -> Policy:
    """Parse a ``sync=`` string; :class:`InvalidArgument` if it is not one."""
    if not isinstance(sync, str):
        raise InvalidArgument(f"sync must be a str, not {type(sync).__name__}")
    if sync in ("none", "always"):
        return Policy(sync)
    m = _INTERVAL.match(sync)
    if m and 1 <= int(m.group(1)) <= 3_600_000:
        return Policy("interval", interval=int(m.group(1)) / 1000)
    m = _BYTES.match(sync)
    if m and 1 <= int(m.group(1)) <= 1 << 40:
        return Policy("bytes", nbytes=int(m.group(1)))
    raise InvalidArgument(f"sync={sync!r}: expected 'none', 'always', 'interval:<n>ms' "
                          f"(1..3600000) or 'bytes:<n>' (n >= 1)")


class Flusher:
    """The thread of the interval policy: calls ``flush`` every interval
    until stopped or until ``flush`` raises (it keeps the error)."""

    def __init__(self, interval: float, flush: Callable[[], object]) -> None:
        self._interval = interval
        self._flush = flush
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="shmring-journal-flusher",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._flush()
            except BaseException as e:  # kept, and raised by the writer
                self.error = e
                return

    def stop(self) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
