"""Who is on the other side of a channel, in the words of an error.

A send that times out waiting for space says whether any live consumer is
there to make room (``Channel.consumers``): "nobody has opened it" and "the
consumer is slow" call for different fixes. The extension calls
:func:`space_hint` on that error path only (registered with
``_core.set_space_hint`` when this module is imported); the asyncio waits
call it too, so both say the same.
"""

from __future__ import annotations

from typing import Protocol

from .. import _core


class _Counted(Protocol):
    """What the hint needs of the channel that made an endpoint."""

    @property
    def closed(self) -> bool: ...

    @property
    def consumers(self) -> int: ...


def space_hint(producer: object) -> str | None:
    """Why ``producer`` found no space: whether any live consumer is
    attached to its channel; None if that cannot be told (no channel)."""
    channel: _Counted | None = getattr(producer, "_channel", None)
    if channel is None or channel.closed:
        return None
    n = channel.consumers
    orphans = getattr(channel, "_orphans", None)
    held = orphans() if orphans is not None else 0
    durable = (f"; {held} durable subscription{'s are' if held > 1 else ' is'} held for a "
               "dead process (the producer waits until a new process takes it over or its "
               "hold ends)") if held else ""
    if n == 0:
        return ("no live consumer is attached (none has opened it yet, or every one "
                "closed or died)" + durable)
    return f"{n} live consumer{'s' if n > 1 else ''} attached, not keeping up" + durable


_core.set_space_hint(space_hint)
