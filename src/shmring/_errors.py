"""The exceptions shmring raises, by meaning.

One base, :class:`ShmringError`; each subclass also derives from the builtin
that callers already catch where one fits (``Timeout`` is a ``TimeoutError``,
``RegionNotFound`` a ``FileNotFoundError``, bad arguments are ``ValueError``).
Full and empty are not errors on the blocking calls: they wait. Only the
``*_nowait`` forms raise :class:`WouldBlock`.
"""

from __future__ import annotations

from . import _core


class ShmringError(Exception):
    """Base class of every error shmring raises.

    ``channel`` is the name of the channel the error is about, where there
    is one (every error of an endpoint's call has it), else None."""

    channel: str | None = None


class Timeout(ShmringError, TimeoutError):
    """A blocking call's timeout passed before it could complete.

    ``timeout`` is the call's timeout in seconds (None where the wait had a
    deadline of its own), ``channel`` the channel's name."""

    timeout: float | None = None


class WouldBlock(ShmringError):
    """A ``*_nowait`` call found the channel full (send) or empty (receive)."""


class EndOfStream(ShmringError):
    """The channel was closed for sending and every message has been received."""


class Closed(ShmringError):
    """You closed this channel or endpoint, or sending was closed (``close_send``)."""


class Broken(ShmringError):
    """The other side broke: a peer died leaving state that cannot be recovered,
    or the region is corrupt."""


class ClaimRevoked(Broken):
    """This producer held a claim longer than the supervisor's claim timeout
    (it was stopped, or stuck), so the supervisor revoked the claim and the
    consumers went on without it: the message being sent was not sent. The
    producer may send again."""


class LeaseRevoked(Broken):
    """This consumer held a record of an mpmc channel longer than the
    channel's lease (it was stopped, or stuck), so the supervisor handed the
    record to the other consumers: it was not consumed here. Raised where the
    consumer releases it (the end of ``recv``, ``recv_into``, ``recv_obj``,
    a ``recv_view`` block) or, in a pipeline worker, where it sends an output
    of it; whatever was read of it is dropped. The consumer may receive
    again."""


class CorruptRegion(Broken):
    """Bytes in the segment break an invariant of the layout; nothing was read
    out of bounds."""


class CorruptJournal(CorruptRegion):
    """A journal's file breaks an invariant of its format (a bad checksum or
    length below the durable point, a bad header, a gap between segments);
    nothing was read out of bounds.

    ``path`` is the file, ``offset`` the byte offset in it where the bad
    bytes start (None where the error is about the file as a whole)."""

    path: str | None = None
    offset: int | None = None


class SyncFailed(Broken, OSError):
    """``msync``/``fsync`` of a journal failed (an I/O error, say): the writer
    is unusable from then on, and records after the journal's
    ``durable_seq`` may not be on disk. Never retried silently; the cause is
    ``__cause__``."""


class MessageTooLarge(ShmringError, ValueError):
    """A message is larger than the channel's ``max_message``; nothing was written.

    ``size`` is the message's size in bytes (None where not known),
    ``limit`` the channel's ``max_message``, ``channel`` its name."""

    size: int | None = None
    limit: int | None = None


class DecodeError(ShmringError, ValueError):
    """A received record could not be turned back into an object (not a
    frame this version reads, a frame whose table points outside the record,
    or the serializer failed; the original error is ``__cause__``). The
    record was consumed."""


class QueueClosed(Closed, OSError, ValueError):
    """This process closed the :class:`shmring.Queue` (the queue itself lives
    on in the other processes). A ``ValueError`` and an ``OSError``, as
    ``multiprocessing`` raises after ``close()``."""


class InvalidArgument(ShmringError, ValueError):
    """A bad name, size, pattern or option."""


class RoleTaken(ShmringError):
    """A second producer (or consumer) on a pattern that allows only one.

    ``pid`` is the process holding the role (None if it could not be
    read), ``channel`` the channel's name."""

    pid: int | None = None


class RemoteError(ShmringError):
    """A pipeline stage's function raised in a worker process (with
    ``on_error="raise"``), or its workers could not run at all.

    ``stage`` is the stage's name, ``item`` the item it was given (None if
    there was none), and ``remote_traceback`` the worker's traceback as text
    (also the end of the message).

    Also what a :class:`Requester` raises when the server failed the request
    (``stage`` is then the service's name)."""

    def __init__(self, message: str, *, stage: str = "", item: object = None,
                 remote_traceback: str = "") -> None:
        super().__init__(message)
        self.stage = stage
        self.item = item
        self.remote_traceback = remote_traceback

    def __reduce__(self) -> tuple[object, ...]:
        return (_remote_error, (str(self), self.stage, self.item, self.remote_traceback))


def _remote_error(message: str, stage: str, item: object, tb: str) -> RemoteError:
    return RemoteError(message, stage=stage, item=item, remote_traceback=tb)


class RegionExists(ShmringError, FileExistsError):
    """A region of that name already exists."""


class RegionNotFound(ShmringError, FileNotFoundError):
    """No region of that name exists."""


class PermissionDenied(ShmringError, PermissionError):
    """The region (or supervisor) belongs to another user, or the region's
    mode does not let this user read and write it.

    For a region, ``mode`` (its permission bits) and ``owner_uid`` say which;
    both are None where not known."""

    mode: int | None = None
    owner_uid: int | None = None


class NoSpace(ShmringError, OSError):
    """``/dev/shm`` has no room for the region (ENOSPC at creation), or a
    journal's file system has no room for its next segment file."""


class WriterTaken(RoleTaken):
    """A journal already has a writer (one writer at a time; the lock is
    dropped by the kernel when the writer's process dies). ``pid`` is the
    writer's process where known."""


class AttachTableFull(ShmringError):
    """Every attach slot of the region is taken; create it with more ``slots``."""


class SupervisorUnavailable(ShmringError, ConnectionError):
    """No supervisor could be reached or started for the namespace (run
    ``shmring supervisor`` yourself, or set ``SHMRING_SUPERVISOR=0`` to run
    without one)."""


class BridgeUnavailable(ShmringError, ConnectionError):
    """No bridge runs for the namespace and none could be started, or the
    bridge could not do what was asked (``Channel.open(remote=...)``); the
    text says why (``shmring bridge --namespace NS`` in the foreground
    shows more)."""


class KeyFileError(InvalidArgument):
    """A bridge's CURVE key file (or authorized-keys file) cannot be used:
    missing, unreadable, bad content, or a secret key that others could read.
    The text says which and how to fix it (``chmod 600 FILE``, say).

    ``path`` is the file, ``line`` the line at fault (None where the error is
    about the file as a whole), ``mode`` its permission bits and
    ``owner_uid`` its owner where those are the fault (else None)."""

    path: str | None = None
    line: int | None = None
    mode: int | None = None
    owner_uid: int | None = None


class KeyFileExists(KeyFileError, FileExistsError):
    """Generating a key pair found its file (or the ``.pub`` beside it)
    already there; nothing was overwritten."""


class InsecureListen(InvalidArgument):
    """A bridge without CURVE keys was asked to listen on an address other
    hosts can reach; the text says how to allow it (``--insecure``).

    ``url`` is the address."""

    url: str | None = None


class MissingDependency(ShmringError, ImportError):
    """An optional package a feature needs is not installed; the text names
    the extra that brings it (``pip install 'shmring[bridge]'``)."""


# Every class shows as ``shmring.X`` (its public name) in tracebacks, reprs
# and pickles, not as the private module that defines it. Pickle finds them
# by that name, so each must be exported from the package under it.
for _cls in list(globals().values()):
    if isinstance(_cls, type) and issubclass(_cls, ShmringError):
        _cls.__module__ = "shmring"
del _cls

# The extension raises these (by meaning, as the Python code does): handed to
# it once, here, before anything else can call into it.
_core.set_errors(WouldBlock, Timeout, EndOfStream, Broken, CorruptRegion, MessageTooLarge, Closed,
                 ClaimRevoked, DecodeError, LeaseRevoked)
