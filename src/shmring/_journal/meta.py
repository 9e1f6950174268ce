"""The journal's shared page, ``journal.meta``: one 4096-byte file every
process of the journal maps ``MAP_SHARED`` (the writer and every reader).

Layout (little-endian)::

    offset  size
    0       8    magic b"SHMRJMET"
    8       4    version (1)
    12      4    zero
    16      8    segment_size
    24      4    CRC32 of bytes 0..24
    28      4    wake word (futex): the writer bumps it after a commit
                 when a reader waits
    32      8    waiters: readers asleep on the wake word
    40      8    next_seq, published after every commit (a hint for other
                 processes; the records themselves are the truth)
    48      8    durable word: seq << 16 | check (see pack_checked)
    56      8    writer pid (0: none), for ``info``
    64      32   sync policy (ASCII, NUL padded)
    96      4    CRC32 of bytes 64..96
    128     64*n named cursors: name (40 bytes UTF-8, NUL padded), then the
                 cursor word (the next seq to read, packed as the durable
                 word, with the name in its check), 16 zero

One aligned 8-byte store changes the durable word or a cursor, so a crash
cannot tear one; the 16-bit check tells a word that was never written from
garbage (a garbage word reads as "none").
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import struct
import zlib
from collections.abc import Iterator

from .. import _core
from .._errors import InvalidArgument
from .format import corrupt

META_NAME = "journal.meta"
LOCK_NAME = "writer.lock"
META_MAGIC = b"SHMRJMET"
META_VERSION = 1
META_SIZE = 4096
_HEAD = struct.Struct("<8sIIQI")
OFF_WAKE = 28
OFF_WAITERS = 32
OFF_NEXT = 40
OFF_DURABLE = 48
OFF_PID = 56
OFF_SYNC = 64
SYNC_LEN = 32
OFF_SYNC_CRC = 96
OFF_CURSORS = 128
CURSOR_SIZE = 64
NAME_LEN = 40
MAX_CURSORS = (META_SIZE - OFF_CURSORS) // CURSOR_SIZE
_MINUS_ONE = (1 << 64) - 1


def pack_checked(value: int, salt: bytes = b"") -> int:
    """A 48-bit value and a 16-bit check of it in one u64 (never 0)."""
    check = (zlib.crc32(salt + value.to_bytes(8, "little")) & 0xFFFF) | 1
    return (value << 16) | check


def unpack_checked(word: int, salt: bytes = b"") -> int | None:
    """The value of a word made by :func:`pack_checked`, or None."""
    value = word >> 16
    return value if word and pack_checked(value, salt) == word else None


def create_meta(path: str, segment_size: int, sync: str) -> None:
    """Write a new meta file (``O_EXCL``), durable before it returns."""
    raw = bytearray(META_SIZE)
    head = _HEAD.pack(META_MAGIC, META_VERSION, 0, segment_size, 0)
    _HEAD.pack_into(raw, 0, META_MAGIC, META_VERSION, 0, segment_size, zlib.crc32(head[:24]))
    policy = sync.encode("ascii").ljust(SYNC_LEN, b"\0")
    raw[OFF_SYNC:OFF_SYNC + SYNC_LEN] = policy
    struct.pack_into("<I", raw, OFF_SYNC_CRC, zlib.crc32(policy))
    struct.pack_into("<Q", raw, OFF_DURABLE, pack_checked(0))
    fd = os.open(os.path.join(path, META_NAME), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                 0o644)
    try:
        os.write(fd, bytes(raw))
        os.fsync(fd)
    finally:
        os.close(fd)


class Meta:
    """The mapped meta page of one journal, in this process."""

    def __init__(self, path: str) -> None:
        self.file = os.path.join(path, META_NAME)
        self.fd = os.open(self.file, os.O_RDWR | os.O_CLOEXEC)
        try:
            size = os.fstat(self.fd).st_size
            if size != META_SIZE:
                raise corrupt(self.file, None, f"{size} bytes, not {META_SIZE}")
            self.mm = mmap.mmap(self.fd, META_SIZE, mmap.MAP_SHARED,
                                mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(self.fd)
            raise
        magic, version, _, segment_size, crc = _HEAD.unpack_from(self.mm, 0)
        if magic != META_MAGIC:
            self.close()
            raise corrupt(self.file, 0, f"magic {magic!r} is not {META_MAGIC!r}")
        if zlib.crc32(self.mm[:24]) != crc:
            self.close()
            raise corrupt(self.file, 24, "header checksum does not match")
        if version != META_VERSION:
            self.close()
            raise corrupt(self.file, 8, f"version {version}; this shmring reads {META_VERSION}")
        self.segment_size: int = segment_size
        policy = self.mm[OFF_SYNC:OFF_SYNC + SYNC_LEN]
        (pcrc,) = struct.unpack_from("<I", self.mm, OFF_SYNC_CRC)
        if zlib.crc32(policy) != pcrc:
            self.close()
            raise corrupt(self.file, OFF_SYNC, "sync policy checksum does not match")
        self.sync = policy.rstrip(b"\0").decode("ascii", "replace")

    # ------------------------------------------------------------ words --
    @property
    def durable(self) -> int:
        """The durable point as stored (0 if the word does not check)."""
        v = unpack_checked(_core.load(self.mm, OFF_DURABLE))
        return 0 if v is None else v

    def set_durable(self, seq: int) -> None:
        """Publish a new durable point (after the msync that made it so)."""
        _core.store(self.mm, OFF_DURABLE, pack_checked(seq))

    @property
    def next_seq(self) -> int:
        """The writer's published next sequence number."""
        return _core.load(self.mm, OFF_NEXT)

    def publish(self, next_seq: int) -> None:
        """A commit: publish ``next_seq`` and wake the readers if any sleep."""
        _core.store(self.mm, OFF_NEXT, next_seq)
        if _core.load(self.mm, OFF_WAITERS):
            _core.wake(self.mm, OFF_WAKE)

    def set_writer(self, pid: int) -> None:
        """Record the writer's pid (0: none), for ``info``."""
        _core.store(self.mm, OFF_PID, pid)

    @property
    def writer_pid(self) -> int:
        """The last writer's pid as recorded (0: none)."""
        return _core.load(self.mm, OFF_PID)

    def wake_value(self) -> int:
        """The wake word now: read it before re-checking, then :meth:`sleep`."""
        return _core.load32(self.mm, OFF_WAKE)

    def sleep(self, seen: int, timeout: float | None) -> bool:
        """Sleep until the wake word moves from ``seen`` (False: timed out).
        Callers count themselves in :meth:`waiting` around the re-check."""
        return _core.futex_wait(self.mm, OFF_WAKE, seen, timeout)

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Count this reader among the waiters while inside."""
        _core.fetch_add(self.mm, OFF_WAITERS, 1)
        try:
            yield
        finally:
            _core.fetch_add(self.mm, OFF_WAITERS, _MINUS_ONE)

    # ---------------------------------------------------------- cursors --
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The cursor table's lock (flock on the meta file)."""
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def _slot_name(self, i: int) -> bytes:
        at = OFF_CURSORS + CURSOR_SIZE * i
        return bytes(self.mm[at:at + NAME_LEN]).rstrip(b"\0")

    def cursors(self) -> dict[str, int]:
        """Every named cursor and the next seq it reads."""
        out: dict[str, int] = {}
        for i in range(MAX_CURSORS):
            name = self._slot_name(i)
            if not name:
                continue
            v = unpack_checked(_core.load(self.mm, OFF_CURSORS + CURSOR_SIZE * i + NAME_LEN),
                               name)
            out[name.decode("utf-8", "replace")] = 0 if v is None else v
        return out

    def cursor_slot(self, name: str) -> int:
        """The slot of the cursor ``name``, made (at next seq 0) if new."""
        raw = name.encode("utf-8")
        if not raw or len(raw) > NAME_LEN or b"\0" in raw:
            raise InvalidArgument(f"cursor name {name!r}: 1 to {NAME_LEN} UTF-8 bytes, no NUL")
        with self.locked():
            free = None
            for i in range(MAX_CURSORS):
                slot_name = self._slot_name(i)
                if slot_name == raw:
                    return i
                if not slot_name and free is None:
                    free = i
            if free is None:
                raise InvalidArgument(f"the journal has {MAX_CURSORS} named cursors already")
            at = OFF_CURSORS + CURSOR_SIZE * free
            self.mm[at:at + NAME_LEN] = raw.ljust(NAME_LEN, b"\0")
            _core.store(self.mm, at + NAME_LEN, pack_checked(0, raw))
            return free

    def cursor(self, slot: int) -> int:
        """The next seq the cursor in ``slot`` reads."""
        name = self._slot_name(slot)
        v = unpack_checked(_core.load(self.mm, OFF_CURSORS + CURSOR_SIZE * slot + NAME_LEN), name)
        return 0 if v is None else v

    def set_cursor(self, slot: int, next_seq: int) -> None:
        """Store the cursor in ``slot`` (one 8-byte store)."""
        name = self._slot_name(slot)
        _core.store(self.mm, OFF_CURSORS + CURSOR_SIZE * slot + NAME_LEN,
                    pack_checked(next_seq, name))

    def sync_page(self) -> None:
        """msync the page (cursors and the durable point)."""
        self.mm.flush()

    def close(self) -> None:
        """Unmap and close."""
        with contextlib.suppress(AttributeError):
            self.mm.close()
        os.close(self.fd)
