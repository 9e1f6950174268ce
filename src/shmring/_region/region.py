"""Regions: named POSIX shared-memory segments with a validated header and an
attach table (its words: ``slots.py``; names and listing: ``names.py``).

Creation follows DESIGN.md: ``shm_open(O_CREAT|O_EXCL, 0600)`` so nobody can
squat a name (then ``fchmod`` to the requested mode exactly, since
``shm_open`` applies the umask), ``ftruncate`` then ``posix_fallocate`` so a
full ``/dev/shm`` is a clean :class:`NoSpace` at creation rather than a
``SIGBUS`` on some later write, then the header, whose magic is stored last (with release order) to
publish it. An attacher opens with size 0 (a non-zero size would resize
somebody else's segment), waits briefly for the magic, and checks every field
against the real segment size before trusting any.

The attach table costs no ``/dev/shm`` up front, however many slots it
has: only the header's pages (:data:`HEAD_BYTES`, the header and the first
slots) and the ring are allocated at creation; a slot page is allocated
(``posix_fallocate`` again, so a full ``/dev/shm`` is a clean
:class:`NoSpace` there too) before the first slot on it is taken, and walks
of the table never read past the slots ever taken (``slots.py``).

Mapping: in a region of up to :data:`POPULATE_LIMIT` bytes the header pages
and the ring are populated (``MADV_POPULATE_WRITE``; not ``MAP_POPULATE``,
which would allocate the whole table), so even the first lap of its ring
takes no page fault. A larger one is not: its pages are already allocated (``posix_fallocate``), so
leaving them to be faulted in on first touch costs no ``SIGBUS``, only about
1.5 µs per 4 KiB page the first time (measured on a 2-vCPU x86-64 VM), while
populating cost about 2.3 s per GiB there (4 GiB: 9.5 s to populate, 1 s to
allocate), in every process that maps it.

Ownership of the segment's lifetime belongs to the supervisor; a Region
never unlinks behind anybody's back (compare CPython's ``shared_memory``
resource tracker, gh-82300), only when asked.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import posix_ipc

from .. import _core
from .. import _layout as L
from .._errors import (
    AttachTableFull,
    Closed,
    CorruptRegion,
    InvalidArgument,
    NoSpace,
    RegionExists,
    RegionNotFound,
)
from .._proc import holder_alive, my_start_time, pid_namespace
from .guard import faulted, unmap, watch
from .names import SHM_DIR, refused, unlink_segment
from .names import segment_name as segment_name
from .names import split_segment_name as split_segment_name
from .options import check_lease_ms, untether_timeout_ns
from .slots import AttachTable, slots_end, slots_in
from .slots import SlotInfo as SlotInfo

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

# segment_name, split_segment_name and SlotInfo are re-exported: _channel
# and _queue import them from here. Their home is names.py and slots.py.

#: Regions up to this size are mapped with MAP_POPULATE (see the module
#: docstring); larger ones fault their pages in on first touch.
POPULATE_LIMIT = 64 << 20
#: Bytes at the start of a segment allocated at creation: the header and the
#: attach slots that share its pages (55). Later slot pages: at first use.
HEAD_BYTES = 2 * L.PAGE_ALIGN
#: madvise advice (Linux 5.14; not named by Python 3.11's mmap module).
_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)


def _map(fd: int, size: int) -> mmap.mmap:
    """Map ``size`` bytes of the segment ``fd``, read-write and shared."""
    return watch(mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE))


def _head_end(doff: int) -> int:
    return min(doff, HEAD_BYTES)


def _populate(buf: mmap.mmap, doff: int, total: int) -> None:
    """Fault in the header pages and the ring of a small region now (no
    page fault on its first lap), never the untouched slot pages."""
    if total > POPULATE_LIMIT:
        return
    with contextlib.suppress(OSError):  # an older kernel: pages fault in on first touch
        buf.madvise(_MADV_POPULATE_WRITE, 0, _head_end(doff))
        buf.madvise(_MADV_POPULATE_WRITE, doff, total - doff)


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
        raise refused(seg) from e
    except ValueError as e:
        raise InvalidArgument(f"bad region name {seg!r}: {e}") from e


class Region:
    """A named shared-memory segment holding one ring, its header and its
    attach table.

    Use :meth:`create` or :meth:`attach`; :class:`shmring.Channel` does both
    for you. ``buf`` is the writable mapping of the whole segment.
    """

    def __init__(self, name: str, seg: str, buf: mmap.mmap, size: int, inode: int = 0) -> None:
        self.name = name
        self.segment = seg
        #: The segment's inode number: the region's id in linked slots.
        self.inode = inode
        self.buf: mmap.mmap | None = buf
        self.size = size
        self._table = AttachTable(buf, name)
        #: Slots whose pages are allocated for sure (alloc_slot makes more).
        self._slots_ready = slots_in(HEAD_BYTES, L.MAX_SLOTS)

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
        lease_ms: int = 0,
        slow_consumer_timeout: float | None = None,
        populate: bool = True,
    ) -> Region:
        """Create region ``name`` whose ring holds ``size`` bytes (a power of
        two, at least 1024). ``populate=False``: its pages fault in on first
        touch instead of at mapping (see the module docstring).

        ``lease_ms`` (mpmc): how long a consumer may hold one record, in
        milliseconds; 0 the supervisor's default, ``LEASE_NEVER`` never.

        ``mode`` is the segment's permission bits (0o000-0o777), applied
        exactly, whatever the umask: the default 0o600 lets only this user
        in; 0o660 adds the group, 0o666 everyone. Opening needs read and
        write access.

        ``slow_consumer_timeout`` (lossless broadcast only): seconds a
        consumer may hold the producer back without moving before it stops
        gating it (None or 0: never; see ``Channel.create``).

        Raises :class:`RegionExists` if the name is taken, :class:`NoSpace`
        if ``/dev/shm`` cannot hold it, :class:`InvalidArgument` for a bad
        name, size, pattern, mode or option.
        """
        seg = segment_name(name, namespace)
        if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o777:
            raise InvalidArgument(
                f"mode {mode!r} must be permission bits between 0o000 and 0o777 "
                "(e.g. 0o600 for this user only, 0o666 for everyone)"
            )
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
        if lossy and not L.TRAITS[pattern].can_be_lossy:
            raise InvalidArgument("lossy applies to the broadcast pattern only")
        check_lease_ms(lease_ms, pattern)
        untether_ns = untether_timeout_ns(slow_consumer_timeout, pattern, lossy)
        doff = L.data_offset(slots)
        total = doff + size
        shm = _open_segment(seg, posix_ipc.O_CREX, mode)
        try:
            # shm_open's mode went through the umask: set it exactly, before
            # anything is published (so nobody could have opened it yet).
            os.fchmod(shm.fd, mode)
            os.ftruncate(shm.fd, total)
            try:
                # The header's pages and the ring: the rest of the table
                # stays a hole until its slots are used (alloc_slot).
                os.posix_fallocate(shm.fd, 0, _head_end(doff))
                os.posix_fallocate(shm.fd, doff, size)
            except OSError as e:
                if e.errno == errno.ENOSPC:
                    raise NoSpace(
                        f"/dev/shm has no room for region {name!r} ({total} bytes): "
                        "free space or use a smaller capacity"
                    ) from e
                raise
            buf = _map(shm.fd, total)
            if populate:
                _populate(buf, doff, total)
            inode = os.fstat(shm.fd).st_ino
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
        struct.pack_into("<Q", buf, L.HDR_LEASE_MS, lease_ms)
        struct.pack_into("<Q", buf, L.HDR_UNTETHER_NS, untether_ns)
        # The attach table is all zeros (free slots) already: nothing to write.
        # Publication: everything above is visible before the magic (pairs
        # with the attacher's acquire load in _wait_published).
        _core.store(buf, L.HDR_MAGIC, L.SHMRING_MAGIC)
        return cls(name, seg, buf, total, inode)

    @classmethod
    def attach(cls, name: str, *, namespace: str | None = None, timeout: float = 2.0,
               populate: bool = True) -> Region:
        """Map the existing region ``name`` (``populate``: as in :meth:`create`).

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
            buf = _map(shm.fd, size)
            inode = os.fstat(shm.fd).st_ino
        finally:
            shm.close_fd()
        region = cls(name, seg, buf, size, inode)
        try:
            region._wait_published(deadline)
            region.validate()
            if populate:
                _populate(buf, region._u64(L.HDR_DATA_OFFSET), size)
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
            raise Closed(f"region {self.name!r} is closed")
        return self.buf

    def close(self) -> None:
        """Unmap the region (the segment stays until unlinked)."""
        if self.buf is not None:
            buf, self.buf = self.buf, None
            # A call in another thread may still use the mapping (an endpoint
            # closed under it releases it on its way out): the mapping is then
            # unmapped when that last reference goes.
            unmap(buf)

    def truncated(self) -> int | None:
        """The segment's size now if it was shrunk below what is mapped (or
        a page of the mapping faulted: 0 then if the size is unknown), else
        None. Checked without touching the mapping: a truncated region must
        not be read, its pages past the end are gone."""
        buf = self.buf
        if buf is not None and faulted(buf):
            return self._current_size() or 0
        size = self._current_size()
        return size if size is not None and size < self.size else None

    def _current_size(self) -> int | None:
        try:
            st = os.stat(SHM_DIR + "/" + self.segment.lstrip("/"))
        except OSError:
            return None
        return st.st_size if not self.inode or st.st_ino == self.inode else None

    def check_intact(self) -> None:
        """Raise :class:`CorruptRegion` if the segment was truncated."""
        size = self.truncated()
        if size is not None:
            raise CorruptRegion(
                f"region {self.name!r}: its segment {self.segment!r} was truncated to "
                f"{size} bytes under its {self.size}-byte mapping; it cannot be used "
                "(remove it with `shmring gc` once nobody holds it)"
            )

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
        return self.table.count

    @property
    def flags(self) -> int:
        """FLAG_* bits of the header."""
        return self._u32(L.HDR_FLAGS)

    @property
    def lossy(self) -> bool:
        """True for a lossy broadcast ring."""
        return bool(self.flags & L.FLAG_LOSSY)

    @property
    def slow_consumer_timeout(self) -> float | None:
        """Lossless broadcast: seconds after which a consumer that holds the
        producer back without moving stops gating it; None for never."""
        ns = self._u64(L.HDR_UNTETHER_NS)
        if self.pattern != "broadcast" or self.lossy or ns == 0:
            return None
        return ns / 1e9

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
    @property
    def table(self) -> AttachTable:
        """The attach table (raises :class:`Closed` once unmapped)."""
        if self.buf is None:
            raise Closed(f"region {self.name!r} is closed")
        return self._table

    def alloc_slot(self, role: int) -> int:
        """Take a free attach slot for this process in ``role``."""
        pid, started, ns = os.getpid(), my_start_time(), pid_namespace()
        for attempt in range(2):
            slot = self._take(role, pid, started, ns)
            if slot is not None:
                return slot
            if attempt == 0 and not self.reap_dead():
                break
        raise AttachTableFull(
            f"all {self.slot_count} attach slots of region {self.name!r} are taken: "
            "close unused channels and endpoints, or create the region with more slots"
        )

    def _take(self, role: int, pid: int, started: int, ns: int) -> int | None:
        """Take the lowest free slot, allocating the page of a slot never
        used before it is taken (tmpfs: a full /dev/shm is NoSpace here,
        not SIGBUS on the first store)."""
        table = self.table
        count = table.count
        while True:
            limit = min(count, max(self._slots_ready, table.used + 1))
            if limit > self._slots_ready:
                self._reserve(limit)
            slot = table.alloc(role, pid, started, ns, limit)
            if slot is not None or limit >= count:
                return slot
            # Every slot below limit is taken: slot_high is past it now.

    def _reserve(self, limit: int) -> None:
        """Allocate the pages of slots below ``limit`` (and the rest of the
        last one's page)."""
        end = -(-slots_end(limit) // L.PAGE_ALIGN) * L.PAGE_ALIGN
        start = max(_head_end(self._u64(L.HDR_DATA_OFFSET)),
                    slots_end(self._slots_ready) // L.PAGE_ALIGN * L.PAGE_ALIGN)
        try:
            fd = os.open(SHM_DIR + "/" + self.segment.lstrip("/"),
                         os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:  # removed (or replaced) meanwhile: nothing to allocate through
            self._slots_ready = limit
            return
        try:
            if os.fstat(fd).st_ino == self.inode and end > start:
                os.posix_fallocate(fd, start, end - start)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise NoSpace(f"/dev/shm has no room for attach slot {limit - 1} of region "
                              f"{self.name!r}: free space") from e
            raise
        finally:
            os.close(fd)
        self._slots_ready = max(self._slots_ready, slots_in(end, L.MAX_SLOTS))

    def free_slot(self, slot: int) -> None:
        """Give slot ``slot`` back (nothing once the region is unmapped)."""
        if self.buf is not None:
            self._table.free(slot)

    def slots(self) -> list[SlotInfo]:
        """A snapshot of every taken slot of the attach table."""
        return self.table.snapshot()

    def recover_slot(self, slot: int, pid: int, *,
                     find_region: Callable[[int], WriteableBuffer | None] | None = None,
                     force: bool = False) -> bool:
        """Recover slot ``slot`` whose process ``pid`` is dead, then free it.

        Exactly one caller wins the slot (compare-exchange on its pid), so the
        supervisor and a process that finds a dead peer may both try. Returns
        True if this call did the recovery. ``find_region`` and ``force``:
        see :meth:`AttachTable.recover` (pipeline workers' linked slots).
        """
        return self.table.recover(slot, pid, find_region=find_region or find_by_inode,
                                  force=force)

    def dead_slots(self) -> list[tuple[int, int]]:
        """(slot, pid) of every slot whose process has exited, as far as this
        process can tell: a slot of another PID namespace (or one whose
        namespace is not stored yet) is presumed alive here; the supervisor,
        which holds its process's pidfd, decides its fate. A slot being taken
        (start time 0) is dead only if its pid is gone."""
        return [(i, pid) for i, pid, started, ns in self.table.entries()
                if holder_alive(pid, started, ns) is False]

    def reap_dead(self) -> int:
        """Recover and free the slots of every dead process (a durable
        subscription's is held as an orphan) and expired orphans; how many."""
        n = sum(self.recover_slot(i, pid) for i, pid in self.dead_slots())
        return n + self.expire_orphans()

    def expire_orphans(self, now_ns: int | None = None) -> int:
        """Free every orphan (a dead process's durable subscription) whose
        hold has passed by ``now_ns`` (CLOCK_MONOTONIC; default now); how many."""
        table = self.table
        now = time.monotonic_ns() if now_ns is None else now_ns
        return sum(table.expire(i, word) for i, word, _tag, until in table.orphans()
                   if until <= now)

    def live_endpoints(self, role: int) -> int:
        """How many endpoints of ``role`` (``ROLE_PRODUCER`` or
        ``ROLE_CONSUMER``) live processes hold now. A consumer counts once it
        has joined the ring; a dead process's endpoints never count, even
        before anyone recovers them, except one of another PID namespace
        (presumed alive here: the supervisor recovers it)."""
        return sum(1 for pid, started, ns in self.table.endpoints(role)
                   if holder_alive(pid, started, ns) is not False)

    def live_holders(self) -> set[tuple[int, int, int]]:
        """(pid, start time, PID namespace) of the live processes in the
        attach table (of other PID namespaces too, presumed alive)."""
        return {(pid, started, ns) for _i, pid, started, ns in self.table.entries()
                if started and holder_alive(pid, started, ns) is not False}

    def held_by_any(self, holders: set[tuple[int, int, int]]) -> bool:
        """True if one of ``holders`` ((pid, start time, PID namespace), as
        :meth:`live_holders` gives them) holds a slot here: one C scan of the
        table per holder, no /proc read."""
        table = self.table
        return any(next(table.slots_of(pid, started, ns), None) is not None
                   for pid, started, ns in holders)

    def live_pids(self) -> set[int]:
        """Pids of the live processes in the attach table (of other PID
        namespaces too, presumed alive, as their processes see themselves)."""
        return {pid for _i, pid, started, ns in self.table.entries()
                if holder_alive(pid, started, ns) is not False}


def find_by_inode(inode: int) -> mmap.mmap | None:
    """The mapping of the shmring region whose segment has inode ``inode``,
    or None: how recovery finds the region a dead pipeline worker's linked
    outputs went to when nobody hands it one (the supervisor does)."""
    try:
        entries = list(os.scandir(SHM_DIR))
    except OSError:
        return None
    for e in entries:
        if not e.name.startswith("shmring.") or e.inode() != inode:
            continue
        try:
            fd = os.open(e.path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if st.st_ino != inode or st.st_size < L.REGION_HEADER_SIZE:
                return None
            buf = watch(mmap.mmap(fd, st.st_size, mmap.MAP_SHARED))
        finally:
            os.close(fd)
        try:
            _core.check_region(buf)
        except CorruptRegion:
            unmap(buf)
            return None
        return buf
    return None
