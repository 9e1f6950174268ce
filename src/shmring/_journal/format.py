"""The bytes of a journal's files: segment header, sparse index, record.

A journal is a directory::

    journal.meta                 the shared page (meta.py): durable point,
                                 wake word, named cursors
    writer.lock                  flock()ed by the one writer
    00000000000000000000.seg     segments, named by their first sequence
    00000000000000041233.seg     number (20 decimal digits)

Segment file (little-endian), ``segment_size`` bytes, a multiple of 4096::

    offset      size
    0           64      header
                          0  8  magic b"SHMRJSEG"
                          8  4  version (1)
                          12 4  index stride (bytes of records per entry)
                          16 8  segment_size
                          24 8  first_seq (equal to the file's name)
                          32 8  created, ns since the epoch
                          40 4  index entries (n_index)
                          44 4  CRC32 of bytes 0..44
                          48 16 zero
    64          24*n    sparse index: entry i names the first record that
                        starts at or after data_off + i*stride:
                          seq u64, time_ns u64, offset u32, CRC32 u32 of the 20
                          bytes before it
    data_off    ...     records, each 16-byte aligned (data_off is a
                        multiple of 4096)

Record::

    0   4   word: kind (bits 0..3) | payload length << 4; 0 = nothing yet.
            The writer stores it last (a release store), so a record whose
            word is non-zero was completely written before it, as far as
            any process is concerned (a machine crash is another matter:
            the checksum and the durable point cover that).
    4   4   CRC32 of bytes 0..4 and 8..32 and the payload
    8   8   seq
    16  8   time_ns (never decreasing within a journal)
    24  8   zero
    32  len payload, then zero padding to 16 bytes

A record of kind END (length 0) seals a segment: its seq is the first seq of
the next segment file. Every segment keeps room for one.

Why CRC32 (``zlib.crc32``, in the stdlib): it is in C, always there, and
detects every burst error shorter than 32 bits; the checksum here guards
against torn writes and stray bytes, not an adversary. The extension's hot
path (csrc/journal/: record.c writes and checks records, crc.c computes the
same CRC-32 with carry-less multiplies where the CPU has them) must agree
with this file byte for byte; tests/journal/test_journal_cformat.py checks
both ways. The functions here are the reference, and what the cold paths
(recovery, seeking, the index) use.
"""

from __future__ import annotations

import re
import struct
import zlib
from typing import NamedTuple

from .._errors import CorruptJournal

SEG_MAGIC = b"SHMRJSEG"
VERSION = 1
SEG_HEADER = struct.Struct("<8sIIQQQII16x")
SEG_HEADER_CHECKED = 44  # the CRC covers bytes 0..44
INDEX_OFF = SEG_HEADER.size
INDEX_ENTRY = struct.Struct("<QQII")
REC = struct.Struct("<IIQQQ")
REC_SIZE = REC.size  # 32
REC_ALIGN = 16
KIND_DATA = 1
KIND_END = 2
KIND_BITS = 4
MAX_PAYLOAD = (1 << 28) - 1
PAGE = 4096
MIN_SEGMENT = 16 << 10
MAX_SEGMENT = 1 << 30
SEG_SUFFIX = ".seg"
SEG_NAME = re.compile(r"^(\d{20})\.seg$")
_CHECKED_TAIL = struct.Struct("<QQQ")


def segment_name(first_seq: int) -> str:
    """The file name of the segment whose first record is ``first_seq``."""
    return f"{first_seq:020d}{SEG_SUFFIX}"


def stride_for(segment_size: int) -> int:
    """Bytes of records per sparse-index entry."""
    return 1 << 16 if segment_size >= 4 << 20 else 1 << 12


def geometry(segment_size: int) -> tuple[int, int, int]:
    """(stride, n_index, data_off) of a segment of ``segment_size`` bytes."""
    stride = stride_for(segment_size)
    n_index = -(-segment_size // stride)
    data_off = -(-(INDEX_OFF + INDEX_ENTRY.size * n_index) // PAGE) * PAGE
    return stride, n_index, data_off


def align(n: int) -> int:
    """``n`` rounded up to a record boundary."""
    return (n + REC_ALIGN - 1) & -REC_ALIGN


def corrupt(path: str, offset: int | None, what: str) -> CorruptJournal:
    """A :class:`CorruptJournal` naming the file and offset."""
    where = f"{path}" if offset is None else f"{path} at offset {offset}"
    err = CorruptJournal(f"corrupt journal file {where}: {what}")
    err.path = path
    err.offset = offset
    return err


class SegHeader(NamedTuple):
    """A segment file's header, checked."""

    stride: int
    segment_size: int
    first_seq: int
    created_ns: int
    n_index: int
    data_off: int


def pack_header(segment_size: int, first_seq: int, created_ns: int) -> bytes:
    """The 64 header bytes of a new segment."""
    stride, n_index, _ = geometry(segment_size)
    head = SEG_HEADER.pack(SEG_MAGIC, VERSION, stride, segment_size, first_seq, created_ns,
                           n_index, 0)
    crc = zlib.crc32(head[:SEG_HEADER_CHECKED])
    return SEG_HEADER.pack(SEG_MAGIC, VERSION, stride, segment_size, first_seq, created_ns,
                           n_index, crc)


def unpack_header(raw: bytes, path: str, first_seq: int) -> SegHeader:
    """Check a segment's header bytes; CorruptJournal if any field is wrong."""
    if len(raw) < SEG_HEADER.size:
        raise corrupt(path, 0, f"header is {len(raw)} bytes, not {SEG_HEADER.size}")
    magic, version, stride, size, first, created, n_index, crc = SEG_HEADER.unpack_from(raw)
    if magic != SEG_MAGIC:
        raise corrupt(path, 0, f"magic {magic!r} is not {SEG_MAGIC!r}")
    if zlib.crc32(raw[:SEG_HEADER_CHECKED]) != crc:
        raise corrupt(path, 0, "header checksum does not match")
    if version != VERSION:
        raise corrupt(path, 8, f"format version {version}; this shmring reads {VERSION}")
    if not (MIN_SEGMENT <= size <= MAX_SEGMENT) or size % PAGE:
        raise corrupt(path, 16, f"segment_size {size} is out of range")
    g_stride, g_n, data_off = geometry(size)
    if stride != g_stride or n_index != g_n:
        raise corrupt(path, 12, f"index stride {stride} x {n_index} does not fit size {size}")
    if first != first_seq:
        raise corrupt(path, 24, f"first_seq {first} does not match the file's name")
    return SegHeader(stride, size, first, created, n_index, data_off)


def pack_index(seq: int, time_ns: int, offset: int) -> bytes:
    """One sparse-index entry."""
    head = struct.pack("<QQI", seq, time_ns, offset)
    return head + struct.pack("<I", zlib.crc32(head))


def unpack_index(buf: bytes | memoryview, at: int) -> tuple[int, int, int] | None:
    """(seq, time_ns, offset) of the entry at ``at``, or None if it is empty
    or does not check (an index entry is a hint: callers verify the record)."""
    seq, time_ns, offset, crc = INDEX_ENTRY.unpack_from(buf, at)
    if offset == 0 or zlib.crc32(bytes(buf[at:at + 20])) != crc:
        return None
    return seq, time_ns, offset


CRC_HEAD = struct.Struct("<IQQQ")


def record_crc(word: int, seq: int, time_ns: int, payload: bytes | memoryview) -> int:
    """The checksum of a record: CRC32 of its header fields, then payload."""
    return zlib.crc32(payload, zlib.crc32(CRC_HEAD.pack(word, seq, time_ns, 0)))


class Rec(NamedTuple):
    """A record that checked: its kind, seq, time, and where its payload is."""

    kind: int
    seq: int
    time_ns: int
    payload_off: int
    length: int
    next_off: int


EMPTY = None
BAD = "bad"


def read_record(buf: memoryview, off: int, end: int) -> Rec | str | None:
    """The record at ``off`` of a mapped segment whose readable bytes end at
    ``end``: a :class:`Rec` if it checks, None if nothing is written there
    (word 0), ``BAD`` if it does not check (bad kind, a length past ``end``,
    a checksum mismatch). Reads nothing outside ``buf[off:end]``."""
    if off + REC_SIZE > end:
        return EMPTY if off + 4 > end or bytes(buf[off:off + 4]) == b"\0\0\0\0" else BAD
    word, crc, seq, time_ns, zero = REC.unpack_from(buf, off)
    if word == 0:
        return EMPTY
    kind = word & ((1 << KIND_BITS) - 1)
    length = word >> KIND_BITS
    if kind not in (KIND_DATA, KIND_END) or zero or (kind == KIND_END and length):
        return BAD
    p0 = off + REC_SIZE
    if p0 + length > end:
        return BAD
    if record_crc(word, seq, time_ns, buf[p0:p0 + length]) != crc:
        return BAD
    return Rec(kind, seq, time_ns, p0, length, align(p0 + length))
