"""A stop request for the long-running journal commands (``record``,
``replay --follow``, ``cat --follow``): SIGINT and SIGTERM set a flag that
the command's loop reads between two short waits, so it leaves at a point
of its choosing (after the record in hand is written, before the flush)
instead of wherever the signal landed.

A second signal of either kind while the command is already stopping
raises ``KeyboardInterrupt``: a person who presses Ctrl-C twice gets out
even if the way out is stuck (a full disk, a consumer that never reads).
"""

from __future__ import annotations

import signal
import types
from collections.abc import Iterator
from contextlib import contextmanager

#: How long one wait of a stoppable loop lasts (seconds): the longest a stop
#: request waits to be seen.
POLL = 0.1


class Stop:
    """Whether SIGINT or SIGTERM has asked the command to stop, and which."""

    def __init__(self) -> None:
        self.signal: int | None = None

    @property
    def requested(self) -> bool:
        """True once a stop signal arrived."""
        return self.signal is not None

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum


@contextmanager
def stop_on_signals() -> Iterator[Stop]:
    """Catch SIGINT and SIGTERM for the duration of the block (the previous
    handlers are put back after it)."""
    stop = Stop()
    old = {s: signal.signal(s, stop._handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)
