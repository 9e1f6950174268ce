"""What is in /dev/shm: a read-only snapshot of each region (for ``shmring
ls`` and ``inspect``) and the orphan rule shared by ``shmring gc`` and a
starting supervisor.

A region is an orphan when no process in its attach table is alive, judged by
pid *and* start time (``_proc.alive``), so that a reused pid is never taken for
the process that attached, and only where that pid means something: a slot
of another PID namespace is judged through a ``_proc.Census`` (visible from
here: translated, or dead if missing) or, if that namespace cannot be seen
from here, presumed alive. Two exceptions keep a region that looks empty:

- persistent regions (``Channel.create(..., persistent=True)``) stay until
  unlinked explicitly; gc lists them and removes them only when asked;
- a region younger than :data:`CREATION_GRACE` whose creator is alive may be
  between its creation and the creator's first attach slot.

A segment whose magic was never published is a creation that died half-way
once it is older than the grace; one whose header does not validate is
``corrupt`` (listed; removed by ``gc --yes``; a supervisor only warns).

Snapshots map the segment without taking a slot and never write to it.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import _core
from .. import _layout as L
from .._errors import CorruptRegion, RegionNotFound, ShmringError
from .._proc import Census, holder_alive, proc_namespace
from .guard import unmap, watch
from .names import PREFIX, SHM_DIR, list_segments, refused, split_segment_name, unlink_segment
from .region import Region

#: Seconds a region may stay without any attach slot while its creator lives.
CREATION_GRACE = 5.0


def shm_path(seg: str) -> str:
    """The file of POSIX shm segment ``seg`` (``/shmring.ns.name``)."""
    return SHM_DIR + "/" + seg.lstrip("/")


def map_segment(seg: str) -> tuple[mmap.mmap | None, os.stat_result]:
    """Map segment ``seg`` read-write without populating it (None if empty).
    Raises FileNotFoundError if it is gone, PermissionError if not ours."""
    fd = os.open(shm_path(seg), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        buf = watch(mmap.mmap(fd, st.st_size, mmap.MAP_SHARED)) if st.st_size else None
    finally:
        os.close(fd)
    return buf, st


@dataclass
class SlotView:
    """One taken attach slot and whether its process lives (a process of a
    PID namespace this one cannot see counts as alive)."""

    index: int
    pid: int
    start_time: int
    role: str
    state: int
    alive: bool
    claim_pos: int | None
    cursor: int
    messages: int
    bytes: int
    missed: int
    pidns: int = 0  # the PID namespace its pid belongs to (inode; 0: not known)
    orphan: bool = False  # a durable subscription held for its dead process


@dataclass
class Snapshot:
    """A region as read at one moment."""

    namespace: str
    name: str
    segment: str
    size: int
    age: float
    state: str  # "ok", "unpublished" or "corrupt"
    error: str | None = None
    pattern: str | None = None
    capacity: int = 0
    max_message: int = 0
    slot_count: int = 0
    persistent: bool = False
    lossy: bool = False
    slow_consumer_timeout: float | None = None
    created_ns: int = 0
    creator_pid: int = 0
    fill: int = 0
    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    slots: list[SlotView] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def live_pids(self) -> list[int]:
        """Pids of the live processes in the attach table."""
        return sorted({s.pid for s in self.slots if s.alive})

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


_COUNTERS = ("tail", "head", "read_claim", "latest", "intent", "redeliver", "msgno", "quar_count",
             "stats_in_msgs", "stats_in_bytes", "stats_out_msgs", "stats_out_bytes")
_COUNTERS32 = ("data_futex", "data_waiters", "space_futex", "space_waiters", "eos", "broken")


def snapshot(namespace: str, name: str) -> Snapshot:
    """Read region ``name`` of ``namespace``. Raises FileNotFoundError if gone."""
    seg = f"/{PREFIX}.{namespace}.{name}"
    buf, st = map_segment(seg)
    snap = Snapshot(namespace, name, seg, st.st_size, time.time() - st.st_ctime, "ok")
    if buf is None or st.st_size < L.REGION_HEADER_SIZE or \
            _core.load(buf, L.HDR_MAGIC) != L.SHMRING_MAGIC:
        snap.state = "unpublished"
        if buf is not None:
            unmap(buf)
        return snap
    region = Region(name, seg, buf, st.st_size)
    try:
        try:
            region.validate()
        except ShmringError as e:
            snap.state, snap.error = "corrupt", str(e)
            return snap
        _fill(snap, region)
        region.check_intact()  # shrunk while we read it: what we read is not the region
    except CorruptRegion as e:
        snap.state, snap.error = "corrupt", str(e)
    finally:
        region.close()
    return snap


def _fill(snap: Snapshot, region: Region) -> None:
    buf = region._mapping()
    snap.pattern = region.pattern
    snap.capacity = region.capacity
    snap.max_message = region.max_message
    snap.slot_count = region.slot_count
    snap.persistent = region.persistent
    snap.lossy = region.lossy
    snap.slow_consumer_timeout = region.slow_consumer_timeout
    snap.created_ns = region.created_ns
    snap.age = max(0.0, time.time() - snap.created_ns / 1e9)
    snap.creator_pid = int(struct.unpack_from("<Q", buf, L.HDR_CREATOR_PID)[0])
    for key in _COUNTERS:
        snap.counters[key] = region.counter(getattr(L, "OFF_" + key.upper()))
    for key in _COUNTERS32:
        snap.counters[key] = _core.load32(buf, getattr(L, "OFF_" + key.upper()))
    for key in ("producer_owner", "consumer_owner"):
        snap.counters[key] = region.counter(getattr(L, "OFF_" + key.upper()))
    c = snap.counters
    snap.messages_in, snap.bytes_in = c["stats_in_msgs"], c["stats_in_bytes"]
    snap.messages_out, snap.bytes_out = c["stats_out_msgs"], c["stats_out_bytes"]
    cursors = []
    slots = region.slots()
    # Walked after reading the slots (whoever took one is in it), and only
    # if some slot's pid is not of the namespace our /proc shows.
    judge = Census.take().judge if any(s.pidns != proc_namespace() for s in slots) \
        else holder_alive
    for s in slots:
        view = SlotView(s.index, s.pid, s.start_time, s.role, s.state,
                        judge(s.pid, s.start_time, s.pidns) is not False, s.claim_pos,
                        s.cursor, s.messages, s.bytes, s.missed, s.pidns, s.orphan)
        snap.slots.append(view)
        if s.role == "producer":
            snap.messages_in += s.messages
            snap.bytes_in += s.bytes
        elif s.role == "consumer":
            snap.messages_out += s.messages
            snap.bytes_out += s.bytes
            if s.state == L.SLOT_ACTIVE:
                cursors.append(s.cursor)
    if L.TRAITS[snap.pattern].fan_out:
        used = c["tail"] - min(cursors) if cursors and not snap.lossy else 0
    else:
        used = c["tail"] - c["head"]
    snap.fill = max(0, min(used, snap.capacity))


def snapshots(namespace: str | None = None) -> list[Snapshot]:
    """Every region in /dev/shm (of one namespace, or all)."""
    out = []
    for ns, name in list_segments(namespace):
        try:
            out.append(snapshot(ns, name))
        except (FileNotFoundError, PermissionError):
            continue  # removed meanwhile, or another user's
    return out


def verdict(snap: Snapshot, grace: float = CREATION_GRACE) -> str:
    """``live``, ``persistent`` (no live process, kept), ``orphan`` (remove),
    ``young`` (being created: leave it) or ``corrupt``."""
    if snap.state == "unpublished":
        return "young" if snap.age < grace else "orphan"
    if snap.state == "corrupt":
        return "corrupt"
    if snap.live_pids:
        return "live"
    if snap.persistent:
        return "persistent"
    if not snap.slots and snap.age < grace and _pid_exists(snap.creator_pid):
        return "young"
    return "orphan"


def _pid_exists(pid: int) -> bool:
    """True if a process may call itself ``pid`` (the creator's pid in a
    header is as it saw itself, in a PID namespace not recorded there)."""
    if pid <= 0:
        return False
    if os.path.exists(f"/proc/{pid}"):
        return True
    return pid in Census.take().innermost


def unlink_if_same(seg: str, ino: int) -> bool:
    """Unlink ``seg`` if its name still refers to inode ``ino`` (not to a newer
    region created under the same name since). True if this call removed it."""
    try:
        if os.stat(shm_path(seg)).st_ino != ino:
            return False
        unlink_segment(seg)
        return True
    except (FileNotFoundError, RegionNotFound):
        return False


def namespace_of(seg: str) -> str | None:
    """The namespace of a shmring segment name, or None for a foreign one."""
    parsed = split_segment_name(seg)
    return parsed[0] if parsed else None


def unlink_if_created(seg: str, created_ns: int) -> bool:
    """Unlink ``seg`` if its name still refers to the region created at
    ``created_ns`` (not to a newer one of the same name). True if this call
    removed it; False if the name was already gone or names another region."""
    try:
        fd = os.open(shm_path(seg), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except PermissionError as e:
        raise refused(seg) from e
    try:
        head = os.pread(fd, L.HDR_CREATED_NS + 8, 0)
    finally:
        os.close(fd)
    if len(head) < L.HDR_CREATED_NS + 8:
        return False
    if struct.unpack_from("<Q", head, L.HDR_CREATED_NS)[0] != created_ns:
        return False
    try:
        unlink_segment(seg)
    except RegionNotFound:
        return False
    return True
