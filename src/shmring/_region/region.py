"""Regions: named POSIX shared-memory segments with a validated header and an
attach table.

Creation follows DESIGN.md: ``shm_open(O_CREAT|O_EXCL, 0600)`` so nobody can
squat a name, ``ftruncate`` then ``posix_fallocate`` so a full ``/dev/shm`` is
a clean :class:`NoSpace` at creation rather than a ``SIGBUS`` on some later
write, then the header, whose magic is stored last (with release order) to
publish it. An attacher opens with size 0 (a non-zero size would resize
somebody else's segment), waits briefly for the magic, and checks every field
against the real segment size before trusting any.

Every name lives under ``/shmring.<namespace>.``: shmring never touches a
segment it did not make. Ownership of the segment's lifetime belongs to the
supervisor; a Region never unlinks behind anybody's back (compare CPython's
``shared_memory`` resource tracker, gh-82300), only when asked.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import re
import struct
import time
from dataclasses import dataclass

import posix_ipc

from .. import _core
from .. import _layout as L
from .._errors import (
    AttachTableFull,
    CorruptRegion,
    InvalidArgument,
    NoSpace,
    PermissionDenied,
    RegionExists,
    RegionNotFound,
)
from .._proc import alive, my_start_time, start_time

PREFIX = "shmring"
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}\Z")
_NS_RE = re.compile(r"[A-Za-z0-9_\-]{1,40}\Z")
_RECOVERING = 1 << 63


def default_namespace() -> str:
    """The namespace used when none is given: ``$SHMRING_NAMESPACE`` or ``default``."""
    return os.environ.get("SHMRING_NAMESPACE", "default")


def check_namespace(namespace: str) -> str:
    """Validate a namespace (letters, digits, ``_`` and ``-``, at most 40)."""
    if not isinstance(namespace, str) or not _NS_RE.match(namespace):
        raise InvalidArgument(
            f"bad namespace {namespace!r}: use 1-40 letters, digits, '_' or '-'"
        )
    return namespace


def segment_name(name: str, namespace: str | None = None) -> str:
    """The POSIX shm name (``/shmring.<ns>.<name>``) for a channel name."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidArgument(
            f"bad region name {name!r}: use 1-200 letters, digits, '_', '-' or '.', "
            "not starting with '.' or '-'"
        )
    ns = check_namespace(default_namespace() if namespace is None else namespace)
    return f"/{PREFIX}.{ns}.{name}"


def split_segment_name(seg: str) -> tuple[str, str] | None:
    """(namespace, name) of a segment shmring made, or None for a foreign one."""
    seg = seg.lstrip("/")
    parts = seg.split(".", 2)
    if len(parts) != 3 or parts[0] != PREFIX:
        return None
    if not _NS_RE.match(parts[1]) or not _NAME_RE.match(parts[2]):
        return None
    return parts[1], parts[2]


@dataclass(frozen=True)
class SlotInfo:
    """One entry of the attach table, as read at one moment."""

    index: int
    pid: int
    start_time: int
    role: str
    state: int
    claim_pos: int | None
    cursor: int
    messages: int
    bytes: int
    missed: int


def _open_segment(seg: str, flags: int, mode: int) -> posix_ipc.SharedMemory:
    try:
        return posix_ipc.SharedMemory(seg, flags, mode=mode, size=0)
    except posix_ipc.ExistentialError as e:
        if flags & posix_ipc.O_CREAT:
            raise RegionExists(f"region {seg!r} already exists: open it, or pick another "
                               "name (`shmring ls` lists regions)") from e
        raise RegionNotFound(f"no region {seg!r}: create it first, or check the name and "
                             "namespace") from e
    except posix_ipc.PermissionsError as e:
        raise PermissionDenied(f"region {seg!r} belongs to another user") from e
    except ValueError as e:
        raise InvalidArgument(f"bad region name {seg!r}: {e}") from e


class Region:
    """A named shared-memory segment holding one ring, its header and its
    attach table.

    Use :meth:`create` or :meth:`attach`; :class:`shmring.Channel` does both
    for you. ``buf`` is the writable mapping of the whole segment.
    """

    def __init__(self, name: str, seg: str, buf: mmap.mmap, size: int) -> None:
        self.name = name
        self.segment = seg
        self.buf: mmap.mmap | None = buf
        self.size = size

    # --------------------------------------------------------- lifecycle --
    @classmethod
    def create(
        cls,
        name: str,
        size: int,
        *,
        mode: int = 0o600,
        pattern: str = "spsc",
        max_message: int | None = None,
        slots: int = 64,
        lossy: bool = False,
        persistent: bool = False,
        namespace: str | None = None,
    ) -> Region:
        """Create region ``name`` whose ring holds ``size`` bytes (a power of
        two, at least 1024).

        Raises :class:`RegionExists` if the name is taken, :class:`NoSpace`
        if ``/dev/shm`` cannot hold it, :class:`InvalidArgument` for a bad
        name, size, pattern or option.
        """
        seg = segment_name(name, namespace)
        if pattern not in L.PATTERNS:
            raise InvalidArgument(
                f"unknown pattern {pattern!r}: use one of {', '.join(L.PATTERNS)}"
            )
        if not isinstance(size, int) or size < L.MIN_CAPACITY or size > L.MAX_CAPACITY or (
            size & (size - 1)
        ):
            raise InvalidArgument(
                f"capacity {size!r} must be a power of two between {L.MIN_CAPACITY} and "
                f"{L.MAX_CAPACITY} bytes"
            )
        limit = size // 2 - L.RECORD_HEADER
        if max_message is None:
            max_message = size // 4 - L.RECORD_HEADER
        if not isinstance(max_message, int) or not 1 <= max_message <= limit:
            raise InvalidArgument(
                f"max_message {max_message!r} must be between 1 and {limit} "
                "(half the capacity less a record header)"
            )
        if not isinstance(slots, int) or not 1 <= slots <= L.MAX_SLOTS:
            raise InvalidArgument(f"slots must be between 1 and {L.MAX_SLOTS}")
        if lossy and pattern != "broadcast":
            raise InvalidArgument("lossy applies to the broadcast pattern only")
        doff = L.data_offset(slots)
        total = doff + size
        shm = _open_segment(seg, posix_ipc.O_CREX, mode)
        try:
            os.ftruncate(shm.fd, total)
            try:
                os.posix_fallocate(shm.fd, 0, total)
            except OSError as e:
                if e.errno == errno.ENOSPC:
                    raise NoSpace(
                        f"/dev/shm has no room for region {name!r} ({total} bytes): "
                        "free space or use a smaller capacity"
                    ) from e
                raise
            buf = mmap.mmap(shm.fd, total, mmap.MAP_SHARED | mmap.MAP_POPULATE,
                            mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            shm.close_fd()
            shm.unlink()
            raise
        shm.close_fd()
        flags = (L.FLAG_LOSSY if lossy else 0) | (L.FLAG_PERSISTENT if persistent else 0)
        struct.pack_into("<I", buf, L.HDR_VERSION, L.LAYOUT_VERSION)
        struct.pack_into("<I", buf, L.HDR_PATTERN, L.PATTERNS[pattern])
        struct.pack_into("<Q", buf, L.HDR_TOTAL_SIZE, total)
        struct.pack_into("<Q", buf, L.HDR_CAPACITY, size)
        struct.pack_into("<Q", buf, L.HDR_MAX_MESSAGE, max_message)
        struct.pack_into("<I", buf, L.HDR_SLOT_COUNT, slots)
        struct.pack_into("<I", buf, L.HDR_FLAGS, flags)
        struct.pack_into("<Q", buf, L.HDR_CREATED_NS, time.time_ns())
        struct.pack_into("<Q", buf, L.HDR_DATA_OFFSET, doff)
        struct.pack_into("<Q", buf, L.HDR_CREATOR_PID, os.getpid())
        for i in range(slots):
            struct.pack_into("<Q", buf, L.slot_offset(i) + L.SLOT_CLAIM_POS, L.CLAIM_NONE)
        # Publication: everything above is visible before the magic (pairs
        # with the attacher's acquire load in _wait_published).
        _core.store(buf, L.HDR_MAGIC, L.SHMRING_MAGIC)
        return cls(name, seg, buf, total)

    @classmethod
    def attach(cls, name: str, *, namespace: str | None = None, timeout: float = 2.0) -> Region:
        """Map the existing region ``name``.

        Waits up to ``timeout`` seconds for a region being created to be
        published. Raises :class:`RegionNotFound`, :class:`PermissionDenied`,
        or :class:`CorruptRegion` if the segment is not a valid region.
        """
        seg = segment_name(name, namespace)
        shm = _open_segment(seg, 0, 0)
        try:
            deadline = time.monotonic() + timeout
            size = os.fstat(shm.fd).st_size
            while size < L.REGION_HEADER_SIZE and time.monotonic() < deadline:
                time.sleep(0.001)  # the creator has not sized it yet
                size = os.fstat(shm.fd).st_size
            if size < L.REGION_HEADER_SIZE:
                raise CorruptRegion(
                    f"segment {seg!r} is {size} bytes, smaller than a region header: "
                    "not a shmring region (remove it with `shmring gc`)"
                )
            buf = mmap.mmap(shm.fd, size, mmap.MAP_SHARED | mmap.MAP_POPULATE,
                            mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            shm.close_fd()
        region = cls(name, seg, buf, size)
        try:
            region._wait_published(deadline)
            region.validate()
        except BaseException:
            region.close()
            raise
        return region

    def _wait_published(self, deadline: float) -> None:
        buf = self._mapping()
        while _core.load(buf, L.HDR_MAGIC) != L.SHMRING_MAGIC:
            if time.monotonic() >= deadline:
                raise CorruptRegion(
                    f"segment {self.segment!r} has no shmring magic: not a region, or its "
                    "creator died while creating it (remove it with `shmring gc`)"
                )
            time.sleep(0.001)

    def validate(self) -> None:
        """Check every header field against the real segment size."""
        buf = self._mapping()
        version = struct.unpack_from("<I", buf, L.HDR_VERSION)[0]
        if version != L.LAYOUT_VERSION:
            raise CorruptRegion(
                f"region {self.name!r} has layout version {version}; this shmring "
                f"speaks {L.LAYOUT_VERSION}"
            )
        total = struct.unpack_from("<Q", buf, L.HDR_TOTAL_SIZE)[0]
        if total != self.size:
            raise CorruptRegion(
                f"region {self.name!r} says it is {total} bytes but the segment is "
                f"{self.size}"
            )
        _core.check_region(buf)
        doff = struct.unpack_from("<Q", buf, L.HDR_DATA_OFFSET)[0]
        if doff + self.capacity != self.size:
            raise CorruptRegion(f"region {self.name!r}: ring does not end the segment")

    def _mapping(self) -> mmap.mmap:
        if self.buf is None:
            from .._errors import Closed

            raise Closed(f"region {self.name!r} is closed")
        return self.buf

    def close(self) -> None:
        """Unmap the region (the segment stays until unlinked)."""
        if self.buf is not None:
            buf, self.buf = self.buf, None
            # A call in another thread may still use the mapping (an endpoint
            # closed under it releases it on its way out): the mapping is then
            # unmapped when that last reference goes.
            with contextlib.suppress(BufferError):
                buf.close()

    def unlink(self) -> None:
        """Remove the name; processes that have it mapped keep using it."""
        unlink_segment(self.segment)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self.buf is None

    # ------------------------------------------------------------ header --
    def _u32(self, off: int) -> int:
        return int(struct.unpack_from("<I", self._mapping(), off)[0])

    def _u64(self, off: int) -> int:
        return int(struct.unpack_from("<Q", self._mapping(), off)[0])

    @property
    def pattern(self) -> str:
        """The ring pattern: spsc, mpsc, mpmc or broadcast."""
        value = self._u32(L.HDR_PATTERN)
        try:
            return L.PATTERN_NAMES[value]
        except KeyError:  # the header was overwritten after it was validated
            raise CorruptRegion(f"region {self.name!r} has unknown pattern {value}") from None

    @property
    def capacity(self) -> int:
        """Bytes in the ring."""
        return self._u64(L.HDR_CAPACITY)

    @property
    def max_message(self) -> int:
        """Largest payload the ring accepts."""
        return self._u64(L.HDR_MAX_MESSAGE)

    @property
    def slot_count(self) -> int:
        """Entries in the attach table."""
        n = self._u32(L.HDR_SLOT_COUNT)
        if n > L.MAX_SLOTS or L.slot_offset(n) > self.size:
            # Overwritten after it was validated: walking it would leave the segment.
            raise CorruptRegion(f"region {self.name!r} has {n} attach slots: corrupt header")
        return n

    @property
    def flags(self) -> int:
        """FLAG_* bits of the header."""
        return self._u32(L.HDR_FLAGS)

    @property
    def lossy(self) -> bool:
        """True for a lossy broadcast ring."""
        return bool(self.flags & L.FLAG_LOSSY)

    @property
    def persistent(self) -> bool:
        """True if the region outlives its users until unlinked explicitly."""
        return bool(self.flags & L.FLAG_PERSISTENT)

    @property
    def created_ns(self) -> int:
        """Creation time, ns since the epoch."""
        return self._u64(L.HDR_CREATED_NS)

    def counter(self, off: int) -> int:
        """Acquire load of the 64-bit counter at ``off`` (an ``OFF_*`` constant)."""
        return int(_core.load(self._mapping(), off))

    # ------------------------------------------------------- attach table --
    def alloc_slot(self, role: int) -> int:
        """Take a free attach slot for this process in ``role``."""
        buf = self._mapping()
        pid, started = os.getpid(), my_start_time()
        for attempt in range(2):
            for i in range(self.slot_count):
                so = L.slot_offset(i)
                if _core.load(buf, so + L.SLOT_PID) != 0:
                    continue
                if not _core.cas(buf, so + L.SLOT_PID, 0, pid):
                    continue
                _core.store(buf, so + L.SLOT_START_TIME, started)
                _core.store32(buf, so + L.SLOT_ROLE, role)
                _core.store(buf, so + L.SLOT_CLAIM_POS, L.CLAIM_NONE)
                for field in (L.SLOT_CLAIM_LEN, L.SLOT_CURSOR, L.SLOT_MESSAGES, L.SLOT_BYTES,
                              L.SLOT_MISSED, L.SLOT_LAST_MSGNO):
                    _core.store(buf, so + field, 0)
                state = L.SLOT_ACTIVE if role != L.ROLE_CONSUMER else L.SLOT_CLOSING
                _core.store32(buf, so + L.SLOT_STATE, state)
                return i
            if attempt == 0 and not self.reap_dead():
                break
        raise AttachTableFull(
            f"all {self.slot_count} attach slots of region {self.name!r} are taken: "
            "close unused channels and endpoints, or create the region with more slots"
        )

    def free_slot(self, slot: int) -> None:
        """Give slot ``slot`` back."""
        buf = self.buf
        if buf is None:
            return
        so = L.slot_offset(slot)
        # The endpoint's counts outlive it in the header totals (`shmring ls`).
        role = _core.load32(buf, so + L.SLOT_ROLE)
        if role in (L.ROLE_PRODUCER, L.ROLE_CONSUMER):
            msgs, nbytes = (L.OFF_STATS_IN_MSGS, L.OFF_STATS_IN_BYTES) \
                if role == L.ROLE_PRODUCER else (L.OFF_STATS_OUT_MSGS, L.OFF_STATS_OUT_BYTES)
            _core.fetch_add(buf, msgs, _core.load(buf, so + L.SLOT_MESSAGES))
            _core.fetch_add(buf, nbytes, _core.load(buf, so + L.SLOT_BYTES))
        _core.store32(buf, so + L.SLOT_STATE, L.SLOT_FREE)
        _core.store32(buf, so + L.SLOT_ROLE, 0)
        # Start time 0 marks a slot being taken (alloc_slot sets it right
        # after winning the pid word): dead_slots leaves such a slot alone.
        _core.store(buf, so + L.SLOT_START_TIME, 0)
        _core.store(buf, so + L.SLOT_PID, 0)

    def slots(self) -> list[SlotInfo]:
        """A snapshot of every taken slot of the attach table."""
        buf = self._mapping()
        out = []
        for i in range(self.slot_count):
            so = L.slot_offset(i)
            pid = _core.load(buf, so + L.SLOT_PID)
            if pid == 0:
                continue
            claim = _core.load(buf, so + L.SLOT_CLAIM_POS)
            out.append(SlotInfo(
                index=i,
                pid=pid & ~_RECOVERING,
                start_time=_core.load(buf, so + L.SLOT_START_TIME),
                role=L.ROLE_NAMES.get(_core.load32(buf, so + L.SLOT_ROLE), "?"),
                state=_core.load32(buf, so + L.SLOT_STATE),
                claim_pos=None if claim == L.CLAIM_NONE else claim,
                cursor=_core.load(buf, so + L.SLOT_CURSOR),
                messages=_core.load(buf, so + L.SLOT_MESSAGES),
                bytes=_core.load(buf, so + L.SLOT_BYTES),
                missed=_core.load(buf, so + L.SLOT_MISSED),
            ))
        return out

    def recover_slot(self, slot: int, pid: int) -> bool:
        """Recover slot ``slot`` whose process ``pid`` is dead, then free it.

        Exactly one caller wins the slot (compare-exchange on its pid), so the
        supervisor and a process that finds a dead peer may both try. Returns
        True if this call did the recovery.
        """
        buf = self._mapping()
        so = L.slot_offset(slot)
        if not _core.cas(buf, so + L.SLOT_PID, pid, pid | _RECOVERING):
            return False
        _core.recover_slot(buf, slot)
        self.free_slot(slot)
        return True

    def dead_slots(self) -> list[tuple[int, int]]:
        """(slot, pid) of every slot whose process has exited."""
        buf = self._mapping()
        dead = []
        for i in range(self.slot_count):
            so = L.slot_offset(i)
            pid = _core.load(buf, so + L.SLOT_PID)
            if pid == 0 or pid & _RECOVERING:
                continue
            started = _core.load(buf, so + L.SLOT_START_TIME)
            if started == 0:
                # Being taken by pid right now; dead only if pid is gone.
                if start_time(pid) is None:
                    dead.append((i, pid))
                continue
            if not alive(pid, started):
                dead.append((i, pid))
        return dead

    def reap_dead(self) -> int:
        """Recover and free the slots of every dead process; returns how many."""
        return sum(self.recover_slot(i, pid) for i, pid in self.dead_slots())

    def live_pids(self) -> set[int]:
        """Pids of the live processes in the attach table."""
        buf = self._mapping()
        pids = set()
        for i in range(self.slot_count):
            so = L.slot_offset(i)
            pid = _core.load(buf, so + L.SLOT_PID)
            started = _core.load(buf, so + L.SLOT_START_TIME)
            if not pid or pid & _RECOVERING:
                continue
            if alive(pid, started) if started else start_time(pid) is not None:
                pids.add(pid)
        return pids


def unlink_segment(seg: str) -> None:
    """Unlink a segment by its POSIX name; RegionNotFound if it is gone."""
    try:
        posix_ipc.unlink_shared_memory(seg)
    except posix_ipc.ExistentialError as e:
        raise RegionNotFound(f"no region {seg!r}") from e
    except posix_ipc.PermissionsError as e:
        raise PermissionDenied(f"region {seg!r} belongs to another user") from e


def list_segments(namespace: str | None = None) -> list[tuple[str, str]]:
    """(namespace, name) of every shmring segment in /dev/shm (optionally one namespace)."""
    out = []
    try:
        entries = os.listdir("/dev/shm")
    except FileNotFoundError:
        return []
    for entry in sorted(entries):
        parsed = split_segment_name(entry)
        if parsed and (namespace is None or parsed[0] == namespace):
            out.append(parsed)
    return out
