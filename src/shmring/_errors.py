"""The exceptions shmring raises, by meaning.

One base, :class:`ShmringError`; each subclass also derives from the builtin
that callers already catch where one fits (``Timeout`` is a ``TimeoutError``,
``RegionNotFound`` a ``FileNotFoundError``, bad arguments are ``ValueError``).
Full and empty are not errors on the blocking calls: they wait. Only the
``*_nowait`` forms raise :class:`WouldBlock`.
"""

from __future__ import annotations


class ShmringError(Exception):
    """Base class of every error shmring raises."""


class Timeout(ShmringError, TimeoutError):
    """A blocking call's timeout passed before it could complete."""


class WouldBlock(ShmringError):
    """A ``*_nowait`` call found the channel full (send) or empty (receive)."""


class EndOfStream(ShmringError):
    """The channel was closed for sending and every message has been received."""


class Closed(ShmringError):
    """You closed this channel or endpoint, or sending was closed (``close_send``)."""


class Broken(ShmringError):
    """The other side broke: a peer died leaving state that cannot be recovered,
    or the region is corrupt."""


class CorruptRegion(Broken):
    """Bytes in the segment break an invariant of the layout; nothing was read
    out of bounds."""


class MessageTooLarge(ShmringError, ValueError):
    """A message is larger than the channel's ``max_message``; nothing was written."""


class InvalidArgument(ShmringError, ValueError):
    """A bad name, size, pattern or option."""


class RoleTaken(ShmringError):
    """A second producer (or consumer) on a pattern that allows only one."""


class RegionExists(ShmringError, FileExistsError):
    """A region of that name already exists."""


class RegionNotFound(ShmringError, FileNotFoundError):
    """No region of that name exists."""


class PermissionDenied(ShmringError, PermissionError):
    """The region (or supervisor) belongs to another user."""


class NoSpace(ShmringError, OSError):
    """``/dev/shm`` has no room for the region (ENOSPC at creation)."""


class AttachTableFull(ShmringError):
    """Every attach slot of the region is taken; create it with more ``slots``."""
