"""Mappings that survive a truncated segment.

Any process of a segment's owner can shrink it (``truncate -s 100
/dev/shm/shmring.ns.name``); a process that then touches a mapped page past
the new end gets SIGBUS and dies. Every mapping of a region is made through
:func:`watch`, which hands its address range to the extension's SIGBUS guard
(``csrc/guard.c``): a fault inside it maps a zero page over the faulting page
and is counted, so the process lives, and whoever touched the mapping asks
:func:`faulted` (endpoints: the extension itself, at every call) and reports
the region broken instead of trusting what it read.

:func:`unmap` closes a mapping and forgets its range; one still exported (a
call in another thread holds it) is forgotten when its last export goes.
"""

from __future__ import annotations

import contextlib
import mmap
import weakref

from .. import _core

_watched: dict[int, weakref.finalize[..., mmap.mmap]] = {}


def _forget(key: int, address: int) -> None:
    _watched.pop(key, None)
    _core.unwatch(address)


def watch(buf: mmap.mmap) -> mmap.mmap:
    """Guard ``buf`` (a new mapping of a segment) and return it."""
    key = id(buf)
    _watched[key] = weakref.finalize(buf, _forget, key, _core.watch(buf))
    return buf


def unmap(buf: mmap.mmap) -> None:
    """Unmap ``buf`` now if nothing exports it (else when the last export
    goes), and stop guarding its range once it is unmapped."""
    try:
        buf.close()
    except BufferError:
        return  # unmapped, and forgotten, when the last reference goes
    fin = _watched.get(id(buf))
    if fin is not None:
        fin()


def faulted(buf: mmap.mmap) -> bool:
    """True if a page of ``buf`` faulted: its segment was truncated under it
    (what was read from it since is zeros, not the region)."""
    with contextlib.suppress(ValueError):  # closed
        return _core.faults(buf) > 0
    return False
