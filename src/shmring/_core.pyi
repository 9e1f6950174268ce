"""Type stubs of shmring._core, the C extension (see csrc/)."""

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal, overload

from _typeshed import ReadableBuffer, WriteableBuffer

# Types only: the C send_obj/recv_obj take a serializer and return an
# ObjectView, both defined in Python (the extension is handed them at import).
from shmring._objects.serializers import Serializer
from shmring._objects.view import ObjectView

LAYOUT: dict[str, int]

def load(buffer: WriteableBuffer, offset: int, /) -> int: ...
def load32(buffer: WriteableBuffer, offset: int, /) -> int: ...
def store(buffer: WriteableBuffer, offset: int, value: int, /) -> None: ...
def store32(buffer: WriteableBuffer, offset: int, value: int, /) -> None: ...
def cas(buffer: WriteableBuffer, offset: int, expected: int, new: int, /) -> bool: ...
def fetch_add(buffer: WriteableBuffer, offset: int, delta: int, /) -> int: ...
def wake(buffer: WriteableBuffer, offset: int, /) -> int: ...
def futex_wait(
    buffer: WriteableBuffer, offset: int, expected: int, timeout: float | None = None, /
) -> bool: ...
def check_region(buffer: ReadableBuffer, /) -> None: ...
RECOVER_DEFERRED: int
RECOVER_ORPHANED: int

def recover_slot(
    buffer: WriteableBuffer, slot: int, out: WriteableBuffer | None = None, force: bool = False, /
) -> int: ...
def slot_take(buffer: WriteableBuffer, pid: int, limit: int, /) -> int | None: ...
def slots_of(buffer: WriteableBuffer, pid: int, start: int, /) -> list[int]: ...
def revoke_claim(buffer: WriteableBuffer, slot: int, /) -> int: ...
def lift_quarantine(buffer: WriteableBuffer, /) -> int: ...
def _feed_trap(n: int, /) -> None:
    """For tests: this process stops itself (SIGSTOP) at the ``n``-th step
    of the fed protocol from now (each store of a FEED word, of tail, of a
    record word, a claim, a copy); 0 never."""
def fed_state(buffer: ReadableBuffer, /) -> tuple[int, int]:
    """The key ``(epoch, seq)`` of the last record a fed producer committed
    into the ring (``ProducerCore._send_fed``), exact whatever instant that
    producer died at; ``(0, 0)`` for a ring never fed. Meant for a ring whose
    fed producer is gone or between calls (a call in progress may show its
    batch half way). May pause a few milliseconds (mpsc, mpmc: a record a
    consumer is zeroing). ``CorruptRegion`` if the buffer is not a region."""
def lease_scan(buffer: ReadableBuffer, /) -> list[tuple[int, int]]: ...
def revoke_lease(buffer: WriteableBuffer, pos: int, word: int,
                 out: WriteableBuffer | None = None, /) -> int: ...
def watch(mapping: ReadableBuffer, /) -> int: ...
def unwatch(address: int, /) -> None: ...
def faults(mapping: ReadableBuffer, /) -> int: ...
def set_space_hint(fn: Callable[[object], str | None], /) -> None: ...
def set_errors(*classes: type[BaseException]) -> None: ...
def address(buffer: ReadableBuffer, /) -> int: ...
def copy(dst: WriteableBuffer, offset: int, src: ReadableBuffer, /) -> None: ...
def pinned(buffer: ReadableBuffer, offset: int, length: int,
           on_free: Callable[[], object], /) -> Any: ...
def empty_bytearray(n: int, /) -> bytearray: ...
def encode_value(obj: object, /) -> bytes | None: ...
def decode_value(buffer: ReadableBuffer, /) -> Any: ...
def set_object_paths(
    pickle_serializer: type, send_obj: Any, send_encoded: Any, recv_obj: Any, recv_other: Any, /
) -> None: ...

class ProducerCore:
    def __init__(self, mapping: WriteableBuffer, slot: int, name: str | None = None, /) -> None: ...
    def send(self, data: ReadableBuffer, timeout: float | None = None) -> None: ...
    def send_nowait(self, data: ReadableBuffer, /) -> None: ...
    def send_many(self, items: Iterable[ReadableBuffer], timeout: float | None = None) -> int: ...
    def _send_fed_packed(self, body: ReadableBuffer, lens: ReadableBuffer,
                         seqs: ReadableBuffer, epoch: int, skip: int,
                         timeout: float | None = None, /) -> int: ...
    def _skip_msgno(self, n: int, /) -> None:
        """Broadcast: number the next message ``n`` further on, so that
        subscribers that count what they missed count ``n`` more."""
    def _send_fed(
        self, items: Sequence[ReadableBuffer], epoch: int, seqs: int | Sequence[int],
        timeout: float | None = None,
    ) -> int:
        """Commit ``items`` in order, keyed ``(epoch, seq)``: ``seqs`` is the
        first of consecutive seqs (``first_seq=`` also names it) or one seq
        per item, strictly increasing. Waits for space up to ``timeout``
        seconds for the whole call (None: forever), and keeps the key of the
        last record committed in the ring's header (``fed_state``).
        Published once per call (spsc, broadcast: one store of tail, one
        wake-up) unless the ring fills meanwhile. Returns how many were
        committed: fewer than ``len(items)``, maybe 0, only if the timeout
        passed. ``epoch`` is 1..2**64-1 and each seq 0..2**64-1; within the
        epoch of the last key committed the first seq must be past it: else
        ``InvalidArgument``, nothing sent. Another epoch than the last one
        begins a new epoch (any value, any seq). Other errors
        (``MessageTooLarge``, ``Closed``, ``ClaimRevoked``) carry ``sent``:
        how many were committed before it."""
    def _claim(self, n: int, timeout: float | None = None) -> memoryview: ...
    def _commit(self, nbytes: int | None = None, /) -> None: ...
    def _abort(self) -> None: ...
    def _link_claim(
        self, consumer: ConsumerCore, n: int, item: int, region: int,
        timeout: float | None = None, /,
    ) -> memoryview: ...
    def _link_commit(
        self, consumer: ConsumerCore, nbytes: int | None = None, last: bool = False, /
    ) -> None: ...
    def _link_abort(self, consumer: ConsumerCore, /) -> None: ...
    def _send_items(
        self, iterator: Iterator[Any], first: int, max_n: int, /,
    ) -> tuple[int, Any, bool]:
        """Up to ``max_n`` items of ``iterator`` as a pipeline's source
        records (ids ``first``, ``first + 1``, ...), while each is a plain
        value with room for it now: (sent, the item taken and not sent or
        None, whether the iterator ended)."""
    def _link_send(
        self, consumer: ConsumerCore, data: ReadableBuffer, item: int, region: int,
        last: bool = False, timeout: float | None = None, /,
    ) -> None: ...
    def _send_value(
        self, obj: object, timeout: float | None = None, nowait: bool = False, /
    ) -> bool: ...
    def send_obj(
        self, obj: Any, timeout: float | None = None, *, serializer: Serializer | None = None
    ) -> None:
        """Send one Python object, waiting up to ``timeout`` seconds for space.

        Large buffers (numpy arrays, big ``bytes``) are written straight into
        one claimed record, without an intermediate copy. Raises
        :class:`~shmring.Timeout`, :class:`~shmring.MessageTooLarge` (the
        encoded object exceeds the channel's ``max_message`` and cannot be
        streamed; nothing was sent), or whatever the serializer raises.

        Example::

            tx.send_obj({"id": 7, "image": np.zeros((480, 640), np.uint8)})
        """
    def _close(self) -> None: ...
    def _wait(self, timeout: float | None = None, nbytes: int = 0, /) -> bool: ...
    @property
    def _claimed(self) -> bool: ...
    @property
    def _closed(self) -> bool: ...
    @property
    def _label(self) -> str: ...
    @property
    def _name(self) -> str | None: ...
    @property
    def _max_message(self) -> int: ...
    @property
    def _pattern(self) -> int: ...
    @property
    def _lossy(self) -> bool: ...
    @property
    def _validating(self) -> bool: ...
    @property
    def _eos(self) -> bool: ...

class ConsumerCore:
    def __init__(self, mapping: WriteableBuffer, slot: int, name: str | None = None, /) -> None: ...
    def recv(self, timeout: float | None = None) -> bytes: ...
    def recv_nowait(self) -> bytes: ...
    def recv_many(self, max_count: int, timeout: float | None = None) -> list[bytes]: ...
    def recv_into(self, buffer: WriteableBuffer, timeout: float | None = None) -> int: ...
    def _peek(self, timeout: float | None = None) -> memoryview: ...
    def _release(self) -> None: ...
    def _ahead(
        self, max_count: int, max_bytes: int, timeout: float | None = None
    ) -> list[tuple[int, bytes]]:
        """Read up to ``max_count`` records after those read ahead and not
        settled, without releasing any: ``(key, copy)`` each, the key the
        record's position in the stream. Stops before ``max_bytes`` of payload
        would be exceeded, but returns at least one if one is there. Waits up
        to ``timeout`` for the first (None: for ever, 0: not at all) and
        returns ``[]`` on timeout; raises EndOfStream once the channel is
        closed for sending and nothing is left to read ahead (unsettled
        records do not count), Broken as recv does. While records are read
        ahead, recv, recv_many, recv_into, recv_view, recv_obj and _peek raise
        InvalidArgument. docs/design.md, "Read-ahead".
        """
    def _ahead_packed(
        self, max_count: int, max_bytes: int, timeout: float | None, count: int,
        inplace: int = 0, /
    ) -> tuple[bytearray, bytearray, bytearray, bytes | memoryview]:
        """What :meth:`_ahead` reads, packed: u64 keys (a record's position
        + 1 if ``count`` < 0, else ``count`` + 1, ``count`` + 2, ...), u64
        positions, u32 lengths, and the payloads back to back. A record of
        at least ``inplace`` bytes (> 0) comes alone and is not copied: the
        body is a read-only view of it in the region's mapping, valid until
        it is settled (copied as before on a lossy broadcast ring or an
        untethering one, whose records can change under a reader)."""
    def _settle(self, key: int, /) -> int:
        """Release every record read ahead whose key is <= ``key``, wake
        producers once, and return how many. mpmc: LeaseRevoked, after
        settling the others, if the lease of one of them was revoked."""
    @property
    def _ahead_count(self) -> int:
        """Records read ahead and not settled yet."""
    def _link_take(
        self, timeout: float | None = None, single: bool | int = False,
        counter: WriteableBuffer | None = None, offset: int = 0, region: int = 0, /,
    ) -> tuple[int, int, int, memoryview]: ...
    def _link_map(
        self, tx: ProducerCore, fn: Callable[..., Any], state: Any, mode: int,
        timeout: float | None, counter: WriteableBuffer | None, offset: int, in_region: int,
        out_region: int, board: WriteableBuffer, entry: int, max_attempts: int,
        sent_offset: int | None, /,
    ) -> tuple[int, int, int, memoryview] | tuple[int, int, int, memoryview, int, int, Any] | None:
        """One item of a pipeline's map, filter or sink stage
        (csrc/py/link_map.c; ``mode``: the kind 0, 1 or 2, | 4 if ``fn``
        takes ``state``, | 8 in an ordered run): None when it took a plain
        value, called ``fn``, committed the output linked to the input (or
        finished the input) and kept the board entry at byte ``entry``;
        otherwise what ``_link_take`` returns (nothing done with it yet), or
        that and ``(t0, raised, obj)`` after ``fn`` ran: ``obj`` is what it
        raised, or its result for Python to send."""
    def _link_finish(self) -> None: ...
    def _link_many(self) -> None: ...
    def _recv_value(self, timeout: float | None = None, nowait: bool = False, /) -> Any: ...
    def _recv_values(self, max_n: int, max_bytes: int, /) -> list[Any]:
        """The plain values at the top of their items (a pipeline's records)
        in the records there now, up to ``max_n`` records or the one that
        reaches ``max_bytes``, in order, without waiting; stops at any other
        record, left held for ``_peek``."""
    @overload
    def recv_obj(
        self, timeout: float | None = ..., *, copy: Literal[True] = ...,
        serializer: Serializer | None = ...,
    ) -> Any:
        """Receive one object, waiting up to ``timeout`` seconds for it.

        With ``copy=True`` (the default) the object owns its memory: a received
        numpy array is a writable copy (read-only if the sent one was).
        ``copy=False`` returns an :class:`~shmring.ObjectView` to use as a
        context manager: its arrays are zero-copy, read-only views of the ring,
        valid inside the block. Raises :class:`~shmring.Timeout`,
        :class:`~shmring.EndOfStream`, or :class:`~shmring.DecodeError` (the
        record could not be decoded; it is consumed).

        Example::

            obj = rx.recv_obj(timeout=5)
            with rx.recv_obj(copy=False) as frame:
                mean = frame["image"].mean()
        """
    @overload
    def recv_obj(
        self, timeout: float | None = ..., *, copy: Literal[False],
        serializer: Serializer | None = ...,
    ) -> ObjectView: ...
    @overload
    def recv_obj(
        self, timeout: float | None = ..., *, copy: bool, serializer: Serializer | None = ...
    ) -> Any: ...
    def _join(self) -> None: ...
    def _resume(self) -> None: ...
    def _close(self) -> None: ...
    def _wait(self, timeout: float | None = None, nbytes: int = 0, /) -> bool: ...
    _stream: Any  # shmring._objects.stream._Stream | None
    @property
    def missed(self) -> int: ...
    @property
    def leases_revoked(self) -> int: ...
    @property
    def untethered(self) -> int: ...
    @property
    def _closed(self) -> bool: ...
    @property
    def _label(self) -> str: ...
    @property
    def _name(self) -> str | None: ...


class Lock:
    """A thread lock with threading.Lock's methods (csrc/queue.c)."""
    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool: ...
    def release(self) -> None: ...
    def locked(self) -> bool: ...
    def __enter__(self) -> bool: ...
    def __exit__(self, *exc: object) -> None: ...

class QueueState:
    """What one process holds of an open shmring.Queue (csrc/queue.c)."""
    tx: Any
    rx: Any
    def __init__(
        self, buffer: WriteableBuffer, offset: int, maxsize: int, joinable: bool,
        wlock: Lock, rlock: Lock,
    ) -> None: ...
    def invalidate(self) -> None: ...
    def reserve(self) -> bool: ...
    def taken(self) -> None: ...
    def unreserve(self) -> None: ...
    def task_done(self) -> bool: ...
    def count(self) -> int: ...
    def count_many(self, put: int, taken: int, done: int, /) -> int:
        """Count a batch at once (a bridge carrying the queue): ``put`` items
        committed, ``taken`` items out (or puts undone), up to ``done``
        tasks done; how many tasks were done."""

class QueueCore:
    """The base of shmring's queues: put and get of plain values in C."""
    _state: QueueState | None
    _closed: bool
    _plain: bool
    # put(obj, block=True, timeout=None) and get(block=True, timeout=None) are
    # here too; each queue class types them with its item type.

class JournalWriterCore:
    """The C base of shmring._journal.writer.Writer (csrc/py/journal.c)."""

    _off: int
    _next: int
    _last_t: int
    _idx: int
    _index_at: int
    _sealed: bool
    _slow: bool
    _eager: bool
    @property
    def _mark(self) -> tuple[int, int]: ...
    def append(self, data: ReadableBuffer, /) -> int: ...
    def _append_here(self, data: ReadableBuffer, /) -> int: ...
    def _commit_claim(self, off: int, n: int, /) -> int: ...
    def _attach(
        self, segment: WriteableBuffer, meta: WriteableBuffer, limit: int, data_off: int,
        stride: int, n_index: int, /,
    ) -> None: ...
    def _detach(self) -> None: ...

def journal_read_many(
    segment: ReadableBuffer, off: int, end: int, seq: int, max_records: int, max_bytes: int, /
) -> tuple[list[tuple[int, bytes]], int, int, int]: ...
def journal_crc(word: int, seq: int, time_ns: int, payload: ReadableBuffer, /) -> int: ...
def journal_nonzero(buffer: ReadableBuffer, start: int, end: int, /) -> int: ...

JOURNAL_CRC_CLMUL: int
